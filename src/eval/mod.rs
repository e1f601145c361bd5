//! The evaluation harness (DESIGN §5): factoid QA, perplexity/divergence and chat, each run for a
//! list of policies with dense as the reference, written as items plus a summary.

pub mod bench;
pub mod chat;
pub mod data;
pub mod factoid;
pub mod metrics;
pub mod output;
pub mod perplexity;
pub mod plot;
pub mod report;

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::generate::{generate, GenerateOptions, Generation, Session};
use crate::model::{BlockCounts, Llama};
use crate::skip::{Calibration, PolicySpec, SkipPolicy};
use crate::Engine;
use output::ItemCommon;

/// What every task needs: the engine, the policies (dense first) and where results go.
pub struct EvalConfig<'e> {
    pub engine: &'e Engine,
    pub policies: Vec<PolicySpec>,
    pub calibration: Option<Calibration>,
    pub out: PathBuf,
    /// The command line, recorded in `meta.json`.
    pub command: String,
}

impl EvalConfig<'_> {
    pub fn build_policy(&self, spec: &PolicySpec) -> Result<Box<dyn SkipPolicy>> {
        spec.build(self.engine.model.config.n_layers, self.calibration.as_ref())
    }

    /// Greedy generation of `max_tokens` for a fresh sequence under `spec`.
    pub fn generate(&self, spec: &PolicySpec, prompt: &[u32], max_tokens: usize) -> Result<Generation> {
        let mut policy = self.build_policy(spec)?;
        let context = (prompt.len() + max_tokens + 1).min(self.engine.model.config.context_len);
        let mut session = Session::new(&self.engine.model, Some(context))?;
        let opts = GenerateOptions { max_tokens, warmup_steps: spec.warmup_steps(), ..Default::default() };
        generate(&mut session, &self.engine.tokenizer, prompt, &opts, policy.as_mut(), &mut |_| {})
    }

    /// The chat template applied to one user turn, tokenised.
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>> {
        let template = self.engine.chat_template.as_ref().ok_or_else(|| {
            crate::Error::ChatTemplate("this model has no chat template; chat tasks need one".into())
        })?;
        let text = template.render(&[crate::chat::Message::new("user", user)], true)?;
        self.engine.tokenizer.encode(&text)
    }

    pub fn write_meta(&self, task: &str, data: &std::path::Path, extra: Value) -> Result<()> {
        let mut meta = json!({
            "task": task,
            "data": data.display().to_string(),
            "command": self.command,
            "machine": machine(),
            "policies": self.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        });
        if let (Some(m), Value::Object(e)) = (meta.as_object_mut(), extra) {
            m.extend(e);
        }
        output::write_json(&self.out.join("meta.json"), &meta)
    }
}

/// Puts `dense` first (adding it when missing): the other policies are measured against it.
pub fn with_dense_first(mut policies: Vec<PolicySpec>) -> Vec<PolicySpec> {
    let dense: PolicySpec = "dense".parse().expect("dense parses");
    policies.retain(|p| *p != dense);
    policies.insert(0, dense);
    policies
}

/// The machine the numbers come from: CPU model and core count.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// Decode statistics of one generation (or one decoded window) for an item line.
pub fn item_common(policy: &PolicySpec, item: &str, model: &Llama, run: &DecodeRun) -> ItemCommon {
    let skipped = |c: &BlockCounts, steps: u64| c.ffn.iter().map(|&ran| steps - ran).sum::<u64>();
    ItemCommon {
        policy: policy.to_string(),
        item: item.to_string(),
        decode_steps: run.steps,
        decode_secs: run.secs,
        post_warmup_steps: run.post_warmup_steps,
        ffn_skipped: skipped(&run.counts, run.steps),
        ffn_skipped_post_warmup: skipped(&run.post_warmup_counts, run.post_warmup_steps),
        n_layers: model.config.n_layers as u64,
    }
}

/// The decode part of a run: steps, time, and blocks run (all steps and post-warm-up).
pub struct DecodeRun {
    pub steps: u64,
    pub secs: f64,
    pub counts: BlockCounts,
    pub post_warmup_steps: u64,
    pub post_warmup_counts: BlockCounts,
}

impl From<&Generation> for DecodeRun {
    fn from(g: &Generation) -> Self {
        Self {
            steps: g.decode_steps as u64,
            secs: g.decode_secs,
            counts: g.decode_counts.clone(),
            post_warmup_steps: g.post_warmup_steps as u64,
            post_warmup_counts: g.post_warmup_counts.clone(),
        }
    }
}

/// Sums of item statistics for one policy.
#[derive(Debug, Default)]
pub struct Tally {
    pub n: usize,
    steps: u64,
    secs: f64,
    post_warmup_steps: u64,
    ffn_skipped: u64,
    ffn_skipped_post_warmup: u64,
    n_layers: u64,
}

impl Tally {
    pub fn add(&mut self, c: &ItemCommon) {
        self.n += 1;
        self.steps += c.decode_steps;
        self.secs += c.decode_secs;
        self.post_warmup_steps += c.post_warmup_steps;
        self.ffn_skipped += c.ffn_skipped;
        self.ffn_skipped_post_warmup += c.ffn_skipped_post_warmup;
        self.n_layers = c.n_layers;
    }

    /// The columns every summary row has.
    pub fn row(&self, policy: &str) -> Map<String, Value> {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut row = Map::new();
        row.insert("policy".into(), json!(policy));
        row.insert("n".into(), json!(self.n));
        row.insert("ffn_skip_ratio".into(), json!(ratio(self.ffn_skipped, self.steps * self.n_layers)));
        row.insert(
            "ffn_skip_ratio_post_warmup".into(),
            json!(ratio(self.ffn_skipped_post_warmup, self.post_warmup_steps * self.n_layers)),
        );
        row.insert("decode_tok_s".into(), json!(if self.secs > 0.0 { self.steps as f64 / self.secs } else { 0.0 }));
        row
    }
}

pub fn progress(total: u64, task: &str) -> ProgressBar {
    ProgressBar::new(total).with_style(
        ProgressStyle::with_template(&format!("{task} {{bar:30}} {{pos}}/{{len}} [{{elapsed}} < {{eta}}] {{msg}}"))
            .expect("static template"),
    )
}

/// Writes `summary.json`: the rows, one per policy, in policy order.
pub fn write_summary(out: &std::path::Path, rows: &[Map<String, Value>]) -> Result<()> {
    output::write_json(&out.join("summary.json"), &rows)
}

