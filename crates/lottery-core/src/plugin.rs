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
//!   read weights through [`PruneTarget::values`] and gradients through [`PruneTarget::loss_gradients`];
//!   SynFlow's |θ|-network gradient and GraSP's Hessian-gradient product are further target queries of
//!   the same shape (named values in, named values out), added to this trait beside them.
//! - **Training in the loop** (IMP, Early-Bird) call [`PruneTarget::train`] between prunes and
//!   [`PruneTarget::set_values`] to rewind survivors to θ₀ or θ_k; Early-Bird reads BN scales (kind
//!   [`ParamKind::Norm`](crate::params::ParamKind)) after each epoch through the `on_epoch` hook and
//!   returns channel masks expanded over the weights they gate.
//! - **Trainable scores with frozen weights** (Gem-Miner) need a forward that multiplies weights by the
//!   rounded scores; it arrives as a target query that trains scores for given epochs and returns them,
//!   so the pruner stays model-agnostic.
//! - **Transformers and graphs** (BERT tickets, GCN tickets) are other model families behind the same
//!   target: their parameters are named like Hugging Face / PyG names them, and a graph's edge mask is a
//!   mask over a parameter-like entry (`graph.adjacency`) of kind `Other`.

use std::fmt;

use indicatif::ProgressBar;
use serde::{Serialize, de::DeserializeOwned};

use crate::density::{Density, exponential_schedule, linear_schedule};
use crate::error::PruneError;
use crate::mask::MaskSet;
use crate::params::{ParamInfo, ParamValues, PrunableRule};
use crate::topk::{Scope, top_k_mask};

/// Metrics of one training epoch, reported to [`PruneTarget::train`]'s hook.
#[derive(Debug, Clone, PartialEq)]
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

/// What a pruner may ask of the network being pruned. Values are keyed by PyTorch names and laid
/// out as PyTorch lays them out; `mask` arguments are applied to the weights before computing.
pub trait PruneTarget {
    /// All named parameters of the model.
    fn params(&self) -> Vec<ParamInfo>;
    /// Current values of the named parameters.
    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError>;
    /// Overwrites the named parameters (rewinding).
    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError>;
    /// Gradient of the mean training loss over the first `batches` training batches (in the run's
    /// data order), with `mask` applied, for the named parameters.
    fn loss_gradients(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        batches: usize,
    ) -> Result<ParamValues, PruneError>;
    /// Trains the masked network for `epochs` epochs with the run's optimiser and schedule; pruned
    /// weights stay exactly zero. Calls `on_epoch` after each epoch.
    fn train(
        &mut self,
        mask: &MaskSet,
        epochs: usize,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<(), PruneError>;
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
}

impl PrunerEntry {
    /// An entry for a method whose options are `O`.
    pub const fn new<O: PrunerOptions>(name: &'static str, summary: &'static str) -> Self {
        Self {
            name,
            summary,
            default_options: default_options::<O>,
            build: build_from_table::<O>,
        }
    }
}

impl fmt::Debug for PrunerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrunerEntry")
            .field("name", &self.name)
            .field("summary", &self.summary)
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
