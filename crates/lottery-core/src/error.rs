//! Errors of the core: configuration, masks, and pruning.

use std::path::PathBuf;

/// What went wrong with a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// A key that nothing reads.
    UnknownKey,
    /// A value of the right type but outside what is allowed.
    Invalid,
    /// A name not found in a registry.
    UnknownName,
    /// The file could not be read or parsed.
    Parse,
}

/// A configuration error that names the file, the key, the value and what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{key} = {value}: {expected}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct ConfigError {
    /// The kind of problem.
    pub kind: ConfigErrorKind,
    /// The file the value came from, when it came from one.
    pub file: Option<PathBuf>,
    /// The dotted key, e.g. `prune.density`.
    pub key: String,
    /// The offending value as written.
    pub value: String,
    /// What was expected instead.
    pub expected: String,
}

impl ConfigError {
    /// A new error without a file; see [`ConfigError::in_file`].
    pub fn new(
        kind: ConfigErrorKind,
        key: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            file: None,
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// Attaches the file the value came from.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }
}

/// Errors while reading or writing masks and parameter files.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// I/O on a named file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The safetensors content is malformed.
    #[error("{path}: not a valid safetensors file: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A tensor does not match the parameter it is meant for.
    #[error("{path}: tensor `{key}`: {why}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// Why.
        why: String,
    },
}

/// Errors a pruner reports.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The method cannot work on this model or target.
    #[error("{method}: {why}")]
    Unsupported {
        /// Method name.
        method: String,
        /// Why.
        why: String,
    },
    /// The model, data or training side failed.
    #[error("{0}")]
    Target(String),
    /// The result missed its contract (a wrong count, a shape mismatch).
    #[error("internal error: {0}")]
    Internal(String),
    /// Saving a method's progress in the run's work directory failed.
    #[error("{}: {}", path.display(), without_path(why, path))]
    Progress {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A method's saved progress in the run's work directory does not load (a damaged or
    /// truncated file): the caller sets the work directory aside and starts the run over.
    #[error("saved progress {} does not load: {}", path.display(), without_path(why, path))]
    DamagedProgress {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Training produced a non-finite loss.
    #[error("training diverged at epoch {epoch}, step {step} (loss {loss})")]
    Diverged {
        /// The 1-based epoch in which the loss was seen.
        epoch: usize,
        /// The 1-based optimiser step whose loss it was.
        step: usize,
        /// The loss (NaN or infinite).
        loss: f64,
    },
}

/// `why` without a leading `<path>: `: the cause of a file error often names its file already,
/// and the message names it once.
fn without_path<'a>(why: &'a str, path: &std::path::Path) -> &'a str {
    why.strip_prefix(&format!("{}: ", path.display()))
        .unwrap_or(why)
}

impl PruneError {
    /// `Err(Diverged)` when `loss` is NaN or infinite: how a training loop reports divergence.
    pub fn check_loss(loss: f64, epoch: usize, step: usize) -> Result<(), Self> {
        if loss.is_finite() {
            Ok(())
        } else {
            Err(Self::Diverged { epoch, step, loss })
        }
    }

    /// [`PruneError::Progress`]: saving progress to `path` failed for `why`.
    pub fn progress(path: &std::path::Path, why: impl ToString) -> Self {
        Self::Progress {
            path: path.to_path_buf(),
            why: why.to_string(),
        }
    }

    /// [`PruneError::DamagedProgress`]: the progress saved in `path` does not load, for `why`.
    pub fn damaged_progress(path: &std::path::Path, why: impl ToString) -> Self {
        Self::DamagedProgress {
            path: path.to_path_buf(),
            why: why.to_string(),
        }
    }

    /// The same error as [`PruneError::DamagedProgress`] when it is a [`PruneError::Progress`]
    /// (a load of saved progress that failed); any other error unchanged.
    pub fn into_damaged(self) -> Self {
        match self {
            Self::Progress { path, why } => Self::DamagedProgress { path, why },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_error_names_its_file_once() {
        let path = PathBuf::from("w/imp/final.safetensors");
        let e = PruneError::DamagedProgress {
            path: path.clone(),
            why: "w/imp/final.safetensors: not a valid safetensors file: header too large".into(),
        };
        assert_eq!(e.to_string().matches("final.safetensors").count(), 1, "{e}");
        let e = PruneError::Progress {
            path,
            why: "No space left on device".into(),
        };
        assert_eq!(
            e.to_string(),
            "w/imp/final.safetensors: No space left on device"
        );
    }

    #[test]
    fn divergence_and_damage_read_as_what_they_are() {
        let e = PruneError::check_loss(f64::NAN, 3, 17).unwrap_err();
        assert_eq!(
            e.to_string(),
            "training diverged at epoch 3, step 17 (loss NaN)"
        );
        assert!(PruneError::check_loss(2.5, 1, 1).is_ok());
        let e = PruneError::Progress {
            path: "w/imp/level-002.safetensors".into(),
            why: "invalid header length".into(),
        }
        .into_damaged();
        assert!(matches!(e, PruneError::DamagedProgress { .. }));
        assert_eq!(
            e.to_string(),
            "saved progress w/imp/level-002.safetensors does not load: invalid header length"
        );
    }
}
