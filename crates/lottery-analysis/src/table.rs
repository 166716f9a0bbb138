//! Method × density tables: mean ± std over seeds, with n, as Markdown, CSV or LaTeX.

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::store::{self, RunSummary, StoreError};

/// Output format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// GitHub Markdown; the best mean per column is bold.
    Markdown,
    /// Comma-separated, one row per (method, density).
    Csv,
    /// A LaTeX tabular; the best mean per column is bold.
    Latex,
}

/// What to tabulate.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    /// Summary field aggregated: `test_accuracy`, `test_loss`, `test_accuracy_at_init`,
    /// `best_test_accuracy`, `best_test_epoch`, `density_achieved`, `prune_seconds`,
    /// `train_seconds`.
    pub metric: String,
    /// Multiply values by this for display (100 for accuracy in percent).
    pub scale: f64,
    /// What a row is: summary fields among `method`, `model`, `dataset`, `seed`. Empty: the
    /// method, preceded by the model and the dataset when the runs have more than one.
    pub by: Vec<String>,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            metric: "test_accuracy".into(),
            scale: 100.0,
            by: vec![],
        }
    }
}

/// Fields a row may be keyed by.
pub const ROW_FIELDS: [&str; 6] = ["model", "dataset", "method", "options", "setting", "seed"];

/// Fields a filter may test.
pub const FILTER_FIELDS: [&str; 7] = [
    "model", "dataset", "method", "options", "setting", "seed", "density",
];

/// Fields whose values are different experiments: runs that differ in one are never averaged
/// into one figure (a table must key its rows by it, a claim's measure must filter it to one).
pub const NEVER_AVERAGED_FIELDS: [&str; 5] = ["model", "dataset", "method", "options", "setting"];

/// The value of a run's filter field (one of [`FILTER_FIELDS`]) as text; empty for any other name.
pub fn field_of(r: &RunSummary, field: &str) -> String {
    match field {
        "model" => r.model.clone(),
        "dataset" => r.dataset.clone(),
        "method" => r.method.clone(),
        "options" => r.options.clone(),
        "setting" => r.setting.clone(),
        "seed" => r.seed.to_string(),
        "density" => r.density_requested.to_string(),
        _ => String::new(),
    }
}

/// The runs whose fields equal every `(field, value)` of `filters` (a field given more than once
/// accepts any of its values; densities compare as numbers).
pub fn select_runs(
    runs: &[RunSummary],
    filters: &[(String, String)],
) -> Result<Vec<RunSummary>, StoreError> {
    for (k, v) in filters {
        if !FILTER_FIELDS.contains(&k.as_str()) {
            return Err(StoreError::Query(format!(
                "--filter {k}={v}: unknown field `{k}`; expected one of {}",
                FILTER_FIELDS.join(", ")
            )));
        }
        if k == "density" && v.parse::<f64>().is_err() {
            return Err(StoreError::Query(format!(
                "--filter {k}={v}: `{v}` is not a number"
            )));
        }
    }
    let accepts = |r: &RunSummary, field: &str| {
        let wanted: Vec<&String> = filters
            .iter()
            .filter(|(k, _)| k == field)
            .map(|(_, v)| v)
            .collect();
        wanted.is_empty()
            || wanted.iter().any(|v| {
                if field == "density" {
                    v.parse::<f64>()
                        .is_ok_and(|d| (d - r.density_requested).abs() <= 1e-12)
                } else {
                    field_of(r, field) == **v
                }
            })
    };
    Ok(runs
        .iter()
        .filter(|r| FILTER_FIELDS.iter().all(|f| accepts(r, f)))
        .cloned()
        .collect())
}

/// The row fields for `runs`: `by` checked, or the automatic choice when it is empty. Every one of
/// model, dataset, method, method options and setting that differs between runs must be a row
/// field, or rows would average different settings.
pub fn row_fields(runs: &[RunSummary], by: &[String]) -> Result<Vec<String>, StoreError> {
    let varies = |field: &str| {
        runs.iter()
            .map(|r| field_of(r, field))
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    };
    if by.is_empty() {
        let mut out: Vec<String> = ["model", "dataset"]
            .into_iter()
            .filter(|f| varies(f))
            .map(String::from)
            .collect();
        out.push("method".into());
        for f in ["options", "setting"] {
            if varies(f) {
                out.push(f.into());
            }
        }
        return Ok(out);
    }
    for f in by {
        if !ROW_FIELDS.contains(&f.as_str()) {
            return Err(StoreError::Query(format!(
                "--by {f}: unknown field; expected some of {}",
                ROW_FIELDS.join(", ")
            )));
        }
    }
    for f in NEVER_AVERAGED_FIELDS {
        if varies(f) && !by.iter().any(|b| b == f) {
            return Err(StoreError::Query(format!(
                "--by {}: the runs have more than one {f}; add {f} to --by or pick one with --filter {f}=…",
                by.join(",")
            )));
        }
    }
    Ok(by.to_vec())
}

/// A run's row label: the values of its `fields` joined by ` / ` (`seed N` for the seed).
pub(crate) fn row_label(r: &RunSummary, fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| match f.as_str() {
            "seed" => format!("seed {}", r.seed),
            _ => field_of(r, f),
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The summary fields a table or a query can read.
pub const SUMMARY_METRICS: [&str; 8] = [
    "test_accuracy",
    "test_loss",
    "test_accuracy_at_init",
    "best_test_accuracy",
    "best_test_epoch",
    "density_achieved",
    "prune_seconds",
    "train_seconds",
];

/// A summary field of a run: `None` for an unknown name, `Some(None)` for a field the run does not
/// hold (the best test accuracy of a run that evaluated no epoch or predates it).
pub(crate) fn metric_of(s: &RunSummary, metric: &str) -> Option<Option<f64>> {
    Some(match metric {
        "test_accuracy" => Some(s.test_accuracy),
        "test_loss" => Some(s.test_loss),
        "test_accuracy_at_init" => Some(s.test_accuracy_at_init),
        "best_test_accuracy" => s.best_test_accuracy,
        "best_test_epoch" => s.best_test_epoch.map(|e| e as f64),
        "density_achieved" => Some(s.density_achieved),
        "prune_seconds" => Some(s.prune_seconds),
        "train_seconds" => Some(s.train_seconds),
        _ => return None,
    })
}

/// The aggregated frame: one row per (model, dataset, method, density) with `mean`, `std` (sample
/// std, null for one seed) and `n`, sorted by method then decreasing density. Runs without the
/// field (`best_test_accuracy` of older runs) are left out; none holding it is an error.
pub fn study_frame(runs: &[RunSummary], opts: &TableOptions) -> Result<DataFrame, StoreError> {
    let mut kept = vec![];
    let mut values = vec![];
    for r in runs {
        let value = metric_of(r, &opts.metric).ok_or_else(|| {
            StoreError::Query(format!(
                "--metric {}: unknown; expected test_accuracy, test_loss, test_accuracy_at_init, best_test_accuracy, best_test_epoch, density_achieved, prune_seconds, train_seconds, or split/metric of a recorded metric",
                opts.metric
            ))
        })?;
        if let Some(v) = value {
            kept.push(r.clone());
            values.push(v);
        }
    }
    if kept.is_empty() && !runs.is_empty() {
        return Err(StoreError::Query(format!(
            "--metric {}: no run holds it (runs written before it was recorded, or that evaluated no epoch)",
            opts.metric
        )));
    }
    let fields = row_fields(&kept, &opts.by)?;
    aggregate(&kept, &values, opts.scale, &fields).map_err(|source| StoreError::Polars {
        path: "<runs>".into(),
        cause: source,
    })
}

/// [`study_frame`] of a metric recorded in the runs' `metrics.parquet` rather than their summary:
/// `split/metric` (e.g. `early-bird/drawn-epoch`), the last row of that split and metric of each
/// run (round 0 first, then later rounds). Runs without such a row are left out; a file that is
/// missing or cannot be read is an error naming it.
pub fn recorded_frame(
    study_dir: &Path,
    runs: &[RunSummary],
    split_metric: &str,
    scale: f64,
    by: &[String],
) -> Result<DataFrame, StoreError> {
    let pl = |source: PolarsError| StoreError::Polars {
        path: study_dir.to_path_buf(),
        cause: source,
    };
    let (split, metric) = split_metric
        .split_once('/')
        .ok_or_else(|| pl(polars_err!(ColumnNotFound: "`{split_metric}` is not split/metric")))?;
    // One lazy scan over every run's file: only the three columns read, the filter pushed down,
    // the files read in parallel; the last matching row of each file kept.
    let paths: Vec<PathBuf> = runs
        .iter()
        .map(|r| study_dir.join(&r.run_id).join("metrics.parquet"))
        .collect();
    if paths.is_empty() {
        return Err(pl(polars_err!(NoData: "no runs")));
    }
    let scan = |paths: &[PathBuf]| -> PolarsResult<DataFrame> {
        let files: Vec<PlRefPath> = paths
            .iter()
            .map(|p| PlRefPath::new(p.to_string_lossy().as_ref()))
            .collect();
        let args = ScanArgsParquet {
            include_file_paths: Some("file".into()),
            ..ScanArgsParquet::default()
        };
        LazyFrame::scan_parquet_files(files.into(), args)?
            .filter(
                col("split")
                    .eq(lit(split))
                    .and(col("metric").eq(lit(metric))),
            )
            .select([col("file"), col("value")])
            .group_by([col("file")])
            .agg([col("value").last()])
            .collect()
    };
    let last = match scan(&paths) {
        Ok(last) => last,
        // The scan names no file: find the one at fault by scanning each alone.
        Err(e) => {
            return Err(paths
                .iter()
                .find_map(|p| {
                    scan(std::slice::from_ref(p))
                        .err()
                        .map(|source| StoreError::Polars {
                            path: p.clone(),
                            cause: source,
                        })
                })
                .unwrap_or_else(|| pl(e)));
        }
    };
    let file = last.column("file").map_err(pl)?.str().map_err(pl)?;
    let value = last.column("value").map_err(pl)?.f64().map_err(pl)?;
    let by_file: BTreeMap<&str, f64> = (0..last.height())
        .filter_map(|i| Some((file.get(i)?, value.get(i)?)))
        .collect();
    let mut kept = vec![];
    let mut values = vec![];
    for r in runs {
        let path = study_dir.join(&r.run_id).join("metrics.parquet");
        if let Some(v) = by_file.get(path.to_string_lossy().as_ref()) {
            kept.push(r.clone());
            values.push(*v);
        }
    }
    if kept.is_empty() {
        return Err(pl(polars_err!(NoData: "no run recorded {split_metric}")));
    }
    let fields = row_fields(&kept, by)?;
    aggregate(&kept, &values, scale, &fields).map_err(pl)
}

/// A run's mask-distance matrix ([`distance_matrix`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DistanceMatrix {
    /// Whether the masks were drawn on the step clock (`detect_every`): `marks` are steps, not
    /// epochs.
    pub by_step: bool,
    /// When each mask was drawn (epoch or step; 0 is the mask before training), ascending.
    pub marks: Vec<u64>,
    /// `distances[i][j]`: the distance between the masks at `marks[i]` and `marks[j]`
    /// (symmetric, 0 on the diagonal, NaN where none was recorded).
    pub distances: Vec<Vec<f64>>,
}

/// The mask-distance matrix of a run that recorded one (Early-Bird's `distance/eNNN` rows): for
/// each pair of masks (after each epoch; epoch 0 is the mask before training) the distance
/// between them. A run whose detector ran on the step clock (`distance/sNNNNNN` rows) gives steps
/// in place of epochs.
pub fn distance_matrix(metrics_path: &Path) -> Result<DistanceMatrix, StoreError> {
    let pl = |source: PolarsError| StoreError::Polars {
        path: metrics_path.to_path_buf(),
        cause: source,
    };
    let df = store::read_metrics(metrics_path)?
        .lazy()
        .filter(col("split").eq(lit("early-bird")))
        .select([col("step"), col("epoch"), col("metric"), col("value")])
        .collect()
        .map_err(pl)?;
    let step = df.column("step").map_err(pl)?.u64().map_err(pl)?;
    let epoch = df.column("epoch").map_err(pl)?.u64().map_err(pl)?;
    let metric = df.column("metric").map_err(pl)?.str().map_err(pl)?;
    let value = df.column("value").map_err(pl)?.f64().map_err(pl)?;
    let mut pairs = BTreeMap::new();
    let mut epochs = BTreeSet::new();
    let mut by_step = false;
    for i in 0..df.height() {
        let (Some(m), Some(v)) = (metric.get(i), value.get(i)) else {
            continue;
        };
        let (clock, older) = if let Some(e) = m.strip_prefix("distance/e") {
            (epoch, e)
        } else if let Some(s) = m.strip_prefix("distance/s") {
            by_step = true;
            (step, s)
        } else {
            continue;
        };
        let (Some(a), Ok(b)) = (clock.get(i), older.parse::<u64>()) else {
            continue;
        };
        epochs.insert(a);
        epochs.insert(b);
        pairs.insert((a, b), v);
        pairs.insert((b, a), v);
    }
    if epochs.is_empty() {
        return Err(pl(
            polars_err!(NoData: "no distance/eNNN or distance/sNNNNNN rows: not an early-bird run"),
        ));
    }
    let epochs: Vec<u64> = epochs.into_iter().collect();
    let matrix = epochs
        .iter()
        .map(|a| {
            epochs
                .iter()
                .map(|b| {
                    if a == b {
                        0.0
                    } else {
                        pairs.get(&(*a, *b)).copied().unwrap_or(f64::NAN)
                    }
                })
                .collect()
        })
        .collect();
    Ok(DistanceMatrix {
        by_step,
        marks: epochs,
        distances: matrix,
    })
}

/// One row per (row label, density) of `values` (one per run) times `scale`; the row label joins
/// the run's `fields` (checked by [`row_fields`]), in column `row` (its name: the fields joined by
/// `/`).
fn aggregate(
    runs: &[RunSummary],
    values: &[f64],
    scale: f64,
    fields: &[String],
) -> PolarsResult<DataFrame> {
    let df = df!(
        "row" => runs.iter().map(|r| row_label(r, fields)).collect::<Vec<_>>(),
        "model" => runs.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        "dataset" => runs.iter().map(|r| r.dataset.as_str()).collect::<Vec<_>>(),
        "method" => runs.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        "density" => runs.iter().map(|r| r.density_requested).collect::<Vec<_>>(),
        "seed" => runs.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "value" => values.iter().map(|v| v * scale).collect::<Vec<_>>(),
    )?;
    df.lazy()
        .group_by([col("row"), col("density")])
        .agg([
            col("model").first(),
            col("dataset").first(),
            col("method").first(),
            col("value").mean().alias("mean"),
            col("value").std(1).alias("std"),
            col("value").count().cast(DataType::UInt32).alias("n"),
        ])
        .sort_by_exprs(
            [col("row"), col("density")],
            SortMultipleOptions::default().with_order_descending_multi([false, true]),
        )
        .collect()
}

/// The level curves of a study (IMP's accuracy-versus-density, with its controls), aggregated
/// like [`study_frame`]: one row per (model, dataset, `method phase`, level density) with `mean`,
/// `std` and `n` of the level's final test accuracy (times `scale`) over seeds. Reads the `level`
/// rows of each run's `metrics.parquet` under `study_dir`; one that cannot be read is an error
/// naming it.
pub fn levels_frame(
    study_dir: &Path,
    runs: &[RunSummary],
    scale: f64,
) -> Result<DataFrame, StoreError> {
    let mut parts = vec![];
    for r in runs {
        let path = study_dir.join(&r.run_id).join("metrics.parquet");
        let df = store::read_metrics(&path)?;
        let at_path = |source: PolarsError| StoreError::Polars {
            path: path.clone(),
            cause: source,
        };
        let level = df.lazy().filter(col("split").eq(lit("level"))).select([
            col("round"),
            col("phase"),
            col("metric"),
            col("value"),
        ]);
        let density = level
            .clone()
            .filter(col("metric").eq(lit("density")))
            .select([col("round"), col("phase"), col("value").alias("density")]);
        let accuracy = level.filter(col("metric").eq(lit("accuracy"))).select([
            col("round"),
            col("phase"),
            col("value").alias("value"),
        ]);
        let joined = accuracy
            .join(
                density,
                [col("round"), col("phase")],
                [col("round"), col("phase")],
                JoinArgs::new(JoinType::Inner),
            )
            .with_columns([
                lit(r.model.clone()).alias("model"),
                lit(r.dataset.clone()).alias("dataset"),
                (lit(format!("{} ", r.method)) + col("phase")).alias("method"),
            ])
            .collect()
            .map_err(at_path)?;
        parts.push(joined.lazy());
    }
    let pl = |source: PolarsError| StoreError::Polars {
        path: study_dir.to_path_buf(),
        cause: source,
    };
    if parts.is_empty() {
        return Err(pl(polars_err!(NoData: "no runs")));
    }
    concat(parts, UnionArgs::default())
        .map_err(pl)?
        .with_column(col("method").alias("row"))
        .group_by([
            col("row"),
            col("model"),
            col("dataset"),
            col("method"),
            col("density"),
        ])
        .agg([
            (col("value") * lit(scale)).mean().alias("mean"),
            (col("value") * lit(scale)).std(1).alias("std"),
            col("value").count().cast(DataType::UInt32).alias("n"),
        ])
        .sort_by_exprs(
            [col("model"), col("dataset"), col("method"), col("density")],
            SortMultipleOptions::default().with_order_descending_multi([false, false, false, true]),
        )
        .collect()
        .map_err(pl)
}

/// Which mean of a column is marked best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Best {
    /// The largest (accuracies).
    Highest,
    /// The smallest (losses, seconds, drawn epochs, FLOPs and parameter ratios).
    Lowest,
}

impl Best {
    /// The direction for a metric name: lowest for losses, times, the epoch or step a ticket was
    /// drawn at (earlier is the point of an early-bird ticket) and cost ratios (FLOPs,
    /// parameters); highest otherwise.
    pub fn for_metric(metric: &str) -> Self {
        let lower_is_better = [
            "loss",
            "seconds",
            "drawn-epoch",
            "drawn-step",
            "flops",
            "params",
        ];
        if lower_is_better.iter().any(|m| metric.contains(m)) {
            Best::Lowest
        } else {
            Best::Highest
        }
    }
}

/// Renders the aggregated frame as a row × density table with the highest mean of each column
/// marked; `row_header` names the rows (`method`, `model/method`, ...).
pub fn render_table(
    frame: &DataFrame,
    format: TableFormat,
    title: &str,
    row_header: &str,
) -> PolarsResult<String> {
    render_table_with(frame, format, title, row_header, Best::Highest)
}

/// [`render_table`] with the direction of "best" given.
pub fn render_table_with(
    frame: &DataFrame,
    format: TableFormat,
    title: &str,
    row_header: &str,
    best_is: Best,
) -> PolarsResult<String> {
    render_table_styled(frame, format, title, row_header, best_is, WEIGHT_DENSITY)
}

/// What a density column means for methods that count prunable weights.
pub const WEIGHT_DENSITY: &str = "fraction of prunable weights kept";

/// [`render_table_with`], saying what the density columns count (`density_meaning`, e.g.
/// [`WEIGHT_DENSITY`], or the fraction of batch-norm channels kept for a structured method).
pub fn render_table_styled(
    frame: &DataFrame,
    format: TableFormat,
    title: &str,
    row_header: &str,
    best_is: Best,
    density_meaning: &str,
) -> PolarsResult<String> {
    let method = frame.column("row")?.str()?;
    let density = frame.column("density")?.f64()?;
    let mean = frame.column("mean")?.f64()?;
    let std = frame.column("std")?.f64()?;
    let n = frame.column("n")?.u32()?;
    let models = frame.column("model")?.str()?;
    let datasets = frame.column("dataset")?.str()?;
    let mut cells: BTreeMap<(String, u64), (f64, Option<f64>, u32)> = BTreeMap::new();
    let mut densities: BTreeSet<u64> = BTreeSet::new();
    let mut methods: BTreeSet<String> = BTreeSet::new();
    let mut setting = BTreeSet::new();
    for i in 0..frame.height() {
        let d = density.get(i).unwrap_or(f64::NAN);
        let key = d.to_bits();
        let m = method.get(i).unwrap_or("?").to_string();
        densities.insert(key);
        methods.insert(m.clone());
        setting.insert(format!(
            "{} on {}",
            models.get(i).unwrap_or("?"),
            datasets.get(i).unwrap_or("?")
        ));
        cells.insert(
            (m, key),
            (
                mean.get(i).unwrap_or(f64::NAN),
                std.get(i),
                n.get(i).unwrap_or(0),
            ),
        );
    }
    let mut cols: Vec<u64> = densities.into_iter().collect();
    cols.sort_by(|a, b| f64::from_bits(*b).total_cmp(&f64::from_bits(*a)));
    let best: BTreeMap<u64, f64> = cols
        .iter()
        .map(|c| {
            (
                *c,
                cells
                    .iter()
                    .filter(|((_, d), _)| d == c)
                    .map(|(_, v)| v.0)
                    .fold(
                        match best_is {
                            Best::Highest => f64::NEG_INFINITY,
                            Best::Lowest => f64::INFINITY,
                        },
                        |a, b| match best_is {
                            Best::Highest => a.max(b),
                            Best::Lowest => a.min(b),
                        },
                    ),
            )
        })
        .collect();
    let places = decimal_places(cells.values().map(|v| v.0));
    let fmt_cell = |v: &(f64, Option<f64>, u32)| match v.1 {
        Some(s) => format!("{:.places$} ± {:.places$} (n={})", v.0, s, v.2),
        None => format!("{:.places$} (n={})", v.0, v.2),
    };
    let header_density = |c: &u64| {
        let d = f64::from_bits(*c);
        format!("{}% (10^{:.2})", trim(d * 100.0), -d.log10() + 0.0)
    };
    let mut out = String::new();
    match format {
        TableFormat::Markdown => {
            out.push_str(&format!(
                "### {title} ({})\n\n",
                setting.into_iter().collect::<Vec<_>>().join("; ")
            ));
            out.push_str(&format!("| {row_header} | "));
            out.push_str(
                &cols
                    .iter()
                    .map(header_density)
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            out.push_str(" |\n|---|");
            out.push_str(&"---|".repeat(cols.len()));
            out.push('\n');
            for m in &methods {
                out.push_str(&format!("| {m} |"));
                for c in &cols {
                    match cells.get(&(m.clone(), *c)) {
                        Some(v) if methods.len() > 1 && v.0 == best[c] => {
                            out.push_str(&format!(" **{}** |", fmt_cell(v)))
                        }
                        Some(v) => out.push_str(&format!(" {} |", fmt_cell(v))),
                        None => out.push_str(" – |"),
                    }
                }
                out.push('\n');
            }
            out.push_str(&format!("\nColumns: density ({density_meaning}) and compression 10^x; cells: mean ± sample std over seeds.\n"));
        }
        TableFormat::Csv => {
            out.push_str(&format!("{row_header},density,mean,std,n\n"));
            for ((m, c), v) in &cells {
                let m = if m.contains(',') || m.contains('"') {
                    format!("\"{}\"", m.replace('"', "\"\""))
                } else {
                    m.clone()
                };
                out.push_str(&format!(
                    "{m},{},{},{},{}\n",
                    f64::from_bits(*c),
                    v.0,
                    v.1.map(|s| s.to_string()).unwrap_or_default(),
                    v.2
                ));
            }
        }
        TableFormat::Latex => {
            out.push_str(&format!(
                "% {title}\n\\begin{{tabular}}{{l{}}}\n\\hline\n{}",
                "r".repeat(cols.len()),
                row_header.replace('_', "\\_")
            ));
            for c in &cols {
                out.push_str(&format!(" & {}\\%", trim(f64::from_bits(*c) * 100.0)));
            }
            out.push_str(" \\\\\n\\hline\n");
            for m in &methods {
                out.push_str(&m.replace('_', "\\_"));
                for c in &cols {
                    match cells.get(&(m.clone(), *c)) {
                        Some(v) => {
                            let s = match v.1 {
                                Some(s) => format!("{:.places$} $\\pm$ {:.places$}", v.0, s),
                                None => format!("{:.places$}", v.0),
                            };
                            if methods.len() > 1 && v.0 == best[c] {
                                out.push_str(&format!(" & \\textbf{{{s}}}"));
                            } else {
                                out.push_str(&format!(" & {s}"));
                            }
                        }
                        None => out.push_str(" & --"),
                    }
                }
                out.push_str(" \\\\\n");
            }
            out.push_str("\\hline\n\\end{tabular}\n");
        }
    }
    Ok(out)
}

/// Decimal places for a table's cells: 2 (accuracies, seconds), or more when the smallest
/// non-zero mean is below 1, so that it keeps 3 significant digits (a density of 0.005 prints as
/// 0.00500, not 0.01); at most 8.
fn decimal_places(means: impl Iterator<Item = f64>) -> usize {
    let smallest = means
        .map(f64::abs)
        .filter(|m| m.is_finite() && *m > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() || smallest >= 1.0 {
        return 2;
    }
    (2 - smallest.log10().floor() as i64).clamp(2, 8) as usize
}

fn trim(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run's summary for tests (id from method, density and seed).
    pub(crate) fn run(method: &str, density: f64, seed: u64, acc: f64) -> RunSummary {
        RunSummary {
            run_id: format!("{method}{density}{seed}"),
            study: "s".into(),
            method: method.into(),
            model: "m".into(),
            dataset: "d".into(),
            seed,
            density_requested: density,
            density_achieved: density,
            kept: 0,
            prunable: 0,
            collapsed_layers: vec![],
            test_accuracy: acc,
            test_loss: 0.0,
            test_accuracy_at_init: 0.0,
            best_test_accuracy: None,
            best_test_epoch: None,
            epochs: 1,
            prune_seconds: 0.0,
            train_seconds: 0.0,
            backend: "x".into(),
            processor: String::new(),
            git_commit: "x".into(),
            git_dirty: false,
            lottery_version: "0".into(),
            options: String::new(),
            setting: String::new(),
        }
    }

    #[test]
    fn best_test_accuracy_is_a_summary_metric_and_runs_without_it_are_left_out() {
        let mut a = run("a", 0.5, 0, 0.80);
        a.best_test_accuracy = Some(0.85);
        a.best_test_epoch = Some(7);
        let mut b = run("a", 0.5, 1, 0.70);
        b.best_test_accuracy = Some(0.75);
        b.best_test_epoch = Some(9);
        let old = run("a", 0.5, 2, 0.60);
        let opts = TableOptions {
            metric: "best_test_accuracy".into(),
            ..TableOptions::default()
        };
        let frame = study_frame(&[a.clone(), b.clone(), old.clone()], &opts).unwrap();
        let mean = frame.column("mean").unwrap().f64().unwrap().get(0).unwrap();
        let n = frame.column("n").unwrap().u32().unwrap().get(0).unwrap();
        assert!((mean - 80.0).abs() < 1e-9, "{mean}");
        assert_eq!(n, 2, "the run without it is left out");
        let epochs = TableOptions {
            metric: "best_test_epoch".into(),
            scale: 1.0,
            by: vec![],
        };
        let frame = study_frame(&[a, b], &epochs).unwrap();
        let mean = frame.column("mean").unwrap().f64().unwrap().get(0).unwrap();
        assert_eq!(mean, 8.0);
        let e = study_frame(&[old], &opts).unwrap_err();
        assert!(e.to_string().contains("no run holds it"), "{e}");
        // The old summary without the fields still reads, and a new one round-trips them.
        let mut json = serde_json::to_value(run("a", 0.5, 0, 0.8)).unwrap();
        assert!(json.get("best_test_accuracy").is_none());
        json["best_test_accuracy"] = serde_json::json!(0.9);
        json["best_test_epoch"] = serde_json::json!(3);
        let back: RunSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back.best_test_accuracy, Some(0.9));
        assert_eq!(back.best_test_epoch, Some(3));
    }

    #[test]
    fn small_metrics_keep_three_significant_digits() {
        // Densities of 0.5 % and 5 %: at 2 decimals both would print as 0.01 and 0.05.
        let runs = vec![
            run("a", 0.005, 0, 0.0),
            run("a", 0.005, 1, 0.0),
            run("b", 0.05, 0, 0.0),
        ];
        let opts = TableOptions {
            metric: "density_achieved".into(),
            scale: 1.0,
            by: vec![],
        };
        let f = study_frame(&runs, &opts).unwrap();
        let md = render_table(&f, TableFormat::Markdown, "t", "method").unwrap();
        assert!(
            md.contains("| a | – | **0.00500 ± 0.00000 (n=2)** |"),
            "{md}"
        );
        assert!(md.contains("| b | **0.05000 (n=1)** | – |"), "{md}");
        let tex = render_table(&f, TableFormat::Latex, "t", "method").unwrap();
        assert!(tex.contains("0.00500 $\\pm$ 0.00000"), "{tex}");
        assert_eq!(decimal_places([87.3, 12.0].into_iter()), 2);
        assert_eq!(decimal_places([0.35, 0.0].into_iter()), 3);
        assert_eq!(decimal_places([0.0017].into_iter()), 5);
        assert_eq!(decimal_places([f64::NAN, 0.0].into_iter()), 2);
        assert_eq!(decimal_places([1e-12].into_iter()), 8);
    }

    #[test]
    fn mean_and_sample_std_match_a_hand_computation() {
        let runs = vec![
            run("a", 0.1, 0, 0.80),
            run("a", 0.1, 1, 0.90),
            run("a", 0.02, 0, 0.5),
            run("b", 0.1, 0, 0.7),
            run("b", 0.1, 1, 0.7),
        ];
        let f = study_frame(&runs, &TableOptions::default()).unwrap();
        assert_eq!(f.height(), 3);
        // First row: method a, density 0.1 (densities descending within a method).
        assert_eq!(f.column("row").unwrap().str().unwrap().get(0), Some("a"));
        assert_eq!(
            f.column("density").unwrap().f64().unwrap().get(0),
            Some(0.1)
        );
        let mean = f.column("mean").unwrap().f64().unwrap().get(0).unwrap();
        let std = f.column("std").unwrap().f64().unwrap().get(0).unwrap();
        assert!((mean - 85.0).abs() < 1e-9);
        assert!((std - (50.0f64).sqrt()).abs() < 1e-9, "{std}"); // sample std of 80, 90
        assert_eq!(f.column("std").unwrap().f64().unwrap().get(1), None);
        let md = render_table(&f, TableFormat::Markdown, "t", "method").unwrap();
        assert!(md.contains("**85.00 ± 7.07 (n=2)**"), "{md}");
        assert!(md.contains("| b | 70.00 ± 0.00 (n=2) | – |"), "{md}");
        let csv = render_table(&f, TableFormat::Csv, "t", "method").unwrap();
        assert!(csv.starts_with("method,density,mean,std,n\n"));
        let tex = render_table(&f, TableFormat::Latex, "t", "method").unwrap();
        assert!(tex.contains("\\textbf{85.00 $\\pm$ 7.07}"), "{tex}");
        // For times and losses the smallest mean is the best.
        assert_eq!(Best::for_metric("prune_seconds"), Best::Lowest);
        assert_eq!(Best::for_metric("test_accuracy"), Best::Highest);
        assert_eq!(Best::for_metric("early-bird/drawn-epoch"), Best::Lowest);
        assert_eq!(
            Best::for_metric("gcn-tickets/train-flops-ratio"),
            Best::Lowest
        );
        assert_eq!(Best::for_metric("early-bird/dense-accuracy"), Best::Highest);
        let md = render_table_with(&f, TableFormat::Markdown, "t", "method", Best::Lowest).unwrap();
        assert!(
            md.contains("| a | 85.00 ± 7.07 (n=2) | **50.00 (n=1)** |"),
            "{md}"
        );
        assert!(md.contains("| b | **70.00 ± 0.00 (n=2)** | – |"), "{md}");
    }

    #[test]
    fn runs_that_differ_in_method_options_get_their_own_rows() {
        let mut runs = vec![run("t", 0.5, 0, 0.8), run("t", 0.5, 1, 0.6)];
        for (r, source) in runs.iter_mut().zip(["find_on=mlm", "find_on=task-b"]) {
            r.options = source.into();
        }
        assert_eq!(row_fields(&runs, &[]).unwrap(), ["method", "options"]);
        let e = row_fields(&runs, &["method".into()]).unwrap_err();
        assert!(e.to_string().contains("more than one options"), "{e}");
        let f = study_frame(&runs, &TableOptions::default()).unwrap();
        let md = render_table(&f, TableFormat::Markdown, "t", "method/options").unwrap();
        assert!(md.contains("| t / find_on=mlm | **80.00 (n=1)** |"), "{md}");
        assert!(md.contains("| t / find_on=task-b | 60.00 (n=1) |"), "{md}");
        let picked = select_runs(&runs, &[("options".into(), "find_on=mlm".into())]).unwrap();
        assert_eq!(picked.len(), 1);
    }

    #[test]
    fn runs_that_differ_in_setting_are_never_averaged() {
        let mut runs = vec![run("g", 0.5, 0, 0.8), run("g", 0.5, 0, 0.6)];
        runs[0].setting = "model.init=default".into();
        runs[1].setting = "model.init=signed-constant".into();
        assert_eq!(row_fields(&runs, &[]).unwrap(), ["method", "setting"]);
        let e = row_fields(&runs, &["method".into()]).unwrap_err();
        assert!(e.to_string().contains("more than one setting"), "{e}");
        let f = study_frame(&runs, &TableOptions::default()).unwrap();
        let md = render_table(&f, TableFormat::Markdown, "t", "method/setting").unwrap();
        assert!(
            md.contains("| g / model.init=default | **80.00 (n=1)** |"),
            "{md}"
        );
        assert!(
            md.contains("| g / model.init=signed-constant | 60.00 (n=1) |"),
            "{md}"
        );
        let picked = select_runs(
            &runs,
            &[("setting".into(), "model.init=signed-constant".into())],
        )
        .unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].test_accuracy, 0.6);
    }

    #[test]
    fn filters_and_row_fields_select_and_key_the_rows() {
        let mut runs = vec![
            run("a", 0.1, 0, 0.80),
            run("a", 0.1, 1, 0.90),
            run("b", 0.1, 0, 0.70),
            run("b", 0.01, 0, 0.60),
        ];
        let mut other = run("a", 0.1, 0, 0.5);
        other.model = "m2".into();
        other.run_id = "other".into();
        runs.push(other);
        // Two models: the automatic rows put the model first.
        assert_eq!(row_fields(&runs, &[]).unwrap(), ["model", "method"]);
        let e = row_fields(&runs, &["method".into()]).unwrap_err();
        assert!(e.to_string().contains("more than one model"), "{e}");
        let f = study_frame(
            &runs,
            &TableOptions {
                by: vec!["model".into(), "method".into()],
                ..TableOptions::default()
            },
        )
        .unwrap();
        let md = render_table(&f, TableFormat::Markdown, "t", "model/method").unwrap();
        assert!(md.contains("| model/method |"), "{md}");
        assert!(
            md.contains("| m / a | **85.00 ± 7.07 (n=2)** | – |"),
            "{md}"
        );
        assert!(md.contains("| m2 / a | 50.00 (n=1) | – |"), "{md}");

        let only_m = select_runs(&runs, &[("model".into(), "m".into())]).unwrap();
        assert_eq!(only_m.len(), 4);
        let seeds = study_frame(
            &only_m,
            &TableOptions {
                by: vec!["method".into(), "seed".into()],
                ..TableOptions::default()
            },
        )
        .unwrap();
        assert_eq!(seeds.height(), 4);
        let csv = render_table(&seeds, TableFormat::Csv, "t", "method/seed").unwrap();
        assert!(csv.contains("a / seed 1,0.1,90,,1\n"), "{csv}");
        let dense = select_runs(
            &runs,
            &[
                ("density".into(), "0.1".into()),
                ("method".into(), "b".into()),
                ("method".into(), "a".into()),
            ],
        )
        .unwrap();
        assert_eq!(dense.len(), 4);
        assert!(select_runs(&runs, &[("colour".into(), "red".into())]).is_err());
        assert!(select_runs(&runs, &[("density".into(), "high".into())]).is_err());
        assert!(row_fields(&runs, &["colour".into()]).is_err());
    }

    /// Two runs with a `test/accuracy` and `level` rows each, written under `study`.
    #[test]
    fn the_distance_matrix_reads_epoch_and_step_clocks() {
        let dir = tempfile::tempdir().unwrap();
        let row = |step: u64, epoch: u64, metric: String, value| crate::MetricRecord {
            round: 0,
            phase: "search".into(),
            step,
            epoch,
            split: "early-bird".into(),
            metric,
            value,
        };
        // Masks before training and after steps 3 and 6 (epochs 0 and 1 of 4 steps).
        let stepped = dir.path().join("steps.parquet");
        let rows = vec![
            row(3, 0, "distance/s000000".into(), 0.5),
            row(6, 1, "distance/s000000".into(), 0.25),
            row(6, 1, "distance/s000003".into(), 0.125),
            row(6, 1, "distance-max".into(), 0.5),
        ];
        store::write_metrics(&stepped, &rows).unwrap();
        let d = distance_matrix(&stepped).unwrap();
        assert!(d.by_step);
        assert_eq!(d.marks, vec![0, 3, 6]);
        assert_eq!(d.distances[0], vec![0.0, 0.5, 0.25]);
        assert_eq!(d.distances[2], vec![0.25, 0.125, 0.0]);
        let by_epoch = dir.path().join("epochs.parquet");
        let rows = vec![
            row(4, 1, "distance/e000".into(), 0.5),
            row(8, 2, "distance/e000".into(), 0.25),
            row(8, 2, "distance/e001".into(), 0.125),
        ];
        store::write_metrics(&by_epoch, &rows).unwrap();
        let d = distance_matrix(&by_epoch).unwrap();
        assert!(!d.by_step);
        assert_eq!(d.marks, vec![0, 1, 2]);
        assert_eq!(d.distances[1], vec![0.5, 0.0, 0.125]);
    }

    fn write_two_runs(study: &Path) -> Vec<RunSummary> {
        let mut runs = vec![];
        for (seed, acc) in [(0, 0.9), (1, 0.8)] {
            let r = run("imp", 0.5, seed, acc);
            let dir = study.join(&r.run_id);
            std::fs::create_dir_all(&dir).unwrap();
            let row = |split: &str, metric: &str, value| crate::MetricRecord {
                round: 0,
                phase: "ticket".into(),
                step: 0,
                epoch: 0,
                split: split.into(),
                metric: metric.into(),
                value,
            };
            let rows = vec![
                row("test", "accuracy", acc),
                row("level", "density", 1.0),
                row("level", "accuracy", acc),
            ];
            store::write_metrics(&dir.join("metrics.parquet"), &rows).unwrap();
            runs.push(r);
        }
        runs
    }

    #[test]
    fn a_corrupt_metrics_file_is_named_in_recorded_and_level_tables() {
        let d = tempfile::tempdir().unwrap();
        let runs = write_two_runs(d.path());
        let f = recorded_frame(d.path(), &runs, "test/accuracy", 100.0, &[]).unwrap();
        assert!((f.column("mean").unwrap().f64().unwrap().get(0).unwrap() - 85.0).abs() < 1e-9);
        assert!(levels_frame(d.path(), &runs, 100.0).is_ok());

        let bad = d.path().join(&runs[1].run_id).join("metrics.parquet");
        let want = bad.display().to_string();
        for garbage in [&b"PAR1 not a parquet file PAR1"[..], b""] {
            std::fs::write(&bad, garbage).unwrap();
            let e = recorded_frame(d.path(), &runs, "test/accuracy", 100.0, &[]).unwrap_err();
            assert!(
                matches!(&e, StoreError::Polars { path, .. } if *path == bad),
                "{e}"
            );
            assert!(e.to_string().starts_with(&want), "{e}");
            let e = levels_frame(d.path(), &runs, 100.0).unwrap_err();
            assert!(e.to_string().starts_with(&want), "{e}");
        }

        // A parquet file of the wrong columns is named too.
        let mut other = df!("x" => [1i64, 2]).unwrap();
        ParquetWriter::new(std::fs::File::create(&bad).unwrap())
            .finish(&mut other)
            .unwrap();
        let e = recorded_frame(d.path(), &runs, "test/accuracy", 100.0, &[]).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{e}");
        let e = levels_frame(d.path(), &runs, 100.0).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{e}");

        // And a missing one.
        std::fs::remove_file(&bad).unwrap();
        let e = recorded_frame(d.path(), &runs, "test/accuracy", 100.0, &[]).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{e}");
        let e = levels_frame(d.path(), &runs, 100.0).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{e}");
    }

    #[test]
    fn level_curves_average_each_level_and_phase_over_seeds() {
        let d = tempfile::tempdir().unwrap();
        let row = |round, phase: &str, metric: &str, value| crate::MetricRecord {
            round,
            phase: phase.into(),
            step: 0,
            epoch: 0,
            split: "level".into(),
            metric: metric.into(),
            value,
        };
        let mut runs = vec![];
        for (seed, acc) in [(0, 0.9), (1, 0.8)] {
            let r = run("imp", 0.5, seed, acc);
            let dir = d.path().join(&r.run_id);
            std::fs::create_dir_all(&dir).unwrap();
            let rows = vec![
                row(0, "ticket", "density", 1.0),
                row(0, "ticket", "accuracy", acc),
                row(1, "ticket", "density", 0.5),
                row(1, "ticket", "accuracy", acc - 0.1),
                row(1, "reinit", "density", 0.5),
                row(1, "reinit", "accuracy", 0.5),
                crate::MetricRecord {
                    split: "test".into(),
                    ..row(1, "ticket", "accuracy", 0.0)
                },
            ];
            store::write_metrics(&dir.join("metrics.parquet"), &rows).unwrap();
            runs.push(r);
        }
        let f = levels_frame(d.path(), &runs, 100.0).unwrap();
        assert_eq!(f.height(), 3);
        let method = f.column("method").unwrap().str().unwrap();
        let density = f.column("density").unwrap().f64().unwrap();
        let mean = f.column("mean").unwrap().f64().unwrap();
        let n = f.column("n").unwrap().u32().unwrap();
        // Sorted by label, then decreasing density.
        assert_eq!(method.get(0), Some("imp reinit"));
        assert_eq!(
            (density.get(1), method.get(1)),
            (Some(1.0), Some("imp ticket"))
        );
        assert!((mean.get(1).unwrap() - 85.0).abs() < 1e-9);
        assert_eq!((density.get(2), n.get(2)), (Some(0.5), Some(2)));
        assert!((mean.get(2).unwrap() - 75.0).abs() < 1e-9);
    }
}
