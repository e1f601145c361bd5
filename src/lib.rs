//! ffnskip: a llama-family inference engine that speeds up autoregressive decoding by
//! adaptively skipping feed-forward blocks (FFN-SkipLLM, Jaiswal et al., 2024).
//!
//! Layout: [`model`] (GGUF, forward pass, KV cache) · [`skip`] (skip policies) ·
//! [`tokenizer`] and [`chat`] · [`sampling`] and [`generate`] · [`profile`] (saturation profiles,
//! calibration) · [`fetch`] (the default model).

pub mod catalog;
pub mod chat;
pub mod eval;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod profile;
pub mod sampling;
pub mod sandbox;
pub mod server;
pub mod skip;
pub mod speculate;
pub mod tokenizer;

pub use error::{Error, Result};

use std::path::Path;

/// A loaded model with its tokenizer and chat template.
pub struct Engine {
    pub model: model::Llama,
    pub tokenizer: tokenizer::Tokenizer,
    pub chat_template: Option<chat::ChatTemplate>,
}

impl Engine {
    pub fn load(path: &Path) -> Result<Self> {
        let gguf = model::GgufFile::open(path)?;
        let model = model::Llama::load(&gguf)?;
        let tokenizer = tokenizer::Tokenizer::from_gguf(&gguf)?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} tokens but the embedding only {}",
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        let chat_template = chat::ChatTemplate::from_gguf(&gguf, &tokenizer)?;
        Ok(Self { model, tokenizer, chat_template })
    }

    /// A model named by path or catalogue name (fetched on first use), or the default one.
    pub fn load_named(model: Option<&str>) -> Result<Self> {
        Self::load(&catalog::resolve(model)?)
    }
}
