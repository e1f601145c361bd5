//! A model with its KV cache and the tokens the cache holds: the unit that prefill and decode
//! steps advance, and that a multi-turn chat keeps between turns.

use std::ops::Range;

use super::prefill::pieces;
use crate::error::{Error, Result};
use crate::model::{BlockCounts, KvCache, Llama, SeqStep, Step};
use crate::skip::SkipPolicy;

/// The context a session gets unless asked for another: Qwen2.5 declares 32768 positions,
/// whose f16 cache would take 0.9 GB for the 1.5B model; llama.cpp's default is 4096.
pub const DEFAULT_CONTEXT: usize = 8192;

/// Prompt rows per forward step: llama.cpp's default micro-batch, so long prompts round as
/// there (a product's rounding depends on its row count), and a step's buffers stay small
/// (about 60 MB of activations on Qwen2.5-Coder-1.5B) however long the prompt.
pub const PREFILL_CHUNK: usize = 512;

/// One sequence's part of [`Session::feed_batch`]: the tokens it feeds (one generated token,
/// or a speculative draft's rows to verify), under its policy, counted in its counts.
pub struct Feed<'s, 'm> {
    pub session: &'s mut Session<'m>,
    pub tokens: &'s [u32],
    pub policy: &'s mut dyn SkipPolicy,
    pub counts: &'s mut BlockCounts,
}

pub struct Session<'m> {
    model: &'m Llama,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session whose context holds `context` tokens (when `None`, the model's own length,
    /// at most [`DEFAULT_CONTEXT`]).
    pub fn new(model: &'m Llama, context: Option<usize>) -> Result<Self> {
        let context = context.unwrap_or(model.config.context_len.min(DEFAULT_CONTEXT));
        if context == 0 {
            return Err(Error::InvalidArgument("the context size must be at least 1".into()));
        }
        Ok(Self { model, cache: model.new_cache(context), tokens: Vec::with_capacity(context) })
    }

    pub fn model(&self) -> &'m Llama {
        self.model
    }

    /// Every token in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Makes the cache hold exactly `prompt` and writes the logits after its last token into
    /// `logits` (its memory is reused). The longest prefix already in the cache is reused, so a
    /// chat turn only prefills what is new. The rest goes through the model in chunks of
    /// [`PREFILL_CHUNK`] rows.
    pub fn prefill(
        &mut self,
        prompt: &[u32],
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let start = self.begin_prefill(prompt)?;
        for range in pieces(start, prompt.len(), PREFILL_CHUNK) {
            self.prefill_piece(prompt, range, policy, counts, logits)?;
        }
        Ok(())
    }

    /// The first half of [`Session::prefill`]: checks `prompt` and forgets what the cache holds
    /// past its longest common prefix with it (the last prompt token is always recomputed: its
    /// logits are needed). Returns where the prefill starts.
    pub fn begin_prefill(&mut self, prompt: &[u32]) -> Result<usize> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        if prompt.len() > self.capacity() {
            return Err(Error::ContextOverflow { tokens: prompt.len(), context: self.capacity() });
        }
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // The logits of the last prompt token are needed, so it is always recomputed.
        let start = common.min(prompt.len() - 1);
        self.tokens.truncate(start);
        Ok(start)
    }

    /// Feeds `prompt[range]`, which starts where the cache ends, in one forward and writes the
    /// logits after its last token into `logits`. [`pieces`] says which ranges round as the
    /// whole prefill does.
    pub fn prefill_piece(
        &mut self,
        prompt: &[u32],
        range: Range<usize>,
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        if range.start != self.tokens.len() || range.is_empty() || range.end > prompt.len() {
            return Err(Error::InvalidArgument(format!("a prefill piece {range:?} not where the cache ends")));
        }
        let chunk = &prompt[range.clone()];
        self.model.forward_into(Step::prefill(chunk, range.start), &mut self.cache, policy, counts, logits)?;
        self.tokens.extend_from_slice(chunk);
        Ok(())
    }

    /// Feeds one generated token and writes the logits for the next into `logits`.
    pub fn decode(
        &mut self,
        token: u32,
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let step = Step::decode(&token, self.tokens.len());
        self.model.forward_into(step, &mut self.cache, policy, counts, logits)?;
        self.tokens.push(token);
        Ok(())
    }

    /// Feeds each sequence's tokens to its session in one forward step and writes the logits
    /// after each token, `[rows, vocab]` in feed order, into `logits`. Every row rounds as its
    /// own decode step ([`crate::kernels::Rounding::PerRow`]), so a one-token feed gets the bits
    /// [`Session::decode`] would give it, and a longer one those of [`Session::verify`].
    pub fn feed_batch(model: &Llama, feeds: &mut [Feed], logits: &mut Vec<f32>) -> Result<()> {
        let mut seqs: Vec<SeqStep> = feeds
            .iter_mut()
            .map(|f| SeqStep {
                step: match f.tokens {
                    [token] => Step::decode(token, f.session.tokens.len()),
                    tokens => Step::verify(tokens, f.session.tokens.len()),
                },
                cache: &mut f.session.cache,
                policy: &mut *f.policy,
                counts: &mut *f.counts,
            })
            .collect();
        model.forward_batch(&mut seqs, logits)?;
        for f in feeds.iter_mut() {
            f.session.tokens.extend_from_slice(f.tokens);
        }
        Ok(())
    }

    /// Feeds `tokens` in one forward whose rows round exactly as decode steps would (see
    /// [`Step::verify`]) and writes the logits after each of them, `[rows, vocab]`, into `logits`.
    pub fn verify(
        &mut self,
        tokens: &[u32],
        policy: &mut dyn SkipPolicy,
        counts: &mut BlockCounts,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let step = Step::verify(tokens, self.tokens.len());
        self.model.forward_into(step, &mut self.cache, policy, counts, logits)?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Forgets every position from `len` on. Their K/V stay in the cache's memory, never read
    /// (attention reads only positions before its own) until later steps overwrite them.
    pub fn rewind(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// The cache's keys and values of positions `0..len()` at layer `layer`, as f32.
    pub fn kv(&self, layer: usize) -> (Vec<f32>, Vec<f32>) {
        self.cache.read(layer, self.tokens.len())
    }
}
