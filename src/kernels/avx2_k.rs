//! AVX2 (+ VNNI) tiles of the k-quant dot products, bit-identical to `dot_q4_k_q8_k` and
//! `dot_q6_k_q8_k` (`blocks_k.rs`). Q4_K reduces each block's (or sub-block pair's) integer
//! lanes to two totals before the float steps, as its oracle does; Q6_K keeps 8 lanes to the
//! end, or reduces each block for rows marked `Q6KSums::PerBlock`.
//!
//! Why the bits match: a 32-byte vector holds 32 consecutive weights of one block. `maddubs`
//! multiplies the unsigned quants (≤ 15 for Q4_K, ≤ 63 for Q6_K) by the activations (−127..=127)
//! and sums pairs to i16 without saturating (|pair| ≤ 2·63·127 < 2^15); multiplying those by
//! the sub-block scales (as i16) and summing pairs to i32 (`madd`, or VNNI's `vpdpwssd`, which
//! also adds to the accumulator) leaves in 32-bit lane `k` the scale times the sum of the
//! products of bytes `4k..4k+4`. Summed over the block's 8 vectors, that is Q6_K's oracle
//! per-lane integer, exactly (no intermediate exceeds i32), and for Q4_K, summed over the
//! lanes, its block integer. The activation-sum terms (`bsums` times the mins, or times −32 for
//! Q6_K's offset) are one more `madd`; the float steps are the oracle's products and FMAs in
//! the same order, and Q6_K's final reduction is the shared `hsum8`.
//!
//! Tiles of `R` weight rows × `C` activation rows, as in `avx2.rs`: each weight block is
//! unpacked once and reused for the `C` activation rows. Unlike there, the tile walks its rows
//! one after the other (all blocks of a row, then the next row): the rows are contiguous, so
//! the weights are read as one sequential stream, which the hardware prefetcher follows. With
//! k-quant blocks (144 or 210 bytes) visiting the rows block by block halved the speed when
//! the weights come from DRAM (1536-wide rows, one thread: 61 → 31 µs per 576 rows for Q4_K).
//! The integer chain per block is long enough to hide the FMA latency of one row at a time.

use std::arch::x86_64::*;

use super::avx2::{lanes, PREFETCH_ROWS};
use super::blocks::hsum8;
use super::blocks_k::{BlockQ8K, Q4KSums, Q6KSums, Q4_K_BYTES, Q6_K_BYTES};

/// Prefetches the `len` bytes at `p` (every cache line they touch).
#[inline(always)]
fn prefetch(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: prefetching has no memory effects, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast()) };
        off += 64;
    }
    // SAFETY: as above.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(len - 1).cast()) };
}

/// A `pshufb` mask that fills each 128-bit half with one i16 element of that half: `lo` in the
/// low half, `hi` in the high half.
#[target_feature(enable = "avx2")]
#[inline]
fn broadcast_i16(lo: i8, hi: i8) -> __m256i {
    let pair = |j: i8| _mm_set1_epi16(i16::from(2 * j) | i16::from(2 * j + 1) << 8);
    _mm256_set_m128i(pair(hi), pair(lo))
}

/// `q4_k_scales_mins` on the vector of a block's bytes 4..20: scales in bytes 0..8, mins in
/// bytes 8..16 (one pair of shuffles instead of a dozen scalar operations per block).
#[target_feature(enable = "avx2")]
#[inline]
fn scales_mins(s: __m128i) -> __m128i {
    const NO: i8 = -1; // pshufb: a zero byte
    // Low bits: scales 0-3 and mins 0-3 are the low 6 bits of bytes 0-3 and 4-7, scales 4-7
    // the low nibbles of bytes 8-11, mins 4-7 their high nibbles.
    let low = _mm_shuffle_epi8(s, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    let (m6, m4) = (63, 15);
    let keep = _mm_setr_epi8(m6, m6, m6, m6, m4, m4, m4, m4, m6, m6, m6, m6, 0, 0, 0, 0);
    let high_nibbles = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, m4, m4, m4, m4);
    let low = _mm_or_si128(
        _mm_and_si128(low, keep),
        _mm_and_si128(_mm_srli_epi16::<4>(low), high_nibbles),
    );
    // Bits 4-5 of scales and mins 4-7: the top 2 bits of bytes 0-3 and 4-7.
    let top = _mm_shuffle_epi8(s, _mm_setr_epi8(NO, NO, NO, NO, 0, 1, 2, 3, NO, NO, NO, NO, 4, 5, 6, 7));
    let b45 = 0x30;
    let top_bits = _mm_setr_epi8(0, 0, 0, 0, b45, b45, b45, b45, 0, 0, 0, 0, b45, b45, b45, b45);
    _mm_or_si128(low, _mm_and_si128(_mm_srli_epi16::<2>(top), top_bits))
}

/// `([T0, T1, T2, T3], [M0, M1, M2, M3])`: the totals of the four sub-block pairs' integer
/// lanes, and of their mins' terms (lanes `2g, 2g + 1` of `msum`), exact in any order.
#[target_feature(enable = "avx2")]
#[inline]
fn pair_sums(pairs: &[__m256i; 4], msum: __m256i) -> (__m128i, __m128i) {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(pairs[0], pairs[1]), _mm256_hadd_epi32(pairs[2], pairs[3]));
    let totals = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let m = _mm256_hadd_epi32(msum, msum);
    (totals, _mm_unpacklo_epi64(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m)))
}

/// `[Σ isum, Σ msum, …]`: the totals of Q4_K's integer lanes (exact in any order).
#[target_feature(enable = "avx2")]
#[inline]
fn block_sums(isum: __m256i, msum: __m256i) -> __m128i {
    let pairs = _mm256_hadd_epi32(isum, msum);
    let quads = _mm_add_epi32(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256::<1>(pairs));
    _mm_hadd_epi32(quads, quads)
}

/// Defines `tile_q4_k` and `tile_q6_k` for one instruction set: `$feat` are the target
/// features, `|$acc, $p, $s| $madd` adds the pairwise sums of the i16 products `p·s` to the i32
/// lanes of `acc`.
macro_rules! ktiles {
    ($module:ident, $feat:literal, |$acc:ident, $p:ident, $s:ident| $madd:expr) => {
        pub mod $module {
            use super::*;

            /// `acc + madd(maddubs(q, a), s)`: the scaled 4-byte dots of one weight vector.
            ///
            /// # Safety
            /// The CPU must support the module's features; `a` points at 32 readable bytes.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn scaled_dot(acc: __m256i, q: __m256i, a: *const i8, s: __m256i) -> __m256i {
                let a = _mm256_loadu_si256(a.cast());
                let ($acc, $p, $s) = (acc, _mm256_maddubs_epi16(q, a), s);
                $madd
            }

            /// `out[r][c] = dot_q4_k_q8_k(row r, acts[c])` for the `R` rows starting at `w`
            /// (`row_bytes` apart, each `nb` blocks).
            ///
            /// # Safety
            /// The CPU must support the module's features; `w` must hold `R · row_bytes` bytes
            /// with `row_bytes ≥ nb · 144`, and every `acts[c]` at least `nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q4_k<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8K; C],
                out: &mut [[f32; C]; R],
            ) {
                let low = _mm256_set1_epi8(0x0F);
                for (r, out) in out.iter_mut().enumerate() {
                    // Per activation row, lane 0: the scaled sum; lane 1: the sum of the mins'
                    // terms. Local to the row so that the FMA chains stay in registers.
                    let mut acc = [_mm_setzero_ps(); C];
                    for b in 0..nb {
                        let a: [&BlockQ8K; C] = std::array::from_fn(|c| &*acts[c].add(b));
                        let bsums: [__m256i; C] = std::array::from_fn(|c| {
                            _mm256_loadu_si256(a[c].bsums.as_ptr().cast())
                        });
                        let p = w.add(r * row_bytes + b * Q4_K_BYTES);
                        prefetch(p.wrapping_add(PREFETCH_ROWS * row_bytes), Q4_K_BYTES);
                        // [d, dmin, 0, 0]: two f16 → f32 (exact).
                        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
                        let sm = scales_mins(_mm_loadu_si128(p.add(4).cast()));
                        // The 8 scales as i16, in both halves (for the per-sub-block shuffles).
                        let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
                        // Each min twice, as i16: lane pair k meets bsums[2k], bsums[2k + 1].
                        let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
                        // Lane k of `msum`: sub-block k's term.
                        let msum: [__m256i; C] = std::array::from_fn(|c| _mm256_madd_epi16(bsums[c], mins));
                        let scale: [__m128; C] = std::array::from_fn(|c| _mm_mul_ps(dm, _mm_set1_ps(a[c].d)));
                        // The integer lanes of each sub-block pair g (sub-blocks 2g, 2g + 1).
                        let mut pairs = [[_mm256_setzero_si256(); 4]; C];
                        for g in 0..4 {
                            let x = _mm256_loadu_si256(p.add(16 + 32 * g).cast());
                            let lo = _mm256_and_si256(x, low);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low);
                            let j = 2 * g as i8;
                            let s_lo = _mm256_shuffle_epi8(scales, broadcast_i16(j, j));
                            let s_hi = _mm256_shuffle_epi8(scales, broadcast_i16(j + 1, j + 1));
                            for c in 0..C {
                                let aq = a[c].qs.as_ptr().add(64 * g);
                                let isum = scaled_dot(_mm256_setzero_si256(), lo, aq, s_lo);
                                pairs[c][g] = scaled_dot(isum, hi, aq.add(32), s_hi);
                            }
                        }
                        for c in 0..C {
                            let pairs = &pairs[c];
                            match a[c].q4_k_sums {
                                Q4KSums::PerBlock => {
                                    let isum = _mm256_add_epi32(
                                        _mm256_add_epi32(pairs[0], pairs[1]),
                                        _mm256_add_epi32(pairs[2], pairs[3]),
                                    );
                                    let sums = _mm_cvtepi32_ps(block_sums(isum, msum[c]));
                                    acc[c] = _mm_fmadd_ps(sums, scale[c], acc[c]);
                                }
                                Q4KSums::PerSubBlockPair => {
                                    let (t, m) = pair_sums(pairs, msum[c]);
                                    let (t, m) = (_mm_cvtepi32_ps(t), _mm_cvtepi32_ps(m));
                                    // [T0, M0, T1, M1] and [T2, M2, T3, M3]: one FMA per pair, in
                                    // order; `scale` is [d·d_a, dmin·d_a, 0, 0], so lanes 2 and 3
                                    // of `acc` stay 0.
                                    let (lo, hi) = (_mm_unpacklo_ps(t, m), _mm_unpackhi_ps(t, m));
                                    for v in [lo, _mm_movehl_ps(lo, lo), hi, _mm_movehl_ps(hi, hi)] {
                                        acc[c] = _mm_fmadd_ps(v, scale[c], acc[c]);
                                    }
                                }
                            }
                        }
                    }
                    for (o, acc) in out.iter_mut().zip(acc) {
                        let [sum, mins, _, _] = std::mem::transmute::<__m128, [f32; 4]>(acc);
                        *o = sum - mins;
                    }
                }
            }

            /// `out[r][c] = dot_q6_k_q8_k(row r, acts[c])`; same contract as `tile_q4_k`
            /// with 210-byte blocks.
            ///
            /// # Safety
            /// As `tile_q4_k`.
            #[target_feature(enable = $feat)]
            pub unsafe fn tile_q6_k<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const BlockQ8K; C],
                out: &mut [[f32; C]; R],
            ) {
                let low = _mm256_set1_epi8(0x0F);
                let high = _mm256_set1_epi8(0x30);
                for (r, out) in out.iter_mut().enumerate() {
                    // `Q6KSums::Lanes` rows sum in 8 lanes, `PerBlock` rows in one float; local
                    // to the row so that the FMA chains stay in registers.
                    let mut acc = [_mm256_setzero_ps(); C];
                    let mut block_acc = [0f32; C];
                    for b in 0..nb {
                        let a: [&BlockQ8K; C] = std::array::from_fn(|c| &*acts[c].add(b));
                        let ad: [__m256; C] = std::array::from_fn(|c| _mm256_set1_ps(a[c].d));
                        let bsums: [__m256i; C] = std::array::from_fn(|c| {
                            _mm256_loadu_si256(a[c].bsums.as_ptr().cast())
                        });
                        let p = w.add(r * row_bytes + b * Q6_K_BYTES);
                        prefetch(p.wrapping_add(PREFETCH_ROWS * row_bytes), Q6_K_BYTES);
                        let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                            p.add(208).cast::<u16>().read_unaligned(),
                        ))));
                        let d = _mm256_set1_ps(dw);
                        let sc = _mm_loadu_si128(p.add(192).cast());
                        // −32·sc_j as i16 (exact: |32·sc| ≤ 4096), lane j against bsums[j].
                        let offset = _mm256_sub_epi16(
                            _mm256_setzero_si256(),
                            _mm256_slli_epi16::<5>(_mm256_cvtepi8_epi16(sc)),
                        );
                        // Scales 0-7 and 8-15 as i16, each set in both halves.
                        let halves = [
                            _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc)),
                            _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128::<8>(sc))),
                        ];
                        let mut isum: [__m256i; C] =
                            std::array::from_fn(|c| _mm256_madd_epi16(bsums[c], offset));
                        for (h, &scales) in halves.iter().enumerate() {
                            let ql0 = _mm256_loadu_si256(p.add(64 * h).cast());
                            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32).cast());
                            let qh = _mm256_loadu_si256(p.add(128 + 32 * h).cast());
                            // Vector s (weights 32s..32s+32 of this half): nibble s/2 of ql(s%2)
                            // | bits 2s..2s+2 of qh moved to bits 4..6. The 16-bit shifts leak
                            // bits across bytes only into positions the masks clear.
                            let q = [
                                _mm256_or_si256(
                                    _mm256_and_si256(ql0, low),
                                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), high),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(ql1, low),
                                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), high),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                                    _mm256_and_si256(qh, high),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), high),
                                ),
                            ];
                            for (s, &q) in q.iter().enumerate() {
                                // Bytes 0-15 are sub-block 2s of the half, 16-31 sub-block 2s+1.
                                let j = 2 * s as i8;
                                let scale = _mm256_shuffle_epi8(scales, broadcast_i16(j, j + 1));
                                for c in 0..C {
                                    let aq = a[c].qs.as_ptr().add(128 * h + 32 * s);
                                    isum[c] = scaled_dot(isum[c], q, aq, scale);
                                }
                            }
                        }
                        for c in 0..C {
                            match a[c].q6_k_sums {
                                Q6KSums::Lanes => {
                                    let dd = _mm256_mul_ps(d, ad[c]);
                                    acc[c] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(isum[c]), acc[c]);
                                }
                                Q6KSums::PerBlock => {
                                    let total = _mm_cvtsi128_si32(block_sums(isum[c], _mm256_setzero_si256()));
                                    block_acc[c] = (total as f32 * dw).mul_add(a[c].d, block_acc[c]);
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
        }
    };
}

ktiles!(avx2, "avx2,fma,f16c", |acc, p, s| _mm256_add_epi32(acc, _mm256_madd_epi16(p, s)));

// VNNI: `vpdpwssd` multiplies, sums the pairs and accumulates in one instruction.
ktiles!(vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", |acc, p, s| _mm256_dpwssd_epi32(
    acc, p, s
));
