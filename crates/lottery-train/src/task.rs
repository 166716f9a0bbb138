//! The image-classification task: a model, its data, its trainer.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::log_softmax;
use burn::tensor::ops::FloatTensorOps;
use indicatif::ProgressBar;
pub use lottery_core::MetricRow;
use lottery_core::backend::{Backend as InnerBackend, TrainBackend};
use lottery_core::config::{NormKind, TrainSection, WeightInit};
use lottery_core::plugin::EpochReport;
use lottery_core::{
    BnMode, LossSpec, MaskSet, ParamInfo, ParamValues, PathFlow, Precision, PruneError,
    PruneTarget, TrainClock,
};
use lottery_data::{Batch, ImageDataset, ImageShape, batches};
use lottery_models::channel_masks::{ChannelGroup, ChannelKeep, NetworkCost};
use lottery_models::view::{ParamValues64, map_inner, to_f32};
use lottery_models::{
    DeviceMasks, ImageModel, InputShape, Naming, Switches, TrainDevice, channels, view,
};

use crate::optim::RunOptimizer;
use crate::resume::{SavedTraining, TrainingSaver, optimizer_bytes, replay, restore_optimizer};
use crate::schedule::lr_at;

mod forward_weights;

pub use forward_weights::{DeviceFlat, take_flat_gradient};

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
    round: usize,
    phase: String,
    checkpoints: Checkpoints,
    metrics: Vec<MetricRow>,
    progress: ProgressBar,
    /// The |θ| network of [`PruneTarget::path_flow`], kept while the weights do not change.
    linearized: Option<(Precision, ImageModel<TrainBackend>)>,
    /// Strength of the L1 penalty on batch-norm scales added to the training loss.
    norm_l1: f64,
    /// Channels kept when training runs on the physically smaller network.
    channels: Option<ChannelKeep>,
    /// How fresh values draw their weights (the random re-initialisation controls).
    init: WeightInit,
    /// Batch norm keeps γ = 1 and β = 0 through training.
    non_affine_norm: bool,
    /// `(step, epoch)` that recorded rows carry in place of the training clock's.
    record_clock: Option<(usize, usize)>,
    /// Also call the training watcher every this many steps between epoch ends.
    watch_every: Option<usize>,
    /// Where trainings save their state to resume from ([`PruneTarget::save_training_in`]).
    saver: Option<TrainingSaver>,
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
            round: 0,
            phase: "ticket".into(),
            checkpoints: Checkpoints::new(),
            metrics: vec![],
            progress: ProgressBar::hidden(),
            linearized: None,
            norm_l1: 0.0,
            channels: None,
            init: WeightInit::KaimingNormal,
            non_affine_norm: false,
            record_clock: None,
            watch_every: None,
            saver: None,
        }
    }

    /// The model's init scheme (for fresh values) and batch-norm kind; a non-affine batch norm has
    /// its scales set to 1 and shifts to 0 now, and kept there after every training step.
    pub fn with_model_options(mut self, init: WeightInit, norm: NormKind) -> Self {
        self.init = init;
        self.non_affine_norm = norm == NormKind::NonAffine;
        if self.non_affine_norm {
            self.reset_norm_affine();
        }
        self
    }

    /// Sets every batch-norm scale to 1 and shift to 0 (the non-affine batch norm).
    fn reset_norm_affine(&mut self) {
        let ids: Vec<(burn::module::ParamId, f32)> =
            view::entries::<TrainBackend, _>(&self.model, &self.naming)
                .into_iter()
                .filter(|e| e.info.kind == lottery_core::ParamKind::Norm)
                .map(|e| {
                    (
                        e.id,
                        if e.info.name.ends_with(".weight") {
                            1.0
                        } else {
                            0.0
                        },
                    )
                })
                .collect();
        if ids.is_empty() {
            return;
        }
        let model = self.model.clone();
        self.model = view::map_inner_where::<TrainBackend, _>(
            model,
            &|id| ids.iter().any(|(i, _)| i == id),
            &mut |id, old| {
                let v = ids
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, v)| *v)
                    .unwrap_or(0.0);
                InnerBackend::float_add_scalar(
                    InnerBackend::float_mul_scalar(old, 0.0f32.into()),
                    v.into(),
                )
            },
        );
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

    /// Records a metric at the current step (or at the clock of [`ImageTask::set_record_clock`]).
    pub fn record(&mut self, split: &str, metric: &str, value: f64) {
        let (step, epoch) = self.record_clock.unwrap_or((self.step, self.epochs_done));
        self.metrics.push(MetricRow {
            round: self.round as u64,
            phase: self.phase.clone(),
            step: step as u64,
            epoch: epoch as u64,
            split: split.into(),
            metric: metric.into(),
            value,
        });
    }

    /// Weights saved at the configured checkpoint steps.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Adds weights saved at checkpoint steps by a training this task did not run (a search
    /// another run trained and shared), replacing any at the same steps.
    pub fn insert_checkpoints(&mut self, saved: Checkpoints) {
        self.checkpoints.extend(saved);
    }

    /// Forgets the weights saved at the checkpoint steps that `keep` refuses (a search shared
    /// with other runs trained past the step this run stops at).
    pub fn retain_checkpoints(&mut self, mut keep: impl FnMut(usize) -> bool) {
        self.checkpoints.retain(|&step, _| keep(step));
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Applies the running-statistics update that burn's batch norm keeps aside after a training
    /// step (a `RunningState` is read and overwritten without it until something syncs it), so that
    /// what is read is the trained network and what is written is not replaced by a stale update.
    pub fn settle(&self) {
        let _ = self.model.valid();
    }

    /// Every parameter's values (PyTorch names and layout).
    pub fn all_values(&self) -> ParamValues {
        self.settle();
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

    /// A copy of the model that shares nothing with it (burn's batch-norm statistics are shared
    /// between clones), its floats stored as `precision`.
    pub fn independent_copy(&self, precision: Precision) -> ImageModel<TrainBackend> {
        let shape = self.data.shape;
        let input = InputShape {
            channels: shape.channels,
            height: shape.height,
            width: shape.width,
        };
        let fresh = self.model.architecture().build_with::<TrainBackend>(
            input,
            self.data.classes,
            self.model.bias_layout(),
            &self.device,
        );
        let copy = view::set_values::<TrainBackend, _>(fresh, &self.naming, &self.all_values())
            .expect("same architecture, same names and shapes");
        match precision {
            Precision::F32 => copy,
            Precision::F64 => map_inner::<TrainBackend, _>(copy, &mut |_, t| {
                InnerBackend::float_cast(t, burn::tensor::FloatDType::F64)
            }),
        }
    }

    /// Masks for `model` (a copy of this task's model) stored as `precision`.
    fn masks_for(
        &self,
        model: &ImageModel<TrainBackend>,
        mask: &MaskSet,
        precision: Precision,
    ) -> DeviceMasks<InnerBackend> {
        DeviceMasks::from_entries_as(
            &view::entries::<TrainBackend, _>(model, &self.naming),
            mask,
            &self.device,
            dtype_of(precision),
        )
    }

    /// The batches a loss query uses: the first `n` of the run's epoch-0 order, no augmentation.
    fn scoring_batches(&self, n: usize) -> Vec<Batch> {
        batches(
            &self.data.train,
            self.data.shape,
            self.batch_size,
            Some((self.seed, 0)),
            false,
        )
        .into_iter()
        .take(n.max(1))
        .collect()
    }

    /// The loss of `spec` on `model` (already masked and in `spec`'s precision), and the number
    /// of examples it is taken over.
    fn spec_loss_tensor(
        &self,
        model: &ImageModel<TrainBackend>,
        spec: &LossSpec,
    ) -> Result<(Tensor<TrainBackend, 1>, usize), PruneError> {
        self.spec_loss_switched(model, spec, &mut Switches::Free)
    }

    /// [`ImageTask::spec_loss_tensor`] with every ReLU and max pool switched as `switches` says.
    fn spec_loss_switched(
        &self,
        model: &ImageModel<TrainBackend>,
        spec: &LossSpec,
        switches: &mut Switches<TrainBackend>,
    ) -> Result<(Tensor<TrainBackend, 1>, usize), PruneError> {
        let used = self.scoring_batches(spec.batches);
        let k = used.len() as f64;
        let mut total: Option<Tensor<TrainBackend, 1>> = None;
        let mut n = 0;
        for b in used {
            let (x, y) = batch_tensors::<TrainBackend>(&b, self.data.shape, &self.device);
            let x = x.cast(dtype_of(spec.precision));
            let logits = model.forward_switched(x, spec.bn_mode, switches);
            let logits = if spec.temperature == 1.0 {
                logits
            } else {
                logits.div_scalar(spec.temperature)
            };
            let (loss, _) = loss_and_correct(logits, y);
            let loss = loss.div_scalar(k);
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
            n += b.len;
        }
        let total = total.ok_or_else(|| PruneError::Target("no training batches".into()))?;
        Ok((total, n))
    }

    /// The loss of `spec` on `model` (already masked and in `spec`'s precision), differentiated.
    fn spec_gradients(
        &self,
        model: &ImageModel<TrainBackend>,
        spec: &LossSpec,
        names: &[String],
    ) -> Result<ParamValues64, PruneError> {
        self.spec_gradients_switched(model, spec, names, &mut Switches::Free)
    }

    /// [`ImageTask::spec_gradients`] with every ReLU and max pool switched as `switches` says.
    fn spec_gradients_switched(
        &self,
        model: &ImageModel<TrainBackend>,
        spec: &LossSpec,
        names: &[String],
        switches: &mut Switches<TrainBackend>,
    ) -> Result<ParamValues64, PruneError> {
        let (total, _) = self.spec_loss_switched(model, spec, switches)?;
        let grads = GradientsParams::from_grads(total.backward(), model);
        Ok(view::gradients_f64::<TrainBackend, _>(
            model,
            &self.naming,
            &grads,
            names,
        ))
    }

    /// [`PruneTarget::loss_hessian_vector`] with the step of its central difference set to
    /// `relative_step · max(‖θ‖, 1) / ‖v‖` (1e-6 in f64, 1e-3 in f32 by default).
    pub fn hessian_vector_with_step(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
        vector: &ParamValues,
        relative_step: f64,
    ) -> Result<ParamValues, PruneError> {
        // H v is a central difference of gradients, (∇L(θ + εv) − ∇L(θ − εv)) / 2ε, with ε
        // relative to ‖θ‖/‖v‖, taken with every ReLU and max-pool switch frozen as it is at θ:
        // the network is then smooth around θ, and the difference converges to the a.e. Hessian
        // that autodiff's double backward gives (ReLU'' = 0, pooling routes fixed) instead of
        // picking up each kink within ε. In f64 the truncation (ε²) and rounding errors stay
        // near 1e-10.
        let base = self.independent_copy(spec.precision);
        let entries = view::entries::<TrainBackend, _>(&base, &self.naming);
        let theta = self.values(names)?;
        let norm = |v: &ParamValues| {
            v.values()
                .flat_map(|t| t.values.iter())
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let v_norm = norm(vector);
        if v_norm == 0.0 {
            return Ok(vector.iter().map(|(k, t)| (k.clone(), t.clone())).collect());
        }
        let eps = relative_step * norm(&theta).max(1.0) / v_norm;
        let deltas = view::device_values::<InnerBackend>(
            &entries,
            vector,
            &self.device,
            dtype_of(spec.precision),
        )
        .map_err(|e| PruneError::Target(format!("Hessian-vector product: {e}")))?;
        let masks = self.masks_for(&base, mask, spec.precision);
        let mut at_theta = Switches::record();
        self.spec_loss_switched(
            &masks.apply_autodiff::<TrainBackend, _>(base.clone()),
            spec,
            &mut at_theta,
        )?;
        let at = |sign: f64| -> Result<ParamValues64, PruneError> {
            let moved =
                map_inner::<TrainBackend, _>(base.clone(), &mut |id, t| match deltas.get(id) {
                    Some(d) => InnerBackend::float_add(
                        t,
                        InnerBackend::float_mul_scalar(d.clone(), (sign * eps).into()),
                    ),
                    None => t,
                });
            let moved = masks.apply_autodiff::<TrainBackend, _>(moved);
            self.spec_gradients_switched(&moved, spec, names, &mut at_theta.replay())
        };
        let plus = at(1.0)?;
        let minus = at(-1.0)?;
        let mut out = ParamValues64::new();
        for (name, (shape, p)) in plus {
            let (_, m) = &minus[&name];
            let keep = mask.get(&name);
            let hv: Vec<f64> = p
                .iter()
                .zip(m)
                .enumerate()
                .map(|(i, (a, b))| {
                    let alive = keep.is_none_or(|k| k.keep[i]);
                    if alive { (a - b) / (2.0 * eps) } else { 0.0 }
                })
                .collect();
            out.insert(name, (shape, hv));
        }
        Ok(to_f32(out))
    }

    /// R and ∂R/∂θ of [`PruneTarget::path_flow`] in f64, not divided by R.
    pub fn path_flow_f64(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        precision: Precision,
    ) -> (f64, ParamValues64) {
        let (model, r) = self.flow_forward(mask, precision);
        let flow = scalar_f64(r.clone());
        let grads = GradientsParams::from_grads(r.backward(), &model);
        let g = view::gradients_f64::<TrainBackend, _>(&model, &self.naming, &grads, names);
        (flow, g)
    }

    /// The masked |θ| network and R, its summed output for an all-ones input.
    fn flow_forward(
        &mut self,
        mask: &MaskSet,
        precision: Precision,
    ) -> (ImageModel<TrainBackend>, Tensor<TrainBackend, 1>) {
        let linearized = match &self.linearized {
            Some((p, m)) if *p == precision => m.clone(),
            _ => {
                // Every parameter and buffer replaced by its absolute value, as the reference
                // does to the whole state dict.
                let m =
                    map_inner::<TrainBackend, _>(self.independent_copy(precision), &mut |_, t| {
                        InnerBackend::float_abs(t)
                    });
                self.linearized = Some((precision, m.clone()));
                m
            }
        };
        let model = self
            .masks_for(&linearized, mask, precision)
            .apply_autodiff::<TrainBackend, _>(linearized);
        let s = self.data.shape;
        let ones = Tensor::<TrainBackend, 4>::ones(
            [1, s.channels, s.height, s.width],
            (&self.device, dtype_of(precision)),
        );
        let r = model.forward_with(ones, BnMode::Eval).sum();
        (model, r)
    }

    /// Masks on the inner backend, keyed by the autodiff model's parameter ids.
    fn train_masks(&self, mask: &MaskSet) -> DeviceMasks<InnerBackend> {
        DeviceMasks::from_entries(
            &view::entries::<TrainBackend, _>(&self.model, &self.naming),
            mask,
            &self.device,
        )
    }

    /// The parameters' burn ids in the view's order (the optimiser state's keys).
    fn param_ids(&self) -> Vec<burn::module::ParamId> {
        view::entries::<TrainBackend, _>(&self.model, &self.naming)
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// Continues from `saved`: weights, clock, rows, checkpoints and the optimiser's state.
    fn resume_from(
        &mut self,
        saved: &SavedTraining,
        optim: RunOptimizer<ImageModel<TrainBackend>>,
        dir: &std::path::Path,
    ) -> Result<RunOptimizer<ImageModel<TrainBackend>>, PruneError> {
        PruneTarget::set_values(self, &saved.values)?;
        let optim = restore_optimizer(optim, saved, &self.param_ids(), dir)?;
        self.step = saved.step;
        self.epochs_done = saved.step / self.steps_per_epoch();
        self.metrics = saved.metrics.clone();
        self.checkpoints = saved.checkpoints.clone();
        Ok(optim)
    }

    /// The training's state now, to save.
    fn saved_state(
        &self,
        optim: &RunOptimizer<ImageModel<TrainBackend>>,
        reports: &[EpochReport],
    ) -> Result<SavedTraining, PruneError> {
        Ok(SavedTraining {
            step: self.step,
            values: self.all_values(),
            metrics: self.metrics.clone(),
            reports: reports.to_vec(),
            optimizer: optimizer_bytes(optim, &self.param_ids())?,
            loop_state: serde_json::Value::Null,
            checkpoints: self.checkpoints.clone(),
        })
    }

    fn train_with(
        &mut self,
        mut optim: RunOptimizer<ImageModel<TrainBackend>>,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        self.linearized = None;
        let masks = self.train_masks(mask);
        self.model = masks.apply_autodiff::<TrainBackend, _>(self.model.clone());
        let shape = self.data.shape;
        let steps_per_epoch = self.steps_per_epoch();
        let start_step = self.step;
        let mut saver = self.saver.clone();
        let mut reports: Vec<EpochReport> = vec![];
        let mut key = None;
        if let Some(saver) = saver.as_mut() {
            let (k, saved) = saver.start(start_step, end_step, mask, &self.all_values())?;
            key = Some(k);
            if let Some(saved) = saved {
                optim = self.resume_from(&saved, optim, saver.dir())?;
                reports = saved.reports;
                let restored = view::values::<TrainBackend, _>(&self.model, &self.naming, watch);
                if replay(&reports, &restored, on_epoch).is_break() {
                    return Ok(());
                }
            }
        }
        self.progress
            .set_length(end_step.saturating_sub(start_step) as u64);
        self.progress
            .set_position(self.step.saturating_sub(start_step) as u64);
        if self.train_cfg.checkpoints.contains(&self.step) {
            let v = self.all_values();
            self.checkpoints.insert(self.step, v);
        }
        while self.step < end_step {
            let epoch = self.step / steps_per_epoch;
            // A start inside an epoch (a rewind to step k) continues that epoch's data order.
            let skip = self.step - epoch * steps_per_epoch;
            let take = (end_step - self.step).min(steps_per_epoch - skip);
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
            )
            .into_iter()
            .skip(skip)
            .take(take)
            {
                lr = lr_at(&self.train_cfg, self.step, steps_per_epoch);
                let (x, y) = batch_tensors::<TrainBackend>(&b, shape, &self.device);
                let logits = self.model.forward(x);
                let (loss, c) = loss_and_correct(logits, y);
                let objective = if self.norm_l1 > 0.0 {
                    // Network slimming's penalty: its gradient is norm_l1 · sign(γ) on each scale.
                    let penalty = self
                        .model
                        .norm_scales()
                        .into_iter()
                        .map(|g| g.abs().sum())
                        .reduce(|a, b| a + b);
                    match penalty {
                        Some(p) => loss.clone() + p.mul_scalar(self.norm_l1),
                        None => loss.clone(),
                    }
                } else {
                    loss.clone()
                };
                let grads = GradientsParams::from_grads(objective.backward(), &self.model);
                let batch_loss = loss.into_scalar().elem::<f64>();
                PruneError::check_loss(batch_loss, epoch + 1, self.step + 1)?;
                loss_sum += batch_loss * b.len as f64;
                correct += c.into_scalar().elem::<i64>() as usize;
                seen += b.len;
                self.model = masks.apply_autodiff::<TrainBackend, _>(optim.step(
                    lr,
                    self.model.clone(),
                    grads,
                ));
                if self.non_affine_norm {
                    self.reset_norm_affine();
                }
                self.step += 1;
                self.progress.inc(1);
                if self.train_cfg.checkpoints.contains(&self.step) {
                    let v = self.all_values();
                    self.checkpoints.insert(self.step, v);
                }
                let watched_now = self
                    .watch_every
                    .is_some_and(|n| self.step.is_multiple_of(n));
                if watched_now && !self.step.is_multiple_of(steps_per_epoch) {
                    // Between epoch ends (`set_watch_every`): no test pass, no rows recorded.
                    let report = EpochReport {
                        epoch: self.step / steps_per_epoch,
                        step: self.step,
                        train_loss: loss_sum / seen.max(1) as f64,
                        train_accuracy: correct as f64 / seen.max(1) as f64,
                        test_loss: None,
                        test_accuracy: None,
                        lr,
                    };
                    // Batch norm's running statistics of this step, if watched (as `values`).
                    self.settle();
                    let watched = view::values::<TrainBackend, _>(&self.model, &self.naming, watch);
                    if on_epoch(&report, &watched).is_break() {
                        self.epochs_done = self.step / steps_per_epoch;
                        return Ok(());
                    }
                }
            }
            self.epochs_done = self.step / steps_per_epoch;
            if !self.step.is_multiple_of(steps_per_epoch) {
                break; // stopped inside an epoch: no epoch report
            }
            let (test_loss, test_acc) = ImageTask::evaluate(self, mask);
            // The last step can leave the weights non-finite with a finite loss.
            PruneError::check_loss(test_loss, self.epochs_done, self.step)?;
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
            reports.push(report.clone());
            if let (Some(saver), Some(key)) = (saver.as_mut(), &key)
                && self.step < end_step
            {
                saver.save_when_due(key, || self.saved_state(&optim, &reports))?;
            }
            tracing::debug!(
                epoch = report.epoch,
                train_loss = report.train_loss,
                test_accuracy = test_acc,
                "epoch done"
            );
            let watched = view::values::<TrainBackend, _>(&self.model, &self.naming, watch);
            if on_epoch(&report, &watched).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The shape of one input image.
    fn input_shape(&self) -> InputShape {
        let s = self.data.shape;
        InputShape {
            channels: s.channels,
            height: s.height,
            width: s.width,
        }
    }

    /// The model's architecture, for messages.
    fn architecture_name(&self) -> String {
        format!("{:?}", self.model.architecture())
    }

    /// Trains the model itself under `mask` with a fresh optimiser of the run's kind; a
    /// non-finite loss stops it with [`PruneError::Diverged`].
    fn train_in_place(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        let optim = RunOptimizer::new(&self.train_cfg);
        self.train_with(optim, mask, end_step, watch, on_epoch)
    }

    /// Trains the physically smaller network that keeps the `keep` channels in place of the
    /// masked full one (the same function, a fraction of the FLOPs), then writes its values back at
    /// the kept channels; every entry `mask` prunes is zero afterwards, as in masked training.
    fn train_smaller(
        &mut self,
        keep: &ChannelKeep,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        let target = |e: channels::ChannelError| PruneError::Target(e.to_string());
        let input = self.input_shape();
        let arch = self.model.architecture();
        let full = self.all_values();
        let small_arch = channels::shrink_architecture(&arch, input, keep).map_err(target)?;
        let small_values = channels::shrink_values(&arch, input, keep, &full).map_err(target)?;
        let small = small_arch.build_with::<TrainBackend>(
            input,
            self.data.classes,
            self.model.bias_layout(),
            &self.device,
        );
        let small_naming = small.naming();
        let small = view::set_values::<TrainBackend, _>(small, &small_naming, &small_values)
            .map_err(|e| PruneError::Target(e.to_string()))?;
        let mask_values: ParamValues = mask
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    lottery_core::FlatTensor::new(m.shape.clone(), m.as_f32()),
                )
            })
            .collect();
        let small_mask_values =
            channels::shrink_values(&arch, input, keep, &mask_values).map_err(target)?;
        let mut small_mask = MaskSet::new();
        for (name, t) in small_mask_values {
            let keep = t.values.iter().map(|&v| v != 0.0).collect();
            small_mask.insert(
                name,
                lottery_core::Mask {
                    shape: t.shape,
                    keep,
                },
            );
        }
        let full_model = std::mem::replace(&mut self.model, small);
        let full_naming = std::mem::replace(&mut self.naming, small_naming);
        let before: Vec<usize> = self.checkpoints.keys().copied().collect();
        let trained = self
            .train_in_place(&small_mask, end_step, watch, on_epoch)
            .map(|()| self.all_values());
        self.model = full_model;
        self.naming = full_naming;
        let trained = trained?;
        let widen = |small: &ParamValues| -> Result<ParamValues, PruneError> {
            let mut v = channels::embed_values(&arch, input, keep, small, &full).map_err(target)?;
            mask.apply(&mut v);
            Ok(v)
        };
        for (step, values) in self.checkpoints.iter_mut() {
            if !before.contains(step) {
                *values = widen(values)?;
            }
        }
        let merged = widen(&trained)?;
        PruneTarget::set_values(self, &merged)
    }

    /// Also calls the watcher of [`PruneTarget::train_watching`] after every step that is a
    /// multiple of `every` (counted from step 0) and not an epoch end, with a report whose
    /// `epoch` is the epochs completed, whose train loss and accuracy cover the steps of the epoch
    /// so far, and without test values (no test pass, no rows recorded); epoch ends report as
    /// before. `None` (the default): epoch ends only. A break stops training at that step.
    pub fn set_watch_every(&mut self, every: Option<usize>) {
        self.watch_every = every.filter(|&n| n > 0);
    }

    /// Optimiser steps in one epoch (the last batch may be short).
    pub fn steps_per_epoch(&self) -> usize {
        self.data.train.len().div_ceil(self.batch_size).max(1)
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

/// What only batch-norm convolutional networks offer: their channels (Early-Bird).
impl ImageTask {
    /// From now on, trains the physically smaller network that keeps only the `keep` channels in
    /// place of the channel-masked full one (the same function at a fraction of the FLOPs; the
    /// values are written back at the kept channels after each training); `None`: the full network.
    pub fn set_channel_structure(&mut self, keep: Option<ChannelKeep>) -> Result<(), PruneError> {
        if let Some(k) = &keep {
            channels::shrink_architecture(&self.model.architecture(), self.input_shape(), k)
                .map_err(|e| PruneError::Target(e.to_string()))?;
        }
        self.channels = keep;
        Ok(())
    }

    /// Adds `strength · Σ|γ|` over every batch-norm scale to the training loss from now on (the
    /// sparsity penalty of network slimming: a subgradient `strength · sign(γ)` on each scale);
    /// 0 turns it off.
    pub fn set_norm_l1(&mut self, strength: f64) -> Result<(), PruneError> {
        if !(strength.is_finite() && strength >= 0.0) {
            return Err(PruneError::Target(format!(
                "a batch-norm penalty is a finite strength ≥ 0; got {strength}"
            )));
        }
        if strength > 0.0 && self.model.norm_scales().is_empty() {
            return Err(PruneError::Target(format!(
                "{} has no batch norm to penalise",
                self.architecture_name()
            )));
        }
        self.norm_l1 = strength;
        Ok(())
    }

    /// The batch-norm channels of the network and the weights each gates, in forward order.
    pub fn channel_groups(&self) -> Result<Vec<ChannelGroup>, PruneError> {
        channels::channel_groups(&self.model.architecture(), self.input_shape())
            .map_err(|e| PruneError::Target(e.to_string()))
    }

    /// Parameters and FLOPs of the network with only the `keep` channels (the physically smaller
    /// network); `None`: the whole network.
    pub fn cost(&self, keep: Option<&ChannelKeep>) -> Result<NetworkCost, PruneError> {
        let arch = self.model.architecture();
        let arch = match keep {
            Some(k) => channels::shrink_architecture(&arch, self.input_shape(), k)
                .map_err(|e| PruneError::Target(e.to_string()))?,
            None => arch,
        };
        channels::cost(
            &arch,
            self.input_shape(),
            self.data.classes,
            self.model.bias_layout(),
        )
        .map_err(|e| PruneError::Target(e.to_string()))
    }

    /// Every parameter and buffer as a fresh initialisation with `seed` of the physically smaller
    /// network that keeps only the `keep` channels would set them (fan-in of the narrower layers),
    /// placed at the kept channels; entries of pruned channels as [`PruneTarget::fresh_values`].
    pub fn fresh_channel_values(
        &self,
        seed: u64,
        keep: &ChannelKeep,
    ) -> Result<ParamValues, PruneError> {
        let input = self.input_shape();
        let full = self.fresh_values(seed);
        let arch = self.model.architecture();
        let small_arch = channels::shrink_architecture(&arch, input, keep)
            .map_err(|e| PruneError::Target(e.to_string()))?;
        let small_model = small_arch.build_with::<InnerBackend>(
            input,
            self.data.classes,
            self.model.bias_layout(),
            &self.device,
        );
        let small: ParamValues =
            view::entries::<InnerBackend, _>(&small_model, &small_model.naming())
                .into_iter()
                .map(|e| {
                    let v = lottery_models::init::initial_value_as(
                        self.init,
                        seed,
                        &e.info.name,
                        e.info.kind,
                        &e.info.shape,
                    );
                    (e.info.name, v)
                })
                .collect();
        channels::embed_values(&arch, input, keep, &small, &full)
            .map_err(|e| PruneError::Target(e.to_string()))
    }
}

impl PruneTarget for ImageTask {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn params(&self) -> Vec<ParamInfo> {
        view::entries::<TrainBackend, _>(&self.model, &self.naming)
            .into_iter()
            .map(|e| e.info)
            .collect()
    }

    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError> {
        self.settle();
        Ok(view::values::<TrainBackend, _>(
            &self.model,
            &self.naming,
            names,
        ))
    }

    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError> {
        self.settle();
        self.linearized = None;
        self.model = view::set_values::<TrainBackend, _>(self.model.clone(), &self.naming, values)
            .map_err(|e| PruneError::Target(e.to_string()))?;
        Ok(())
    }

    fn loss_gradients(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
    ) -> Result<ParamValues, PruneError> {
        // Eval mode in f32 reads the model without changing it; anything else runs on a copy,
        // so that batch statistics never leak into the model's running statistics.
        let model = if spec.bn_mode == BnMode::Eval && spec.precision == Precision::F32 {
            self.model.clone()
        } else {
            self.independent_copy(spec.precision)
        };
        let model = self
            .masks_for(&model, mask, spec.precision)
            .apply_autodiff::<TrainBackend, _>(model);
        Ok(to_f32(self.spec_gradients(&model, spec, names)?))
    }

    fn loss_hessian_vector(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
        vector: &ParamValues,
    ) -> Result<ParamValues, PruneError> {
        let relative_step = match spec.precision {
            Precision::F64 => 1e-6,
            Precision::F32 => 1e-3,
        };
        self.hessian_vector_with_step(names, mask, spec, vector, relative_step)
    }

    fn path_flow(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        precision: Precision,
    ) -> Result<PathFlow, PruneError> {
        let (model, r) = self.flow_forward(mask, precision);
        let flow = scalar_f64(r.clone());
        // Differentiating ln R gives ∂R/∂θ / R directly, and keeps the backward pass small.
        let grads = GradientsParams::from_grads(r.log().backward(), &model);
        let log_gradients = match precision {
            Precision::F32 => {
                view::gradients::<TrainBackend, _>(&model, &self.naming, &grads, names)
            }
            Precision::F64 => to_f32(view::gradients_f64::<TrainBackend, _>(
                &model,
                &self.naming,
                &grads,
                names,
            )),
        };
        Ok(PathFlow {
            flow,
            log_gradients,
        })
    }

    fn clock(&self) -> TrainClock {
        let steps_per_epoch = self.steps_per_epoch();
        TrainClock {
            step: self.step,
            steps_per_epoch,
            run_steps: self.train_cfg.epochs * steps_per_epoch,
        }
    }

    fn train_watching(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        match self.channels.clone() {
            Some(keep) => self.train_smaller(&keep, mask, end_step, watch, on_epoch),
            None => self.train_in_place(mask, end_step, watch, on_epoch),
        }
    }

    fn save_training_in(
        &mut self,
        dir: Option<std::path::PathBuf>,
        every: std::time::Duration,
    ) -> Result<(), PruneError> {
        self.saver = dir.map(|d| TrainingSaver::new(d, every));
        Ok(())
    }

    fn rewind(&mut self, values: &ParamValues, step: usize) -> Result<(), PruneError> {
        self.set_values(values)?;
        self.step = step;
        self.epochs_done = step / self.steps_per_epoch();
        Ok(())
    }

    fn evaluate(&mut self, mask: &MaskSet) -> Result<(f64, f64), PruneError> {
        Ok(ImageTask::evaluate(self, mask))
    }

    fn fresh_values(&self, seed: u64) -> ParamValues {
        self.params()
            .into_iter()
            .map(|p| {
                let v = lottery_models::init::initial_value_as(
                    self.init, seed, &p.name, p.kind, &p.shape,
                );
                (p.name, v)
            })
            .collect()
    }

    fn set_phase(&mut self, round: usize, phase: &str) {
        self.round = round;
        self.phase = phase.to_string();
    }

    fn record(&mut self, split: &str, metric: &str, value: f64) {
        ImageTask::record(self, split, metric, value);
    }

    fn metrics(&self) -> Vec<MetricRow> {
        ImageTask::metrics(self).to_vec()
    }

    fn restore_metrics(&mut self, rows: Vec<MetricRow>) {
        self.metrics = rows;
    }
}

/// The loss a [`LossSpec`] describes, evaluated in f64 without gradients (the function that
/// [`PruneTarget::loss_gradients`] differentiates), with `mask` applied. Returns the loss and the
/// number of examples.
pub fn spec_loss(task: &ImageTask, mask: &MaskSet, spec: &LossSpec) -> (f64, usize) {
    let spec = LossSpec {
        precision: Precision::F64,
        ..*spec
    };
    let model = task.independent_copy(Precision::F64);
    let model = task
        .masks_for(&model, mask, Precision::F64)
        .apply_autodiff::<TrainBackend, _>(model);
    let (loss, n) = task
        .spec_loss_tensor(&model, &spec)
        .expect("the task has training batches");
    (scalar_f64(loss), n)
}

/// The value of a one-element tensor in its own precision (`into_scalar` rounds to the backend's
/// default float).
fn scalar_f64<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("one value")[0]
}

fn dtype_of(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::F64 => DType::F64,
    }
}
