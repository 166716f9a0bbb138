//! The record of a `draw = "last"` search shared by the runs of a config that differ only in
//! density (`PruneContext::shared_dir`): everything each density draws its masks, distance rows
//! and ticket from, written once by the run that trained the search and read by the others.
//!
//! One safetensors file: the scales of every check as one tensor per batch-norm layer (`checks/<scale>`,
//! a row per check in step order, their steps and epochs in the metadata), the scales at the end of
//! the budget (`end-scale/<scale>`), the weights the training saved at checkpoint steps
//! (`checkpoint/<step>/<name>`), with `retrain_from = "keep"` the weights at the end
//! (`weight/<name>`); in the metadata the search's own rows, the end step and the dense network's
//! test accuracy (as its bits).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lottery_core::{FlatTensor, MetricRow, ParamValues, PruneError, weights};
use lottery_models::channel_masks::ChannelGroup;
use lottery_train::Checkpoints;

use crate::history::{Check, ChecksByStep};

/// The record's layout; another is read as damaged (and the search trained again).
const FORMAT: &str = "1";
const CHECKS: &str = "checks/";
const END_SCALE: &str = "end-scale/";
const WEIGHT: &str = "weight/";

/// What a shared search leaves for every density.
#[derive(Debug, Clone)]
pub(crate) struct SharedSearch {
    /// The scales at every check, by step (step 0 first).
    pub checks: ChecksByStep,
    /// The step the search ended at (the end of its budget).
    pub end_step: usize,
    /// The scales at the end of the budget (the ticket's, at each density).
    pub end_scales: ParamValues,
    /// The rows the search's training recorded.
    pub rows: Vec<MetricRow>,
    /// Test accuracy of the dense network at the end of the search.
    pub dense_accuracy: f64,
    /// Weights the search's training saved at the run's checkpoint steps.
    pub checkpoints: Checkpoints,
    /// The weights at the end of the search, kept with `retrain_from = "keep"` only.
    pub values: Option<ParamValues>,
}

impl SharedSearch {
    /// Where the record lies in the shared folder.
    pub fn path(shared: &Path) -> PathBuf {
        shared.join("early-bird").join("record.safetensors")
    }

    /// Writes the record atomically.
    pub fn save(&self, path: &Path) -> Result<(), PruneError> {
        let err = |e: &dyn std::fmt::Display| PruneError::progress(path, e.to_string());
        let mut tensors = ParamValues::new();
        let mut put = |prefix: &str, values: &ParamValues| {
            for (name, t) in values {
                tensors.insert(format!("{prefix}{name}"), t.clone());
            }
        };
        put(WEIGHT, self.values.as_ref().unwrap_or(&ParamValues::new()));
        put(END_SCALE, &self.end_scales);
        lottery_train::put_checkpoints(&mut tensors, &self.checkpoints);
        let names: Vec<&String> = self.end_scales.keys().collect();
        for name in names {
            let mut rows = vec![];
            for c in self.checks.values() {
                let t = c
                    .scales
                    .get(name)
                    .ok_or_else(|| err(&format!("no {name} at a check")))?;
                rows.extend_from_slice(&t.values);
            }
            let width = self.end_scales[name].values.len();
            let shape = vec![self.checks.len(), width];
            if rows.len() != self.checks.len() * width {
                return Err(err(&format!(
                    "{name}: checks of another width than {width}"
                )));
            }
            tensors.insert(format!("{CHECKS}{name}"), FlatTensor::new(shape, rows));
        }
        let steps: Vec<usize> = self.checks.keys().copied().collect();
        let epochs: Vec<usize> = self.checks.values().map(|c| c.epoch).collect();
        let json = |r: Result<String, serde_json::Error>| r.map_err(|e| err(&e));
        let meta = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (
                "check_steps".to_string(),
                json(serde_json::to_string(&steps))?,
            ),
            (
                "check_epochs".to_string(),
                json(serde_json::to_string(&epochs))?,
            ),
            ("end_step".to_string(), self.end_step.to_string()),
            ("rows".to_string(), json(serde_json::to_string(&self.rows))?),
            // The bits, so that the accuracy reads back exactly.
            (
                "dense_accuracy_bits".to_string(),
                self.dense_accuracy.to_bits().to_string(),
            ),
            ("weights".to_string(), self.values.is_some().to_string()),
        ]);
        let bytes = weights::to_bytes(&tensors, &meta);
        lottery_core::fsutil::write_atomic(path, &bytes).map_err(|e| err(&e))
    }

    /// Reads what [`SharedSearch::save`] wrote, checked against the network's batch-norm
    /// `groups`; a record that does not load or does not fit is [`PruneError::DamagedProgress`].
    pub fn load(path: &Path, groups: &[ChannelGroup]) -> Result<Self, PruneError> {
        let damaged = |why: &dyn std::fmt::Display| PruneError::damaged_progress(path, why);
        let (mut tensors, meta) = read_record(path, FORMAT)?;
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| damaged(&format!("no `{key}` metadata")))
        };
        let steps: Vec<usize> =
            serde_json::from_str(get("check_steps")?).map_err(|e| damaged(&e))?;
        let epochs: Vec<usize> =
            serde_json::from_str(get("check_epochs")?).map_err(|e| damaged(&e))?;
        let end_step: usize = get("end_step")?.parse().map_err(|e| damaged(&e))?;
        let rows: Vec<MetricRow> = serde_json::from_str(get("rows")?).map_err(|e| damaged(&e))?;
        let bits: u64 = get("dense_accuracy_bits")?
            .parse()
            .map_err(|e| damaged(&e))?;
        let has_weights: bool = get("weights")?.parse().map_err(|e| damaged(&e))?;
        if steps.first() != Some(&0)
            || steps.len() != epochs.len()
            || steps.windows(2).any(|w| w[0] >= w[1])
            || steps.last().is_some_and(|&s| s > end_step)
        {
            return Err(damaged(
                &"the checks' steps are not 0, then increasing to the end",
            ));
        }

        let mut take = |prefix: &str| -> ParamValues {
            let names: Vec<String> = tensors
                .keys()
                .filter(|n| n.starts_with(prefix))
                .cloned()
                .collect();
            names
                .into_iter()
                .map(|n| {
                    let t = tensors.remove(&n).expect("listed");
                    (n[prefix.len()..].to_string(), t)
                })
                .collect()
        };
        let end_scales = take(END_SCALE);
        let by_layer = take(CHECKS);
        let mut checks: ChecksByStep = steps
            .iter()
            .zip(&epochs)
            .map(|(&step, &epoch)| {
                let check = Check {
                    epoch,
                    scales: ParamValues::new(),
                };
                (step, check)
            })
            .collect();
        for g in groups {
            let fits =
                |t: Option<&FlatTensor>, shape: &[usize]| t.is_some_and(|t| t.shape == shape);
            if !fits(end_scales.get(&g.scale), &[g.channels])
                || !fits(by_layer.get(&g.scale), &[steps.len(), g.channels])
            {
                return Err(damaged(&format!(
                    "no scales of {} ({} channels) for every check",
                    g.scale, g.channels
                )));
            }
            let all = &by_layer[&g.scale].values;
            for (i, check) in checks.values_mut().enumerate() {
                let row = all[i * g.channels..(i + 1) * g.channels].to_vec();
                check
                    .scales
                    .insert(g.scale.clone(), FlatTensor::new(vec![g.channels], row));
            }
        }
        let weights = take(WEIGHT);
        let checkpoints = lottery_train::take_checkpoints(&mut tensors).map_err(|e| damaged(&e))?;
        Ok(Self {
            checks,
            end_step,
            end_scales,
            rows,
            dense_accuracy: f64::from_bits(bits),
            checkpoints,
            values: has_weights.then_some(weights),
        })
    }
}

/// The tensors and metadata of the record file at `path`, whose metadata says it is of `format`;
/// a file that does not load, or of another format, is [`PruneError::DamagedProgress`].
pub(crate) fn read_record(
    path: &Path,
    format: &str,
) -> Result<(ParamValues, BTreeMap<String, String>), PruneError> {
    let damaged = |why: &dyn std::fmt::Display| PruneError::damaged_progress(path, why);
    let tensors = weights::read(path).map_err(|e| damaged(&e))?;
    let bytes = std::fs::read(path).map_err(|e| damaged(&e))?;
    let meta = lottery_core::tensorfile::metadata(&bytes).map_err(|e| damaged(&e))?;
    match meta.get("format") {
        Some(f) if f == format => Ok((tensors, meta)),
        Some(f) => Err(damaged(&format!("a record of format {f}, not {format}"))),
        None => Err(damaged(&"no `format` metadata")),
    }
}
