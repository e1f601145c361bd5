//! `ffnskip eval factoid|perplexity|chat`: a task over data for a list of policies.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ffnskip::eval::chat::ChatOptions;
use ffnskip::eval::code::CodeOptions;
use ffnskip::eval::factoid::FactoidOptions;
use ffnskip::eval::perplexity::PerplexityOptions;
use ffnskip::eval::{self, EvalConfig};
use ffnskip::profile::SkipConfig;

use super::common::{parse_policies, ModelArgs};

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// FreebaseQA exact-answer accuracy and retention of dense-correct answers.
    Factoid {
        #[command(flatten)]
        common: CommonArgs,
        /// Questions to use (from the start of the file).
        #[arg(long, default_value_t = 500)]
        limit: usize,
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
    },
    /// Perplexity, KL to dense and top-1 agreement on the decode path.
    Perplexity {
        #[command(flatten)]
        common: CommonArgs,
        /// Windows to score.
        #[arg(long, default_value_t = 40)]
        windows: usize,
        /// Tokens per window.
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Tokens prefilled at the start of each window.
        #[arg(long, default_value_t = 64)]
        prefill: usize,
    },
    /// MT-Bench first turns: ROUGE-L vs dense, identical share, collapse rate.
    Chat {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 80)]
        limit: usize,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
    },
    /// HumanEval: complete each function from its raw head, run its tests in a separate
    /// time-limited Python process; pass@1 and retention of dense-passing problems.
    Code {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 82)]
        limit: usize,
        #[arg(long, default_value_t = 384)]
        max_tokens: usize,
        /// Seconds one problem's tests may run.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The data file.
    #[arg(long)]
    pub data: PathBuf,
    /// Comma-separated policy specs, e.g. `dense,ffnskip@0.25,random@0.25:seed=1`; dense is
    /// always run first, as the reference.
    #[arg(long, default_value = "dense,ffnskip@0.25")]
    pub policies: String,
    /// Also run lossless speculation with this draft (`ngram`, a skip policy spec, or
    /// `ngram+SPEC`); the same as adding `speculate:DRAFT` to the policies.
    #[arg(long, value_name = "DRAFT")]
    pub speculate: Option<String>,
    /// Skip config from `ffnskip calibrate` (its calibration feeds `static` and `layer-drop`).
    #[arg(long)]
    pub skip_config: Option<PathBuf>,
    /// Output directory (items.jsonl, summary.json, meta.json); an existing run is resumed.
    #[arg(long)]
    pub out: PathBuf,
    /// Decode an item's policies side by side, a row each in every forward step: the same
    /// outputs as each alone (rows round as decode steps), about twice the throughput on the
    /// 1.5B model, but no policy's own speed (`decode_tok_s` is left out).
    #[arg(long)]
    pub side_by_side: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (common, task) = match &args.task {
        Task::Factoid { common, .. }
        | Task::Perplexity { common, .. }
        | Task::Chat { common, .. }
        | Task::Code { common, .. } => (common, &args.task),
    };
    let policies = parse_policies(&common.policies, common.speculate.as_deref())?;
    let calibration = common.skip_config.as_deref().map(SkipConfig::load).transpose()?.map(|c| c.calibration);
    let engine = common.model.load()?;
    let cfg = EvalConfig {
        engine: &engine,
        policies: eval::with_dense_first(policies),
        calibration,
        out: common.out.clone(),
        command,
        side_by_side: common.side_by_side,
    };
    let rows = match task {
        Task::Factoid { limit, max_tokens, .. } => {
            eval::factoid::run(&cfg, &common.data, &FactoidOptions { limit: *limit, max_tokens: *max_tokens })?
        }
        Task::Perplexity { windows, window, prefill, .. } => eval::perplexity::run(
            &cfg,
            &common.data,
            &PerplexityOptions { windows: *windows, window: *window, prefill: *prefill },
        )?,
        Task::Chat { limit, max_tokens, .. } => {
            eval::chat::run(&cfg, &common.data, &ChatOptions { limit: *limit, max_tokens: *max_tokens })?
        }
        Task::Code { limit, max_tokens, timeout, .. } => {
            if !(timeout.is_finite() && *timeout > 0.0) {
                anyhow::bail!("--timeout must be a positive number of seconds, got {timeout}");
            }
            let opts = CodeOptions { limit: *limit, max_tokens: *max_tokens, timeout: Duration::from_secs_f64(*timeout) };
            eval::code::run(&cfg, &common.data, &opts)?
        }
    };
    for row in rows {
        println!("{}", serde_json::to_string(&row).context("printing a summary row")?);
    }
    Ok(())
}
