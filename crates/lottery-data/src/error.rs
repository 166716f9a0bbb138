//! Data errors, each naming the file at fault.

use std::path::PathBuf;

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file is missing.
    #[error("{path}: missing ({hint})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// Reading failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is shorter than its header says.
    #[error("{path}: truncated: expected {expected} bytes of data, found {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A header field holds a value the reader cannot use: zero, or so large that the sizes it
    /// implies overflow or pass a limit.
    #[error("{path}: header field {field} = {value}: {why}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The field, as the format names it.
        field: String,
        /// Its value.
        value: u64,
        /// Why it is rejected.
        why: String,
    },
    /// The content is not in the expected format.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl DataError {
    /// Reads a whole file, mapping a missing file to [`DataError::Missing`] with `hint`.
    pub fn read(path: &std::path::Path, hint: &str) -> Result<Vec<u8>, DataError> {
        std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::Missing {
                    path: path.to_path_buf(),
                    hint: hint.to_string(),
                }
            } else {
                DataError::Io {
                    path: path.to_path_buf(),
                    cause: source,
                }
            }
        })
    }
}
