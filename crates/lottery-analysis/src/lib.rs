//! The results store and the analysis over it.
//!
//! A run is a directory `results/<study>/<run-id>/` holding `config.toml` (the resolved config),
//! `sources.json` (where each value came from), `metrics.parquet` (long form: round, phase, step, epoch, split,
//! metric, value), `layers.parquet` (parameter, shape, numel, kept, density), `masks.safetensors`
//! and `summary.json`. It is written under a temporary name and renamed into place when complete,
//! so the analysis never sees half a run. [`table`] aggregates the summaries of a study with polars.

pub mod curves;
pub mod store;
pub mod table;
pub mod values;

pub use curves::{EpochCurve, EpochPoint, epoch_curves};
pub use store::{
    CollapseMethod, CollapseRecord, LayerRow, MetricRecord, RunClaim, RunSummary, StoreError,
    StudyRuns,
};
pub use table::{
    Best, DistanceMatrix, FILTER_FIELDS, ROW_FIELDS, SUMMARY_METRICS, TableFormat, TableOptions,
    WEIGHT_DENSITY, distance_matrix, levels_frame, recorded_frame, render_table,
    render_table_styled, render_table_with, row_fields, select_runs, study_frame,
};
pub use values::{RunMetric, run_value};
