//! `ffnskip chat`: an interactive conversation that keeps the KV cache between turns.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use clap::Args;
use ffnskip::chat::Message;
use ffnskip::generate::{generate, GenerateOptions, Session, SkipStats};

use super::common::{ModelArgs, SamplingArgs, SkipArgs};

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message at the start of the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum number of tokens per reply.
    #[arg(long, short = 'n', default_value_t = 512)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub skip: SkipArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let sampling = args.sampling.params(0.7)?;
    let spec = args.skip.decode_spec()?;
    let calibration = args.skip.calibration()?;
    let engine = args.model.load()?;
    // One decoder for the whole conversation: a policy's warm-up covers the first reply only.
    let mut decoder = spec.build(engine.model.config.n_layers, calibration.as_ref())?;
    let Some(template) = &engine.chat_template else {
        bail!("this model has no chat template, so it cannot chat; use `generate`");
    };
    let mut session = Session::new(&engine.model, args.model.context())?;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_strings: args.sampling.stop.clone(),
        logprobs: None,
    };
    let mut messages: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("chat: type a message and press enter; an empty line or end of input quits");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(Message::new("user", line.trim_end()));
        let tokens = engine.tokenizer.encode(&template.render(&messages, true)?)?;
        let gen = generate(&mut session, &engine.tokenizer, &tokens, &opts, &mut decoder, &mut |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        })?;
        writeln!(stdout)?;
        eprintln!(
            "[{} tok, {} reused from cache, decode {:.1} tok/s, FFN skipped {:.1}%]",
            gen.tokens.len(),
            gen.prompt_tokens - gen.prefilled_tokens,
            gen.decode_tok_s(),
            100.0 * SkipStats::of(&gen, &engine.model).ffn_skip_ratio
        );
        messages.push(Message::new("assistant", &gen.text));
    }
}
