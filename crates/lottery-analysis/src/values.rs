//! One run's value of a metric, for queries that compare single figures (the claims report)
//! rather than tabulate a study.

use std::path::Path;

use polars::prelude::*;

use crate::store::{self, RunSummary, StoreError};
use crate::table::{SUMMARY_METRICS, metric_of};

/// Which figure of a run a query reads.
#[derive(Debug, Clone, PartialEq)]
pub enum RunMetric {
    /// A field of `summary.json` (`test_accuracy`, `best_test_accuracy`, `prune_seconds`, …).
    Summary(String),
    /// The last row of `split/metric` in `metrics.parquet` (`early-bird/drawn-epoch`).
    Recorded {
        /// The split.
        split: String,
        /// The metric.
        metric: String,
    },
    /// The final test accuracy of one level of an iterative method (IMP's `level` rows): the
    /// `phase` (`ticket`, `reinit`, …) at the level whose density is nearest `density`, which
    /// must lie within 2 % of it (relative).
    Level {
        /// The phase.
        phase: String,
        /// The level's density.
        density: f64,
    },
}

impl RunMetric {
    /// Parses a summary field's name or `split/metric` (a level is built, not parsed).
    pub fn parse(name: &str) -> Result<Self, StoreError> {
        if let Some((split, metric)) = name.split_once('/') {
            return Ok(Self::Recorded {
                split: split.into(),
                metric: metric.into(),
            });
        }
        if !SUMMARY_METRICS.contains(&name) {
            return Err(StoreError::Query(format!(
                "metric `{name}`: unknown; expected {}, or split/metric of a recorded metric",
                SUMMARY_METRICS.join(", ")
            )));
        }
        Ok(Self::Summary(name.into()))
    }
}

/// Relative distance within which a level counts as the one asked for.
const LEVEL_TOLERANCE: f64 = 0.02;

/// The value of `metric` in the run `run` of `study_dir`; `None` when the run does not hold it
/// (a field written by later versions, a metric it did not record, no level near the density).
pub fn run_value(
    study_dir: &Path,
    run: &RunSummary,
    metric: &RunMetric,
) -> Result<Option<f64>, StoreError> {
    let path = study_dir.join(&run.run_id).join("metrics.parquet");
    let read = || store::read_metrics(&path);
    let pl = |source: PolarsError| StoreError::Polars {
        path: path.clone(),
        cause: source,
    };
    match metric {
        RunMetric::Summary(name) => Ok(metric_of(run, name).flatten()),
        RunMetric::Recorded { split, metric } => {
            let df = read()?
                .lazy()
                .filter(
                    col("split")
                        .eq(lit(split.as_str()))
                        .and(col("metric").eq(lit(metric.as_str()))),
                )
                .select([col("value")])
                .collect()
                .map_err(pl)?;
            let values = df.column("value").map_err(pl)?.f64().map_err(pl)?;
            Ok((0..values.len()).rev().find_map(|i| values.get(i)))
        }
        RunMetric::Level { phase, density } => {
            let level = read()?
                .lazy()
                .filter(
                    col("split")
                        .eq(lit("level"))
                        .and(col("phase").eq(lit(phase.as_str()))),
                )
                .select([col("round"), col("metric"), col("value")])
                .collect()
                .map_err(pl)?;
            let rounds = level.column("round").map_err(pl)?.u64().map_err(pl)?;
            let names = level.column("metric").map_err(pl)?.str().map_err(pl)?;
            let values = level.column("value").map_err(pl)?.f64().map_err(pl)?;
            let mut by_round: std::collections::BTreeMap<u64, (Option<f64>, Option<f64>)> =
                Default::default();
            for i in 0..level.height() {
                let (Some(round), Some(name), Some(value)) =
                    (rounds.get(i), names.get(i), values.get(i))
                else {
                    continue;
                };
                let entry = by_round.entry(round).or_default();
                match name {
                    "density" => entry.0 = Some(value),
                    "accuracy" => entry.1 = Some(value),
                    _ => {}
                }
            }
            let nearest = by_round
                .values()
                .filter_map(|&(d, a)| Some((d?, a?)))
                .min_by(|x, y| (x.0 - density).abs().total_cmp(&(y.0 - density).abs()));
            Ok(nearest
                .filter(|(d, _)| (d - density).abs() <= LEVEL_TOLERANCE * density)
                .map(|(_, a)| a))
        }
    }
}
