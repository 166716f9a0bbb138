//! The pruning-method contract: the [`Pruner`] trait, what it may ask of the network
//! ([`PruneTarget`]), and its `inventory` registration ([`PrunerEntry`]).
//!
//! A method is a crate under `plugins/` that implements [`PrunerOptions`] for its options type and
//! submits one entry:
//!
//! ```ignore
//! inventory::submit! { PrunerEntry::new::<MagnitudeOptions>("magnitude", "|θ| at initialisation") }
//! ```
//!
//! How each family of method plugs in:
//! - **Data-free and gradient scores** (random, magnitude, SNIP, SynFlow, GraSP) implement [`Scorer`] and
//!   let [`iterative_prune`] run the score-then-mask loop (schedule, global or layer-wise top-k). They
//!   read weights through [`PruneTarget::values`], gradients through [`PruneTarget::loss_gradients`],
//!   GraSP's Hessian-gradient product through [`PruneTarget::loss_hessian_vector`] and SynFlow's
//!   |θ|-network gradient through [`PruneTarget::path_flow`]: named values in, named values out.
//! - **Training in the loop** (IMP, Early-Bird) call [`PruneTarget::train_until`] between prunes
//!   and [`PruneTarget::rewind`] to send survivors back to θ₀ or θ_k (weights *and* the training
//!   clock); they tag what they record with [`PruneTarget::set_phase`] and keep their progress in
//!   [`PruneContext::work_dir`] so that an interrupted run resumes. Early-Bird watches the BN
//!   scales after each epoch through [`PruneTarget::train_watching`] (which it stops when the
//!   ticket is drawn); its entry counts `prune.density` in channels
//!   ([`PrunerEntry::counting_channels`]).
//! - **Trainable scores with frozen weights** (Gem-Miner) compute the weights each forward pass
//!   uses (each weight times its rounded score) and train the scores on the image family's
//!   functional API (below); the straight-through gradient, the penalty, the optimiser and the
//!   clamp are the plugin's own code, and so is its state, which it prunes and saves every epoch.
//! - **Transformers and graphs** (BERT tickets, GCN tickets) are other model families behind the same
//!   target: their parameters are named like Hugging Face / PyG names them, and a graph's edge mask is a
//!   mask over a parameter-like entry (`graph.adjacency`) of kind `Other`.
//!
//! ## What only one family of networks offers
//!
//! [`PruneTarget`] holds what every network offers every method. What only one family offers
//! (the channels and batch-norm penalty of BN conv nets, the joint edge-and-weight mask training of
//! a GCN, the task heads of a pre-trained encoder) is an inherent method of that family's target
//! type, and a method that needs it depends on the family crate and reaches the concrete target
//! with a checked downcast ([`family_mut`]); its entry declares the capability
//! ([`PrunerEntry::needing`]) so that a run on another network is refused while the config is
//! validated, before any work. The core knows no method.
//!
//! Two designs were written out for two methods before choosing:
//! - *Typed downcast* (chosen). BERT tickets: `family_mut::<BertTask>(target, …)?.switch_task(t)`,
//!   one line; the heads stay with the encoder that owns them. Early-Bird:
//!   `family_mut::<ImageTask>(target, …)?` gives `set_norm_l1`, `channel_groups`, `cost`,
//!   `set_channel_structure` and `fresh_channel_values`; the search loop, the channel selection
//!   by |γ| and the mask distance are the plugin's own code.
//! - *A functional family API* (forward of a batch with given parameter tensors and masks, a loss,
//!   the data), on which the plugin writes its own loop. BERT tickets would still need the family's
//!   head constructors to switch tasks, so nothing gets simpler; Early-Bird would re-implement the
//!   trainer (schedule, data order, resumable clock, the smaller network) only to add `λ·sign(γ)`
//!   to the scales' gradients, a copy of the training loop per method.
//!
//! The downcast reads better where a method *uses* a family's capability. The functional API is
//! the right shape where the method's math *is* the training step (Gem-Miner's straight-through
//! scores, edge-popup), and the image family offers it behind the same downcast, as inherent
//! methods of `ImageTask` that know no method: the parameters as flat device tensors, computed
//! weights written in place of the model's (and the originals put back), the run's training
//! batches of an epoch, the loss and gradients of one batch, and rows recorded at the method's own
//! clock. Gem-Miner's mining is plugin code on that API; no method-specific operation or type is
//! left here.

use std::any::Any;
use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;

use indicatif::ProgressBar;
use serde::{Serialize, de::DeserializeOwned};

use crate::density::{Density, exponential_schedule, linear_schedule};
use crate::error::PruneError;
use crate::mask::MaskSet;
use crate::params::{ParamInfo, ParamValues, PrunableRule};
use crate::topk::{Scope, top_k_mask};

/// Metrics of one training epoch, reported to [`PruneTarget::train`]'s hook.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_accuracy: f64,
    /// Test loss after the epoch, when evaluated.
    pub test_loss: Option<f64>,
    /// Test accuracy after the epoch, when evaluated.
    pub test_accuracy: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
}

/// One metric observation of a run, the long form of `metrics.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricRow {
    /// Pruning round (IMP's level; 0 for one-shot methods).
    pub round: u64,
    /// What was being trained: `ticket`, or a control (`reinit`, `random-mask`).
    pub phase: String,
    /// Optimiser steps so far.
    pub step: u64,
    /// Epoch (1-based; 0 before training).
    pub epoch: u64,
    /// `train`, `test`, `prune`, or `level` (one row per round and phase: its density and final
    /// test accuracy).
    pub split: String,
    /// `loss`, `accuracy`, `lr`, `density`, ...
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// Where a target's training stands: the step its schedule and data order continue from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainClock {
    /// Optimiser steps taken (the position in the schedule).
    pub step: usize,
    /// Optimiser steps in one epoch.
    pub steps_per_epoch: usize,
    /// Steps of the run's whole training schedule (`train.epochs` epochs).
    pub run_steps: usize,
}

/// Which statistics batch norm uses while a method scores, as PyTorch's `model.train()` and
/// `model.eval()` choose them. The pruning-at-initialisation reference scores in `eval` mode
/// (running statistics: mean 0, variance 1 at initialisation) unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnMode {
    /// Running statistics; nothing is updated.
    #[default]
    Eval,
    /// Statistics of the batch (the model's running statistics are left untouched).
    Train,
}

/// Floating-point precision of a scoring computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// 32-bit floats, as the reference implementations compute.
    #[default]
    F32,
    /// 64-bit floats: no overflow on deep networks, finite differences accurate to ~1e-10.
    F64,
}

/// The loss a gradient query differentiates: mean cross-entropy of `logits / temperature` over
/// the first `batches` training batches of the run's data order (no augmentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSpec {
    /// Number of training batches (of the run's batch size).
    pub batches: usize,
    /// Batch-norm statistics used in the forward pass.
    pub bn_mode: BnMode,
    /// Logits are divided by this before the softmax (GraSP's temperature; 1 otherwise).
    pub temperature: f64,
    /// Precision of the computation.
    pub precision: Precision,
}

impl LossSpec {
    /// The plain training loss over `batches` batches, batch norm in `bn_mode`, in f32.
    pub fn new(batches: usize, bn_mode: BnMode) -> Self {
        Self {
            batches,
            bn_mode,
            temperature: 1.0,
            precision: Precision::F32,
        }
    }
}

/// The synaptic flow of a network (Tanaka et al. 2020): with every parameter and buffer replaced by
/// its absolute value, the mask applied and batch norm in eval mode, `R` is the sum of the output
/// for an all-ones input of the data's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct PathFlow {
    /// R (may exceed the f32 range on deep networks).
    pub flow: f64,
    /// ∂R/∂θ divided by R (the gradient of ln R), for the named parameters; multiply by `flow`
    /// for ∂R/∂θ. Keeping it divided keeps it inside the f32 range.
    pub log_gradients: ParamValues,
}

/// Name of the graph mask in a [`MaskSet`] of a graph network: one entry per undirected edge
/// (both directions at once; self-loops are added by the network and never masked), shape `[E]`.
/// It is not a prunable parameter (`prune.density` counts weights only); graph methods add it to
/// the mask they return and the target applies it.
pub const GRAPH_MASK: &str = "graph.adjacency";

/// What a pruner may ask of the network being pruned. Values are keyed by PyTorch names and laid
/// out as PyTorch lays them out; `mask` arguments are applied to the weights before computing,
/// and gradients are taken with respect to the masked weights.
pub trait PruneTarget {
    /// All named parameters of the model.
    fn params(&self) -> Vec<ParamInfo>;
    /// Current values of the named parameters.
    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError>;
    /// Overwrites the named parameters (rewinding).
    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError>;
    /// Gradient of the loss of `spec` for the named parameters.
    fn loss_gradients(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
    ) -> Result<ParamValues, PruneError>;
    /// `H v`: the Hessian of the loss of `spec` with respect to the named parameters (the block
    /// of those parameters), times `vector` (which gives a value for each named parameter). For a
    /// piecewise-linear network, the almost-everywhere Hessian that autodiff's double backward
    /// gives: ReLU'' = 0 and max-pooling routes fixed at the current values.
    fn loss_hessian_vector(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
        vector: &ParamValues,
    ) -> Result<ParamValues, PruneError>;
    /// The synaptic flow and its gradient for the named parameters (see [`PathFlow`]).
    fn path_flow(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        precision: Precision,
    ) -> Result<PathFlow, PruneError>;
    /// The training clock.
    fn clock(&self) -> TrainClock;
    /// Trains the masked network with the run's optimiser (fresh state) and schedule from the
    /// clock's step until it reads `end_step` or `on_epoch` breaks; pruned weights stay exactly
    /// zero. A start inside an epoch continues that epoch's data order where step left it. After
    /// each completed epoch, calls `on_epoch` with the epoch's report and the current values of
    /// the `watch`ed parameters.
    fn train_watching(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError>;
    /// Makes the trainings that follow resumable: each saves its state (weights, optimiser state,
    /// clock, metric rows) in `dir` at its epoch ends, at most once every `every`, and continues
    /// from the latest state that the same training (same start, end, mask and starting weights)
    /// saved there, first passing the reports of the epochs it restores to `on_epoch` (the last
    /// with the watched values of the restored state, the earlier ones with none). `None` turns
    /// it off. A run sets it for its final training; a method that trains sets it for its own
    /// trainings in [`PruneContext::work_dir`], every [`PruneContext::save_every`].
    fn save_training_in(
        &mut self,
        dir: Option<std::path::PathBuf>,
        every: std::time::Duration,
    ) -> Result<(), PruneError> {
        let _ = (dir, every);
        Err(PruneError::Target(
            "this network cannot save its training's state".into(),
        ))
    }
    /// [`PruneTarget::train_watching`] to `end_step`, watching nothing.
    fn train_until(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<(), PruneError> {
        self.train_watching(mask, end_step, &[], &mut |r, _| {
            on_epoch(r);
            ControlFlow::Continue(())
        })
    }
    /// FLOPs of one forward pass of the network under `mask` (a multiply-add counts 2; a graph
    /// network counts its aggregation over the kept edges and its kept weights). Graph networks
    /// only.
    fn mask_flops(&self, mask: &MaskSet) -> Result<f64, PruneError> {
        let _ = mask;
        Err(PruneError::Target(
            "this network cannot count the FLOPs of a mask".into(),
        ))
    }
    /// Trains until the end of the `epochs`-th epoch from now (an epoch already begun counts as
    /// one); see [`PruneTarget::train_until`].
    fn train(
        &mut self,
        mask: &MaskSet,
        epochs: usize,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<(), PruneError> {
        let c = self.clock();
        let spe = c.steps_per_epoch.max(1);
        self.train_until(mask, (c.step / spe + epochs) * spe, on_epoch)
    }
    /// Rewinds: overwrites the named values and sets the clock to `step`, so that the schedule and
    /// the data order continue from there (θ₀ at step 0, or θ_k at step k).
    fn rewind(&mut self, values: &ParamValues, step: usize) -> Result<(), PruneError>;
    /// Test loss and accuracy of the masked network (batch norm in eval mode).
    fn evaluate(&mut self, mask: &MaskSet) -> Result<(f64, f64), PruneError>;
    /// Every parameter and buffer as a fresh initialisation with `seed` would set them (the
    /// random re-initialisation control).
    fn fresh_values(&self, seed: u64) -> ParamValues;
    /// Tags the metric rows recorded from now on with a round and a phase.
    fn set_phase(&mut self, round: usize, phase: &str);
    /// Records one metric at the current clock, round and phase.
    fn record(&mut self, split: &str, metric: &str, value: f64);
    /// Every metric row recorded so far.
    fn metrics(&self) -> Vec<MetricRow>;
    /// Replaces the recorded rows (a method resuming from its saved progress).
    fn restore_metrics(&mut self, rows: Vec<MetricRow>);
    /// The concrete network behind this target, for a method that needs what only its family
    /// offers: see [`family_mut`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The concrete network behind this target: see [`family`].
    fn as_any(&self) -> &dyn Any;
}

/// The target as the concrete network type `T` of one family (`lottery_bert::BertTask`,
/// `lottery_train::ImageTask`, `lottery_gcn::GcnTask`), for a method that works on that family
/// only; an error naming the method and what it needs otherwise. A method that calls this declares
/// the family's capability in its entry ([`PrunerEntry::needing`]), so that a run on another
/// network is refused before any work.
pub fn family_mut<'a, T: 'static>(
    target: &'a mut dyn PruneTarget,
    method: &str,
    needs: &str,
) -> Result<&'a mut T, PruneError> {
    target
        .as_any_mut()
        .downcast_mut::<T>()
        .ok_or_else(|| family_error(method, needs))
}

/// Read-only [`family_mut`].
pub fn family<'a, T: 'static>(
    target: &'a dyn PruneTarget,
    method: &str,
    needs: &str,
) -> Result<&'a T, PruneError> {
    target
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| family_error(method, needs))
}

fn family_error(method: &str, needs: &str) -> PruneError {
    PruneError::Unsupported {
        method: method.into(),
        why: format!("it needs a network with {needs}"),
    }
}

/// How the density moves from 1 to the target over the iterations of [`iterative_prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DensitySchedule {
    /// `target^(k/n)`, SynFlow's schedule.
    #[default]
    Exponential,
    /// `1 − (1 − target)·k/n`.
    Linear,
}

/// What the run asks the pruner for.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneGoal {
    /// Target density over the prunable parameters.
    pub density: Density,
    /// Global or layer-wise count.
    pub scope: Scope,
    /// Which parameters are prunable.
    pub rule: PrunableRule,
    /// Score-then-mask rounds (1 is one-shot).
    pub iterations: usize,
    /// Density schedule over the rounds.
    pub schedule: DensitySchedule,
}

/// Everything a pruner gets.
pub struct PruneContext<'a> {
    /// The network, its data and its trainer.
    pub target: &'a mut dyn PruneTarget,
    /// The target density and its rules.
    pub goal: PruneGoal,
    /// Seed for any randomness of the method.
    pub seed: u64,
    /// Progress of the pruning (hidden in tests).
    pub progress: ProgressBar,
    /// A directory private to this run that survives an interruption and is removed once the run
    /// is recorded: a method that trains saves its progress here and resumes from it. None: no
    /// resumption (tests, scoring).
    pub work_dir: Option<PathBuf>,
    /// How often a method that trains saves its training's state in `work_dir` (at epoch ends,
    /// at most this often: [`PruneTarget::save_training_in`]); zero saves at every epoch end.
    pub save_every: std::time::Duration,
    /// A directory shared by the runs of the study whose configs differ only in `prune.density`
    /// (the same seed, network, data, schedule and method options), kept after the runs: a method
    /// whose search does not depend on the density (Early-Bird's `draw = "last"`) keeps the search
    /// here, and the other densities read it instead of searching again; one whose search serves
    /// several densities at once (Early-Bird's `draw = "early"`) serves those announced here
    /// ([`crate::shared_folder`]). Hold a
    /// [`crate::fsutil::DirLock`] on it while reading or writing. None: nothing is shared (tests,
    /// scoring).
    pub shared_dir: Option<PathBuf>,
    /// Time the method spent waiting for another process (a shared folder's lock): the method
    /// adds to it, and the run's `prune_seconds` leaves it out, so that summed seconds count
    /// each computation once.
    pub waited: std::time::Duration,
}

impl PruneContext<'_> {
    /// Names of the prunable parameters, in name order.
    pub fn prunable(&self) -> Vec<ParamInfo> {
        let mut p: Vec<ParamInfo> = self
            .target
            .params()
            .into_iter()
            .filter(|p| self.goal.rule.admits(p))
            .collect();
        p.sort_by(|a, b| a.name.cmp(&b.name));
        p
    }

    /// A dense mask over the prunable parameters.
    pub fn dense_mask(&self) -> MaskSet {
        let p = self.prunable();
        MaskSet::dense(p.iter().map(|p| (p.name.as_str(), p.shape.as_slice())))
    }
}

/// A pruning method.
pub trait Pruner {
    /// Finds the mask. The returned set covers exactly the prunable parameters and keeps the
    /// requested count.
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError>;

    /// The method's scorer, for methods that rank weights by a score (`lottery score` writes
    /// its raw scores). None for methods whose mask is not a top-k of one score.
    fn scorer(&mut self) -> Option<&mut dyn Scorer> {
        None
    }
}

/// A method that scores weights, for the shared score-then-mask loop.
pub trait Scorer {
    /// Scores of the prunable parameters given the current mask (higher is kept).
    fn score(
        &mut self,
        ctx: &mut PruneContext<'_>,
        current: &MaskSet,
        round: usize,
    ) -> Result<ParamValues, PruneError>;
}

/// Every scorer is a pruner through the shared loop, and offers its scores to `lottery score`.
impl<T: Scorer> Pruner for T {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        iterative_prune(self, ctx)
    }

    fn scorer(&mut self) -> Option<&mut dyn Scorer> {
        Some(self)
    }
}

/// Checks the contract of a method's options: the default round-trips through TOML, and the
/// `rejected` TOML snippet (an unknown key or a bad value) is refused. For plugin tests.
pub fn assert_options_contract<O: PrunerOptions + PartialEq + fmt::Debug>(rejected: &str) {
    let text = toml::to_string(&O::default()).expect("options serialise");
    let back: O = toml::from_str(&text).expect("default options parse back");
    assert_eq!(
        back,
        O::default(),
        "default options round-trip through TOML"
    );
    assert!(
        toml::from_str::<O>(rejected).is_err(),
        "options accept {rejected:?}"
    );
}

/// Runs `iterations` rounds of score → keep top-k at the scheduled density. Shared by every
/// score-based method, so a one-shot method becomes iterative by configuration alone.
pub fn iterative_prune(
    scorer: &mut dyn Scorer,
    ctx: &mut PruneContext<'_>,
) -> Result<MaskSet, PruneError> {
    let n = ctx.goal.iterations.max(1);
    let mut mask = ctx.dense_mask();
    ctx.progress.set_length(n as u64);
    for round in 1..=n {
        let d = match ctx.goal.schedule {
            DensitySchedule::Exponential => exponential_schedule(ctx.goal.density, round, n),
            DensitySchedule::Linear => linear_schedule(ctx.goal.density, round, n),
        };
        let scores = scorer.score(ctx, &mask, round)?;
        for (name, m) in mask.iter() {
            let s = scores
                .get(name)
                .ok_or_else(|| PruneError::Internal(format!("no score for {name}")))?;
            if s.shape != m.shape {
                return Err(PruneError::Internal(format!(
                    "score of {name} has shape {:?}, parameter {:?}",
                    s.shape, m.shape
                )));
            }
        }
        let scores: ParamValues = scores
            .into_iter()
            .filter(|(k, _)| mask.get(k).is_some())
            .collect();
        mask = top_k_mask(&scores, d, ctx.goal.scope, Some(&mask))?;
        ctx.progress.inc(1);
    }
    Ok(mask)
}

/// A method's options: its own config section, `[methods.<name>]`, with unknown keys rejected
/// (`#[serde(deny_unknown_fields)]`) and a default that round-trips through TOML.
pub trait PrunerOptions: Default + Serialize + DeserializeOwned + 'static {
    /// Builds the pruner from its options.
    fn build(self) -> Box<dyn Pruner>;
}

/// One registered method.
pub struct PrunerEntry {
    /// Name used in configs and `lottery list`.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// The default options as a TOML table.
    pub default_options: fn() -> toml::Table,
    /// Parses options (rejecting unknown keys) and builds the pruner.
    pub build: fn(&toml::Table) -> Result<Box<dyn Pruner>, String>,
    /// Score-then-mask rounds when the config does not set `prune.iterations`.
    pub default_iterations: usize,
    /// What `prune.density` counts for this method.
    pub density_of: DensityOf,
    /// The network capability the method needs beyond what every target offers (one of
    /// [`capability`]'s names), checked when a run is validated; `None`: any network.
    pub needs: Option<&'static str>,
    /// The method's runs that differ only in density share work in
    /// [`PruneContext::shared_dir`]: the command that plans them announces their densities there
    /// ([`crate::shared_folder::announce_density`]).
    pub shares_across_densities: bool,
}

/// Capabilities that only some network families offer, named so that a method can declare what it
/// needs ([`PrunerEntry::needing`]) and a run can be refused before any work when its network
/// lacks it. The run's network family says which it offers.
pub mod capability {
    /// An image classifier (a model of `lottery-models` on an image dataset).
    pub const IMAGE: &str = "image";
    /// An image classifier whose convolutions are followed by batch norm: channels that a
    /// structured method can keep or drop.
    pub const BN_CHANNELS: &str = "batch-norm channels";
    /// A graph network with a mask on the graph's edges.
    pub const GRAPH: &str = "graph";
    /// A pre-trained text encoder with task heads.
    pub const TEXT: &str = "text";
}

/// What a method's `prune.density` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DensityOf {
    /// Prunable weights: the mask keeps exactly that share of them.
    Weights,
    /// Batch-norm channels (structured methods): exactly that share of the channels is kept, and
    /// the weight density follows from which channels they are.
    Channels,
}

impl PrunerEntry {
    /// An entry for a method whose options are `O`.
    pub const fn new<O: PrunerOptions>(name: &'static str, summary: &'static str) -> Self {
        Self {
            name,
            summary,
            default_options: default_options::<O>,
            build: build_from_table::<O>,
            default_iterations: 1,
            density_of: DensityOf::Weights,
            needs: None,
            shares_across_densities: false,
        }
    }

    /// The same entry for a structured method whose density counts channels.
    pub const fn counting_channels(mut self) -> Self {
        self.density_of = DensityOf::Channels;
        self
    }

    /// The same entry for a method that works only on networks offering `capability` (one of
    /// [`capability`]'s names).
    pub const fn needing(mut self, capability: &'static str) -> Self {
        self.needs = Some(capability);
        self
    }

    /// The same entry for a method whose runs at several densities share work: their densities
    /// are announced in the folder they share before they start.
    pub const fn sharing_across_densities(mut self) -> Self {
        self.shares_across_densities = true;
        self
    }

    /// The same entry with another default number of rounds (SynFlow's is 100).
    pub const fn with_default_iterations(mut self, rounds: usize) -> Self {
        self.default_iterations = rounds;
        self
    }
}

impl fmt::Debug for PrunerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrunerEntry")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("default_iterations", &self.default_iterations)
            .field("density_of", &self.density_of)
            .field("needs", &self.needs)
            .field("shares_across_densities", &self.shares_across_densities)
            .finish()
    }
}

fn default_options<O: PrunerOptions>() -> toml::Table {
    toml::Table::try_from(O::default()).expect("plugin options serialise to a TOML table")
}

fn build_from_table<O: PrunerOptions>(table: &toml::Table) -> Result<Box<dyn Pruner>, String> {
    let opts: O = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    Ok(opts.build())
}

inventory::collect!(PrunerEntry);

/// Registered methods sorted by name. Fails if two plugins registered the same name.
pub fn pruners() -> Result<Vec<&'static PrunerEntry>, String> {
    crate::registry::sorted_unique(
        inventory::iter::<PrunerEntry>.into_iter().collect(),
        |e| e.name,
        "method",
    )
}

/// The registered method called `name`.
pub fn find_pruner(name: &str) -> Result<&'static PrunerEntry, String> {
    let all = pruners()?;
    crate::registry::find(&all, name, |e| e.name, "method")
}
