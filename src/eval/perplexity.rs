//! Perplexity and divergence from dense over a text: windows of `window` tokens; the first
//! `prefill` tokens of a window are prefilled, every following token goes through the decode
//! path one at a time with the policy active (warm-up counted from the first decoded position),
//! and each next-token distribution is scored: PPL, mean KL(dense ‖ policy), top-1 agreement.
//!
//! With [`EvalConfig::side_by_side`] the policies of a window decode together, one row each in
//! every forward step; otherwise each decodes alone, timed.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::eval::data::load_text;
use crate::eval::metrics::{kl_divergence, log_softmax};
use crate::eval::output::{read_items, ItemCommon, OutputDir};
use crate::eval::{item_common, progress, write_summary, DecodeRun, EvalConfig, Tally};
use crate::generate::{DecodeSpec, Feed, Session, WarmupSplit};
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

/// A window's scored predictions under one policy, summed.
#[derive(Debug, Default)]
struct Score {
    nll: f64,
    kl: f64,
    top1_agree: u64,
}

/// Dense's next-token distribution at one position: the reference for every policy.
struct Reference {
    log_p: Vec<f64>,
    top1: u32,
}

impl Reference {
    fn of(logits: &[f32]) -> Self {
        Self { log_p: log_softmax(logits), top1: argmax(logits) }
    }
}

impl Score {
    fn add(&mut self, reference: &Reference, logits: &[f32], next: u32) {
        let log_q = log_softmax(logits);
        self.nll -= log_q[next as usize];
        self.kl += kl_divergence(&reference.log_p, &log_q);
        self.top1_agree += u64::from(argmax(logits) == reference.top1);
    }
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
    let extra = json!({ "windows": opts.windows, "window": opts.window, "prefill": opts.prefill });
    cfg.write_meta("perplexity", data, extra)?;
    let bar = progress((cfg.policies.len() * windows.len()) as u64, "perplexity");
    for (w, window) in windows.iter().enumerate() {
        let id = w.to_string();
        let pending = out.pending(&cfg.policies, &id);
        bar.inc((cfg.policies.len() - pending.len()) as u64);
        if pending.is_empty() {
            continue;
        }
        let mut record = |spec: &DecodeSpec, score: Score, run: DecodeRun| {
            let item = WindowItem {
                common: item_common(spec, &id, &cfg.engine.model, &run),
                tokens: run.steps + 1,
                nll: score.nll,
                kl: score.kl,
                top1_agree: score.top1_agree,
            };
            bar.inc(1);
            out.append(&item)
        };
        if cfg.side_by_side {
            score_together(cfg, &pending, window, opts.prefill, &mut record)?;
        } else {
            score_alone(cfg, &pending, window, opts.prefill, &mut record)?;
        }
    }
    bar.finish_and_clear();
    summarize(&cfg.out, &cfg.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

/// A reference pass of dense first, kept whole; then each policy decodes alone, timed.
fn score_alone(
    cfg: &EvalConfig,
    specs: &[&DecodeSpec],
    window: &[u32],
    prefill: usize,
    record: &mut impl FnMut(&DecodeSpec, Score, DecodeRun) -> Result<()>,
) -> Result<()> {
    let mut reference = Vec::new();
    decode_together(cfg, &[&DecodeSpec::dense()], window, prefill, |_, _, logits| reference.push(Reference::of(logits)))?;
    for &spec in specs {
        let mut score = Score::default();
        // Dense is decoded again like any policy: its KL to the reference pass being 0 checks
        // that decoding is deterministic, not merely that a number equals itself.
        let mut runs = decode_together(cfg, &[spec], window, prefill, |_, j, logits| {
            score.add(&reference[j], logits, window[prefill + j]);
        })?;
        record(spec, score, runs.remove(0))?;
    }
    Ok(())
}

/// Dense's reference row and one row per policy in every forward step. The reference row is
/// a separate sequence from the dense policy's, so dense's KL of 0 still checks determinism.
fn score_together(
    cfg: &EvalConfig,
    specs: &[&DecodeSpec],
    window: &[u32],
    prefill: usize,
    record: &mut impl FnMut(&DecodeSpec, Score, DecodeRun) -> Result<()>,
) -> Result<()> {
    let dense = DecodeSpec::dense();
    let rows: Vec<&DecodeSpec> = std::iter::once(&dense).chain(specs.iter().copied()).collect();
    let mut scores: Vec<Score> = specs.iter().map(|_| Score::default()).collect();
    let mut reference = None;
    // Rows come in order at each position, the reference (row 0) first.
    let runs = decode_together(cfg, &rows, window, prefill, |row, j, logits| match row {
        0 => reference = Some(Reference::of(logits)),
        _ => scores[row - 1].add(reference.as_ref().expect("row 0 comes first"), logits, window[prefill + j]),
    })?;
    for ((spec, score), run) in specs.iter().zip(scores).zip(runs.into_iter().skip(1)) {
        record(spec, score, run)?;
    }
    Ok(())
}

/// Prefills `window[..prefill]` for each of `specs`, then decodes the rest one token at a time,
/// every spec's row in one forward step, calling `score(row, j, logits)` in row order with the
/// distribution that predicts `window[prefill + j]`. A run is timed only when it had the steps
/// to itself (one spec).
fn decode_together(
    cfg: &EvalConfig,
    specs: &[&DecodeSpec],
    window: &[u32],
    prefill: usize,
    mut score: impl FnMut(usize, usize, &[f32]),
) -> Result<Vec<DecodeRun>> {
    let model = &cfg.engine.model;
    let (n_layers, vocab) = (model.config.n_layers, model.config.vocab_size);
    let mut policies = specs.iter().map(|spec| cfg.build_policy(spec)).collect::<Result<Vec<_>>>()?;
    let mut sessions = specs.iter().map(|_| Session::new(model, Some(window.len()))).collect::<Result<Vec<_>>>()?;
    let mut logits = Vec::new();
    for (row, (session, policy)) in sessions.iter_mut().zip(&mut policies).enumerate() {
        session.prefill(&window[..prefill], policy.as_mut(), &mut BlockCounts::new(n_layers), &mut logits)?;
        score(row, 0, &logits);
    }
    let mut counts: Vec<WarmupSplit> = specs.iter().map(|_| WarmupSplit::new(n_layers)).collect();
    let t0 = Instant::now();
    let steps = window.len() - 1 - prefill;
    for j in 0..steps {
        let token = &window[prefill + j..][..1];
        let mut feeds: Vec<Feed> = sessions
            .iter_mut()
            .zip(&mut policies)
            .zip(&mut counts)
            .map(|((session, policy), split)| Feed { session, tokens: token, policy: policy.as_mut(), counts: split.begin_step() })
            .collect();
        Session::feed_batch(model, &mut feeds, &mut logits)?;
        for (row, (split, policy)) in counts.iter_mut().zip(&policies).enumerate() {
            split.file_step(policy.as_ref());
            score(row, j + 1, &logits[row * vocab..][..vocab]);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(counts
        .into_iter()
        .map(|split| DecodeRun {
            steps: steps as u64,
            rows: steps as u64,
            secs: (specs.len() == 1).then_some(secs),
            counts: split.all,
            post_warmup_steps: split.post_warmup_steps as u64,
            post_warmup_counts: split.post_warmup,
            speculation: None,
        })
        .collect())
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
