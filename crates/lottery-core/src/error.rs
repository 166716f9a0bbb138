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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
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
    /// Saving or reading a method's progress in the run's work directory failed.
    #[error("{}: {why}", path.display())]
    Progress {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}
