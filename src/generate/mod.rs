//! The generation loop: prefill the prompt, then sample and decode one token at a time,
//! streaming text and stopping at end-of-turn tokens, stop strings or the token limit.

mod decoder;
mod session;
mod stats;
mod stop;
mod warmup_split;

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

pub use decoder::{DecodeSpec, Decoder};
pub use session::Session;
pub use stats::SkipStats;
pub use stop::StopMatcher;
pub use warmup_split::WarmupSplit;

use crate::error::Result;
use crate::model::BlockCounts;
use crate::sampling::{Sampler, SamplingParams};
use crate::skip::{Dense, SkipPolicy};
use crate::speculate::SpecStats;
use crate::tokenizer::{Tokenizer, Utf8Stream};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_strings: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 128, sampling: SamplingParams::default(), stop_strings: Vec::new() }
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
    let n_layers = session.model().config.n_layers;
    let cached_before = session.tokens().iter().zip(prompt).take_while(|(a, b)| a == b).count();

    let t0 = Instant::now();
    let mut prefill_counts = BlockCounts::new(n_layers);
    let mut logits = Vec::new();
    let prefill_policy: &mut dyn SkipPolicy = match decoder {
        Decoder::Stepwise(policy) => policy.as_mut(),
        Decoder::Speculative(_) => &mut Dense,
    };
    session.prefill(prompt, prefill_policy, &mut prefill_counts, &mut logits)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    let prefilled_tokens = prompt.len() - cached_before.min(prompt.len() - 1);

    let t1 = Instant::now();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut utf8 = Utf8Stream::default();
    let mut stops = StopMatcher::new(&opts.stop_strings);
    let mut counts = WarmupSplit::new(n_layers);
    let mut tokens = Vec::new();
    let mut text = String::new();
    let (mut decode_steps, mut decode_rows) = (0, 0);
    let mut stopped_by_string = false;
    let mut emit = |piece: &str, text: &mut String| {
        if !piece.is_empty() {
            on_text(piece);
            text.push_str(piece);
        }
    };
    // Tokens chosen but not yet emitted. All but the last are already in the cache (accepted
    // speculative drafts); the last is fed when the queue runs dry.
    let mut queue = VecDeque::from([sampler.sample(&mut logits, session.tokens())]);
    let finish_reason = loop {
        if opts.max_tokens == 0 {
            break FinishReason::Length;
        }
        let token = queue.pop_front().expect("the queue is refilled before it runs dry");
        if tokenizer.stop_tokens().contains(&token) {
            break FinishReason::Stop;
        }
        tokens.push(token);
        let (piece, hit_stop) = stops.push(&utf8.push(tokenizer.bytes(token)));
        emit(&piece, &mut text);
        if hit_stop {
            stopped_by_string = true;
            break FinishReason::Stop;
        }
        if tokens.len() >= opts.max_tokens {
            break FinishReason::Length;
        }
        if queue.is_empty() && session.tokens().len() >= session.capacity() {
            break FinishReason::Context;
        }
        decode_steps += 1;
        if !queue.is_empty() {
            continue;
        }
        // Decode: run the new token through the model to get the next one(s).
        match decoder {
            Decoder::Stepwise(policy) => {
                counts.decode(session, token, policy.as_mut(), &mut logits)?;
                decode_rows += 1;
                queue.push_back(sampler.sample(&mut logits, session.tokens()));
            }
            Decoder::Speculative(speculator) => {
                let tokens = speculator.cycle(session, &mut sampler, token, &mut counts.all)?;
                decode_rows = speculator.stats().verified_rows;
                queue.extend(tokens);
            }
        }
    };
    if !stopped_by_string {
        // Flush what was held back: an incomplete UTF-8 tail, a partial stop string.
        let (piece, hit) = stops.push(&utf8.finish());
        emit(&piece, &mut text);
        if !hit {
            emit(&stops.finish(), &mut text);
        }
    }
    let speculation = match decoder {
        Decoder::Stepwise(_) => None,
        Decoder::Speculative(speculator) => Some(speculator.take_stats()),
    };
    Ok(Generation {
        text,
        tokens,
        prompt_tokens: prompt.len(),
        prefilled_tokens,
        prefill_secs,
        decode_steps,
        decode_rows,
        decode_secs: t1.elapsed().as_secs_f64(),
        finish_reason,
        decode_counts: counts.all,
        post_warmup_counts: counts.post_warmup,
        post_warmup_steps: counts.post_warmup_steps,
        speculation,
    })
}
