//! k-quant block formats (ggml layout, 256 weights per block), Q8_K activations, and the scalar
//! dot products that define our k-quant results.
//!
//! Q4_K (144 bytes): `{d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]}`. The 256 weights
//! form 8 sub-blocks of 32; sub-block `j` has a 6-bit scale `sc_j` and a 6-bit min `m_j`
//! (packed, see [`q4_k_scales_mins`]), and weight `i` of it is `d·sc_j·q − dmin·m_j` with `q`
//! the low nibble of `qs[32·(j/2) + i]` for even `j`, the high nibble for odd `j`.
//!
//! Q6_K (210 bytes): `{ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16}`. Weight `32v + i`
//! (`v` < 8, `i` < 32; `h = v/4`, `s = v%4`) is `d·scales[2v + i/16]·(q − 32)` with the 6-bit
//! `q` = nibble `s/2` of `ql[64h + 32·(s%2) + i]` | bits `2s..2s+2` of `qh[32h + i]` << 4.
//!
//! Both dot products follow the float order of ggml's x86 kernels for the type (llama.cpp
//! 0c1e570 built for AVX2 or later), so that greedy outputs match that peer bit for bit; every
//! integer sum is exact, so only where the integers become floats matters: Q4_K as ggml's
//! repacked 8×8 kernels (one float sum per row, fed per block or per 64 weights: [`Q4KSums`]),
//! Q6_K as its `vec_dot_q6_K_q8_K` or its tiled kernel ([`Q6KSums`]).

use super::blocks::{f16_at, hsum8};

/// Weights per k-quant block.
pub const QK_K: usize = 256;
pub const Q4_K_BYTES: usize = 144;
pub const Q6_K_BYTES: usize = 210;

/// 256 activations quantised to 8 bits with one f32 scale (ggml's `block_q8_K`).
#[derive(Debug, Clone, Copy)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// The sums of each 16 consecutive quants, for the weights' per-sub-block offsets.
    pub bsums: [i16; QK_K / 16],
    /// Where a Q4_K product with this row turns its integer sums into floats.
    pub q4_k_sums: Q4KSums,
    /// Where a Q6_K product with this row turns its integer sums into floats.
    pub q6_k_sums: Q6KSums,
}

/// How often ggml's x86 Q4_K kernels round their exact integer sums into the float sum: its
/// one-row kernel (`gemv_q4_K_8x8_q8_K`) once per 256-weight block, its batched kernel
/// (`gemm_q4_K_8x8_q8_K`, rows in groups of 4, the rest one by one) once per 64 weights.
/// The two give different bits, so every activation row records which kernel ggml would
/// use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q4KSums {
    PerBlock,
    PerSubBlockPair,
}

/// How ggml's x86 Q6_K kernels turn their exact integer sums into floats: its one-row
/// `vec_dot_q6_K_q8_K` keeps 8 lanes, each `fma(d·d_a, lane, acc)` per block, reduced at the
/// end; its tiled kernel (`ggml-cpu/tiled`, for products of 8 rows or more) takes each block's
/// total: `acc = fma(total·d, d_a, acc)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q6KSums {
    Lanes,
    PerBlock,
}

/// The fewest activation rows for which ggml runs Q6_K products through its tiled kernel.
pub const Q6_K_TILED_MIN_ROWS: usize = 8;

/// [`quantize_q8_k`] of a batch of rows `cols` wide, each row marked with the kernels ggml
/// runs it through: for Q4_K, complete groups of 4 rows through the batched kernel, the rest
/// singly; for Q6_K, all rows through the tiled kernel once there are 8 or more.
pub fn quantize_q8_k_rows(x: &[f32], cols: usize, out: &mut Vec<BlockQ8K>) {
    quantize_q8_k(x, out);
    let rows = x.len() / cols;
    let batched_blocks = (rows - rows % 4) * cols / QK_K;
    for block in &mut out[..batched_blocks] {
        block.q4_k_sums = Q4KSums::PerSubBlockPair;
    }
    if rows >= Q6_K_TILED_MIN_ROWS {
        for block in out.iter_mut() {
            block.q6_k_sums = Q6KSums::PerBlock;
        }
    }
}

/// ggml's `quantize_row_q8_K`: the value of largest magnitude `max` (the first one on ties)
/// maps to −127: `q = min(127, round_even(x · (−127/max)))`, `d = 1/(−127/max)`. An all-zero
/// block gets `d = 0` and zero quants.
pub fn quantize_q8_k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    out.extend(x.chunks_exact(QK_K).map(|chunk| {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in chunk {
            if v.abs() > amax {
                (max, amax) = (v, v.abs());
            }
        }
        let mut block = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
            q4_k_sums: Q4KSums::PerBlock,
            q6_k_sums: Q6KSums::Lanes,
        };
        if amax == 0.0 {
            return block;
        }
        let iscale = -127.0 / max;
        for (q, v) in block.qs.iter_mut().zip(chunk) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        for (sum, qs) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = qs.iter().map(|&q| i16::from(q)).sum();
        }
        block.d = 1.0 / iscale;
        block
    }));
}

/// The 8 scales and 8 mins of a Q4_K block from its 12 packed bytes, as the bytes of two
/// little-endian u64 (scale/min `j` in byte `j`).
///
/// Sub-blocks 0-3 keep their scale and min in the low 6 bits of bytes `j` and `j + 4`;
/// sub-blocks 4-7 have their low 4 bits in the nibbles of byte `j + 4` (scale low, min high)
/// and their top 2 bits in the spare top bits of bytes `j − 4` (scale) and `j` (min).
#[inline(always)]
pub fn q4_k_scales_mins(packed: &[u8; 12]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (w0, w1, w2) = (word(0), word(4), word(8));
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const TOP2: u32 = 0x0303_0303;
    let scales_hi = (w2 & LOW4) | (((w0 >> 6) & TOP2) << 4);
    let mins_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4);
    let scales = u64::from(w0 & LOW6) | u64::from(scales_hi) << 32;
    let mins = u64::from(w1 & LOW6) | u64::from(mins_hi) << 32;
    (scales, mins)
}

/// Dot product of one Q4_K weight row (`blocks` × 144 bytes) with Q8_K activations, in the
/// order of ggml's x86 kernels for Q4_K (the repacked `gemv`/`gemm_q4_K_8x8_q8_K`, which
/// llama.cpp uses for every Q4_K matrix whose row count is a multiple of 8).
///
/// Sub-block `j` contributes the exact integers `sc_j · Σ_i q_{32j+i}·a_{32j+i}` and
/// `m_j · (bsums[2j] + bsums[2j+1])`. Summed over a block ([`Q4KSums::PerBlock`]) or over
/// the sub-block pairs `2p, 2p+1` ([`Q4KSums::PerSubBlockPair`]), each total is turned into f32
/// and accumulated with FMA, in order, into two separate sums, `acc = fma(isum, d·d_a, acc)` and
/// `acc_min = fma(msum, dmin·d_a, acc_min)`; the result is `acc − acc_min`.
pub fn dot_q4_k_q8_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (w, a) in row.chunks_exact(Q4_K_BYTES).zip(act) {
        let dd = f16_at(w, 0) * a.d;
        let dm = f16_at(w, 2) * a.d;
        let (scales, mins) = q4_k_scales_mins(w[4..16].try_into().unwrap());
        let (scales, mins) = (scales.to_le_bytes(), mins.to_le_bytes());
        let qs = &w[16..144];
        let sub_block = |j: usize| {
            let dot: i32 = (0..32)
                .map(|i| i32::from((qs[32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F) * i32::from(a.qs[32 * j + i]))
                .sum();
            let bsum = i32::from(a.bsums[2 * j]) + i32::from(a.bsums[2 * j + 1]);
            (i32::from(scales[j]) * dot, i32::from(mins[j]) * bsum)
        };
        let group = match a.q4_k_sums {
            Q4KSums::PerBlock => 8,
            Q4KSums::PerSubBlockPair => 2,
        };
        for j0 in (0..8).step_by(group) {
            let (isum, msum) = (j0..j0 + group).map(sub_block).fold((0, 0), |(i, m), (a, b)| (i + a, m + b));
            acc = (isum as f32).mul_add(dd, acc);
            acc_min = (msum as f32).mul_add(dm, acc_min);
        }
    }
    acc - acc_min
}

/// Dot product of one Q6_K weight row (`blocks` × 210 bytes) with Q8_K activations.
///
/// Per block, lane `k` (0..8) takes the exact integer
/// `isum_k = Σ_{v<8} sc_{2v + k/4} · Σ_{i=4k}^{4k+3} q_{32v+i}·a_{32v+i}
///           − 32·(sc_{2k}·bsums[2k] + sc_{2k+1}·bsums[2k+1])`
/// (the unsigned 6-bit quants, with the −32 offset applied through the activation sums: the
/// lanes' total is `Σ sc·(q − 32)·a`). With [`Q6KSums::Lanes`], `acc_k = fma(d·d_a, isum_k,
/// acc_k)` and the result is `hsum8(acc)`; with [`Q6KSums::PerBlock`],
/// `acc = fma(Σ_k isum_k · d, d_a, acc)`.
pub fn dot_q6_k_q8_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut acc = 0f32;
    for (w, a) in row.chunks_exact(Q6_K_BYTES).zip(act) {
        let d = f16_at(w, 208);
        let (ql, qh) = (&w[..128], &w[128..192]);
        let sc = |j: usize| i32::from(w[192 + j] as i8);
        let isum: [i32; 8] = std::array::from_fn(|k| {
            let mut isum = 0i32;
            for v in 0..8 {
                let (h, s) = (v / 4, v % 4);
                let mut sum = 0i32;
                for i in 4 * k..4 * k + 4 {
                    let low = (ql[64 * h + 32 * (s % 2) + i] >> (4 * (s / 2))) & 0x0F;
                    let high = (qh[32 * h + i] >> (2 * s)) & 3;
                    sum += i32::from(low | high << 4) * i32::from(a.qs[32 * v + i]);
                }
                isum += sc(2 * v + k / 4) * sum;
            }
            let bsum = |j: usize| sc(j) * i32::from(a.bsums[j]);
            isum - 32 * (bsum(2 * k) + bsum(2 * k + 1))
        });
        match a.q6_k_sums {
            Q6KSums::Lanes => {
                let dd = d * a.d;
                for (lane, &isum) in lanes.iter_mut().zip(&isum) {
                    *lane = dd.mul_add(isum as f32, *lane);
                }
            }
            Q6KSums::PerBlock => acc = (isum.iter().sum::<i32>() as f32 * d).mul_add(a.d, acc),
        }
    }
    match act.first().map(|a| a.q6_k_sums) {
        Some(Q6KSums::PerBlock) => acc,
        _ => hsum8(&lanes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Candle quantises Q8_K like ggml except that it rounds ties away from zero; ties do not
    /// occur on random data, so the bytes (`d`, quants, `bsums`) must agree.
    #[test]
    fn q8_k_matches_candle_on_random_data() {
        let mut s = 7u64;
        let x: Vec<f32> = (0..4 * QK_K)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                v * [1.0, 1e-4, 300.0, 0.0][i / QK_K]
            })
            .collect();
        let mut ours = Vec::new();
        quantize_q8_k(&x, &mut ours);
        let t = Tensor::from_vec(x.clone(), (1, x.len()), &Device::Cpu).unwrap();
        let theirs = QTensor::quantize(&t, GgmlDType::Q8K).unwrap().data().unwrap().to_vec();
        for (b, (ours, theirs)) in ours.iter().zip(theirs.chunks_exact(4 + QK_K + 32)).enumerate() {
            assert_eq!(ours.d.to_le_bytes(), theirs[..4], "block {b} d");
            let qs: Vec<u8> = ours.qs.iter().map(|&q| q as u8).collect();
            assert_eq!(qs, theirs[4..4 + QK_K], "block {b} quants");
            let bsums: Vec<u8> = ours.bsums.iter().flat_map(|s| s.to_le_bytes()).collect();
            assert_eq!(bsums, theirs[4 + QK_K..], "block {b} bsums");
        }
    }

    /// ggml's `nearest_int` rounds ties to even; the largest magnitude maps to −127.
    #[test]
    fn q8_k_rounds_ties_to_even() {
        let mut x = vec![0f32; QK_K];
        x[0] = -127.0; // iscale = 1
        x[1..5].copy_from_slice(&[2.5, 3.5, -0.5, 127.0]);
        let mut q = Vec::new();
        quantize_q8_k(&x, &mut q);
        assert_eq!(q[0].qs[..5], [-127, 2, 4, 0, 127]);
        assert_eq!(q[0].d, 1.0);
        assert_eq!(q[0].bsums[0], 6);
    }

    /// The word-wise unpacking against the per-sub-block rule (ggml's `get_scale_min_k4`).
    #[test]
    fn q4_k_scales_unpack_per_sub_block() {
        for seed in 0..64u8 {
            let packed: Vec<u8> =
                (0..12).map(|i| seed.wrapping_mul(37).wrapping_add(i * 91) ^ (i << 5)).collect();
            let (scales, mins) = q4_k_scales_mins(packed[..].try_into().unwrap());
            for j in 0..8 {
                let (sc, m) = if j < 4 {
                    (packed[j] & 63, packed[j + 4] & 63)
                } else {
                    (
                        (packed[j + 4] & 0x0F) | (packed[j - 4] >> 6) << 4,
                        (packed[j + 4] >> 4) | (packed[j] >> 6) << 4,
                    )
                };
                assert_eq!((scales.to_le_bytes()[j], mins.to_le_bytes()[j]), (sc, m), "{packed:?} j={j}");
            }
        }
    }
}
