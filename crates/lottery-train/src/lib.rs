//! Masked training and evaluation of image classifiers, and the [`ImageTask`] that implements
//! [`PruneTarget`](lottery_core::PruneTarget) for them.
//!
//! Masks are kept by re-masking: after every optimiser step each masked weight is multiplied by its
//! mask, so pruned weights are exactly zero at every forward pass whatever the optimiser state
//! (momentum, weight decay, Adam moments) would do to them.

pub mod checkpoints;
pub mod optim;
pub mod resume;
pub mod schedule;
pub mod task;

pub use checkpoints::{CheckpointNameError, put_checkpoints, take_checkpoints};
pub use optim::{OptimizerStateError, RunOptimizer};
pub use resume::{SavedTraining, TrainingSaver};
pub use task::{Checkpoints, DeviceFlat, ImageTask, MetricRow, TaskError};

/// The values of `t` as a [`FlatTensor`](lottery_core::FlatTensor) (its shape, row-major f32):
/// how a tensor-holding prune target reports its parameters.
pub fn flat_tensor<B: burn::tensor::backend::Backend, const D: usize>(
    t: burn::tensor::Tensor<B, D>,
) -> lottery_core::FlatTensor {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data");
    lottery_core::FlatTensor::new(shape, values)
}
