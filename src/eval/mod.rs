//! The evaluation harness (DESIGN §5): factoid QA, perplexity/divergence and chat, each run for a
//! list of policies with dense as the reference, written as items plus a summary.

pub mod bench;
pub mod chat;
pub mod code;
pub mod code_check;
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
use crate::generate::{generate, generate_together, DecodeSpec, Decoder, GenerateOptions, Generation, Session};
use crate::model::{BlockCounts, Llama};
use crate::skip::{Calibration, SkipPolicy};
use crate::speculate::SpecStats;
use crate::Error;
use crate::Engine;
use output::ItemCommon;

/// What every task needs: the engine, the policies (dense first) and where results go.
pub struct EvalConfig<'e> {
    pub engine: &'e Engine,
    /// Skip policies and speculative drafts (`speculate:DRAFT`).
    pub policies: Vec<DecodeSpec>,
    pub calibration: Option<Calibration>,
    pub out: PathBuf,
    /// The command line, recorded in `meta.json`.
    pub command: String,
    /// Decode an item's policies side by side, a row each in every forward step (as the
    /// server batches its streams): the same outputs as each alone, more throughput, but no
    /// policy's own speed. Otherwise each decodes alone and is timed.
    pub side_by_side: bool,
}

impl EvalConfig<'_> {
    /// The skip policy of `spec`; an error for speculation, for tasks that feed given tokens
    /// (there is nothing to draft, and the logits are the dense ones by construction).
    pub fn build_policy(&self, spec: &DecodeSpec) -> Result<Box<dyn SkipPolicy>> {
        match spec {
            DecodeSpec::Policy(p) => p.build(self.engine.model.config.n_layers, self.calibration.as_ref()),
            DecodeSpec::Speculate(_) => Err(Error::InvalidArgument(format!(
                "{spec}: speculation applies to generation (chat, factoid, bench); this task feeds given tokens"
            ))),
        }
    }

    pub fn build_decoder(&self, spec: &DecodeSpec) -> Result<Decoder> {
        spec.build(self.engine.model.config.n_layers, self.calibration.as_ref())
    }

    /// Greedy generations of `max_tokens` for a fresh sequence under each of `specs`, each
    /// also stopping at any of `stops` (left out of the text): each alone, or all side by side.
    pub fn generate_each(
        &self,
        specs: &[&DecodeSpec],
        prompt: &[u32],
        max_tokens: usize,
        stops: &[&str],
    ) -> Result<Vec<Generation>> {
        let (model, tokenizer) = (&self.engine.model, &self.engine.tokenizer);
        let mut decoders = specs.iter().map(|spec| self.build_decoder(spec)).collect::<Result<Vec<_>>>()?;
        let context = (prompt.len() + max_tokens + 1).min(model.config.context_len);
        let stop_strings = stops.iter().map(|s| s.to_string()).collect();
        let opts = GenerateOptions { max_tokens, stop_strings, ..Default::default() };
        if self.side_by_side {
            return generate_together(model, tokenizer, prompt, &opts, &mut decoders, context);
        }
        let mut each = |decoder: &mut Decoder| {
            let mut session = Session::new(model, Some(context))?;
            generate(&mut session, tokenizer, prompt, &opts, decoder, &mut |_| {})
        };
        decoders.iter_mut().map(&mut each).collect()
    }

    /// A generation's decode statistics, timed only when it ran alone.
    pub fn decode_run(&self, generation: &Generation) -> DecodeRun {
        let mut run = DecodeRun::from(generation);
        if self.side_by_side {
            run.secs = None;
        }
        run
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
            "side_by_side": self.side_by_side,
        });
        if let (Some(m), Value::Object(e)) = (meta.as_object_mut(), extra) {
            m.extend(e);
        }
        output::write_json(&self.out.join("meta.json"), &meta)
    }
}

/// Puts `dense` first (adding it when missing): the other policies are measured against it.
pub fn with_dense_first(mut policies: Vec<DecodeSpec>) -> Vec<DecodeSpec> {
    let dense = DecodeSpec::dense();
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
pub fn item_common(policy: &DecodeSpec, item: &str, model: &Llama, run: &DecodeRun) -> ItemCommon {
    let skipped = |c: &BlockCounts, steps: u64| c.ffn.iter().map(|&ran| steps - ran).sum::<u64>();
    ItemCommon {
        policy: policy.to_string(),
        item: item.to_string(),
        decode_steps: run.steps,
        decode_secs: run.secs,
        post_warmup_steps: run.post_warmup_steps,
        ffn_skipped: skipped(&run.counts, run.rows),
        ffn_skipped_post_warmup: skipped(&run.post_warmup_counts, run.post_warmup_steps),
        n_layers: model.config.n_layers as u64,
        speculation: run.speculation.clone(),
    }
}

/// The decode part of a run: steps, time, and blocks run (all steps and post-warm-up).
pub struct DecodeRun {
    /// Tokens fed after the prompt.
    pub steps: u64,
    /// Rows the decode forwards computed (more than `steps` when speculation rejected drafts).
    pub rows: u64,
    /// The decode time, when the run had its forward steps to itself.
    pub secs: Option<f64>,
    pub counts: BlockCounts,
    pub post_warmup_steps: u64,
    pub post_warmup_counts: BlockCounts,
    pub speculation: Option<SpecStats>,
}

impl From<&Generation> for DecodeRun {
    fn from(g: &Generation) -> Self {
        Self {
            steps: g.decode_steps as u64,
            rows: g.decode_rows as u64,
            secs: Some(g.decode_secs),
            counts: g.decode_counts.clone(),
            post_warmup_steps: g.post_warmup_steps as u64,
            post_warmup_counts: g.post_warmup_counts.clone(),
            speculation: g.speculation.clone(),
        }
    }
}

/// Sums of item statistics for one policy.
#[derive(Debug, Default)]
pub struct Tally {
    pub n: usize,
    steps: u64,
    /// Steps and time of the items timed alone.
    timed_steps: u64,
    secs: f64,
    post_warmup_steps: u64,
    ffn_skipped: u64,
    ffn_skipped_post_warmup: u64,
    n_layers: u64,
    /// Speculation's counts and times summed over the items (`None` without speculation).
    speculation: Option<SpecStats>,
}

impl Tally {
    pub fn add(&mut self, c: &ItemCommon) {
        self.n += 1;
        self.steps += c.decode_steps;
        if let Some(secs) = c.decode_secs {
            self.timed_steps += c.decode_steps;
            self.secs += secs;
        }
        self.post_warmup_steps += c.post_warmup_steps;
        self.ffn_skipped += c.ffn_skipped;
        self.ffn_skipped_post_warmup += c.ffn_skipped_post_warmup;
        self.n_layers = c.n_layers;
        if let Some(s) = &c.speculation {
            let sum = self.speculation.get_or_insert_with(|| SpecStats { draft: s.draft.clone(), ..Default::default() });
            sum.verifications += s.verifications;
            sum.plain_steps += s.plain_steps;
            sum.drafted += s.drafted;
            sum.accepted += s.accepted;
            sum.verified_rows += s.verified_rows;
            sum.draft_steps += s.draft_steps;
            if c.decode_secs.is_some() {
                sum.draft_secs += s.draft_secs;
                sum.verify_secs += s.verify_secs;
            }
        }
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
        // Left out when no item was timed alone: batched rows share their steps' time.
        if self.timed_steps > 0 {
            row.insert("decode_tok_s".into(), json!(if self.secs > 0.0 { self.timed_steps as f64 / self.secs } else { 0.0 }));
        }
        if let Some(s) = &self.speculation {
            row.insert("acceptance_rate".into(), json!(ratio(s.accepted as u64, s.drafted as u64)));
            row.insert(
                "tokens_per_verification".into(),
                json!(ratio((s.accepted + s.verifications) as u64, s.verifications as u64)),
            );
            row.insert("drafted".into(), json!(s.drafted));
            row.insert("plain_steps".into(), json!(s.plain_steps));
            // Shares of the decode time, which only items timed alone have.
            if self.timed_steps > 0 && self.secs > 0.0 {
                row.insert("draft_secs_share".into(), json!(s.draft_secs / self.secs));
                row.insert("verify_secs_share".into(), json!(s.verify_secs / self.secs));
            }
        }
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

