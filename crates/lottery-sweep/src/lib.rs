//! Sweeps: every run of a study's grid as its own `lottery run` process, on local workers or as a
//! Slurm job array, into one shared results directory.
//!
//! A sweep is planned once ([`SweepPlan::create`]; [`SweepPlan::in_memory`] computes the same plan
//! without writing it): each run's resolved config is written to
//! `results/.sweeps/<name>/configs/<run-id>.toml` (`<name>` from the config's path and its
//! overrides, [`sweep_name_with`]), so that whoever executes it (a local worker, a
//! Slurm task on another node) computes exactly that run. Runs claim themselves while they compute
//! (a file lock beside the run, see `lottery_analysis::store::RunClaim`), are recorded atomically,
//! and record why they failed; [`status`] reads all of this back. Finished runs are never redone,
//! so a sweep that was stopped is resumed by starting it again; a run that another process holds
//! is waited for, and computed here if that process lets go of it unfinished.

pub mod local;
pub mod plan;
pub mod slurm;
pub mod status;

pub use local::{LocalOptions, SweepReport, run_local};
pub use plan::{PlannedRun, RunSpec, SweepPlan, sweep_name, sweep_name_with};
pub use slurm::{SlurmJob, SlurmOptions, Submission, submit, write_job};
pub use status::{RunState, StatusCounts, render_status, state_of, unfinished};

use std::path::PathBuf;

/// Errors of a sweep, naming the path or command at fault.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// File system error.
    #[error("{path}: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A plan file that does not parse.
    #[error("{path}: {why}")]
    Format {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A command that could not be started or failed.
    #[error("{command}: {why}")]
    Command {
        /// The command.
        command: String,
        /// Why.
        why: String,
    },
    /// Bad sweep options.
    #[error("{0}")]
    Options(String),
    /// The results store.
    #[error(transparent)]
    Store(#[from] lottery_analysis::StoreError),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}
