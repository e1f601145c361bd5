//! Running quantized products over the worker pool: one product, or a few that share their
//! input (Q/K/V, gate/up) in a single hand-off.
//!
//! A product quantises its activation rows once, then splits each matrix's weight rows into a
//! few contiguous chunks (about `TASKS_PER_THREAD` per thread; everything on the calling thread
//! when the work is small or there is one thread). A chunk computes all activation rows against
//! its weight rows, so the chunk's weights are read from memory once and reused from cache
//! across the batch. The inner loop is a tile of 4 weight rows × 1, 2 or 4 activation rows;
//! every output is still exactly one call of the per-(row, column) dot product, so results do
//! not depend on the tiling, the chunking, the grouping or the thread count.

use super::matvec::{QuantMatrix, Tiles};
use super::pool::{self, DisjointOut};
use super::Rounding;

/// Parallel chunks per thread and matrix: a few, so a thread slowed by another process does
/// not hold the others up for long.
const TASKS_PER_THREAD: usize = 2;
/// Products with fewer multiply-adds than this run on the calling thread: handing them to the
/// pool costs more than it saves. The smallest product of the default model's decode step (the
/// K and V projections, 110k MACs) is still split.
const PAR_MIN_MACS: usize = 1 << 16;
/// Weight rows per tile.
pub(super) const TILE_ROWS: usize = 4;

/// How a product is split: by size over the pool, or into a given number of chunks (tests).
#[derive(Clone, Copy)]
pub(super) enum Split {
    Auto,
    #[cfg(test)]
    Chunks(usize),
}

/// Combines a chunk of the first product's outputs into the second's, in place (the gated
/// product's `silu(gate) · up`).
pub type Combine<'f> = &'f (dyn Fn(&[f32], &mut [f32]) + Sync);

/// One matrix's product with the shared activations.
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

impl<'a, T: Tiles> Job<'a, T> {
    fn new(tiles: T, m: &'a QuantMatrix, acts: &'a [T::Act], n: usize, y: &'a mut [f32]) -> Self {
        let nb = m.cols() / T::BLOCK_VALUES;
        assert_eq!(y.len(), n * m.rows(), "output size");
        Job {
            tiles,
            weights: m.bytes(),
            row_bytes: nb * T::BLOCK_BYTES,
            nb,
            rows: m.rows(),
            acts,
            n,
            y: DisjointOut::new(y),
        }
    }

    /// Weight rows of chunk `i` of `chunks` (whole tiles; empty past the end).
    fn chunk(&self, i: usize, chunks: usize) -> (usize, usize) {
        let per = self.rows.div_ceil(chunks).next_multiple_of(TILE_ROWS);
        ((i * per).min(self.rows), ((i + 1) * per).min(self.rows))
    }

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
}

/// Chunks per matrix for `macs` multiply-adds in all (1: run on the calling thread).
fn chunks(split: Split, macs: usize, min_rows: usize) -> usize {
    match split {
        #[cfg(test)]
        Split::Chunks(c) => c,
        Split::Auto => {
            let threads = pool::threads();
            if threads <= 1 || macs < PAR_MIN_MACS || min_rows < 2 * TILE_ROWS {
                1
            } else {
                threads * TASKS_PER_THREAD
            }
        }
    }
}

/// The most matrices one shared product takes (Q, K and V).
pub const MAX_SHARED: usize = 3;

/// `ys[i] = ms[i] · x` for matrices of type `T` with the same input width, in one hand-off.
pub(super) fn run_shared<T: Tiles>(
    tiles: T,
    ms: &[&QuantMatrix],
    x: &[f32],
    ys: &mut [&mut [f32]],
    rounding: Rounding,
    split: Split,
) {
    let cols = ms[0].cols();
    let n = x.len() / cols;
    T::with_acts(&x[..n * cols], cols, rounding, |acts| {
        let mut ys = ys.iter_mut();
        let jobs: [Option<Job<T>>; MAX_SHARED] =
            std::array::from_fn(|i| Some(Job::new(tiles, ms.get(i)?, acts, n, ys.next()?)));
        let rows: usize = jobs.iter().flatten().map(|j| j.rows).sum();
        let min_rows = jobs.iter().flatten().map(|j| j.rows).min().unwrap_or(0);
        let per_job = chunks(split, n * rows * cols, min_rows);
        let task = |t: usize| {
            let job = jobs[t / per_job].as_ref().expect("one job per matrix");
            let (r0, r1) = job.chunk(t % per_job, per_job);
            job.run(r0, r1);
        };
        let tasks = ms.len() * per_job;
        if per_job == 1 {
            (0..tasks).for_each(task);
        } else {
            pool::parallel_for(tasks, &task);
        }
    });
}

/// `out = combine(gate · x, up · x)`, chunk by chunk: each task computes the same weight rows
/// of both products and combines them while they are in cache. `gate_y` is scratch of the
/// output's size.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_gated<T: Tiles>(
    tiles: T,
    gate: &QuantMatrix,
    up: &QuantMatrix,
    x: &[f32],
    gate_y: &mut [f32],
    out: &mut [f32],
    combine: Combine,
    rounding: Rounding,
    split: Split,
) {
    let cols = gate.cols();
    let n = x.len() / cols;
    T::with_acts(&x[..n * cols], cols, rounding, |acts| {
        let g = Job::new(tiles, gate, acts, n, gate_y);
        let u = Job::new(tiles, up, acts, n, out);
        let per = chunks(split, 2 * n * g.rows * cols, g.rows);
        let task = |t: usize| {
            let (r0, r1) = g.chunk(t, per);
            g.run(r0, r1);
            u.run(r0, r1);
            for c in 0..n {
                // SAFETY: rows r0..r1 of every column belong to this task only.
                let (gs, us) = unsafe {
                    (g.y.part(c * g.rows + r0, r1 - r0), u.y.part(c * u.rows + r0, r1 - r0))
                };
                combine(gs, us);
            }
        };
        if per == 1 {
            task(0);
        } else {
            pool::parallel_for(per, &task);
        }
    });
}
