//! Core abstractions of `lottery`: masks over named parameters, density arithmetic, exact top-k,
//! the pruning-method plugin contract and its registry, run configuration, and errors.
//!
//! The core knows nothing of particular models, datasets or methods. Methods are plugin crates
//! (see [`plugin`]); models and datasets have registries in their own crates built the same way.

pub mod allocator;
pub mod backend;
pub mod batch_norm;
pub mod config;
pub mod conv;
pub mod density;
pub mod error;
pub mod fsutil;
pub mod fused;
pub mod graph;
#[cfg(feature = "tch")]
pub mod libtorch_backward;
pub mod mask;
pub mod params;
pub mod plugin;
pub mod progress;
pub mod readback;
pub mod registry;
pub mod relu;
pub mod scores;
pub mod shared_folder;
pub mod tensorfile;
pub mod topk;
pub mod weights;

pub use density::Density;
pub use error::{ConfigError, ConfigErrorKind, MaskError, PruneError};
pub use mask::{Mask, MaskSet};
pub use params::{FlatTensor, ParamInfo, ParamKind, ParamValues, PrunableRule};
pub use plugin::{
    BnMode, GRAPH_MASK, LossSpec, MetricRow, PathFlow, Precision, PruneContext, PruneGoal,
    PruneTarget, Pruner, PrunerEntry, PrunerOptions, Scorer, TrainClock,
};
pub use topk::Scope;

pub use inventory;
