//! The run's optimiser (`[train]`: SGD with momentum and weight decay, or Adam) over any module.

use burn::module::{AutodiffModule, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use lottery_core::backend::{Backend as InnerBackend, TrainBackend};
use lottery_core::config::{OptimizerKind, TrainSection};

/// Why an optimiser's saved state does not load.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerStateError {
    /// The optimiser holds state for a parameter outside the given order.
    #[error("the optimiser holds state for a parameter the model does not list")]
    UnknownParameter,
    /// The saved state names a position past the model's parameters.
    #[error("the saved state is for parameter {0}, the model has {1}")]
    OutOfRange(u64, usize),
    /// The bytes are not a record of this optimiser.
    #[error("{0}")]
    Record(String),
}

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

    /// The optimiser's state (momentum buffers, Adam's moments and step counts) as bytes, each
    /// parameter's entry keyed by its position in `order` (burn's ids differ between processes).
    pub fn state_bytes(&self, order: &[ParamId]) -> Result<Vec<u8>, OptimizerStateError> {
        let position = |id: &ParamId| {
            order
                .iter()
                .position(|o| o == id)
                .map(|i| ParamId::from(i as u64))
                .ok_or(OptimizerStateError::UnknownParameter)
        };
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = match self {
            RunOptimizer::Sgd(o) => {
                let record = rekey(o.to_record(), position)?;
                Recorder::<TrainBackend>::record(&recorder, record, ())
            }
            RunOptimizer::Adam(o) => {
                let record = rekey(o.to_record(), position)?;
                Recorder::<TrainBackend>::record(&recorder, record, ())
            }
        };
        bytes.map_err(|e| OptimizerStateError::Record(e.to_string()))
    }

    /// This optimiser with the state that [`RunOptimizer::state_bytes`] wrote, its positions
    /// mapped back onto the parameters of `order`.
    pub fn with_state_bytes(
        self,
        bytes: &[u8],
        order: &[ParamId],
    ) -> Result<Self, OptimizerStateError> {
        let id_at = |id: &ParamId| {
            let i = id.val();
            order
                .get(i as usize)
                .copied()
                .ok_or(OptimizerStateError::OutOfRange(i, order.len()))
        };
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let device = lottery_core::backend::default_device();
        let failed = |e: burn::record::RecorderError| OptimizerStateError::Record(e.to_string());
        Ok(match self {
            RunOptimizer::Sgd(o) => {
                let record = recorder.load(bytes.to_vec(), &device).map_err(failed)?;
                RunOptimizer::Sgd(o.load_record(rekey(record, id_at)?))
            }
            RunOptimizer::Adam(o) => {
                let record = recorder.load(bytes.to_vec(), &device).map_err(failed)?;
                RunOptimizer::Adam(o.load_record(rekey(record, id_at)?))
            }
        })
    }
}

/// The same entries under the keys `key` maps each id to.
fn rekey<V, R>(
    record: R,
    key: impl Fn(&ParamId) -> Result<ParamId, OptimizerStateError>,
) -> Result<R, OptimizerStateError>
where
    R: IntoIterator<Item = (ParamId, V)> + FromIterator<(ParamId, V)>,
{
    record
        .into_iter()
        .map(|(id, v)| Ok((key(&id)?, v)))
        .collect()
}
