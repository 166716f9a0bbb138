//! Score mining with frozen weights (Gem-Miner): [`PruneTarget::mine_scores`] for the image task.
//!
//! Everything of a step stays on the device: the effective weights `w₀ ⊙ 1[s > t] ⊙ flag` are
//! written into the model, the loss is differentiated with respect to them, and the straight-through
//! score gradient `∂L/∂w_eff ⊙ w₀ ⊙ flag` (plus the penalty's) drives a hand-written SGD or Adam
//! step on the flat score tensors, followed by the clamp to [0, 1]. Nothing of the model is
//! trained; before every epoch report the weights are put back to `w₀`.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use lottery_core::backend::{Backend as InnerBackend, TrainBackend};
use lottery_core::config::OptimizerKind;
use lottery_core::plugin::{MiningHook, MiningReport, MiningSpec, MiningState};
use lottery_core::{Mask, ParamValues, PruneError, ScorePenalty};
use lottery_data::batches;
use lottery_models::view::{self, ViewEntry};

use super::{ImageTask, batch_tensors, loss_and_correct};
use crate::schedule::lr_at;

type Flat = Tensor<InnerBackend, 1>;

/// Adam's constants, as PyTorch's defaults.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// One prunable weight on the device: its entry, and flat tensors in burn's layout.
struct Mined {
    entry: ViewEntry,
    w0: Flat,
    score: Flat,
    flag: Flat,
    /// SGD: the momentum buffer; Adam: the first moment.
    first: Option<Flat>,
    /// Adam: the second moment.
    second: Option<Flat>,
}

fn target_err(e: impl ToString) -> PruneError {
    PruneError::Target(e.to_string())
}

/// `value` (PyTorch layout) as a flat tensor in `entry`'s burn layout.
fn upload(
    entry: &ViewEntry,
    value: &lottery_core::FlatTensor,
    device: &lottery_core::backend::Device,
) -> Result<Flat, PruneError> {
    let one = ParamValues::from([(entry.info.name.clone(), value.clone())]);
    let mut on_device =
        view::device_values::<InnerBackend>(std::slice::from_ref(entry), &one, device, DType::F32)
            .map_err(target_err)?;
    let p = on_device
        .remove(&entry.id)
        .ok_or_else(|| target_err(format!("no value for {}", entry.info.name)))?;
    let n = entry.info.numel();
    Ok(Tensor::from_primitive(TensorPrimitive::Float(
        InnerBackend::float_reshape(p, Shape::new([n])),
    )))
}

/// A flat burn-layout tensor back as a value in PyTorch's layout.
fn download(entry: &ViewEntry, t: &Flat) -> lottery_core::FlatTensor {
    let data: Vec<f32> = t
        .to_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 tensor data");
    view::torch_layout(entry, data)
}

fn mask_of(m: &Mask) -> lottery_core::FlatTensor {
    lottery_core::FlatTensor::new(m.shape.clone(), m.as_f32())
}

/// The gradient of the parameter `id` of rank `rank`, flattened.
fn flat_grad(grads: &mut GradientsParams, id: ParamId, rank: usize) -> Option<Flat> {
    fn take<const D: usize>(grads: &mut GradientsParams, id: ParamId) -> Option<Flat> {
        grads.remove::<InnerBackend, D>(id).map(|g| {
            let n = g.shape().num_elements();
            g.reshape([n])
        })
    }
    match rank {
        1 => take::<1>(grads, id),
        2 => take::<2>(grads, id),
        3 => take::<3>(grads, id),
        4 => take::<4>(grads, id),
        _ => None,
    }
}

impl ImageTask {
    /// Writes `w₀ ⊙ mask` (or `w₀` with no mask) into the model's mined weights.
    fn write_mined(&mut self, mined: &[Mined], masks: Option<&HashMap<ParamId, Flat>>) {
        let by_id: HashMap<ParamId, Flat> = mined
            .iter()
            .map(|m| {
                let w = match masks.and_then(|ms| ms.get(&m.entry.id)) {
                    Some(mask) => m.w0.clone().mul(mask.clone()),
                    None => m.w0.clone(),
                };
                (m.entry.id, w)
            })
            .collect();
        let model = self.model.clone();
        self.model = view::map_inner_where::<TrainBackend, _>(
            model,
            &|id| by_id.contains_key(id),
            &mut |id, old| {
                let shape = old.shape();
                let flat = by_id[id].clone().into_primitive().tensor();
                InnerBackend::float_reshape(flat, shape)
            },
        );
    }

    /// The mining loop behind [`PruneTarget::mine_scores`].
    pub(super) fn mine(
        &mut self,
        spec: &MiningSpec,
        state: &mut MiningState,
        on_epoch: &mut MiningHook<'_>,
    ) -> Result<(), PruneError> {
        self.linearized = None;
        self.settle();
        let entries: BTreeMap<String, ViewEntry> =
            view::entries::<TrainBackend, _>(&self.model, &self.naming)
                .into_iter()
                .map(|e| (e.info.name.clone(), e))
                .collect();
        let names: Vec<String> = state.scores.keys().cloned().collect();
        let w0_host = view::values::<TrainBackend, _>(&self.model, &self.naming, &names);
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
            let moment = |key: &str| -> Result<Option<Flat>, PruneError> {
                state
                    .moments
                    .get(&format!("{key}/{name}"))
                    .map(|v| upload(&entry, v, &self.device))
                    .transpose()
            };
            let (first, second) = match spec.train.optimizer {
                OptimizerKind::Sgd => (moment("momentum")?, None),
                OptimizerKind::Adam => (moment("m")?, moment("v")?),
            };
            mined.push(Mined {
                w0: upload(&entry, &w0_host[name], &self.device)?,
                score: upload(&entry, score, &self.device)?,
                flag: upload(&entry, &mask_of(flag), &self.device)?,
                first,
                second,
                entry,
            });
        }

        let shape = self.data.shape;
        let spe = self.steps_per_epoch();
        let threshold = spec.threshold;
        let lambda = spec.strength;
        let tc = &spec.train;
        let mut result = Ok(());
        while state.epoch < tc.epochs {
            let mut loss_sum = 0.0;
            let mut seen = 0usize;
            let mut lr = 0.0;
            for b in batches(
                &self.data.train,
                shape,
                self.batch_size,
                Some((self.seed, state.epoch as u64)),
                self.augment,
            ) {
                lr = lr_at(tc, state.step, spe);
                let masks: HashMap<ParamId, Flat> = mined
                    .iter()
                    .map(|m| {
                        let keep = m.score.clone().greater_elem(threshold).float();
                        (m.entry.id, keep.mul(m.flag.clone()))
                    })
                    .collect();
                self.write_mined(&mined, Some(&masks));
                let (x, y) = batch_tensors::<TrainBackend>(&b, shape, &self.device);
                let logits = self.model.forward(x);
                let (loss, _) = loss_and_correct(logits, y);
                let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
                let batch_loss = loss.into_scalar().elem::<f64>();
                if let Err(e) = PruneError::check_loss(batch_loss, state.epoch + 1, state.step + 1)
                {
                    // The weights go back to w₀, as after any mining.
                    self.write_mined(&mined, None);
                    self.settle();
                    return Err(e);
                }
                loss_sum += batch_loss * b.len as f64;
                seen += b.len;
                let t = state.step as i32 + 1;
                for m in mined.iter_mut() {
                    let rank = m.entry.info.shape.len();
                    // Straight through the rounding: ∂L/∂s = ∂L/∂w_eff ⊙ w₀ ⊙ flag.
                    let mut g = match flat_grad(&mut grads, m.entry.id, rank) {
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
                                Some(a) => {
                                    a.mul_scalar(BETA1).add(g.clone().mul_scalar(1.0 - BETA1))
                                }
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
                state.step += 1;
            }
            state.epoch += 1;
            // The report: weights back to w₀, scores and moments to the host.
            self.write_mined(&mined, None);
            self.settle();
            let mut penalty = 0.0;
            for m in &mined {
                state
                    .scores
                    .insert(m.entry.info.name.clone(), download(&m.entry, &m.score));
                let name = &m.entry.info.name;
                match (tc.optimizer, &m.first, &m.second) {
                    (OptimizerKind::Sgd, Some(b), _) => {
                        state
                            .moments
                            .insert(format!("momentum/{name}"), download(&m.entry, b));
                    }
                    (OptimizerKind::Adam, Some(a), Some(v)) => {
                        state
                            .moments
                            .insert(format!("m/{name}"), download(&m.entry, a));
                        state
                            .moments
                            .insert(format!("v/{name}"), download(&m.entry, v));
                    }
                    _ => {}
                }
                let s = &state.scores[name].values;
                penalty += match spec.penalty {
                    ScorePenalty::L2 => s.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>(),
                    ScorePenalty::L1 => s.iter().map(|&v| (v as f64).abs()).sum::<f64>(),
                };
            }
            let rounded = state.rounded(threshold);
            let (_, accuracy) = ImageTask::evaluate(self, &rounded);
            let report = MiningReport {
                epoch: state.epoch,
                train_loss: loss_sum / seen.max(1) as f64,
                penalty: lambda * penalty,
                lr,
                rounded_density: rounded.density(),
                rounded_accuracy: accuracy,
            };
            // Rows recorded now, by this loop and by the hook, carry the mining's step and epoch.
            let clock = (self.step, self.epochs_done);
            (self.step, self.epochs_done) = (state.step, state.epoch);
            for (metric, value) in [
                ("loss", report.train_loss),
                ("penalty", report.penalty),
                ("lr", report.lr),
                ("rounded-density", report.rounded_density),
                ("accuracy", report.rounded_accuracy),
            ] {
                self.record("mining", metric, value);
            }
            let hooked = on_epoch(&report, state, self);
            (self.step, self.epochs_done) = clock;
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
                m.flag = upload(&m.entry, &mask_of(flag), &self.device)?;
                m.score = upload(&m.entry, &state.scores[name], &self.device)?;
            }
        }
        self.write_mined(&mined, None);
        self.settle();
        result
    }
}
