//! A 2-layer graph convolutional network (Kipf & Welling 2017) as the graph-ticket references
//! build it (VITA-Group/Unified-LTH-GNN's `net_gcn`): `Â · relu(Â X W₀ᵀ) W₁ᵀ` without biases,
//! dropout 0.5 on the hidden layer, `Â = D̃^-½ (A ⊙ m_g + I) D̃^-½` with the edge mask `m_g`
//! applied before the normalisation (self-loops are added after it, so they are never pruned).
//! Parameters are named `net_layer.0.weight` `[hidden, features]` and `net_layer.1.weight`
//! `[classes, hidden]` (PyTorch layout); the edge mask is [`GRAPH_MASK`], one entry per undirected
//! edge, so a pruned edge is gone in both directions.
//!
//! The aggregation is sparse (gather over the edge list, scatter-add into the nodes): its cost is
//! linear in the edges kept. [`GcnTask`] is the [`PruneTarget`] of a graph run: masked training
//! (full batch, one optimiser step per epoch; accuracy reported at the best validation epoch, as
//! the references report it), the joint training of weights with soft edge and weight masks
//! (UGS), GEBT's co-sparsification (ADMM on trainable edge values, weights magnitude-pruned in
//! place every epoch), and the FLOPs of a mask.

use std::ops::ControlFlow;
use std::sync::Arc;

use burn::module::{AutodiffModule, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::{log_softmax, relu};
use indicatif::ProgressBar;
use lottery_core::backend::{Backend as InnerBackend, Device, TrainBackend};
use lottery_core::config::TrainSection;
use lottery_core::plugin::EpochReport;
use lottery_core::{
    FlatTensor, GRAPH_MASK, LossSpec, MaskSet, MetricRow, ParamInfo, ParamKind, ParamValues,
    PathFlow, Precision, PruneError, PruneTarget, TrainClock,
};
use lottery_data::Graph;
use lottery_train::resume::{optimizer_bytes, replay, restore_optimizer};
use lottery_train::{RunOptimizer, SavedTraining, TrainingSaver, flat_tensor};
use rand::{RngExt, SeedableRng};

/// The model name that selects a GCN in a run's config (`model.name`).
pub const MODEL_NAME: &str = "gcn";

/// Name of the first layer's weight.
pub const LAYER0: &str = "net_layer.0.weight";
/// Name of the second layer's weight.
pub const LAYER1: &str = "net_layer.1.weight";
/// Dropout probability on the hidden layer (the references' 0.5).
pub const DROPOUT: f64 = 0.5;
/// Relative noise on the soft masks when a joint training starts, `m = fixed · (1 + c·u)` with
/// `u ~ U(−1, 1)`: UGS's `add_trainable_mask_noise` (c = 1e-5), which breaks the ties of all-one
/// masks (Adam moves tied entries identically, and a tie would be broken by position).
pub const JOINT_MASK_NOISE: f32 = 1e-5;

/// The GCN's weights.
#[derive(Module, Debug)]
pub struct Gcn<B: Backend> {
    /// `[hidden, features]`.
    pub layer0: Param<Tensor<B, 2>>,
    /// `[classes, hidden]`.
    pub layer1: Param<Tensor<B, 2>>,
}

/// The GCN with trainable soft masks on its weights and on the graph's edges (UGS).
#[derive(Module, Debug)]
pub struct MaskedGcn<B: Backend> {
    /// The weights.
    pub net: Gcn<B>,
    /// One value per undirected edge.
    pub graph_mask: Param<Tensor<B, 1>>,
    /// Mask of `layer0`.
    pub mask0: Param<Tensor<B, 2>>,
    /// Mask of `layer1`.
    pub mask1: Param<Tensor<B, 2>>,
}

/// The edge list and the node sets of a graph as tensors.
#[derive(Clone)]
pub struct GraphTensors<B: Backend> {
    nodes: usize,
    edges: usize,
    /// Source of each directed edge: `u` then `v` for every undirected edge `(u, v)`.
    src: Tensor<B, 1, Int>,
    /// Target of each directed edge.
    dst: Tensor<B, 1, Int>,
    features: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    train: Tensor<B, 1, Int>,
    val: Tensor<B, 1, Int>,
    test: Tensor<B, 1, Int>,
}

impl<B: Backend> GraphTensors<B> {
    /// Uploads `g`.
    pub fn new(g: &Graph, device: &B::Device) -> Self {
        let ints = |v: Vec<i64>| {
            Tensor::<B, 1, Int>::from_data(TensorData::new(v.clone(), [v.len()]), device)
        };
        let mut src: Vec<i64> = g.edges.iter().map(|&(u, _)| u as i64).collect();
        src.extend(g.edges.iter().map(|&(_, v)| v as i64));
        let mut dst: Vec<i64> = g.edges.iter().map(|&(_, v)| v as i64).collect();
        dst.extend(g.edges.iter().map(|&(u, _)| u as i64));
        let idx = |v: &[u32]| ints(v.iter().map(|&i| i as i64).collect());
        Self {
            nodes: g.nodes,
            edges: g.edges.len(),
            src: ints(src),
            dst: ints(dst),
            features: Tensor::from_data(
                TensorData::new(g.features.clone(), [g.nodes, g.feature_dim]),
                device,
            ),
            labels: ints(g.labels.iter().map(|&l| l as i64).collect()),
            train: idx(&g.train),
            val: idx(&g.val),
            test: idx(&g.test),
        }
    }

    /// `Â h` with `Â = D̃^-½ (A ⊙ w + I) D̃^-½`, `w` one weight per undirected edge.
    pub fn aggregate(&self, h: Tensor<B, 2>, edge_weights: Tensor<B, 1>) -> Tensor<B, 2> {
        let device = h.device();
        let [n, f] = h.dims();
        let w = Tensor::cat(vec![edge_weights.clone(), edge_weights], 0);
        let degree = Tensor::<B, 1>::ones([n], &device).select_assign(
            0,
            self.dst.clone(),
            w.clone(),
            IndexingUpdateOp::Add,
        );
        let d = degree.clamp_min(1e-12).powf_scalar(-0.5);
        let coef =
            w * d.clone().select(0, self.src.clone()) * d.clone().select(0, self.dst.clone());
        let own = h.clone() * (d.clone() * d).unsqueeze_dim(1);
        let messages = h.select(0, self.src.clone()) * coef.unsqueeze_dim(1);
        own + Tensor::<B, 2>::zeros([n, f], &device).select_assign(
            0,
            self.dst.clone(),
            messages,
            IndexingUpdateOp::Add,
        )
    }

    /// Logits of every node: `Â · dropout(relu(Â X W₀ᵀ)) W₁ᵀ`; `dropout` is the keep-mask of the
    /// hidden layer already scaled by 1/(1 − p), or None in evaluation.
    pub fn forward(
        &self,
        w0: Tensor<B, 2>,
        w1: Tensor<B, 2>,
        edge_weights: Tensor<B, 1>,
        dropout: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let h = self
            .aggregate(self.features.clone(), edge_weights.clone())
            .matmul(w0.transpose());
        let mut h = relu(h);
        if let Some(keep) = dropout {
            h = h * keep;
        }
        self.aggregate(h, edge_weights).matmul(w1.transpose())
    }

    /// Mean cross-entropy and accuracy of `logits` on the nodes `idx`.
    fn loss_on(&self, logits: Tensor<B, 2>, idx: &Tensor<B, 1, Int>) -> (Tensor<B, 1>, f64) {
        let picked = logits.select(0, idx.clone());
        let y = self.labels.clone().select(0, idx.clone());
        let n = y.dims()[0];
        let pred = picked.clone().argmax(1).squeeze_dim::<1>(1);
        let correct: i64 = pred.equal(y.clone()).int().sum().into_scalar().elem();
        let logp = log_softmax(picked, 1);
        let loss = logp.gather(1, y.unsqueeze_dim(1)).mean().neg();
        (loss, correct as f64 / n.max(1) as f64)
    }
}

/// Sizes of a GCN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcnShape {
    /// Input features.
    pub features: usize,
    /// Hidden units (`model.hidden`; UGS's reference commands use 512, GEBT's code 16).
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
}

impl GcnShape {
    /// Shapes of the two weights, PyTorch layout.
    pub fn weight_shapes(&self) -> [(&'static str, [usize; 2]); 2] {
        [
            (LAYER0, [self.hidden, self.features]),
            (LAYER1, [self.classes, self.hidden]),
        ]
    }
}

/// PyTorch's `nn.Linear` initialisation, `U(−1/√fan_in, 1/√fan_in)`, seeded per parameter name.
pub fn initial_values(shape: GcnShape, seed: u64) -> ParamValues {
    let mut out = ParamValues::new();
    for (name, [rows, cols]) in shape.weight_shapes() {
        let stream = name.bytes().fold(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xcbf2_9ce4_8422_2325,
            |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3),
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
        let bound = 1.0 / (cols as f32).sqrt();
        let values = (0..rows * cols)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        out.insert(name.to_string(), FlatTensor::new(vec![rows, cols], values));
    }
    out
}

fn tensor2<B: Backend>(t: &FlatTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(t.values.clone(), [t.shape[0], t.shape[1]]),
        device,
    )
}

/// A GCN on its graph with its training settings: the prune target of a graph run.
pub struct GcnTask {
    graph: Arc<Graph>,
    tensors: GraphTensors<TrainBackend>,
    shape: GcnShape,
    model: Gcn<TrainBackend>,
    train_cfg: TrainSection,
    seed: u64,
    device: Device,
    step: usize,
    round: usize,
    phase: String,
    metrics: Vec<MetricRow>,
    progress: ProgressBar,
    /// Where trainings save their state to resume from ([`PruneTarget::save_training_in`]).
    saver: Option<TrainingSaver>,
}

impl GcnTask {
    /// A GCN with `hidden` units on `graph`, initialised with `seed`.
    pub fn new(graph: Arc<Graph>, hidden: usize, train_cfg: TrainSection, seed: u64) -> Self {
        let device = lottery_core::backend::default_device();
        let shape = GcnShape {
            features: graph.feature_dim,
            hidden,
            classes: graph.classes,
        };
        let values = initial_values(shape, seed);
        let model = Gcn {
            layer0: Param::from_tensor(tensor2(&values[LAYER0], &device)),
            layer1: Param::from_tensor(tensor2(&values[LAYER1], &device)),
        };
        Self {
            tensors: GraphTensors::new(&graph, &device),
            graph,
            shape,
            model,
            train_cfg,
            seed,
            device,
            step: 0,
            round: 0,
            phase: "ticket".into(),
            metrics: vec![],
            progress: ProgressBar::hidden(),
            saver: None,
        }
    }

    /// The trained weights (both layers), by name.
    fn weight_values(&self) -> Result<ParamValues, PruneError> {
        self.values(&[LAYER0.to_string(), LAYER1.to_string()])
    }

    /// The training's state now, to save; `best` is the loop's best (validation, test) accuracy.
    fn saved_state(
        &self,
        optim: &RunOptimizer<Gcn<TrainBackend>>,
        best: Option<(f64, f64)>,
        reports: &[EpochReport],
    ) -> Result<SavedTraining, PruneError> {
        Ok(SavedTraining {
            step: self.step,
            values: self.weight_values()?,
            metrics: self.metrics.clone(),
            reports: reports.to_vec(),
            optimizer: optimizer_bytes(optim, &[self.model.layer0.id, self.model.layer1.id])?,
            loop_state: serde_json::json!({ "best": best.map(|(v, t)| [v, t]) }),
            checkpoints: Default::default(),
        })
    }

    /// `fixed · (1 + c·u)`, `u ~ U(−1, 1)` from the run's seed and `salt` (which the current
    /// round and phase choose, so that a resumed method draws what it drew before).
    fn noisy<const D: usize>(
        &self,
        fixed: Tensor<TrainBackend, D>,
        salt: u64,
    ) -> Tensor<TrainBackend, D> {
        let shape = fixed.shape();
        let n = shape.num_elements();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ 0x6a6f_696e_7400_0000 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let noise: Vec<f32> = (0..n)
            .map(|_| 1.0 + JOINT_MASK_NOISE * rng.random_range(-1.0f32..1.0))
            .collect();
        fixed * Tensor::from_data(TensorData::new(noise, shape), &self.device)
    }

    /// Shows training progress on `bar`.
    pub fn with_progress(mut self, bar: ProgressBar) -> Self {
        self.progress = bar;
        self
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Sizes of the network.
    pub fn shape(&self) -> GcnShape {
        self.shape
    }

    /// Every recorded metric row.
    pub fn metric_rows(&self) -> &[MetricRow] {
        &self.metrics
    }

    /// The edge weights of `mask` (1 kept, 0 pruned; all ones without a graph mask).
    fn edge_weights<B: Backend>(&self, mask: &MaskSet, device: &B::Device) -> Tensor<B, 1> {
        let e = self.graph.edges.len();
        match mask.get(GRAPH_MASK) {
            Some(m) => Tensor::from_data(TensorData::new(m.as_f32(), [e]), device),
            None => Tensor::ones([e], device),
        }
    }

    fn weight_mask<B: Backend>(
        &self,
        mask: &MaskSet,
        name: &str,
        shape: [usize; 2],
        device: &B::Device,
    ) -> Tensor<B, 2> {
        match mask.get(name) {
            Some(m) => Tensor::from_data(TensorData::new(m.as_f32(), shape), device),
            None => Tensor::ones(shape, device),
        }
    }

    /// The graph tensors and the logits of the masked network without dropout (evaluation).
    fn eval_logits(&self, mask: &MaskSet) -> (GraphTensors<InnerBackend>, Tensor<InnerBackend, 2>) {
        let inner: Gcn<InnerBackend> = self.model.valid();
        let t = self.tensors.clone().inner();
        let [s0, s1] = self.shape.weight_shapes();
        let w0 =
            inner.layer0.val() * self.weight_mask::<InnerBackend>(mask, LAYER0, s0.1, &self.device);
        let w1 =
            inner.layer1.val() * self.weight_mask::<InnerBackend>(mask, LAYER1, s1.1, &self.device);
        let edges = self.edge_weights::<InnerBackend>(mask, &self.device);
        let logits = t.forward(w0, w1, edges, None);
        (t, logits)
    }

    /// Loss, validation accuracy and test accuracy of the masked network (no dropout).
    pub fn evaluate_splits(&self, mask: &MaskSet) -> (f64, f64, f64) {
        let (t, logits) = self.eval_logits(mask);
        let (_, val) = t.loss_on(logits.clone(), &t.val);
        let (loss, test) = t.loss_on(logits, &t.test);
        (loss.into_scalar().elem::<f64>(), val, test)
    }

    /// The entry `Â_uv = 1/√(d̃_u d̃_v)` of each edge in the normalised adjacency of the whole
    /// graph (`d̃` counts the self-loop): what [`PruneTarget::values`] gives for [`GRAPH_MASK`],
    /// the edge's "magnitude".
    pub fn edge_values(&self) -> Vec<f32> {
        let d = self.graph.degrees();
        self.graph
            .edges
            .iter()
            .map(|&(u, v)| {
                let du = (d[u as usize] + 1) as f64;
                let dv = (d[v as usize] + 1) as f64;
                (1.0 / (du * dv).sqrt()) as f32
            })
            .collect()
    }

    /// Mean cross-entropy of the masked network on the training nodes, without dropout (the loss
    /// [`PruneTarget::loss_gradients`] differentiates).
    pub fn train_loss(&self, mask: &MaskSet) -> f64 {
        let (t, logits) = self.eval_logits(mask);
        t.loss_on(logits, &t.train).0.into_scalar().elem::<f64>()
    }

    /// The dropout keep-mask of one training step, scaled by 1/(1 − p), from the run's seed and
    /// the step (the same run draws the same masks).
    fn dropout_mask<B: Backend>(&self, salt: u64, device: &B::Device) -> Tensor<B, 2> {
        let n = self.graph.nodes * self.shape.hidden;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ (self.step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt,
        );
        let scale = (1.0 / (1.0 - DROPOUT)) as f32;
        let keep: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f64>() < DROPOUT {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        Tensor::from_data(
            TensorData::new(keep, [self.graph.nodes, self.shape.hidden]),
            device,
        )
    }

    fn lr(&self) -> f64 {
        // One optimiser step an epoch.
        lottery_train::schedule::lr_at(&self.train_cfg, self.step, 1)
    }

    /// Inference FLOPs of the dense network.
    pub fn dense_flops(&self) -> f64 {
        self.flops(
            self.graph.edges.len(),
            [
                self.shape.hidden * self.shape.features,
                self.shape.classes * self.shape.hidden,
            ],
        )
    }

    /// FLOPs of one forward pass with `edges` kept edges and `kept` weights per layer: each layer
    /// aggregates its input over `2·edges + n` adjacency entries (the reference multiplies `Â`
    /// by the layer's input, then applies the weight), then multiplies by its kept weights.
    pub fn flops(&self, edges: usize, kept: [usize; 2]) -> f64 {
        let n = self.graph.nodes as f64;
        let nnz = (2 * edges + self.graph.nodes) as f64;
        let macs = nnz * self.shape.features as f64
            + n * kept[0] as f64
            + nnz * self.shape.hidden as f64
            + n * kept[1] as f64;
        2.0 * macs
    }
}

/// How [`GcnTask::train_masks_jointly`] trains (the unified graph sparsification of UGS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointMaskSpec {
    /// Epochs of training.
    pub epochs: usize,
    /// λ of the L1 penalty on the graph mask (subgradient `λ·sign(m)`).
    pub graph_l1: f64,
    /// λ of the L1 penalty on the weight masks.
    pub weight_l1: f64,
}

/// One epoch of [`GcnTask::train_masks_jointly`].
#[derive(Debug, Clone, PartialEq)]
pub struct JointMaskEpoch {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Training loss (without the penalties).
    pub train_loss: f64,
    /// Validation accuracy of the network with its soft masks.
    pub val_accuracy: f64,
    /// Test accuracy of the network with its soft masks.
    pub test_accuracy: f64,
    /// The soft masks: [`GRAPH_MASK`] and one per prunable weight (pruned entries stay 0).
    pub masks: ParamValues,
}

impl GcnTask {
    /// Trains the weights together with a real-valued mask on each prunable weight and on the
    /// graph's edges ([`GRAPH_MASK`]), both starting from `fixed` (1 kept, 0 pruned; pruned entries
    /// stay 0) with a tiny seeded noise that breaks ties, as UGS starts them: the forward uses `w · m_w` and edge weights `m_g` before the adjacency is
    /// normalised, and the loss adds the L1 penalties of `spec`. The run's optimiser and learning
    /// rate train weights and masks alike; the clock is untouched and the weights are left as
    /// trained (rewind them). Graph networks only.
    pub fn train_masks_jointly(
        &mut self,
        fixed: &MaskSet,
        spec: &JointMaskSpec,
        on_epoch: &mut dyn FnMut(&JointMaskEpoch) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        let [s0, s1] = self.shape.weight_shapes();
        let f0 = self.weight_mask::<TrainBackend>(fixed, LAYER0, s0.1, &self.device);
        let f1 = self.weight_mask::<TrainBackend>(fixed, LAYER1, s1.1, &self.device);
        let fg = self.edge_weights::<TrainBackend>(fixed, &self.device);
        let salt = self.phase.bytes().fold(self.round as u64 * 3, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
        });
        let mut model = MaskedGcn {
            net: Gcn {
                layer0: self.model.layer0.clone(),
                layer1: self.model.layer1.clone(),
            },
            graph_mask: Param::from_tensor(self.noisy(fg.clone(), salt).detach().require_grad()),
            mask0: Param::from_tensor(self.noisy(f0.clone(), salt ^ 1).detach().require_grad()),
            mask1: Param::from_tensor(self.noisy(f1.clone(), salt ^ 2).detach().require_grad()),
        };
        let mut optim = RunOptimizer::<MaskedGcn<TrainBackend>>::new(&self.train_cfg);
        let lr = self.train_cfg.lr;
        let start = self.step;
        for epoch in 1..=spec.epochs {
            let keep = self.dropout_mask::<TrainBackend>(epoch as u64 ^ 0x5547_5300, &self.device);
            let m0 = model.mask0.val() * f0.clone();
            let m1 = model.mask1.val() * f1.clone();
            let mg = model.graph_mask.val() * fg.clone();
            let logits = self.tensors.forward(
                model.net.layer0.val() * m0.clone(),
                model.net.layer1.val() * m1.clone(),
                mg.clone(),
                Some(keep),
            );
            let (loss, _) = self.tensors.loss_on(logits, &self.tensors.train);
            let train_loss = loss.clone().into_scalar().elem::<f64>();
            if let Err(e) = PruneError::check_loss(train_loss, epoch, epoch) {
                self.step = start;
                self.model = model.net;
                return Err(e);
            }
            let objective = loss
                + mg.abs().sum().mul_scalar(spec.graph_l1)
                + (m0.abs().sum() + m1.abs().sum()).mul_scalar(spec.weight_l1);
            let grads = GradientsParams::from_grads(objective.backward(), &model);
            model = optim.step(lr, model, grads);
            // Pruned entries stay exactly 0.
            model.mask0 = model
                .mask0
                .map(|m| (m * f0.clone()).detach().require_grad());
            model.mask1 = model
                .mask1
                .map(|m| (m * f1.clone()).detach().require_grad());
            model.graph_mask = model
                .graph_mask
                .map(|m| (m * fg.clone()).detach().require_grad());

            // Evaluation with the soft masks, no dropout.
            let inner = model.valid();
            let t = self.tensors.clone().inner();
            let logits = t.forward(
                inner.net.layer0.val() * inner.mask0.val(),
                inner.net.layer1.val() * inner.mask1.val(),
                inner.graph_mask.val(),
                None,
            );
            let (_, val) = t.loss_on(logits.clone(), &t.val);
            let (_, test) = t.loss_on(logits, &t.test);
            let mut masks = ParamValues::new();
            masks.insert(GRAPH_MASK.into(), flat_tensor(inner.graph_mask.val()));
            masks.insert(LAYER0.into(), flat_tensor(inner.mask0.val()));
            masks.insert(LAYER1.into(), flat_tensor(inner.mask1.val()));
            self.step = start + epoch; // for the rows recorded in the hook
            let report = JointMaskEpoch {
                epoch,
                train_loss,
                val_accuracy: val,
                test_accuracy: test,
                masks,
            };
            if on_epoch(&report).is_break() {
                break;
            }
        }
        self.step = start;
        self.model = model.net;
        Ok(())
    }
}

impl PruneTarget for GcnTask {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn params(&self) -> Vec<ParamInfo> {
        let mut out: Vec<ParamInfo> = self
            .shape
            .weight_shapes()
            .into_iter()
            .map(|(name, s)| ParamInfo {
                name: name.to_string(),
                shape: s.to_vec(),
                kind: ParamKind::LinearWeight,
                shortcut: false,
            })
            .collect();
        out.push(ParamInfo {
            name: GRAPH_MASK.to_string(),
            shape: vec![self.graph.edges.len()],
            kind: ParamKind::Other,
            shortcut: false,
        });
        out
    }

    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError> {
        let mut out = ParamValues::new();
        for name in names {
            let v = match name.as_str() {
                LAYER0 => flat_tensor(self.model.layer0.val().inner()),
                LAYER1 => flat_tensor(self.model.layer1.val().inner()),
                GRAPH_MASK => FlatTensor::new(vec![self.graph.edges.len()], self.edge_values()),
                other => {
                    return Err(PruneError::Target(format!(
                        "the GCN has no parameter {other}"
                    )));
                }
            };
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError> {
        for (name, v) in values {
            let want = match name.as_str() {
                LAYER0 => self.shape.weight_shapes()[0].1,
                LAYER1 => self.shape.weight_shapes()[1].1,
                GRAPH_MASK => continue,
                other => {
                    return Err(PruneError::Target(format!(
                        "the GCN has no parameter {other}"
                    )));
                }
            };
            if v.shape != want {
                return Err(PruneError::Target(format!(
                    "{name}: shape {:?}, the GCN's is {want:?}",
                    v.shape
                )));
            }
            let t = Param::from_tensor(tensor2::<TrainBackend>(v, &self.device));
            if name == LAYER0 {
                self.model.layer0 = t;
            } else {
                self.model.layer1 = t;
            }
        }
        Ok(())
    }

    fn loss_gradients(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        _spec: &LossSpec,
    ) -> Result<ParamValues, PruneError> {
        // Full batch: the training nodes' loss, no dropout.
        let w0 = self.model.layer0.val().inner();
        let w1 = self.model.layer1.val().inner();
        let w0 = Tensor::<TrainBackend, 2>::from_inner(w0).require_grad();
        let w1 = Tensor::<TrainBackend, 2>::from_inner(w1).require_grad();
        let [s0, s1] = self.shape.weight_shapes();
        let logits = self.tensors.forward(
            w0.clone() * self.weight_mask::<TrainBackend>(mask, LAYER0, s0.1, &self.device),
            w1.clone() * self.weight_mask::<TrainBackend>(mask, LAYER1, s1.1, &self.device),
            self.edge_weights::<TrainBackend>(mask, &self.device),
            None,
        );
        let (loss, _) = self.tensors.loss_on(logits, &self.tensors.train);
        let grads = loss.backward();
        let mut out = ParamValues::new();
        for name in names {
            let g = match name.as_str() {
                LAYER0 => w0.grad(&grads),
                LAYER1 => w1.grad(&grads),
                other => return Err(PruneError::Target(format!("no gradient for {other}"))),
            }
            .ok_or_else(|| PruneError::Internal(format!("no gradient reached {name}")))?;
            out.insert(name.clone(), flat_tensor(g));
        }
        Ok(out)
    }

    fn loss_hessian_vector(
        &mut self,
        _names: &[String],
        _mask: &MaskSet,
        _spec: &LossSpec,
        _vector: &ParamValues,
    ) -> Result<ParamValues, PruneError> {
        Err(PruneError::Target(
            "Hessian-vector products are not implemented for the GCN".into(),
        ))
    }

    fn path_flow(
        &mut self,
        _names: &[String],
        _mask: &MaskSet,
        _precision: Precision,
    ) -> Result<PathFlow, PruneError> {
        Err(PruneError::Target(
            "synaptic flow is not implemented for the GCN".into(),
        ))
    }

    fn clock(&self) -> TrainClock {
        TrainClock {
            step: self.step,
            steps_per_epoch: 1,
            run_steps: self.train_cfg.epochs,
        }
    }

    fn train_watching(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        let mut optim = RunOptimizer::<Gcn<TrainBackend>>::new(&self.train_cfg);
        let [s0, s1] = self.shape.weight_shapes();
        let m0 = self.weight_mask::<TrainBackend>(mask, LAYER0, s0.1, &self.device);
        let m1 = self.weight_mask::<TrainBackend>(mask, LAYER1, s1.1, &self.device);
        let edges = self.edge_weights::<TrainBackend>(mask, &self.device);
        let remask = |model: Gcn<TrainBackend>| Gcn {
            layer0: model
                .layer0
                .map(|w| (w * m0.clone()).detach().require_grad()),
            layer1: model
                .layer1
                .map(|w| (w * m1.clone()).detach().require_grad()),
        };
        self.model = remask(self.model.clone());
        let start_step = self.step;
        let mut best: Option<(f64, f64)> = None; // (validation, test) at the best validation
        let mut saver = self.saver.clone();
        let mut reports: Vec<EpochReport> = vec![];
        let mut key = None;
        if let Some(saver) = saver.as_mut() {
            let (k, saved) = saver.start(start_step, end_step, mask, &self.weight_values()?)?;
            key = Some(k);
            if let Some(saved) = saved {
                self.set_values(&saved.values)?;
                self.model = remask(self.model.clone());
                let ids = [self.model.layer0.id, self.model.layer1.id];
                optim = restore_optimizer(optim, &saved, &ids, saver.dir())?;
                best = serde_json::from_value::<Option<[f64; 2]>>(saved.loop_state["best"].clone())
                    .map_err(|e| PruneError::damaged_progress(saver.dir(), e))?
                    .map(|[v, t]| (v, t));
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
        while self.step < end_step {
            let lr = self.lr();
            let keep = self.dropout_mask::<TrainBackend>(1, &self.device);
            let logits = self.tensors.forward(
                self.model.layer0.val(),
                self.model.layer1.val(),
                edges.clone(),
                Some(keep),
            );
            let (loss, train_acc) = self.tensors.loss_on(logits, &self.tensors.train);
            let train_loss = loss.clone().into_scalar().elem::<f64>();
            // One step an epoch: the step is the epoch.
            PruneError::check_loss(train_loss, self.step + 1, self.step + 1)?;
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            self.model = remask(optim.step(lr, self.model.clone(), grads));
            self.step += 1;
            self.progress.inc(1);
            let (test_loss, val, test) = self.evaluate_splits(mask);
            PruneError::check_loss(test_loss, self.step, self.step)?;
            if best.is_none_or(|(v, _)| val > v) {
                best = Some((val, test));
            }
            let (_, best_test) = best.expect("set");
            self.record("train", "loss", train_loss);
            self.record("train", "accuracy", train_acc);
            self.record("train", "lr", lr);
            self.record("val", "accuracy", val);
            self.record("test", "loss", test_loss);
            self.record("test", "accuracy", test);
            self.record("test", "accuracy-at-best-val", best_test);
            let report = EpochReport {
                epoch: self.step,
                step: self.step,
                train_loss,
                train_accuracy: train_acc,
                test_loss: Some(test_loss),
                test_accuracy: Some(best_test),
                lr,
            };
            reports.push(report.clone());
            if let (Some(saver), Some(key)) = (saver.as_mut(), &key)
                && self.step < end_step
            {
                saver.save_when_due(key, || self.saved_state(&optim, best, &reports))?;
            }
            let watched = self.values(watch)?;
            if on_epoch(&report, &watched).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn mask_flops(&self, mask: &MaskSet) -> Result<f64, PruneError> {
        let edges = mask
            .get(GRAPH_MASK)
            .map(|m| m.kept())
            .unwrap_or(self.graph.edges.len());
        let [s0, s1] = self.shape.weight_shapes();
        let kept =
            |name: &str, s: [usize; 2]| mask.get(name).map(|m| m.kept()).unwrap_or(s[0] * s[1]);
        Ok(self.flops(edges, [kept(LAYER0, s0.1), kept(LAYER1, s1.1)]))
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
        let (loss, _, test) = self.evaluate_splits(mask);
        Ok((loss, test))
    }

    fn fresh_values(&self, seed: u64) -> ParamValues {
        initial_values(self.shape, seed)
    }

    fn set_phase(&mut self, round: usize, phase: &str) {
        self.round = round;
        self.phase = phase.to_string();
    }

    fn record(&mut self, split: &str, metric: &str, value: f64) {
        self.metrics.push(MetricRow {
            round: self.round as u64,
            phase: self.phase.clone(),
            step: self.step as u64,
            epoch: self.step as u64,
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

impl<B: burn::tensor::backend::AutodiffBackend> GraphTensors<B> {
    /// The same tensors on the inner backend (no autodiff), for evaluation.
    pub fn inner(self) -> GraphTensors<B::InnerBackend> {
        GraphTensors {
            nodes: self.nodes,
            edges: self.edges,
            src: self.src.inner(),
            dst: self.dst.inner(),
            features: self.features.inner(),
            labels: self.labels.inner(),
            train: self.train.inner(),
            val: self.val.inner(),
            test: self.test.inner(),
        }
    }
}

/// The learnt value of every undirected edge while GEBT sparsifies the graph (the reference's
/// trainable adjacency `adj − I`, one value shared by both directions and both layers).
#[derive(Module, Debug)]
pub struct EdgeValues<B: Backend> {
    /// One value per undirected edge; an edge enters the forward with weight `max(a, 0)`.
    pub values: Param<Tensor<B, 1>>,
}

/// How [`GcnTask::co_sparsify`] trains: GEBT's simultaneous sparsification (You et al. 2022,
/// GATECH-EIC/Early-Bird-GCN `run_threshold_jointEB.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoSparsifySpec {
    /// Epochs of search.
    pub epochs: usize,
    /// The weights kept by the in-place magnitude pruning that follows every weight step (exact
    /// counts). None: the weights are neither trained nor pruned (the graph-only search of GEB
    /// tickets, on weights trained beforehand).
    pub weights: Option<(lottery_core::Density, lottery_core::topk::Scope)>,
    /// Edges kept by the graph mask and by the ADMM projection `Z`.
    pub edges_kept: usize,
    /// Adam learning rate of the weights (the reference's 0.01).
    pub lr: f64,
    /// L2 weight decay of the first layer only (the reference's 5e-4 on `conv1`, 0 on `conv2`).
    pub weight_decay: f64,
    /// Adam learning rate of the edge values (the reference's 1e-3).
    pub graph_lr: f64,
    /// ρ of the ADMM penalty (the reference's 1e-3).
    pub rho: f64,
}

/// One epoch of [`GcnTask::co_sparsify`].
#[derive(Debug, Clone, PartialEq)]
pub struct CoSparsifyEpoch {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Cross-entropy of the graph step (with dropout).
    pub train_loss: f64,
    /// Validation accuracy of the network as it is (pruned weights, learnt edge values).
    pub val_accuracy: f64,
    /// Test accuracy of the same.
    pub test_accuracy: f64,
    /// The weight mask after this epoch's in-place pruning (None without weight pruning).
    pub weight_mask: Option<MaskSet>,
    /// The `edges_kept` edges of largest |learnt value|.
    pub graph_mask: lottery_core::Mask,
    /// The learnt value of every edge.
    pub edge_values: Vec<f32>,
    /// The ADMM variables `Z` and `U` after this epoch's update.
    pub admm: (Vec<f32>, Vec<f32>),
}

impl GcnTask {
    /// GEBT's co-sparsification. Every epoch: (1) one Adam step on the weights (cross-entropy
    /// with dropout; L2 `weight_decay` on the first layer), then the weights are pruned **in
    /// place** to the `spec.weights` density by magnitude (one threshold over both layers when
    /// global; pruned weights may grow back at later steps, as in the reference, whose Adam keeps
    /// updating them); (2) one Adam step on the edge values `a` (start 1) with the objective
    /// `¼·CE + ρ/N²·Σ_e (a_e + U_e − Z_e)²` (the reference's `CE + ρ·Σ_layers mse(adj + U, Z + I)`
    /// with its gradient masked to the edges, symmetrised and averaged over the two layers: its
    /// two per-layer adjacencies get the same gradient from the same start, so they stay equal
    /// and one value per undirected edge is the same optimisation); the graph mask is the
    /// `edges_kept` edges of largest |a|; (3) the ADMM updates `Z = Π(a + U)` (keep the
    /// `edges_kept` entries of largest magnitude) and `U ← U + a − Z`. Edges enter the forward
    /// with weight `max(a, 0)` before the normalisation (the reference drops entries ≤ 0).
    /// The clock is untouched; the weights are left as the search left them (pruned).
    pub fn co_sparsify(
        &mut self,
        spec: &CoSparsifySpec,
        on_epoch: &mut dyn FnMut(&CoSparsifyEpoch) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        let e = self.graph.edges.len();
        let n2 = (self.graph.nodes as f64).powi(2);
        let mut net = Gcn {
            layer0: self.model.layer0.clone(),
            layer1: self.model.layer1.clone(),
        };
        let mut edges = EdgeValues {
            values: Param::from_tensor(
                Tensor::<TrainBackend, 1>::ones([e], &self.device).require_grad(),
            ),
        };
        let (mut z, mut u) = (vec![0f32; e], vec![0f32; e]);
        let adam = |lr: f64| TrainSection {
            optimizer: lottery_core::config::OptimizerKind::Adam,
            lr,
            weight_decay: 0.0,
            ..self.train_cfg.clone()
        };
        let mut wopt = RunOptimizer::<Gcn<TrainBackend>>::new(&adam(spec.lr));
        let mut gopt = RunOptimizer::<EdgeValues<TrainBackend>>::new(&adam(spec.graph_lr));
        let [s0, s1] = self.shape.weight_shapes();
        let start = self.step;
        let finish = |task: &mut Self, net: Gcn<TrainBackend>| {
            task.step = start;
            task.model = net;
        };
        for epoch in 1..=spec.epochs {
            self.step = start + epoch;
            let mut weight_mask = None;
            if let Some((density, scope)) = spec.weights {
                // (1) The weight step, then in-place magnitude pruning.
                let keep = self.dropout_mask::<TrainBackend>(0x4745_4201, &self.device);
                let a = relu(edges.values.val().detach());
                let logits =
                    self.tensors
                        .forward(net.layer0.val(), net.layer1.val(), a, Some(keep));
                let (loss, _) = self.tensors.loss_on(logits, &self.tensors.train);
                let l = loss.clone().into_scalar().elem::<f64>();
                if let Err(err) = PruneError::check_loss(l, epoch, epoch) {
                    finish(self, net);
                    return Err(err);
                }
                let objective = loss
                    + net
                        .layer0
                        .val()
                        .powf_scalar(2.0)
                        .sum()
                        .mul_scalar(0.5 * spec.weight_decay);
                let grads = GradientsParams::from_grads(objective.backward(), &net);
                net = wopt.step(spec.lr, net, grads);
                let mut scores = ParamValues::new();
                for (name, w) in [(LAYER0, net.layer0.val()), (LAYER1, net.layer1.val())] {
                    let mut t = flat_tensor(w.inner());
                    t.values.iter_mut().for_each(|x| *x = x.abs());
                    scores.insert(name.to_string(), t);
                }
                let mask = match lottery_core::topk::top_k_mask(&scores, density, scope, None) {
                    Ok(m) => m,
                    Err(err) => {
                        finish(self, net);
                        return Err(err);
                    }
                };
                let m0 = self.weight_mask::<TrainBackend>(&mask, LAYER0, s0.1, &self.device);
                let m1 = self.weight_mask::<TrainBackend>(&mask, LAYER1, s1.1, &self.device);
                net = Gcn {
                    layer0: net.layer0.map(|w| (w * m0.clone()).detach().require_grad()),
                    layer1: net.layer1.map(|w| (w * m1.clone()).detach().require_grad()),
                };
                weight_mask = Some(mask);
            }

            // (2) The graph step.
            let keep = self.dropout_mask::<TrainBackend>(0x4745_4202, &self.device);
            let a = edges.values.val();
            let logits = self.tensors.forward(
                net.layer0.val().detach(),
                net.layer1.val().detach(),
                relu(a.clone()),
                Some(keep),
            );
            let (loss, _) = self.tensors.loss_on(logits, &self.tensors.train);
            let train_loss = loss.clone().into_scalar().elem::<f64>();
            if let Err(err) = PruneError::check_loss(train_loss, epoch, epoch) {
                finish(self, net);
                return Err(err);
            }
            let shift: Vec<f32> = u.iter().zip(&z).map(|(u, z)| u - z).collect();
            let shift =
                Tensor::<TrainBackend, 1>::from_data(TensorData::new(shift, [e]), &self.device);
            let objective = loss.mul_scalar(0.25)
                + (a + shift).powf_scalar(2.0).sum().mul_scalar(spec.rho / n2);
            let grads = GradientsParams::from_grads(objective.backward(), &edges);
            edges = gopt.step(spec.graph_lr, edges, grads);
            let values = flat_tensor(edges.values.val().inner()).values;
            let magnitude: Vec<f32> = values.iter().map(|x| x.abs()).collect();
            let graph_mask =
                match lottery_core::graph::keep_top_edges(&magnitude, spec.edges_kept, None) {
                    Ok(m) => m,
                    Err(err) => {
                        finish(self, net);
                        return Err(err);
                    }
                };

            // (3) ADMM: Z = Π(a + U), U ← U + a − Z.
            let sum: Vec<f32> = values.iter().zip(&u).map(|(a, u)| a + u).collect();
            let projected = lottery_core::graph::keep_top_edges(
                &sum.iter().map(|x| x.abs()).collect::<Vec<_>>(),
                spec.edges_kept,
                None,
            )?;
            for i in 0..e {
                z[i] = if projected.keep[i] { sum[i] } else { 0.0 };
                u[i] += values[i] - z[i];
            }

            // Evaluation: the network as it is, no dropout.
            let inner_net = net.valid();
            let t = self.tensors.clone().inner();
            let logits = t.forward(
                inner_net.layer0.val(),
                inner_net.layer1.val(),
                relu(edges.values.val().inner()),
                None,
            );
            let (_, val) = t.loss_on(logits.clone(), &t.val);
            let (_, test) = t.loss_on(logits, &t.test);
            let report = CoSparsifyEpoch {
                epoch,
                train_loss,
                val_accuracy: val,
                test_accuracy: test,
                weight_mask,
                graph_mask,
                edge_values: values,
                admm: (z.clone(), u.clone()),
            };
            if on_epoch(&report).is_break() {
                break;
            }
        }
        finish(self, net);
        Ok(())
    }
}
