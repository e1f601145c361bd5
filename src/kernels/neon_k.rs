//! NEON tiles of the k-quant dot products (aarch64): for now the scalar tile, so every kernel
//! gives the oracles' bits.

use super::blocks_k::BlockQ8K;
use super::matvec::{Kernel, Tiles};
use super::tiles::{Q4K, Q6K};

/// `out[r][c] = dot_q4_k_q8_k(row r, acts[c])` (the scalar tile).
///
/// # Safety
/// As [`Tiles::tile`].
pub unsafe fn tile_q4_k<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8K; C],
    out: &mut [[f32; C]; R],
) {
    Q4K(Kernel::Scalar).tile::<R, C>(w, row_bytes, nb, acts, out)
}

/// `out[r][c] = dot_q6_k_q8_k(row r, acts[c])` (the scalar tile).
///
/// # Safety
/// As [`Tiles::tile`].
pub unsafe fn tile_q6_k<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8K; C],
    out: &mut [[f32; C]; R],
) {
    Q6K(Kernel::Scalar).tile::<R, C>(w, row_bytes, nb, acts, out)
}
