//! [`BertTask`]: a pre-trained BERT fine-tuned on one text task, the prune target of a BERT run.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use burn::module::{AutodiffModule, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use indicatif::ProgressBar;
use lottery_core::backend::{Backend as InnerBackend, Device, TrainBackend};
use lottery_core::config::TrainSection;
use lottery_core::plugin::EpochReport;
use lottery_core::{
    FlatTensor, LossSpec, MaskSet, MetricRow, ParamInfo, ParamKind, ParamValues, PathFlow,
    Precision, PruneError, PruneTarget, TrainClock,
};
use lottery_train::resume::{optimizer_bytes, replay, restore_optimizer};
use lottery_train::{RunOptimizer, SavedTraining, TrainingSaver, flat_tensor};
use rand::{RngExt, SeedableRng};

use crate::data::{Examples, TextTask, mask_for_mlm};
use crate::model::{
    Bert, BertWithHead, Dropout, LayerNorm, Linear, MlmHead, ParamMut, TokenBatch, dropped,
};
use crate::pretrained::Pretrained;
use crate::tokens::pad_batch;

/// Standard deviation of BERT's initialisation (`initializer_range`), used for the heads.
pub const INIT_STD: f32 = 0.02;

/// Salt of the MLM masking of the test sentences: the same for every run and seed, so that
/// MLM accuracies compare.
const TEST_MASK_SALT: u64 = 0x7465_7374;

/// What a BERT run needs besides its checkpoint and task.
#[derive(Debug, Clone)]
pub struct BertSettings {
    /// Training settings of the run.
    pub train: TrainSection,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Tokens per sequence, at most.
    pub max_tokens: usize,
    /// Training examples per task (0: all).
    pub train_subset: usize,
    /// Test examples per task (0: all).
    pub test_subset: usize,
    /// The run's seed (heads, data order, MLM masking).
    pub seed: u64,
}

/// Salt of the dropout masks' stream (mixed with the run's seed and the optimiser step).
const DROPOUT_SALT: u64 = 0x0064_726f_706f_7574;

/// How a BERT fine-tunes beyond the run's `[train]` settings: the references' dropout and
/// gradient clipping. The default (0, 0) is neither.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FineTuning {
    /// Dropout rate in [0, 1) at BERT's places (the references: 0.1); 0: none. Its masks are drawn
    /// from the run's seed and the optimiser step, so a rerun is bit-identical.
    pub dropout: f64,
    /// Maximum global L2 norm of the gradient of all parameters, as
    /// `torch.nn.utils.clip_grad_norm_` (the references: 1.0); 0: no clipping.
    pub clip_grad_norm: f64,
}

/// A pre-trained BERT with the head of one task: the prune target of a BERT run.
pub struct BertTask {
    fine_tuning: FineTuning,
    pretrained: Arc<Pretrained>,
    task: Arc<TextTask>,
    settings: BertSettings,
    model: BertWithHead<TrainBackend>,
    device: Device,
    step: usize,
    round: usize,
    phase: String,
    metrics: Vec<MetricRow>,
    progress: ProgressBar,
    /// Where trainings save their state to resume from ([`PruneTarget::save_training_in`]).
    saver: Option<TrainingSaver>,
}

/// A value from N(0, std²), Box–Muller.
fn normal(rng: &mut rand_chacha::ChaCha8Rng, std: f32) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn stream(seed: u64, name: &str) -> rand_chacha::ChaCha8Rng {
    let h = name.bytes().fold(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xcbf2_9ce4_8422_2325,
        |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3),
    );
    rand_chacha::ChaCha8Rng::seed_from_u64(h)
}

/// BERT's initialisation of one parameter: N(0, 0.02²) for matrices, 1 for norm scales, 0 for
/// biases and norm shifts; seeded per name.
pub fn initial_value(name: &str, shape: &[usize], seed: u64) -> FlatTensor {
    let n: usize = shape.iter().product();
    let values = if shape.len() == 2 {
        let mut rng = stream(seed, name);
        (0..n).map(|_| normal(&mut rng, INIT_STD)).collect()
    } else if name.contains("LayerNorm.weight") {
        vec![1.0; n]
    } else {
        vec![0.0; n]
    };
    FlatTensor::new(shape.to_vec(), values)
}

/// The MLM head's transform, which starts as the identity: the checkpoint has no MLM head, and
/// the identity lets the tied decoder read the encoder's states from the first step.
pub const MLM_TRANSFORM: &str = "cls.predictions.transform.dense.weight";

fn identity(n: usize) -> FlatTensor {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    FlatTensor::new(vec![n, n], v)
}

/// Whether `name` belongs to a task head (`classifier.…`, `cls.…`) rather than the encoder.
pub fn is_head(name: &str) -> bool {
    name.starts_with("classifier") || name.starts_with("cls.")
}

/// What a parameter of a BERT with a head is: encoder and pooler linear weights are the
/// prunable ones (as in BERT-Tickets); embeddings, norms, biases and the heads are not.
pub fn param_kind(name: &str, rank: usize) -> ParamKind {
    if is_head(name) {
        ParamKind::Other
    } else if name.starts_with("embeddings.") && rank == 2 {
        ParamKind::Embedding
    } else if name.contains("LayerNorm") {
        ParamKind::Norm
    } else if rank == 2 {
        ParamKind::LinearWeight
    } else {
        ParamKind::Bias
    }
}

impl BertTask {
    /// The checkpoint fine-tuned on `task`: encoder at its pre-trained weights, the task's head
    /// freshly initialised from the run's seed.
    pub fn new(
        pretrained: Arc<Pretrained>,
        task: Arc<TextTask>,
        settings: BertSettings,
    ) -> Result<Self, PruneError> {
        let device = lottery_core::backend::default_device();
        let model = Self::starting_model(&pretrained, &task, settings.seed, &device)?;
        Ok(Self {
            fine_tuning: FineTuning::default(),
            pretrained,
            task,
            settings,
            model,
            device,
            step: 0,
            round: 0,
            phase: "ticket".into(),
            metrics: vec![],
            progress: ProgressBar::hidden(),
            saver: None,
        })
    }

    /// Every parameter's burn id, in the order of `for_each_param` (the optimiser state's keys).
    fn param_ids(&self) -> Vec<burn::module::ParamId> {
        let mut ids = vec![];
        let mut model = self.model.clone();
        model.for_each_param(&mut |_, p| {
            ids.push(match p {
                ParamMut::Vector(t) => t.id,
                ParamMut::Matrix(t) => t.id,
            })
        });
        ids
    }

    /// Every parameter's value, by name.
    fn all_values(&self) -> Result<ParamValues, PruneError> {
        let names: Vec<String> = self.params().into_iter().map(|p| p.name).collect();
        self.values(&names)
    }

    /// The training's state now, to save.
    fn saved_state(
        &self,
        optim: &RunOptimizer<BertWithHead<TrainBackend>>,
        reports: &[EpochReport],
    ) -> Result<SavedTraining, PruneError> {
        Ok(SavedTraining {
            step: self.step,
            values: self.all_values()?,
            metrics: self.metrics.clone(),
            reports: reports.to_vec(),
            optimizer: optimizer_bytes(optim, &self.param_ids())?,
            loop_state: serde_json::Value::Null,
            checkpoints: Default::default(),
        })
    }

    fn starting_model(
        pretrained: &Pretrained,
        task: &TextTask,
        seed: u64,
        device: &Device,
    ) -> Result<BertWithHead<TrainBackend>, PruneError> {
        let cfg = &pretrained.config;
        let h = cfg.hidden_size;
        let zeros = |o: usize, i: usize| Linear {
            weight: Param::from_tensor(Tensor::zeros([o, i], device)),
            bias: Param::from_tensor(Tensor::zeros([o], device)),
        };
        let mut model = BertWithHead {
            bert: Bert::zeros(cfg, device),
            classifier: task.classes().map(|c| zeros(c, h)),
            mlm: task.classes().is_none().then(|| MlmHead {
                transform: zeros(h, h),
                norm: LayerNorm {
                    weight: Param::from_tensor(Tensor::ones([h], device)),
                    bias: Param::from_tensor(Tensor::zeros([h], device)),
                    eps: cfg.layer_norm_eps,
                },
                bias: Param::from_tensor(Tensor::zeros([cfg.vocab_size], device)),
            }),
        };
        let mut values = ParamValues::new();
        let mut missing = vec![];
        model.for_each_param(&mut |name, p| {
            let shape = match &p {
                ParamMut::Vector(t) => t.val().dims().to_vec(),
                ParamMut::Matrix(t) => t.val().dims().to_vec(),
            };
            let v = if name == MLM_TRANSFORM {
                identity(shape[0])
            } else if param_kind(name, shape.len()) == ParamKind::Other {
                initial_value(name, &shape, seed ^ fnv(&task.name))
            } else {
                match pretrained.values.get(name) {
                    Some(v) => v.clone(),
                    None => {
                        missing.push(name.to_string());
                        return;
                    }
                }
            };
            values.insert(name.to_string(), v);
        });
        if !missing.is_empty() {
            return Err(PruneError::Target(format!(
                "{}: the checkpoint lacks {}",
                pretrained.dir.display(),
                missing.join(", ")
            )));
        }
        set_all(&mut model, &values, device)?;
        Ok(model)
    }

    /// Shows training progress on `bar`.
    pub fn with_progress(mut self, bar: ProgressBar) -> Self {
        self.progress = bar;
        self
    }

    /// Sets the dropout and gradient clipping of every later training (kept across
    /// [`BertTask::switch_task`]).
    pub fn set_fine_tuning(&mut self, fine_tuning: FineTuning) -> Result<(), PruneError> {
        let FineTuning {
            dropout,
            clip_grad_norm,
        } = fine_tuning;
        if !(0.0..1.0).contains(&dropout) {
            return Err(PruneError::Target(format!(
                "dropout = {dropout}: a dropout rate lies in [0, 1)"
            )));
        }
        if !(clip_grad_norm.is_finite() && clip_grad_norm >= 0.0) {
            return Err(PruneError::Target(format!(
                "clip_grad_norm = {clip_grad_norm}: a maximum norm is finite and >= 0 (0: none)"
            )));
        }
        self.fine_tuning = fine_tuning;
        Ok(())
    }

    /// The dropout and gradient clipping of training.
    pub fn fine_tuning(&self) -> FineTuning {
        self.fine_tuning
    }

    /// The task trained on now.
    pub fn task(&self) -> &TextTask {
        &self.task
    }

    /// The checkpoint.
    pub fn pretrained(&self) -> &Pretrained {
        &self.pretrained
    }

    /// The last hidden states of `texts` (no head), `[tokens, hidden]` per text: for checking
    /// the encoder against reference outputs.
    pub fn hidden_states(&self, ids: &[Vec<u32>]) -> Vec<FlatTensor> {
        let inner: Bert<InnerBackend> = self.model.bert.valid();
        ids.iter()
            .map(|s| {
                let batch = self.token_batch::<InnerBackend>(&[s.as_slice()]);
                flat_tensor(inner.forward(&batch))
            })
            .collect()
    }

    fn steps_per_epoch(&self) -> usize {
        self.task
            .train_len()
            .div_ceil(self.settings.batch_size.max(1))
            .max(1)
    }

    fn token_batch<B: Backend<Device = Device>>(&self, seqs: &[&[u32]]) -> TokenBatch<B> {
        let (ids, attention, len) = pad_batch(seqs, self.pretrained.tokenizer.pad);
        let b = seqs.len();
        TokenBatch {
            ids: Tensor::from_data(TensorData::new(ids, [b, len]), &self.device),
            attention: Tensor::from_data(TensorData::new(attention, [b, len]), &self.device),
        }
    }

    /// Summed cross-entropy, correct predictions and predictions of `model` on the examples
    /// `idx` of `split` (MLM: the masked pieces, masked with `mask_seed`).
    fn batch_loss<B: Backend<Device = Device>>(
        &self,
        model: &BertWithHead<B>,
        test: bool,
        idx: &[usize],
        mask_seed: u64,
        dropout: Option<&Dropout>,
    ) -> (Tensor<B, 1>, usize, usize) {
        match &self.task.examples {
            Examples::Classes {
                train, test: tst, ..
            } => {
                let set = if test { tst } else { train };
                let seqs: Vec<&[u32]> = idx.iter().map(|&i| set[i].0.as_slice()).collect();
                let labels: Vec<i64> = idx.iter().map(|&i| set[i].1 as i64).collect();
                let batch = self.token_batch::<B>(&seqs);
                let states = model.bert.forward_dropping(&batch, dropout);
                let pooled = dropped(dropout, model.bert.pool(states, seqs.len()));
                let logits = model
                    .classifier
                    .as_ref()
                    .expect("a classification task has a classifier")
                    .forward(pooled);
                cross_entropy(logits, labels, &self.device)
            }
            Examples::Corpus { train, test: tst } => {
                let set = if test { tst } else { train };
                let masked: Vec<_> = idx
                    .iter()
                    .map(|&i| {
                        mask_for_mlm(
                            &set[i],
                            &self.pretrained.tokenizer,
                            mask_seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        )
                    })
                    .collect();
                let seqs: Vec<&[u32]> = masked.iter().map(|m| m.input.as_slice()).collect();
                let batch = self.token_batch::<B>(&seqs);
                let len = batch.ids.dims()[1];
                let mut rows = vec![];
                let mut labels = vec![];
                for (b, m) in masked.iter().enumerate() {
                    for &(pos, id) in &m.targets {
                        rows.push((b * len + pos) as i64);
                        labels.push(id as i64);
                    }
                }
                let states = model.bert.forward_dropping(&batch, dropout);
                let n = rows.len();
                let picked = states.select(
                    0,
                    Tensor::from_data(TensorData::new(rows, [n]), &self.device),
                );
                let logits = model
                    .mlm
                    .as_ref()
                    .expect("an MLM task has an MLM head")
                    .forward(picked, model.bert.embeddings.word.val());
                cross_entropy(logits, labels, &self.device)
            }
        }
    }

    /// Test loss and accuracy of the masked network.
    pub fn evaluate_test(&self, mask: &MaskSet) -> Result<(f64, f64), PruneError> {
        let mut inner: BertWithHead<InnerBackend> = self.model.valid();
        apply_mask(&mut inner, mask, &self.device)?;
        let n = self.task.test_len();
        let (mut loss, mut correct, mut count) = (0.0, 0usize, 0usize);
        let bs = self.settings.batch_size.max(1);
        for start in (0..n).step_by(bs) {
            let idx: Vec<usize> = (start..(start + bs).min(n)).collect();
            let (l, c, k) = self.batch_loss(&inner, true, &idx, TEST_MASK_SALT, None);
            loss += l.into_scalar().elem::<f64>();
            correct += c;
            count += k;
        }
        let count = count.max(1) as f64;
        Ok((loss / count, correct as f64 / count))
    }

    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.task.train_len()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.settings.seed ^ (epoch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        order
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Summed cross-entropy of `logits` against `labels`, correct predictions, and the count.
fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Vec<i64>,
    device: &B::Device,
) -> (Tensor<B, 1>, usize, usize) {
    let n = labels.len();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
    let pred = logits.clone().argmax(1).squeeze_dim::<1>(1);
    let correct: i64 = pred.equal(y.clone()).int().sum().into_scalar().elem();
    let loss = log_softmax(logits, 1)
        .gather(1, y.unsqueeze_dim(1))
        .sum()
        .neg();
    (loss, correct as usize, n)
}

/// Overwrites every parameter named in `values`; unknown names and shape mismatches are errors.
fn set_all<B: Backend>(
    model: &mut BertWithHead<B>,
    values: &ParamValues,
    device: &B::Device,
) -> Result<(), PruneError> {
    let mut seen = 0usize;
    let mut bad = vec![];
    model.for_each_param(&mut |name, p| {
        let Some(v) = values.get(name) else { return };
        seen += 1;
        match p {
            ParamMut::Vector(t) => {
                if v.shape != t.val().dims().to_vec() {
                    bad.push(format!(
                        "{name}: shape {:?} vs {:?}",
                        v.shape,
                        t.val().dims()
                    ));
                    return;
                }
                let new = Tensor::<B, 1>::from_data(
                    TensorData::new(v.values.clone(), [v.shape[0]]),
                    device,
                );
                *t = Param::initialized(t.id, new.require_grad());
            }
            ParamMut::Matrix(t) => {
                if v.shape != t.val().dims().to_vec() {
                    bad.push(format!(
                        "{name}: shape {:?} vs {:?}",
                        v.shape,
                        t.val().dims()
                    ));
                    return;
                }
                let new = Tensor::<B, 2>::from_data(
                    TensorData::new(v.values.clone(), [v.shape[0], v.shape[1]]),
                    device,
                );
                *t = Param::initialized(t.id, new.require_grad());
            }
        }
    });
    if seen < values.len() {
        let mut names = vec![];
        model.for_each_param(&mut |n, _| names.push(n.to_string()));
        let unknown: Vec<&String> = values.keys().filter(|k| !names.contains(k)).collect();
        bad.push(format!("no parameter named {unknown:?}"));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(PruneError::Target(bad.join("; ")))
    }
}

/// Scales `grads` so that their global L2 norm over every parameter of `model` is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` does: the factor is `max_norm / (norm + 1e-6)`
/// when it is below 1. Returns the norm before clipping.
pub fn clip_grad_norm<B: burn::tensor::backend::AutodiffBackend>(
    grads: &mut GradientsParams,
    model: &mut BertWithHead<B>,
    max_norm: f64,
) -> f64 {
    let mut ids = vec![];
    model.for_each_param(&mut |_, p| match p {
        ParamMut::Vector(t) => ids.push((t.id, 1)),
        ParamMut::Matrix(t) => ids.push((t.id, 2)),
    });
    let mut squares: Option<Tensor<B::InnerBackend, 1>> = None;
    let mut add = |s: Tensor<B::InnerBackend, 1>| {
        squares = Some(match squares.take() {
            Some(a) => a + s,
            None => s,
        })
    };
    for &(id, rank) in &ids {
        if rank == 1 {
            if let Some(g) = grads.get::<B::InnerBackend, 1>(id) {
                add(g.powi_scalar(2).sum());
            }
        } else if let Some(g) = grads.get::<B::InnerBackend, 2>(id) {
            add(g.powi_scalar(2).sum());
        }
    }
    let Some(squares) = squares else { return 0.0 };
    let norm = squares.into_scalar().elem::<f64>().sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for &(id, rank) in &ids {
            if rank == 1 {
                if let Some(g) = grads.remove::<B::InnerBackend, 1>(id) {
                    grads.register(id, g.mul_scalar(coef));
                }
            } else if let Some(g) = grads.remove::<B::InnerBackend, 2>(id) {
                grads.register(id, g.mul_scalar(coef));
            }
        }
    }
    norm
}

/// Each masked matrix's mask as a 0/1 tensor, checked against the model's shapes: built once per
/// training and multiplied in after every step.
fn mask_tensors<B: Backend>(
    model: &mut BertWithHead<B>,
    mask: &MaskSet,
    device: &B::Device,
) -> Result<HashMap<String, Tensor<B, 2>>, PruneError> {
    let mut out = HashMap::new();
    let mut bad = vec![];
    model.for_each_param(&mut |name, p| {
        let Some(m) = mask.get(name) else { return };
        match p {
            ParamMut::Matrix(t) if m.numel() == t.val().dims().iter().product::<usize>() => {
                let dims = t.val().dims();
                out.insert(
                    name.to_string(),
                    Tensor::<B, 2>::from_data(TensorData::new(m.as_f32(), dims), device),
                );
            }
            _ => bad.push(name.to_string()),
        }
    });
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(PruneError::Target(format!(
            "masks of {bad:?} do not fit BERT's weight matrices"
        )))
    }
}

/// Multiplies every masked matrix by its mask (detached, a fresh leaf).
fn remask<B: Backend>(model: &mut BertWithHead<B>, masks: &HashMap<String, Tensor<B, 2>>) {
    model.for_each_param(&mut |name, p| {
        if let (Some(m), ParamMut::Matrix(t)) = (masks.get(name), p) {
            let device = m.device();
            let w = std::mem::replace(t, Param::from_tensor(Tensor::zeros([1, 1], &device)));
            *t = w.map(|w| (w * m.clone()).detach().require_grad());
        }
    });
}

/// [`remask`] with `mask` (checked against the model's shapes).
fn apply_mask<B: Backend>(
    model: &mut BertWithHead<B>,
    mask: &MaskSet,
    device: &B::Device,
) -> Result<(), PruneError> {
    let masks = mask_tensors(model, mask, device)?;
    remask(model, &masks);
    Ok(())
}

fn unsupported(what: &str) -> PruneError {
    PruneError::Target(format!(
        "a BERT task does not compute {what} (use a magnitude, random or IMP method)"
    ))
}

impl BertTask {
    /// Switches the data and the output head the network trains and evaluates on to the task
    /// `name` (a text dataset's name), for a ticket found on one task and fine-tuned on another:
    /// the weights go back to the starting point (the pre-trained encoder, a fresh head of the new
    /// task from the run's seed) and the clock to step 0. Returns the previous task's name.
    pub fn switch_task(&mut self, name: &str) -> Result<String, PruneError> {
        let s = &self.settings;
        let task = TextTask::load(
            name,
            None,
            &self.pretrained.tokenizer,
            s.max_tokens,
            s.train_subset,
            s.test_subset,
        )
        .map_err(|e| PruneError::Target(e.to_string()))?;
        let previous = std::mem::replace(&mut self.task, Arc::new(task));
        self.model = Self::starting_model(&self.pretrained, &self.task, s.seed, &self.device)?;
        self.step = 0;
        Ok(previous.name.clone())
    }
}

impl PruneTarget for BertTask {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn params(&self) -> Vec<ParamInfo> {
        let mut out = vec![];
        let mut model = self.model.clone();
        model.for_each_param(&mut |name, p| {
            let shape = match p {
                ParamMut::Vector(t) => t.val().dims().to_vec(),
                ParamMut::Matrix(t) => t.val().dims().to_vec(),
            };
            out.push(ParamInfo {
                name: name.to_string(),
                kind: param_kind(name, shape.len()),
                shape,
                shortcut: false,
            });
        });
        out
    }

    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError> {
        let mut out = ParamValues::new();
        let mut model = self.model.clone();
        model.for_each_param(&mut |name, p| {
            if names.iter().any(|n| n == name) {
                let v = match p {
                    ParamMut::Vector(t) => flat_tensor(t.val().inner()),
                    ParamMut::Matrix(t) => flat_tensor(t.val().inner()),
                };
                out.insert(name.to_string(), v);
            }
        });
        if let Some(n) = names.iter().find(|n| !out.contains_key(*n)) {
            return Err(PruneError::Target(format!("BERT has no parameter {n}")));
        }
        Ok(out)
    }

    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError> {
        set_all(&mut self.model, values, &self.device)
    }

    fn loss_gradients(
        &mut self,
        _names: &[String],
        _mask: &MaskSet,
        _spec: &LossSpec,
    ) -> Result<ParamValues, PruneError> {
        Err(unsupported("loss gradients"))
    }

    fn loss_hessian_vector(
        &mut self,
        _names: &[String],
        _mask: &MaskSet,
        _spec: &LossSpec,
        _vector: &ParamValues,
    ) -> Result<ParamValues, PruneError> {
        Err(unsupported("Hessian-vector products"))
    }

    fn path_flow(
        &mut self,
        _names: &[String],
        _mask: &MaskSet,
        _precision: Precision,
    ) -> Result<PathFlow, PruneError> {
        Err(unsupported("synaptic flow"))
    }

    fn clock(&self) -> TrainClock {
        let spe = self.steps_per_epoch();
        TrainClock {
            step: self.step,
            steps_per_epoch: spe,
            run_steps: self.settings.train.epochs * spe,
        }
    }

    fn train_watching(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        let mut optim = RunOptimizer::<BertWithHead<TrainBackend>>::new(&self.settings.train);
        let masks = mask_tensors(&mut self.model, mask, &self.device)?;
        remask(&mut self.model, &masks);
        let spe = self.steps_per_epoch();
        let bs = self.settings.batch_size.max(1);
        let start_step = self.step;
        let mut saver = self.saver.clone();
        let mut reports: Vec<EpochReport> = vec![];
        let mut key = None;
        if let Some(saver) = saver.as_mut() {
            let (k, saved) = saver.start(start_step, end_step, mask, &self.all_values()?)?;
            key = Some(k);
            if let Some(saved) = saved {
                self.set_values(&saved.values)?;
                remask(&mut self.model, &masks);
                optim = restore_optimizer(optim, &saved, &self.param_ids(), saver.dir())?;
                self.step = saved.step;
                self.metrics = saved.metrics;
                reports = saved.reports;
                let restored = self.values(watch)?;
                if replay(&reports, &restored, on_epoch).is_break() {
                    return Ok(());
                }
            }
        }
        self.progress
            .set_length(end_step.saturating_sub(start_step) as u64);
        self.progress
            .set_position(self.step.saturating_sub(start_step) as u64);
        let (mut loss_sum, mut correct, mut count) = (0.0, 0usize, 0usize);
        while self.step < end_step {
            let epoch = self.step / spe;
            let order = self.epoch_order(epoch);
            let at = self.step % spe;
            let idx: Vec<usize> = order.iter().skip(at * bs).take(bs).copied().collect();
            let lr = lottery_train::schedule::lr_at(&self.settings.train, self.step, spe);
            let salt = self.settings.seed ^ (self.step as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            let dropout = (self.fine_tuning.dropout > 0.0).then(|| {
                Dropout::new(
                    self.fine_tuning.dropout,
                    self.settings.seed
                        ^ DROPOUT_SALT
                        ^ (self.step as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                )
            });
            let (loss, c, k) = self.batch_loss(&self.model, false, &idx, salt, dropout.as_ref());
            let mean = loss.div_scalar(k.max(1) as f64);
            let batch_loss = mean.clone().into_scalar().elem::<f64>();
            PruneError::check_loss(batch_loss, epoch + 1, self.step + 1)?;
            loss_sum += batch_loss;
            correct += c;
            count += k;
            let mut grads = GradientsParams::from_grads(mean.backward(), &self.model);
            if self.fine_tuning.clip_grad_norm > 0.0 {
                clip_grad_norm(&mut grads, &mut self.model, self.fine_tuning.clip_grad_norm);
            }
            self.model = optim.step(lr, self.model.clone(), grads);
            remask(&mut self.model, &masks);
            self.step += 1;
            self.progress.inc(1);
            if self.step.is_multiple_of(spe) || self.step == end_step {
                let steps_done = (self.step - 1) % spe + 1;
                let train_loss = loss_sum / steps_done as f64;
                let train_accuracy = correct as f64 / count.max(1) as f64;
                let (test_loss, test_accuracy) = self.evaluate_test(mask)?;
                PruneError::check_loss(test_loss, self.step.div_ceil(spe), self.step)?;
                self.record("train", "loss", train_loss);
                self.record("train", "accuracy", train_accuracy);
                self.record("train", "lr", lr);
                self.record("test", "loss", test_loss);
                self.record("test", "accuracy", test_accuracy);
                let report = EpochReport {
                    epoch: self.step.div_ceil(spe),
                    step: self.step,
                    train_loss,
                    train_accuracy,
                    test_loss: Some(test_loss),
                    test_accuracy: Some(test_accuracy),
                    lr,
                };
                reports.push(report.clone());
                if let (Some(saver), Some(key)) = (saver.as_mut(), &key)
                    && self.step < end_step
                {
                    saver.save_when_due(key, || self.saved_state(&optim, &reports))?;
                }
                (loss_sum, correct, count) = (0.0, 0, 0);
                let watched = self.values(watch)?;
                if on_epoch(&report, &watched).is_break() {
                    break;
                }
            }
        }
        Ok(())
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
        Ok(())
    }

    fn evaluate(&mut self, mask: &MaskSet) -> Result<(f64, f64), PruneError> {
        self.evaluate_test(mask)
    }

    fn fresh_values(&self, seed: u64) -> ParamValues {
        self.params()
            .into_iter()
            .map(|p| {
                let v = initial_value(&p.name, &p.shape, seed);
                (p.name, v)
            })
            .collect()
    }

    fn set_phase(&mut self, round: usize, phase: &str) {
        self.round = round;
        self.phase = phase.to_string();
    }

    fn record(&mut self, split: &str, metric: &str, value: f64) {
        let spe = self.steps_per_epoch();
        self.metrics.push(MetricRow {
            round: self.round as u64,
            phase: self.phase.clone(),
            step: self.step as u64,
            epoch: self.step.div_ceil(spe) as u64,
            split: split.into(),
            metric: metric.into(),
            value,
        });
    }

    fn metrics(&self) -> Vec<MetricRow> {
        self.metrics.clone()
    }

    fn restore_metrics(&mut self, rows: Vec<MetricRow>) {
        self.metrics = rows;
    }
}

/// The folder of the checkpoint a run reads: `model.init_from`, or the packaged MiniLM.
pub fn checkpoint_dir(init_from: Option<&std::path::Path>) -> PathBuf {
    init_from
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::pretrained::MINILM_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BertConfig;

    fn tiny() -> BertWithHead<TrainBackend> {
        let device = lottery_core::backend::default_device();
        let cfg = BertConfig {
            vocab_size: 5,
            hidden_size: 4,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 6,
            max_position_embeddings: 8,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
        };
        BertWithHead {
            bert: Bert::zeros(&cfg, &device),
            classifier: Some(Linear {
                weight: Param::from_tensor(Tensor::zeros([2, 4], &device)),
                bias: Param::from_tensor(Tensor::zeros([2], &device)),
            }),
            mlm: None,
        }
    }

    /// Gradient 3 on one entry of the classifier's bias and 4 on one of its weight: norm 5.
    fn grads(model: &BertWithHead<TrainBackend>) -> GradientsParams {
        let device = lottery_core::backend::default_device();
        let c = model.classifier.as_ref().unwrap();
        let mut g = GradientsParams::new();
        g.register(
            c.bias.id,
            Tensor::<InnerBackend, 1>::from_data(TensorData::new(vec![3.0f32, 0.0], [2]), &device),
        );
        g.register(
            c.weight.id,
            Tensor::<InnerBackend, 2>::from_data(
                TensorData::new(vec![0.0f32, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [2, 4]),
                &device,
            ),
        );
        g
    }

    fn values(g: &GradientsParams, model: &BertWithHead<TrainBackend>) -> (Vec<f32>, Vec<f32>) {
        let c = model.classifier.as_ref().unwrap();
        let b = g.get::<InnerBackend, 1>(c.bias.id).unwrap();
        let w = g.get::<InnerBackend, 2>(c.weight.id).unwrap();
        (flat_tensor(b).values, flat_tensor(w).values)
    }

    #[test]
    fn clipping_scales_the_global_norm_as_torch_does() {
        let mut model = tiny();
        // Above the limit: every gradient times max_norm / (‖g‖ + 1e-6), ‖g‖ = √(3² + 4²) = 5.
        let mut g = grads(&model);
        let norm = clip_grad_norm(&mut g, &mut model, 1.0);
        assert_eq!(norm, 5.0);
        let coef = (1.0 / (5.0 + 1e-6)) as f32;
        let (b, w) = values(&g, &model);
        assert_eq!(b, vec![3.0 * coef, 0.0]);
        assert_eq!(w[1], 4.0 * coef);
        let clipped = (b[0] as f64).hypot(w[1] as f64);
        assert!((clipped - 1.0).abs() < 1e-6, "{clipped}");
        // Under the limit: untouched.
        let mut g = grads(&model);
        assert_eq!(clip_grad_norm(&mut g, &mut model, 10.0), 5.0);
        let (b, w) = values(&g, &model);
        assert_eq!((b[0], w[1]), (3.0, 4.0));
    }
}
