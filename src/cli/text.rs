//! Flags and helpers shared by the subcommands that decode a text file window by window
//! (`profile`, `calibrate`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ffnskip::profile::Windowing;

#[derive(Debug, Clone, Args)]
pub struct TextArgs {
    /// UTF-8 text file to decode, e.g. ../shared/data/text/wikitext2-valid.tokens.txt.
    #[arg(long)]
    pub text: PathBuf,
    /// Tokens per window, prefill included.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Tokens prefilled in one batch at the start of each window; the rest are decoded one by one.
    #[arg(long, default_value_t = 64)]
    pub prefill: usize,
}

impl TextArgs {
    /// The windowing for `tokens` decoded tokens, checked before anything is loaded.
    pub fn windowing(&self, tokens: usize) -> Result<Windowing> {
        let w = Windowing { window: self.window, prefill: self.prefill, tokens };
        w.validate()?;
        Ok(w)
    }

    /// The text file's contents (read before the model loads, so a wrong path fails at once).
    pub fn read(&self) -> Result<String> {
        std::fs::read_to_string(&self.text).with_context(|| format!("reading the text file {}", self.text.display()))
    }
}

/// A bar over decoded tokens, with rate and ETA; hidden when stderr is not a terminal.
pub fn token_bar(tokens: usize, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(tokens as u64);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} tok, {per_sec}, ETA {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message.to_string());
    bar
}

/// The command line as run, for reports.
pub fn command_line() -> String {
    let quoted = std::env::args().skip(1).map(|a| if a.contains(' ') { format!("'{a}'") } else { a });
    std::iter::once("ffnskip".to_string()).chain(quoted).collect::<Vec<_>>().join(" ")
}

/// The model file a report names: the given file, or the cached path of the named or default model.
pub fn model_name(model: Option<&str>) -> Result<String> {
    Ok(ffnskip::catalog::resolve(model)?.display().to_string())
}
