//! The library side of the `lottery` command: the experiment pipeline (validate, prune, train,
//! record) and the weight files exchanged with PyTorch. The binary in `main.rs` is the thin clap
//! layer over it.

pub mod collapse;
pub mod experiment;
pub mod weights;

pub use experiment::{DataCache, Prepared, RunError, RunOutcome, execute, prepare};
