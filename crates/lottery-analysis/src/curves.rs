//! Per-epoch curves of a study: a metric a method records once an epoch under
//! `split/name/eNNN` (e.g. GEBT's `gcn-tickets/joint-distance/e012`), averaged over seeds.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use crate::store::{self, RunSummary, StoreError};
use crate::table::{row_fields, row_label};

/// The metric's mean (and sample std, none for one seed) over seeds after one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    /// The epoch (as recorded: `eNNN`).
    pub epoch: u64,
    /// Mean over the seeds that recorded this epoch.
    pub mean: f64,
    /// Sample standard deviation over those seeds.
    pub std: Option<f64>,
    /// How many seeds recorded this epoch.
    pub n: usize,
}

/// One curve of [`epoch_curves`]: the runs of one row label at one density.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochCurve {
    /// The row label (the fields of [`row_fields`] joined by ` / `).
    pub label: String,
    /// The density the runs requested.
    pub density: f64,
    /// The points, by epoch.
    pub points: Vec<EpochPoint>,
    /// The mean of the mark metric over the runs that recorded it and whose detector fired.
    pub mark: Option<f64>,
    /// How many runs gave the mark.
    pub marked_runs: usize,
    /// How many runs the curve averages.
    pub runs: usize,
}

/// What one run gives a curve.
struct RunCurve {
    run: RunSummary,
    by_epoch: BTreeMap<u64, f64>,
    mark: Option<f64>,
}

/// The curves of `split_metric` (`split/name`: the rows `name/eNNN` of that split, one per epoch)
/// over `runs` of the study in `study_dir`: one per (row label, density), each epoch's values
/// averaged over the runs that recorded it; non-finite values (an epoch with no baseline yet) are
/// left out. With `mark` (`split/metric`, e.g. `gcn-tickets/drawn-epoch`), each curve also holds
/// that metric's mean over its runs, leaving out a run whose split recorded `detected` = 0 (its
/// detector never fired, so the value is only where the search stopped). A run that recorded none
/// of the curve is left out; none at all is an error, as is a file that cannot be read or that
/// records an epoch twice (not a once-an-epoch metric), naming it.
pub fn epoch_curves(
    study_dir: &Path,
    runs: &[RunSummary],
    split_metric: &str,
    mark: Option<&str>,
    by: &[String],
) -> Result<Vec<EpochCurve>, StoreError> {
    let (split, name) = split_name(split_metric)?;
    let mark = mark.map(split_name).transpose()?;
    let prefix = format!("{name}/e");
    let mut recorded = vec![];
    for r in runs {
        let path = study_dir.join(&r.run_id).join("metrics.parquet");
        let at_path = |source: PolarsError| StoreError::Polars {
            path: path.clone(),
            cause: source,
        };
        let mut splits = col("split").eq(lit(split));
        if let Some((mark_split, _)) = mark {
            splits = splits.or(col("split").eq(lit(mark_split)));
        }
        let df = store::read_metrics(&path)?
            .lazy()
            .filter(splits)
            .select([col("split"), col("metric"), col("value")])
            .collect()
            .map_err(at_path)?;
        let split_of = df
            .column("split")
            .map_err(at_path)?
            .str()
            .map_err(at_path)?;
        let metric = df
            .column("metric")
            .map_err(at_path)?
            .str()
            .map_err(at_path)?;
        let value = df
            .column("value")
            .map_err(at_path)?
            .f64()
            .map_err(at_path)?;
        let mut by_epoch = BTreeMap::new();
        let (mut mark_value, mut detected) = (None, None);
        for i in 0..df.height() {
            let (Some(sp), Some(m), Some(v)) = (split_of.get(i), metric.get(i), value.get(i))
            else {
                continue;
            };
            if let Some((mark_split, mark_name)) = mark
                && sp == mark_split
            {
                if m == mark_name {
                    mark_value = Some(v);
                } else if m == "detected" {
                    detected = Some(v);
                }
            }
            if sp != split {
                continue;
            }
            let Some(Ok(epoch)) = m.strip_prefix(&prefix).map(str::parse::<u64>) else {
                continue;
            };
            if by_epoch.insert(epoch, v).is_some() {
                return Err(StoreError::Query(format!(
                    "{}: records {split}/{m} more than once, so {split_metric} is not a metric \
                     recorded once an epoch",
                    path.display()
                )));
            }
        }
        by_epoch.retain(|_, v: &mut f64| v.is_finite());
        if by_epoch.is_empty() {
            continue;
        }
        recorded.push(RunCurve {
            run: r.clone(),
            by_epoch,
            mark: mark_value.filter(|_| detected != Some(0.0)),
        });
    }
    if recorded.is_empty() {
        return Err(StoreError::Query(format!(
            "no run of {} recorded {split_metric}/eNNN",
            study_dir.display()
        )));
    }
    // Row fields from the runs that recorded the curve, as the tables do.
    let kept: Vec<RunSummary> = recorded.iter().map(|c| c.run.clone()).collect();
    let fields = row_fields(&kept, by)?;
    // (label, density bits) → the runs of that curve.
    let mut groups: BTreeMap<(String, u64), Vec<RunCurve>> = BTreeMap::new();
    for c in recorded {
        let key = (
            row_label(&c.run, &fields),
            c.run.density_requested.to_bits(),
        );
        groups.entry(key).or_default().push(c);
    }
    let mut curves: Vec<EpochCurve> = groups
        .into_iter()
        .map(|((label, density), runs)| {
            let mut by_epoch: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for (&epoch, &v) in runs.iter().flat_map(|c| c.by_epoch.iter()) {
                by_epoch.entry(epoch).or_default().push(v);
            }
            let marks: Vec<f64> = runs.iter().filter_map(|c| c.mark).collect();
            EpochCurve {
                label,
                density: f64::from_bits(density),
                points: by_epoch
                    .into_iter()
                    .map(|(epoch, v)| {
                        let (mean, std) = mean_std(&v);
                        EpochPoint {
                            epoch,
                            mean,
                            std,
                            n: v.len(),
                        }
                    })
                    .collect(),
                mark: (!marks.is_empty()).then(|| mean_std(&marks).0),
                marked_runs: marks.len(),
                runs: runs.len(),
            }
        })
        .collect();
    // Rows by label, then the densest first (as the tables order them).
    curves.sort_by(|a, b| a.label.cmp(&b.label).then(b.density.total_cmp(&a.density)));
    Ok(curves)
}

/// `split/name` as its two parts.
fn split_name(what: &str) -> Result<(&str, &str), StoreError> {
    what.split_once('/').ok_or_else(|| {
        StoreError::Query(format!(
            "`{what}` is not split/name (a metric recorded as split/name)"
        ))
    })
}

/// Mean and sample standard deviation (none for one value).
fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MetricRecord, write_metrics};

    fn run(id: &str, seed: u64, density: f64) -> RunSummary {
        let mut r = crate::table::tests::run("gcn-tickets", density, seed, 0.5);
        r.run_id = id.into();
        r
    }

    fn record(dir: &Path, id: &str, rows: &[(&str, &str, f64)]) {
        let d = dir.join(id);
        std::fs::create_dir_all(&d).unwrap();
        let rows: Vec<MetricRecord> = rows
            .iter()
            .enumerate()
            .map(|(i, (split, metric, value))| MetricRecord {
                round: 0,
                phase: "prune".into(),
                step: i as u64,
                epoch: i as u64,
                split: (*split).into(),
                metric: (*metric).into(),
                value: *value,
            })
            .collect();
        write_metrics(&d.join("metrics.parquet"), &rows).unwrap();
    }

    #[test]
    fn curves_average_each_epoch_over_seeds_by_density() {
        let dir = tempfile::tempdir().unwrap();
        let g = "gcn-tickets";
        record(
            dir.path(),
            "a",
            &[
                (g, "joint-distance/e001", f64::NAN),
                (g, "joint-distance/e002", 0.8),
                (g, "joint-distance/e003", 0.4),
                (g, "graph-distance/e002", 9.0),
                ("test", "accuracy", 0.7),
                (g, "drawn-epoch", 3.0),
                (g, "detected", 1.0),
            ],
        );
        record(
            dir.path(),
            "b",
            &[
                (g, "joint-distance/e002", 0.6),
                (g, "joint-distance/e003", f64::INFINITY),
                (g, "drawn-epoch", 5.0),
                (g, "detected", 1.0),
            ],
        );
        // Never drawn: its drawn epoch is only where the search stopped.
        record(
            dir.path(),
            "c",
            &[
                (g, "joint-distance/e002", 0.5),
                (g, "drawn-epoch", 100.0),
                (g, "detected", 0.0),
            ],
        );
        let runs = vec![run("a", 0, 0.5), run("b", 1, 0.5), run("c", 0, 0.2)];
        let mark = Some("gcn-tickets/drawn-epoch");
        let curves =
            epoch_curves(dir.path(), &runs, "gcn-tickets/joint-distance", mark, &[]).unwrap();
        assert_eq!(curves.len(), 2);
        let (dense, sparse) = (&curves[0], &curves[1]);
        assert_eq!((dense.label.as_str(), dense.density), ("gcn-tickets", 0.5));
        // Epoch 1 was NaN (no baseline): left out; so is run b's infinite epoch 3.
        assert_eq!(
            dense.points.iter().map(|p| p.epoch).collect::<Vec<_>>(),
            [2, 3]
        );
        let p = dense.points[0];
        assert!((p.mean - 0.7).abs() < 1e-12 && p.n == 2);
        assert!((p.std.unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!((dense.points[1].mean, dense.points[1].n), (0.4, 1));
        assert_eq!(
            (dense.mark, dense.marked_runs, dense.runs),
            (Some(4.0), 2, 2)
        );
        assert_eq!(sparse.density, 0.2);
        assert_eq!(sparse.points.len(), 1);
        assert_eq!(sparse.points[0].std, None);
        // The undetected run gives no mark.
        assert_eq!((sparse.mark, sparse.marked_runs, sparse.runs), (None, 0, 1));
    }

    #[test]
    fn a_metric_nobody_recorded_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "a", &[("test", "accuracy", 0.7)]);
        let runs = vec![run("a", 0, 0.5)];
        let curve = "gcn-tickets/joint-distance";
        let e = epoch_curves(dir.path(), &runs, curve, None, &[]).unwrap_err();
        assert!(e.to_string().contains(curve), "{e}");
        let e = epoch_curves(dir.path(), &runs, "no-split", None, &[]).unwrap_err();
        assert!(e.to_string().contains("`no-split`"), "{e}");
        let e = epoch_curves(dir.path(), &runs, curve, Some("no-split"), &[]).unwrap_err();
        assert!(e.to_string().contains("`no-split`"), "{e}");
    }

    #[test]
    fn a_metric_recorded_twice_for_an_epoch_is_not_a_curve() {
        // Early-Bird's `distance/eNNN` rows name the older mask, once per later epoch.
        let dir = tempfile::tempdir().unwrap();
        let eb = "early-bird";
        record(
            dir.path(),
            "a",
            &[(eb, "distance/e000", 0.5), (eb, "distance/e000", 0.4)],
        );
        let e = epoch_curves(
            dir.path(),
            &[run("a", 0, 0.5)],
            "early-bird/distance",
            None,
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("metrics.parquet") && e.contains("more than once"),
            "{e}"
        );
    }
}
