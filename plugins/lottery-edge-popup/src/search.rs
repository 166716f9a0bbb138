//! Score training with frozen weights through an exact top-k mask: [`search_scores`], on an image
//! classifier.
//!
//! Each step keeps, on the device, exactly `k` weights per layer (or over all prunable weights
//! for a global scope) by `|score|`, writes `w₀ ⊙ mask` into the model, differentiates the loss with
//! respect to those effective weights and passes the gradient straight through the top-k:
//! `∂L/∂s = ∂L/∂w_eff ⊙ w₀ ⊙ sign(s)` (the reference ranks `scores.abs()`, so autograd's `sign(s)`
//! is part of its gradient). Every score moves, inside the top-k or not. Weight decay on the scores,
//! SGD with PyTorch's momentum, and the schedule of [`lr_at`] follow; nothing of the model is trained.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use burn::module::ParamId;
use burn::prelude::*;
use lottery_core::config::TrainSection;
use lottery_core::plugin::{PruneTarget, capability, family_mut};
use lottery_core::topk::{Scope, top_k_mask};
use lottery_core::{Density, MaskSet, ParamValues, PruneError};
use lottery_models::view::ViewEntry;
use lottery_train::schedule::lr_at;
use lottery_train::task::take_flat_gradient;
use lottery_train::{DeviceFlat, ImageTask};

/// How [`search_scores`] trains the scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpec {
    /// Learning rate, momentum, weight decay and schedule of the scores (SGD, PyTorch's semantics);
    /// `epochs` is the length of the search (the schedule's horizon).
    pub train: TrainSection,
    /// Fraction of weights the subnetwork keeps.
    pub density: Density,
    /// Per layer (the reference) or over all scored weights.
    pub scope: Scope,
}

/// Where a search stands after a whole epoch: everything needed to continue it exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: usize,
    /// One score per prunable weight (PyTorch names and layout); the subnetwork is the top-k of
    /// their absolute values.
    pub scores: ParamValues,
    /// SGD momentum buffers, `momentum/<name>`; empty before the first step.
    pub moments: ParamValues,
}

impl SearchState {
    /// The subnetwork: exactly `density`'s count of the highest `|score|` (per layer or in total);
    /// ties go to the parameter earlier in name order, then to the lower index in PyTorch's layout.
    pub fn subnetwork(&self, density: Density, scope: Scope) -> Result<MaskSet, PruneError> {
        let magnitudes: ParamValues = self
            .scores
            .iter()
            .map(|(n, t)| {
                let mut t = t.clone();
                t.values.iter_mut().for_each(|v| *v = v.abs());
                (n.clone(), t)
            })
            .collect();
        top_k_mask(&magnitudes, density, scope, None)
    }
}

/// One epoch of search, as [`search_scores`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchReport {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Mean cross-entropy of the subnetworks over the epoch's batches.
    pub train_loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Test accuracy of the subnetwork on the untrained weights.
    pub accuracy: f64,
}

/// What [`search_scores`] calls after each epoch: the report, the state, and the target (to read
/// values and save; rows it records carry the search's step and epoch).
pub type SearchHook<'a> = dyn FnMut(&SearchReport, &SearchState, &mut dyn PruneTarget) -> Result<ControlFlow<()>, PruneError>
    + 'a;

fn image(target: &mut dyn PruneTarget) -> Result<&mut ImageTask, PruneError> {
    family_mut::<ImageTask>(target, "edge-popup", capability::IMAGE)
}

fn target_err(e: impl ToString) -> PruneError {
    PruneError::Target(e.to_string())
}

/// One scored weight on the device: its entry, and flat tensors in burn's layout.
struct Scored {
    entry: ViewEntry,
    w0: DeviceFlat,
    score: DeviceFlat,
    momentum: Option<DeviceFlat>,
}

/// A 0/1 tensor keeping exactly `k` of the largest entries of `magnitude` (the mask of each step).
/// Entries above the `k`-th largest value are kept; among those equal to it, the lowest indices
/// (burn's layout, which transposes linear weights) fill the count.
pub fn top_k_device(magnitude: DeviceFlat, k: usize) -> DeviceFlat {
    let n = magnitude.dims()[0];
    if k == 0 {
        return magnitude.zeros_like();
    }
    if k >= n {
        return magnitude.ones_like();
    }
    let kth: f32 = magnitude
        .clone()
        .sort_descending(0)
        .narrow(0, k - 1, 1)
        .into_scalar()
        .elem();
    let above = magnitude.clone().greater_elem(kth);
    let above_count: i64 = above.clone().int().sum().into_scalar().elem();
    let need = k as i64 - above_count;
    let tied = magnitude.equal_elem(kth).int();
    let first_tied = tied
        .clone()
        .cumsum(0)
        .lower_equal_elem(need)
        .int()
        .mul(tied);
    above.int().add(first_tied).float()
}

/// The step's masks: exactly `density`'s count per layer, or in total.
fn device_masks(scored: &[Scored], density: Density, scope: Scope) -> HashMap<ParamId, DeviceFlat> {
    match scope {
        Scope::Layerwise => scored
            .iter()
            .map(|s| {
                let n = s.entry.info.numel();
                (
                    s.entry.id,
                    top_k_device(s.score.clone().abs(), density.keep_count(n)),
                )
            })
            .collect(),
        Scope::Global => {
            let total: usize = scored.iter().map(|s| s.entry.info.numel()).sum();
            let all = Tensor::cat(scored.iter().map(|s| s.score.clone().abs()).collect(), 0);
            let mask = top_k_device(all, density.keep_count(total));
            let mut at = 0;
            scored
                .iter()
                .map(|s| {
                    let n = s.entry.info.numel();
                    let part = mask.clone().narrow(0, at, n);
                    at += n;
                    (s.entry.id, part)
                })
                .collect()
        }
    }
}

/// Writes `w₀ ⊙ mask` (or `w₀` with no mask) into the model's scored weights.
fn write_scored(
    task: &mut ImageTask,
    scored: &[Scored],
    masks: Option<&HashMap<ParamId, DeviceFlat>>,
) {
    task.write_masked_weights(scored.iter().map(|s| (s.entry.id, &s.w0)), masks);
}

/// Puts the weights back to `w₀` and applies batch norm's pending statistics.
fn restore(task: &mut ImageTask, scored: &[Scored]) {
    task.restore_frozen_weights(scored.iter().map(|s| (s.entry.id, &s.w0)));
}

fn upload_state(task: &mut ImageTask, state: &SearchState) -> Result<Vec<Scored>, PruneError> {
    task.settle();
    let entries: BTreeMap<String, ViewEntry> = task
        .param_entries()
        .into_iter()
        .map(|e| (e.info.name.clone(), e))
        .collect();
    let names: Vec<String> = state.scores.keys().cloned().collect();
    let w0_host = PruneTarget::values(task, &names)?;
    let mut scored = Vec::with_capacity(names.len());
    for name in &names {
        let entry = entries
            .get(name)
            .ok_or_else(|| target_err(format!("scores for {name}, which the model has not")))?
            .clone();
        let score = &state.scores[name];
        if score.shape != entry.info.shape {
            return Err(target_err(format!(
                "{name}: scores {:?} for a parameter of shape {:?}",
                score.shape, entry.info.shape
            )));
        }
        let momentum = state
            .moments
            .get(&format!("momentum/{name}"))
            .map(|v| task.upload_flat(&entry, v))
            .transpose()?;
        scored.push(Scored {
            w0: task.upload_flat(&entry, &w0_host[name])?,
            score: task.upload_flat(&entry, score)?,
            momentum,
            entry,
        });
    }
    Ok(scored)
}

/// One SGD step of the scores on one batch; the loss of the batch (before the step).
fn step(
    task: &mut ImageTask,
    spec: &SearchSpec,
    scored: &mut [Scored],
    batch: &lottery_data::Batch,
    state: &SearchState,
    lr: f64,
) -> Result<f64, PruneError> {
    let tc = &spec.train;
    let masks = device_masks(scored, spec.density, spec.scope);
    write_scored(task, scored, Some(&masks));
    let (batch_loss, mut grads) = task.batch_loss_gradients(batch);
    if let Err(e) = PruneError::check_loss(batch_loss, state.epoch + 1, state.step + 1) {
        restore(task, scored);
        return Err(e);
    }
    for s in scored.iter_mut() {
        // Straight through the top-k (and through |·|): ∂L/∂s = ∂L/∂w_eff ⊙ w₀ ⊙ sign(s).
        let mut g = match take_flat_gradient(&mut grads, &s.entry) {
            Some(g) => g.mul(s.w0.clone()).mul(s.score.clone().sign()),
            None => s.score.zeros_like(),
        };
        if tc.weight_decay > 0.0 {
            g = g.add(s.score.clone().mul_scalar(tc.weight_decay));
        }
        let update = if tc.momentum > 0.0 {
            let buf = match s.momentum.take() {
                Some(b) => b.mul_scalar(tc.momentum).add(g.clone()),
                None => g.clone(),
            };
            s.momentum = Some(buf.clone());
            if tc.nesterov {
                g.add(buf.mul_scalar(tc.momentum))
            } else {
                buf
            }
        } else {
            g
        };
        s.score = s.score.clone().sub(update.mul_scalar(lr));
    }
    Ok(batch_loss)
}

fn download_state(scored: &[Scored], state: &mut SearchState) {
    for s in scored {
        let name = &s.entry.info.name;
        state
            .scores
            .insert(name.clone(), ImageTask::download_flat(&s.entry, &s.score));
        if let Some(b) = &s.momentum {
            state.moments.insert(
                format!("momentum/{name}"),
                ImageTask::download_flat(&s.entry, b),
            );
        }
    }
}

/// Trains the scores of `state` with every parameter of the image classifier behind `target`
/// frozen, from `state.epoch` to `spec.train.epochs`, unless `on_epoch` breaks. Data order is the
/// run's, epoch by epoch; the training clock is untouched, and the weights are exactly their values
/// before the call whenever `on_epoch` runs and after.
///
/// After each epoch the subnetwork ([`SearchState::subnetwork`]) is evaluated on the untrained
/// weights, the loss, learning rate and accuracy are recorded (split `edge-popup`, at the search's
/// step and epoch) and the hook is called.
pub fn search_scores(
    target: &mut dyn PruneTarget,
    spec: &SearchSpec,
    state: &mut SearchState,
    on_epoch: &mut SearchHook<'_>,
) -> Result<(), PruneError> {
    let mut scored = upload_state(image(target)?, state)?;
    let tc = &spec.train;
    let mut result = Ok(());
    while state.epoch < tc.epochs {
        let task = image(target)?;
        let spe = task.steps_per_epoch();
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        let mut lr = 0.0;
        for b in task.train_batches(state.epoch) {
            lr = lr_at(tc, state.step, spe);
            let batch_loss = step(task, spec, &mut scored, &b, state, lr)?;
            loss_sum += batch_loss * b.len as f64;
            seen += b.len;
            state.step += 1;
        }
        state.epoch += 1;
        restore(task, &scored);
        download_state(&scored, state);
        let subnet = state.subnetwork(spec.density, spec.scope)?;
        let (_, accuracy) = target.evaluate(&subnet)?;
        let report = SearchReport {
            epoch: state.epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            lr,
            accuracy,
        };
        image(target)?.set_record_clock(Some((state.step, state.epoch)));
        for (metric, value) in [
            ("loss", report.train_loss),
            ("lr", report.lr),
            ("accuracy", report.accuracy),
        ] {
            target.record("edge-popup", metric, value);
        }
        let hooked = on_epoch(&report, state, target);
        image(target)?.set_record_clock(None);
        match hooked {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    restore(image(target)?, &scored);
    result
}
