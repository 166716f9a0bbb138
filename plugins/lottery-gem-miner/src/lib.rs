//! Gem-Miner: rare gems found at initialisation (Sreenivasan et al., NeurIPS 2022; reference
//! `ksreenivasan/pruning_is_enough`, algorithm `hc_iter`).
//!
//! The weights stay frozen at their initialisation. Every prunable weight gets a score in
//! [0, 1] (uniform at start, as the reference's `score_init: unif`); the forward pass multiplies
//! each weight by its score rounded at 0.5 (and by its flag), the gradient passes straight through
//! the rounding to the score, an L2 (or L1) penalty of strength λ pulls the scores down, and the
//! scores are clamped to [0, 1] after every step. Every `iter_period` epochs the lowest scores
//! among the weights still flagged lose their flag (bottom-k), along the exponential schedule that
//! ends at the target density at the last prune. Before the ticket trains, the reference
//! "unflags": every weight still flagged is kept whatever its score, so the ticket has exactly
//! the target density. The ticket (the mask on the initial weights) is then trained by the run's
//! `[train]` schedule.
//!
//! Recorded per mining epoch (split `mining`, phase `mining`): the training loss and the penalty,
//! the learning rate, the density of the rounded subnetwork and its test accuracy before any weight
//! is trained (the "rare gem" accuracy), and the flagged density after each prune. Progress is
//! saved after every epoch in the run's work directory, so an interrupted run resumes at the last
//! finished epoch and ends as the uninterrupted run would.
//!
//! The mining itself ([`mining`]: the straight-through forward, the penalty, the optimiser of the
//! scores and the clamp) is this crate's code, written on the image family's functional methods of
//! `lottery_train::ImageTask` (reached by a checked downcast; the entry needs
//! [`capability::IMAGE`](lottery_core::plugin::capability::IMAGE)): the weights a forward pass
//! uses, the run's batches and one batch's gradients. Recording, reading the values it saves and
//! evaluating go through the target it was given.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::density::{Density, exponential_schedule};
use lottery_core::plugin::{PruneContext, Pruner, PrunerEntry, PrunerOptions};
use lottery_core::topk::Scope;
use lottery_core::{FlatTensor, Mask, MaskSet, MetricRow, ParamValues, PruneError, weights};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

pub mod mining;

pub use mining::{MiningHook, MiningReport, MiningSpec, MiningState, ScorePenalty, mine_scores};

inventory::submit! {
    PrunerEntry::new::<GemMinerOptions>(
        "gem-miner",
        "scores in [0,1] trained with frozen weights, rounded at 0.5, pruned bottom-k every few epochs (Rare Gems)",
    )
    .needing(lottery_core::plugin::capability::IMAGE)
}

/// How the scores start (the reference's `score_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreInit {
    /// Uniform on [0, 1] (`unif`, the reference's choice for Gem-Miner).
    #[default]
    Uniform,
    /// All 0.5 (`half`).
    Half,
    /// 0 or 1 with probability ½ each (`bern`).
    Bernoulli,
}

/// `[methods.gem-miner]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GemMinerOptions {
    /// Epochs of score training (0: the run's `train.epochs`, as the reference mines for as many
    /// epochs as it fine-tunes).
    pub epochs: usize,
    /// `sgd` or `adam`, for the scores.
    pub optimizer: OptimizerKind,
    /// Peak learning rate of the scores.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay on the scores (the reference uses 0).
    pub weight_decay: f64,
    /// Learning-rate schedule of the scores (`cosine`, `constant`, `multistep`, `step`).
    pub lr_schedule: LrSchedule,
    /// Epochs at which `multistep` decays.
    pub milestones: Vec<usize>,
    /// Decay factor of `step` and `multistep`.
    pub gamma: f64,
    /// `l2` (λ·Σs²) or `l1` (λ·Σ|s|).
    pub regularization: ScorePenalty,
    /// λ, the strength of the penalty.
    pub lambda: f64,
    /// Epochs between two prunes of the lowest scores.
    pub iter_period: usize,
    /// How the scores start.
    pub score_init: ScoreInit,
}

impl Default for GemMinerOptions {
    fn default() -> Self {
        Self {
            epochs: 0,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Cosine,
            milestones: vec![],
            gamma: 0.1,
            regularization: ScorePenalty::L2,
            lambda: 7e-6,
            iter_period: 5,
            score_init: ScoreInit::Uniform,
        }
    }
}

impl GemMinerOptions {
    fn check(&self) -> Result<(), String> {
        if self.iter_period == 0 {
            return Err("iter_period must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr must be positive, got {}", self.lr));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(format!("lambda must be 0 or more, got {}", self.lambda));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        Ok(())
    }

    /// The score-training settings for a mining of `epochs` epochs.
    fn spec(&self, epochs: usize) -> MiningSpec {
        MiningSpec {
            train: TrainSection {
                epochs,
                optimizer: self.optimizer,
                lr: self.lr,
                momentum: self.momentum,
                nesterov: false,
                weight_decay: self.weight_decay,
                lr_schedule: self.lr_schedule,
                milestones: self.milestones.clone(),
                gamma: self.gamma,
                ..TrainSection::default()
            },
            penalty: self.regularization,
            strength: self.lambda,
            threshold: 0.5,
        }
    }
}

impl PrunerOptions for GemMinerOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(GemMiner { options: self })
    }
}

/// The Gem-Miner pruner.
pub struct GemMiner {
    options: GemMinerOptions,
}

/// When the prunes of a mining of `epochs` epochs happen: after the completed epochs listed
/// (1-based). The reference prunes after 0-based epochs `T, 2T, …` below `epochs − 1`, that is
/// `⌊(epochs − 1)/T⌋` times; a mining too short for one period prunes once, at its end.
pub fn prune_epochs(epochs: usize, iter_period: usize) -> Vec<usize> {
    let t = iter_period.max(1);
    let n = epochs.saturating_sub(1) / t;
    if n == 0 {
        return vec![epochs.max(1)];
    }
    (1..=n).map(|k| k * t + 1).collect()
}

/// The flags after a bottom-k prune: among the flagged weights, exactly `density`'s count (of all
/// weights, globally or per layer) with the highest scores keeps its flag. Scores saturate at 0 and
/// 1, so ties are common; they are broken by a seeded random order (`seed`, the prune's index),
/// never by position, which would empty the layer that sorts last by name (seen at 0.5 % density
/// on LeNet-300-100 with Adam: every flagged score of the middle layer sat at 1.0 with the others).
pub fn bottom_k(
    scores: &ParamValues,
    flags: &MaskSet,
    density: Density,
    scope: Scope,
    seed: u64,
) -> Result<MaskSet, PruneError> {
    let groups: Vec<Vec<&String>> = match scope {
        Scope::Global => vec![flags.iter().map(|(n, _)| n).collect()],
        Scope::Layerwise => flags.iter().map(|(n, _)| vec![n]).collect(),
    };
    let mut out = flags.clone();
    for names in groups {
        let total: usize = names
            .iter()
            .map(|n| flags.get(n).map_or(0, |m| m.numel()))
            .sum();
        let keep = density.keep_count(total);
        // (score, random tie-break, layer, index) of every flagged entry.
        let mut alive: Vec<(f32, u64, usize, usize)> = vec![];
        for (layer, name) in names.iter().enumerate() {
            let flag = flags.get(name).expect("name from flags");
            let score = scores.get(*name).ok_or_else(|| {
                PruneError::Internal(format!("no score for flagged parameter {name}"))
            })?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            for (i, (&f, &v)) in flag.keep.iter().zip(&score.values).enumerate() {
                let tie = rng.random::<u64>();
                if f {
                    if v.is_nan() {
                        return Err(PruneError::Internal(format!("NaN score in {name}")));
                    }
                    alive.push((v, tie, layer, i));
                }
            }
        }
        if keep > alive.len() {
            return Err(PruneError::Internal(format!(
                "{keep} weights to keep, only {} flagged",
                alive.len()
            )));
        }
        alive.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for name in &names {
            let m = out.get(name).expect("name from flags").clone();
            out.insert(
                (*name).clone(),
                Mask {
                    shape: m.shape,
                    keep: vec![false; m.keep.len()],
                },
            );
        }
        let mut masks: Vec<Vec<bool>> = names
            .iter()
            .map(|n| vec![false; flags.get(n).expect("name").numel()])
            .collect();
        for &(_, _, layer, i) in &alive[..keep] {
            masks[layer][i] = true;
        }
        for (name, keep) in names.iter().zip(masks) {
            let shape = flags.get(name).expect("name").shape.clone();
            out.insert((*name).clone(), Mask { shape, keep });
        }
    }
    Ok(out)
}

/// The tie-break seed of the `k`-th prune of a run seeded `seed`.
fn prune_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (k as u64).wrapping_add(0x0070_7275_6e65)
}

/// Initial scores of the named shapes, one seeded stream per run.
pub fn initial_scores(init: ScoreInit, seed: u64, shapes: &[(String, Vec<usize>)]) -> ParamValues {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6765_6d2d_6d69_6e65);
    shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| match init {
                    ScoreInit::Uniform => rng.random::<f32>(),
                    ScoreInit::Half => 0.5,
                    ScoreInit::Bernoulli => {
                        if rng.random::<bool>() {
                            1.0
                        } else {
                            0.0
                        }
                    }
                })
                .collect();
            (name.clone(), FlatTensor::new(shape.clone(), values))
        })
        .collect()
}

fn failed(path: &Path, why: impl ToString) -> PruneError {
    PruneError::Progress {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Where mining stands, beside the tensors of the saved state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step: usize,
    prunes_done: usize,
}

const SCORE: &str = "score/";
const FLAG: &str = "flag/";
const MOMENT: &str = "moment/";
const VALUE: &str = "value/";

/// Saves the state after an epoch (scores, flags, optimiser moments, every model value) with the
/// rows recorded so far, atomically.
fn save_state(
    path: &Path,
    state: &MiningState,
    values: &ParamValues,
    prunes_done: usize,
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
    };
    let meta = BTreeMap::from([
        (
            "progress".to_string(),
            serde_json::to_string(&progress).map_err(|e| failed(path, e))?,
        ),
        (
            "metrics".to_string(),
            serde_json::to_string(rows).map_err(|e| failed(path, e))?,
        ),
    ]);
    lottery_core::fsutil::write_atomic(path, &weights::to_bytes(&all, &meta))
        .map_err(|e| failed(path, e))
}

/// Loads a saved state: the mining state, every model value, prunes done, rows. A file that does
/// not load is [`PruneError::DamagedProgress`].
fn load_state(
    path: &Path,
) -> Result<(MiningState, ParamValues, usize, Vec<MetricRow>), PruneError> {
    let damaged = |why: &dyn std::fmt::Display| PruneError::DamagedProgress {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
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
    Ok((state, values, progress.prunes_done, rows))
}

impl Pruner for GemMiner {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        self.options
            .check()
            .map_err(|why| PruneError::Unsupported {
                method: "gem-miner".into(),
                why,
            })?;
        let clock = ctx.target.clock();
        let epochs = match self.options.epochs {
            0 => clock.run_steps / clock.steps_per_epoch.max(1),
            e => e,
        }
        .max(1);
        let spec = self.options.spec(epochs);
        let prune_at = prune_epochs(epochs, self.options.iter_period);
        let target = ctx.goal.density;
        let scope = ctx.goal.scope;
        let seed = ctx.seed;
        let prunable = ctx.prunable();
        let all_names: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
        let saved: Option<PathBuf> = ctx
            .work_dir
            .as_ref()
            .map(|d| d.join("gem-miner").join("state.safetensors"));
        if let Some(dir) = saved.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        }

        let (mut state, mut prunes_done) = match saved.as_ref().filter(|p| p.exists()) {
            Some(path) => {
                let (state, values, prunes_done, rows) = load_state(path)?;
                ctx.target.set_values(&values)?;
                ctx.target.restore_metrics(rows);
                tracing::info!(
                    "gem-miner resumed at epoch {} of {epochs} from {}",
                    state.epoch,
                    path.display()
                );
                (state, prunes_done)
            }
            None => {
                let shapes: Vec<(String, Vec<usize>)> = prunable
                    .iter()
                    .map(|p| (p.name.clone(), p.shape.clone()))
                    .collect();
                let state = MiningState {
                    epoch: 0,
                    step: 0,
                    scores: initial_scores(self.options.score_init, ctx.seed, &shapes),
                    flags: ctx.dense_mask(),
                    moments: ParamValues::new(),
                };
                (state, 0)
            }
        };

        ctx.target.set_phase(0, "mining");
        ctx.progress.set_length(epochs as u64);
        ctx.progress.set_position(state.epoch as u64);
        if state.epoch < epochs {
            let progress = ctx.progress.clone();
            let target_density = target;
            let mut on_epoch = |report: &MiningReport,
                                state: &mut MiningState,
                                target: &mut dyn lottery_core::PruneTarget|
             -> Result<ControlFlow<()>, PruneError> {
                if prunes_done < prune_at.len() && report.epoch == prune_at[prunes_done] {
                    prunes_done += 1;
                    let d = exponential_schedule(target_density, prunes_done, prune_at.len());
                    state.flags = bottom_k(
                        &state.scores,
                        &state.flags,
                        d,
                        scope,
                        prune_seed(seed, prunes_done),
                    )?;
                    target.record("mining", "flag-density", state.flags.density());
                }
                tracing::info!(
                    epoch = report.epoch,
                    loss = format!("{:.4}", report.train_loss),
                    gem_accuracy = format!("{:.4}", report.rounded_accuracy),
                    rounded_density = format!("{:.4}", report.rounded_density),
                    flag_density = format!("{:.4}", state.flags.density()),
                    "mining epoch"
                );
                if let Some(path) = &saved {
                    let values = target.values(&all_names)?;
                    save_state(path, state, &values, prunes_done, &target.metrics())?;
                }
                progress.inc(1);
                Ok(ControlFlow::Continue(()))
            };
            mine_scores(ctx.target, &spec, &mut state, &mut on_epoch)?;
        }
        // A mining cut short of its last prune (or too short for one) ends at the target.
        if prunes_done < prune_at.len() {
            state.flags = bottom_k(
                &state.scores,
                &state.flags,
                target,
                scope,
                prune_seed(ctx.seed, prunes_done + 1),
            )?;
        }
        let gem = state.rounded(spec.threshold);
        ctx.target
            .record("mining", "rounded-density-at-unflag", gem.density());
        ctx.target.set_phase(0, "ticket");
        // Unflag: every weight still flagged is kept, whatever its score.
        Ok(state.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: usize, v: f32) -> FlatTensor {
        FlatTensor::new(vec![n], vec![v; n])
    }

    #[test]
    fn prune_epochs_follow_the_reference() {
        // 20 epochs, period 5: after 0-based epochs 5, 10, 15, i.e. completed epochs 6, 11, 16.
        assert_eq!(prune_epochs(20, 5), vec![6, 11, 16]);
        assert_eq!(prune_epochs(11, 3), vec![4, 7, 10]);
        assert_eq!(prune_epochs(3, 5), vec![3]);
    }

    #[test]
    fn saturated_ties_are_broken_at_random_not_by_layer_order() {
        // Every score at 1.0: a positional tie-break would keep the first layer and empty the last.
        let scores = ParamValues::from([
            ("a".to_string(), layer(1000, 1.0)),
            ("b".to_string(), layer(1000, 1.0)),
            ("c".to_string(), layer(1000, 1.0)),
        ]);
        let flags = MaskSet::dense(scores.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice())));
        let d = Density::new(0.1).unwrap();
        let m = bottom_k(&scores, &flags, d, Scope::Global, 3).unwrap();
        assert_eq!(m.kept(), 300);
        for (name, mask) in m.iter() {
            let k = mask.kept();
            assert!((60..=140).contains(&k), "{name} keeps {k} of 1000");
        }
        assert_eq!(m, bottom_k(&scores, &flags, d, Scope::Global, 3).unwrap());
        assert_ne!(m, bottom_k(&scores, &flags, d, Scope::Global, 4).unwrap());
    }

    #[test]
    fn higher_scores_win_and_unflagged_weights_never_come_back() {
        let scores = ParamValues::from([(
            "w".to_string(),
            FlatTensor::new(vec![6], vec![0.9, 0.1, 0.8, 0.95, 0.2, 0.7]),
        )]);
        let mut flags = MaskSet::new();
        flags.insert(
            "w",
            Mask {
                shape: vec![6],
                // The best score (0.95) is already unflagged.
                keep: vec![true, true, true, false, true, true],
            },
        );
        let m = bottom_k(
            &scores,
            &flags,
            Density::new(0.5).unwrap(),
            Scope::Global,
            0,
        )
        .unwrap();
        assert_eq!(
            m.get("w").unwrap().keep,
            vec![true, false, true, false, false, true]
        );
        let too_many = bottom_k(
            &scores,
            &flags,
            Density::new(1.0).unwrap(),
            Scope::Layerwise,
            0,
        );
        assert!(too_many.is_err());
    }
}
