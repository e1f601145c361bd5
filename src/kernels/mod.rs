//! Hand-written quantized matrix-vector kernels for the types where candle's CPU path is slow
//! (Q4_1 has no SIMD kernel there) or rounds differently from llama.cpp (activation
//! quantisation). The arithmetic follows ggml's x86 kernels lane for lane, so greedy outputs
//! match the peer engine: 8 f32 lanes, each accumulating `d_w·d_a·Σ(4 int products)` with FMA,
//! summed pairwise at the end.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod blocks;
pub mod matvec;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pool;

pub use blocks::{quantize_q8_0, quantize_q8_1, BlockQ8_0, BlockQ8_1};
pub use matvec::{Kernel, QuantMatrix, QuantType, WeightBytes};
