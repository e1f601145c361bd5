//! NEON tiles of the quantized dot products (aarch64), bit-identical to the scalar oracles in
//! `blocks.rs` and `blocks_q5.rs`.
//!
//! Why the bits match: lane `k` of the scalar kernels accumulates, once per block,
//! `fma(d_w·d_a, Σ_{i=4k}^{4k+3} q_i·a_i, acc_k)`. Here lanes 0-3 and 4-7 are two `float32x4`
//! accumulators; `dot16` produces exactly that integer sum in each 32-bit lane (`vmull_s8`
//! products are exact in i16, pairs of them too: |pair| ≤ 2·128·127 < 2^15, and the last
//! pairing widens to i32), `vcvtq_f32_s32` is exact (|sum| < 2^24), `d_w·d_a` is the same scalar
//! f32 product, and `vfmaq_f32` is the same fused operation in the same block order. The final
//! reduction is the shared `hsum8`, and the Q4_1/Q5_1 `m·s` term is the same scalar FMA chain.
//! f16 → f32 conversion is exact on both paths.
//!
//! A tile computes `R` weight rows × `C` activation rows at once, as in `avx2.rs`: the `R·C`
//! accumulator chains are independent, which hides the FMA latency, and each expanded weight
//! block is reused for the `C` activation rows. 4 × 2 tiles use 16 of the 32 vector registers
//! for accumulators.
//!
//! Precondition (as in ggml): activation quants are in −127..=127 (what `quantize_block`
//! produces), so the pair sums of `dot16` fit in i16 even against Q8_0's −128.
//!
//! The dot-product instructions (`sdot`) would replace `dot16`, but their intrinsics are not
//! stable Rust yet.

use std::arch::aarch64::*;

use super::blocks::{hsum8, BlockQ8_0, BlockQ8_1, QK, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES};
use super::blocks_q5::{Q5_0_BYTES, Q5_1_BYTES};

/// One weight block format as the tiles read it. Every format starts with its f16 scale `d`.
trait Format {
    type Act;
    const BYTES: usize;
    /// The activation block's scale and quants.
    fn act(a: &Self::Act) -> (f32, &[i8; QK]);
    /// The weight block's 32 quants at `p`, values 0..16 then 16..32, as i8.
    ///
    /// # Safety
    /// `p` points at a whole block.
    unsafe fn quants(p: *const u8) -> [int8x16_t; 2];
    /// Adds the block's minimum term `m·s` to `summ` (Q4_1 and Q5_1; the others have none).
    ///
    /// # Safety
    /// `p` points at a whole block.
    #[inline(always)]
    unsafe fn add_min(_p: *const u8, _a: &Self::Act, _summ: &mut f32) {}
    /// The dot product from the lanes' sum and the minimum terms' sum.
    #[inline(always)]
    fn finish(lanes: f32, _summ: f32) -> f32 {
        lanes
    }
}

/// `{d: f16, m: f16, qs: [u8; 16]}` against Q8_1: value `j` is `qs[j] & 15`, `j + 16` is
/// `qs[j] >> 4`, plus the minimum `m`.
struct Q4_1;
/// `{d: f16, qs: [i8; 32]}` against Q8_0.
struct Q8_0;
/// `{d: f16, qs: [u8; 16]}` against Q8_0: the nibbles of Q4_1 minus 8.
struct Q4_0;

/// `{d: f16, qh: [u8; 4], qs: [u8; 16]}` against Q8_0: Q4_0's nibbles with a fifth bit from
/// `qh`, minus 16.
struct Q5_0;
/// `{d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]}` against Q8_1: Q4_1's nibbles with a fifth bit
/// from `qh`, plus the minimum `m`.
struct Q5_1;

/// The low and high nibbles of the 16 bytes at `p` (values 0..16 and 16..32), 0..=15.
///
/// # Safety
/// `p` points at 16 readable bytes.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let x = vld1q_u8(p);
    [vandq_u8(x, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(x)]
}

/// The 5-bit values 0..=31 of the Q5 block part at `p`: `qh` (4 bytes), then `qs` (16).
///
/// # Safety
/// `p` points at 20 readable bytes.
#[inline(always)]
unsafe fn five_bits(p: *const u8) -> [uint8x16_t; 2] {
    let [lo, hi] = nibbles(p.add(4));
    // Byte j of a half takes byte j / 8 of its two qh bytes and tests bit j % 8.
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201));
    let high = |h: *const u8| {
        let bytes = vcombine_u8(vdup_n_u8(*h), vdup_n_u8(*h.add(1)));
        vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10))
    };
    [vorrq_u8(lo, high(p)), vorrq_u8(hi, high(p.add(2)))]
}

impl Format for Q4_1 {
    type Act = BlockQ8_1;
    const BYTES: usize = Q4_1_BYTES;
    #[inline(always)]
    fn act(a: &BlockQ8_1) -> (f32, &[i8; QK]) {
        (a.d, &a.qs)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> [int8x16_t; 2] {
        nibbles(p.add(4)).map(|q| vreinterpretq_s8_u8(q))
    }
    #[inline(always)]
    unsafe fn add_min(p: *const u8, a: &BlockQ8_1, summ: &mut f32) {
        *summ = f16_at(p.add(2)).mul_add(a.s, *summ);
    }
    #[inline(always)]
    fn finish(lanes: f32, summ: f32) -> f32 {
        lanes + summ
    }
}

impl Format for Q8_0 {
    type Act = BlockQ8_0;
    const BYTES: usize = Q8_0_BYTES;
    #[inline(always)]
    fn act(a: &BlockQ8_0) -> (f32, &[i8; QK]) {
        (a.d, &a.qs)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> [int8x16_t; 2] {
        [vld1q_s8(p.add(2).cast()), vld1q_s8(p.add(18).cast())]
    }
}

impl Format for Q4_0 {
    type Act = BlockQ8_0;
    const BYTES: usize = Q4_0_BYTES;
    #[inline(always)]
    fn act(a: &BlockQ8_0) -> (f32, &[i8; QK]) {
        (a.d, &a.qs)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> [int8x16_t; 2] {
        nibbles(p.add(2)).map(|q| vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(8)))
    }
}

impl Format for Q5_0 {
    type Act = BlockQ8_0;
    const BYTES: usize = Q5_0_BYTES;
    #[inline(always)]
    fn act(a: &BlockQ8_0) -> (f32, &[i8; QK]) {
        (a.d, &a.qs)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> [int8x16_t; 2] {
        five_bits(p.add(2)).map(|q| vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(16)))
    }
}

impl Format for Q5_1 {
    type Act = BlockQ8_1;
    const BYTES: usize = Q5_1_BYTES;
    #[inline(always)]
    fn act(a: &BlockQ8_1) -> (f32, &[i8; QK]) {
        (a.d, &a.qs)
    }
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> [int8x16_t; 2] {
        five_bits(p.add(4)).map(|q| vreinterpretq_s8_u8(q))
    }
    #[inline(always)]
    unsafe fn add_min(p: *const u8, a: &BlockQ8_1, summ: &mut f32) {
        *summ = f16_at(p.add(2)).mul_add(a.s, *summ);
    }
    #[inline(always)]
    fn finish(lanes: f32, summ: f32) -> f32 {
        lanes + summ
    }
}

/// The f16 at `p` as f32 (exact).
///
/// # Safety
/// `p` points at 2 readable bytes.
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let h = vreinterpret_f16_u16(vdup_n_u16(p.cast::<u16>().read_unaligned()));
    vgetq_lane_f32::<0>(vcvt_f32_f16(h))
}

/// The 8 lanes of two accumulators (lanes 0-3, then 4-7), for `hsum8`.
#[inline(always)]
pub(super) fn lanes(acc: [float32x4_t; 2]) -> [f32; 8] {
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` has room for the 8 values.
    unsafe {
        vst1q_f32(lanes.as_mut_ptr(), acc[0]);
        vst1q_f32(lanes.as_mut_ptr().add(4), acc[1]);
    }
    lanes
}

/// Lane `k`: `Σ_{i=4k}^{4k+3} q_i·a_i` over the 16 bytes (exact, see the header).
///
/// # Safety
/// No memory access: unsafe only because NEON intrinsics are, which every aarch64 CPU has.
#[inline(always)]
unsafe fn dot16(q: int8x16_t, a: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(q), vget_low_s8(a));
    let hi = vmull_high_s8(q, a);
    vpaddlq_s16(vpaddq_s16(lo, hi))
}

/// `out[r][c] = F`'s scalar dot of weight row `r` with `acts[c]`.
///
/// # Safety
/// `w` holds `R · row_bytes` bytes with `row_bytes ≥ nb · F::BYTES`; every `acts[c]` holds at
/// least `nb` blocks.
#[inline(always)]
unsafe fn tile<F: Format, const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const F::Act; C],
    out: &mut [[f32; C]; R],
) {
    let mut acc = [[[vdupq_n_f32(0.0); 2]; C]; R];
    let mut summs = [[0f32; C]; R];
    for b in 0..nb {
        let mut ad = [0f32; C];
        let mut aq = [[vdupq_n_s8(0); 2]; C];
        for c in 0..C {
            let (d, qs) = F::act(&*acts[c].add(b));
            ad[c] = d;
            aq[c] = [vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))];
        }
        for r in 0..R {
            let p = w.add(r * row_bytes + b * F::BYTES);
            let d = f16_at(p);
            let q = F::quants(p);
            for c in 0..C {
                F::add_min(p, &*acts[c].add(b), &mut summs[r][c]);
                // d_w · d_a: the scalar kernel's product.
                let dd = vdupq_n_f32(d * ad[c]);
                for h in 0..2 {
                    let s = vcvtq_f32_s32(dot16(q[h], aq[c][h]));
                    acc[r][c][h] = vfmaq_f32(acc[r][c][h], dd, s);
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r][c] = F::finish(hsum8(&lanes(acc[r][c])), summs[r][c]);
        }
    }
}

/// `out[r][c] = dot_q4_1_q8_1(row r, acts[c])` for the `R` rows starting at `w` (`row_bytes`
/// apart, each `nb` blocks).
///
/// # Safety
/// The CPU must support NEON; `w` must hold `R · row_bytes` bytes with `row_bytes ≥ nb · 20`,
/// and every `acts[c]` at least `nb` blocks.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q4_1<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_1; C],
    out: &mut [[f32; C]; R],
) {
    tile::<Q4_1, R, C>(w, row_bytes, nb, acts, out)
}

/// `out[r][c] = dot_q8_0_q8_0(row r, acts[c])`; as `tile_q4_1` with 34-byte blocks.
///
/// # Safety
/// As `tile_q4_1`.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q8_0<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_0; C],
    out: &mut [[f32; C]; R],
) {
    tile::<Q8_0, R, C>(w, row_bytes, nb, acts, out)
}

/// `out[r][c] = dot_q4_0_q8_0(row r, acts[c])`; as `tile_q4_1` with 18-byte blocks.
///
/// # Safety
/// As `tile_q4_1`.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q4_0<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_0; C],
    out: &mut [[f32; C]; R],
) {
    tile::<Q4_0, R, C>(w, row_bytes, nb, acts, out)
}

/// `out[r][c] = dot_q5_0_q8_0(row r, acts[c])`; as `tile_q4_1` with 22-byte blocks.
///
/// # Safety
/// As `tile_q4_1`.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q5_0<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_0; C],
    out: &mut [[f32; C]; R],
) {
    tile::<Q5_0, R, C>(w, row_bytes, nb, acts, out)
}

/// `out[r][c] = dot_q5_1_q8_1(row r, acts[c])`; as `tile_q4_1` with 24-byte blocks.
///
/// # Safety
/// As `tile_q4_1`.
#[target_feature(enable = "neon")]
pub unsafe fn tile_q5_1<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_1; C],
    out: &mut [[f32; C]; R],
) {
    tile::<Q5_1, R, C>(w, row_bytes, nb, acts, out)
}

#[cfg(test)]
mod tests {
    use super::super::matvec::Kernel;

    /// Under qemu as on hardware: NEON is found, and is what products use by default.
    #[test]
    fn neon_is_detected_and_chosen() {
        assert_eq!(Kernel::available().last(), Some(&Kernel::Neon));
        if std::env::var_os("FFNSKIP_KERNEL").is_none() {
            assert_eq!(Kernel::detect(), Kernel::Neon);
        }
    }
}
