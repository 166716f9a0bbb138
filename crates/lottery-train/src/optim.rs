//! The run's optimiser (`[train]`: SGD with momentum and weight decay, or Adam) over any module.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use lottery_core::backend::{Backend as InnerBackend, TrainBackend};
use lottery_core::config::{OptimizerKind, TrainSection};

/// Either optimiser of a run, with fresh state, over the module `M`.
pub enum RunOptimizer<M: AutodiffModule<TrainBackend>> {
    /// SGD, with momentum (and Nesterov) when configured.
    Sgd(OptimizerAdaptor<Sgd<InnerBackend>, M, TrainBackend>),
    /// Adam (ε = 1e-8).
    Adam(OptimizerAdaptor<Adam, M, TrainBackend>),
}

impl<M: AutodiffModule<TrainBackend>> RunOptimizer<M> {
    /// The optimiser `c` configures, weight decay included.
    pub fn new(c: &TrainSection) -> Self {
        let wd = (c.weight_decay > 0.0).then(|| WeightDecayConfig::new(c.weight_decay as f32));
        match c.optimizer {
            OptimizerKind::Sgd => RunOptimizer::Sgd(
                SgdConfig::new()
                    .with_momentum((c.momentum > 0.0).then_some(MomentumConfig {
                        momentum: c.momentum,
                        dampening: 0.0,
                        nesterov: c.nesterov,
                    }))
                    .with_weight_decay(wd)
                    .init(),
            ),
            OptimizerKind::Adam => RunOptimizer::Adam(
                AdamConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(wd)
                    .init(),
            ),
        }
    }

    /// One step at learning rate `lr`.
    pub fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        match self {
            RunOptimizer::Sgd(o) => o.step(lr, module, grads),
            RunOptimizer::Adam(o) => o.step(lr, module, grads),
        }
    }
}
