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

use super::blocks::{quantize_q8_0, quantize_q8_1, BlockQ8_0, BlockQ8_1};
use super::blocks_k::{quantize_q8_k, BlockQ8K};
use super::pool::{self, DisjointOut};
use super::tiles::{Tiles, Q4K, Q4_0, Q4_1, Q6K, Q8_0};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl QuantType {
    /// Weights per block: a row's length must be a multiple of it.
    pub(super) fn block_values(self) -> usize {
        match self {
            QuantType::Q4_0 => Q4_0::BLOCK_VALUES,
            QuantType::Q4_1 => Q4_1::BLOCK_VALUES,
            QuantType::Q8_0 => Q8_0::BLOCK_VALUES,
            QuantType::Q4K => Q4K::BLOCK_VALUES,
            QuantType::Q6K => Q6K::BLOCK_VALUES,
        }
    }

    pub(super) fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => Q4_0::BLOCK_BYTES,
            QuantType::Q4_1 => Q4_1::BLOCK_BYTES,
            QuantType::Q8_0 => Q8_0::BLOCK_BYTES,
            QuantType::Q4K => Q4K::BLOCK_BYTES,
            QuantType::Q6K => Q6K::BLOCK_BYTES,
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
    static ACT_Q8_K: RefCell<Vec<BlockQ8K>> = const { RefCell::new(Vec::new()) };
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
    /// `bytes` holds `rows` rows of `cols / ty.block_values()` blocks each; `cols` must be a
    /// multiple of the block (32 values, 256 for k-quants).
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
        let values = ty.block_values();
        let ok = cols % values == 0
            && bytes.len() == rows * (cols / values) * ty.block_bytes()
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
            QuantType::Q4_0 => with_buffer(&ACT_Q8_0, |acts| {
                quantize_q8_0(x, acts);
                self.run_job(Q4_0(self.kernel), acts, n, &mut y, tasks);
            }),
            QuantType::Q4_1 => with_buffer(&ACT_Q8_1, |acts| {
                quantize_q8_1(x, acts);
                self.run_job(Q4_1(self.kernel), acts, n, &mut y, tasks);
            }),
            QuantType::Q8_0 => with_buffer(&ACT_Q8_0, |acts| {
                quantize_q8_0(x, acts);
                self.run_job(Q8_0(self.kernel), acts, n, &mut y, tasks);
            }),
            QuantType::Q4K => with_buffer(&ACT_Q8_K, |acts| {
                quantize_q8_k(x, acts);
                self.run_job(Q4K(self.kernel), acts, n, &mut y, tasks);
            }),
            QuantType::Q6K => with_buffer(&ACT_Q8_K, |acts| {
                quantize_q8_k(x, acts);
                self.run_job(Q6K(self.kernel), acts, n, &mut y, tasks);
            }),
        }
        y
    }

    /// `y = W · acts` for `n` quantised activation rows.
    fn run_job<T: Tiles>(&self, tiles: T, acts: &[T::Act], n: usize, y: &mut [f32], tasks: Option<usize>) {
        let nb = self.cols / T::BLOCK_VALUES;
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
mod tests;
