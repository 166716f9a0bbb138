//! Masked training and evaluation of image classifiers, and the [`ImageTask`] that implements
//! [`PruneTarget`](lottery_core::PruneTarget) for them.
//!
//! Masks are kept by re-masking: after every optimiser step each masked weight is multiplied by its
//! mask, so pruned weights are exactly zero at every forward pass whatever the optimiser state
//! (momentum, weight decay, Adam moments) would do to them.

pub mod optim;
pub mod schedule;
pub mod task;

pub use optim::RunOptimizer;
pub use task::{Checkpoints, ImageTask, MetricRow, TaskError};
