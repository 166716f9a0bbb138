//! Edge-popup: a subnetwork hidden in a randomly weighted network (Ramanujan et al., CVPR 2020;
//! reference `allenai/hidden-networks`).
//!
//! The weights stay frozen at their initialisation (the reference's signed constants: run it with
//! `model.init = "signed-constant"`). Every prunable weight gets a score, initialised as the
//! reference's `kaiming_uniform_(a=√5)`, i.e. U(−1/√fan_in, 1/√fan_in). Each forward pass uses the
//! weights whose `|score|` is in the top `prune.density` fraction (per layer in the reference:
//! `prune.scope = "layerwise"`), the gradient passes straight through the top-k to every score, and
//! the scores are trained by SGD with momentum, weight decay and a cosine schedule
//! ([`search::search_scores`]). The mask returned is the top-k of `|score|` after the last epoch,
//! exact in count; the run then evaluates it untrained and trains it by its `[train]` schedule.
//!
//! Recorded per epoch (split `edge-popup`, phase `search`): the training loss of the subnetworks,
//! the learning rate, and the untrained subnetwork's test accuracy. Progress is saved after every
//! epoch in the run's work directory, so an interrupted run resumes at the last finished epoch and
//! ends as the uninterrupted run would.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::plugin::{PruneContext, Pruner, PrunerEntry, PrunerOptions};
use lottery_core::{FlatTensor, MaskSet, MetricRow, ParamValues, PruneError, weights};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

pub mod search;

pub use search::{SearchHook, SearchReport, SearchSpec, SearchState, search_scores, top_k_device};

inventory::submit! {
    PrunerEntry::new::<EdgePopupOptions>(
        "edge-popup",
        "scores trained with frozen random weights through a top-k of |score| (What's Hidden in a Randomly Weighted Neural Network?)",
    )
    .needing(lottery_core::plugin::capability::IMAGE)
}

/// `[methods.edge-popup]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgePopupOptions {
    /// Epochs of score training (0: the run's `train.epochs`).
    pub epochs: usize,
    /// Peak learning rate of the scores (SGD).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay on the scores.
    pub weight_decay: f64,
    /// Learning-rate schedule of the scores (`cosine`, `constant`, `multistep`, `step`).
    pub lr_schedule: LrSchedule,
    /// Epochs at which `multistep` decays.
    pub milestones: Vec<usize>,
    /// Decay factor of `step` and `multistep`.
    pub gamma: f64,
}

impl Default for EdgePopupOptions {
    /// The reference's defaults: SGD 0.1, momentum 0.9, weight decay 5e-4, cosine.
    fn default() -> Self {
        Self {
            epochs: 0,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            lr_schedule: LrSchedule::Cosine,
            milestones: vec![],
            gamma: 0.1,
        }
    }
}

impl EdgePopupOptions {
    fn check(&self) -> Result<(), String> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "weight_decay must be 0 or more, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }

    /// The score-training schedule of a search of `epochs` epochs.
    pub fn train_section(&self, epochs: usize) -> TrainSection {
        TrainSection {
            epochs,
            optimizer: OptimizerKind::Sgd,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: false,
            weight_decay: self.weight_decay,
            lr_schedule: self.lr_schedule,
            milestones: self.milestones.clone(),
            gamma: self.gamma,
            ..TrainSection::default()
        }
    }
}

impl PrunerOptions for EdgePopupOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(EdgePopup { options: self })
    }
}

/// The edge-popup pruner.
pub struct EdgePopup {
    options: EdgePopupOptions,
}

/// Initial scores of the named shapes (PyTorch layout): U(−b, b) with `b = 1/√fan_in`, the
/// reference's `kaiming_uniform_(a=√5)`, where `fan_in` is the product of every dimension but the
/// first. One seeded stream per run, the parameters drawn in the order given.
pub fn initial_scores(seed: u64, shapes: &[(String, Vec<usize>)]) -> ParamValues {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6564_6765_2d70_6f70);
    shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let values: Vec<f32> = (0..n)
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
                .collect();
            (name.clone(), FlatTensor::new(shape.clone(), values))
        })
        .collect()
}

/// Where the search stands, beside the tensors of the saved state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step: usize,
}

const SCORE: &str = "score/";
const MOMENT: &str = "moment/";
const VALUE: &str = "value/";

/// Saves the state after an epoch (scores, momenta, every model value) with the rows recorded so
/// far, atomically.
fn save_state(
    path: &Path,
    state: &SearchState,
    values: &ParamValues,
    rows: &[MetricRow],
) -> Result<(), PruneError> {
    let mut all = ParamValues::new();
    for (prefix, part) in [
        (SCORE, &state.scores),
        (MOMENT, &state.moments),
        (VALUE, values),
    ] {
        for (n, t) in part {
            all.insert(format!("{prefix}{n}"), t.clone());
        }
    }
    let progress = Progress {
        epoch: state.epoch,
        step: state.step,
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

/// Loads a saved state: the search state, every model value, the rows. A file that does not load
/// is [`PruneError::DamagedProgress`].
fn load_state(path: &Path) -> Result<(SearchState, ParamValues, Vec<MetricRow>), PruneError> {
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
    let mut state = SearchState {
        epoch: progress.epoch,
        step: progress.step,
        scores: ParamValues::new(),
        moments: ParamValues::new(),
    };
    let mut values = ParamValues::new();
    for (key, t) in all {
        if let Some(n) = key.strip_prefix(SCORE) {
            state.scores.insert(n.to_string(), t);
        } else if let Some(n) = key.strip_prefix(MOMENT) {
            state.moments.insert(n.to_string(), t);
        } else if let Some(n) = key.strip_prefix(VALUE) {
            values.insert(n.to_string(), t);
        }
    }
    Ok((state, values, rows))
}

impl Pruner for EdgePopup {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        self.options
            .check()
            .map_err(|why| PruneError::Unsupported {
                method: "edge-popup".into(),
                why,
            })?;
        let clock = ctx.target.clock();
        let epochs = match self.options.epochs {
            0 => clock.run_steps / clock.steps_per_epoch.max(1),
            e => e,
        }
        .max(1);
        let spec = SearchSpec {
            train: self.options.train_section(epochs),
            density: ctx.goal.density,
            scope: ctx.goal.scope,
        };
        let all_names: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
        let saved: Option<PathBuf> = ctx
            .work_dir
            .as_ref()
            .map(|d| d.join("edge-popup").join("state.safetensors"));
        if let Some(dir) = saved.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(dir).map_err(|e| PruneError::progress(dir, e))?;
        }

        let mut state = match saved.as_ref().filter(|p| p.exists()) {
            Some(path) => {
                let (state, values, rows) = load_state(path)?;
                ctx.target.set_values(&values)?;
                ctx.target.restore_metrics(rows);
                tracing::info!(
                    "edge-popup resumed at epoch {} of {epochs} from {}",
                    state.epoch,
                    path.display()
                );
                state
            }
            None => {
                let shapes: Vec<(String, Vec<usize>)> = ctx
                    .prunable()
                    .into_iter()
                    .map(|p| (p.name, p.shape))
                    .collect();
                SearchState {
                    epoch: 0,
                    step: 0,
                    scores: initial_scores(ctx.seed, &shapes),
                    moments: ParamValues::new(),
                }
            }
        };

        ctx.target.set_phase(0, "search");
        ctx.progress.set_length(epochs as u64);
        ctx.progress.set_position(state.epoch as u64);
        if state.epoch < epochs {
            let progress = ctx.progress.clone();
            let mut on_epoch = |report: &SearchReport,
                                state: &SearchState,
                                target: &mut dyn lottery_core::PruneTarget|
             -> Result<ControlFlow<()>, PruneError> {
                tracing::info!(
                    epoch = report.epoch,
                    loss = format!("{:.4}", report.train_loss),
                    accuracy = format!("{:.4}", report.accuracy),
                    "edge-popup epoch"
                );
                if let Some(path) = &saved {
                    let values = target.values(&all_names)?;
                    save_state(path, state, &values, &target.metrics())?;
                }
                progress.inc(1);
                Ok(ControlFlow::Continue(()))
            };
            search_scores(ctx.target, &spec, &mut state, &mut on_epoch)?;
        }
        let mask = state.subnetwork(spec.density, spec.scope)?;
        ctx.target.set_phase(0, "ticket");
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_contract() {
        lottery_core::plugin::assert_options_contract::<EdgePopupOptions>("no_such_option = 1");
        let bad: EdgePopupOptions = toml::from_str("lr = -1.0").unwrap();
        assert!(bad.check().is_err());
    }

    #[test]
    fn scores_start_as_the_reference_kaiming_uniform() {
        let shapes = vec![
            ("a".to_string(), vec![30, 400]),
            ("b".to_string(), vec![8, 4, 3, 3]),
        ];
        let s = initial_scores(5, &shapes);
        for (name, fan_in) in [("a", 400.0f32), ("b", 36.0)] {
            let b = 1.0 / fan_in.sqrt();
            let v = &s[name].values;
            assert!(v.iter().all(|x| x.abs() <= b), "{name}");
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max > 0.9 * b, "{name}: max {max} of bound {b}");
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            assert!(mean.abs() < 0.1 * b, "{name}: mean {mean}");
        }
        assert_eq!(s, initial_scores(5, &shapes));
        assert_ne!(s, initial_scores(6, &shapes));
    }
}
