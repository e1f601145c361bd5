//! The llama forward pass. One decoder layer `l`, for each row `x` of the residual stream:
//!
//! ```text
//! h_mid = x + Attn_l(RMSNorm_att(x))          attention always writes K/V
//! h_out = h_mid + FFN_l(RMSNorm_ffn(h_mid))    FFN(u) = down(silu(gate(u)) * up(u))
//! ```
//!
//! The skip policy decides, layer by layer, whether the FFN (or the whole layer) runs.

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::kernels::Rounding;
use crate::model::attention::{attend, Queries, Rope};
use crate::model::config::Config;
use crate::model::gguf::GgufFile;
use crate::model::kv_cache::{KvCache, KvPrecision, KvStore};
use crate::model::linear::Linear;
use crate::model::ops::{add_assign, add_bias, cosine, norm, rms_norm, silu_mul};
use crate::model::weights::{LayerWeights, Weights};
use crate::model::workspace::Workspace;
use crate::skip::{LayerPlan, Phase, Saturation, SkipPolicy};

/// One forward step: `tokens` at positions `pos..pos + tokens.len()`.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub phase: Phase,
    /// Return the logits of every row (perplexity, tests) instead of only the last.
    pub all_logits: bool,
    /// Whether the rows round as the peer engine's batch or each as its own decode step
    /// (speculative verification: the same bits as decoding the rows one by one).
    pub rounding: Rounding,
}

impl<'a> Step<'a> {
    /// A prompt chunk at `pos`: only the last row's logits, rounded as a batch.
    pub fn prefill(tokens: &'a [u32], pos: usize) -> Self {
        Step { tokens, pos, phase: Phase::Prefill, all_logits: false, rounding: Rounding::Batch }
    }

    /// One generated token at `pos`.
    pub fn decode(token: &'a u32, pos: usize) -> Self {
        Step { tokens: std::slice::from_ref(token), pos, phase: Phase::Decode, all_logits: false, rounding: Rounding::Batch }
    }

    /// Tokens at `pos..` computed row for row as decode steps would compute them, with the
    /// logits of every row: checking a speculative draft in one forward.
    pub fn verify(tokens: &'a [u32], pos: usize) -> Self {
        Step { tokens, pos, phase: Phase::Decode, all_logits: true, rounding: Rounding::PerRow }
    }
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

    pub fn clear(&mut self) {
        for counts in [&mut self.attention, &mut self.ffn, &mut self.kv_writes] {
            counts.fill(0);
        }
        self.ffn_skip_runs = 0;
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
        let mut logits = Vec::new();
        self.forward_into(step, cache, policy, counts, &mut logits)?;
        Ok(logits)
    }

    /// [`Llama::forward`] into `logits`, reusing its memory.
    pub fn forward_into(
        &self,
        step: Step,
        cache: &mut KvCache,
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
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
        with_workspace(|ws| {
            ws.prepare(cfg, rows);
            self.rope.angles(step.pos, rows, &mut ws.rope);
            for (x, &token) in ws.x.chunks_exact_mut(cfg.dim).zip(step.tokens) {
                self.weights.token_embd.row(token, x);
            }
            let mut last = (rows - 1) * cfg.dim;
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
                        self.write_kv(l, ws, step, cache, false)?;
                        counts.kv_writes[l] += rows as u64;
                    }
                    plan @ (LayerPlan::Full | LayerPlan::SkipFfn) => {
                        let wants = policy.wants_saturation(l);
                        if wants {
                            copy_into(&mut ws.layer_input, &ws.x[last..]);
                        }
                        // h_mid = x + Attn(RMSNorm_att(x))
                        self.attention(l, ws, step, cache)?;
                        add_assign(&mut ws.x, &ws.delta);
                        counts.attention[l] += rows as u64;
                        counts.kv_writes[l] += rows as u64;
                        if l == cfg.n_layers - 1 && !step.all_logits {
                            // Only the last row's logits are wanted, so only that row goes on
                            // past the last attention, as in llama.cpp: the rows dropped here
                            // are not skipped (they are counted), only unused, and a product's
                            // rounding depends on its row count (`kernels::blocks_k`).
                            ws.x.drain(..last);
                            last = 0;
                        }
                        if plan == LayerPlan::Full {
                            // h_out = h_mid + FFN(RMSNorm_ffn(h_mid))
                            self.ffn(l, ws, step.rounding)?;
                            if wants {
                                copy_into(&mut ws.h_mid, &ws.x[last..]);
                            }
                            add_assign(&mut ws.x, &ws.delta);
                            counts.ffn[l] += rows as u64;
                            if wants {
                                policy.observe(l, saturation(&ws.layer_input, &ws.h_mid, &ws.x[last..]));
                            }
                        }
                    }
                }
            }
            let out_rows = if step.all_logits { rows } else { 1 };
            let x = &ws.x[ws.x.len() - out_rows * cfg.dim..];
            let xn = &mut ws.xn[..out_rows * cfg.dim];
            rms_norm(x, &self.weights.output_norm, cfg.rms_eps, xn);
            logits.resize(out_rows * cfg.vocab_size, 0.0);
            self.weights.output.forward_into(xn, out_rows, step.rounding, logits)
        })
    }

    /// Normalises the residual into `ws.xn`, projects K and V (and Q into `ws.q` if
    /// `with_q`), adds the projections' biases if the architecture has them, applies RoPE and
    /// stores K and V at `pos..`.
    fn write_kv(&self, l: usize, ws: &mut Workspace, step: Step, cache: &mut KvCache, with_q: bool) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let rows = ws.x.len() / cfg.dim;
        rms_norm(&ws.x, &w.attn_norm, cfg.rms_eps, &mut ws.xn);
        if with_q {
            let outs = &mut [&mut ws.q[..], &mut ws.k[..], &mut ws.v[..]];
            Linear::forward_shared(&[&w.attn_q, &w.attn_k, &w.attn_v], &ws.xn, rows, step.rounding, outs)?;
        } else {
            let outs = &mut [&mut ws.k[..], &mut ws.v[..]];
            Linear::forward_shared(&[&w.attn_k, &w.attn_v], &ws.xn, rows, step.rounding, outs)?;
        }
        if let Some(b) = &w.qkv_bias {
            if with_q {
                add_bias(&mut ws.q, &b.q);
            }
            add_bias(&mut ws.k, &b.k);
            add_bias(&mut ws.v, &b.v);
        }
        if with_q {
            self.rope.apply(&mut ws.q, cfg.q_dim(), cfg.head_dim, &ws.rope);
        }
        self.rope.apply(&mut ws.k, cfg.kv_dim(), cfg.head_dim, &ws.rope);
        cache.write(l, step.pos, &ws.k, &ws.v);
        Ok(())
    }

    /// `ws.delta = Attn_l(RMSNorm_att(x))`; the caller adds it to the residual.
    fn attention(&self, l: usize, ws: &mut Workspace, step: Step, cache: &mut KvCache) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        self.write_kv(l, ws, step, cache, true)?;
        let rows = ws.x.len() / cfg.dim;
        let end = (step.pos + rows) * cfg.kv_dim();
        let queries = Queries { q: &ws.q, pos0: step.pos, rounding: step.rounding };
        match cache.store() {
            KvStore::F16(b) => {
                let (keys, values) = b.get(l, end);
                attend(cfg, queries, keys, values, cache.capacity(), &mut ws.heads);
            }
            KvStore::F32(b) => {
                let (keys, values) = b.get(l, end);
                attend(cfg, queries, keys, values, cache.capacity(), &mut ws.heads);
            }
        }
        w.attn_output.forward_into(&ws.heads, rows, step.rounding, &mut ws.delta)
    }

    /// `ws.delta = FFN_l(RMSNorm_ffn(h_mid))` for the rows of `ws.x`, the SwiGLU block; the
    /// caller adds it to the residual.
    fn ffn(&self, l: usize, ws: &mut Workspace, rounding: Rounding) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let rows = ws.x.len() / cfg.dim;
        let (xn, delta) = (&mut ws.xn[..rows * cfg.dim], &mut ws.delta[..rows * cfg.dim]);
        let (gate, hidden) = (&mut ws.gate[..rows * cfg.ffn_dim], &mut ws.hidden[..rows * cfg.ffn_dim]);
        rms_norm(&ws.x, &w.ffn_norm, cfg.rms_eps, xn);
        Linear::forward_gated(&w.ffn_gate, &w.ffn_up, xn, rows, rounding, gate, hidden, &silu_mul)?;
        w.ffn_down.forward_into(hidden, rows, rounding, delta)
    }
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's workspace.
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|ws| f(&mut ws.borrow_mut()))
}

fn copy_into(dst: &mut Vec<f32>, src: &[f32]) {
    dst.clear();
    dst.extend_from_slice(src);
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
