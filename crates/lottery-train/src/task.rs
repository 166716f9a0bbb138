//! The image-classification task: a model, its data, its trainer.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use indicatif::ProgressBar;
use lottery_core::backend::{Backend as InnerBackend, TrainBackend};
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::plugin::EpochReport;
use lottery_core::{MaskSet, ParamInfo, ParamValues, PruneError, PruneTarget};
use lottery_data::{Batch, ImageDataset, ImageShape, batches};
use lottery_models::{DeviceMasks, ImageModel, Naming, TrainDevice, view};

use crate::schedule::lr_at;

/// One metric observation, in the long form of `metrics.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Optimiser steps so far.
    pub step: u64,
    /// Epoch (1-based; 0 before training).
    pub epoch: u64,
    /// `train` or `test`.
    pub split: String,
    /// `loss`, `accuracy`, `lr`, `density`.
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// Weights saved at chosen optimiser steps (0 is θ₀): the rewind points of IMP.
pub type Checkpoints = BTreeMap<usize, ParamValues>;

/// Errors of the task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A model or view error.
    #[error("{0}")]
    Model(String),
}

/// A model with its data and training settings.
pub struct ImageTask {
    model: ImageModel<TrainBackend>,
    naming: Naming,
    data: Arc<ImageDataset>,
    train_cfg: TrainSection,
    batch_size: usize,
    augment: bool,
    seed: u64,
    device: TrainDevice,
    step: usize,
    epochs_done: usize,
    checkpoints: Checkpoints,
    metrics: Vec<MetricRow>,
    progress: ProgressBar,
}

impl ImageTask {
    /// A task over an initialised model.
    pub fn new(
        model: ImageModel<TrainBackend>,
        data: Arc<ImageDataset>,
        train_cfg: TrainSection,
        batch_size: usize,
        augment: bool,
        seed: u64,
        device: TrainDevice,
    ) -> Self {
        let naming = model.naming();
        Self {
            model,
            naming,
            data,
            train_cfg,
            batch_size,
            augment,
            seed,
            device,
            step: 0,
            epochs_done: 0,
            checkpoints: Checkpoints::new(),
            metrics: vec![],
            progress: ProgressBar::hidden(),
        }
    }

    /// Shows training progress on `bar`.
    pub fn with_progress(mut self, bar: ProgressBar) -> Self {
        self.progress = bar;
        self
    }

    /// The model.
    pub fn model(&self) -> &ImageModel<TrainBackend> {
        &self.model
    }

    /// The model's PyTorch naming.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// Metrics recorded so far.
    pub fn metrics(&self) -> &[MetricRow] {
        &self.metrics
    }

    /// Records a metric at the current step.
    pub fn record(&mut self, split: &str, metric: &str, value: f64) {
        self.metrics.push(MetricRow {
            step: self.step as u64,
            epoch: self.epochs_done as u64,
            split: split.into(),
            metric: metric.into(),
            value,
        });
    }

    /// Weights saved at the configured checkpoint steps.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Every parameter's values (PyTorch names and layout).
    pub fn all_values(&self) -> ParamValues {
        let names: Vec<String> = self.params().into_iter().map(|p| p.name).collect();
        view::values::<TrainBackend, _>(&self.model, &self.naming, &names)
    }

    /// Loss and accuracy of the model on the test split, batch norm in evaluation mode.
    pub fn evaluate(&self, mask: &MaskSet) -> (f64, f64) {
        let inner: ImageModel<InnerBackend> = self.model.valid();
        let masks = DeviceMasks::<InnerBackend>::new(&inner, &self.naming, mask, &self.device);
        let inner = masks.apply(inner);
        let shape = self.data.shape;
        let mut loss_sum = 0.0;
        let mut correct = 0usize;
        let mut n = 0usize;
        for b in batches(
            &self.data.test,
            shape,
            self.batch_size.max(256),
            None,
            false,
        ) {
            let (x, y) = batch_tensors::<InnerBackend>(&b, shape, &self.device);
            let logits = inner.forward(x);
            let (l, c) = loss_and_correct(logits, y);
            loss_sum += l.into_scalar().elem::<f64>() * b.len as f64;
            correct += c.into_scalar().elem::<i64>() as usize;
            n += b.len;
        }
        (loss_sum / n.max(1) as f64, correct as f64 / n.max(1) as f64)
    }

    /// Masks on the inner backend, keyed by the autodiff model's parameter ids.
    fn train_masks(&self, mask: &MaskSet) -> DeviceMasks<InnerBackend> {
        DeviceMasks::from_entries(
            &view::entries::<TrainBackend, _>(&self.model, &self.naming),
            mask,
            &self.device,
        )
    }

    fn train_with<O: Optimizer<ImageModel<TrainBackend>, TrainBackend>>(
        &mut self,
        mut optim: O,
        mask: &MaskSet,
        epochs: usize,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) {
        let masks = self.train_masks(mask);
        self.model = masks.apply_autodiff::<TrainBackend, _>(self.model.clone());
        let shape = self.data.shape;
        let steps_per_epoch = self.data.train.len().div_ceil(self.batch_size);
        self.progress.set_length((epochs * steps_per_epoch) as u64);
        self.progress.set_position(0);
        if self.train_cfg.checkpoints.contains(&self.step) {
            let v = self.all_values();
            self.checkpoints.insert(self.step, v);
        }
        for _ in 0..epochs {
            let epoch = self.epochs_done;
            let mut loss_sum = 0.0;
            let mut correct = 0usize;
            let mut seen = 0usize;
            let mut lr = 0.0;
            for b in batches(
                &self.data.train,
                shape,
                self.batch_size,
                Some((self.seed, epoch as u64)),
                self.augment,
            ) {
                lr = lr_at(&self.train_cfg, self.step, steps_per_epoch);
                let (x, y) = batch_tensors::<TrainBackend>(&b, shape, &self.device);
                let logits = self.model.forward(x);
                let (loss, c) = loss_and_correct(logits, y);
                let grads = GradientsParams::from_grads(loss.backward(), &self.model);
                loss_sum += loss.into_scalar().elem::<f64>() * b.len as f64;
                correct += c.into_scalar().elem::<i64>() as usize;
                seen += b.len;
                self.model = masks.apply_autodiff::<TrainBackend, _>(optim.step(
                    lr,
                    self.model.clone(),
                    grads,
                ));
                self.step += 1;
                self.progress.inc(1);
                if self.train_cfg.checkpoints.contains(&self.step) {
                    let v = self.all_values();
                    self.checkpoints.insert(self.step, v);
                }
            }
            self.epochs_done += 1;
            let (test_loss, test_acc) = self.evaluate(mask);
            let report = EpochReport {
                epoch: self.epochs_done,
                step: self.step,
                train_loss: loss_sum / seen.max(1) as f64,
                train_accuracy: correct as f64 / seen.max(1) as f64,
                test_loss: Some(test_loss),
                test_accuracy: Some(test_acc),
                lr,
            };
            self.record("train", "loss", report.train_loss);
            self.record("train", "accuracy", report.train_accuracy);
            self.record("train", "lr", lr);
            self.record("test", "loss", test_loss);
            self.record("test", "accuracy", test_acc);
            tracing::debug!(
                epoch = report.epoch,
                train_loss = report.train_loss,
                test_accuracy = test_acc,
                "epoch done"
            );
            on_epoch(&report);
        }
    }
}

/// A host batch as backend tensors: images `[n, C, H, W]` and labels `[n]`.
pub fn batch_tensors<B: Backend>(
    b: &Batch,
    shape: ImageShape,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let x = Tensor::from_data(
        TensorData::new(
            b.images.clone(),
            [b.len, shape.channels, shape.height, shape.width],
        ),
        device,
    );
    let y = Tensor::from_data(TensorData::new(b.labels.clone(), [b.len]), device);
    (x, y)
}

/// Mean cross-entropy of `logits` against `y`, and the number of correct argmax predictions.
pub fn loss_and_correct<B: Backend>(
    logits: Tensor<B, 2>,
    y: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, Tensor<B, 1, Int>) {
    let pred = logits.clone().argmax(1).squeeze_dim::<1>(1);
    let correct = pred.equal(y.clone()).int().sum();
    let logp = log_softmax(logits, 1);
    let picked = logp.gather(1, y.unsqueeze_dim(1));
    (picked.mean().neg(), correct)
}

impl PruneTarget for ImageTask {
    fn params(&self) -> Vec<ParamInfo> {
        view::entries::<TrainBackend, _>(&self.model, &self.naming)
            .into_iter()
            .map(|e| e.info)
            .collect()
    }

    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError> {
        Ok(view::values::<TrainBackend, _>(
            &self.model,
            &self.naming,
            names,
        ))
    }

    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError> {
        self.model = view::set_values::<TrainBackend, _>(self.model.clone(), &self.naming, values)
            .map_err(|e| PruneError::Target(e.to_string()))?;
        Ok(())
    }

    fn loss_gradients(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        n_batches: usize,
    ) -> Result<ParamValues, PruneError> {
        let masks = self.train_masks(mask);
        let model = masks.apply_autodiff::<TrainBackend, _>(self.model.clone());
        let shape = self.data.shape;
        let all = batches(
            &self.data.train,
            shape,
            self.batch_size,
            Some((self.seed, 0)),
            false,
        );
        let used: Vec<_> = all.into_iter().take(n_batches.max(1)).collect();
        let k = used.len() as f64;
        let mut total: Option<Tensor<TrainBackend, 1>> = None;
        for b in used {
            let (x, y) = batch_tensors::<TrainBackend>(&b, shape, &self.device);
            let (loss, _) = loss_and_correct(model.forward(x), y);
            let loss = loss.div_scalar(k);
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
        }
        let total = total.ok_or_else(|| PruneError::Target("no training batches".into()))?;
        let grads = GradientsParams::from_grads(total.backward(), &model);
        Ok(view::gradients::<TrainBackend, _>(
            &model,
            &self.naming,
            &grads,
            names,
        ))
    }

    fn train(
        &mut self,
        mask: &MaskSet,
        epochs: usize,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<(), PruneError> {
        let c = &self.train_cfg;
        let wd = (c.weight_decay > 0.0).then(|| WeightDecayConfig::new(c.weight_decay as f32));
        match c.optimizer {
            OptimizerKind::Sgd => {
                let momentum = (c.momentum > 0.0).then_some(MomentumConfig {
                    momentum: c.momentum,
                    dampening: 0.0,
                    nesterov: c.nesterov,
                });
                let optim = SgdConfig::new()
                    .with_momentum(momentum)
                    .with_weight_decay(wd)
                    .init();
                self.train_with(optim, mask, epochs, on_epoch);
            }
            OptimizerKind::Adam => {
                let optim = AdamConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(wd)
                    .init();
                self.train_with(optim, mask, epochs, on_epoch);
            }
        }
        Ok(())
    }
}

/// The mean training loss over the first `n_batches` batches of the run's data order (no
/// augmentation, batch norm in training mode): the function [`PruneTarget::loss_gradients`]
/// differentiates. Returns the loss and the number of examples.
pub fn batch_loss(task: &ImageTask, n_batches: usize) -> (f64, usize) {
    let shape = task.data.shape;
    let used: Vec<_> = batches(
        &task.data.train,
        shape,
        task.batch_size,
        Some((task.seed, 0)),
        false,
    )
    .into_iter()
    .take(n_batches.max(1))
    .collect();
    let k = used.len() as f64;
    let mut total = 0.0;
    let mut n = 0;
    for b in used {
        let (x, y) = batch_tensors::<TrainBackend>(&b, shape, &task.device);
        let (loss, _) = loss_and_correct(task.model.forward(x), y);
        total += loss.into_scalar().elem::<f64>() / k;
        n += b.len;
    }
    (total, n)
}
