//! AVX-512 tiles of the k-quant products for an even number of weight rows: two rows share
//! each 512-bit register (r0 in the low 256 bits, r1 in the high), so every unpack, integer
//! dot and reduction serves two rows, where `avx2_k.rs` walks one row at a time. The walk over
//! pairs and blocks is that of `avx512.rs`.
//!
//! The bits are those of `dot_q4_k_q8_k` and `dot_q6_k_q8_k` for the reasons given in
//! `avx2_k.rs`: a 256-bit half holds the same exact integer lanes as the 256-bit tile, the
//! lanes' totals are exact in any order, and each row's float steps are the oracle's, in its
//! order. The two rows' float chains sit side by side in one vector.

use std::arch::x86_64::*;

use super::avx2_k::scales_mins;
use super::avx512::{lanes16, pair_i32, walk, PREFETCH_BYTES};
use super::blocks::hsum8;
use super::blocks_k::{BlockQ8K, Q4KSums, Q6KSums, Q4_K_BYTES, Q6_K_BYTES};

/// `(x of r0, x of r1)` as one register, r0 in the low half.
#[target_feature(enable = "avx512f")]
#[inline]
fn halves(r0: __m256i, r1: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(r0), r1)
}

/// `[I0, M0, I1, M1]`: each row's total of its integer lanes `isum` and of its mins' terms
/// `msum` (exact in any order).
#[target_feature(enable = "avx512f")]
#[inline]
fn block_totals(isum: __m512i, msum: __m512i) -> __m128i {
    // Per quarter: [i0 + i2, m0 + m2, i1 + i3, m1 + m3], then the quarter's [I, M, I, M].
    let s = _mm512_add_epi32(_mm512_unpacklo_epi32(isum, msum), _mm512_unpackhi_epi32(isum, msum));
    let s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0b01_00_11_10>(s));
    // A row's two quarters (0 and 1 for r0, 2 and 3 for r1) added.
    let s = _mm512_add_epi32(s, _mm512_shuffle_i32x4::<0b10_11_00_01>(s, s));
    _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_setr_epi32(0, 1, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), s))
}

/// Quarter `g` of the result: `[T_g of r0, M_g of r0, T_g of r1, M_g of r1]`, the totals of
/// sub-block pair `g`'s integer lanes (`pairs[g]`) and of its mins' terms (lanes `2g, 2g + 1`
/// of each row's `msum`), as floats (exact: the integers are below 2^24).
#[target_feature(enable = "avx512f")]
#[inline]
fn pair_totals(pairs: &[__m512i; 4], msum: __m512i) -> __m512 {
    let interleave = |x: __m512i, y: __m512i| _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
    let (a01, a23) = (interleave(pairs[0], pairs[1]), interleave(pairs[2], pairs[3]));
    // Per quarter: [P0, P1, P2, P3], the quarter's share of each pair's total.
    let b = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
    // Quarter 0: r0's [T0, T1, T2, T3]; quarter 2: r1's.
    let t = _mm512_add_epi32(b, _mm512_shuffle_i32x4::<0b10_11_00_01>(b, b));
    // Per quarter: [m0 + m1, m2 + m3, …]: quarter 0 holds r0's M0, M1, quarter 1 its M2, M3.
    let m = _mm512_add_epi32(_mm512_shuffle_epi32::<0b10_00_10_00>(msum), _mm512_shuffle_epi32::<0b11_01_11_01>(msum));
    let idx = _mm512_setr_epi32(0, 16, 8, 24, 1, 17, 9, 25, 2, 20, 10, 28, 3, 21, 11, 29);
    _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(t, idx, m))
}

/// A `pshufb` mask that fills 128-bit quarters 0 and 2 with i16 element `lo` of that quarter,
/// quarters 1 and 3 with element `hi`.
#[target_feature(enable = "avx512f")]
#[inline]
fn broadcast_i16(lo: i8, hi: i8) -> __m512i {
    let pair = |j: i8| _mm_set1_epi16(i16::from(2 * j) | i16::from(2 * j + 1) << 8);
    _mm512_broadcast_i64x4(_mm256_set_m128i(pair(hi), pair(lo)))
}

/// `out[r][c] = dot_q4_k_q8_k(row r, acts[c])` for the `R` (even) rows starting at `w`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, F16C and FMA; `w` must hold `R · row_bytes`
/// bytes with `row_bytes ≥ nb · 144`, and every `acts[c]` at least `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // `p` and `c` index several arrays
#[inline(never)] // a tile is long; kept apart so profiles attribute time to its weight type
pub unsafe fn tile_q4_k<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8K; C],
    out: &mut [[f32; C]; R],
) {
    debug_assert_eq!(R % 2, 0);
    let low = _mm512_set1_epi8(0x0F);
    // Per pair and activation row: [acc0, acc_min0, acc1, acc_min1] (`R / 2` pairs used).
    let mut acc = [[_mm_setzero_ps(); C]; R];
    // Block `b` of the activation rows: its `bsums` in both halves, its scale, its quants.
    let prepare = |b: usize| -> [(__m512i, __m128, *const i8, Q4KSums); C] {
        std::array::from_fn(|c| {
            let a = &*acts[c].add(b);
            let bsums = _mm512_broadcast_i64x4(_mm256_loadu_si256(a.bsums.as_ptr().cast()));
            (bsums, _mm_set1_ps(a.d), a.qs.as_ptr(), a.q4_k_sums)
        })
    };
    let step = |p: usize, b: usize, a: &[(__m512i, __m128, *const i8, Q4KSums); C]| {
        let p0 = w.add(2 * p * row_bytes + b * Q4_K_BYTES);
        let p1 = p0.add(row_bytes);
        _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(PREFETCH_BYTES).cast());
        _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(PREFETCH_BYTES).cast());
        // [d0, dmin0, d1, dmin1]: four f16 → f32 (exact).
        let dm = _mm_cvtph_ps(pair_i32(p0.cast::<i32>().read_unaligned(), p1.cast::<i32>().read_unaligned()));
        let (sm0, sm1) = (scales_mins(_mm_loadu_si128(p0.add(4).cast())), scales_mins(_mm_loadu_si128(p1.add(4).cast())));
        // Each row's 8 scales as i16 in both quarters of its half (for the per-sub-block
        // shuffles), and its mins twice each as i16: lane pair k meets bsums[2k], bsums[2k + 1].
        let scales = halves(
            _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm0)),
            _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm1)),
        );
        let mins = halves(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm0, sm0)), _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm1, sm1)));
        // The integer lanes of each sub-block pair g (sub-blocks 2g, 2g + 1).
        let mut pairs = [[_mm512_setzero_si512(); 4]; C];
        for g in 0..4 {
            let x = halves(_mm256_loadu_si256(p0.add(16 + 32 * g).cast()), _mm256_loadu_si256(p1.add(16 + 32 * g).cast()));
            let lo = _mm512_and_si512(x, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
            let j = 2 * g as i8;
            let s_lo = _mm512_shuffle_epi8(scales, broadcast_i16(j, j));
            let s_hi = _mm512_shuffle_epi8(scales, broadcast_i16(j + 1, j + 1));
            for c in 0..C {
                let aq = a[c].2.add(64 * g);
                let a_lo = _mm512_broadcast_i64x4(_mm256_loadu_si256(aq.cast()));
                let a_hi = _mm512_broadcast_i64x4(_mm256_loadu_si256(aq.add(32).cast()));
                let isum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(lo, a_lo), s_lo);
                pairs[c][g] = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(hi, a_hi), s_hi);
            }
        }
        for c in 0..C {
            let (bsums, ad, _, sums) = a[c];
            let msum = _mm512_madd_epi16(bsums, mins);
            let scale = _mm_mul_ps(dm, ad);
            let pairs = &pairs[c];
            match sums {
                Q4KSums::PerBlock => {
                    let isum = _mm512_add_epi32(_mm512_add_epi32(pairs[0], pairs[1]), _mm512_add_epi32(pairs[2], pairs[3]));
                    let totals = _mm_cvtepi32_ps(block_totals(isum, msum));
                    acc[p][c] = _mm_fmadd_ps(totals, scale, acc[p][c]);
                }
                Q4KSums::PerSubBlockPair => {
                    let t = pair_totals(pairs, msum);
                    for v in [
                        _mm512_castps512_ps128(t),
                        _mm512_extractf32x4_ps::<1>(t),
                        _mm512_extractf32x4_ps::<2>(t),
                        _mm512_extractf32x4_ps::<3>(t),
                    ] {
                        acc[p][c] = _mm_fmadd_ps(v, scale, acc[p][c]);
                    }
                }
            }
        }
    };
    walk::<C, _>(R / 2, nb, prepare, step);
    for p in 0..R / 2 {
        for c in 0..C {
            let mut v = [0f32; 4];
            _mm_storeu_ps(v.as_mut_ptr(), acc[p][c]);
            out[2 * p][c] = v[0] - v[1];
            out[2 * p + 1][c] = v[2] - v[3];
        }
    }
}

/// `out[r][c] = dot_q6_k_q8_k(row r, acts[c])` for the `R` (even) rows starting at `w`; each
/// half of a register holds its row's 8 lanes of the 256-bit tile.
///
/// # Safety
/// As [`tile_q4_k`], with `row_bytes ≥ nb · 210`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)] // `p` and `c` index several arrays
#[inline(never)] // a tile is long; kept apart so profiles attribute time to its weight type
pub unsafe fn tile_q6_k<const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [*const BlockQ8K; C],
    out: &mut [[f32; C]; R],
) {
    debug_assert_eq!(R % 2, 0);
    let low = _mm512_set1_epi8(0x0F);
    let high = _mm512_set1_epi8(0x30);
    // Lanes of r0 take d0 (element 0 of [d0, d1]), lanes of r1 take d1.
    let d_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    // `Q6KSums::Lanes` rows sum in 8 lanes per row; `PerBlock` rows in one float per row,
    // lanes 0 (r0) and 2 (r1) of `block_acc`.
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut block_acc = [[_mm_setzero_ps(); C]; R];
    // Block `b` of the activation rows: its `bsums` in both halves, its scale, its quants.
    let prepare = |b: usize| -> [(__m512i, f32, *const i8, Q6KSums); C] {
        std::array::from_fn(|c| {
            let a = &*acts[c].add(b);
            let bsums = _mm512_broadcast_i64x4(_mm256_loadu_si256(a.bsums.as_ptr().cast()));
            (bsums, a.d, a.qs.as_ptr(), a.q6_k_sums)
        })
    };
    let step = |p: usize, b: usize, a: &[(__m512i, f32, *const i8, Q6KSums); C]| {
        let p0 = w.add(2 * p * row_bytes + b * Q6_K_BYTES);
        let p1 = p0.add(row_bytes);
        _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(PREFETCH_BYTES).cast());
        _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(PREFETCH_BYTES).cast());
        let d01 = i32::from(p0.add(208).cast::<u16>().read_unaligned())
            | (i32::from(p1.add(208).cast::<u16>().read_unaligned()) << 16);
        // [d0, d1, 0, 0]: two f16 → f32 (exact).
        let d = _mm_cvtph_ps(pair_i32(d01, 0));
        let d_lanes = _mm512_permutexvar_ps(d_index, _mm512_castps128_ps512(d));
        let (sc0, sc1) = (_mm_loadu_si128(p0.add(192).cast()), _mm_loadu_si128(p1.add(192).cast()));
        // −32·sc_j as i16 (exact: |32·sc| ≤ 4096), lane j of a half against bsums[j].
        let sc16 = halves(_mm256_cvtepi8_epi16(sc0), _mm256_cvtepi8_epi16(sc1));
        let offset = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16::<5>(sc16));
        // Per half h of the block: each row's scales 8h..8h+8 as i16, in both quarters of its
        // register half.
        let scales = |h: usize| {
            let s = |sc: __m128i| _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(if h == 0 { sc } else { _mm_srli_si128::<8>(sc) }));
            halves(s(sc0), s(sc1))
        };
        let mut isum: [__m512i; C] = std::array::from_fn(|c| _mm512_madd_epi16(a[c].0, offset));
        for h in 0..2 {
            let scales = scales(h);
            let ql0 = halves(_mm256_loadu_si256(p0.add(64 * h).cast()), _mm256_loadu_si256(p1.add(64 * h).cast()));
            let ql1 = halves(_mm256_loadu_si256(p0.add(64 * h + 32).cast()), _mm256_loadu_si256(p1.add(64 * h + 32).cast()));
            let qh = halves(_mm256_loadu_si256(p0.add(128 + 32 * h).cast()), _mm256_loadu_si256(p1.add(128 + 32 * h).cast()));
            // As in `avx2_k.rs`: vector s = nibble s/2 of ql(s%2) | bits 2s..2s+2 of qh at 4..6.
            let q = [
                _mm512_or_si512(_mm512_and_si512(ql0, low), _mm512_and_si512(_mm512_slli_epi16::<4>(qh), high)),
                _mm512_or_si512(_mm512_and_si512(ql1, low), _mm512_and_si512(_mm512_slli_epi16::<2>(qh), high)),
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql0), low), _mm512_and_si512(qh, high)),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql1), low),
                    _mm512_and_si512(_mm512_srli_epi16::<2>(qh), high),
                ),
            ];
            for (s, &q) in q.iter().enumerate() {
                // Bytes 0-15 of a half are sub-block 2s of the block half, 16-31 sub-block 2s+1.
                let j = 2 * s as i8;
                let scale = _mm512_shuffle_epi8(scales, broadcast_i16(j, j + 1));
                for c in 0..C {
                    let aq = _mm512_broadcast_i64x4(_mm256_loadu_si256(a[c].2.add(128 * h + 32 * s).cast()));
                    isum[c] = _mm512_dpwssd_epi32(isum[c], _mm512_maddubs_epi16(q, aq), scale);
                }
            }
        }
        for c in 0..C {
            let (_, ad, _, sums) = a[c];
            match sums {
                Q6KSums::Lanes => {
                    let dd = _mm512_mul_ps(d_lanes, _mm512_set1_ps(ad));
                    acc[p][c] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum[c]), acc[p][c]);
                }
                Q6KSums::PerBlock => {
                    // [T0, 0, T1, 0] · [d0, d0, d1, d1], then `fma(·, d_a, acc)` per row.
                    let totals = _mm_cvtepi32_ps(block_totals(isum[c], _mm512_setzero_si512()));
                    let x = _mm_mul_ps(totals, _mm_unpacklo_ps(d, d));
                    block_acc[p][c] = _mm_fmadd_ps(x, _mm_set1_ps(ad), block_acc[p][c]);
                }
            }
        }
    };
    walk::<C, _>(R / 2, nb, prepare, step);
    for p in 0..R / 2 {
        for c in 0..C {
            match (*acts[c]).q6_k_sums {
                Q6KSums::Lanes => {
                    let l = lanes16(acc[p][c]);
                    out[2 * p][c] = hsum8(&l[..8].try_into().expect("8 lanes"));
                    out[2 * p + 1][c] = hsum8(&l[8..].try_into().expect("8 lanes"));
                }
                Q6KSums::PerBlock => {
                    let mut v = [0f32; 4];
                    _mm_storeu_ps(v.as_mut_ptr(), block_acc[p][c]);
                    out[2 * p][c] = v[0];
                    out[2 * p + 1][c] = v[2];
                }
            }
        }
    }
}
