//! AVX-512 tiles for an even number of weight rows: two rows share each 512-bit register, so
//! every unpack, integer dot, conversion and FMA serves two rows at once (about half the
//! instructions of the 256-bit tiles in `avx2.rs`, which are still used for odd remainders).
//!
//! With one activation row (decode), a tile walks one row pair from its first block to its
//! last before the next pair, so the weights stream in as two sequential reads that the
//! prefetchers follow (plus a software prefetch 1 KiB ahead on each). With several (prefill),
//! it goes block by block over all pairs, preparing each activation block once for the tile:
//! there the weights come from cache, reused by every activation row. Measured with
//! `ffnskip bench --policies dense`, the decode order is ~10% faster at decode (1 and 2
//! threads) and the block order ~15% faster at prefill than the other way round.
//!
//! The bits are those of the scalar oracles in `blocks.rs` and `blocks_q5.rs`, for the reasons
//! given in `avx2.rs`: each 32-bit lane holds one row's exact integer sum of 4 products, and
//! its f32 chain is the oracle's lane chain. Only the place of a lane in the register changes,
//! and the final reduction reads each row's 8 lanes back in the oracle's order.

use std::arch::x86_64::*;

use super::blocks::{hsum8, BlockQ8_0, BlockQ8_1, Q4_1_BYTES, Q8_0_BYTES};
use super::blocks_q5::{Q5_0_BYTES, Q5_1_BYTES};

/// Software prefetch distance along each of the two rows being read, in bytes.
const PREFETCH_BYTES: usize = 1024;

/// Calls `step(pair, block, prepared activations)` for every row pair and block in the order
/// described at the top of this file: pair by pair for one activation row, block by block for
/// several.
#[inline(always)]
fn walk<const C: usize, A>(pairs: usize, nb: usize, prepare: impl Fn(usize) -> A, mut step: impl FnMut(usize, usize, &A)) {
    if C == 1 {
        for p in 0..pairs {
            for b in 0..nb {
                step(p, b, &prepare(b));
            }
        }
    } else {
        for b in 0..nb {
            let a = prepare(b);
            for p in 0..pairs {
                step(p, b, &a);
            }
        }
    }
}

/// The 16 lanes of `v`.
#[target_feature(enable = "avx512f")]
#[inline]
fn lanes16(v: __m512) -> [f32; 16] {
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` is 16 f32s; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
    lanes
}

/// Two little-endian 32-bit words as the low lanes of a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn pair_i32(lo: i32, hi: i32) -> __m128i {
    _mm_set_epi32(0, 0, hi, lo)
}

/// The 8 lanes of each row of a pair in the quarter layout of [`tile_q4_1`] (r0's lanes in
/// quarters 0 and 2, r1's in 1 and 3), in the oracle's lane order.
#[target_feature(enable = "avx512f")]
#[inline]
fn quarter_pair_lanes(acc: __m512) -> [[f32; 8]; 2] {
    let l = lanes16(acc);
    [[l[0], l[1], l[2], l[3], l[8], l[9], l[10], l[11]], [l[4], l[5], l[6], l[7], l[12], l[13], l[14], l[15]]]
}

/// The fifth bits of a Q5 row pair's blocks (`qh` of r0 and r1) as a byte mask in the pair
/// register's layout of [`tile_q4_1`]: r0's values 0..16, r1's 0..16, r0's 16..32, r1's 16..32.
#[inline(always)]
fn pair_high_bits(qh0: u32, qh1: u32) -> u64 {
    let (h0, h1) = (u64::from(qh0), u64::from(qh1));
    (h0 & 0xFFFF) | (h1 & 0xFFFF) << 16 | (h0 >> 16) << 32 | (h1 >> 16) << 48
}

/// `out[r][c] = dot_q4_1_q8_1(row r, acts[c])` for the `R` (even) rows starting at `w`.
///
/// Register layout of a row pair (r0, r1), in 128-bit quarters: r0's low nibbles (values
/// 0..16), r1's low nibbles, r0's high nibbles (values 16..32), r1's high nibbles; the
/// activations are arranged to match (values 0..16 twice, then 16..32 twice). So r0's lanes
/// k = 0..8 are register lanes 0..4 and 8..12, r1's are 4..8 and 12..16.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, F16C and FMA; `w` must hold `R · row_bytes`
/// bytes with `row_bytes ≥ nb · 20`, and every `acts[c]` at least `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)] // a tile is long; kept apart so profiles attribute time to its weight type
pub unsafe fn tile_q4_1<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_1; C],
    out: &mut [[f32; C]; R],
) {
    min_pairs::<R, C, false>(w, row_bytes, nb, acts, out)
}

/// `out[r][c] = dot_q5_1_q8_1(row r, acts[c])` for the `R` (even) rows starting at `w`: the
/// layout of [`tile_q4_1`], with 16 added to the bytes whose fifth bit is set.
///
/// # Safety
/// As [`tile_q4_1`], with `row_bytes ≥ nb · 24`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)] // a tile is long; kept apart so profiles attribute time to its weight type
pub unsafe fn tile_q5_1<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_1; C],
    out: &mut [[f32; C]; R],
) {
    min_pairs::<R, C, true>(w, row_bytes, nb, acts, out)
}

/// [`tile_q4_1`] (`Q5` false) or [`tile_q5_1`].
///
/// # Safety
/// As those.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // `p` indexes row pairs in several arrays
#[inline]
unsafe fn min_pairs<const R: usize, const C: usize, const Q5: bool>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_1; C],
    out: &mut [[f32; C]; R],
) {
    debug_assert_eq!(R % 2, 0);
    let (bytes, qs_at) = if Q5 { (Q5_1_BYTES, 8) } else { (Q4_1_BYTES, 4) };
    let sixteen = _mm512_set1_epi8(0x10);
    let low = _mm512_set1_epi8(0x0F);
    // Lanes of r0 take d0 (element 0 of [d0, m0, d1, m1]), lanes of r1 take d1 (element 2).
    let d_index = _mm512_set_epi32(2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    // Per pair and activation row: lanes 1 and 3 are the oracle's `m·s` chains of r0 and r1.
    let mut summs = [[_mm_setzero_ps(); C]; R];
    // Block `b` of the activation rows, arranged to match a pair's register.
    let prepare = |b: usize| -> [(__m512i, __m512, __m128); C] {
        std::array::from_fn(|c| {
            let a = &*acts[c].add(b);
            let a256 = _mm512_castsi256_si512(_mm256_loadu_si256(a.qs.as_ptr().cast()));
            (_mm512_shuffle_i64x2::<0b01_01_00_00>(a256, a256), _mm512_set1_ps(a.d), _mm_set1_ps(a.s))
        })
    };
    let step = |p: usize, b: usize, a: &[(__m512i, __m512, __m128); C]| {
        let p0 = w.add(2 * p * row_bytes + b * bytes);
        let p1 = p0.add(row_bytes);
        _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(PREFETCH_BYTES).cast());
        _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(PREFETCH_BYTES).cast());
        // [d0, m0, d1, m1], each f16 → f32 (exact).
        let dm = _mm_cvtph_ps(pair_i32(p0.cast::<i32>().read_unaligned(), p1.cast::<i32>().read_unaligned()));
        let d = _mm512_permutexvar_ps(d_index, _mm512_castps128_ps512(dm));
        let x = _mm256_set_m128i(_mm_loadu_si128(p1.add(qs_at).cast()), _mm_loadu_si128(p0.add(qs_at).cast()));
        let mut q = _mm512_and_si512(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), _mm256_srli_epi16::<4>(x)), low);
        if Q5 {
            let qh = |p: *const u8| p.add(4).cast::<u32>().read_unaligned();
            q = _mm512_mask_add_epi8(q, pair_high_bits(qh(p0), qh(p1)), q, sixteen);
        }
        for (c, &(aq, ad, asum)) in a.iter().enumerate() {
            summs[p][c] = _mm_fmadd_ps(dm, asum, summs[p][c]);
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, aq);
            let dd = _mm512_mul_ps(d, ad);
            acc[p][c] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[p][c]);
        }
    };
    walk::<C, _>(R / 2, nb, prepare, step);
    for p in 0..R / 2 {
        for c in 0..C {
            let [r0, r1] = quarter_pair_lanes(acc[p][c]);
            let mut m = [0f32; 4];
            _mm_storeu_ps(m.as_mut_ptr(), summs[p][c]);
            out[2 * p][c] = hsum8(&r0) + m[1];
            out[2 * p + 1][c] = hsum8(&r1) + m[3];
        }
    }
}

/// `out[r][c] = dot_q5_0_q8_0(row r, acts[c])` for the `R` (even) rows starting at `w`: the
/// layout of [`tile_q4_1`]. The values `v = q − 16` are the nibble where the fifth bit is set
/// and `nibble − 16 < 0` where it is clear, so `|v|` (as u8) times `a` negated where the bit is
/// clear gives the products `v·a` (as in [`tile_q8_0`]; activation quants are in −127..=127).
///
/// # Safety
/// As [`tile_q4_1`], with `row_bytes ≥ nb · 22`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // `p` indexes row pairs in several arrays
#[inline(never)] // a tile is long; kept apart so profiles attribute time to its weight type
pub unsafe fn tile_q5_0<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_0; C],
    out: &mut [[f32; C]; R],
) {
    debug_assert_eq!(R % 2, 0);
    let low = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(0x10);
    // Lanes of r0 take d0 (element 0 of [d0, d1]), lanes of r1 take d1.
    let d_index = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    // Block `b` of the activation rows arranged as in `tile_q4_1`, and its scale.
    let prepare = |b: usize| -> [(__m512i, __m512); C] {
        std::array::from_fn(|c| {
            let a = &*acts[c].add(b);
            let a256 = _mm512_castsi256_si512(_mm256_loadu_si256(a.qs.as_ptr().cast()));
            (_mm512_shuffle_i64x2::<0b01_01_00_00>(a256, a256), _mm512_set1_ps(a.d))
        })
    };
    let step = |p: usize, b: usize, a: &[(__m512i, __m512); C]| {
        let p0 = w.add(2 * p * row_bytes + b * Q5_0_BYTES);
        let p1 = p0.add(row_bytes);
        _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(PREFETCH_BYTES).cast());
        _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(PREFETCH_BYTES).cast());
        let d01 = i32::from(p0.cast::<u16>().read_unaligned()) | (i32::from(p1.cast::<u16>().read_unaligned()) << 16);
        let d = _mm512_permutexvar_ps(d_index, _mm512_castps128_ps512(_mm_cvtph_ps(pair_i32(d01, 0))));
        let x = _mm256_set_m128i(_mm_loadu_si128(p1.add(6).cast()), _mm_loadu_si128(p0.add(6).cast()));
        let nibbles = _mm512_and_si512(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), _mm256_srli_epi16::<4>(x)), low);
        let qh = |p: *const u8| p.add(2).cast::<u32>().read_unaligned();
        let negative = !pair_high_bits(qh(p0), qh(p1));
        // |v|: 16 − nibble where v < 0, else the nibble.
        let abs = _mm512_mask_sub_epi8(nibbles, negative, sixteen, nibbles);
        for (c, &(aq, ad)) in a.iter().enumerate() {
            let aw = _mm512_mask_sub_epi8(aq, negative, _mm512_setzero_si512(), aq);
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), abs, aw);
            let dd = _mm512_mul_ps(d, ad);
            acc[p][c] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[p][c]);
        }
    };
    walk::<C, _>(R / 2, nb, prepare, step);
    for p in 0..R / 2 {
        for c in 0..C {
            let [r0, r1] = quarter_pair_lanes(acc[p][c]);
            out[2 * p][c] = hsum8(&r0);
            out[2 * p + 1][c] = hsum8(&r1);
        }
    }
}

/// `out[r][c] = dot_q8_0_q8_0(row r, acts[c])` for the `R` (even) rows starting at `w`; a row
/// pair's register holds r0's 32 quants, then r1's.
///
/// `|w|` (as u8, −128 → 128) times `a` negated where `w < 0` gives the same products as the
/// 256-bit tiles' sign trick (where `w = 0` both products are 0); activation quants are in
/// −127..=127, so negating them cannot overflow.
///
/// # Safety
/// As [`tile_q4_1`], with `row_bytes ≥ nb · 34`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // `p` indexes row pairs in several arrays
#[inline(never)] // a tile is long; kept apart so profiles attribute time to its weight type
pub unsafe fn tile_q8_0<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8_0; C],
    out: &mut [[f32; C]; R],
) {
    debug_assert_eq!(R % 2, 0);
    let d_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    // Block `b` of the activation rows, twice per register (one copy per row of a pair).
    let prepare = |b: usize| -> [(__m512i, __m512); C] {
        std::array::from_fn(|c| {
            let a = &*acts[c].add(b);
            (_mm512_broadcast_i64x4(_mm256_loadu_si256(a.qs.as_ptr().cast())), _mm512_set1_ps(a.d))
        })
    };
    let step = |p: usize, b: usize, a: &[(__m512i, __m512); C]| {
        let p0 = w.add(2 * p * row_bytes + b * Q8_0_BYTES);
        let p1 = p0.add(row_bytes);
        _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(PREFETCH_BYTES).cast());
        _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(PREFETCH_BYTES).cast());
        let d01 = i32::from(p0.cast::<u16>().read_unaligned()) | (i32::from(p1.cast::<u16>().read_unaligned()) << 16);
        let d = _mm512_permutexvar_ps(d_index, _mm512_castps128_ps512(_mm_cvtph_ps(pair_i32(d01, 0))));
        let x = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(p0.add(2).cast())),
            _mm256_loadu_si256(p1.add(2).cast()),
        );
        let ax = _mm512_abs_epi8(x);
        let negative = _mm512_movepi8_mask(x);
        for (c, &(aq, ad)) in a.iter().enumerate() {
            let aw = _mm512_mask_sub_epi8(aq, negative, _mm512_setzero_si512(), aq);
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, aw);
            let dd = _mm512_mul_ps(d, ad);
            acc[p][c] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[p][c]);
        }
    };
    walk::<C, _>(R / 2, nb, prepare, step);
    for p in 0..R / 2 {
        for c in 0..C {
            let l = lanes16(acc[p][c]);
            out[2 * p][c] = hsum8(&l[..8].try_into().expect("8 lanes"));
            out[2 * p + 1][c] = hsum8(&l[8..].try_into().expect("8 lanes"));
        }
    }
}
