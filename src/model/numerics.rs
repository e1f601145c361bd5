//! Element-wise functions and reductions that round exactly like ggml's x86 CPU kernels
//! (AVX-512 build), so that greedy decoding follows the peer engine token for token.
//!
//! In a 4-bit model every activation is re-quantised to 8 bits before the next product, so a
//! one-ulp difference anywhere can flip a rounding and, a few layers later, a near-tied token.
//! Matching the arithmetic, not just the math, is what makes greedy outputs comparable. Each
//! function below names the ggml kernel whose order of operations it reproduces; the tests in
//! `tests/it/reference.rs` check the result against llama.cpp's recorded completions.

/// Lanes of one AVX-512 f32 register.
pub const LANES: usize = 16;

/// `e^x` by the vectorised algorithm ggml uses for softmax and SiLU (from Arm's
/// optimized-routines): `x = n·ln2 + b` with `n` rounded to an integer, a degree-5 polynomial
/// for `e^b`, then scaling by `2^n`. Within 1.5 ulp of the true value; `n` beyond ±192 flushes
/// to 0 or infinity.
pub fn exp(x: f32) -> f32 {
    // The constants, bit for bit (hexadecimal floats in the comments).
    const SHIFT: f32 = 12_582_912.0; // 0x1.8p23: adding it rounds to an integer
    const LOG2_E: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
    const C: [f32; 5] = [
        f32::from_bits(0x3f7f_fff6), // 0x1.ffffecp-1
        f32::from_bits(0x3eff_fedb), // 0x1.fffdb6p-2
        f32::from_bits(0x3e2a_af33), // 0x1.555e66p-3
        f32::from_bits(0x3d2b_9f17), // 0x1.573e2ep-5
        f32::from_bits(0x3c07_2010), // 0x1.0e4020p-7
    ];
    let z = x.mul_add(LOG2_E, SHIFT);
    let n = z - SHIFT;
    let b = (-n).mul_add(LN2_HI, x);
    let b = (-n).mul_add(LN2_LO, b);
    let u = b * b;
    let high = C[4].mul_add(b, C[3]).mul_add(u, C[2].mul_add(b, C[1]));
    let j = high.mul_add(u, C[0].mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // j · 2^n in f64 (exact; |n| ≤ 192 keeps 2^n normal), rounded once to f32, as `vscalefps`
    // rounds, also into the subnormal range.
    let two_to_n = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(j) * two_to_n) as f32
}

/// `silu(x) = x / (1 + e^-x)`, as ggml's vectorised SiLU computes it.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The horizontal sum of one register, halving it each step (`_mm512_reduce_add_ps`).
fn reduce16(v: [f32; LANES]) -> f32 {
    let v: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
    let v: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
    (v[0] + v[2]) + (v[1] + v[3])
}

/// `Σ x[i]·y[i]` in the order of ggml's `ggml_vec_dot_f16` (used for one query row): steps of
/// 64 elements into four 16-lane FMA accumulators, which are added pairwise and reduced; the
/// elements after the last full step are added one by one in f64. Inputs are f16 values.
pub fn dot_f16_vec<Y: Copy + Into<f32>>(x: &[f32], y: &[Y]) -> f32 {
    const STEP: usize = 4 * LANES;
    let full = x.len() / STEP * STEP;
    let mut acc = [[0f32; LANES]; 4];
    for (xs, ys) in x[..full].chunks_exact(STEP).zip(y[..full].chunks_exact(STEP)) {
        for (j, acc) in acc.iter_mut().enumerate() {
            for (l, a) in acc.iter_mut().enumerate() {
                *a = xs[j * LANES + l].mul_add(ys[j * LANES + l].into(), *a);
            }
        }
    }
    let mut sum = 0f64;
    if full > 0 {
        let lanes = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
        sum = f64::from(reduce16(lanes));
    }
    for (&a, &b) in x[full..].iter().zip(&y[full..]) {
        sum += f64::from(a * b.into());
    }
    sum as f32
}

/// `Σ x[i]·y[i]` in the order of llamafile's tinyBLAS (ggml's matrix product for several
/// query rows): one 16-lane FMA accumulator over the whole length, then reduced. The length
/// is a multiple of 16 (tinyBLAS is only used then).
pub fn dot_f16_gemm<Y: Copy + Into<f32>>(x: &[f32], y: &[Y]) -> f32 {
    debug_assert_eq!(x.len() % LANES, 0);
    let mut acc = [0f32; LANES];
    for (xs, ys) in x.chunks_exact(LANES).zip(y.chunks_exact(LANES)) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = xs[l].mul_add(ys[l].into(), *a);
        }
    }
    reduce16(acc)
}

/// What the attention sums read values from: f32 rows, or the f16 KV cache itself (with
/// AVX-512, `numerics_avx512.rs`; otherwise one conversion per element).
pub trait CacheValues: Copy + Sync + Into<f32> {
    fn dot_vec(x: &[f32], y: &[Self]) -> f32 {
        dot_f16_vec(x, y)
    }
    fn dot_gemm(x: &[f32], y: &[Self]) -> f32 {
        dot_f16_gemm(x, y)
    }
    /// `acc[d] = w · v[d] + (first ? 0 : acc[d])`, one FMA per element.
    fn accumulate(acc: &mut [f32], w: f32, v: &[Self], first: bool) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = w.mul_add(x.into(), if first { 0.0 } else { *a });
        }
    }
}

impl CacheValues for f32 {}

#[cfg(not(target_arch = "x86_64"))]
impl CacheValues for half::f16 {}

#[cfg(target_arch = "x86_64")]
impl CacheValues for half::f16 {
    fn dot_vec(x: &[f32], y: &[Self]) -> f32 {
        if super::numerics_avx512::available() {
            // SAFETY: the CPU has the features.
            unsafe { super::numerics_avx512::dot_f16_vec(x, y) }
        } else {
            dot_f16_vec(x, y)
        }
    }
    fn dot_gemm(x: &[f32], y: &[Self]) -> f32 {
        if super::numerics_avx512::available() && x.len().is_multiple_of(LANES) {
            // SAFETY: the CPU has the features.
            unsafe { super::numerics_avx512::dot_f16_gemm(x, y) }
        } else {
            dot_f16_gemm(x, y)
        }
    }
    fn accumulate(acc: &mut [f32], w: f32, v: &[Self], first: bool) {
        if super::numerics_avx512::available() && acc.len().is_multiple_of(LANES) {
            // SAFETY: the CPU has the features.
            unsafe { super::numerics_avx512::accumulate(acc, w, v, first) }
        } else {
            for (a, &x) in acc.iter_mut().zip(v) {
                *a = w.mul_add(x.to_f32(), if first { 0.0 } else { *a });
            }
        }
    }
}

/// `out[d] = Σ_t w[t]·v[t][d]`, the attention-weighted sum of value rows, each column summed
/// over positions `0..n_kv` in the order of [`dot_f16_vec`] (`gemm: false`) or of
/// [`dot_f16_gemm`] (`gemm: true`), as ggml's product with the transposed value cache does.
/// Weights past `w.len()` are zero; `n_kv` only decides where the f64 tail of the `vec` order
/// begins. Row `t` of `v` is `v[t * stride + offset..][..out.len()]` (f16 values).
///
/// The lanes of the emulated registers are rows of `acc`, so every step, the reductions
/// included, is an element-wise operation on whole rows of columns.
#[derive(Default)]
pub struct WeightedSum {
    /// `acc[lane * cols + d]`: one FMA accumulator per (lane, column).
    acc: Vec<f32>,
    /// The f64 tail sums, one per column.
    tail: Vec<f64>,
}

impl WeightedSum {
    /// Room for sums over `cols` columns in either order, so that [`WeightedSum::run`] then
    /// allocates nothing.
    pub fn reserve(&mut self, cols: usize) {
        if self.acc.len() < 4 * LANES * cols {
            self.acc.resize(4 * LANES * cols, 0.0);
        }
        self.tail.reserve(cols);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run<V: CacheValues>(
        &mut self,
        w: &[f32],
        n_kv: usize,
        gemm: bool,
        v: &[V],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        let cols = out.len();
        let row = |t: usize| &v[t * stride + offset..][..cols];
        let period = if gemm { LANES } else { 4 * LANES };
        let full = if gemm { n_kv } else { n_kv / period * period };
        if self.acc.len() < period * cols {
            self.acc.resize(period * cols, 0.0);
        }
        let acc = &mut self.acc[..period * cols];
        let vector_end = w.len().min(full);
        // A lane starts with its first position's product (an FMA onto 0); lanes no position
        // reaches hold 0.
        let started = vector_end.min(period);
        for (t, &wt) in w[..started].iter().enumerate() {
            V::accumulate(&mut acc[t * cols..][..cols], wt, row(t), true);
        }
        acc[started * cols..].fill(0.0);
        for (t, &wt) in w.iter().enumerate().take(vector_end).skip(started) {
            V::accumulate(&mut acc[(t % period) * cols..][..cols], wt, row(t), false);
        }
        if full == 0 {
            out.fill(0.0);
        } else {
            if !gemm {
                // Four registers into one: lane l = (r0 + r2) + (r1 + r3).
                let (r0, rest) = acc.split_at_mut(LANES * cols);
                let (r1, rest) = rest.split_at_mut(LANES * cols);
                let (r2, r3) = rest.split_at_mut(LANES * cols);
                for (((a0, a1), a2), a3) in r0.iter_mut().zip(&*r1).zip(&*r2).zip(&*r3) {
                    *a0 = (*a0 + *a2) + (*a1 + *a3);
                }
            }
            // `reduce16`, column by column: lanes i += lanes i + width.
            for width in [8, 4, 2, 1] {
                let (low, high) = acc.split_at_mut(width * cols);
                for (a, b) in low.iter_mut().zip(&high[..width * cols]) {
                    *a += *b;
                }
            }
            out.copy_from_slice(&acc[..cols]);
        }
        if vector_end < w.len() {
            // The f64 tail of `ggml_vec_dot_f16`, position by position.
            self.tail.clear();
            self.tail.extend(out.iter().map(|&o| f64::from(o)));
            for (t, &wt) in w.iter().enumerate().skip(vector_end) {
                for (s, &x) in self.tail.iter_mut().zip(row(t)) {
                    *s += f64::from(wt * x.into());
                }
            }
            for (o, s) in out.iter_mut().zip(&self.tail) {
                *o = *s as f32;
            }
        }
    }
}

/// In-place softmax as ggml's `soft_max` computes it: `e^(x - max)` by [`exp`], summed in
/// chunks of 16 (each reduced like a register, padded with zeros) into an f64 total.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for chunk in x.chunks_mut(LANES) {
        let mut lanes = [0f32; LANES];
        for (v, l) in chunk.iter_mut().zip(lanes.iter_mut()) {
            *v = exp(*v - max);
            *l = *v;
        }
        sum += f64::from(reduce16(lanes));
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_the_true_exponential() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.04;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!((got - want).abs() <= want * 4e-7, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn reduce16_adds_halves() {
        // Values whose f32 sum depends on the order: 1e8 + 1 + ... loses the ones unless the
        // ones meet each other first.
        let mut v = [1f32; 16];
        v[0] = 1e8;
        v[8] = -1e8;
        // Halving pairs 1e8 with -1e8 first, so all 14 ones survive.
        assert_eq!(reduce16(v), 14.0);
    }

    #[test]
    fn dots_agree_with_exact_sums_on_small_integers() {
        let x: Vec<f32> = (0..150).map(|i| (i % 7) as f32 - 3.0).collect();
        let y: Vec<f32> = (0..150).map(|i| (i % 5) as f32 - 2.0).collect();
        let exact: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(dot_f16_vec(&x, &y), exact);
        assert_eq!(dot_f16_gemm(&x[..144], &y[..144]), x[..144].iter().zip(&y).map(|(a, b)| a * b).sum::<f32>());
    }

    #[test]
    fn weighted_sum_matches_per_column_dots() {
        let cols = 8;
        let n = 150;
        let v: Vec<f32> = (0..n * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect();
        let mut ws = WeightedSum::default();
        // Long and short weight vectors (lanes no position reaches), reusing one accumulator.
        for (len, gemm, n_kv) in
            [(150, false, 192), (150, false, 160), (150, true, 160), (20, false, 64), (20, false, 32), (20, true, 32)]
        {
            let w: Vec<f32> = (0..len).map(|i| ((i * 13 % 17) as f32) / 128.0).collect();
            let mut out = vec![0f32; cols - 2];
            ws.run(&w, n_kv, gemm, &v, cols, 2, &mut out);
            for d in 0..cols - 2 {
                let mut col: Vec<f32> = (0..len).map(|t| v[t * cols + 2 + d]).collect();
                let mut wp = w.clone();
                col.resize(n_kv, 0.0);
                wp.resize(n_kv, 0.0);
                let want = if gemm { dot_f16_gemm(&wp, &col) } else { dot_f16_vec(&wp, &col) };
                assert_eq!(out[d], want, "gemm={gemm} n_kv={n_kv} d={d}");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = vec![1.0, 3.0, 2.0, f32::NEG_INFINITY];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[2] && x[2] > x[0]);
        assert_eq!(x[3], 0.0);
    }
}
