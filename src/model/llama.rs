//! The llama forward pass. One decoder layer `l`, for each row `x` of the residual stream:
//!
//! ```text
//! h_mid = x + Attn_l(RMSNorm_att(x))          attention always writes K/V
//! h_out = h_mid + FFN_l(RMSNorm_ffn(h_mid))    FFN(u) = down(silu(gate(u)) * up(u))
//! ```
//!
//! The skip policy decides, layer by layer, whether the FFN (or the whole layer) runs.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::attention::{attend, Rope};
use crate::model::config::Config;
use crate::model::gguf::GgufFile;
use crate::model::kv_cache::{KvCache, KvPrecision, KvStore};
use crate::model::ops::{add_assign, cosine, norm, rms_norm, silu_mul};
use crate::model::weights::{LayerWeights, Weights};
use crate::skip::{LayerPlan, Phase, Saturation, SkipPolicy};

/// One forward step: `tokens` at positions `pos..pos + tokens.len()`.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub phase: Phase,
    /// Return the logits of every row (perplexity, tests) instead of only the last.
    pub all_logits: bool,
}

/// How often each block ran, per layer; counted by the model, so no policy can misreport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockCounts {
    pub attention: Vec<u64>,
    pub ffn: Vec<u64>,
    pub kv_writes: Vec<u64>,
    /// Maximal runs of consecutive layers whose FFN did not run, summed over rows.
    pub ffn_skip_runs: u64,
}

impl BlockCounts {
    pub fn new(n_layers: usize) -> Self {
        Self {
            attention: vec![0; n_layers],
            ffn: vec![0; n_layers],
            kv_writes: vec![0; n_layers],
            ffn_skip_runs: 0,
        }
    }

    pub fn add(&mut self, other: &BlockCounts) {
        let add = |a: &mut Vec<u64>, b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.attention, &other.attention);
        add(&mut self.ffn, &other.ffn);
        add(&mut self.kv_writes, &other.kv_writes);
        self.ffn_skip_runs += other.ffn_skip_runs;
    }
}

pub struct Llama {
    pub config: Config,
    weights: Weights,
    rope: Rope,
}

impl Llama {
    pub fn load(gguf: &GgufFile) -> Result<Self> {
        let config = Config::from_gguf(gguf)?;
        let weights = Weights::load(gguf, &config)?;
        let rope = Rope::new(&config, weights.rope_freqs.as_deref());
        Ok(Self { config, weights, rope })
    }

    pub fn layer(&self, l: usize) -> &LayerWeights {
        &self.weights.layers[l]
    }

    /// Bytes of all weight matrices one dense decode step reads.
    pub fn dense_step_bytes(&self) -> usize {
        let layers: usize =
            self.weights.layers.iter().map(|l| l.ffn_bytes() + l.attention_bytes()).sum();
        layers + self.weights.output.weight_bytes()
    }

    pub fn new_cache(&self, capacity: usize) -> KvCache {
        self.new_cache_with(capacity, KvPrecision::default())
    }

    pub fn new_cache_with(&self, capacity: usize, precision: KvPrecision) -> KvCache {
        KvCache::new(self.config.n_layers, self.config.kv_dim(), capacity, precision)
    }

    /// Runs one step and returns logits, `[vocab]` or `[rows, vocab]` with `all_logits`.
    pub fn forward(
        &self,
        step: Step,
        cache: &mut KvCache,
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let rows = step.tokens.len();
        if rows == 0 {
            return Err(Error::InvalidArgument("a forward step needs at least one token".into()));
        }
        if step.pos + rows > cache.capacity() {
            return Err(Error::ContextOverflow { tokens: step.pos + rows, context: cache.capacity() });
        }
        if let Some(&bad) = step.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary")));
        }
        policy.begin_step(step.phase);
        let mut x = self.embed(step.tokens)?;
        let mut previous_ffn_ran = true;
        for l in 0..cfg.n_layers {
            let plan = policy.plan(l);
            let ffn_runs = plan == LayerPlan::Full;
            if !ffn_runs && previous_ffn_ran {
                counts.ffn_skip_runs += rows as u64;
            }
            previous_ffn_ran = ffn_runs;
            match plan {
                LayerPlan::Drop => {}
                LayerPlan::SkipLayerCopyKv => {
                    self.write_kv(l, &x, step.pos, cache)?;
                    counts.kv_writes[l] += rows as u64;
                }
                plan @ (LayerPlan::Full | LayerPlan::SkipFfn) => {
                    let wants = policy.wants_saturation(l);
                    let last = (rows - 1) * cfg.dim;
                    let layer_input = if wants { x[last..].to_vec() } else { Vec::new() };
                    // h_mid = x + Attn(RMSNorm_att(x))
                    self.attention(l, &mut x, step.pos, cache)?;
                    counts.attention[l] += rows as u64;
                    counts.kv_writes[l] += rows as u64;
                    if plan == LayerPlan::Full {
                        // h_out = h_mid + FFN(RMSNorm_ffn(h_mid))
                        let delta = self.ffn(l, &x, rows)?;
                        let h_mid = wants.then(|| x[last..].to_vec());
                        add_assign(&mut x, &delta);
                        counts.ffn[l] += rows as u64;
                        if let Some(h_mid) = h_mid {
                            policy.observe(l, saturation(&layer_input, &h_mid, &x[last..]));
                        }
                    }
                }
            }
        }
        let x = if step.all_logits { x } else { x[(rows - 1) * cfg.dim..].to_vec() };
        let x = rms_norm(&x, &self.weights.output_norm, cfg.rms_eps);
        self.weights.output.forward(&x, x.len() / cfg.dim)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let ids = Tensor::from_slice(tokens, tokens.len(), &Device::Cpu)?;
        Ok(self.weights.token_embd.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Projects K and V of rows `x` (already at layer `l`'s input), applies RoPE to K and stores
    /// both; returns the normalised input for the query projection.
    fn write_kv(&self, l: usize, x: &[f32], pos: usize, cache: &mut KvCache) -> Result<Vec<f32>> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let rows = x.len() / cfg.dim;
        let xn = rms_norm(x, &w.attn_norm, cfg.rms_eps);
        let mut k = w.attn_k.forward(&xn, rows)?;
        let v = w.attn_v.forward(&xn, rows)?;
        for (s, k_row) in k.chunks_exact_mut(cfg.kv_dim()).enumerate() {
            self.rope.apply(k_row, cfg.head_dim, pos + s);
        }
        cache.write(l, pos, &k, &v);
        Ok(xn)
    }

    /// `x += Attn_l(RMSNorm_att(x))`.
    fn attention(&self, l: usize, x: &mut [f32], pos: usize, cache: &mut KvCache) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let rows = x.len() / cfg.dim;
        let xn = self.write_kv(l, x, pos, cache)?;
        let mut q = w.attn_q.forward(&xn, rows)?;
        for (s, q_row) in q.chunks_exact_mut(cfg.q_dim()).enumerate() {
            self.rope.apply(q_row, cfg.head_dim, pos + s);
        }
        let end = (pos + rows) * cfg.kv_dim();
        let heads = match cache.store() {
            KvStore::F16(b) => {
                let (keys, values) = b.get(l, end);
                attend(cfg, &q, keys, values, pos)
            }
            KvStore::F32(b) => {
                let (keys, values) = b.get(l, end);
                attend(cfg, &q, keys, values, pos)
            }
        };
        let out = w.attn_output.forward(&heads, rows)?;
        add_assign(x, &out);
        Ok(())
    }

    /// `FFN_l(RMSNorm_ffn(h_mid))`, the SwiGLU block; the caller adds it to the residual.
    fn ffn(&self, l: usize, h_mid: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let u = rms_norm(h_mid, &w.ffn_norm, cfg.rms_eps);
        let mut gate = w.ffn_gate.forward(&u, rows)?;
        let up = w.ffn_up.forward(&u, rows)?;
        silu_mul(&mut gate, &up);
        w.ffn_down.forward(&gate, rows)
    }
}

/// The saturation signals of one row from the layer input `x`, `h_mid` and `h_out`.
pub fn saturation(x: &[f32], h_mid: &[f32], h_out: &[f32]) -> Saturation {
    let delta_norm = h_mid.iter().zip(h_out).map(|(a, b)| (b - a) * (b - a)).sum::<f32>().sqrt();
    Saturation {
        cosine: cosine(h_mid, h_out),
        norm_ratio: delta_norm / norm(h_mid).max(f32::MIN_POSITIVE),
        layer_cosine: cosine(x, h_out),
    }
}

#[cfg(test)]
mod tests {
    use super::saturation;

    #[test]
    fn saturation_of_parallel_and_orthogonal_updates() {
        // FFN(u) parallel to h_mid: cosine 1, norm ratio 1.
        let s = saturation(&[0.0, 1.0], &[1.0, 0.0], &[2.0, 0.0]);
        assert!((s.cosine - 1.0).abs() < 1e-6);
        assert!((s.norm_ratio - 1.0).abs() < 1e-6);
        assert!(s.layer_cosine.abs() < 1e-6);
        // FFN(u) orthogonal to h_mid, same length: 45 degrees.
        let s = saturation(&[1.0, 0.0], &[1.0, 0.0], &[1.0, 1.0]);
        assert!((s.cosine - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
