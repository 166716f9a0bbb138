//! The mining state saved after every epoch, and loading it back.

use std::collections::BTreeMap;
use std::path::Path;

use lottery_core::{FlatTensor, Mask, MaskSet, MetricRow, ParamValues, PruneError, weights};
use serde::{Deserialize, Serialize};

use crate::MiningState;

/// Where mining stands, beside the tensors of the saved state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step: usize,
    prunes_done: usize,
    /// Controls trained after mining (absent from states saved before controls existed).
    #[serde(default)]
    controls_done: usize,
}

const SCORE: &str = "score/";
const FLAG: &str = "flag/";
const MOMENT: &str = "moment/";
const VALUE: &str = "value/";

/// Saves the state after an epoch (scores, flags, optimiser moments, every model value) with the
/// rows recorded so far, atomically.
pub(crate) fn save_state(
    path: &Path,
    state: &MiningState,
    values: &ParamValues,
    prunes_done: usize,
    controls_done: usize,
    rows: &[MetricRow],
) -> Result<(), PruneError> {
    let mut all = ParamValues::new();
    for (n, t) in &state.scores {
        all.insert(format!("{SCORE}{n}"), t.clone());
    }
    for (n, m) in state.flags.iter() {
        all.insert(
            format!("{FLAG}{n}"),
            FlatTensor::new(m.shape.clone(), m.as_f32()),
        );
    }
    for (n, t) in &state.moments {
        all.insert(format!("{MOMENT}{n}"), t.clone());
    }
    for (n, t) in values {
        all.insert(format!("{VALUE}{n}"), t.clone());
    }
    let progress = Progress {
        epoch: state.epoch,
        step: state.step,
        prunes_done,
        controls_done,
    };
    let meta = BTreeMap::from([
        (
            "progress".to_string(),
            serde_json::to_string(&progress).map_err(|e| PruneError::progress(path, e))?,
        ),
        (
            "metrics".to_string(),
            serde_json::to_string(rows).map_err(|e| PruneError::progress(path, e))?,
        ),
    ]);
    lottery_core::fsutil::write_atomic(path, &weights::to_bytes(&all, &meta))
        .map_err(|e| PruneError::progress(path, e))
}

/// A saved state: the mining state, every model value, prunes done, controls done, rows.
type Saved = (MiningState, ParamValues, usize, usize, Vec<MetricRow>);

/// Loads a saved state. A file that does not load is [`PruneError::DamagedProgress`].
pub(crate) fn load_state(path: &Path) -> Result<Saved, PruneError> {
    let damaged = |why: &dyn std::fmt::Display| PruneError::damaged_progress(path, why);
    let all = weights::read(path).map_err(|e| damaged(&e))?;
    let bytes = std::fs::read(path).map_err(|e| damaged(&e))?;
    let meta = lottery_core::tensorfile::metadata(&bytes).map_err(|e| damaged(&e))?;
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| damaged(&format!("no `{key}` metadata")))
    };
    let progress: Progress = serde_json::from_str(get("progress")?).map_err(|e| damaged(&e))?;
    let rows: Vec<MetricRow> = serde_json::from_str(get("metrics")?).map_err(|e| damaged(&e))?;
    let mut state = MiningState {
        epoch: progress.epoch,
        step: progress.step,
        scores: ParamValues::new(),
        flags: MaskSet::new(),
        moments: ParamValues::new(),
    };
    let mut values = ParamValues::new();
    for (key, t) in all {
        if let Some(n) = key.strip_prefix(SCORE) {
            state.scores.insert(n.to_string(), t);
        } else if let Some(n) = key.strip_prefix(FLAG) {
            let keep = t.values.iter().map(|&v| v != 0.0).collect();
            state.flags.insert(
                n.to_string(),
                Mask {
                    shape: t.shape,
                    keep,
                },
            );
        } else if let Some(n) = key.strip_prefix(MOMENT) {
            state.moments.insert(n.to_string(), t);
        } else if let Some(n) = key.strip_prefix(VALUE) {
            values.insert(n.to_string(), t);
        }
    }
    Ok((
        state,
        values,
        progress.prunes_done,
        progress.controls_done,
        rows,
    ))
}
