//! NEON tiles of the k-quant dot products (aarch64), bit-identical to `dot_q4_k_q8_k` and
//! `dot_q6_k_q8_k` (`blocks_k.rs`).
//!
//! Why the bits match: Q6_K's oracle lane `k` of a block is an exact integer, the sub-block
//! scales times the sums of the products of bytes `4k..4k+4` of each 32-weight sub-block,
//! minus an activation-sum term; then one FMA in block order, and the shared `hsum8`. Q4_K's
//! oracle sums the same lanes (and its mins' terms) to two exact block totals first, then two
//! scalar FMAs per block. Here a sub-block is two 16-byte vectors; `quad_sums` multiplies the unsigned
//! quants (≤ 15 for Q4_K, ≤ 63 for Q6_K) by the activations with `vmull_s8` and adds pairs
//! twice with `vpaddq_s16`, which leaves in i16 lane `k` the sum of the products of bytes
//! `4k..4k+4`: exact, since |sum| ≤ 4·63·128 = 32256 < 2^15 (even for a −128 activation).
//! `vmlal_n_s16` multiplies those by the sub-block's scale (Q6_K's are i8, so |scale| ≤ 128)
//! widening to i32 and accumulates: per block |Σ| ≤ 8·128·32256 < 2^25, far from i32's limit.
//! The activation-sum terms are widening products of `bsums` (|bsums| ≤ 16·128) with the mins
//! (≤ 63) or the Q6_K scales, with the oracle's lane assignment: lane `k` meets `bsums[2k]` and
//! `bsums[2k + 1]`. So each i32 lane holds the oracle's integer; `vcvtq_f32_s32` rounds it as
//! `as f32` does (to nearest, ties to even), the scale products `d·d_a` (and `dmin·d_a`) are the
//! same scalar f32 products, and `vfmaq_f32` (or `mul_add`) is the same fused operation in the
//! same order.
//! f16 → f32 conversion is exact on both paths.
//!
//! Tiles of `R` weight rows × `C` activation rows, as in `neon.rs`: each weight block is
//! unpacked once and reused for the `C` activation rows. As in `avx2_k.rs`, the tile walks its
//! rows one after the other (all blocks of a row, then the next row), so the weights are read
//! as one sequential stream; each block's integer chain is long enough to hide the FMA latency
//! of one row at a time.

use std::arch::aarch64::*;

use super::blocks::hsum8;
use super::blocks_k::{q4_k_scales_mins, BlockQ8K, Q4KSums, Q6KSums, Q4_K_BYTES, Q6_K_BYTES};
use super::neon::{f16_at, lanes};

/// Lane `k` (0..8): `Σ_{i=4k}^{4k+3} q_i·a_i` over one 32-weight sub-block, as i16.
///
/// Exact when every `q_i` is in 0..=63 (see the header).
///
/// # Safety
/// `a` points at 32 readable activation quants.
#[inline(always)]
unsafe fn quad_sums(q: [int8x16_t; 2], a: *const i8) -> int16x8_t {
    let a = [vld1q_s8(a), vld1q_s8(a.add(16))];
    let pairs = |h: usize| {
        vpaddq_s16(vmull_s8(vget_low_s8(q[h]), vget_low_s8(a[h])), vmull_high_s8(q[h], a[h]))
    };
    vpaddq_s16(pairs(0), pairs(1))
}

/// `isum[0] += sums[0..4]·s_lo`, `isum[1] += sums[4..8]·s_hi` (widened to i32, exact).
#[target_feature(enable = "neon")]
#[inline]
fn scaled_add(isum: &mut [int32x4_t; 2], sums: int16x8_t, s_lo: i16, s_hi: i16) {
    isum[0] = vmlal_n_s16(isum[0], vget_low_s16(sums), s_lo);
    isum[1] = vmlal_high_n_s16(isum[1], sums, s_hi);
}

/// The 16 activation sums of a Q8_K block, as two vectors of 8.
///
/// # Safety
/// `a` is a valid block (a reference would do; the pointer keeps the loads explicit).
#[inline(always)]
unsafe fn bsums(a: &BlockQ8K) -> [int16x8_t; 2] {
    let p = a.bsums.as_ptr();
    [vld1q_s16(p), vld1q_s16(p.add(8))]
}

/// `out[r][c] = dot_q4_k_q8_k(row r, acts[c])` for the `R` rows starting at `w` (`row_bytes`
/// apart, each `nb` blocks).
///
/// # Safety
/// The CPU must support NEON; `w` must hold `R · row_bytes` bytes with `row_bytes ≥ nb · 144`,
/// and every `acts[c]` at least `nb` blocks.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q4_k<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8K; C],
    out: &mut [[f32; C]; R],
) {
    let low = vdupq_n_u8(0x0F);
    for (r, out) in out.iter_mut().enumerate() {
        // The scaled sum and the sum of the mins' terms.
        let mut acc = [(0f32, 0f32); C];
        for b in 0..nb {
            let a: [&BlockQ8K; C] = std::array::from_fn(|c| &*acts[c].add(b));
            let p = w.add(r * row_bytes + b * Q4_K_BYTES);
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            let (scales, mins) = q4_k_scales_mins(&*p.add(4).cast::<[u8; 12]>());
            let scales = scales.to_le_bytes();
            // The 8 mins as i16, min k in lane k.
            let mins = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(mins)));
            // Sub-block k's mins term: m_k · (bsums[2k] + bsums[2k + 1]); the pair sums fit i16.
            let msum: [[i32; 8]; C] = std::array::from_fn(|c| {
                let [b0, b1] = bsums(a[c]);
                let pair = vpaddq_s16(b0, b1);
                let mut m = [0i32; 8];
                vst1q_s32(m.as_mut_ptr(), vmull_s16(vget_low_s16(pair), vget_low_s16(mins)));
                vst1q_s32(m.as_mut_ptr().add(4), vmull_high_s16(pair, mins));
                m
            });
            // The oracle's two FMAs on exact totals (summed in any order).
            let mut fold = |c: usize, isum: [int32x4_t; 2], msum: i32| {
                let (sum, min_sum) = &mut acc[c];
                *sum = (vaddvq_s32(vaddq_s32(isum[0], isum[1])) as f32).mul_add(d * a[c].d, *sum);
                *min_sum = (msum as f32).mul_add(dmin * a[c].d, *min_sum);
            };
            let mut isum = [[vdupq_n_s32(0); 2]; C];
            for g in 0..4 {
                // 32 bytes: their low nibbles are sub-block 2g, their high nibbles 2g + 1.
                let x = [vld1q_u8(p.add(16 + 32 * g)), vld1q_u8(p.add(32 + 32 * g))];
                let lo = x.map(|x| vreinterpretq_s8_u8(vandq_u8(x, low)));
                let hi = x.map(|x| vreinterpretq_s8_u8(vshrq_n_u8::<4>(x)));
                let (s_lo, s_hi) = (i16::from(scales[2 * g]), i16::from(scales[2 * g + 1]));
                for c in 0..C {
                    let aq = a[c].qs.as_ptr().add(64 * g);
                    scaled_add(&mut isum[c], quad_sums(lo, aq), s_lo, s_lo);
                    scaled_add(&mut isum[c], quad_sums(hi, aq.add(32)), s_hi, s_hi);
                    if a[c].q4_k_sums == Q4KSums::PerSubBlockPair {
                        fold(c, isum[c], msum[c][2 * g] + msum[c][2 * g + 1]);
                        isum[c] = [vdupq_n_s32(0); 2];
                    }
                }
            }
            for c in 0..C {
                if a[c].q4_k_sums == Q4KSums::PerBlock {
                    fold(c, isum[c], msum[c].iter().sum());
                }
            }
        }
        for (o, (sum, min_sum)) in out.iter_mut().zip(acc) {
            *o = sum - min_sum;
        }
    }
}

/// `out[r][c] = dot_q6_k_q8_k(row r, acts[c])`; same contract as `tile_q4_k` with 210-byte
/// blocks.
///
/// # Safety
/// As `tile_q4_k`.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q6_k<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8K; C],
    out: &mut [[f32; C]; R],
) {
    let low = vdupq_n_u8(0x0F);
    let high = vdupq_n_u8(0x30);
    for (r, out) in out.iter_mut().enumerate() {
        // `Q6KSums::Lanes` rows sum in 8 lanes, `PerBlock` rows in one float.
        let mut acc = [[vdupq_n_f32(0.0); 2]; C];
        let mut block_acc = [0f32; C];
        for b in 0..nb {
            let a: [&BlockQ8K; C] = std::array::from_fn(|c| &*acts[c].add(b));
            let p = w.add(r * row_bytes + b * Q6_K_BYTES);
            let d = f16_at(p.add(208));
            let scales = p.add(192).cast::<[i8; 16]>().read();
            let sc = vld1q_s8(p.add(192).cast());
            let sc = [vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc)];
            // Lane k starts at −32·(sc_{2k}·bsums[2k] + sc_{2k+1}·bsums[2k+1]): the −32 offset of
            // the quants, through the activation sums (|sc·bsums| ≤ 2^18, widened to i32).
            let mut isum: [[int32x4_t; 2]; C] = std::array::from_fn(|c| {
                let bs = bsums(a[c]);
                [0, 1].map(|h| {
                    let lo = vmull_s16(vget_low_s16(bs[h]), vget_low_s16(sc[h]));
                    let hi = vmull_high_s16(bs[h], sc[h]);
                    vmulq_n_s32(vpaddq_s32(lo, hi), -32)
                })
            });
            for h in 0..2 {
                let ql0 = [vld1q_u8(p.add(64 * h)), vld1q_u8(p.add(64 * h + 16))];
                let ql1 = [vld1q_u8(p.add(64 * h + 32)), vld1q_u8(p.add(64 * h + 48))];
                let qh = [vld1q_u8(p.add(128 + 32 * h)), vld1q_u8(p.add(128 + 32 * h + 16))];
                for s in 0..4 {
                    // Sub-block v = 4h + s: nibble s/2 of ql(s%2) | bits 2s..2s+2 of qh moved
                    // to bits 4..6 (byte-wise shifts: nothing crosses bytes).
                    let q: [int8x16_t; 2] = std::array::from_fn(|k| {
                        let ql = [ql0[k], ql1[k]][s % 2];
                        let q_low = if s < 2 { vandq_u8(ql, low) } else { vshrq_n_u8::<4>(ql) };
                        let q_high = match s {
                            0 => vshlq_n_u8::<4>(qh[k]),
                            1 => vshlq_n_u8::<2>(qh[k]),
                            2 => qh[k],
                            _ => vshrq_n_u8::<2>(qh[k]),
                        };
                        vreinterpretq_s8_u8(vorrq_u8(q_low, vandq_u8(q_high, high)))
                    });
                    let v = 4 * h + s;
                    // Lanes 0-3 (bytes 0..16) take scale 2v, lanes 4-7 scale 2v + 1.
                    let (s_lo, s_hi) = (i16::from(scales[2 * v]), i16::from(scales[2 * v + 1]));
                    for c in 0..C {
                        let aq = a[c].qs.as_ptr().add(32 * v);
                        scaled_add(&mut isum[c], quad_sums(q, aq), s_lo, s_hi);
                    }
                }
            }
            for c in 0..C {
                match a[c].q6_k_sums {
                    Q6KSums::Lanes => {
                        let dd = vdupq_n_f32(d * a[c].d);
                        for h in 0..2 {
                            acc[c][h] = vfmaq_f32(acc[c][h], dd, vcvtq_f32_s32(isum[c][h]));
                        }
                    }
                    Q6KSums::PerBlock => {
                        let total = vaddvq_s32(vaddq_s32(isum[c][0], isum[c][1]));
                        block_acc[c] = (total as f32 * d).mul_add(a[c].d, block_acc[c]);
                    }
                }
            }
        }
        for (c, o) in out.iter_mut().enumerate() {
            *o = match (*acts[c]).q6_k_sums {
                Q6KSums::Lanes => hsum8(&lanes(acc[c])),
                Q6KSums::PerBlock => block_acc[c],
            };
        }
    }
}
