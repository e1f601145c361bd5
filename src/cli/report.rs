//! `ffnskip report RUNS --out FILE`: the results document from evaluation runs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ffnskip::eval::report::{load_runs, render};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run directory, or a directory of run directories.
    pub runs: PathBuf,
    /// The markdown file to write (text below its end-of-generated-part marker is kept).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let runs = load_runs(&args.runs)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let previous = std::fs::read_to_string(&args.out).ok();
    let text = render(&runs, &command, &[], previous.as_deref());
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} ({} runs)", args.out.display(), runs.len());
    Ok(())
}
