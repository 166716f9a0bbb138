//! For methods that compute the weights a forward pass uses (trainable scores with frozen weights,
//! edge-popup): the model's parameters as flat device tensors, written in place of its weights for
//! a forward, the run's training batches, and the loss and gradients of one batch. The method owns
//! its math (what it writes, how it steps); the task owns the model, the data and the records.

use std::collections::HashMap;

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use lottery_core::backend::{Backend as InnerBackend, TrainBackend};
use lottery_core::{FlatTensor, ParamValues, PruneError};
use lottery_data::{Batch, batches};
use lottery_models::view::{self, ViewEntry};

use super::{ImageTask, batch_tensors, loss_and_correct};

/// One parameter on the device, flattened in burn's layout (linear weights transposed).
pub type DeviceFlat = Tensor<InnerBackend, 1>;

fn target_err(e: impl ToString) -> PruneError {
    PruneError::Target(e.to_string())
}

impl ImageTask {
    /// The view entries (PyTorch name, shape and kind, burn's id and layout) of every parameter
    /// and buffer of the model.
    pub fn param_entries(&self) -> Vec<ViewEntry> {
        view::entries::<TrainBackend, _>(&self.model, &self.naming)
    }

    /// `value` (PyTorch layout, the shape of `entry`) as a flat f32 tensor on the task's device,
    /// in burn's layout.
    pub fn upload_flat(
        &self,
        entry: &ViewEntry,
        value: &FlatTensor,
    ) -> Result<DeviceFlat, PruneError> {
        let one = ParamValues::from([(entry.info.name.clone(), value.clone())]);
        let mut on_device = view::device_values::<InnerBackend>(
            std::slice::from_ref(entry),
            &one,
            &self.device,
            DType::F32,
        )
        .map_err(target_err)?;
        let p = on_device
            .remove(&entry.id)
            .ok_or_else(|| target_err(format!("no value for {}", entry.info.name)))?;
        let n = entry.info.numel();
        Ok(Tensor::from_primitive(TensorPrimitive::Float(
            InnerBackend::float_reshape(p, Shape::new([n])),
        )))
    }

    /// A flat tensor in `entry`'s burn layout back on the host, in PyTorch's layout.
    pub fn download_flat(entry: &ViewEntry, t: &DeviceFlat) -> FlatTensor {
        let data: Vec<f32> = t
            .to_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 tensor data");
        view::torch_layout(entry, data)
    }

    /// Overwrites each parameter whose id `weights` holds with that flat tensor (burn's layout,
    /// the parameter's element count); the others stay. Writing back values read before puts the
    /// original weights back.
    pub fn write_weights(&mut self, weights: &HashMap<ParamId, DeviceFlat>) {
        self.linearized = None;
        let model = self.model.clone();
        self.model = view::map_inner_where::<TrainBackend, _>(
            model,
            &|id| weights.contains_key(id),
            &mut |id, old| {
                let shape = old.shape();
                let flat = weights[id].clone().into_primitive().tensor();
                InnerBackend::float_reshape(flat, shape)
            },
        );
    }

    /// Frozen weights under computed masks: puts `w₀ ⊙ mask` (or `w₀` where there is no mask) in
    /// place of each parameter `id` of `frozen`, an `(id, w₀)` pair of flat tensors in burn's
    /// layout, with `masks` keyed by the same ids (score-based masks of Gem-Miner, edge-popup).
    pub fn write_masked_weights<'a>(
        &mut self,
        frozen: impl IntoIterator<Item = (ParamId, &'a DeviceFlat)>,
        masks: Option<&HashMap<ParamId, DeviceFlat>>,
    ) {
        let by_id: HashMap<ParamId, DeviceFlat> = frozen
            .into_iter()
            .map(|(id, w0)| {
                let w = match masks.and_then(|ms| ms.get(&id)) {
                    Some(mask) => w0.clone().mul(mask.clone()),
                    None => w0.clone(),
                };
                (id, w)
            })
            .collect();
        self.write_weights(&by_id);
    }

    /// Puts frozen weights back (`w₀` of each `(id, w₀)`) and applies batch norm's pending
    /// statistics.
    pub fn restore_frozen_weights<'a>(
        &mut self,
        frozen: impl IntoIterator<Item = (ParamId, &'a DeviceFlat)>,
    ) {
        self.write_masked_weights(frozen, None);
        self.settle();
    }

    /// The training batches of the 0-based `epoch`, in the run's order and with its augmentation,
    /// as training draws them.
    pub fn train_batches(&self, epoch: usize) -> Vec<Batch> {
        batches(
            &self.data.train,
            self.data.shape,
            self.batch_size,
            Some((self.seed, epoch as u64)),
            self.augment,
        )
    }

    /// The mean cross-entropy of the model as it stands on `batch` (batch norm in training mode,
    /// its running statistics updated), and its gradients with respect to every parameter.
    pub fn batch_loss_gradients(&mut self, batch: &Batch) -> (f64, GradientsParams) {
        self.linearized = None;
        let (x, y) = batch_tensors::<TrainBackend>(batch, self.data.shape, &self.device);
        let logits = self.model.forward(x);
        let (loss, _) = loss_and_correct(logits, y);
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        (loss.into_scalar().elem::<f64>(), grads)
    }

    /// Rows recorded from now on carry this `(step, epoch)` in place of the training clock's, until
    /// `None` (a method that keeps its own clock, such as a mining of scores). The training clock
    /// itself does not move.
    pub fn set_record_clock(&mut self, clock: Option<(usize, usize)>) {
        self.record_clock = clock;
    }
}

/// Takes the gradient of `entry`'s parameter out of `grads`, flattened in burn's layout; `None` when
/// it has none.
pub fn take_flat_gradient(grads: &mut GradientsParams, entry: &ViewEntry) -> Option<DeviceFlat> {
    fn take<const D: usize>(grads: &mut GradientsParams, id: ParamId) -> Option<DeviceFlat> {
        grads.remove::<InnerBackend, D>(id).map(|g| {
            let n = g.shape().num_elements();
            g.reshape([n])
        })
    }
    match entry.info.shape.len() {
        1 => take::<1>(grads, entry.id),
        2 => take::<2>(grads, entry.id),
        3 => take::<3>(grads, entry.id),
        4 => take::<4>(grads, entry.id),
        _ => None,
    }
}
