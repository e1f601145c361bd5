//! A quantized weight matrix kept as the file's bytes, the kernels that multiply it, and its
//! products with activation rows (run over the worker pool by `product.rs`).

use std::cell::RefCell;
use std::sync::Arc;

use memmap2::Mmap;

use super::product::{self, Combine, Split, MAX_SHARED};
use super::blocks::{
    dot_q4_1_q8_1, dot_q8_0_q8_0, quantize_q8_0, quantize_q8_1, BlockQ8_0, BlockQ8_1,
    Q4_1_BYTES, Q8_0_BYTES, QK,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q4_1,
    Q8_0,
}

impl QuantType {
    fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_1 => Q4_1_BYTES,
            QuantType::Q8_0 => Q8_0_BYTES,
        }
    }
}

/// Which implementation of the dot products a matrix uses; all give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable code, the oracle of the others.
    Scalar,
    /// AVX2 + FMA + F16C (`avx2.rs`).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, BW, VL, VNNI): two weight rows per 512-bit register (`avx512.rs`), and the
    /// 256-bit tiles with `vpdpbusd` for odd remainders.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU supports (`FFNSKIP_KERNEL=scalar|avx2|avx512vnni` picks a
    /// supported one instead, for comparisons).
    pub fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let all = Kernel::available();
            let wanted = std::env::var("FFNSKIP_KERNEL").ok();
            wanted
                .and_then(|w| all.iter().copied().find(|k| k.name() == w))
                .unwrap_or(*all.last().expect("scalar is always available"))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Every kernel this CPU can run, slowest first.
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2 {
                all.push(Kernel::Avx2);
            }
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                all.push(Kernel::Avx512Vnni);
            }
        }
        all
    }
}

/// A matrix's bytes: owned, or a range of a memory-mapped model file (no copy).
pub enum WeightBytes {
    Owned(Vec<u8>),
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Owned(v) => v,
            WeightBytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(v: Vec<u8>) -> Self {
        WeightBytes::Owned(v)
    }
}

pub struct QuantMatrix {
    ty: QuantType,
    kernel: Kernel,
    bytes: WeightBytes,
    rows: usize,
    cols: usize,
}

thread_local! {
    static ACT_Q8_1: RefCell<Vec<BlockQ8_1>> = const { RefCell::new(Vec::new()) };
    static ACT_Q8_0: RefCell<Vec<BlockQ8_0>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable buffer (a fresh one if it is already in use).
fn with_buffer<T, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    f: impl FnOnce(&mut Vec<T>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// One weight type's tile function, for every kernel.
pub(super) trait Tiles: Copy + Sync {
    type Act: Sync;
    /// Weights per block.
    const BLOCK_VALUES: usize;
    /// Bytes of one weight block.
    const BLOCK_BYTES: usize;
    /// Runs `f` with the rows of `x` quantised for this type (in a reused buffer).
    fn with_acts<R>(x: &[f32], f: impl FnOnce(&[Self::Act]) -> R) -> R;
    fn kernel(self) -> Kernel;
    /// The scalar product of one weight row with one activation row: the oracle of the tiles.
    fn dot(row: &[u8], acts: &[Self::Act]) -> f32;
    /// The SIMD tile of this type (`vnni`: the AVX-512 VNNI variant, else AVX2).
    ///
    /// # Safety
    /// As [`Tiles::tile`], and the CPU supports the chosen variant.
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_tile<const R: usize, const C: usize>(
        vnni: bool,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const Self::Act; C],
        out: &mut [[f32; C]; R],
    );

    /// Whether 4 × 4 tiles fit the registers (32 vector registers with AVX-512).
    fn wide(self) -> bool {
        is_wide(self.kernel())
    }

    /// `out[r][c] = dot(row r at w, acts[c])`.
    ///
    /// # Safety
    /// `w` holds `R` rows of `row_bytes` (≥ `nb` blocks); each `acts[c]` holds `nb` blocks.
    unsafe fn tile<const R: usize, const C: usize>(
        self,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const Self::Act; C],
        out: &mut [[f32; C]; R],
    ) {
        match self.kernel() {
            Kernel::Scalar => {
                for (r, out) in out.iter_mut().enumerate() {
                    let row = std::slice::from_raw_parts(w.add(r * row_bytes), nb * Self::BLOCK_BYTES);
                    for (o, a) in out.iter_mut().zip(acts) {
                        *o = Self::dot(row, std::slice::from_raw_parts(a, nb));
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => Self::simd_tile::<R, C>(false, w, row_bytes, nb, acts, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => Self::simd_tile::<R, C>(true, w, row_bytes, nb, acts, out),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Q4_1(Kernel);
#[derive(Clone, Copy)]
pub(super) struct Q8_0(Kernel);

impl Tiles for Q4_1 {
    type Act = BlockQ8_1;
    const BLOCK_VALUES: usize = QK;
    const BLOCK_BYTES: usize = Q4_1_BYTES;
    fn with_acts<R>(x: &[f32], f: impl FnOnce(&[BlockQ8_1]) -> R) -> R {
        with_buffer(&ACT_Q8_1, |acts| {
            quantize_q8_1(x, acts);
            f(acts)
        })
    }
    fn kernel(self) -> Kernel {
        self.0
    }
    fn dot(row: &[u8], acts: &[BlockQ8_1]) -> f32 {
        dot_q4_1_q8_1(row, acts)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_tile<const R: usize, const C: usize>(
        vnni: bool,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const BlockQ8_1; C],
        out: &mut [[f32; C]; R],
    ) {
        if vnni && R % 2 == 0 {
            super::avx512::tile_q4_1::<R, C>(w, row_bytes, nb, acts, out)
        } else if vnni {
            super::avx2::vnni::tile_q4_1::<R, C>(w, row_bytes, nb, acts, out)
        } else {
            super::avx2::avx2::tile_q4_1::<R, C>(w, row_bytes, nb, acts, out)
        }
    }
}

impl Tiles for Q8_0 {
    type Act = BlockQ8_0;
    const BLOCK_VALUES: usize = QK;
    const BLOCK_BYTES: usize = Q8_0_BYTES;
    fn with_acts<R>(x: &[f32], f: impl FnOnce(&[BlockQ8_0]) -> R) -> R {
        with_buffer(&ACT_Q8_0, |acts| {
            quantize_q8_0(x, acts);
            f(acts)
        })
    }
    fn kernel(self) -> Kernel {
        self.0
    }
    fn dot(row: &[u8], acts: &[BlockQ8_0]) -> f32 {
        dot_q8_0_q8_0(row, acts)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_tile<const R: usize, const C: usize>(
        vnni: bool,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const BlockQ8_0; C],
        out: &mut [[f32; C]; R],
    ) {
        if vnni && R % 2 == 0 {
            super::avx512::tile_q8_0::<R, C>(w, row_bytes, nb, acts, out)
        } else if vnni {
            super::avx2::vnni::tile_q8_0::<R, C>(w, row_bytes, nb, acts, out)
        } else {
            super::avx2::avx2::tile_q8_0::<R, C>(w, row_bytes, nb, acts, out)
        }
    }
}

fn is_wide(kernel: Kernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Vnni {
        return true;
    }
    let _ = kernel;
    false
}

impl QuantMatrix {
    /// `bytes` holds `rows` rows of `cols / 32` blocks each; `cols` must be a multiple of 32.
    pub fn new(ty: QuantType, bytes: impl Into<WeightBytes>, rows: usize, cols: usize) -> Option<Self> {
        Self::with_kernel(ty, bytes, rows, cols, Kernel::detect())
    }

    /// As [`QuantMatrix::new`] with a given kernel (`None` if this CPU cannot run it).
    pub fn with_kernel(
        ty: QuantType,
        bytes: impl Into<WeightBytes>,
        rows: usize,
        cols: usize,
        kernel: Kernel,
    ) -> Option<Self> {
        let bytes = bytes.into();
        let ok = cols % QK == 0
            && bytes.len() == rows * cols / QK * ty.block_bytes()
            && Kernel::available().contains(&kernel);
        ok.then_some(Self { ty, kernel, bytes, rows, cols })
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn size_in_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `y[r] = W · x[r]` for each row of `x` (`[n, cols]` → `[n, rows]`).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len() / self.cols * self.rows];
        self.forward_into(x, &mut y);
        y
    }

    /// [`QuantMatrix::forward`] into `y` (`n · rows` long).
    pub fn forward_into(&self, x: &[f32], y: &mut [f32]) {
        self.shared(&[self], x, &mut [y], Split::Auto);
    }

    /// [`QuantMatrix::forward`] in a given number of parallel chunks.
    #[cfg(test)]
    fn forward_split(&self, x: &[f32], tasks: usize) -> Vec<f32> {
        let mut y = vec![0f32; x.len() / self.cols * self.rows];
        self.shared(&[self], x, &mut [&mut y[..]], Split::Chunks(tasks));
        y
    }

    /// `ys[i] = ms[i] · x` for up to three matrices that share their input (Q, K and V): the
    /// input is quantised once and the products run in one hand-off to the pool. Returns
    /// `false`, computing nothing, unless the matrices have the same type, kernel and width.
    pub fn forward_shared(ms: &[&QuantMatrix], x: &[f32], ys: &mut [&mut [f32]]) -> bool {
        let first = ms[0];
        let same = ms.iter().all(|m| (m.ty, m.kernel, m.cols) == (first.ty, first.kernel, first.cols));
        if !same || ms.len() > MAX_SHARED || ms.len() != ys.len() {
            return false;
        }
        first.shared(ms, x, ys, Split::Auto);
        true
    }

    /// `out = combine(gate · x, up · x)` in one hand-off, each chunk of rows combined as soon
    /// as both of its products are done (SwiGLU's `silu(gate) · up`). `gate_y` is scratch of
    /// `out`'s size. Returns `false`, computing nothing, unless both matrices have the same
    /// type, kernel and shape.
    pub fn forward_gated(
        gate: &QuantMatrix,
        up: &QuantMatrix,
        x: &[f32],
        gate_y: &mut [f32],
        out: &mut [f32],
        combine: Combine,
    ) -> bool {
        let key = |m: &QuantMatrix| (m.ty, m.kernel, m.rows, m.cols);
        if key(gate) != key(up) {
            return false;
        }
        match gate.ty {
            QuantType::Q4_1 => {
                product::run_gated(Q4_1(gate.kernel), gate, up, x, gate_y, out, combine, Split::Auto)
            }
            QuantType::Q8_0 => {
                product::run_gated(Q8_0(gate.kernel), gate, up, x, gate_y, out, combine, Split::Auto)
            }
        }
        true
    }

    /// The products of `ms`, all of `self`'s type and kernel.
    fn shared(&self, ms: &[&QuantMatrix], x: &[f32], ys: &mut [&mut [f32]], split: Split) {
        if x.len() < self.cols || self.rows == 0 {
            return;
        }
        match self.ty {
            QuantType::Q4_1 => product::run_shared(Q4_1(self.kernel), ms, x, ys, split),
            QuantType::Q8_0 => product::run_shared(Q8_0(self.kernel), ms, x, ys, split),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Our kernels against candle's dequantise-and-matmul on random data, odd shapes included.
    #[test]
    fn matches_candle_dequantized_product() {
        for (ty, dtype) in [(QuantType::Q4_1, GgmlDType::Q4_1), (QuantType::Q8_0, GgmlDType::Q8_0)] {
            for (rows, cols, n) in [(1, 32, 1), (7, 64, 3), (65, 96, 2), (130, 576, 1)] {
                let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let x = random(n * cols, 2);
                let got: Vec<Vec<f32>> = Kernel::available()
                    .into_iter()
                    .map(|k| {
                        let bytes = q.data().unwrap().to_vec();
                        QuantMatrix::with_kernel(ty, bytes, rows, cols, k).unwrap().forward(&x)
                    })
                    .collect();
                let reference = QMatMul::Tensor(q.dequantize(&Device::Cpu).unwrap())
                    .forward(&Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                // 8-bit activations: the error is a small fraction of the row's magnitude.
                let tol = 0.02 * (cols as f32).sqrt();
                for one in &got {
                    for (g, r) in one.iter().zip(&reference) {
                        assert!((g - r).abs() < tol, "{ty:?} {rows}x{cols}: {g} vs {r}");
                    }
                    assert_same_bits(one, &got[0], &format!("{ty:?} {rows}x{cols} kernels"));
                }
            }
        }
    }

    fn f16_bytes(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    /// Valid weight bytes: finite f16 scales (of varied sign and size) and arbitrary quants.
    fn random_weights(ty: QuantType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let vals = random(rows * cols / QK * 40, seed);
        let mut it = vals.iter();
        let mut next = || *it.next().unwrap();
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / QK {
            bytes.extend(f16_bytes(next() * 0.05));
            if ty == QuantType::Q4_1 {
                bytes.extend(f16_bytes(next() * 0.5));
            }
            let quants = if ty == QuantType::Q4_1 { 16 } else { 32 };
            bytes.extend((0..quants).map(|_| (next() * 128.0 + 128.0) as u8));
        }
        assert_eq!(bytes.len(), rows * cols / QK * ty.block_bytes());
        bytes
    }

    /// Activations with rows of very different magnitudes, some exact zeros and extremes.
    fn random_acts(n: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut x = random(n * cols, seed);
        for (i, v) in x.iter_mut().enumerate() {
            let row = i / cols;
            *v *= [1.0, 1e-3, 30.0, 0.7][row % 4];
            if i % 37 == 5 {
                *v = 0.0;
            }
        }
        if n * cols >= QK {
            x[..QK].fill(0.0); // an all-zero block
        }
        x
    }

    /// The oracle: one scalar dot per (activation row, weight row).
    fn oracle(ty: QuantType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let row_bytes = cols / QK * ty.block_bytes();
        let mut y = Vec::new();
        for xr in x.chunks_exact(cols) {
            for wr in w.chunks_exact(row_bytes).take(rows) {
                y.push(match ty {
                    QuantType::Q4_1 => {
                        let mut a = Vec::new();
                        quantize_q8_1(xr, &mut a);
                        dot_q4_1_q8_1(wr, &a)
                    }
                    QuantType::Q8_0 => {
                        let mut a = Vec::new();
                        quantize_q8_0(xr, &mut a);
                        dot_q8_0_q8_0(wr, &a)
                    }
                });
            }
        }
        y
    }

    fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
        }
    }

    /// Every kernel, tile shape and remainder path gives the scalar dot's bits.
    #[test]
    fn kernels_match_scalar_bit_for_bit() {
        let mut seed = 10;
        for ty in [QuantType::Q4_1, QuantType::Q8_0] {
            for nb in [1, 2, 3, 18, 48] {
                let cols = nb * QK;
                for rows in [1, 3, 4, 5, 9, 64, 131] {
                    for n in [1, 2, 3, 5] {
                        seed += 1;
                        let w = random_weights(ty, rows, cols, seed);
                        let x = random_acts(n, cols, seed + 1000);
                        let want = oracle(ty, &w, rows, cols, &x);
                        for kernel in Kernel::available() {
                            let m = QuantMatrix::with_kernel(ty, w.clone(), rows, cols, kernel)
                                .unwrap();
                            let what = format!("{ty:?} {kernel:?} {rows}x{cols} n={n}");
                            assert_same_bits(&m.forward(&x), &want, &what);
                        }
                    }
                }
            }
        }
    }

    /// Q8_0 weights at the extremes (−128, −127, 127) against the sign trick.
    #[test]
    fn q8_0_extreme_weights_match_scalar() {
        let (rows, cols) = (8, 64);
        let mut w = random_weights(QuantType::Q8_0, rows, cols, 3);
        for (i, block) in w.chunks_exact_mut(Q8_0_BYTES).enumerate() {
            for (j, q) in block[2..].iter_mut().enumerate() {
                *q = [0x80u8, 0x81, 0x7F, 0x00][(i + j) % 4];
            }
        }
        let mut x = random_acts(2, cols, 4);
        x[cols..].iter_mut().for_each(|v| *v = v.signum()); // quants at ±127
        let want = oracle(QuantType::Q8_0, &w, rows, cols, &x);
        for kernel in Kernel::available() {
            let m = QuantMatrix::with_kernel(QuantType::Q8_0, w.clone(), rows, cols, kernel).unwrap();
            assert_same_bits(&m.forward(&x), &want, &format!("{kernel:?}"));
        }
    }

    /// Products split into any number of chunks, over the pool: the same bits.
    #[test]
    fn parallel_split_is_bit_identical() {
        for ty in [QuantType::Q4_1, QuantType::Q8_0] {
            let (rows, cols, n) = (1003, 576, 3);
            let w = random_weights(ty, rows, cols, 77);
            let x = random_acts(n, cols, 78);
            let want = oracle(ty, &w, rows, cols, &x);
            let m = QuantMatrix::new(ty, w, rows, cols).unwrap();
            for tasks in [1, 2, 3, 8] {
                let got = m.forward_split(&x, tasks);
                assert_same_bits(&got, &want, &format!("{ty:?} tasks={tasks}"));
            }
        }
    }

    #[test]
    fn rejects_inconsistent_sizes() {
        assert!(QuantMatrix::new(QuantType::Q4_1, vec![0; 20], 1, 33).is_none());
        assert!(QuantMatrix::new(QuantType::Q4_1, vec![0; 19], 1, 32).is_none());
    }
}
