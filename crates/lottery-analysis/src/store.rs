//! Reading and writing the files of a run directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors of the results store, naming the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error.
    #[error("{path}: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// Parquet or frame error.
    #[error("{path}: {cause}")]
    Polars {
        /// The path.
        path: PathBuf,
        /// Cause.
        cause: PolarsError,
    },
    /// A summary that does not parse.
    #[error("{path}: {why}")]
    Format {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A query the runs cannot answer (unknown field, filter value of the wrong type).
    #[error("{0}")]
    Query(String),
}

/// One metric observation (the row type of `metrics.parquet`).
pub type MetricRecord = lottery_core::MetricRow;

/// One prunable parameter of the final mask.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    /// PyTorch name.
    pub parameter: String,
    /// Shape, PyTorch layout.
    pub shape: Vec<usize>,
    /// Entries.
    pub numel: u64,
    /// Kept entries.
    pub kept: u64,
}

/// `summary.json`: what a table needs of a run, flat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run id (hash of the resolved config).
    pub run_id: String,
    /// Study.
    pub study: String,
    /// Method.
    pub method: String,
    /// The method's options that differ from its defaults, `key=value` joined by `, ` (empty:
    /// all defaults), which tell apart the runs of a study that varies an option.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
    /// Model.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Seed.
    pub seed: u64,
    /// Requested density of the prunable weights.
    pub density_requested: f64,
    /// Achieved density of the prunable weights.
    pub density_achieved: f64,
    /// Kept prunable weights.
    pub kept: u64,
    /// Prunable weights.
    pub prunable: u64,
    /// Parameters that the mask removed entirely.
    pub collapsed_layers: Vec<String>,
    /// Test accuracy after the last epoch.
    pub test_accuracy: f64,
    /// Test loss after the last epoch.
    pub test_loss: f64,
    /// Test accuracy of the pruned network before training.
    pub test_accuracy_at_init: f64,
    /// Best test accuracy over the evaluated epochs of the run's final training (the Early-Bird
    /// reference reports this, its `best_prec1`: selected on the test set, so optimistic); absent
    /// in runs that evaluated no epoch, or written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_test_accuracy: Option<f64>,
    /// The epoch after which [`RunSummary::best_test_accuracy`] was measured (the first on ties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_test_epoch: Option<u64>,
    /// Training epochs.
    pub epochs: u64,
    /// Seconds spent finding the mask.
    pub prune_seconds: f64,
    /// Seconds spent training and evaluating.
    pub train_seconds: f64,
    /// Backend the run used.
    pub backend: String,
    /// The processor the run computed on (model; widest vector instruction set; any variable
    /// that caps it): LibTorch's CPU kernels choose their code by instruction set, so a config
    /// run on another processor can give other figures. Empty in runs written before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub processor: String,
    /// Commit of the code, when known.
    pub git_commit: String,
    /// Whether the working tree had uncommitted changes.
    pub git_dirty: bool,
    /// Version of lottery.
    pub lottery_version: String,
    /// The keys of the run's `config.toml` outside the fields above (everything but the study,
    /// seed, model and dataset names, method, density and the methods' options) whose values
    /// differ between the finished runs of its study, as `key=value` joined by `, `: set by
    /// [`scan_runs`], empty when the study's runs agree on all of them, never written. Runs that
    /// differ here (`model.init`, `train.lr`, ...) are different settings, never averaged.
    #[serde(skip)]
    pub setting: String,
}

/// The layer-collapse study's result for one model (`lottery collapse`), kept beside the study's
/// runs as `collapse.<model>.json` (a plain file: never counted as a run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollapseRecord {
    /// Model.
    pub model: String,
    /// Dataset of the batch that data-driven scores read.
    pub dataset: String,
    /// Seed of the initial weights.
    pub seed: u64,
    /// log10 of the maximal critical compression (each prunable layer keeps one weight).
    pub max_critical_x: f64,
    /// Grid step in x of the bisection.
    pub resolution: f64,
    /// One entry per method, in the config's order.
    pub methods: Vec<CollapseMethod>,
    /// Backend.
    pub backend: String,
    /// The processor it computed on, as [`RunSummary::processor`]. Empty in records written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub processor: String,
    /// Commit of the code, when known.
    pub git_commit: String,
    /// Whether the working tree had uncommitted changes.
    pub git_dirty: bool,
}

/// One method's critical compression in a [`CollapseRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollapseMethod {
    /// Method name.
    pub method: String,
    /// Score-then-mask rounds.
    pub iterations: usize,
    /// Largest x on the grid at which no layer collapsed (compression 10^x).
    pub critical_x: f64,
    /// The layers pruned away one grid step further.
    pub collapsed_beyond: Vec<String>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Where a study keeps the layer-collapse record of `model`.
pub fn collapse_path(study_dir: &Path, model: &str) -> PathBuf {
    study_dir.join(format!("collapse.{model}.json"))
}

/// Writes a layer-collapse record (atomically).
pub fn write_collapse(study_dir: &Path, record: &CollapseRecord) -> Result<(), StoreError> {
    std::fs::create_dir_all(study_dir).map_err(io(study_dir))?;
    let path = collapse_path(study_dir, &record.model);
    let json = serde_json::to_string_pretty(record).map_err(|e| StoreError::Format {
        path: path.clone(),
        why: e.to_string(),
    })?;
    lottery_core::fsutil::write_atomic(&path, json.as_bytes()).map_err(io(&path))
}

/// Reads the layer-collapse record of `model`; `None` when the study has none.
pub fn read_collapse(study_dir: &Path, model: &str) -> Result<Option<CollapseRecord>, StoreError> {
    let path = collapse_path(study_dir, model);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Format {
            path,
            why: e.to_string(),
        })
}

/// The models of a study's layer-collapse records, sorted.
pub fn collapse_models(study_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(study_dir) else {
        return vec![];
    };
    let mut models: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            Some(
                name.strip_prefix("collapse.")?
                    .strip_suffix(".json")?
                    .to_string(),
            )
        })
        .collect();
    models.sort();
    models
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

fn pl(path: &Path) -> impl FnOnce(PolarsError) -> StoreError + '_ {
    move |source| StoreError::Polars {
        path: path.to_path_buf(),
        cause: source,
    }
}

fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<(), StoreError> {
    let f = File::create(path).map_err(io(path))?;
    ParquetWriter::new(f).finish(df).map_err(pl(path))?;
    Ok(())
}

/// Writes `metrics.parquet` (long form).
pub fn write_metrics(path: &Path, rows: &[MetricRecord]) -> Result<(), StoreError> {
    let mut df = df!(
        "round" => rows.iter().map(|r| r.round).collect::<Vec<_>>(),
        "phase" => rows.iter().map(|r| r.phase.as_str()).collect::<Vec<_>>(),
        "step" => rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        "epoch" => rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        "split" => rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(),
        "metric" => rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(),
        "value" => rows.iter().map(|r| r.value).collect::<Vec<_>>(),
    )
    .map_err(pl(path))?;
    write_parquet(path, &mut df)
}

/// Reads `metrics.parquet`.
pub fn read_metrics(path: &Path) -> Result<DataFrame, StoreError> {
    let f = File::open(path).map_err(io(path))?;
    ParquetReader::new(f).finish().map_err(pl(path))
}

/// Writes `layers.parquet`.
pub fn write_layers(path: &Path, rows: &[LayerRow]) -> Result<(), StoreError> {
    let mut df = df!(
        "parameter" => rows.iter().map(|r| r.parameter.as_str()).collect::<Vec<_>>(),
        "shape" => rows.iter().map(|r| format!("{:?}", r.shape)).collect::<Vec<_>>(),
        "numel" => rows.iter().map(|r| r.numel).collect::<Vec<_>>(),
        "kept" => rows.iter().map(|r| r.kept).collect::<Vec<_>>(),
        "density" => rows.iter().map(|r| if r.numel == 0 { 1.0 } else { r.kept as f64 / r.numel as f64 }).collect::<Vec<_>>(),
    )
    .map_err(pl(path))?;
    write_parquet(path, &mut df)
}

/// Reads `layers.parquet`.
pub fn read_layers(path: &Path) -> Result<DataFrame, StoreError> {
    let f = File::open(path).map_err(io(path))?;
    ParquetReader::new(f).finish().map_err(pl(path))
}

/// Reads `summary.json`.
pub fn read_summary(path: &Path) -> Result<RunSummary, StoreError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Format {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// The finished runs of a study: every `results/<study>/<id>/summary.json`; folders whose name
/// starts with `.` (runs still being written, claims) are skipped, and so are run folders without
/// a summary (see [`scan_runs`] to learn which).
pub fn finished_runs(study_dir: &Path) -> Result<Vec<RunSummary>, StoreError> {
    Ok(scan_runs(study_dir)?.runs)
}

/// What [`scan_runs`] found in a study folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StudyRuns {
    /// The finished runs, in folder-name order.
    pub runs: Vec<RunSummary>,
    /// Run folders (not hidden) without a `summary.json`, in name order: not runs, left out.
    pub skipped: Vec<PathBuf>,
}

/// The finished runs of a study and the run folders left out for lacking `summary.json`. Hidden
/// folders (`.claims`, `.<id>.work`, `.<id>.tmp-<pid>`) and plain files are neither; a missing
/// study folder has no runs. A summary that cannot be read is an error naming it.
pub fn scan_runs(study_dir: &Path) -> Result<StudyRuns, StoreError> {
    let mut out = StudyRuns::default();
    let entries = match std::fs::read_dir(study_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(StoreError::Io {
                path: study_dir.to_path_buf(),
                cause: source,
            });
        }
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    let mut settings = vec![];
    for d in dirs {
        let hidden = d
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden || !d.is_dir() {
            continue;
        }
        let summary = d.join("summary.json");
        if summary.exists() {
            out.runs.push(read_summary(&summary)?);
            settings.push(read_settings(&d.join("config.toml"))?);
        } else {
            out.skipped.push(d);
        }
    }
    mark_settings(&mut out.runs, &settings);
    Ok(out)
}

/// Whether a dotted `config.toml` key can tell settings apart: not one that [`RunSummary`]'s own
/// fields carry, nor one that says where the data lies rather than what the run computes
/// (`data.root`).
fn is_setting_key(key: &str) -> bool {
    !matches!(
        key,
        "study"
            | "seed"
            | "model.name"
            | "data.name"
            | "data.root"
            | "prune.method"
            | "prune.density"
    ) && !key.starts_with("methods.")
}

/// The settings of a run's `config.toml` that no summary field carries, by dotted key; `None`
/// for a run folder without one.
fn read_settings(path: &Path) -> Result<Option<BTreeMap<String, String>>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| StoreError::Format {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    let settings = lottery_core::config::dotted_leaves(&table, "")
        .into_iter()
        .filter(|(k, _)| is_setting_key(k))
        .map(|(k, v)| match v {
            toml::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(Some(settings))
}

/// Sets each run's [`RunSummary::setting`] to the keys whose values differ between the runs
/// (a key a config leaves out reads `default`; a run without `config.toml` reads `unknown`).
fn mark_settings(runs: &mut [RunSummary], settings: &[Option<BTreeMap<String, String>>]) {
    let known: Vec<&BTreeMap<String, String>> = settings.iter().flatten().collect();
    let keys: BTreeSet<&String> = known.iter().flat_map(|s| s.keys()).collect();
    let varying: Vec<&String> = keys
        .into_iter()
        .filter(|k| {
            known
                .iter()
                .map(|s| s.get(*k))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .collect();
    let unknown = settings.iter().any(Option::is_none) && !known.is_empty();
    if varying.is_empty() && !unknown {
        return;
    }
    for (run, setting) in runs.iter_mut().zip(settings) {
        run.setting = match setting {
            None => "unknown (no config.toml)".into(),
            Some(s) => varying
                .iter()
                .map(|k| format!("{k}={}", s.get(*k).map_or("default", String::as_str)))
                .collect::<Vec<_>>()
                .join(", "),
        };
    }
}

/// Where a study keeps the claims and failure records of its runs (hidden, never tabled).
pub const CLAIMS_DIR: &str = ".claims";

/// The lock file of a run, `<study>/.claims/<run-id>.lock`. Lock files are never removed:
/// removing one while another process has it open would let two processes hold "the" lock at once.
pub fn lock_path(study_dir: &Path, run_id: &str) -> PathBuf {
    study_dir.join(CLAIMS_DIR).join(format!("{run_id}.lock"))
}

/// The file that records why the last attempt at a run failed, `<study>/.claims/<run-id>.failed`.
pub fn failure_path(study_dir: &Path, run_id: &str) -> PathBuf {
    study_dir.join(CLAIMS_DIR).join(format!("{run_id}.failed"))
}

/// An exclusive claim on one run of a study, held while a process computes it (an advisory file
/// lock, released by the operating system when the process ends, however it ends), so that two
/// processes (local workers, Slurm tasks, a second sweep) never write the same run.
#[derive(Debug)]
pub struct RunClaim {
    _file: File,
}

impl RunClaim {
    /// Claims the run, or `None` when another process holds it.
    pub fn try_acquire(study_dir: &Path, run_id: &str) -> Result<Option<RunClaim>, StoreError> {
        let path = lock_path(study_dir, run_id);
        let dir = path.parent().expect("a lock path has a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunClaim { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io {
                path,
                cause: source,
            }),
        }
    }
}

/// Whether some process holds the run's claim now.
pub fn is_claimed(study_dir: &Path, run_id: &str) -> bool {
    let path = lock_path(study_dir, run_id);
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Records why a run failed (replacing an earlier record), for `lottery sweep --status`.
pub fn record_failure(study_dir: &Path, run_id: &str, why: &str) -> Result<(), StoreError> {
    let path = failure_path(study_dir, run_id);
    lottery_core::fsutil::write_atomic(&path, why.as_bytes()).map_err(io(&path))
}

/// Why the last attempt at a run failed, if it did and has not succeeded since.
pub fn read_failure(study_dir: &Path, run_id: &str) -> Option<String> {
    std::fs::read_to_string(failure_path(study_dir, run_id)).ok()
}

/// Forgets a recorded failure (after the run succeeded).
pub fn clear_failure(study_dir: &Path, run_id: &str) -> Result<(), StoreError> {
    let path = failure_path(study_dir, run_id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path,
            cause: source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_a_second_one_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let first = RunClaim::try_acquire(d.path(), "abc").unwrap();
        assert!(first.is_some());
        assert!(is_claimed(d.path(), "abc"));
        assert!(RunClaim::try_acquire(d.path(), "abc").unwrap().is_none());
        assert!(RunClaim::try_acquire(d.path(), "other").unwrap().is_some());
        drop(first);
        assert!(!is_claimed(d.path(), "abc"));
        assert!(RunClaim::try_acquire(d.path(), "abc").unwrap().is_some());
    }

    #[test]
    fn failures_are_recorded_and_cleared() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_failure(d.path(), "r"), None);
        record_failure(d.path(), "r", "pruning failed: boom").unwrap();
        assert_eq!(
            read_failure(d.path(), "r").as_deref(),
            Some("pruning failed: boom")
        );
        clear_failure(d.path(), "r").unwrap();
        clear_failure(d.path(), "r").unwrap();
        assert_eq!(read_failure(d.path(), "r"), None);
    }

    fn summary(run_id: &str) -> RunSummary {
        RunSummary {
            run_id: run_id.into(),
            study: "s".into(),
            method: "m".into(),
            options: String::new(),
            model: "lenet".into(),
            dataset: "d".into(),
            seed: 0,
            density_requested: 0.5,
            density_achieved: 0.5,
            kept: 1,
            prunable: 2,
            collapsed_layers: vec![],
            test_accuracy: 0.9,
            test_loss: 0.1,
            test_accuracy_at_init: 0.1,
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
            setting: String::new(),
        }
    }

    fn write_run(study: &Path, run_id: &str) {
        let dir = study.join(run_id);
        std::fs::create_dir_all(&dir).unwrap();
        let json = serde_json::to_string(&summary(run_id)).unwrap();
        std::fs::write(dir.join("summary.json"), json).unwrap();
    }

    #[test]
    fn run_folders_without_a_summary_are_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let study = d.path();
        write_run(study, "a");
        write_run(study, "c");
        // Broken runs: no summary.
        std::fs::create_dir_all(study.join("b")).unwrap();
        std::fs::create_dir_all(study.join("d")).unwrap();
        std::fs::write(study.join("d/metrics.parquet"), b"x").unwrap();
        let found = scan_runs(study).unwrap();
        let ids: Vec<&str> = found.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(found.skipped, vec![study.join("b"), study.join("d")]);
        assert_eq!(finished_runs(study).unwrap(), found.runs);
        assert_eq!(
            scan_runs(&study.join("absent")).unwrap(),
            StudyRuns::default()
        );
    }

    #[test]
    fn hidden_folders_and_files_are_not_counted_as_skipped_runs() {
        let d = tempfile::tempdir().unwrap();
        let study = d.path();
        write_run(study, "a");
        RunClaim::try_acquire(study, "a").unwrap().unwrap();
        record_failure(study, "b", "boom").unwrap();
        for hidden in [".b.work", ".b.tmp-123", ".a.old-9"] {
            std::fs::create_dir_all(study.join(hidden)).unwrap();
        }
        // A finished-looking hidden folder is still not a run.
        write_run(study, ".c.tmp-5");
        std::fs::write(study.join("notes.txt"), "x").unwrap();
        let found = scan_runs(study).unwrap();
        assert_eq!(found.runs.len(), 1);
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    }

    #[test]
    fn runs_that_differ_beyond_the_summary_fields_carry_their_setting() {
        let d = tempfile::tempdir().unwrap();
        let study = d.path();
        let config = |seed: u64, extra: &str| {
            format!(
                "study = \"s\"\nseed = {seed}\n[model]\nname = \"lenet\"\n{extra}\n\
                 [data]\nroot = \"data-{seed}\"\n[prune]\nmethod = \"m\"\ndensity = 0.{seed}5\n\
                 [train]\nlr = 0.1\n\
                 [methods.m]\nk = {seed}\n"
            )
        };
        for (id, seed, extra) in [
            ("a", 0, ""),
            ("b", 1, ""),
            ("c", 2, "init = \"signed-constant\""),
        ] {
            write_run(study, id);
            std::fs::write(study.join(id).join("config.toml"), config(seed, extra)).unwrap();
        }
        // Seeds, densities, data folders and the methods' options differ too; only the init is a
        // setting.
        let settings: Vec<String> = scan_runs(study)
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.setting)
            .collect();
        assert_eq!(
            settings,
            [
                "model.init=default",
                "model.init=default",
                "model.init=signed-constant"
            ]
        );
        // A run without its config cannot be said to share the others' settings.
        write_run(study, "d");
        let runs = scan_runs(study).unwrap().runs;
        assert_eq!(runs[3].setting, "unknown (no config.toml)");
        // Runs that agree on every other key have no setting to tell apart.
        std::fs::remove_dir_all(study.join("c")).unwrap();
        std::fs::remove_dir_all(study.join("d")).unwrap();
        assert!(
            scan_runs(study)
                .unwrap()
                .runs
                .iter()
                .all(|r| r.setting.is_empty())
        );
        // A config that does not parse is named.
        std::fs::write(study.join("a/config.toml"), "[model\n").unwrap();
        let e = scan_runs(study).unwrap_err().to_string();
        assert!(e.contains("config.toml"), "{e}");
    }

    #[test]
    fn a_corrupt_summary_is_named() {
        let d = tempfile::tempdir().unwrap();
        write_run(d.path(), "a");
        std::fs::write(d.path().join("a/summary.json"), "{ not json").unwrap();
        let e = scan_runs(d.path()).unwrap_err().to_string();
        let want = d.path().join("a/summary.json");
        assert!(e.contains(&want.display().to_string()), "{e}");
    }

    #[test]
    fn metrics_and_layers_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let rows = vec![
            MetricRecord {
                round: 0,
                phase: "ticket".into(),
                step: 0,
                epoch: 0,
                split: "test".into(),
                metric: "accuracy".into(),
                value: 0.1,
            },
            MetricRecord {
                round: 2,
                phase: "reinit".into(),
                step: 10,
                epoch: 1,
                split: "train".into(),
                metric: "loss".into(),
                value: 2.0,
            },
        ];
        let p = d.path().join("metrics.parquet");
        write_metrics(&p, &rows).unwrap();
        let df = read_metrics(&p).unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.column("value").unwrap().f64().unwrap().get(1), Some(2.0));
        assert_eq!(df.column("round").unwrap().u64().unwrap().get(1), Some(2));
        assert_eq!(
            df.column("phase").unwrap().str().unwrap().get(1),
            Some("reinit")
        );
        let p = d.path().join("layers.parquet");
        write_layers(
            &p,
            &[LayerRow {
                parameter: "fc.weight".into(),
                shape: vec![10, 100],
                numel: 1000,
                kept: 10,
            }],
        )
        .unwrap();
        let df = read_layers(&p).unwrap();
        assert_eq!(
            df.column("density").unwrap().f64().unwrap().get(0),
            Some(0.01)
        );
    }
}
