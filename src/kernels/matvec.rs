//! A quantized weight matrix kept as the file's bytes, and its product with activation rows.
//!
//! One product quantises every activation row once, then splits the weight rows into a few
//! contiguous chunks (about `TASKS_PER_THREAD` per thread, one when the product is small or
//! there is one thread, in which case it runs on the calling thread). A chunk computes all
//! activation rows against its weight rows, so the chunk's weights are read from memory once
//! and reused from cache across the batch. The inner loop is a tile of 4 weight rows × 1 or 2
//! activation rows; every output is still exactly one call of the per-(row, column) dot
//! product, so results do not depend on the tiling, the chunking or the thread count.

use std::cell::RefCell;
use std::sync::Arc;

use memmap2::Mmap;

use super::pool::{self, DisjointOut};
use super::blocks::{
    dot_q4_0_q8_0, dot_q4_1_q8_1, dot_q8_0_q8_0, quantize_q8_0, quantize_q8_1, BlockQ8_0,
    BlockQ8_1, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q4_1,
    Q8_0,
    Q4_0,
}

impl QuantType {
    fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_1 => Q4_1_BYTES,
            QuantType::Q8_0 => Q8_0_BYTES,
            QuantType::Q4_0 => Q4_0_BYTES,
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
    /// The same tiles with AVX-512 VNNI's `vpdpbusd` (256-bit) for the integer dots.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// NEON (`neon.rs`).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU supports (`FFNSKIP_KERNEL=scalar|avx2|avx512vnni|neon` picks
    /// a supported one instead, for comparisons).
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
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "neon",
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
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                all.push(Kernel::Avx512Vnni);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            all.push(Kernel::Neon);
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

/// Parallel chunks per thread: a few, so a thread slowed by another process does not hold
/// the others up for long.
const TASKS_PER_THREAD: usize = 2;
/// Products with fewer multiply-adds than this run on the calling thread: handing them to the
/// pool costs more than it saves. The smallest product of the default model's decode step (the
/// K and V projections, 110k MACs) is still split.
const PAR_MIN_MACS: usize = 1 << 16;
/// Weight rows per tile.
const TILE_ROWS: usize = 4;

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
trait Tiles: Copy + Sync {
    type Act: Sync;
    /// Bytes of one weight block (32 weights).
    const BLOCK_BYTES: usize;
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
    /// The NEON tile of this type.
    ///
    /// # Safety
    /// As [`Tiles::tile`], and the CPU supports NEON.
    #[cfg(target_arch = "aarch64")]
    unsafe fn neon_tile<const R: usize, const C: usize>(
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
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => Self::neon_tile::<R, C>(w, row_bytes, nb, acts, out),
        }
    }
}

#[derive(Clone, Copy)]
struct Q4_1(Kernel);
#[derive(Clone, Copy)]
struct Q8_0(Kernel);
#[derive(Clone, Copy)]
struct Q4_0(Kernel);

impl Tiles for Q4_1 {
    type Act = BlockQ8_1;
    const BLOCK_BYTES: usize = Q4_1_BYTES;
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
        if vnni {
            super::avx2::vnni::tile_q4_1::<R, C>(w, row_bytes, nb, acts, out)
        } else {
            super::avx2::avx2::tile_q4_1::<R, C>(w, row_bytes, nb, acts, out)
        }
    }
    #[cfg(target_arch = "aarch64")]
    unsafe fn neon_tile<const R: usize, const C: usize>(
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const BlockQ8_1; C],
        out: &mut [[f32; C]; R],
    ) {
        super::neon::tile_q4_1::<R, C>(w, row_bytes, nb, acts, out)
    }
}

impl Tiles for Q8_0 {
    type Act = BlockQ8_0;
    const BLOCK_BYTES: usize = Q8_0_BYTES;
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
        if vnni {
            super::avx2::vnni::tile_q8_0::<R, C>(w, row_bytes, nb, acts, out)
        } else {
            super::avx2::avx2::tile_q8_0::<R, C>(w, row_bytes, nb, acts, out)
        }
    }
    #[cfg(target_arch = "aarch64")]
    unsafe fn neon_tile<const R: usize, const C: usize>(
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const BlockQ8_0; C],
        out: &mut [[f32; C]; R],
    ) {
        super::neon::tile_q8_0::<R, C>(w, row_bytes, nb, acts, out)
    }
}

impl Tiles for Q4_0 {
    type Act = BlockQ8_0;
    const BLOCK_BYTES: usize = Q4_0_BYTES;
    fn kernel(self) -> Kernel {
        self.0
    }
    fn dot(row: &[u8], acts: &[BlockQ8_0]) -> f32 {
        dot_q4_0_q8_0(row, acts)
    }
    // No x86 tile for Q4_0 on this branch (another branch adds them): the scalar tile, so
    // every kernel still gives the oracle's bits.
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_tile<const R: usize, const C: usize>(
        _vnni: bool,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const BlockQ8_0; C],
        out: &mut [[f32; C]; R],
    ) {
        Q4_0(Kernel::Scalar).tile::<R, C>(w, row_bytes, nb, acts, out)
    }
    #[cfg(target_arch = "aarch64")]
    unsafe fn neon_tile<const R: usize, const C: usize>(
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const BlockQ8_0; C],
        out: &mut [[f32; C]; R],
    ) {
        super::neon::tile_q4_0::<R, C>(w, row_bytes, nb, acts, out)
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

/// The product's shape, shared by its tasks.
struct Job<'a, T: Tiles> {
    tiles: T,
    weights: &'a [u8],
    row_bytes: usize,
    /// Blocks per row.
    nb: usize,
    rows: usize,
    /// `n · nb` activation blocks, row after row.
    acts: &'a [T::Act],
    n: usize,
    y: DisjointOut<'a>,
}

impl<T: Tiles> Job<'_, T> {
    /// All activation rows against weight rows `r0..r1`.
    fn run(&self, r0: usize, r1: usize) {
        let mut c = 0;
        if self.tiles.wide() {
            while c + 4 <= self.n {
                self.columns::<4>(c, r0, r1);
                c += 4;
            }
        }
        while c + 2 <= self.n {
            self.columns::<2>(c, r0, r1);
            c += 2;
        }
        if c < self.n {
            self.columns::<1>(c, r0, r1);
        }
    }

    /// Activation rows `c0..c0 + C` against weight rows `r0..r1`.
    fn columns<const C: usize>(&self, c0: usize, r0: usize, r1: usize) {
        let acts: [*const T::Act; C] =
            std::array::from_fn(|c| self.acts[(c0 + c) * self.nb..][..self.nb].as_ptr());
        let mut r = r0;
        while r + TILE_ROWS <= r1 {
            self.tile::<TILE_ROWS, C>(c0, r, acts);
            r += TILE_ROWS;
        }
        while r < r1 {
            self.tile::<1, C>(c0, r, acts);
            r += 1;
        }
    }

    fn tile<const R: usize, const C: usize>(&self, c0: usize, r: usize, acts: [*const T::Act; C]) {
        let w = &self.weights[r * self.row_bytes..(r + R) * self.row_bytes];
        let mut out = [[0f32; C]; R];
        // SAFETY: `w` holds R rows; each `acts[c]` points at `nb` blocks of `self.acts`; the
        // kernel was chosen for this CPU.
        unsafe { self.tiles.tile::<R, C>(w.as_ptr(), self.row_bytes, self.nb, acts, &mut out) };
        for c in 0..C {
            // SAFETY: rows r..r+R belong to this task only.
            let y = unsafe { self.y.part((c0 + c) * self.rows + r, R) };
            for (yi, out) in y.iter_mut().zip(&out) {
                *yi = out[c];
            }
        }
    }

    /// The whole product, in `tasks` chunks if given, else split over the pool when it is big
    /// enough.
    fn run_all(&self, cols: usize, tasks: Option<usize>) {
        if let Some(tasks) = tasks {
            return self.run_split(tasks);
        }
        let threads = pool::threads();
        let macs = self.n * self.rows * cols;
        if threads <= 1 || macs < PAR_MIN_MACS || self.rows < 2 * TILE_ROWS {
            self.run(0, self.rows);
        } else {
            self.run_split(threads * TASKS_PER_THREAD);
        }
    }

    /// The product as about `tasks` chunks of whole tiles, claimed by the pool's threads.
    fn run_split(&self, tasks: usize) {
        let per = self.rows.div_ceil(tasks).next_multiple_of(TILE_ROWS);
        let tasks = self.rows.div_ceil(per);
        pool::parallel_for(tasks, &|t| {
            let r0 = t * per;
            self.run(r0, (r0 + per).min(self.rows));
        });
    }
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

    /// `y[r] = W · x[r]` for each row of `x` (`[n, cols]` → `[n, rows]`).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.product(x, None)
    }

    /// [`QuantMatrix::forward`] in a given number of parallel chunks.
    #[cfg(test)]
    fn forward_split(&self, x: &[f32], tasks: usize) -> Vec<f32> {
        self.product(x, Some(tasks))
    }

    fn product(&self, x: &[f32], tasks: Option<usize>) -> Vec<f32> {
        let n = x.len() / self.cols;
        let x = &x[..n * self.cols];
        let mut y = vec![0f32; n * self.rows];
        if n == 0 || self.rows == 0 {
            return y;
        }
        match self.ty {
            QuantType::Q4_1 => with_buffer(&ACT_Q8_1, |acts| {
                quantize_q8_1(x, acts);
                self.run_job(Q4_1(self.kernel), acts, n, &mut y, tasks);
            }),
            QuantType::Q8_0 => with_buffer(&ACT_Q8_0, |acts| {
                quantize_q8_0(x, acts);
                self.run_job(Q8_0(self.kernel), acts, n, &mut y, tasks);
            }),
            QuantType::Q4_0 => with_buffer(&ACT_Q8_0, |acts| {
                quantize_q8_0(x, acts);
                self.run_job(Q4_0(self.kernel), acts, n, &mut y, tasks);
            }),
        }
        y
    }

    /// `y = W · acts` for `n` quantised activation rows.
    fn run_job<T: Tiles>(&self, tiles: T, acts: &[T::Act], n: usize, y: &mut [f32], tasks: Option<usize>) {
        let nb = self.cols / QK;
        let job = Job {
            tiles,
            weights: &self.bytes,
            row_bytes: nb * T::BLOCK_BYTES,
            nb,
            rows: self.rows,
            acts,
            n,
            y: DisjointOut::new(y),
        };
        job.run_all(self.cols, tasks);
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
        let types = [
            (QuantType::Q4_1, GgmlDType::Q4_1),
            (QuantType::Q8_0, GgmlDType::Q8_0),
            (QuantType::Q4_0, GgmlDType::Q4_0),
        ];
        for (ty, dtype) in types {
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
            let quants = if ty == QuantType::Q8_0 { 32 } else { 16 };
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
                    QuantType::Q4_0 => {
                        let mut a = Vec::new();
                        quantize_q8_0(xr, &mut a);
                        dot_q4_0_q8_0(wr, &a)
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
        for ty in [QuantType::Q4_1, QuantType::Q8_0, QuantType::Q4_0] {
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
        for ty in [QuantType::Q4_1, QuantType::Q8_0, QuantType::Q4_0] {
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
