//! Rotary position embedding and causal grouped-query attention over the KV cache.

use half::f16;

use crate::model::config::Config;
use crate::model::ops::softmax;

/// Per-position `cos`/`sin` of the RoPE angles `θ_i·pos`, `θ_i = base^(-2i/rope_dim)`.
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// `freq_factors` (llama 3.1's `rope_freqs.weight`) divide the base frequencies.
    pub fn new(cfg: &Config, freq_factors: Option<&[f32]>) -> Self {
        let half = cfg.rope_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let f = 1.0 / cfg.rope_base.powf(2.0 * i as f32 / cfg.rope_dim as f32);
                f / freq_factors.map_or(1.0, |ff| ff[i])
            })
            .collect();
        Self { inv_freq }
    }

    /// Rotates the consecutive pairs `(x[2i], x[2i+1])` of every head of one row at `pos`.
    /// GGUF llama weights are permuted at conversion so that this interleaved form is exact.
    pub fn apply(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        for head in row.chunks_exact_mut(head_dim) {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let (sin, cos) = (pos as f32 * f).sin_cos();
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
/// Like llama.cpp's CPU path, the query and the attention weights are rounded to f16 before
/// they meet the f16 cache; products and sums are f32.
pub fn attend(cfg: &Config, q: &[f32], keys: &[f16], values: &[f16], pos0: usize) -> Vec<f32> {
    let (hd, kv_dim, q_dim) = (cfg.head_dim, cfg.kv_dim(), cfg.q_dim());
    let scale = 1.0 / (hd as f32).sqrt();
    let rows = q.len() / q_dim;
    let mut out = vec![0f32; q.len()];
    let mut scores = Vec::with_capacity(pos0 + rows);
    let mut q_head = vec![0f32; hd];
    for s in 0..rows {
        let n_ctx = pos0 + s + 1;
        for h in 0..cfg.n_heads {
            let kv_off = (h / cfg.group_size()) * hd;
            for (dst, src) in q_head.iter_mut().zip(&q[s * q_dim + h * hd..][..hd]) {
                *dst = round_f16(*src);
            }
            scores.clear();
            scores.extend((0..n_ctx).map(|t| dot_f16(&q_head, &keys[t * kv_dim + kv_off..][..hd]) * scale));
            softmax(&mut scores);
            let out_head = &mut out[s * q_dim + h * hd..][..hd];
            for (t, w) in scores.iter().enumerate() {
                let w = round_f16(*w);
                let v = &values[t * kv_dim + kv_off..][..hd];
                for (o, vi) in out_head.iter_mut().zip(v) {
                    *o += w * vi.to_f32();
                }
            }
        }
    }
    out
}

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}
