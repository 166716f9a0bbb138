//! The library side of the `lottery` command: the experiment pipeline (validate, prune, train,
//! record) and the weight files exchanged with PyTorch. The binary in `main.rs` is the thin clap
//! layer over it.

pub mod collapse;
pub mod experiment;

/// Weight files exchanged with PyTorch (they live in the core, where methods save theirs too).
pub use lottery_core::weights;

pub use experiment::{DataCache, Prepared, RunError, RunOutcome, execute, prepare};
