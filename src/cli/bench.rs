//! `ffnskip bench`: prefill and decode speed of policies, interleaved, as a table or JSON.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ffnskip::eval::bench::{bench, table};
use ffnskip::eval::{self, data, EvalConfig};
use ffnskip::profile::SkipConfig;

use super::common::{parse_policies, ModelArgs};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated policy specs; dense is always run first.
    #[arg(long, default_value = "dense,ffnskip@0.25")]
    pub policies: String,
    /// Also run lossless speculation with this draft (`ngram`, a skip policy spec, or
    /// `ngram+SPEC`); the same as adding `speculate:DRAFT` to the policies.
    #[arg(long, value_name = "DRAFT")]
    pub speculate: Option<String>,
    /// Rounds; each runs every policy once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Prompt tokens (pp), taken from the start of --text.
    #[arg(long, default_value_t = 128)]
    pub pp: usize,
    /// Generated tokens (tg).
    #[arg(long, default_value_t = 128)]
    pub tg: usize,
    /// Text the prompt is cut from.
    #[arg(long, default_value = "../shared/data/text/wikitext2-valid.tokens.txt")]
    pub text: PathBuf,
    /// Write the rows as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip config from `ffnskip calibrate` (its calibration feeds `static`, `layer-drop` and
    /// `tau=per-layer`).
    #[arg(long)]
    pub skip_config: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let policies = parse_policies(&args.policies, args.speculate.as_deref())?;
    if args.pp == 0 || args.tg == 0 {
        bail!("--pp and --tg must be at least 1");
    }
    let calibration = args.skip_config.as_deref().map(SkipConfig::load).transpose()?.map(|c| c.calibration);
    let engine = args.model.load()?;
    let text = data::load_text(&args.text)?;
    let tokens = engine.tokenizer.encode(&text)?;
    if tokens.len() < args.pp {
        bail!("{} has only {} tokens, fewer than --pp {}", args.text.display(), tokens.len(), args.pp);
    }
    let cfg = EvalConfig {
        engine: &engine,
        policies: eval::with_dense_first(policies),
        calibration,
        out: PathBuf::new(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        side_by_side: false,
    };
    let rows = bench(&cfg, &tokens[..args.pp], args.tg, args.runs as usize)?;
    println!("machine: {}; threads: {}; command: {}", eval::machine(), args.model.threads_used(), cfg.command);
    print!("{}", table(&rows));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
