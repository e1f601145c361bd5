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
use crate::model::attention::{self, attend, Queries, Rope};
use crate::model::batch::{keep_output_rows, Group, SeqRows, SeqStep};
use crate::model::config::Config;
use crate::model::gguf::GgufFile;
use crate::model::kv_cache::{KvCache, KvPrecision, KvStore};
use crate::model::linear::Linear;
use crate::model::ops::{add_bias, cosine, norm, rms_norm, silu_mul};
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

    /// Whether every weight product runs on our own kernels (see [`Linear::has_own_kernel`]).
    pub fn all_own_kernels(&self) -> bool {
        let layers = self.weights.layers.iter().flat_map(|l| l.linears());
        layers.chain([&self.weights.output]).all(Linear::has_own_kernel)
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
        attention::reserve_scratch(&self.config, capacity);
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

    /// [`Llama::forward`] into `logits`, reusing its memory: the one-sequence case of
    /// [`Llama::forward_batch`].
    pub fn forward_into(
        &self,
        step: Step,
        cache: &mut KvCache,
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.forward_batch(&mut [SeqStep { step, cache, policy, counts }], logits)
    }

    /// One forward step over the rows of several sequences, each at its own positions, with
    /// its own cache and skip policy, and its block counts. Every weight product runs once over
    /// the rows of all the sequences whose plans run it; attention runs per sequence over its
    /// own cache. The logits are each sequence's (`[vocab]`, or `[rows, vocab]` with
    /// `all_logits`), in order.
    ///
    /// A sequence shares the step only with rows that round each as its own decode step
    /// ([`Rounding::PerRow`], or one row): its bits are then those of its step run alone.
    pub fn forward_batch(&self, seqs: &mut [SeqStep], logits: &mut Vec<f32>) -> Result<()> {
        self.check(seqs)?;
        let rounding = match seqs {
            [only] => only.step.rounding,
            _ => Rounding::PerRow,
        };
        with_workspace(|ws| {
            let (mut rows, mut group) = (std::mem::take(&mut ws.seqs), std::mem::take(&mut ws.group));
            let result = self.run(seqs, ws, &mut rows, &mut group, rounding, logits);
            (ws.seqs, ws.group) = (rows, group);
            result
        })
    }

    fn check(&self, seqs: &[SeqStep]) -> Result<()> {
        if seqs.is_empty() {
            return Err(Error::InvalidArgument("a forward step needs at least one sequence".into()));
        }
        for SeqStep { step, cache, .. } in seqs {
            let rows = step.tokens.len();
            if rows == 0 {
                return Err(Error::InvalidArgument("a forward step needs at least one token".into()));
            }
            if step.pos + rows > cache.capacity() {
                return Err(Error::ContextOverflow { tokens: step.pos + rows, context: cache.capacity() });
            }
            if let Some(&bad) = step.tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary")));
            }
            if seqs.len() > 1 && rows > 1 && step.rounding != Rounding::PerRow {
                return Err(Error::InvalidArgument(
                    "a step shared by several sequences must round its rows as decode steps".into(),
                ));
            }
        }
        Ok(())
    }

    fn run(
        &self,
        seqs: &mut [SeqStep],
        ws: &mut Workspace,
        rows: &mut Vec<SeqRows>,
        group: &mut Group,
        rounding: Rounding,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let (cfg, dim) = (&self.config, self.config.dim);
        let total = seqs.iter().map(|s| s.step.tokens.len()).sum();
        ws.prepare(cfg, total, seqs.len());
        ws.rope.clear();
        rows.clear();
        for s in seqs.iter_mut() {
            let (start, len) = (rows.last().map_or(0, |r: &SeqRows| r.start + r.len), s.step.tokens.len());
            self.rope.angles(s.step.pos, len, &mut ws.rope);
            for (x, &token) in ws.x[start * dim..(start + len) * dim].chunks_exact_mut(dim).zip(s.step.tokens) {
                self.weights.token_embd.row(token, x);
            }
            s.policy.begin_step(s.step.phase);
            let plan = LayerPlan::Full;
            rows.push(SeqRows { start, len, angle_start: start, step_rows: len, plan, previous_ffn_ran: true, wants: false });
        }
        for l in 0..cfg.n_layers {
            for (i, (s, r)) in seqs.iter_mut().zip(rows.iter_mut()).enumerate() {
                r.plan = s.policy.plan(l);
                let ffn_runs = r.plan == LayerPlan::Full;
                if !ffn_runs && r.previous_ffn_ran {
                    s.counts.ffn_skip_runs += r.step_rows as u64;
                }
                r.previous_ffn_ran = ffn_runs;
                r.wants = ffn_runs && s.policy.wants_saturation(l);
                if r.wants {
                    ws.layer_input[i * dim..][..dim].copy_from_slice(&ws.x[r.last() * dim..][..dim]);
                }
                let n = r.step_rows as u64;
                match r.plan {
                    LayerPlan::Drop => {}
                    LayerPlan::SkipLayerCopyKv => s.counts.kv_writes[l] += n,
                    LayerPlan::Full | LayerPlan::SkipFfn => {
                        s.counts.attention[l] += n;
                        s.counts.kv_writes[l] += n;
                    }
                }
            }
            group.select(rows, |plan| plan == LayerPlan::SkipLayerCopyKv);
            if !group.is_empty() {
                self.write_kv(l, ws, seqs, rows, group, rounding, false)?;
            }
            group.select(rows, |plan| matches!(plan, LayerPlan::Full | LayerPlan::SkipFfn));
            if !group.is_empty() {
                // h_mid = x + Attn(RMSNorm_att(x))
                self.attention(l, ws, seqs, rows, group, rounding)?;
                group.add_back(rows, &mut ws.x, &ws.delta, dim);
            }
            if l == cfg.n_layers - 1 {
                // Past the last attention only the rows whose logits are wanted go on, as in
                // llama.cpp: a product's rounding depends on its row count (`kernels::blocks_k`).
                keep_output_rows(&mut ws.x, rows, |i| seqs[i].step.all_logits, dim);
            }
            group.select(rows, |plan| plan == LayerPlan::Full);
            if !group.is_empty() {
                // h_out = h_mid + FFN(RMSNorm_ffn(h_mid))
                self.ffn(l, ws, rows, group, rounding)?;
                for &i in group.members.iter().filter(|&&i| rows[i].wants) {
                    ws.h_mid[i * dim..][..dim].copy_from_slice(&ws.x[rows[i].last() * dim..][..dim]);
                }
                group.add_back(rows, &mut ws.x, &ws.delta, dim);
                for &i in &group.members {
                    let (s, r) = (&mut seqs[i], &rows[i]);
                    s.counts.ffn[l] += r.step_rows as u64;
                    if r.wants {
                        let (input, h_mid) = (&ws.layer_input[i * dim..][..dim], &ws.h_mid[i * dim..][..dim]);
                        s.policy.observe(l, saturation(input, h_mid, &ws.x[r.last() * dim..][..dim]));
                    }
                }
            }
        }
        let out_rows = ws.x.len() / dim;
        let xn = &mut ws.xn[..out_rows * dim];
        rms_norm(&ws.x, &self.weights.output_norm, cfg.rms_eps, xn);
        logits.resize(out_rows * cfg.vocab_size, 0.0);
        self.weights.output.forward_into(xn, out_rows, rounding, logits)
    }

    /// For the rows of `group`: normalises the residual into `ws.xn`, projects K and V (and Q
    /// into `ws.q` if `with_q`), adds the projections' biases if the architecture has them,
    /// applies RoPE and stores each sequence's K and V in its cache at its positions.
    #[allow(clippy::too_many_arguments)]
    fn write_kv(
        &self,
        l: usize,
        ws: &mut Workspace,
        seqs: &mut [SeqStep],
        rows: &[SeqRows],
        group: &Group,
        rounding: Rounding,
        with_q: bool,
    ) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let (n, q_dim, kv_dim) = (group.rows, cfg.q_dim(), cfg.kv_dim());
        let xn = &mut ws.xn[..n * cfg.dim];
        rms_norm(group.input(rows, &ws.x, cfg.dim, &mut ws.gathered), &w.attn_norm, cfg.rms_eps, xn);
        let (q, k, v) = (&mut ws.q[..n * q_dim], &mut ws.k[..n * kv_dim], &mut ws.v[..n * kv_dim]);
        if with_q {
            Linear::forward_shared(&[&w.attn_q, &w.attn_k, &w.attn_v], xn, n, rounding, &mut [q, k, v])?;
        } else {
            Linear::forward_shared(&[&w.attn_k, &w.attn_v], xn, n, rounding, &mut [k, v])?;
        }
        let (q, k, v) = (&mut ws.q[..n * q_dim], &mut ws.k[..n * kv_dim], &mut ws.v[..n * kv_dim]);
        if let Some(b) = &w.qkv_bias {
            if with_q {
                add_bias(q, &b.q);
            }
            add_bias(k, &b.k);
            add_bias(v, &b.v);
        }
        let pairs = self.rope.pairs_per_row();
        for (i, g) in group.parts(rows) {
            let angles = &ws.rope[rows[i].angle_start * pairs..];
            if with_q {
                self.rope.apply(&mut q[g.start * q_dim..g.end * q_dim], q_dim, cfg.head_dim, angles);
            }
            let (k, v) = (&mut k[g.start * kv_dim..g.end * kv_dim], &v[g.start * kv_dim..g.end * kv_dim]);
            self.rope.apply(k, kv_dim, cfg.head_dim, angles);
            let s = &mut seqs[i];
            s.cache.write(l, s.step.pos, k, v);
        }
        Ok(())
    }

    /// `ws.delta = Attn_l(RMSNorm_att(x))` for the rows of `group`, gathered; each sequence's
    /// rows attend over its own cache. The caller adds it to the residual.
    fn attention(
        &self,
        l: usize,
        ws: &mut Workspace,
        seqs: &mut [SeqStep],
        rows: &[SeqRows],
        group: &Group,
        rounding: Rounding,
    ) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        self.write_kv(l, ws, seqs, rows, group, rounding, true)?;
        let (n, q_dim) = (group.rows, cfg.q_dim());
        for (i, g) in group.parts(rows) {
            let step = seqs[i].step;
            let end = (step.pos + g.len()) * cfg.kv_dim();
            let queries = Queries { q: &ws.q[g.start * q_dim..g.end * q_dim], pos0: step.pos, rounding: step.rounding };
            let heads = &mut ws.heads[g.start * q_dim..g.end * q_dim];
            let cache = &seqs[i].cache;
            match cache.store() {
                KvStore::F16(b) => {
                    let (keys, values) = b.get(l, end);
                    attend(cfg, queries, keys, values, cache.capacity(), heads);
                }
                KvStore::F32(b) => {
                    let (keys, values) = b.get(l, end);
                    attend(cfg, queries, keys, values, cache.capacity(), heads);
                }
            }
        }
        w.attn_output.forward_into(&ws.heads[..n * q_dim], n, rounding, &mut ws.delta[..n * cfg.dim])
    }

    /// `ws.delta = FFN_l(RMSNorm_ffn(h_mid))` for the rows of `group`, gathered: the SwiGLU
    /// block. The caller adds it to the residual.
    fn ffn(&self, l: usize, ws: &mut Workspace, rows: &[SeqRows], group: &Group, rounding: Rounding) -> Result<()> {
        let (cfg, w) = (&self.config, &self.weights.layers[l]);
        let n = group.rows;
        let (xn, delta) = (&mut ws.xn[..n * cfg.dim], &mut ws.delta[..n * cfg.dim]);
        let (gate, hidden) = (&mut ws.gate[..n * cfg.ffn_dim], &mut ws.hidden[..n * cfg.ffn_dim]);
        rms_norm(group.input(rows, &ws.x, cfg.dim, &mut ws.gathered), &w.ffn_norm, cfg.rms_eps, xn);
        Linear::forward_gated(&w.ffn_gate, &w.ffn_up, xn, n, rounding, gate, hidden, &silu_mul)?;
        w.ffn_down.forward_into(hidden, n, rounding, delta)
    }
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's workspace.
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|ws| f(&mut ws.borrow_mut()))
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
