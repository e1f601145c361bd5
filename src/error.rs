//! The library's error type: every failure a user can cause maps to one variant with a one-line
//! message, so the binary never needs to panic or print a backtrace.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file not found: {0}")]
    ModelNotFound(PathBuf),

    #[error("{path}: not a GGUF file ({reason})")]
    NotGguf { path: PathBuf, reason: String },

    #[error("{path}: truncated or corrupt GGUF: {reason}")]
    CorruptGguf { path: PathBuf, reason: String },

    #[error("unsupported architecture '{0}' (ffnskip runs llama-family models: {supported})", supported = crate::model::config::Architecture::SUPPORTED)]
    UnsupportedArchitecture(String),

    #[error("unsupported quantisation type {dtype} (tensor {tensor})")]
    UnsupportedQuantisation { tensor: String, dtype: String },

    #[error("GGUF metadata: {0}")]
    Metadata(String),

    #[error("tensor '{0}' holds NaN or infinite values")]
    NonFinite(String),

    #[error("GGUF is missing tensor '{0}'")]
    MissingTensor(String),

    #[error("{tokens} tokens do not fit in the context of {context} tokens")]
    ContextOverflow { tokens: usize, context: usize },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("fetching the model: {0}")]
    Fetch(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
