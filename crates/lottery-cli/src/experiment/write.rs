//! Writing a finished run: its directory under a temporary name, renamed into place when
//! complete, and weights as safetensors with PyTorch names.

use std::collections::BTreeMap;
use std::path::Path;

use lottery_analysis::store::{self, LayerRow, RunSummary};
use lottery_core::{MaskSet, ParamValues};
use lottery_train::Checkpoints;

use super::{Prepared, RunError, io};
use crate::weights;

/// Commit and dirty flag of the working tree, when it is a git checkout, as they were at this
/// process's first call: commands call it as they start, so a record names the code its
/// computation began with, not files changed under it since (its own tracked tables included).
pub fn git_state() -> (String, bool) {
    static STATE: std::sync::OnceLock<(String, bool)> = std::sync::OnceLock::new();
    STATE.get_or_init(read_git_state).clone()
}

fn read_git_state() -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let commit = run(&["rev-parse", "HEAD"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    (commit, dirty)
}

pub(super) fn write_run(
    dir: &Path,
    p: &Prepared,
    summary: &RunSummary,
    metrics: Vec<lottery_core::MetricRow>,
    checkpoints: &Checkpoints,
    mask: &MaskSet,
) -> Result<(), RunError> {
    let parent = dir.parent().expect("run dir has a parent");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir.file_name().and_then(|n| n.to_str()).expect("run id");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let written = write_run_files(&tmp, p, summary, metrics, checkpoints, mask);
    if written.is_err() {
        // A failed write (a full disk, say) leaves no hidden half-run behind.
        let _ = std::fs::remove_dir_all(&tmp);
        return written;
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(io(dir))?;
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Writes every file of a run into the folder `tmp`, the summary last.
fn write_run_files(
    tmp: &Path,
    p: &Prepared,
    summary: &RunSummary,
    metrics: Vec<lottery_core::MetricRow>,
    checkpoints: &Checkpoints,
    mask: &MaskSet,
) -> Result<(), RunError> {
    std::fs::create_dir_all(tmp).map_err(io(tmp))?;
    let write = |file: &str, text: String| {
        let path = tmp.join(file);
        std::fs::write(&path, text).map_err(io(&path))
    };
    write(
        "config.toml",
        toml::to_string(&p.canonical).expect("config serialises to TOML"),
    )?;
    write(
        "sources.json",
        serde_json::to_string_pretty(&p.resolved.sources).expect("json"),
    )?;
    if !p.inputs.is_empty() {
        let inputs: BTreeMap<&String, serde_json::Value> = p
            .inputs
            .iter()
            .map(|(key, sha256)| {
                let path = match key.as_str() {
                    "model.init_from" => p.canonical.model.init_from.clone(),
                    _ => None,
                };
                (key, serde_json::json!({ "path": path, "sha256": sha256 }))
            })
            .collect();
        write(
            "inputs.json",
            serde_json::to_string_pretty(&inputs).expect("json"),
        )?;
    }
    store::write_metrics(&tmp.join("metrics.parquet"), &metrics)?;
    let layers: Vec<LayerRow> = mask
        .layers()
        .into_iter()
        .map(|l| LayerRow {
            parameter: l.name,
            shape: l.shape,
            numel: l.numel as u64,
            kept: l.kept as u64,
        })
        .collect();
    store::write_layers(&tmp.join("layers.parquet"), &layers)?;
    let meta = BTreeMap::from([
        ("method".to_string(), summary.method.clone()),
        ("density".to_string(), summary.density_requested.to_string()),
        (
            "density_achieved".to_string(),
            summary.density_achieved.to_string(),
        ),
        ("run_id".to_string(), summary.run_id.clone()),
        ("layout".to_string(), "pytorch".to_string()),
    ]);
    mask.save(&tmp.join("masks.safetensors"), &meta, "")
        .map_err(|e| RunError::Io {
            path: tmp.join("masks.safetensors"),
            source: std::io::Error::other(e.to_string()),
        })?;
    for (step, values) in checkpoints {
        write_weights(
            &tmp.join(format!("checkpoint-step{step}.safetensors")),
            values,
            &summary.run_id,
        )?;
    }
    // The summary marks the run finished: written last, then the directory moves into place.
    write(
        "summary.json",
        serde_json::to_string_pretty(summary).expect("json"),
    )
}

/// Writes weights as f32 safetensors with PyTorch names.
pub fn write_weights(path: &Path, values: &ParamValues, run_id: &str) -> Result<(), RunError> {
    let meta = BTreeMap::from([
        ("format".to_string(), "lottery-weights/1".to_string()),
        ("run_id".to_string(), run_id.to_string()),
        ("layout".to_string(), "pytorch".to_string()),
    ]);
    lottery_core::fsutil::write_atomic(path, &weights::to_bytes(values, &meta)).map_err(io(path))
}
