//! `ffnskip report RUNS --out FILE`: the results document from evaluation runs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ffnskip::eval::plot;
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
    // The figures sit beside the report, named after it.
    let dir = args.out.parent().unwrap_or(std::path::Path::new("."));
    let stem = args.out.file_stem().and_then(|s| s.to_str()).unwrap_or("report").to_lowercase();
    let names = [format!("{stem}-tradeoff.png"), format!("{stem}-speedup.png")];
    plot::tradeoff(&runs, &dir.join(&names[0]))?;
    plot::speedup(&runs, &dir.join(&names[1]))?;
    let text = render(&runs, &command, &names, previous.as_deref());
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} ({} runs)", args.out.display(), runs.len());
    Ok(())
}
