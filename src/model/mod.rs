//! Loading a llama-family GGUF and running its forward pass.

mod attention;
mod batch;
pub mod config;
mod embedding;
pub mod gguf;
mod gguf_check;
mod kv_cache;
pub mod linear;
mod llama;
mod numerics;
#[cfg(target_arch = "x86_64")]
mod numerics_avx512;
pub mod ops;
mod weights;
mod workspace;

pub use config::Config;
pub use gguf::GgufFile;
pub use kv_cache::{KvCache, KvPrecision};
pub use batch::SeqStep;
pub use llama::{saturation, BlockCounts, Llama, Step};
pub use weights::LayerWeights;
