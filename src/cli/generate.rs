//! `ffnskip generate`: one completion, streamed to stdout; statistics to stderr and JSON.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ffnskip::chat::Message;
use ffnskip::generate::{generate, GenerateOptions, Generation, Session, SkipStats};
use ffnskip::model::Llama;
use serde_json::json;

use super::common::{ModelArgs, SamplingArgs, SkipArgs};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text; `-` reads it from stdin.
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Wrap the prompt as one user turn in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Maximum number of tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub skip: SkipArgs,
    /// Write the run's statistics to this file as one JSON object.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = args.sampling.params(0.0)?;
    let spec = args.skip.decode_spec()?;
    let calibration = args.skip.calibration()?;
    let prompt = if args.prompt == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the prompt from stdin")?;
        s
    } else {
        args.prompt.clone()
    };
    let engine = args.model.load()?;
    let text = if args.chat {
        let Some(template) = &engine.chat_template else {
            bail!("this model has no chat template; drop --chat for a raw completion");
        };
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", &prompt));
        template.render(&messages, true)?
    } else {
        prompt
    };
    let tokens = engine.tokenizer.encode(&text)?;
    let mut session = Session::new(&engine.model, args.model.context())?;
    let mut decoder = spec.build(engine.model.config.n_layers, calibration.as_ref())?;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_strings: args.sampling.stop.clone(),
        logprobs: None,
    };
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let gen = generate(&mut session, &engine.tokenizer, &tokens, &opts, &mut decoder, &mut |piece| {
        if write_err.is_none() {
            write_err = stdout.write_all(piece.as_bytes()).and_then(|_| stdout.flush()).err();
        }
    })?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    writeln!(stdout).ok();
    report(&gen, &engine.model, &spec.to_string(), args.stats_json.as_deref())
}

fn report(gen: &Generation, model: &Llama, policy: &str, json_path: Option<&std::path::Path>) -> Result<()> {
    let skip = SkipStats::of(gen, model);
    eprintln!(
        "[{policy}] prompt {} tok, generated {} tok ({:?}), prefill {:.1} tok/s, decode {:.1} tok/s, \
         FFN skipped {:.1}% ({:.1}% after warm-up, {} tok), mean run {:.1}",
        gen.prompt_tokens,
        gen.tokens.len(),
        gen.finish_reason,
        gen.prefill_tok_s(),
        gen.decode_tok_s(),
        100.0 * skip.ffn_skip_ratio,
        100.0 * skip.ffn_skip_ratio_post_warmup,
        skip.decoded_tokens_post_warmup,
        skip.mean_run_length,
    );
    if let Some(s) = &gen.speculation {
        eprintln!(
            "[speculate:{}] drafted {}, accepted {} ({:.1}%), {:.2} tokens per verification, {} plain steps; \
             draft {:.2} s, verify {:.2} s, other {:.2} s",
            s.draft,
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate,
            s.tokens_per_verification,
            s.plain_steps,
            s.draft_secs,
            s.verify_secs,
            (gen.decode_secs - s.draft_secs - s.verify_secs).max(0.0),
        );
    }
    if let Some(path) = json_path {
        let mut stats = json!({
            "policy": policy,
            "prompt_tokens": gen.prompt_tokens,
            "generated_tokens": gen.tokens.len(),
            "prefill_tok_s": gen.prefill_tok_s(),
            "decode_tok_s": gen.decode_tok_s(),
            "prefill_secs": gen.prefill_secs,
            "decode_secs": gen.decode_secs,
            "decode_steps": gen.decode_steps,
            "finish_reason": gen.finish_reason,
        });
        if let (Some(obj), serde_json::Value::Object(extra)) = (stats.as_object_mut(), serde_json::to_value(&skip)?) {
            obj.extend(extra);
        }
        if let (Some(obj), Some(s)) = (stats.as_object_mut(), &gen.speculation) {
            obj.insert("speculation".into(), serde_json::to_value(s)?);
        }
        std::fs::write(path, serde_json::to_string_pretty(&stats)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
