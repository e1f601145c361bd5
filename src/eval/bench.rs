//! llama-bench-style speed: prefill of a prompt (pp) and greedy decode of a fixed number of
//! tokens (tg, end-of-sequence ignored), policies interleaved run by run so their ratios are
//! measured side by side on a noisy machine.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::eval::metrics::median;
use crate::eval::{DecodeRun, EvalConfig};
use crate::generate::{DecodeSpec, Decoder, Session, WarmupSplit};
use crate::model::BlockCounts;
use crate::sampling::{argmax, Sampler, SamplingParams};
use crate::skip::{Dense, SkipPolicy};
use crate::speculate::{SpecStats, MAX_DRAFT};

/// One timed run of one policy.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSample {
    pub pp_tok_s: f64,
    pub tg_tok_s: f64,
    pub ffn_skip_ratio: f64,
    pub ffn_skip_ratio_post_warmup: f64,
    pub speculation: Option<SpecStats>,
}

/// Medians and ranges over the runs of one policy.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub policy: String,
    pub runs: usize,
    pub pp_tokens: usize,
    pub tg_tokens: usize,
    pub pp_tok_s: f64,
    pub pp_min: f64,
    pub pp_max: f64,
    pub tg_tok_s: f64,
    pub tg_min: f64,
    pub tg_max: f64,
    /// Median decode speed over the first policy's (dense's) median.
    pub tg_vs_first: f64,
    pub ffn_skip_ratio: f64,
    pub ffn_skip_ratio_post_warmup: f64,
    /// Acceptance, tokens per verification and time split, from the median run.
    pub speculation: Option<SpecStats>,
}

/// Prefills `prompt` and decodes `tg` tokens greedily under `spec` (speculation may feed a few
/// more: its last cycle's accepted tokens; the rate counts them all).
pub fn bench_once(cfg: &EvalConfig, spec: &DecodeSpec, prompt: &[u32], tg: usize) -> Result<BenchSample> {
    let model = &cfg.engine.model;
    let n_layers = model.config.n_layers;
    let mut decoder = cfg.build_decoder(spec)?;
    let mut session = Session::new(model, Some(prompt.len() + tg + MAX_DRAFT + 1))?;
    let t0 = Instant::now();
    let mut logits = Vec::new();
    let prefill_policy: &mut dyn SkipPolicy = match &mut decoder {
        Decoder::Stepwise(policy) => policy.as_mut(),
        Decoder::Speculative(_) => &mut Dense,
    };
    session.prefill(prompt, prefill_policy, &mut BlockCounts::new(n_layers), &mut logits)?;
    let pp_secs = t0.elapsed().as_secs_f64();
    let mut counts = WarmupSplit::new(n_layers);
    let t1 = Instant::now();
    let (steps, rows, speculation) = match &mut decoder {
        Decoder::Stepwise(policy) => {
            for _ in 0..tg {
                counts.decode(&mut session, argmax(&logits), policy.as_mut(), &mut logits)?;
            }
            (tg, tg, None)
        }
        Decoder::Speculative(speculator) => {
            let mut sampler = Sampler::new(SamplingParams::default());
            let (mut next, mut steps) = (argmax(&logits), 0);
            while steps < tg {
                let tokens = speculator.cycle(&mut session, &mut sampler, next, &mut counts.all)?;
                steps += tokens.len();
                next = *tokens.last().expect("a cycle emits at least one token");
            }
            let stats = speculator.stats();
            (steps, stats.verified_rows, Some(stats))
        }
    };
    let tg_secs = t1.elapsed().as_secs_f64();
    let run = DecodeRun {
        steps: steps as u64,
        rows: rows as u64,
        secs: Some(tg_secs),
        counts: counts.all,
        post_warmup_steps: counts.post_warmup_steps as u64,
        post_warmup_counts: counts.post_warmup,
        speculation: None,
    };
    let common = crate::eval::item_common(spec, "bench", model, &run);
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(BenchSample {
        pp_tok_s: prompt.len() as f64 / pp_secs,
        tg_tok_s: steps as f64 / tg_secs,
        ffn_skip_ratio: ratio(common.ffn_skipped, common.decode_steps * common.n_layers),
        ffn_skip_ratio_post_warmup: ratio(common.ffn_skipped_post_warmup, common.post_warmup_steps * common.n_layers),
        speculation,
    })
}

/// `runs` rounds, each running every policy once, in order, after one untimed warm-up run (as
/// llama-bench does): the first run of a process pays for faulting in the mapped weights.
pub fn bench(cfg: &EvalConfig, prompt: &[u32], tg: usize, runs: usize) -> Result<Vec<BenchRow>> {
    if let Some(first) = cfg.policies.first() {
        bench_once(cfg, first, prompt, tg.min(4))?;
    }
    let mut samples: Vec<Vec<BenchSample>> = vec![Vec::new(); cfg.policies.len()];
    for _ in 0..runs {
        for (spec, out) in cfg.policies.iter().zip(samples.iter_mut()) {
            out.push(bench_once(cfg, spec, prompt, tg)?);
        }
    }
    let mut rows: Vec<BenchRow> = Vec::new();
    for (spec, s) in cfg.policies.iter().zip(&samples) {
        let pp: Vec<f64> = s.iter().map(|x| x.pp_tok_s).collect();
        let tg_rates: Vec<f64> = s.iter().map(|x| x.tg_tok_s).collect();
        let fold = |v: &[f64], f: fn(f64, f64) -> f64, init: f64| v.iter().copied().fold(init, f);
        let tg_med = median(&tg_rates);
        let median_run = s.iter().min_by(|a, b| (a.tg_tok_s - tg_med).abs().total_cmp(&(b.tg_tok_s - tg_med).abs()));
        let first = rows.first().map_or(tg_med, |r| r.tg_tok_s);
        rows.push(BenchRow {
            policy: spec.to_string(),
            runs,
            pp_tokens: prompt.len(),
            tg_tokens: tg,
            pp_tok_s: median(&pp),
            pp_min: fold(&pp, f64::min, f64::INFINITY),
            pp_max: fold(&pp, f64::max, 0.0),
            tg_tok_s: tg_med,
            tg_min: fold(&tg_rates, f64::min, f64::INFINITY),
            tg_max: fold(&tg_rates, f64::max, 0.0),
            tg_vs_first: tg_med / first,
            ffn_skip_ratio: median(&s.iter().map(|x| x.ffn_skip_ratio).collect::<Vec<_>>()),
            ffn_skip_ratio_post_warmup: median(&s.iter().map(|x| x.ffn_skip_ratio_post_warmup).collect::<Vec<_>>()),
            speculation: median_run.and_then(|r| r.speculation.clone()),
        });
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| policy | pp tok/s median (min–max) | tg tok/s median (min–max) | tg vs first | FFN skip (all / post-warm-up) | draft acceptance, tokens per verification |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let speculation = r.speculation.as_ref().map_or("–".to_string(), |s| {
            format!("{:.3}, {:.2} ({} drafted, {} plain steps)", s.acceptance_rate, s.tokens_per_verification, s.drafted, s.plain_steps)
        });
        out.push_str(&format!(
            "| {} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:.3}× | {:.3} / {:.3} | {speculation} |\n",
            r.policy, r.pp_tok_s, r.pp_min, r.pp_max, r.tg_tok_s, r.tg_min, r.tg_max, r.tg_vs_first,
            r.ffn_skip_ratio, r.ffn_skip_ratio_post_warmup
        ));
    }
    out
}
