//! Flags shared by several subcommands: the model, threads, sampling.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ffnskip::sampling::SamplingParams;
use ffnskip::Engine;

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model file; the default model (SmolLM2-135M-Instruct Q4_1) when omitted.
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Threads for matrix products (default: all cores).
    #[arg(long, short = 't', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Context size in tokens (default: the model's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: Option<u32>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Engine> {
        configure_threads(self.threads);
        Ok(Engine::load_or_default(self.model.as_deref())?)
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
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100000000");
    }
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
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
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
            seed: self.seed,
        };
        p.validate()?;
        Ok(p)
    }
}
