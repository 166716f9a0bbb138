//! `early-bird`: Early-Bird tickets (You et al., ICLR 2020), channel masks drawn early in training.
//!
//! The dense network trains with network slimming's L1 penalty on the batch-norm scales γ
//! (`l1`, 1e-4). Before training and after every epoch the channel mask is drawn at the run's
//! channel density (`prune.density` counts *channels* for this method: the reference's pruning
//! ratio `p` is `1 − density`) by one global threshold on |γ|. The newest `window` masks (5) are
//! kept first-in first-out; the ticket is drawn at the first epoch where the mask distance
//! (fraction of channels that differ) of the newest mask to each older one is at most `epsilon`
//! (0.1), as the reference's detector decides. `draw = "last"` trains the whole search budget and
//! takes the last mask instead: the prune-after-training baseline of network slimming.
//!
//! The detector's clock (`detect_every`) is the epoch by default, as in the reference. On a small
//! data set an epoch is a few steps, so "stable over 5 epochs" becomes a few dozen steps;
//! `detect_every = N` (a number of optimizer steps) draws a mask before training and after every
//! N steps instead (at steps N, 2N, … counted from step 0, across epoch ends), the window then
//! holding the masks of the last `window` checks. The ticket is the mask at the step where the
//! detector fires, and "drawn after epoch k" becomes "drawn after step s": retraining with
//! `retrain_clock = "drawn"` resumes the schedule at step s, inside its epoch if need be (that
//! epoch's data order continued). `max_epochs` still counts epochs. With `draw = "last"` the
//! ticket is the mask at the end of the budget, whether or not that is a multiple of N.
//!
//! The channel mask is expanded over the weights each channel gates (its convolution's rows, the
//! next layer's input slices), so the masked network computes exactly what the physically smaller
//! network computes; the parameters and FLOPs of that smaller network are recorded. The run then
//! retrains the ticket: by default, like the reference, a fresh initialisation of the smaller
//! network (`retrain_from = "reinit"`) on the remaining epochs of the schedule (`retrain_clock =
//! "drawn"`), with the penalty kept on (`l1_in_retrain`); it trains the physically smaller network
//! (`shrink`), whose values are written back at the kept channels.
//!
//! Rows recorded (round 0): the search's training curve under phase `search`; split `early-bird`:
//! per check (epoch, or N steps) `distance-max` (newest mask to the older masks of the window,
//! once full), `distance-previous`, and `distance/eNNN` (to the mask after epoch NNN: the paper's
//! distance matrix; `distance/sNNNNNN`, to the mask after step NNNNNN, under the step clock);
//! once: `drawn-epoch` (steps before the draw over steps per epoch: fractional under the step
//! clock), `drawn-step`, `detected` (1 if the detector fired), `channel-density`,
//! `params`, `flops` (of the smaller network), `params-dense`, `flops-dense`, their ratios
//! `params-ratio` and `flops-ratio`, per training example `train-flops` (search + retraining, a
//! training step counted as 3 forward passes), `train-flops-dense` (the dense network over the
//! whole schedule) and `train-flops-ratio`, and `dense-accuracy` (test accuracy of the dense
//! network at the draw: with `draw = "last"`, the fully trained unpruned network).
//!
//! The drawn ticket is saved in the run's work directory, so an interrupted run does not search
//! again. A search in progress keeps its training's state there too (at epoch ends, every
//! `PruneContext::save_every`) with the scales watched at every check ([`history`]), so a run
//! killed during its search continues from the last saved epoch end and draws the ticket, with the
//! rows, of an uninterrupted run.
//!
//! With `draw = "last"` the search does not depend on the density: it trains the whole budget
//! whatever mask it takes. Given a folder shared by the runs that differ only in density
//! (`PruneContext::shared_dir`), the first of them to get there trains the search once, holding
//! the folder's lock, and keeps a record of it there (the scales at every check and at the end,
//! the search's rows, the dense network's accuracy, and with `retrain_from = "keep"` its weights);
//! the others wait for the lock and read the record. Each run draws its own masks, distance rows
//! and ticket from the recorded scales, so that a run's results are the same whichever run
//! searched (network slimming's baseline trains the dense network once and prunes it at every
//! ratio, as the reference's pipeline does). The search in progress keeps its state in the shared
//! folder, so that any of the runs resumes it.
//!
//! With `draw = "early"` the runs of other densities share the search as the reference trains one
//! network with a detector per pruning ratio: the first run trains it, in the shared folder, with
//! a detector for each density announced there, until each has drawn (`shared_early.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lottery_core::PruneTarget;
use lottery_core::fsutil::DirLock;
use lottery_core::plugin::{capability, family_mut};
use lottery_core::{
    MaskSet, MetricRow, ParamValues, PruneContext, PruneError, Pruner, PrunerEntry, PrunerOptions,
    Scope, weights,
};
use lottery_models::channel_masks::{self, ChannelGroup, ChannelKeep};

pub mod history;
pub mod selection;
mod shared;
mod shared_early;

use history::{ChecksByStep, ScaleHistory};
use lottery_train::{Checkpoints, ImageTask, TrainingSaver};
use selection::channel_distance;
use serde::{Deserialize, Serialize};
use shared::SharedSearch;

/// Which mask the method takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Draw {
    /// The first mask the detector accepts (the Early-Bird ticket); the last one if it never
    /// fires within the budget.
    Early,
    /// The mask at the end of the search budget (train fully, then prune).
    Last,
}

/// Weights the ticket retrains from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrainFrom {
    /// A fresh initialisation of the smaller network (the reference's retraining).
    Reinit,
    /// The weights at the draw (fine-tuning).
    Keep,
}

/// Where the retraining's schedule starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrainClock {
    /// At the epoch the ticket was drawn: search and retraining share the run's schedule (the
    /// reference's `--start-epoch`).
    Drawn,
    /// At step 0: a whole schedule of retraining.
    Zero,
}

/// The detector's clock (`detect_every`): when a mask is drawn and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectEvery {
    /// After every epoch (`"epoch"`), as the reference does.
    #[default]
    Epoch,
    /// After every this many optimizer steps (a positive integer), counted from step 0.
    Steps(usize),
}

impl DetectEvery {
    /// The step period, `None` for the epoch clock.
    pub fn steps(self) -> Option<usize> {
        match self {
            DetectEvery::Epoch => None,
            DetectEvery::Steps(n) => Some(n),
        }
    }

    fn is_epoch(&self) -> bool {
        *self == DetectEvery::Epoch
    }
}

impl Serialize for DetectEvery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DetectEvery::Epoch => s.serialize_str("epoch"),
            DetectEvery::Steps(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for DetectEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Steps(i64),
            Word(String),
        }
        use serde::de::Error;
        match Repr::deserialize(d)? {
            Repr::Word(w) if w == "epoch" => Ok(DetectEvery::Epoch),
            Repr::Steps(n) if n > 0 => Ok(DetectEvery::Steps(n as usize)),
            Repr::Word(w) => Err(D::Error::custom(format!(
                "detect_every is \"epoch\" or a positive number of steps; got {w:?}"
            ))),
            Repr::Steps(n) => Err(D::Error::custom(format!(
                "detect_every is \"epoch\" or a positive number of steps; got {n}"
            ))),
        }
    }
}

/// Options of `early-bird`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyBirdOptions {
    /// Strength of the L1 penalty on batch-norm scales while searching (network slimming's `s`).
    pub l1: f64,
    /// Masks kept in the first-in first-out window (the newest is compared with each older one).
    pub window: usize,
    /// The ticket is drawn when every distance in the window is at most this.
    pub epsilon: f64,
    /// Epochs the search may train; 0 is the run's whole schedule (`train.epochs`).
    pub max_epochs: usize,
    /// `early` (the detector) or `last` (the end of the budget).
    pub draw: Draw,
    /// Weights the ticket retrains from.
    pub retrain_from: RetrainFrom,
    /// Where the retraining's schedule starts.
    pub retrain_clock: RetrainClock,
    /// Keep the L1 penalty while the ticket retrains.
    pub l1_in_retrain: bool,
    /// Retrain the physically smaller network (the same function as the channel-masked one at a
    /// fraction of the FLOPs); false: the masked full network.
    pub shrink: bool,
    /// The detector's clock: `"epoch"` (the default, the reference's) or a number of optimizer
    /// steps between masks.
    #[serde(skip_serializing_if = "DetectEvery::is_epoch")]
    pub detect_every: DetectEvery,
}

impl Default for EarlyBirdOptions {
    fn default() -> Self {
        Self {
            l1: 1e-4,
            window: 5,
            epsilon: 0.1,
            max_epochs: 0,
            draw: Draw::Early,
            retrain_from: RetrainFrom::Reinit,
            retrain_clock: RetrainClock::Drawn,
            l1_in_retrain: true,
            shrink: true,
            detect_every: DetectEvery::Epoch,
        }
    }
}

impl EarlyBirdOptions {
    fn check(&self) -> Result<(), String> {
        if !(self.l1.is_finite() && self.l1 >= 0.0) {
            return Err(format!("l1 is a penalty strength ≥ 0; got {}", self.l1));
        }
        if self.window < 2 {
            return Err(format!(
                "window holds the masks compared, at least 2; got {}",
                self.window
            ));
        }
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(format!(
                "epsilon is a mask distance in [0, 1]; got {}",
                self.epsilon
            ));
        }
        Ok(())
    }
}

impl PrunerOptions for EarlyBirdOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(EarlyBird { options: self })
    }
}

inventory::submit! {
    PrunerEntry::new::<EarlyBirdOptions>(
        "early-bird",
        "channel masks from BN scales under L1, drawn when they stop changing (density counts channels)",
    )
    .counting_channels()
    .needing(lottery_core::plugin::capability::BN_CHANNELS)
    .sharing_across_densities()
}

/// The Early-Bird pruner.
#[derive(Debug, Clone)]
pub struct EarlyBird {
    options: EarlyBirdOptions,
}

/// The reference's detector: a first-in first-out window of channel masks; it fires when the
/// window is full and the newest mask is within `epsilon` of every older one.
#[derive(Debug, Clone)]
pub struct Detector {
    window: usize,
    epsilon: f64,
    masks: VecDeque<ChannelKeep>,
}

impl Detector {
    /// An empty window of `window` masks.
    pub fn new(window: usize, epsilon: f64) -> Self {
        Self {
            window,
            epsilon,
            masks: VecDeque::new(),
        }
    }

    /// Adds the newest mask (dropping the oldest when the window is full) and returns the
    /// distances of the newest to each older mask, oldest first, once the window is full.
    pub fn push(&mut self, keep: ChannelKeep) -> Option<Vec<f64>> {
        self.masks.push_back(keep);
        if self.masks.len() > self.window {
            self.masks.pop_front();
        }
        if self.masks.len() < self.window {
            return None;
        }
        let newest = self.masks.back().expect("non-empty");
        Some(
            self.masks
                .iter()
                .take(self.window - 1)
                .map(|m| channel_distance(newest, m))
                .collect(),
        )
    }

    /// Whether `distances` (from [`Detector::push`]) draw the ticket: all at most ε.
    pub fn fires(&self, distances: &[f64]) -> bool {
        distances.iter().all(|&d| d <= self.epsilon)
    }

    /// The newest mask.
    pub fn newest(&self) -> Option<&ChannelKeep> {
        self.masks.back()
    }
}

/// The channel mask of `scales` at `density` of the channels: one global threshold on |γ| (at
/// least one channel per layer), or per layer with layer-wise scope.
pub fn channel_mask(
    groups: &[ChannelGroup],
    scales: &ParamValues,
    density: lottery_core::Density,
    scope: Scope,
) -> Result<ChannelKeep, PruneError> {
    match scope {
        Scope::Global => {
            let total: usize = groups.iter().map(|g| g.channels).sum();
            let count = density.keep_count(total).max(groups.len());
            selection::global_channel_keep(groups, scales, count)
        }
        Scope::Layerwise => {
            let mut keep = ChannelKeep::new();
            for g in groups {
                let count = density.keep_count(g.channels).max(1);
                let one = selection::global_channel_keep(std::slice::from_ref(g), scales, count)?;
                keep.extend(one);
            }
            Ok(keep)
        }
    }
}

/// What the search found.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ticket {
    keep: ChannelKeep,
    /// Epochs completed at the draw.
    drawn_epoch: usize,
    /// Steps taken at the draw (absent in tickets saved before the step clock: the epoch's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drawn_step: Option<usize>,
    detected: bool,
}

impl Ticket {
    /// Steps taken at the draw.
    fn step(&self, steps_per_epoch: usize) -> usize {
        self.drawn_step
            .unwrap_or(self.drawn_epoch * steps_per_epoch)
    }
}

/// The saved ticket: the weights at the draw, with the channel mask, every row so far and the
/// weights the search kept at checkpoint steps.
fn save_ticket(
    path: &Path,
    values: &ParamValues,
    ticket: &Ticket,
    rows: &[MetricRow],
    checkpoints: &Checkpoints,
) -> Result<(), PruneError> {
    let meta = BTreeMap::from([
        (
            "ticket".to_string(),
            serde_json::to_string(ticket).map_err(|e| PruneError::progress(path, e))?,
        ),
        (
            "metrics".to_string(),
            serde_json::to_string(rows).map_err(|e| PruneError::progress(path, e))?,
        ),
    ]);
    let mut tensors = values.clone();
    lottery_train::put_checkpoints(&mut tensors, checkpoints);
    let bytes = weights::to_bytes(&tensors, &meta);
    lottery_core::fsutil::write_atomic(path, &bytes).map_err(|e| PruneError::progress(path, e))
}

/// Reads what [`save_ticket`] wrote; a file that does not load is
/// [`PruneError::DamagedProgress`].
fn load_ticket(path: &Path) -> Result<SavedTicket, PruneError> {
    let damaged = |why: &dyn std::fmt::Display| PruneError::damaged_progress(path, why);
    let mut values = weights::read(path).map_err(|e| damaged(&e))?;
    let checkpoints = lottery_train::take_checkpoints(&mut values).map_err(|e| damaged(&e))?;
    let bytes = std::fs::read(path).map_err(|e| damaged(&e))?;
    let meta = lottery_core::tensorfile::metadata(&bytes).map_err(|e| damaged(&e))?;
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| damaged(&format!("no `{key}` metadata")))
    };
    let ticket: Ticket = serde_json::from_str(get("ticket")?).map_err(|e| damaged(&e))?;
    let rows: Vec<MetricRow> = serde_json::from_str(get("metrics")?).map_err(|e| damaged(&e))?;
    Ok((values, ticket, rows, checkpoints))
}

/// What [`load_ticket`] reads: the weights at the draw, the ticket, the rows and the checkpoints.
type SavedTicket = (ParamValues, Ticket, Vec<MetricRow>, Checkpoints);

/// A row of the `early-bird` split at an explicit step and epoch (rows recorded during training).
fn row(step: usize, epoch: usize, metric: impl Into<String>, value: f64) -> MetricRow {
    MetricRow {
        round: 0,
        phase: "search".into(),
        step: step as u64,
        epoch: epoch as u64,
        split: "early-bird".into(),
        metric: metric.into(),
        value,
    }
}

impl EarlyBird {
    fn unsupported(why: impl ToString) -> PruneError {
        PruneError::Unsupported {
            method: "early-bird".into(),
            why: why.to_string(),
        }
    }

    /// Trains with the penalty until the ticket is drawn (or the budget ends), keeping its
    /// progress in `progress_dir` when given; returns the ticket and the distance rows (the
    /// training's own rows are the target's).
    fn search(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        progress_dir: Option<&Path>,
    ) -> Result<(Ticket, Vec<MetricRow>), PruneError> {
        let o = &self.options;
        let clock = ctx.target.clock();
        let budget = self.budget(clock)?;
        let scales: Vec<String> = groups.iter().map(|g| g.scale.clone()).collect();
        let (density, scope) = (ctx.goal.density, ctx.goal.scope);
        bn_network(ctx.target)?.set_norm_l1(o.l1)?;
        ctx.target.set_phase(0, "search");
        let start = ctx.target.values(&scales)?;
        let first = channel_mask(groups, &start, density, scope)?;

        // With a progress folder, the search saves its training's state and the scales it
        // watched there as it goes, and continues from them.
        let progress = progress_dir.map(SearchProgress::in_dir);
        let saved = match &progress {
            Some(p) => {
                let saved = p.resumable_checks(&start)?;
                ctx.target
                    .save_training_in(Some(p.training.clone()), ctx.save_every)?;
                saved
            }
            None => ChecksByStep::new(),
        };
        let history = progress.as_ref().map(|p| &p.scales);
        let mut one = OneDensity {
            search: Search::new(o, first),
            groups,
            density,
            scope,
            stop_at_draw: o.draw == Draw::Early,
        };
        let searched = self.train_searching(ctx, groups, &mut one, &saved, history, budget, false);
        if progress.is_some() {
            ctx.target.save_training_in(None, Duration::ZERO)?;
        }
        searched?;
        let search = one.search;
        let (drawn_step, keep) = match (o.draw, search.drawn) {
            (Draw::Early, Some(s)) => (s, search.detector.newest().expect("drawn").clone()),
            // The mask at the end of the budget (under the epoch clock, the newest of the history).
            _ => (
                ctx.target.clock().step,
                channel_mask(groups, &ctx.target.values(&scales)?, density, scope)?,
            ),
        };
        let ticket = Ticket {
            keep,
            drawn_epoch: drawn_step / clock.steps_per_epoch.max(1),
            drawn_step: Some(drawn_step),
            detected: search.drawn.is_some(),
        };
        Ok((ticket, search.rows))
    }

    /// The search of this run alone, its progress kept in the run's work folder: the ticket,
    /// with the search's rows and the distance rows in the target's rows.
    fn search_alone(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
    ) -> Result<Ticket, PruneError> {
        let work_dir = ctx.work_dir.clone();
        let (ticket, rows) = self.search(ctx, groups, work_dir.as_deref())?;
        let mut all = ctx.target.metrics();
        all.extend(rows);
        ctx.target.restore_metrics(all);
        Ok(ticket)
    }

    /// The search's budget in epochs, checked against the run's schedule.
    fn budget(&self, clock: lottery_core::TrainClock) -> Result<usize, PruneError> {
        let o = &self.options;
        let run_epochs = clock.run_steps / clock.steps_per_epoch.max(1);
        let budget = if o.max_epochs == 0 {
            run_epochs
        } else {
            o.max_epochs
        };
        if budget > run_epochs {
            return Err(Self::unsupported(format!(
                "max_epochs = {budget} exceeds the run's schedule of {run_epochs} epochs"
            )));
        }
        if o.draw == Draw::Last && o.retrain_clock == RetrainClock::Drawn && budget == run_epochs {
            return Err(Self::unsupported(
                "draw = \"last\" over the whole schedule leaves nothing to retrain with \
                 retrain_clock = \"drawn\"; set retrain_clock = \"zero\" or a smaller max_epochs",
            ));
        }
        Ok(budget)
    }

    /// The `draw = "last"` search shared by the runs of other densities in `shared`: read from
    /// its record there, or trained (holding the folder's lock, so that one run trains it) and
    /// recorded. Returns this density's ticket, with the search's rows and this density's
    /// distance rows in the target's rows, and the record.
    fn search_shared(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        shared: &Path,
    ) -> Result<(Ticket, SharedSearch), PruneError> {
        self.budget(ctx.target.clock())?;
        let lock = lock_shared(ctx, shared)?;
        let path = SharedSearch::path(shared);
        let record = set_aside_if_damaged(shared, self.read_or_record(ctx, groups, shared, &path))?;
        drop(lock);
        // The clock at the search's end (the rows recorded next are stamped with it), and the
        // weights there when they were kept.
        let values = match &record.values {
            Some(v) => v.clone(),
            None => {
                let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
                ctx.target.values(&all)?
            }
        };
        ctx.target.rewind(&values, record.end_step)?;
        // The weights the search's training saved at the run's checkpoint steps.
        bn_network(ctx.target)?.insert_checkpoints(record.checkpoints.clone());

        // This density's masks, distance rows and ticket, from the recorded scales.
        let (density, scope) = (ctx.goal.density, ctx.goal.scope);
        let damaged = |why: &str| PruneError::damaged_progress(&path, why);
        let mut checks = record.checks.iter();
        let first = match checks.next() {
            Some((0, c)) => channel_mask(groups, &c.scales, density, scope)?,
            _ => return Err(damaged("the recorded search has no check at step 0")),
        };
        let mut search = Search::new(&self.options, first);
        for (&step, c) in checks {
            search.take(
                channel_mask(groups, &c.scales, density, scope)?,
                step,
                c.epoch,
            );
        }
        let keep = channel_mask(groups, &record.end_scales, density, scope)?;
        let mut rows = ctx.target.metrics();
        rows.extend(record.rows.iter().cloned());
        rows.extend(search.rows);
        ctx.target.restore_metrics(rows);
        let spe = ctx.target.clock().steps_per_epoch.max(1);
        let ticket = Ticket {
            keep,
            drawn_epoch: record.end_step / spe,
            drawn_step: Some(record.end_step),
            detected: search.drawn.is_some(),
        };
        Ok((ticket, record))
    }

    /// The shared search's record at `path`, or, when there is none, the search trained and
    /// recorded there (its progress then removed). Call with the folder's lock held.
    fn read_or_record(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        shared: &Path,
        path: &Path,
    ) -> Result<SharedSearch, PruneError> {
        if path.exists() {
            let record = SharedSearch::load(path, groups)?;
            tracing::info!(
                "early-bird: read the search shared with this config's other densities from {}",
                path.display()
            );
            return Ok(record);
        }
        let record = self.record_search(ctx, groups, shared)?;
        record.save(path)?;
        SearchProgress::in_dir(shared).remove()?;
        Ok(record)
    }

    /// Trains the search (progress in `shared`, so that any run of the other densities resumes
    /// it) and records what every density draws its ticket from.
    fn record_search(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        shared: &Path,
    ) -> Result<SharedSearch, PruneError> {
        let scales: Vec<String> = groups.iter().map(|g| g.scale.clone()).collect();
        let before = ctx.target.metrics();
        let saved_before: Vec<usize> = bn_network(ctx.target)?
            .checkpoints()
            .keys()
            .copied()
            .collect();
        // This density's ticket and rows are drawn again from the record, as every density's.
        self.search(ctx, groups, Some(shared))?;
        let mut checkpoints = bn_network(ctx.target)?.checkpoints().clone();
        checkpoints.retain(|step, _| !saved_before.contains(step));
        let mut rows = ctx.target.metrics();
        let rows = rows.split_off(before.len().min(rows.len()));
        ctx.target.restore_metrics(before);
        let checks = SearchProgress::in_dir(shared).scales.read()?;
        let dense = ctx.dense_mask();
        let (_, dense_accuracy) = ctx.target.evaluate(&dense)?;
        let values = match self.options.retrain_from {
            RetrainFrom::Keep => {
                let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
                Some(ctx.target.values(&all)?)
            }
            RetrainFrom::Reinit => None,
        };
        Ok(SharedSearch {
            checks,
            end_step: ctx.target.clock().step,
            end_scales: ctx.target.values(&scales)?,
            rows,
            dense_accuracy,
            checkpoints,
            values,
        })
    }

    /// The search's training: from the clock's step to the budget's end (or until `on_check`
    /// stops it), calling `on_check` at each check. A training resumed from a saved state replays
    /// its restored epochs without the values watched at them (but the last): their checks take
    /// the scales `saved` by step. The scales of each check watched are appended to `history`.
    /// `watch_all`: the values passed to `on_check` at a live check are every parameter and
    /// buffer, not only the scales.
    #[allow(clippy::too_many_arguments)]
    fn train_searching(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        on_check: &mut dyn OnCheck,
        saved: &ChecksByStep,
        history: Option<&ScaleHistory>,
        budget: usize,
        watch_all: bool,
    ) -> Result<(), PruneError> {
        let o = &self.options;
        let scales: Vec<String> = groups.iter().map(|g| g.scale.clone()).collect();
        let watch: Vec<String> = if watch_all {
            ctx.target.params().into_iter().map(|p| p.name).collect()
        } else {
            scales.clone()
        };
        let dense = ctx.dense_mask();
        let spe = ctx.target.clock().steps_per_epoch.max(1);
        let every = o.detect_every.steps();
        let mut failure: Option<PruneError> = None;
        // The step of the last check taken.
        let mut last = 0;
        bn_network(ctx.target)?.set_watch_every(every);
        ctx.progress.set_message("early-bird search");
        let trained =
            ctx.target
                .train_watching(&dense, budget * spe, &watch, &mut |report, watched| {
                    let s = report.step;
                    let missing = |k: usize| PruneError::DamagedProgress {
                        path: history.map(|h| h.path().to_path_buf()).unwrap_or_default(),
                        why: format!(
                            "no scales saved for step {k}, which the resumed training replays"
                        ),
                    };
                    let mut stop = |result: Result<bool, PruneError>| match result {
                        Ok(stops) => stops,
                        Err(e) => {
                            failure = Some(e);
                            true
                        }
                    };
                    // Under the step clock, checks between the last one taken and this report were
                    // made before a resume (a live training reports each): take their saved scales.
                    let between = every.map_or(0..0, |n| (last / n + 1) * n..s);
                    for k in between.step_by(every.unwrap_or(1)) {
                        let taken = match saved.get(&k) {
                            Some(c) => on_check.check(k, k / spe, &c.scales, None),
                            None => Err(missing(k)),
                        };
                        last = k;
                        if stop(taken) {
                            return ControlFlow::Break(());
                        }
                    }
                    if every.is_some_and(|n| !s.is_multiple_of(n)) {
                        return ControlFlow::Continue(()); // an epoch end off the step clock
                    }
                    let taken = if watched.is_empty() {
                        // A replayed epoch end.
                        match saved.get(&s) {
                            Some(c) => on_check.check(s, report.epoch, &c.scales, None),
                            None => Err(missing(s)),
                        }
                    } else {
                        let at_check: ParamValues = scales
                            .iter()
                            .filter_map(|n| watched.get(n).map(|t| (n.clone(), t.clone())))
                            .collect();
                        history
                            .map_or(Ok(()), |h| h.append(s, report.epoch, &at_check))
                            .and_then(|()| {
                                on_check.check(s, report.epoch, &at_check, Some(watched))
                            })
                    };
                    last = s;
                    tracing::info!(
                        epoch = report.epoch,
                        step = s,
                        test_accuracy = format!("{:.4}", report.test_accuracy.unwrap_or(f64::NAN)),
                        detector = on_check.describe(),
                        "early-bird search"
                    );
                    if stop(taken) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
        bn_network(ctx.target)?.set_watch_every(None);
        trained?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What a search does at each check of its training.
trait OnCheck {
    /// Takes the check at step `s` (epoch `e`) with the batch-norm `scales` there. `live`: every
    /// watched value, when the training is at that step now; `None` when a resumed training
    /// replays a check made before it. True stops the training.
    fn check(
        &mut self,
        s: usize,
        e: usize,
        scales: &ParamValues,
        live: Option<&ParamValues>,
    ) -> Result<bool, PruneError>;

    /// The detector's state, for the log.
    fn describe(&self) -> String;
}

/// One density's detector: the search of a run alone (or of `draw = "last"`).
struct OneDensity<'a> {
    search: Search,
    groups: &'a [ChannelGroup],
    density: lottery_core::Density,
    scope: Scope,
    /// Stop when the detector fires (`draw = "early"`).
    stop_at_draw: bool,
}

impl OnCheck for OneDensity<'_> {
    fn check(
        &mut self,
        s: usize,
        e: usize,
        scales: &ParamValues,
        _live: Option<&ParamValues>,
    ) -> Result<bool, PruneError> {
        let keep = channel_mask(self.groups, scales, self.density, self.scope)?;
        Ok(self.search.take(keep, s, e) && self.stop_at_draw)
    }

    fn describe(&self) -> String {
        format!(
            "distance_max {:.4}",
            self.search.newest_max.unwrap_or(f64::NAN)
        )
    }
}

/// The detector's side of a search: the masks taken so far, the window, the distance rows and
/// the draw.
struct Search {
    detector: Detector,
    /// Every mask taken, the one before training first.
    history: Vec<ChannelKeep>,
    rows: Vec<MetricRow>,
    /// The step the detector first fired at.
    drawn: Option<usize>,
    /// The detector's clock (`None`: the epoch).
    every: Option<usize>,
    /// The largest distance in the window at the last mask taken, once the window is full.
    newest_max: Option<f64>,
}

impl Search {
    fn new(o: &EarlyBirdOptions, first: ChannelKeep) -> Self {
        let mut detector = Detector::new(o.window, o.epsilon);
        detector.push(first.clone());
        Self {
            detector,
            history: vec![first],
            rows: vec![],
            drawn: None,
            every: o.detect_every.steps(),
            newest_max: None,
        }
    }

    /// The name of the distance row to the j-th mask taken.
    fn older_name(&self, j: usize) -> String {
        match self.every {
            None => format!("distance/e{j:03}"),
            Some(n) => format!("distance/s{:06}", j * n),
        }
    }

    /// Takes the mask drawn at step `s` (epoch `e`): records its distances and pushes it into the
    /// window; true when the detector fires for the first time.
    fn take(&mut self, keep: ChannelKeep, s: usize, e: usize) -> bool {
        let previous = self.history.last().expect("the initial mask");
        let to_previous = channel_distance(&keep, previous);
        self.rows.push(row(s, e, "distance-previous", to_previous));
        for j in 0..self.history.len() {
            let d = channel_distance(&keep, &self.history[j]);
            self.rows.push(row(s, e, self.older_name(j), d));
        }
        self.history.push(keep.clone());
        let window = self.detector.push(keep);
        self.newest_max = window
            .as_ref()
            .map(|d| d.iter().copied().fold(0.0, f64::max));
        let (Some(d), Some(max)) = (window, self.newest_max) else {
            return false;
        };
        self.rows.push(row(s, e, "distance-max", max));
        if self.drawn.is_none() && self.detector.fires(&d) {
            self.drawn = Some(s);
            return true;
        }
        false
    }
}

/// Where a search keeps its progress (in the run's work folder, or in the folder shared by the
/// runs of other densities): the training's saved state and the scales watched.
struct SearchProgress {
    training: PathBuf,
    scales: ScaleHistory,
}

impl SearchProgress {
    fn in_dir(dir: &Path) -> Self {
        let dir = dir.join("early-bird");
        Self {
            training: dir.join("search"),
            scales: ScaleHistory::new(dir.join("scales.jsonl")),
        }
    }

    /// The checks a resumed search replays: the saved ones when the training saved a state and
    /// the saved search began with the scales `first`; otherwise the history starts afresh with
    /// `first` at step 0.
    fn resumable_checks(&self, first: &ParamValues) -> Result<ChecksByStep, PruneError> {
        let saved = self.scales.read()?;
        let has_state = TrainingSaver::new(self.training.clone(), Duration::ZERO)
            .latest()
            .is_some();
        if has_state && saved.get(&0).map(|c| &c.scales) == Some(first) {
            return Ok(saved);
        }
        self.scales.clear()?;
        self.scales.append(0, 0, first)?;
        Ok(ChecksByStep::from([(
            0,
            history::Check {
                epoch: 0,
                scales: first.clone(),
            },
        )]))
    }

    /// Removes the search's progress (once its ticket, or its shared record, is saved).
    fn remove(&self) -> Result<(), PruneError> {
        self.scales.clear()?;
        match std::fs::remove_dir_all(&self.training) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PruneError::progress(&self.training, e)),
        }
    }
}

impl Pruner for EarlyBird {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        let o = self.options.clone();
        o.check().map_err(Self::unsupported)?;
        let groups = bn_network(ctx.target)?
            .channel_groups()
            .map_err(Self::unsupported)?;
        let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
        let saved: Option<PathBuf> = ctx
            .work_dir
            .as_ref()
            .map(|d| d.join("early-bird").join("ticket.safetensors"));

        let (ticket, drawn_values) = match saved.as_ref().filter(|p| p.exists()) {
            Some(path) => {
                let (values, ticket, rows, checkpoints) = load_ticket(path)?;
                ctx.target.restore_metrics(rows);
                bn_network(ctx.target)?.insert_checkpoints(checkpoints);
                tracing::info!(
                    "early-bird resumed with its ticket drawn at epoch {} from {}",
                    ticket.drawn_epoch,
                    path.display()
                );
                (ticket, values)
            }
            None => {
                let (ticket, dense_accuracy, values) = match (o.draw, ctx.shared_dir.clone()) {
                    (Draw::Last, Some(shared)) => {
                        let (ticket, record) = self.search_shared(ctx, &groups, &shared)?;
                        (ticket, record.dense_accuracy, record.values)
                    }
                    (Draw::Early, Some(shared)) => {
                        let ticket = match self.search_shared_early(ctx, &groups, &shared)? {
                            Some(ticket) => ticket,
                            None => self.search_alone(ctx, &groups)?,
                        };
                        let dense = ctx.dense_mask();
                        let (_, dense_accuracy) = ctx.target.evaluate(&dense)?;
                        (ticket, dense_accuracy, None)
                    }
                    (_, None) => {
                        let ticket = self.search_alone(ctx, &groups)?;
                        let dense = ctx.dense_mask();
                        let (_, dense_accuracy) = ctx.target.evaluate(&dense)?;
                        (ticket, dense_accuracy, None)
                    }
                };
                let values = match values {
                    Some(v) => v,
                    None => ctx.target.values(&all)?,
                };
                self.record_costs(ctx, &ticket, dense_accuracy)?;
                if let Some(path) = &saved {
                    let checkpoints = bn_network(ctx.target)?.checkpoints().clone();
                    save_ticket(path, &values, &ticket, &ctx.target.metrics(), &checkpoints)?;
                }
                (ticket, values)
            }
        };

        // The ticket is saved: the search's own progress is no longer needed.
        if let Some(dir) = &ctx.work_dir {
            SearchProgress::in_dir(dir).remove()?;
        }
        let mask = channel_masks::expand(&groups, &ticket.keep, &ctx.dense_mask())?;
        let start = self.retrain_start(&ticket, ctx.target.clock());
        if o.retrain_clock == RetrainClock::Drawn && start == 0 {
            tracing::warn!(
                "early-bird: no ticket drawn before the end of the schedule (epoch {}); the last \
                 mask is the ticket and retrains for a whole schedule from step 0",
                ticket.drawn_epoch
            );
        }
        let values = match o.retrain_from {
            RetrainFrom::Reinit => bn_network(ctx.target)?
                .fresh_channel_values(ctx.seed ^ 0x00EB_00EB, &ticket.keep)?,
            RetrainFrom::Keep => drawn_values,
        };
        ctx.target.rewind(&values, start)?;
        bn_network(ctx.target)?.set_norm_l1(if o.l1_in_retrain { o.l1 } else { 0.0 })?;
        if o.shrink {
            bn_network(ctx.target)?.set_channel_structure(Some(ticket.keep.clone()))?;
        }
        ctx.target.set_phase(0, "ticket");
        Ok(mask)
    }
}

/// Locks the folder shared with the runs of other densities, waiting (and counting the wait in
/// [`PruneContext::waited`]) while another run holds it.
fn lock_shared(ctx: &mut PruneContext<'_>, shared: &Path) -> Result<DirLock, PruneError> {
    if let Some(lock) = DirLock::try_acquire(shared).map_err(|e| PruneError::progress(shared, e))? {
        return Ok(lock);
    }
    tracing::info!(
        "early-bird: waiting for another run of this config (another density) to finish the \
         search it shares, in {}",
        shared.display()
    );
    ctx.progress
        .set_message("early-bird: waiting for the shared search");
    let waiting = std::time::Instant::now();
    let lock = DirLock::acquire(shared).map_err(|e| PruneError::progress(shared, e))?;
    ctx.waited += waiting.elapsed();
    Ok(lock)
}

/// Passes `result` on; when it is damaged progress, first moves the shared search aside (call it
/// with the folder's lock held), so that the run's retry (on a fresh network), or another
/// density's run, searches again.
fn set_aside_if_damaged<T>(shared: &Path, result: Result<T, PruneError>) -> Result<T, PruneError> {
    match result {
        Err(e @ PruneError::DamagedProgress { .. }) => {
            let search = shared.join("early-bird");
            let aside = lottery_core::fsutil::set_aside(&search)
                .map_err(|e| PruneError::progress(&search, e))?;
            tracing::warn!(
                "early-bird: the search shared with this config's other densities does not load \
                 ({e}); moved it to {}",
                aside.display()
            );
            Err(e)
        }
        other => other,
    }
}

/// The batch-norm convolutional network behind the target: Early-Bird's channels, batch-norm
/// penalty and cost are what only that family offers.
fn bn_network(target: &mut dyn PruneTarget) -> Result<&mut ImageTask, PruneError> {
    family_mut::<ImageTask>(target, "early-bird", capability::BN_CHANNELS)
}

impl EarlyBird {
    /// The step the ticket's retraining starts at: the draw's with `retrain_clock = "drawn"`, 0
    /// with `"zero"`, and 0 too when the draw came at the end of the schedule (the detector never
    /// fired): then the last mask is the ticket and retrains for a whole schedule, so the run
    /// finishes and its seed stays in the tables (`early-bird/detected` is 0 and
    /// `early-bird/retrain-start-epoch` says where retraining began).
    fn retrain_start(&self, ticket: &Ticket, clock: lottery_core::TrainClock) -> usize {
        let start = match self.options.retrain_clock {
            RetrainClock::Drawn => ticket.step(clock.steps_per_epoch),
            RetrainClock::Zero => 0,
        };
        if start >= clock.run_steps { 0 } else { start }
    }

    /// Records the ticket's epoch, size and training cost, and the dense network's accuracy at
    /// the draw.
    fn record_costs(
        &self,
        ctx: &mut PruneContext<'_>,
        ticket: &Ticket,
        dense_accuracy: f64,
    ) -> Result<(), PruneError> {
        let dense = bn_network(ctx.target)?.cost(None)?;
        let small = bn_network(ctx.target)?.cost(Some(&ticket.keep))?;
        let clock = ctx.target.clock();
        let spe = clock.steps_per_epoch.max(1);
        let run_epochs = (clock.run_steps / spe) as f64;
        // In epochs, fractional when the step clock drew between epoch ends.
        let searched = ticket.step(spe) as f64 / spe as f64;
        let retrain_start = self.retrain_start(ticket, clock) as f64 / spe as f64;
        let retrain_epochs = run_epochs - retrain_start;
        let total: usize = ticket.keep.values().map(Vec::len).sum();
        let t = &mut *ctx.target;
        let train_flops =
            3.0 * (searched * dense.flops as f64 + retrain_epochs * small.flops as f64);
        let train_flops_dense = 3.0 * run_epochs * dense.flops as f64;
        t.set_phase(0, "search");
        t.record("early-bird", "drawn-epoch", searched);
        t.record("early-bird", "drawn-step", ticket.step(spe) as f64);
        t.record("early-bird", "retrain-start-epoch", retrain_start);
        t.record(
            "early-bird",
            "detected",
            f64::from(u8::from(ticket.detected)),
        );
        t.record(
            "early-bird",
            "channel-density",
            channel_masks::kept_channels(&ticket.keep) as f64 / total as f64,
        );
        t.record("early-bird", "params", small.params as f64);
        t.record("early-bird", "flops", small.flops as f64);
        t.record("early-bird", "params-dense", dense.params as f64);
        t.record("early-bird", "flops-dense", dense.flops as f64);
        t.record(
            "early-bird",
            "params-ratio",
            small.params as f64 / dense.params as f64,
        );
        t.record(
            "early-bird",
            "flops-ratio",
            small.flops as f64 / dense.flops as f64,
        );
        // A training step costs about three forward passes (forward, and twice that backward).
        t.record("early-bird", "train-flops", train_flops);
        t.record("early-bird", "train-flops-dense", train_flops_dense);
        t.record(
            "early-bird",
            "train-flops-ratio",
            train_flops / train_flops_dense,
        );
        t.record("early-bird", "dense-accuracy", dense_accuracy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_core::plugin::assert_options_contract;

    /// A channel mask of one batch-norm layer, `bn.weight`.
    pub(crate) fn keep(flags: &[bool]) -> ChannelKeep {
        ChannelKeep::from([("bn.weight".to_string(), flags.to_vec())])
    }

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        assert_options_contract::<EarlyBirdOptions>("ratio = 0.5");
        assert!(toml::from_str::<EarlyBirdOptions>("draw = \"sometime\"").is_err());
        let bad: EarlyBirdOptions = toml::from_str("window = 1").unwrap();
        assert!(bad.check().is_err());
        let bad: EarlyBirdOptions = toml::from_str("epsilon = 1.5").unwrap();
        assert!(bad.check().is_err());
    }

    #[test]
    fn detect_every_reads_epoch_or_a_positive_step_count_and_is_left_out_when_default() {
        let o: EarlyBirdOptions = toml::from_str("detect_every = \"epoch\"").unwrap();
        assert_eq!(o.detect_every, DetectEvery::Epoch);
        let o: EarlyBirdOptions = toml::from_str("detect_every = 200").unwrap();
        assert_eq!(o.detect_every, DetectEvery::Steps(200));
        assert_eq!(o.detect_every.steps(), Some(200));
        for bad in [
            "detect_every = 0",
            "detect_every = -3",
            "detect_every = \"step\"",
        ] {
            assert!(toml::from_str::<EarlyBirdOptions>(bad).is_err(), "{bad}");
        }
        // The default is not serialised (run ids of existing configs stay), a step count is.
        let text = toml::to_string(&EarlyBirdOptions::default()).unwrap();
        assert!(!text.contains("detect_every"), "{text}");
        let steps = EarlyBirdOptions {
            detect_every: DetectEvery::Steps(40),
            ..EarlyBirdOptions::default()
        };
        let text = toml::to_string(&steps).unwrap();
        assert!(text.contains("detect_every = 40"), "{text}");
        assert_eq!(toml::from_str::<EarlyBirdOptions>(&text).unwrap(), steps);
    }

    /// Ten channels; each mask differs from the first in the first `k` channels.
    fn shifted(k: usize) -> ChannelKeep {
        let flags: Vec<bool> = (0..10).map(|c| (c < k) ^ (c % 2 == 0)).collect();
        keep(&flags)
    }

    #[test]
    fn the_detector_fires_exactly_when_every_distance_in_the_window_is_at_most_epsilon() {
        /// The pushes (0-based) at which a detector of window 5 fires on masks `shifted(k)`.
        fn fired(epsilon: f64, ks: &[usize]) -> Vec<usize> {
            let mut d = Detector::new(5, epsilon);
            let mut out = vec![];
            for (i, &k) in ks.iter().enumerate() {
                match d.push(shifted(k)) {
                    None => assert!(i < 4, "window full from the 5th mask"),
                    Some(dist) => {
                        assert_eq!(dist.len(), 4);
                        if d.fires(&dist) {
                            out.push(i);
                        }
                    }
                }
            }
            out
        }
        // Push 4: the oldest (shifted(0)) is 0.3 away. Push 5: shifted(4) is 0.1 from each
        // shifted(3): fires (0.1 ≤ ε, the reference's `> 0.1` test). Push 6..9: every window
        // holds shifted(4) at distance 0.1 or only shifted(3): fires.
        assert_eq!(
            fired(0.1, &[0, 3, 3, 3, 3, 4, 3, 3, 3, 3]),
            vec![5, 6, 7, 8, 9]
        );
        // Below 0.1, every window holding shifted(4) (pushes 4..8) is refused; push 9 drops it.
        assert_eq!(fired(0.09, &[3, 3, 3, 3, 4, 3, 3, 3, 3, 3]), vec![9]);
    }

    #[test]
    fn identical_masks_are_at_distance_zero_and_complementary_ones_at_one() {
        let a = keep(&[true, false, true]);
        let b = keep(&[false, true, false]);
        assert_eq!(channel_distance(&a, &a), 0.0);
        assert_eq!(channel_distance(&a, &b), 1.0);
    }
}
