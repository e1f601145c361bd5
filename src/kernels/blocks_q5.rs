//! The 5-bit block formats (ggml layout) and their scalar dot products, the oracles of the Q5
//! tiles.
//!
//! Q5_0 blocks are `{d: f16, qh: [u8; 4], qs: [u8; 16]}`, Q5_1 blocks `{d: f16, m: f16, qh:
//! [u8; 4], qs: [u8; 16]}`. Value `j` has the 4 low bits `qs[j] & 15` (`j < 16`) or
//! `qs[j − 16] >> 4` (`j ≥ 16`) and its fifth bit at bit `j` of the little-endian `u32` `qh`:
//! `q_j = nibble | bit << 4` in 0..=31. Q5_0's weight is `(q_j − 16)·d`, Q5_1's `q_j·d + m`.
//!
//! The order of operations is that of the 4-bit types in `blocks.rs`, which is also ggml's
//! AVX2 `ggml_vec_dot_q5_0_q8_0` / `ggml_vec_dot_q5_1_q8_1`: lane `k` accumulates
//! `fma(d_w·d_a, Σ_{i=4k}^{4k+3} q_i·a_i, acc_k)` per block (with `q_i − 16` for Q5_0), the
//! lanes are reduced by `hsum8`, and Q5_1 adds the chain `fma(m, s_a, summs)`.

use super::blocks::{f16_at, hsum8, BlockQ8_0, BlockQ8_1, QK};

pub const Q5_0_BYTES: usize = 22;
pub const Q5_1_BYTES: usize = 24;

/// The 32 values `q_j` (0..=31) of a block whose `qh` starts at `at`, followed by its `qs`.
fn q5_values(block: &[u8], at: usize) -> [u8; QK] {
    let qh = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
    let qs = &block[at + 4..at + 20];
    std::array::from_fn(|j| {
        let nibble = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
        nibble | (((qh >> j) & 1) as u8) << 4
    })
}

/// Lane `k`'s integer `Σ_{i=4k}^{4k+3} (q_i − offset)·a_i`.
fn lane_sum(q: &[u8; QK], offset: i32, a: &[i8; QK], lane: usize) -> i32 {
    (lane * 4..lane * 4 + 4).map(|i| (i32::from(q[i]) - offset) * i32::from(a[i])).sum()
}

/// Dot product of one Q5_0 weight row (`blocks` × 22 bytes) with Q8_0 activations.
pub fn dot_q5_0_q8_0(row: &[u8], act: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (w, a) in row.chunks_exact(Q5_0_BYTES).zip(act) {
        let dd = f16_at(w, 0) * a.d;
        let q = q5_values(w, 2);
        for (lane, acc) in acc.iter_mut().enumerate() {
            *acc = dd.mul_add(lane_sum(&q, 16, &a.qs, lane) as f32, *acc);
        }
    }
    hsum8(&acc)
}

/// Dot product of one Q5_1 weight row (`blocks` × 24 bytes) with Q8_1 activations.
pub fn dot_q5_1_q8_1(row: &[u8], act: &[BlockQ8_1]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (w, a) in row.chunks_exact(Q5_1_BYTES).zip(act) {
        let (d, m) = (f16_at(w, 0), f16_at(w, 2));
        summs = m.mul_add(a.s, summs);
        let dd = d * a.d;
        let q = q5_values(w, 4);
        for (lane, acc) in acc.iter_mut().enumerate() {
            *acc = dd.mul_add(lane_sum(&q, 0, &a.qs, lane) as f32, *acc);
        }
    }
    hsum8(&acc) + summs
}
