//! Rotary position embedding and causal grouped-query attention over the KV cache.

use crate::model::config::Config;
use crate::model::kv_cache::KvElement;
use crate::model::ops::softmax;

/// RoPE angles `θ_i·pos` with `θ_i = base^(-2i/rope_dim)`, optionally divided by per-pair
/// frequency factors (llama 3.1's `rope_freqs.weight`).
pub struct Rope {
    theta_scale: f32,
    freq_factors: Option<Vec<f32>>,
    half: usize,
}

impl Rope {
    pub fn new(cfg: &Config, freq_factors: Option<&[f32]>) -> Self {
        Self {
            theta_scale: cfg.rope_base.powf(-2.0 / cfg.rope_dim as f32),
            freq_factors: freq_factors.map(<[f32]>::to_vec),
            half: cfg.rope_dim / 2,
        }
    }

    /// Rotates the consecutive pairs `(x[2i], x[2i+1])` of every head of one row at `pos`.
    /// GGUF llama weights are permuted at conversion so that this interleaved form is exact.
    /// The angle is built by repeated multiplication, `θ_{i+1} = θ_i · scale`, as ggml does, so
    /// the rounding matches the peer engine.
    pub fn apply(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        let mut sin_cos = Vec::with_capacity(self.half);
        let mut theta = pos as f32;
        for i in 0..self.half {
            let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            sin_cos.push((theta / ff).sin_cos());
            theta *= self.theta_scale;
        }
        for head in row.chunks_exact_mut(head_dim) {
            for (i, (sin, cos)) in sin_cos.iter().enumerate() {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos - b * sin;
                head[2 * i + 1] = a * sin + b * cos;
            }
        }
    }
}

/// Causal attention of `rows` query rows at positions `pos0..pos0+rows` over the cached keys and
/// values of positions `0..pos0+rows`. Query head `h` reads KV head `h / group_size`.
///
/// `out[s, h] = Σ_t softmax_t(q[s,h]·k[t] / √d) · v[t]`, for `t ≤ pos0 + s`.
///
/// Like llama.cpp's CPU path, the query and the attention weights are rounded to the cache's
/// precision before they meet it; products and sums are f32.
pub fn attend<T: KvElement>(cfg: &Config, q: &[f32], keys: &[T], values: &[T], pos0: usize) -> Vec<f32> {
    let (hd, kv_dim, q_dim) = (cfg.head_dim, cfg.kv_dim(), cfg.q_dim());
    let scale = 1.0 / (hd as f32).sqrt();
    let rows = q.len() / q_dim;
    let mut out = vec![0f32; q.len()];
    let mut scores = Vec::with_capacity(pos0 + rows);
    let mut q_head = vec![0f32; hd];
    let mut row = vec![0f32; hd];
    for s in 0..rows {
        let n_ctx = pos0 + s + 1;
        for h in 0..cfg.n_heads {
            let kv_off = (h / cfg.group_size()) * hd;
            for (dst, src) in q_head.iter_mut().zip(&q[s * q_dim + h * hd..][..hd]) {
                *dst = T::round(*src);
            }
            scores.clear();
            for t in 0..n_ctx {
                T::load_slice(&keys[t * kv_dim + kv_off..][..hd], &mut row);
                scores.push(dot(&q_head, &row) * scale);
            }
            softmax(&mut scores);
            let out_head = &mut out[s * q_dim + h * hd..][..hd];
            for (t, w) in scores.iter().enumerate() {
                let w = T::round(*w);
                T::load_slice(&values[t * kv_dim + kv_off..][..hd], &mut row);
                for (o, vi) in out_head.iter_mut().zip(&row) {
                    *o += w * vi;
                }
            }
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
