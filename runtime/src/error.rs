//! One error type for everything a user can hand in: files, text, flags.
//!
//! Every fallible public function returns [`Result`]; nothing a user supplies may panic.

use std::path::PathBuf;

/// Errors raised by pgolf-rt. Messages name the file, tensor or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The artifact (compression, zip, pickle or tensor layout) is malformed or unsupported.
    #[error("artifact: {0}")]
    Artifact(String),
    /// The SentencePiece model is malformed or unsupported.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A data shard is malformed.
    #[error("data: {0}")]
    Data(String),
    /// The model configuration cannot be inferred or is inconsistent.
    #[error("model config: {0}")]
    Config(String),
    /// A compute backend failed or is unavailable.
    #[error("backend: {0}")]
    Backend(String),
    /// A user-supplied option is invalid.
    #[error("invalid argument: {0}")]
    Usage(String),
    /// A loss, score or metric came out NaN or infinite (broken weights, flags or backend):
    /// never reported as a number.
    #[error("non-finite result: {0}")]
    Numeric(String),
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
