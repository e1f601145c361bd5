//! Block formats (ggml layout) and activation quantisation.
//!
//! Weights stay in the file's bytes: Q4_0 blocks are `{d: f16, qs: [u8; 16]}` (value `j` is
//! `((qs[j] & 15) − 8)·d`, value `j + 16` is `((qs[j] >> 4) − 8)·d`), Q4_1 blocks are
//! `{d: f16, m: f16, qs: [u8; 16]}` (value `j` is `(qs[j] & 15)·d + m`, value `j + 16` is
//! `(qs[j] >> 4)·d + m`), Q8_0 blocks are `{d: f16, qs: [i8; 32]}`. Activations are quantised
//! per 32 values to 8 bits; their scales are kept as f32 holding the f16-rounded value, which is
//! what ggml's products use.

use half::f16;

pub const QK: usize = 32;
pub const Q4_0_BYTES: usize = 18;
pub const Q4_1_BYTES: usize = 20;
pub const Q8_0_BYTES: usize = 34;

#[derive(Debug, Clone, Copy)]
pub struct BlockQ8_1 {
    pub d: f32,
    /// `d · Σ qs`, for the `m` term of Q4_1 products.
    pub s: f32,
    pub qs: [i8; QK],
}

#[derive(Debug, Clone, Copy)]
pub struct BlockQ8_0 {
    pub d: f32,
    pub qs: [i8; QK],
}

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Quantises one block of 32 like ggml's AVX path: `d = max|x| / 127`, `q = round_even(x · 127 /
/// max|x|)`. Returns the unrounded `d` and the quants.
fn quantize_block(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    (d, qs)
}

pub fn quantize_q8_1(x: &[f32], out: &mut Vec<BlockQ8_1>) {
    out.clear();
    out.extend(x.chunks_exact(QK).map(|chunk| {
        let (d, qs) = quantize_block(chunk);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        BlockQ8_1 { d: round_f16(d), s: round_f16(d * sum as f32), qs }
    }));
}

pub fn quantize_q8_0(x: &[f32], out: &mut Vec<BlockQ8_0>) {
    out.clear();
    out.extend(x.chunks_exact(QK).map(|chunk| {
        let (d, qs) = quantize_block(chunk);
        BlockQ8_0 { d: round_f16(d), qs }
    }));
}

pub fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// ggml's `hsum_float_8`: (lanes 0-3 + lanes 4-7), then pairwise.
pub fn hsum8(acc: &[f32; 8]) -> f32 {
    let a = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// Dot product of one Q4_0 weight row (`blocks` × 18 bytes) with Q8_0 activations: lane `k`
/// accumulates `fma(d_w·d_a, Σ_{i=4k}^{4k+3} (q_i − 8)·a_i, acc_k)` per block (the definition
/// the SIMD kernels of every architecture reproduce).
pub fn dot_q4_0_q8_0(row: &[u8], act: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (w, a) in row.chunks_exact(Q4_0_BYTES).zip(act) {
        let dd = f16_at(w, 0) * a.d;
        let qs = &w[2..18];
        for (lane, acc) in acc.iter_mut().enumerate() {
            let mut sum = 0i32;
            for i in lane * 4..lane * 4 + 4 {
                let q = if i < 16 { qs[i] & 0x0F } else { qs[i - 16] >> 4 };
                sum += (i32::from(q) - 8) * i32::from(a.qs[i]);
            }
            *acc = dd.mul_add(sum as f32, *acc);
        }
    }
    hsum8(&acc)
}

/// Dot product of one Q4_1 weight row (`blocks` × 20 bytes) with Q8_1 activations.
pub fn dot_q4_1_q8_1(row: &[u8], act: &[BlockQ8_1]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (w, a) in row.chunks_exact(Q4_1_BYTES).zip(act) {
        let (d, m) = (f16_at(w, 0), f16_at(w, 2));
        summs = m.mul_add(a.s, summs);
        let dd = d * a.d;
        let qs = &w[4..20];
        for (lane, acc) in acc.iter_mut().enumerate() {
            let mut sum = 0i32;
            for i in lane * 4..lane * 4 + 4 {
                let q = if i < 16 { qs[i] & 0x0F } else { qs[i - 16] >> 4 };
                sum += i32::from(q) * i32::from(a.qs[i]);
            }
            *acc = dd.mul_add(sum as f32, *acc);
        }
    }
    hsum8(&acc) + summs
}

/// Dot product of one Q8_0 weight row (`blocks` × 34 bytes) with Q8_0 activations.
pub fn dot_q8_0_q8_0(row: &[u8], act: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (w, a) in row.chunks_exact(Q8_0_BYTES).zip(act) {
        let dd = f16_at(w, 0) * a.d;
        let qs = &w[2..34];
        for ((acc, q), x) in acc.iter_mut().zip(qs.chunks_exact(4)).zip(a.qs.chunks_exact(4)) {
            let sum: i32 = q.iter().zip(x).map(|(&q, &x)| i32::from(q as i8) * i32::from(x)).sum();
            *acc = dd.mul_add(sum as f32, *acc);
        }
    }
    hsum8(&acc)
}
