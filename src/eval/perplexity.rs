//! Perplexity and divergence from dense over a text: windows of `window` tokens; the first
//! `prefill` tokens of a window are prefilled, every following token goes through the decode
//! path one at a time with the policy active (warm-up counted from the first decoded position),
//! and each next-token distribution is scored: PPL, mean KL(dense ‖ policy), top-1 agreement.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::eval::data::load_text;
use crate::eval::metrics::{kl_divergence, log_softmax};
use crate::eval::output::{read_items, ItemCommon, OutputDir};
use crate::eval::{item_common, progress, write_summary, DecodeRun, EvalConfig, Tally};
use crate::generate::{DecodeSpec, Session, WarmupSplit};
use crate::model::BlockCounts;
use crate::sampling::argmax;

#[derive(Debug, Serialize, Deserialize)]
pub struct WindowItem {
    #[serde(flatten)]
    pub common: ItemCommon,
    /// Scored predictions in the window.
    pub tokens: u64,
    /// Σ −log p(next token).
    pub nll: f64,
    /// Σ KL(dense ‖ policy).
    pub kl: f64,
    /// Predictions whose top-1 token equals dense's.
    pub top1_agree: u64,
}

pub struct PerplexityOptions {
    pub windows: usize,
    pub window: usize,
    pub prefill: usize,
}

pub fn run(cfg: &EvalConfig, data: &Path, opts: &PerplexityOptions) -> Result<Vec<Map<String, Value>>> {
    if opts.prefill == 0 || opts.prefill + 1 >= opts.window {
        return Err(Error::InvalidArgument("need 0 < prefill < window - 1".into()));
    }
    let tokens = cfg.engine.tokenizer.encode(&load_text(data)?)?;
    let windows: Vec<&[u32]> = tokens.chunks_exact(opts.window).take(opts.windows).collect();
    if windows.len() < opts.windows {
        return Err(Error::InvalidArgument(format!(
            "{} holds only {} windows of {} tokens",
            data.display(),
            windows.len(),
            opts.window
        )));
    }
    for spec in &cfg.policies {
        cfg.build_policy(spec)?;
    }
    let mut out = OutputDir::open(&cfg.out)?;
    cfg.write_meta("perplexity", data, json!({ "windows": opts.windows, "window": opts.window, "prefill": opts.prefill }))?;
    let bar = progress((cfg.policies.len() * windows.len()) as u64, "perplexity");
    for (w, window) in windows.iter().enumerate() {
        let id = w.to_string();
        let pending: Vec<&DecodeSpec> = cfg.policies.iter().filter(|p| !out.is_done(&p.to_string(), &id)).collect();
        bar.inc((cfg.policies.len() - pending.len()) as u64);
        if pending.is_empty() {
            continue;
        }
        // The dense distributions (log-probabilities and top-1) are the reference for every
        // policy of this window.
        let dense_spec = DecodeSpec::dense();
        let mut dense = Vec::new();
        decode_window(cfg, &dense_spec, window, opts.prefill, |_, logits| {
            dense.push((log_softmax(logits), argmax(logits)));
        })?;
        for spec in pending {
            let (mut nll, mut kl, mut agree) = (0.0, 0.0, 0);
            // Dense is run again like any policy: its KL to the reference pass being 0 checks
            // that decoding is deterministic, not merely that a number equals itself.
            let run = decode_window(cfg, spec, window, opts.prefill, |j, logits| {
                let (lp, dense_top) = &dense[j];
                let lq = log_softmax(logits);
                nll -= lq[window[opts.prefill + j] as usize];
                kl += kl_divergence(lp, &lq);
                agree += u64::from(argmax(logits) == *dense_top);
            })?;
            let record = WindowItem {
                common: item_common(spec, &id, &cfg.engine.model, &run),
                tokens: dense.len() as u64,
                nll,
                kl,
                top1_agree: agree,
            };
            out.append(&record)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    summarize(&cfg.out, &cfg.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

/// Prefills `window[..prefill]`, then decodes the rest one token at a time under `spec`, calling
/// `score(j, logits)` with the distribution that predicts `window[prefill + j]`.
fn decode_window(
    cfg: &EvalConfig,
    spec: &DecodeSpec,
    window: &[u32],
    prefill: usize,
    mut score: impl FnMut(usize, &[f32]),
) -> Result<DecodeRun> {
    let model = &cfg.engine.model;
    let n_layers = model.config.n_layers;
    let mut policy = cfg.build_policy(spec)?;
    let mut session = Session::new(model, Some(window.len()))?;
    let mut prefill_counts = BlockCounts::new(n_layers);
    let mut logits = Vec::new();
    session.prefill(&window[..prefill], policy.as_mut(), &mut prefill_counts, &mut logits)?;
    score(0, &logits);
    let mut counts = WarmupSplit::new(n_layers);
    let t0 = Instant::now();
    let mut steps = 0u64;
    for (j, &token) in window[prefill..window.len() - 1].iter().enumerate() {
        steps += 1;
        counts.decode(&mut session, token, policy.as_mut(), &mut logits)?;
        score(j + 1, &logits);
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(DecodeRun {
        steps,
        rows: steps,
        secs,
        counts: counts.all,
        post_warmup_steps: counts.post_warmup_steps as u64,
        post_warmup_counts: counts.post_warmup,
        speculation: None,
    })
}

pub fn summarize(dir: &Path, policies: &[String]) -> Result<Vec<Map<String, Value>>> {
    let items: Vec<WindowItem> = read_items(dir)?;
    let mut rows = Vec::new();
    for policy in policies {
        let mine: Vec<&WindowItem> = items.iter().filter(|i| &i.common.policy == policy).collect();
        let mut tally = Tally::default();
        mine.iter().for_each(|i| tally.add(&i.common));
        let n = mine.iter().map(|i| i.tokens).sum::<u64>().max(1) as f64;
        let mut row = tally.row(policy);
        row.insert("ppl".into(), json!((mine.iter().map(|i| i.nll).sum::<f64>() / n).exp()));
        row.insert("kl_vs_dense".into(), json!(mine.iter().map(|i| i.kl).sum::<f64>() / n));
        row.insert("top1_agreement".into(), json!(mine.iter().map(|i| i.top1_agree).sum::<u64>() as f64 / n));
        rows.push(row);
    }
    write_summary(dir, &rows)?;
    Ok(rows)
}
