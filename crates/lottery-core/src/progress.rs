//! A method's saved progress: a mask and the metric rows recorded so far, in one safetensors file
//! (the rows as JSON metadata), written atomically. Methods that train (IMP, UGS) save one per
//! round in their work directory and resume from the last.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::PruneError;
use crate::mask::MaskSet;
use crate::plugin::MetricRow;

/// Saves `mask` and `metrics` to `path`.
pub fn save_mask_progress(
    path: &Path,
    mask: &MaskSet,
    metrics: &[MetricRow],
) -> Result<(), PruneError> {
    let rows = serde_json::to_string(metrics).map_err(|e| PruneError::progress(path, e))?;
    let meta = BTreeMap::from([("metrics".to_string(), rows)]);
    mask.save(path, &meta, "")
        .map_err(|e| PruneError::progress(path, e))
}

/// Reads what [`save_mask_progress`] wrote.
pub fn load_mask_progress(path: &Path) -> Result<(MaskSet, Vec<MetricRow>), PruneError> {
    let bytes = std::fs::read(path).map_err(|e| PruneError::progress(path, e))?;
    let mask =
        MaskSet::from_safetensors(&bytes, path).map_err(|e| PruneError::progress(path, e))?;
    let meta = crate::tensorfile::metadata(&bytes).map_err(|e| PruneError::progress(path, e))?;
    let rows = meta
        .get("metrics")
        .ok_or_else(|| PruneError::progress(path, "no `metrics` metadata"))?;
    let rows: Vec<MetricRow> =
        serde_json::from_str(rows).map_err(|e| PruneError::progress(path, e))?;
    Ok((mask, rows))
}
