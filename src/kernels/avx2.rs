//! AVX2 + FMA (+ F16C) tiles of the quantized dot products, bit-identical to the scalar oracles
//! in `blocks.rs` and `blocks_q5.rs`.
//!
//! Why the bits match: lane `k` of the scalar kernels accumulates, once per block,
//! `fma(d_w·d_a, Σ_{i=4k}^{4k+3} q_i·a_i, acc_k)`. Here `maddubs` (u8 × i8 → pairs summed to i16)
//! followed by `madd(·, 1)` (pairs of i16 summed to i32) produces exactly that integer sum in
//! 32-bit lane `k` (every intermediate is exact: |pair| ≤ 2·128·127 < 2^15), `cvtepi32_ps` is
//! exact (|sum| < 2^24), `d_w·d_a` is the same scalar f32 product, and the FMA is the same
//! fused operation in the same block order. The final reduction is the shared `hsum8`, and the
//! Q4_1 `m·s` term is the same scalar FMA chain. f16 → f32 conversion is exact on both paths.
//!
//! A tile computes `R` weight rows × `C` activation rows at once: the `R·C` accumulator chains
//! are independent, which hides the FMA latency of the per-lane chain (the block order within a
//! chain is fixed by the bit-identity requirement, so blocks cannot be split across lanes), and
//! each expanded weight block is reused for the `C` activation rows.
//!
//! Q4_0 multiplies the unsigned nibbles `q` and subtracts `8·Σa` per lane: the lane's integer is
//! `Σ q·a − 8·Σ a = Σ (q − 8)·a`, exactly the scalar sum (with VNNI the correction is the
//! starting value of the dot instruction's accumulator). Its tile walks the rows one after the
//! other rather than block by block across them: the tile's rows are contiguous, so the weights
//! are read as one sequential stream, which the hardware prefetcher follows. With weights from
//! DRAM that is 1.7 times as fast (576 × 1536, one activation row: 62 → 37 µs on one thread);
//! with weights in cache, where the correction could have been shared by the rows, it is about
//! a fifth slower.
//!
//! Q5_0 and Q5_1 (`blocks_q5.rs`) are Q4_0 and Q4_1 with a fifth bit per value: the tiles are
//! theirs with the bits from `qh` or-ed in as 0x10 (`high_bits`), and Q5_0 subtracting `16·Σa`.
//! ggml's Q5_0 kernel multiplies signed values `q − 16` instead; the lane integers are the same.
//!
//! Precondition (as in ggml): activation quants are in −127..=127 (what `quantize_block`
//! produces), so the Q8_0 sign trick (`|w|` × `a·sign(w)`) cannot overflow.

use std::arch::x86_64::*;

use super::blocks::{hsum8, BlockQ8_0, BlockQ8_1, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES};
use super::blocks_q5::{Q5_0_BYTES, Q5_1_BYTES};

/// Software prefetch distance, in weight rows ahead of the one being read.
pub(super) const PREFETCH_ROWS: usize = 8;

/// The 8 lanes of `acc`, for the shared reduction `hsum8`.
#[target_feature(enable = "avx")]
#[inline]
pub(super) fn lanes(acc: __m256) -> [f32; 8] {
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 f32s; storeu has no alignment requirement.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    lanes
}

/// The fifth bits of a Q5 block's 32 values (bit `j` of `qh`) as bytes: `0x10` where set, else
/// 0, value `j` in byte `j`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn high_bits(qh: i32) -> __m256i {
    // Byte j takes byte j / 8 of qh (shuffles stay within 128-bit halves; both hold qh), then
    // tests its bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
    );
    let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Defines `tile_q4_0`, `tile_q4_1`, `tile_q5_0`, `tile_q5_1` and `tile_q8_0` for one instruction
/// set: `$feat` are the target features, `|$acc, $q, $a| $dot` adds the exact integer dot of
/// 4-byte groups (u8 `q` × i8 `a`) to the i32 lanes of `acc`.
macro_rules! tiles {
    ($module:ident, $feat:literal, |$acc:ident, $q:ident, $a:ident| $dot:expr) => {
        pub mod $module {
            use super::*;

            /// `out[r][c] = dot_q4_0_q8_0(row r, acts[c])` for the `R` rows starting at `w`
            /// (`row_bytes` apart, each `nb` blocks).
            ///
            /// # Safety
            /// The CPU must support the module's features; `w` must hold `R · row_bytes` bytes
            /// with `row_bytes ≥ nb · 18`, and every `acts[c]` at least `nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q4_0<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_0; C],
                out: &mut [[f32; C]; R],
            ) {
                offset_tile::<R, C, false>(w, row_bytes, nb, acts, out)
            }

            /// `out[r][c] = dot_q5_0_q8_0(row r, acts[c])`; as `tile_q4_0` with 22-byte blocks.
            ///
            /// # Safety
            /// As `tile_q4_0`, with `row_bytes ≥ nb · 22`.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q5_0<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_0; C],
                out: &mut [[f32; C]; R],
            ) {
                offset_tile::<R, C, true>(w, row_bytes, nb, acts, out)
            }

            /// The tile of the offset types: Q4_0 (`Q5` false: quants 0..=15 minus 8) or Q5_0
            /// (quants 0..=31 with the fifth bit from `qh`, minus 16).
            ///
            /// # Safety
            /// As `tile_q4_0` or `tile_q5_0`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn offset_tile<const R: usize, const C: usize, const Q5: bool>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_0; C],
                out: &mut [[f32; C]; R],
            ) {
                let (bytes, offset, qs_at) = if Q5 { (Q5_0_BYTES, 16, 6) } else { (Q4_0_BYTES, 8, 2) };
                let low = _mm256_set1_epi8(0x0F);
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                for r in 0..R {
                    for b in 0..nb {
                        let mut aq = [_mm256_setzero_si256(); C];
                        let mut ad = [_mm256_setzero_ps(); C];
                        // −offset · Σ a over each lane's 4 activations.
                        let mut corr = [_mm256_setzero_si256(); C];
                        for c in 0..C {
                            let a = &*acts[c].add(b);
                            aq[c] = _mm256_loadu_si256(a.qs.as_ptr().cast());
                            ad[c] = _mm256_set1_ps(a.d);
                            let sum = {
                                let ($acc, $q, $a) =
                                    (_mm256_setzero_si256(), _mm256_set1_epi8(offset), aq[c]);
                                $dot
                            };
                            corr[c] = _mm256_sub_epi32(_mm256_setzero_si256(), sum);
                        }
                        let p = w.add(r * row_bytes + b * bytes);
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * row_bytes).cast());
                        let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                            p.cast::<u16>().read_unaligned(),
                        ))));
                        // Bytes 0..16: low nibbles (values 0..16); bytes 16..32: high nibbles.
                        let x = _mm_loadu_si128(p.add(qs_at).cast());
                        let mut q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(x), x), low);
                        if Q5 {
                            q = _mm256_or_si256(q, high_bits(p.add(2).cast::<i32>().read_unaligned()));
                        }
                        for c in 0..C {
                            let s = {
                                let ($acc, $q, $a) = (corr[c], q, aq[c]);
                                $dot
                            };
                            let dd = _mm256_mul_ps(d, ad[c]);
                            acc[r][c] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[r][c]);
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = hsum8(&lanes(acc[r][c]));
                    }
                }
            }

            /// `out[r][c] = dot_q4_1_q8_1(row r, acts[c])` for the `R` rows starting at `w`
            /// (`row_bytes` apart, each `nb` blocks).
            ///
            /// # Safety
            /// The CPU must support the module's features; `w` must hold `R · row_bytes` bytes
            /// with `row_bytes ≥ nb · 20`, and every `acts[c]` at least `nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q4_1<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_1; C],
                out: &mut [[f32; C]; R],
            ) {
                min_tile::<R, C, false>(w, row_bytes, nb, acts, out)
            }

            /// `out[r][c] = dot_q5_1_q8_1(row r, acts[c])`; as `tile_q4_1` with 24-byte blocks.
            ///
            /// # Safety
            /// As `tile_q4_1`, with `row_bytes ≥ nb · 24`.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q5_1<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_1; C],
                out: &mut [[f32; C]; R],
            ) {
                min_tile::<R, C, true>(w, row_bytes, nb, acts, out)
            }

            /// The tile of the types with a minimum: Q4_1 (`Q5` false: quants 0..=15) or Q5_1
            /// (quants 0..=31 with the fifth bit from `qh`).
            ///
            /// # Safety
            /// As `tile_q4_1` or `tile_q5_1`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn min_tile<const R: usize, const C: usize, const Q5: bool>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_1; C],
                out: &mut [[f32; C]; R],
            ) {
                let (bytes, qs_at) = if Q5 { (Q5_1_BYTES, 8) } else { (Q4_1_BYTES, 4) };
                let low = _mm256_set1_epi8(0x0F);
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let mut summs = [[0f32; C]; R];
                for b in 0..nb {
                    let mut aq = [_mm256_setzero_si256(); C];
                    let mut ad = [_mm256_setzero_ps(); C];
                    let mut asum = [0f32; C];
                    for c in 0..C {
                        let a = &*acts[c].add(b);
                        aq[c] = _mm256_loadu_si256(a.qs.as_ptr().cast());
                        ad[c] = _mm256_set1_ps(a.d);
                        asum[c] = a.s;
                    }
                    for r in 0..R {
                        let p = w.add(r * row_bytes + b * bytes);
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * row_bytes).cast());
                        // d and m: two f16 → f32 (exact).
                        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
                        let d = _mm256_broadcastss_ps(dm);
                        let m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                        // Bytes 0..16: low nibbles (values 0..16); bytes 16..32: high nibbles.
                        let x = _mm_loadu_si128(p.add(qs_at).cast());
                        let mut q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(x), x), low);
                        if Q5 {
                            q = _mm256_or_si256(q, high_bits(p.add(4).cast::<i32>().read_unaligned()));
                        }
                        for c in 0..C {
                            summs[r][c] = m.mul_add(asum[c], summs[r][c]);
                            let s = {
                                let ($acc, $q, $a) = (_mm256_setzero_si256(), q, aq[c]);
                                $dot
                            };
                            // d_w · d_a in every lane: the scalar kernel's product.
                            let dd = _mm256_mul_ps(d, ad[c]);
                            acc[r][c] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[r][c]);
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = hsum8(&lanes(acc[r][c])) + summs[r][c];
                    }
                }
            }

            /// `out[r][c] = dot_q8_0_q8_0(row r, acts[c])`; same contract as `tile_q4_1`
            /// with 34-byte blocks.
            ///
            /// # Safety
            /// As `tile_q4_1`.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q8_0<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8_0; C],
                out: &mut [[f32; C]; R],
            ) {
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                for b in 0..nb {
                    let mut aq = [_mm256_setzero_si256(); C];
                    let mut ad = [_mm256_setzero_ps(); C];
                    for c in 0..C {
                        let a = &*acts[c].add(b);
                        aq[c] = _mm256_loadu_si256(a.qs.as_ptr().cast());
                        ad[c] = _mm256_set1_ps(a.d);
                    }
                    for r in 0..R {
                        let p = w.add(r * row_bytes + b * Q8_0_BYTES);
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * row_bytes).cast());
                        let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                            p.cast::<u16>().read_unaligned(),
                        ))));
                        let x = _mm256_loadu_si256(p.add(2).cast());
                        // |w| as u8 (−128 → 128), and a with w's sign: same products.
                        let ax = _mm256_sign_epi8(x, x);
                        for c in 0..C {
                            let s = {
                                let ($acc, $q, $a) =
                                    (_mm256_setzero_si256(), ax, _mm256_sign_epi8(aq[c], x));
                                $dot
                            };
                            let dd = _mm256_mul_ps(d, ad[c]);
                            acc[r][c] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[r][c]);
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = hsum8(&lanes(acc[r][c]));
                    }
                }
            }
        }
    };
}

// maddubs: pairs of u8·i8 summed to i16 (exact: |pair| ≤ 2·128·127 < 2^15); madd with 1:
// pairs of i16 summed to i32.
tiles!(avx2, "avx2,fma,f16c", |acc, q, a| _mm256_add_epi32(
    acc,
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1))
));

// VNNI: the four u8·i8 products summed straight into i32, one instruction.
tiles!(vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", |acc, q, a| _mm256_dpbusd_epi32(
    acc, q, a
));
