//! Rotary position embedding and causal grouped-query attention over the KV cache.

use std::cell::RefCell;

use crate::kernels::pool::{self, DisjointOut};
use crate::kernels::Rounding;
use crate::model::config::{Config, RopePairs};
use crate::model::kv_cache::KvElement;
use crate::model::numerics::{softmax, CacheValues, WeightedSum};

/// RoPE angles `θ_i·pos` with `θ_i = base^(-2i/rope_dim)`, optionally divided by per-pair
/// frequency factors (llama 3.1's `rope_freqs.weight`).
pub struct Rope {
    theta_scale: f32,
    freq_factors: Option<Vec<f32>>,
    half: usize,
    pairs: RopePairs,
}

impl Rope {
    /// The `(sin, cos)` pairs of one row in [`Rope::angles`].
    pub fn pairs_per_row(&self) -> usize {
        self.half
    }

    pub fn new(cfg: &Config, freq_factors: Option<&[f32]>) -> Self {
        Self {
            theta_scale: cfg.rope_base.powf(-2.0 / cfg.rope_dim as f32),
            freq_factors: freq_factors.map(<[f32]>::to_vec),
            half: cfg.rope_dim / 2,
            pairs: cfg.architecture.rope_pairs(),
        }
    }

    /// Appends the `(sin, cos)` of every pair's angle at positions `pos0..pos0 + rows` to `out`,
    /// row after row: computed once per step and shared by every layer's Q and K.
    pub fn angles(&self, pos0: usize, rows: usize, out: &mut Vec<(f32, f32)>) {
        for pos in pos0..pos0 + rows {
            let mut theta = pos as f32;
            for i in 0..self.half {
                let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
                out.push((theta / ff).sin_cos());
                theta *= self.theta_scale;
            }
        }
    }

    /// Rotates pair `i` of every head of each row of `x` by the row's `angles` (from
    /// [`Rope::angles`]; they may go on past the last row); the pair is `(2i, 2i + 1)` or `(i, i + half)` by [`RopePairs`]. The
    /// angle is built by repeated multiplication, `θ_{i+1} = θ_i · scale`, and the rotation
    /// uses one fused multiply-add per output, as ggml's compiled code does, so the rounding
    /// matches the peer engine.
    pub fn apply(&self, x: &mut [f32], row_len: usize, head_dim: usize, angles: &[(f32, f32)]) {
        debug_assert!(angles.len() * row_len >= x.len() * self.half, "an angle for every row");
        let half = self.half;
        for (row, sin_cos) in x.chunks_exact_mut(row_len).zip(angles.chunks_exact(half)) {
            for head in row.chunks_exact_mut(head_dim) {
                for (i, (sin, cos)) in sin_cos.iter().enumerate() {
                    let (ia, ib) = match self.pairs {
                        RopePairs::Adjacent => (2 * i, 2 * i + 1),
                        RopePairs::Halves => (i, i + half),
                    };
                    let (a, b) = (head[ia], head[ib]);
                    head[ia] = a.mul_add(*cos, -(b * sin));
                    head[ib] = a.mul_add(*sin, b * cos);
                }
            }
        }
    }
}

/// The query rows of one attention call: row `s` sits at position `pos0 + s`.
#[derive(Clone, Copy)]
pub struct Queries<'a> {
    /// `[rows, q_dim]`, after RoPE.
    pub q: &'a [f32],
    pub pos0: usize,
    /// Whether the rows sum as the peer engine's batch or each as its own decode step.
    pub rounding: Rounding,
}

/// Causal attention of the query rows at positions `pos0..pos0+rows` over the cached keys and
/// values of positions `0..pos0+rows`, in a cache of `context` positions. Query head `h` reads
/// KV head `h / group_size`.
///
/// `out[s, h] = Σ_t softmax_t(q[s,h]·k[t] / √d) · v[t]`, for `t ≤ pos0 + s`.
///
/// Rounded as llama.cpp's CPU path rounds it: the query and the attention weights are rounded
/// to the cache's precision before they meet it, and the dot products sum in the order of
/// ggml's vector dot product for one row, or of its matrix kernel (tinyBLAS) for a batch
/// rounded as a batch.
pub fn attend<T: KvElement + CacheValues>(
    cfg: &Config,
    queries: Queries,
    keys: &[T],
    values: &[T],
    context: usize,
    out: &mut [f32],
) {
    if T::direct() {
        return Shape { cfg, context, keys, values }.run::<T>(queries, out);
    }
    KV_F32.with(|kv| {
        let (keys_f32, values_f32) = &mut *kv.borrow_mut();
        // The buffers keep their length from the previous call (one position shorter at
        // decode), so resizing writes only the new tail before the conversion overwrites all.
        keys_f32.resize(keys.len(), 0.0);
        values_f32.resize(values.len(), 0.0);
        T::load_slice(keys, keys_f32);
        T::load_slice(values, values_f32);
        Shape { cfg, context, keys: &keys_f32[..], values: &values_f32[..] }.run::<T>(queries, out);
    })
}

/// The cache one attention call reads, as `E` values.
struct Shape<'a, E> {
    cfg: &'a Config,
    /// Positions the cache can hold.
    context: usize,
    keys: &'a [E],
    values: &'a [E],
}

impl<E: CacheValues> Shape<'_, E> {
    /// Every (query row, head) of `queries` into `out`; `T` is the cache's precision.
    fn run<T: KvElement>(&self, queries: Queries, out: &mut [f32]) {
        let (cfg, hd, q_dim) = (self.cfg, self.cfg.head_dim, self.cfg.q_dim());
        let rows = queries.q.len() / q_dim;
        let heads = DisjointOut::new(out);
        // One task per (query row, head): each reads the whole cache of its KV head.
        pool::parallel_for(rows * cfg.n_heads, &|task| {
            let (s, h) = (task / cfg.n_heads, task % cfg.n_heads);
            let q_head = &queries.q[s * q_dim + h * hd..][..hd];
            // SAFETY: task (s, h) is the only writer of its head's slice.
            let out_head = unsafe { heads.part(s * q_dim + h * hd, hd) };
            let sums = Sums::of_row(cfg, queries, rows, s);
            let n_ctx = queries.pos0 + s + 1;
            SCRATCH.with(|scratch| self.head::<T>(sums, n_ctx, h, q_head, out_head, &mut scratch.borrow_mut()));
        });
    }

    /// Query head `h` of the row at position `n_ctx − 1`: softmax(q·k / √d) · v over positions
    /// `0..n_ctx`.
    fn head<T: KvElement>(&self, sums: Sums, n_ctx: usize, h: usize, q: &[f32], out: &mut [f32], scratch: &mut Scratch) {
        let (hd, kv_dim) = (self.cfg.head_dim, self.cfg.kv_dim());
        let kv_off = (h / self.cfg.group_size()) * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let dot = if sums.gemm { E::dot_gemm } else { E::dot_vec };
        scratch.q.clear();
        scratch.q.extend(q.iter().map(|&x| T::round(x)));
        scratch.scores.clear();
        // Room for the whole context at once: no reallocation as the sequence grows.
        scratch.scores.reserve(self.context);
        scratch.scores.extend((0..n_ctx).map(|t| dot(&scratch.q, &self.keys[t * kv_dim + kv_off..][..hd]) * scale));
        softmax(&mut scratch.scores);
        for w in scratch.scores.iter_mut() {
            *w = T::round(*w);
        }
        scratch.weighted.run(&scratch.scores, sums.n_kv, sums.gemm, self.values, kv_dim, kv_off, out);
    }
}

/// How the sums over positions are ordered, as ggml orders them.
#[derive(Clone, Copy)]
struct Sums {
    /// Cache positions the peer engine reads, padded to `Config::kv_pad`: the padding has
    /// weight 0, but it decides where ggml's dot product over positions switches to its scalar
    /// f64 tail, and so the rounding.
    n_kv: usize,
    /// Sum in the order of ggml's matrix kernel (a batch) instead of its vector dot product.
    gemm: bool,
}

impl Sums {
    /// The order of row `s` of `rows` query rows: the batch's, or that of a decode step at the
    /// row's position.
    fn of_row(cfg: &Config, queries: Queries, rows: usize, s: usize) -> Self {
        match queries.rounding {
            Rounding::Batch => Sums {
                n_kv: (queries.pos0 + rows).next_multiple_of(cfg.kv_pad),
                gemm: rows > 1 && cfg.head_dim.is_multiple_of(16),
            },
            Rounding::PerRow => Sums { n_kv: (queries.pos0 + s + 1).next_multiple_of(cfg.kv_pad), gemm: false },
        }
    }
}

#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    scores: Vec<f32>,
    weighted: WeightedSum,
}

/// Sizes every pool thread's attention scratch for `context` positions, so that a decode step
/// allocates nothing whichever thread takes which head.
pub fn reserve_scratch(cfg: &Config, context: usize) {
    pool::on_every_thread(&|| {
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            scratch.q.reserve(cfg.head_dim);
            scratch.scores.reserve(context);
            scratch.weighted.reserve(cfg.head_dim);
        })
    });
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// One layer's keys and values as f32, reused across calls.
    static KV_F32: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}
