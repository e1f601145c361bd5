//! Flags and subcommands. Thin: each subcommand parses its flags and calls the library.

mod bench;
mod calibrate;
mod chat;
mod common;
mod eval;
mod generate;
mod report;
mod profile;
mod serve;
mod text;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use common::ModelArgs;

#[derive(Debug, Parser)]
#[command(name = "ffnskip", version, about = "Llama-family inference with adaptive FFN skipping")]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a completion of a prompt (streamed to stdout).
    Generate(generate::GenerateArgs),
    /// Interactive multi-turn chat on stdin/stdout.
    Chat(chat::ChatArgs),
    /// Evaluate policies on a task: factoid, perplexity or chat.
    Eval(eval::EvalArgs),
    /// Prefill and decode speed of policies, measured side by side.
    Bench(bench::BenchArgs),
    /// Tables (and plots) of evaluation runs as one markdown document.
    Report(report::ReportArgs),
    /// Profile each layer's FFN saturation while decoding a text (JSON, CSV, figure).
    Profile(profile::ProfileArgs),
    /// Choose skip settings whose realised skip ratio on a text meets a target; write a skip config.
    Calibrate(calibrate::CalibrateArgs),
    /// Serve the model over HTTP with an OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// Fetch a model into the cache (if needed) and print its path.
    Fetch(FetchArgs),
    /// List the models known by name, their sizes and whether the cache holds them.
    Models,
    /// Print a model's hyper-parameters.
    Info(ModelArgs),
}

pub fn run(args: Args) -> Result<()> {
    init_tracing();
    match args.command {
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Report(a) => report::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Fetch(a) => {
            println!("{}", ffnskip::catalog::resolve(Some(&a.model))?.display());
            Ok(())
        }
        Command::Models => {
            print!("{}", models_table());
            Ok(())
        }
        Command::Info(a) => {
            let engine = a.load()?;
            println!("{:#?}", engine.model.config);
            Ok(())
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The model's name (see `ffnskip models`).
    #[arg(long, short = 'm', default_value = ffnskip::catalog::DEFAULT_MODEL)]
    pub model: String,
}

fn models_table() -> String {
    let mut out = format!("{:<20} {:>9}  {:<8} {}\n", "name", "size", "cached", "model");
    for m in ffnskip::catalog::CATALOG {
        let size = format!("{:.0} MB", m.bytes as f64 / 1e6);
        let cached = if m.is_cached() { "yes" } else { "no" };
        out += &format!("{:<20} {:>9}  {:<8} {}\n", m.name, size, cached, m.description);
    }
    out + &format!("cache: {}\n", ffnskip::catalog::cache_dir().display())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FFNSKIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
