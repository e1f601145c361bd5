//! Hand-written quantized matrix-vector kernels for the types where candle's CPU path is slow
//! (Q4_1 has no SIMD kernel there) or rounds differently from llama.cpp (activation
//! quantisation). For the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the arithmetic follows
//! ggml's x86 kernels lane for lane, so greedy outputs match the peer engine: 8 f32 lanes, each
//! accumulating `d_w·d_a·Σ(4 int products)` with FMA, summed pairwise at the end. The k-quants
//! (Q4_K, Q6_K, `blocks_k.rs`) follow the x86 kernel ggml picks for the product's row count
//! (its repacked Q4_K kernels, its vector or tiled Q6_K ones), which the quantised activation
//! rows record. Every kernel is bit-equal to our scalar oracles.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod blocks;
pub mod blocks_k;
pub mod blocks_q5;
pub mod matvec;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_k;
pub mod pool;
mod product;
mod tiles;

pub use blocks::{quantize_q8_0, quantize_q8_1, BlockQ8_0, BlockQ8_1};
pub use blocks_k::{quantize_q8_k, BlockQ8K, Q6_K_TILED_MIN_ROWS};
pub use matvec::{Kernel, QuantMatrix, QuantType, WeightBytes};
pub use product::{Combine, MAX_SHARED};

/// Which rounding the rows of a product follow. ggml rounds some weight types differently in
/// a batch of rows (prefill) than in a one-row product (decode), and a batch here can follow
/// either: as a batch, to match the peer engine's prefill, or row by row, so that a batched
/// speculative verification computes every row exactly as a decode step would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// As the peer engine rounds this many rows together.
    #[default]
    Batch,
    /// Each row as a one-row product rounds it.
    PerRow,
}
