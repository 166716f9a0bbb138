//! Score mining with frozen weights: [`mine_scores`], on an image classifier.
//!
//! Everything of a step stays on the device: the effective weights `w₀ ⊙ 1[s > t] ⊙ flag` are
//! written into the model, the loss is differentiated with respect to them, and the straight-through
//! score gradient `∂L/∂w_eff ⊙ w₀ ⊙ flag` (plus the penalty's) drives a hand-written SGD or Adam
//! step on the flat score tensors, followed by the clamp to [0, 1]. Nothing of the model is
//! trained; before every epoch report the weights are put back to `w₀`.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use burn::module::ParamId;
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::plugin::{PruneTarget, capability, family_mut};
use lottery_core::{FlatTensor, Mask, MaskSet, ParamValues, PruneError};
use lottery_models::view::ViewEntry;
use lottery_train::schedule::lr_at;
use lottery_train::task::take_flat_gradient;
use lottery_train::{DeviceFlat, ImageTask};
use serde::{Deserialize, Serialize};

/// Adam's constants, as PyTorch's defaults.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// The penalty on trainable scores (Gem-Miner's `regularization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorePenalty {
    /// `λ·Σ s²` (gradient `2λs`), the reference's choice.
    #[default]
    L2,
    /// `λ·Σ |s|` (gradient `λ·sign(s)`).
    L1,
}

/// How [`mine_scores`] trains scores with the weights frozen.
#[derive(Debug, Clone, PartialEq)]
pub struct MiningSpec {
    /// Optimiser (PyTorch's SGD or Adam semantics), learning rate, weight decay and schedule of the
    /// scores; `epochs` is the length of the mining (the schedule's horizon).
    pub train: TrainSection,
    /// The penalty added to the loss.
    pub penalty: ScorePenalty,
    /// λ, the penalty's strength.
    pub strength: f64,
    /// A weight takes part in the forward pass when its score exceeds this and it is flagged.
    pub threshold: f32,
}

/// Where a score mining stands after a whole epoch: everything needed to continue it exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct MiningState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: usize,
    /// One score in [0, 1] per prunable weight (PyTorch names and layout).
    pub scores: ParamValues,
    /// Weights still eligible; a weight without its flag is out of the forward pass whatever its
    /// score, and its score gets no gradient from the loss.
    pub flags: MaskSet,
    /// The optimiser's moments, `momentum/<name>` (SGD) or `m/<name>` and `v/<name>` (Adam);
    /// empty before the first step.
    pub moments: ParamValues,
}

impl MiningState {
    /// The mask of the forward pass: score above `threshold`, and flagged.
    pub fn rounded(&self, threshold: f32) -> MaskSet {
        let mut out = MaskSet::new();
        for (name, flag) in self.flags.iter() {
            let keep = match self.scores.get(name) {
                Some(s) => s
                    .values
                    .iter()
                    .zip(&flag.keep)
                    .map(|(&v, &f)| f && v > threshold)
                    .collect(),
                None => vec![false; flag.keep.len()],
            };
            out.insert(
                name.clone(),
                Mask {
                    shape: flag.shape.clone(),
                    keep,
                },
            );
        }
        out
    }
}

/// One epoch of score mining, as [`mine_scores`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct MiningReport {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's batches (without the penalty).
    pub train_loss: f64,
    /// The penalty at the end of the epoch (λ included).
    pub penalty: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Density of the rounded subnetwork (score above the threshold and flagged).
    pub rounded_density: f64,
    /// Test accuracy of the rounded subnetwork on the untrained weights.
    pub rounded_accuracy: f64,
}

/// What [`mine_scores`] calls after each epoch: the report, the state (whose flags, and scores, the
/// hook may change before the next epoch), and the target the mining was given (to record, read
/// values and save; rows it records carry the mining's step and epoch).
pub type MiningHook<'a> = dyn FnMut(
        &MiningReport,
        &mut MiningState,
        &mut dyn PruneTarget,
    ) -> Result<ControlFlow<()>, PruneError>
    + 'a;

/// The image classifier behind the target: the weights a forward pass uses, the run's batches and
/// one batch's gradients are what only that family offers.
fn image(target: &mut dyn PruneTarget) -> Result<&mut ImageTask, PruneError> {
    family_mut::<ImageTask>(target, "gem-miner", capability::IMAGE)
}

fn target_err(e: impl ToString) -> PruneError {
    PruneError::Target(e.to_string())
}

/// One prunable weight on the device: its entry, and flat tensors in burn's layout.
struct Mined {
    entry: ViewEntry,
    w0: DeviceFlat,
    score: DeviceFlat,
    flag: DeviceFlat,
    /// SGD: the momentum buffer; Adam: the first moment.
    first: Option<DeviceFlat>,
    /// Adam: the second moment.
    second: Option<DeviceFlat>,
}

fn mask_of(m: &Mask) -> FlatTensor {
    FlatTensor::new(m.shape.clone(), m.as_f32())
}

/// Writes `w₀ ⊙ mask` (or `w₀` with no mask) into the model's mined weights.
fn write_mined(
    task: &mut ImageTask,
    mined: &[Mined],
    masks: Option<&HashMap<ParamId, DeviceFlat>>,
) {
    task.write_masked_weights(mined.iter().map(|m| (m.entry.id, &m.w0)), masks);
}

/// Puts the weights back to `w₀` and applies batch norm's pending statistics.
fn restore(task: &mut ImageTask, mined: &[Mined]) {
    task.restore_frozen_weights(mined.iter().map(|m| (m.entry.id, &m.w0)));
}

/// The state's scores, flags and moments on the device, with each weight's `w₀`.
fn upload_state(
    task: &mut ImageTask,
    spec: &MiningSpec,
    state: &MiningState,
) -> Result<Vec<Mined>, PruneError> {
    task.settle();
    let entries: BTreeMap<String, ViewEntry> = task
        .param_entries()
        .into_iter()
        .map(|e| (e.info.name.clone(), e))
        .collect();
    let names: Vec<String> = state.scores.keys().cloned().collect();
    let w0_host = PruneTarget::values(task, &names)?;
    let mut mined = Vec::with_capacity(names.len());
    for name in &names {
        let entry = entries
            .get(name)
            .ok_or_else(|| target_err(format!("scores for {name}, which the model has not")))?
            .clone();
        let score = &state.scores[name];
        let flag = state
            .flags
            .get(name)
            .ok_or_else(|| target_err(format!("no flags for {name}")))?;
        if score.shape != entry.info.shape || flag.shape != entry.info.shape {
            return Err(target_err(format!(
                "{name}: scores {:?} and flags {:?} for a parameter of shape {:?}",
                score.shape, flag.shape, entry.info.shape
            )));
        }
        let moment = |key: &str| -> Result<Option<DeviceFlat>, PruneError> {
            state
                .moments
                .get(&format!("{key}/{name}"))
                .map(|v| task.upload_flat(&entry, v))
                .transpose()
        };
        let (first, second) = match spec.train.optimizer {
            OptimizerKind::Sgd => (moment("momentum")?, None),
            OptimizerKind::Adam => (moment("m")?, moment("v")?),
        };
        mined.push(Mined {
            w0: task.upload_flat(&entry, &w0_host[name])?,
            score: task.upload_flat(&entry, score)?,
            flag: task.upload_flat(&entry, &mask_of(flag))?,
            first,
            second,
            entry,
        });
    }
    Ok(mined)
}

/// One optimiser step of the scores on one batch; the loss of the batch (before the step).
fn step(
    task: &mut ImageTask,
    spec: &MiningSpec,
    mined: &mut [Mined],
    batch: &lottery_data::Batch,
    state: &MiningState,
    lr: f64,
) -> Result<f64, PruneError> {
    let tc = &spec.train;
    let lambda = spec.strength;
    let masks: HashMap<ParamId, DeviceFlat> = mined
        .iter()
        .map(|m| {
            let keep = m.score.clone().greater_elem(spec.threshold).float();
            (m.entry.id, keep.mul(m.flag.clone()))
        })
        .collect();
    write_mined(task, mined, Some(&masks));
    let (batch_loss, mut grads) = task.batch_loss_gradients(batch);
    if let Err(e) = PruneError::check_loss(batch_loss, state.epoch + 1, state.step + 1) {
        // The weights go back to w₀, as after any mining.
        restore(task, mined);
        return Err(e);
    }
    let t = state.step as i32 + 1;
    for m in mined.iter_mut() {
        // Straight through the rounding: ∂L/∂s = ∂L/∂w_eff ⊙ w₀ ⊙ flag.
        let mut g = match take_flat_gradient(&mut grads, &m.entry) {
            Some(g) => g.mul(m.w0.clone()).mul(m.flag.clone()),
            None => m.score.zeros_like(),
        };
        if lambda > 0.0 {
            g = match spec.penalty {
                ScorePenalty::L2 => g.add(m.score.clone().mul_scalar(2.0 * lambda)),
                ScorePenalty::L1 => g.add(m.score.clone().sign().mul_scalar(lambda)),
            };
        }
        if tc.weight_decay > 0.0 {
            g = g.add(m.score.clone().mul_scalar(tc.weight_decay));
        }
        let update = match tc.optimizer {
            OptimizerKind::Sgd if tc.momentum > 0.0 => {
                let buf = match m.first.take() {
                    Some(b) => b.mul_scalar(tc.momentum).add(g.clone()),
                    None => g.clone(),
                };
                m.first = Some(buf.clone());
                if tc.nesterov {
                    g.add(buf.mul_scalar(tc.momentum))
                } else {
                    buf
                }
            }
            OptimizerKind::Sgd => g,
            OptimizerKind::Adam => {
                let first = match m.first.take() {
                    Some(a) => a.mul_scalar(BETA1).add(g.clone().mul_scalar(1.0 - BETA1)),
                    None => g.clone().mul_scalar(1.0 - BETA1),
                };
                let g2 = g.clone().mul(g).mul_scalar(1.0 - BETA2);
                let second = match m.second.take() {
                    Some(v) => v.mul_scalar(BETA2).add(g2),
                    None => g2,
                };
                let c1 = 1.0 - BETA1.powi(t);
                let c2 = 1.0 - BETA2.powi(t);
                let denom = second
                    .clone()
                    .sqrt()
                    .div_scalar(c2.sqrt())
                    .add_scalar(ADAM_EPS);
                m.first = Some(first.clone());
                m.second = Some(second);
                first.div(denom).div_scalar(c1)
            }
        };
        m.score = m.score.clone().sub(update.mul_scalar(lr)).clamp(0.0, 1.0);
    }
    Ok(batch_loss)
}

/// Scores and moments back to the host after an epoch; the penalty of the scores (λ not applied).
fn download_state(spec: &MiningSpec, mined: &[Mined], state: &mut MiningState) -> f64 {
    let mut penalty = 0.0;
    for m in mined {
        state.scores.insert(
            m.entry.info.name.clone(),
            ImageTask::download_flat(&m.entry, &m.score),
        );
        let name = &m.entry.info.name;
        match (spec.train.optimizer, &m.first, &m.second) {
            (OptimizerKind::Sgd, Some(b), _) => {
                state.moments.insert(
                    format!("momentum/{name}"),
                    ImageTask::download_flat(&m.entry, b),
                );
            }
            (OptimizerKind::Adam, Some(a), Some(v)) => {
                state
                    .moments
                    .insert(format!("m/{name}"), ImageTask::download_flat(&m.entry, a));
                state
                    .moments
                    .insert(format!("v/{name}"), ImageTask::download_flat(&m.entry, v));
            }
            _ => {}
        }
        let s = &state.scores[name].values;
        penalty += match spec.penalty {
            ScorePenalty::L2 => s.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>(),
            ScorePenalty::L1 => s.iter().map(|&v| (v as f64).abs()).sum::<f64>(),
        };
    }
    penalty
}

/// Trains the scores of `state` with every parameter of the image classifier behind `target`
/// frozen, from `state.epoch` to `spec.train.epochs`, unless `on_epoch` breaks: each step's forward
/// uses the weights times their rounded, flagged scores (batch norm in training mode, its running
/// statistics updated), the gradient passes straight through the rounding to the scores (none to
/// unflagged ones), the penalty's gradient is added, the optimiser steps, and the scores are
/// clamped to [0, 1]. Data order is the run's, epoch by epoch; the training clock is untouched.
/// The weights are exactly their values before the call whenever `on_epoch` runs and after.
///
/// After each epoch, the rounded network's test accuracy is taken, the report's rows are recorded
/// (split `mining`, at the mining's step and epoch) and the hook is called, all through `target`
/// itself; only the steps reach the image classifier behind it.
pub fn mine_scores(
    target: &mut dyn PruneTarget,
    spec: &MiningSpec,
    state: &mut MiningState,
    on_epoch: &mut MiningHook<'_>,
) -> Result<(), PruneError> {
    let mut mined = upload_state(image(target)?, spec, state)?;
    let threshold = spec.threshold;
    let lambda = spec.strength;
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
            let batch_loss = step(task, spec, &mut mined, &b, state, lr)?;
            loss_sum += batch_loss * b.len as f64;
            seen += b.len;
            state.step += 1;
        }
        state.epoch += 1;
        // The report: weights back to w₀, scores and moments to the host.
        restore(task, &mined);
        let penalty = download_state(spec, &mined, state);
        let rounded = state.rounded(threshold);
        let (_, accuracy) = target.evaluate(&rounded)?;
        let report = MiningReport {
            epoch: state.epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            penalty: lambda * penalty,
            lr,
            rounded_density: rounded.density(),
            rounded_accuracy: accuracy,
        };
        // Rows recorded now, by this loop and by the hook, carry the mining's step and epoch.
        image(target)?.set_record_clock(Some((state.step, state.epoch)));
        for (metric, value) in [
            ("loss", report.train_loss),
            ("penalty", report.penalty),
            ("lr", report.lr),
            ("rounded-density", report.rounded_density),
            ("accuracy", report.rounded_accuracy),
        ] {
            target.record("mining", metric, value);
        }
        let hooked = on_epoch(&report, state, target);
        let task = image(target)?;
        task.set_record_clock(None);
        match hooked {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        // The hook may have pruned (flags) or changed scores.
        for m in mined.iter_mut() {
            let name = &m.entry.info.name;
            let flag = state
                .flags
                .get(name)
                .ok_or_else(|| target_err(format!("the hook dropped the flags of {name}")))?;
            m.flag = task.upload_flat(&m.entry, &mask_of(flag))?;
            m.score = task.upload_flat(&m.entry, &state.scores[name])?;
        }
    }
    restore(image(target)?, &mined);
    result
}
