//! AVX-512 versions of the attention sums in `numerics.rs`, reading the f16 KV cache directly
//! (no conversion pass over the cache). They emulate 16-lane registers, so here each is one
//! register and the results are bit-identical to the portable functions; the tests compare
//! them.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use half::f16;

use super::numerics::LANES;

/// Whether this CPU runs the functions below.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c"))
}

/// 16 f16 values at `p` as f32 (exact).
///
/// # Safety
/// `p` points at 16 readable f16 values (an unaligned load), and the CPU has AVX-512F and F16C.
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn load16(p: *const f16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

/// `reduce16` of one register: halves added, then quarters, then `(v0 + v2) + (v1 + v3)`.
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce(v: __m512) -> f32 {
    let v8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
    let v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps::<1>(v8));
    let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    _mm_cvtss_f32(_mm_add_ss(v2, _mm_movehdup_ps(v2)))
}

/// [`super::numerics::dot_f16_vec`] of `x` with the f16 row `y`.
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx512f,f16c,fma")]
pub unsafe fn dot_f16_vec(x: &[f32], y: &[f16]) -> f32 {
    const STEP: usize = 4 * LANES;
    assert_eq!(x.len(), y.len());
    let full = x.len() / STEP * STEP;
    let mut acc = [_mm512_setzero_ps(); 4];
    for s in (0..full).step_by(STEP) {
        for (j, acc) in acc.iter_mut().enumerate() {
            let at = s + j * LANES;
            *acc = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(at)), load16(y.as_ptr().add(at)), *acc);
        }
    }
    let mut sum = 0f64;
    if full > 0 {
        sum = f64::from(reduce(_mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]))));
    }
    for (a, b) in x[full..].iter().zip(&y[full..]) {
        sum += f64::from(a * b.to_f32());
    }
    sum as f32
}

/// [`super::numerics::dot_f16_gemm`] of `x` with the f16 row `y` (length a multiple of 16).
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx512f,f16c,fma")]
pub unsafe fn dot_f16_gemm(x: &[f32], y: &[f16]) -> f32 {
    assert!(x.len() == y.len() && x.len().is_multiple_of(LANES));
    let mut acc = _mm512_setzero_ps();
    for at in (0..x.len()).step_by(LANES) {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(at)), load16(y.as_ptr().add(at)), acc);
    }
    reduce(acc)
}

/// `acc[d] = w · v[d] + (first ? 0 : acc[d])`, one FMA per element (a step of
/// `WeightedSum`), for `acc.len()` a multiple of 16.
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx512f,f16c,fma")]
pub unsafe fn accumulate(acc: &mut [f32], w: f32, v: &[f16], first: bool) {
    assert!(acc.len() == v.len() && acc.len().is_multiple_of(LANES));
    let w = _mm512_set1_ps(w);
    for at in (0..acc.len()).step_by(LANES) {
        let a = acc.as_mut_ptr().add(at);
        let prev = if first { _mm512_setzero_ps() } else { _mm512_loadu_ps(a) };
        _mm512_storeu_ps(a, _mm512_fmadd_ps(w, load16(v.as_ptr().add(at)), prev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::numerics::{self, WeightedSum};

    /// f16-representable values of varied sign and size, with exact zeros.
    fn values(n: usize, seed: u32) -> Vec<f16> {
        (0..n)
            .map(|i| {
                let k = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503));
                let v = ((k >> 8) % 2001) as f32 / 1000.0 - 1.0;
                f16::from_f32(if k.is_multiple_of(13) { 0.0 } else { v * [1.0, 30.0, 1e-3][(k % 3) as usize] })
            })
            .collect()
    }

    fn f32s(v: &[f16]) -> Vec<f32> {
        v.iter().map(|x| x.to_f32()).collect()
    }

    #[test]
    fn dots_match_the_portable_order_bit_for_bit() {
        if !available() {
            return eprintln!("no AVX-512 here: nothing to compare");
        }
        for (len, seed) in [(16, 1), (64, 2), (80, 3), (128, 4), (200, 5), (5, 6)] {
            let x = f32s(&values(len, seed));
            let y = values(len, seed + 100);
            let want = numerics::dot_f16_vec(&x, &f32s(&y));
            // SAFETY: `available()`.
            assert_eq!(unsafe { dot_f16_vec(&x, &y) }.to_bits(), want.to_bits(), "vec, len {len}");
            if len % LANES == 0 {
                let want = numerics::dot_f16_gemm(&x, &f32s(&y));
                // SAFETY: `available()`.
                assert_eq!(unsafe { dot_f16_gemm(&x, &y) }.to_bits(), want.to_bits(), "gemm, len {len}");
            }
        }
    }

    #[test]
    fn weighted_sum_over_f16_matches_f32_values() {
        if !available() {
            return eprintln!("no AVX-512 here: nothing to compare");
        }
        let (cols, stride, n) = (64, 192, 150);
        let v = values(n * stride, 9);
        let v32 = f32s(&v);
        let w = f32s(&values(n, 10));
        for (len, gemm, n_kv) in [(150, false, 160), (150, true, 160), (40, false, 64), (150, false, 192)] {
            let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
            WeightedSum::default().run(&w[..len], n_kv, gemm, &v, stride, 64, &mut a);
            WeightedSum::default().run(&w[..len], n_kv, gemm, &v32, stride, 64, &mut b);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "len {len} gemm {gemm} n_kv {n_kv}");
        }
    }
}
