//! The generation loop: prefill the prompt, then sample and decode one token at a time,
//! streaming text and stopping at end-of-turn tokens, stop strings or the token limit.

mod decoder;
mod generator;
mod logprobs;
mod prefill;
mod session;
mod stats;
mod stop;
mod trace;
mod warmup_split;

use serde::Serialize;

pub use decoder::{DecodeSpec, Decoder};
pub use generator::{Generator, Member};
pub use logprobs::{TokenLogprob, MAX_TOP_LOGPROBS};
pub use prefill::{check_piece, piece_rows, pieces, Prefill};
pub use session::{Feed, Session, PREFILL_CHUNK};
pub use stats::SkipStats;
pub use stop::StopMatcher;
pub use trace::{LayerRun, TokenSource, TokenTrace};
pub use warmup_split::WarmupSplit;

use crate::error::Result;
use crate::model::{BlockCounts, Llama};
use crate::sampling::SamplingParams;
use crate::speculate::SpecStats;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_strings: Vec<String>,
    /// Record each generated token's log-probability with this many alternatives
    /// ([`Generator::last_logprob`]); `None` records nothing and costs nothing.
    pub logprobs: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 128, sampling: SamplingParams::default(), stop_strings: Vec::new(), logprobs: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence / end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    Context,
}

/// What one generation produced and how long it took.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (fewer when a chat turn reused the cache).
    pub prefilled_tokens: usize,
    pub prefill_secs: f64,
    /// Tokens fed to the model after the prompt: every generated token but the last.
    pub decode_steps: usize,
    /// Rows the decode forwards computed: `decode_steps`, plus the rejected rows of
    /// speculative verifications.
    pub decode_rows: usize,
    pub decode_secs: f64,
    pub finish_reason: FinishReason,
    /// Blocks run during the decode steps, per layer.
    pub decode_counts: BlockCounts,
    /// The same, for the decode steps after the warm-up.
    pub post_warmup_counts: BlockCounts,
    pub post_warmup_steps: usize,
    /// What speculation did, when it was used.
    pub speculation: Option<SpecStats>,
}

impl Generation {
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prefilled_tokens, self.prefill_secs)
    }

    pub fn decode_tok_s(&self) -> f64 {
        rate(self.decode_steps, self.decode_secs)
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    if n == 0 || secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

/// Generates a continuation of `prompt`, calling `on_text` with each piece of printable text.
pub fn generate(
    session: &mut Session,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    decoder: &mut Decoder,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let mut generator = Generator::start(session, prompt, opts, decoder)?;
    while generator.step(session, tokenizer, decoder, on_text)?.is_none() {}
    Ok(generator.finish(decoder))
}

/// Continuations of `prompt` under each of `decoders`, each in a fresh session of `context`
/// tokens, decoded side by side: every round emits each generation's next token, then feeds
/// what they have pending in one forward. Each gets exactly the tokens it would get alone (the
/// rows of a shared step round as decode steps); none gets a time of its own.
pub fn generate_together(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    decoders: &mut [Decoder],
    context: usize,
) -> Result<Vec<Generation>> {
    let mut sessions = decoders.iter().map(|_| Session::new(model, Some(context))).collect::<Result<Vec<_>>>()?;
    let mut generators = sessions
        .iter_mut()
        .zip(decoders.iter_mut())
        .map(|(session, decoder)| Generator::start(session, prompt, opts, decoder).map(Some))
        .collect::<Result<Vec<_>>>()?;
    let mut done: Vec<Option<Generation>> = decoders.iter().map(|_| None).collect();
    let mut logits = Vec::new();
    loop {
        for (i, slot) in generators.iter_mut().enumerate() {
            let Some(generator) = slot else { continue };
            if generator.emit_next(&mut sessions[i], tokenizer, &mut decoders[i], &mut |_| {})?.is_some() {
                done[i] = slot.take().map(|g| g.finish(&mut decoders[i]));
            }
        }
        let mut members: Vec<Member> = generators
            .iter_mut()
            .zip(sessions.iter_mut())
            .zip(decoders.iter_mut())
            .filter_map(|((slot, session), decoder)| slot.as_mut().map(|generator| Member { generator, decoder, session }))
            .collect();
        if members.is_empty() {
            break;
        }
        Generator::feed_together(model, &mut members, &mut logits).1?;
    }
    Ok(done.into_iter().map(|g| g.expect("a generation leaves the loop only when finished")).collect())
}
