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
}

/// The curves of `split_metric` (`split/name`: the rows `name/eNNN` of that split) over `runs` of
/// the study in `study_dir`: one per (row label, density), each epoch's values averaged over the
/// runs that recorded it; NaN values (an epoch with no baseline yet) are left out. A run that
/// recorded none of it is left out; none at all is an error, as is a file that cannot be read
/// (naming it).
pub fn epoch_curves(
    study_dir: &Path,
    runs: &[RunSummary],
    split_metric: &str,
    by: &[String],
) -> Result<Vec<EpochCurve>, StoreError> {
    let (split, name) = split_metric.split_once('/').ok_or_else(|| {
        StoreError::Query(format!(
            "`{split_metric}` is not split/name (a metric recorded once an epoch as name/eNNN)"
        ))
    })?;
    let prefix = format!("{name}/e");
    let fields = row_fields(runs, by)?;
    // (label, density bits) → epoch → values over seeds.
    type Key = (String, u64);
    let mut values: BTreeMap<Key, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in runs {
        let path = study_dir.join(&r.run_id).join("metrics.parquet");
        let at_path = |source: PolarsError| StoreError::Polars {
            path: path.clone(),
            cause: source,
        };
        let df = store::read_metrics(&path)?
            .lazy()
            .filter(col("split").eq(lit(split)))
            .select([col("metric"), col("value")])
            .collect()
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
        for i in 0..df.height() {
            let (Some(m), Some(v)) = (metric.get(i), value.get(i)) else {
                continue;
            };
            let Some(Ok(epoch)) = m.strip_prefix(&prefix).map(str::parse::<u64>) else {
                continue;
            };
            if v.is_nan() {
                continue;
            }
            values
                .entry((row_label(r, &fields), r.density_requested.to_bits()))
                .or_default()
                .entry(epoch)
                .or_default()
                .push(v);
        }
    }
    if values.is_empty() {
        return Err(StoreError::Query(format!(
            "no run of {} recorded {split_metric}/eNNN",
            study_dir.display()
        )));
    }
    let mut curves: Vec<EpochCurve> = values
        .into_iter()
        .map(|((label, density), by_epoch)| EpochCurve {
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
        })
        .collect();
    // Rows by label, then the densest first (as the tables order them).
    curves.sort_by(|a, b| a.label.cmp(&b.label).then(b.density.total_cmp(&a.density)));
    Ok(curves)
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
            ],
        );
        record(
            dir.path(),
            "b",
            &[
                (g, "joint-distance/e002", 0.6),
                (g, "joint-distance/e003", 0.2),
            ],
        );
        record(dir.path(), "c", &[(g, "joint-distance/e002", 0.5)]);
        let runs = vec![run("a", 0, 0.5), run("b", 1, 0.5), run("c", 0, 0.2)];
        let curves = epoch_curves(dir.path(), &runs, "gcn-tickets/joint-distance", &[]).unwrap();
        assert_eq!(curves.len(), 2);
        let (dense, sparse) = (&curves[0], &curves[1]);
        assert_eq!((dense.label.as_str(), dense.density), ("gcn-tickets", 0.5));
        // Epoch 1 was NaN (no baseline): left out.
        assert_eq!(
            dense.points.iter().map(|p| p.epoch).collect::<Vec<_>>(),
            [2, 3]
        );
        let p = dense.points[0];
        assert!((p.mean - 0.7).abs() < 1e-12 && p.n == 2);
        assert!((p.std.unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!(sparse.density, 0.2);
        assert_eq!(sparse.points.len(), 1);
        assert_eq!(sparse.points[0].std, None);
    }

    #[test]
    fn a_metric_nobody_recorded_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "a", &[("test", "accuracy", 0.7)]);
        let runs = vec![run("a", 0, 0.5)];
        let e = epoch_curves(dir.path(), &runs, "gcn-tickets/joint-distance", &[]).unwrap_err();
        assert!(e.to_string().contains("gcn-tickets/joint-distance"), "{e}");
        let e = epoch_curves(dir.path(), &runs, "no-split", &[]).unwrap_err();
        assert!(e.to_string().contains("`no-split`"), "{e}");
    }
}
