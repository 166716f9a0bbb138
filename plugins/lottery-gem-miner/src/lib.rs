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
//! "unflags": every weight still flagged is kept whatever its score, so the ticket has the flagged
//! density (here exactly the target; the reference's tie rule can leave it below). The ticket (the mask on the initial weights) is then trained by the run's
//! `[train]` schedule.
//!
//! How a prune treats scores tied at its threshold is an option ([`TieRule`]): by default exactly
//! the scheduled count keeps its flag, ties broken at random; `ties = "prune-tied"` is the
//! reference's rule (`utils/net_utils.py:prune`, `prune_type: BottomK`): the rate
//! `1 − target^(1/n)` of the flagged weights, rounded up, is pruned, and so is every flagged score
//! equal to the threshold, never below the target's count (the run's ticket keeps exactly the
//! target, where the reference can end below it).
//!
//! Controls ([`Control`], the reference's sanity checks, `main_utils.py:do_sanity_checks`), trained
//! after mining when configured, each from step 0 for the run's whole `[train]` schedule like the
//! ticket: `reinit` (the ticket's mask on freshly initialised weights) and `shuffled-mask` (the
//! ticket's flags permuted at random within each layer, on the ticket's weights). Each records
//! `level/density` and `level/accuracy` rows under its phase, as IMP's controls do, so
//! `lottery table --levels` shows them beside the ticket's.
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

use std::ops::ControlFlow;
use std::path::PathBuf;

use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::plugin::{PruneContext, Pruner, PrunerEntry, PrunerOptions};
use lottery_core::{FlatTensor, MaskSet, ParamValues, PruneError};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

mod controls;
pub mod mining;
mod progress;
mod ties;

pub use controls::{Control, control_start, shuffled_within_layers};
pub use mining::{MiningHook, MiningReport, MiningSpec, MiningState, ScorePenalty, mine_scores};
use progress::{load_state, save_state};
pub use ties::{TieRule, TiedPrune, bottom_k, bottom_k_tied};
use ties::{prune_flags, prune_seed};

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

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
    /// How a prune treats scores tied at its threshold (`exact` or `prune-tied`). Left out of the
    /// canonical options at its default, so the run ids from before it stay.
    #[serde(skip_serializing_if = "is_default")]
    pub ties: TieRule,
    /// Sanity checks trained after mining (`reinit`, `shuffled-mask`). Left out of the canonical
    /// options when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<Control>,
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
            ties: TieRule::Exact,
            controls: vec![],
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
        for (i, c) in self.controls.iter().enumerate() {
            if self.controls[..i].contains(c) {
                return Err(format!("control `{}` is listed twice", c.phase()));
            }
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
            std::fs::create_dir_all(dir).map_err(|e| PruneError::progress(dir, e))?;
        }

        let (mut state, mut prunes_done, controls_done) =
            match saved.as_ref().filter(|p| p.exists()) {
                Some(path) => {
                    let (state, values, prunes_done, controls_done, rows) = load_state(path)?;
                    ctx.target.set_values(&values)?;
                    ctx.target.restore_metrics(rows);
                    tracing::info!(
                        "gem-miner resumed at epoch {} of {epochs} from {}",
                        state.epoch,
                        path.display()
                    );
                    (state, prunes_done, controls_done)
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
                    (state, 0, 0)
                }
            };

        ctx.target.set_phase(0, "mining");
        ctx.progress.set_length(epochs as u64);
        ctx.progress.set_position(state.epoch as u64);
        if state.epoch < epochs {
            let progress = ctx.progress.clone();
            let target_density = target;
            let ties = self.options.ties;
            let mut on_epoch = |report: &MiningReport,
                                state: &mut MiningState,
                                target: &mut dyn lottery_core::PruneTarget|
             -> Result<ControlFlow<()>, PruneError> {
                if prunes_done < prune_at.len() && report.epoch == prune_at[prunes_done] {
                    prunes_done += 1;
                    state.flags = prune_flags(
                        ties,
                        state,
                        target,
                        target_density,
                        scope,
                        prunes_done,
                        prune_at.len(),
                        seed,
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
                    save_state(path, state, &values, prunes_done, 0, &target.metrics())?;
                }
                progress.inc(1);
                Ok(ControlFlow::Continue(()))
            };
            mine_scores(ctx.target, &spec, &mut state, &mut on_epoch)?;
        }
        // A mining cut short of its last prune (or too short for one) ends at the target.
        if prunes_done < prune_at.len() {
            match self.options.ties {
                TieRule::Exact => {
                    state.flags = bottom_k(
                        &state.scores,
                        &state.flags,
                        target,
                        scope,
                        prune_seed(ctx.seed, prunes_done + 1),
                    )?;
                }
                TieRule::PruneTied => {
                    while prunes_done < prune_at.len() {
                        prunes_done += 1;
                        state.flags = prune_flags(
                            TieRule::PruneTied,
                            &state,
                            &mut *ctx.target,
                            target,
                            scope,
                            prunes_done,
                            prune_at.len(),
                            ctx.seed,
                        )?;
                    }
                }
            }
            prunes_done = prune_at.len();
        }
        if controls_done == 0 {
            let gem = state.rounded(spec.threshold);
            ctx.target
                .record("mining", "rounded-density-at-unflag", gem.density());
        }
        if !self.options.controls.is_empty() {
            self.controls(ctx, &state, prunes_done, controls_done, &all_names, saved)?;
        }
        ctx.target.set_phase(0, "ticket");
        // Unflag: every weight still flagged is kept, whatever its score.
        Ok(state.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_epochs_follow_the_reference() {
        // 20 epochs, period 5: after 0-based epochs 5, 10, 15, i.e. completed epochs 6, 11, 16.
        assert_eq!(prune_epochs(20, 5), vec![6, 11, 16]);
        assert_eq!(prune_epochs(11, 3), vec![4, 7, 10]);
        assert_eq!(prune_epochs(3, 5), vec![3]);
    }

    #[test]
    fn new_options_stay_out_of_the_canonical_form_at_their_defaults() {
        lottery_core::plugin::assert_options_contract::<GemMinerOptions>(
            "controls = [\"shuffle\"]",
        );
        lottery_core::plugin::assert_options_contract::<GemMinerOptions>("ties = \"random\"");
        let table = toml::Table::try_from(GemMinerOptions::default()).unwrap();
        assert!(!table.contains_key("controls") && !table.contains_key("ties"));
        let o: GemMinerOptions =
            toml::from_str("controls = [\"reinit\", \"shuffled-mask\"]\nties = \"prune-tied\"")
                .unwrap();
        assert_eq!(o.controls, vec![Control::Reinit, Control::ShuffledMask]);
        assert_eq!(o.ties, TieRule::PruneTied);
        let table = toml::Table::try_from(o.clone()).unwrap();
        assert_eq!(
            table.get("ties").and_then(|v| v.as_str()),
            Some("prune-tied")
        );
        assert_eq!(
            toml::from_str::<GemMinerOptions>(&toml::to_string(&o).unwrap()).unwrap(),
            o
        );
        let twice: GemMinerOptions = toml::from_str("controls = [\"reinit\", \"reinit\"]").unwrap();
        assert!(twice.check().unwrap_err().contains("twice"));
    }
}
