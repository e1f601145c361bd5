//! Flags shared by several subcommands: the model, threads, sampling.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ffnskip::generate::DecodeSpec;
use ffnskip::profile::SkipConfig;
use ffnskip::sampling::SamplingParams;
use ffnskip::skip::{Calibration, PolicySpec};
use ffnskip::Engine;

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A GGUF file, or a known model's name (`ffnskip models`; fetched on first use); the
    /// default model (smollm2-135m) when omitted.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Threads for matrix products (default: all cores).
    #[arg(long, short = 't', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Context size in tokens (default: the model's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: Option<u32>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Engine> {
        Ok(self.load_engine()?)
    }

    /// `load` with the library's error type, for callers that keep it.
    pub fn load_engine(&self) -> ffnskip::Result<Engine> {
        configure_threads(self.threads);
        Engine::load_named(self.model.as_deref())
    }

    /// The thread count in effect (after `load`).
    pub fn threads_used(&self) -> String {
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "default".into())
    }

    pub fn context(&self) -> Option<usize> {
        self.ctx_size.map(|c| c as usize)
    }
}

/// candle reads its thread count from the environment on first use, so it is set before any
/// tensor is made. Its worker pool's default spin limit stalls on 2-core VMs (DESIGN §4), so a
/// higher one is the default here unless the user chose one.
fn configure_threads(threads: Option<u16>) {
    let n = threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    });
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    ffnskip::kernels::pool::set_threads(n);
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100000000");
    }
}

/// `--policies` (comma-separated specs) plus `--speculate DRAFT` as `speculate:DRAFT`.
pub fn parse_policies(policies: &str, speculate: Option<&str>) -> Result<Vec<DecodeSpec>> {
    let mut specs = policies.split(',').map(|s| s.trim().parse::<DecodeSpec>()).collect::<Result<Vec<_>, _>>()?;
    if let Some(draft) = speculate {
        specs.push(DecodeSpec::Speculate(draft.parse()?));
    }
    Ok(specs)
}

#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty on recently seen tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens (prompt included) the repetition, frequency and presence
    /// penalties look at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtracted from a token's logit per occurrence in the window (−2 to 2; 0: off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Subtracted from the logit of every token in the window (−2 to 2; 0: off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Random seed: the same seed gives the same output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn params(&self, default_temperature: f32) -> Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(default_temperature),
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
        };
        p.validate()?;
        Ok(p)
    }
}

/// Which skip policy to decode with: `--skip NAME --skip-ratio R` plus per-option flags, or a
/// whole spec string (`--policy ffnskip@0.25:tau=0.97`).
#[derive(Debug, Clone, Args)]
pub struct SkipArgs {
    /// Skip policy: dense, ffnskip, random, no-adaptive, static, layer-early-exit, layer-drop
    /// [default: dense, or the --skip-config policy].
    #[arg(long, conflicts_with = "policy")]
    pub skip: Option<String>,
    /// Target share of FFN blocks to skip per post-warm-up token (the realised share is reported).
    #[arg(long)]
    pub skip_ratio: Option<f64>,
    /// Cosine threshold of the saturation test (ffnskip, layer-early-exit).
    #[arg(long)]
    pub tau: Option<f32>,
    /// Layers at the start that are never skipped.
    #[arg(long)]
    pub cold_start: Option<usize>,
    /// Layers at the end that are never skipped.
    #[arg(long)]
    pub cold_end: Option<usize>,
    /// Generated tokens that run dense before skipping starts.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Test the signal again after a run ends (with --max-run, several runs per token).
    #[arg(long)]
    pub recheck: bool,
    /// Longest run of skipped layers.
    #[arg(long)]
    pub max_run: Option<usize>,
    /// Saturation signal of ffnskip: cosine or norm-ratio (with --threshold).
    #[arg(long)]
    pub signal: Option<String>,
    /// Norm-ratio threshold: a run starts when ‖FFN(u)‖/‖h_mid‖ falls below it.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Seed of the random baseline.
    #[arg(long)]
    pub skip_seed: Option<u64>,
    /// A whole policy spec, e.g. `ffnskip@0.25:tau=0.97:warmup=8`.
    #[arg(long)]
    pub policy: Option<String>,
    /// Lossless speculation: decode with drafts from DRAFT (`ngram`, a skip policy spec such as
    /// `ffnskip@0.5`, or `ngram+SPEC`) verified by the full model; the output is the dense one.
    #[arg(long, value_name = "DRAFT", conflicts_with_all = ["skip", "policy"])]
    pub speculate: Option<String>,
    /// Skip config written by `ffnskip calibrate`: its policy is used when neither --skip nor
    /// --policy is given, and its per-layer mean cosines choose the layers of `static` and
    /// `layer-drop`.
    #[arg(long)]
    pub skip_config: Option<PathBuf>,
}

impl SkipArgs {
    /// The decoding asked for: speculation with `--speculate`, else the skip policy.
    pub fn decode_spec(&self) -> Result<DecodeSpec> {
        match &self.speculate {
            Some(_) if self.skip_ratio.is_some() || self.options().iter().any(|(_, v)| v.is_some()) => {
                anyhow::bail!("skip flags shape a --skip policy; with --speculate, write them into the draft spec")
            }
            Some(draft) => Ok(DecodeSpec::Speculate(draft.parse()?)),
            None => Ok(DecodeSpec::Policy(self.spec()?)),
        }
    }

    /// The policy options given as flags, by spec key.
    fn options(&self) -> [(&'static str, Option<String>); 9] {
        [
            ("tau", self.tau.map(|v| v.to_string())),
            ("cold_start", self.cold_start.map(|v| v.to_string())),
            ("cold_end", self.cold_end.map(|v| v.to_string())),
            ("warmup", self.warmup.map(|v| v.to_string())),
            ("recheck", self.recheck.then(|| "true".to_string())),
            ("max_run", self.max_run.map(|v| v.to_string())),
            ("signal", self.signal.clone()),
            ("threshold", self.threshold.map(|v| v.to_string())),
            ("seed", self.skip_seed.map(|v| v.to_string())),
        ]
    }

    fn spec(&self) -> Result<PolicySpec> {
        if let Some(spec) = &self.policy {
            return Ok(spec.parse()?);
        }
        let options = self.options();
        if let (None, Some(config)) = (&self.skip, self.config()?) {
            if self.skip_ratio.is_some() || options.iter().any(|(_, v)| v.is_some()) {
                anyhow::bail!("skip flags need --skip: the --skip-config policy is used as written");
            }
            return Ok(config.spec()?);
        }
        let mut text = self.skip.clone().unwrap_or_else(|| "dense".into());
        if text != "dense" {
            let ratio = self.skip_ratio.context("--skip-ratio is required with a skip policy")?;
            text.push_str(&format!("@{ratio}"));
        } else if self.skip_ratio.is_some() {
            anyhow::bail!("--skip-ratio needs a skip policy (--skip ffnskip, ...)");
        }
        for (key, value) in options {
            if let Some(value) = value {
                text.push_str(&format!(":{key}={value}"));
            }
        }
        Ok(text.parse()?)
    }

    pub fn calibration(&self) -> Result<Option<Calibration>> {
        Ok(self.config()?.map(|c| c.calibration))
    }

    fn config(&self) -> Result<Option<SkipConfig>> {
        Ok(self.skip_config.as_deref().map(SkipConfig::load).transpose()?)
    }
}
