//! One generation as a state machine: `start` prefills, each `step` emits one token (decoding
//! when no accepted draft is queued), `finish` gives the statistics. The CLI runs the steps in
//! one loop. The server splits a step in two: `emit_next` emits the token and leaves the one
//! to feed pending, the engine decodes the pending tokens of several generations in one
//! batched forward, and `accept` samples from each one's logits.

use std::collections::VecDeque;
use std::time::Instant;

use super::logprobs::LogprobRecorder;
use super::prefill::Prefill;
use super::session::PREFILL_CHUNK;
use super::{
    Decoder, FinishReason, GenerateOptions, Generation, Session, StopMatcher, TokenLogprob, TokenSource, TokenTrace, WarmupSplit,
};
use crate::error::Result;
use crate::model::BlockCounts;
use crate::sampling::Sampler;
use crate::skip::SkipPolicy;
use crate::tokenizer::{Tokenizer, Utf8Stream};

pub struct Generator {
    max_tokens: usize,
    sampler: Sampler,
    utf8: Utf8Stream,
    stops: StopMatcher,
    logits: Vec<f32>,
    counts: WarmupSplit,
    tokens: Vec<u32>,
    text: String,
    decode_steps: usize,
    decode_rows: usize,
    prompt_tokens: usize,
    prefilled_tokens: usize,
    prefill_secs: f64,
    decode_start: Instant,
    /// Tokens chosen but not yet emitted. All but the last are already in the cache (accepted
    /// speculative drafts); the last is fed when the queue runs dry.
    queue: VecDeque<u32>,
    /// The token a stepwise decoder still has to feed before the next can be sampled.
    pending: Option<u32>,
    /// What the forward that produced the queued tokens ran.
    queued_trace: TokenTrace,
    /// The same for the latest generated token.
    token_trace: TokenTrace,
    /// Only when log-probabilities were asked for.
    logprobs: Option<LogprobRecorder>,
    finish_reason: Option<FinishReason>,
}

impl Generator {
    /// Prefills `prompt` (reusing what the session's cache already holds) and samples the
    /// first token.
    pub fn start(session: &mut Session, prompt: &[u32], opts: &GenerateOptions, decoder: &mut Decoder) -> Result<Self> {
        let mut prefill = Prefill::begin(session, prompt, opts, decoder, PREFILL_CHUNK)?;
        while !prefill.step(session, decoder)? {}
        Ok(Self::prefilled(session, prefill))
    }

    /// The generation once `prefill` is done: samples the first token.
    pub fn prefilled(session: &Session, prefill: Prefill) -> Self {
        let Prefill { prompt, opts, counts: prefill_counts, mut logits, cached, secs: prefill_secs, .. } = prefill;
        let n_layers = session.model().config.n_layers;
        let mut queued_trace = TokenTrace::new(n_layers);
        queued_trace.record(&prefill_counts, TokenSource::Prefill, false);
        let mut sampler = Sampler::new(opts.sampling.clone());
        let mut logprobs = opts.logprobs.map(LogprobRecorder::new);
        let first = LogprobRecorder::sample_with(logprobs.as_mut(), &mut sampler, &mut logits, session.tokens());
        Self {
            max_tokens: opts.max_tokens,
            sampler,
            utf8: Utf8Stream::default(),
            stops: StopMatcher::new(&opts.stop_strings),
            logits,
            counts: WarmupSplit::new(n_layers),
            tokens: Vec::new(),
            text: String::new(),
            decode_steps: 0,
            decode_rows: 0,
            prompt_tokens: prompt.len(),
            prefilled_tokens: prompt.len() - cached.min(prompt.len() - 1),
            prefill_secs,
            decode_start: Instant::now(),
            queue: VecDeque::from([first]),
            pending: None,
            token_trace: queued_trace.clone(),
            queued_trace,
            logprobs,
            finish_reason: None,
        }
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// What computed the latest generated token (the last of [`Generator::tokens`]).
    pub fn last_trace(&self) -> &TokenTrace {
        &self.token_trace
    }

    /// The latest generated token's log-probability, when they were asked for.
    pub fn last_logprob(&self) -> Option<&TokenLogprob> {
        self.logprobs.as_ref()?.last()
    }

    /// Emits the next token's text through `on_text` and runs the model when a new token is
    /// needed. Returns the finish reason once the generation has ended (then and after: no-op).
    pub fn step(
        &mut self,
        session: &mut Session,
        tokenizer: &Tokenizer,
        decoder: &mut Decoder,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Option<FinishReason>> {
        self.emit_next(session, tokenizer, decoder, on_text)?;
        if let (Some(token), Decoder::Stepwise(policy)) = (self.pending, decoder) {
            let mut logits = std::mem::take(&mut self.logits);
            let decoded = session.decode(token, policy.as_mut(), self.counts.begin_step(), &mut logits);
            if decoded.is_ok() {
                self.accept(session, policy.as_ref(), &mut logits);
            }
            self.logits = logits;
            decoded?;
        }
        Ok(self.finish_reason)
    }

    /// The first half of [`Generator::step`]: emits the next token and, for a stepwise
    /// decoder, leaves the token to feed in [`Generator::pending_decode`] (a speculative
    /// decoder runs its own forwards here). Returns the finish reason once the generation has
    /// ended.
    pub fn emit_next(
        &mut self,
        session: &mut Session,
        tokenizer: &Tokenizer,
        decoder: &mut Decoder,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Option<FinishReason>> {
        if self.finish_reason.is_some() {
            return Ok(self.finish_reason);
        }
        let reason = self.advance(session, tokenizer, decoder, on_text)?;
        if let Some((reason, stopped_by_string)) = reason {
            if !stopped_by_string {
                // Flush what was held back: an incomplete UTF-8 tail, a partial stop string.
                let (piece, hit) = self.stops.push(&self.utf8.finish());
                self.emit(&piece, on_text);
                if !hit {
                    let rest = self.stops.finish();
                    self.emit(&rest, on_text);
                }
            }
            self.finish_reason = Some(reason);
        }
        Ok(self.finish_reason)
    }

    /// The token to decode before the next can be sampled, if any.
    pub fn pending_decode(&self) -> Option<u32> {
        self.pending
    }

    /// The counts the pending decode step fills.
    pub fn step_counts(&mut self) -> &mut BlockCounts {
        self.counts.begin_step()
    }

    /// The second half of [`Generator::step`], once the pending token has been decoded under
    /// `policy` into `logits` (and the step's counts filled): samples the next token.
    pub fn accept(&mut self, session: &Session, policy: &dyn SkipPolicy, logits: &mut [f32]) {
        self.pending = None;
        self.counts.file_step(policy);
        self.queued_trace.record(self.counts.last_step(), TokenSource::Decode, !policy.past_warmup());
        self.decode_rows += 1;
        let token = LogprobRecorder::sample_with(self.logprobs.as_mut(), &mut self.sampler, logits, session.tokens());
        self.queue.push_back(token);
    }

    /// One token: `Some((reason, stopped by a stop string))` when the generation ends.
    fn advance(
        &mut self,
        session: &mut Session,
        tokenizer: &Tokenizer,
        decoder: &mut Decoder,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Option<(FinishReason, bool)>> {
        if self.max_tokens == 0 {
            return Ok(Some((FinishReason::Length, false)));
        }
        let token = self.queue.pop_front().expect("the queue is refilled before it runs dry");
        if tokenizer.stop_tokens().contains(&token) {
            return Ok(Some((FinishReason::Stop, false)));
        }
        self.tokens.push(token);
        self.token_trace.clone_from(&self.queued_trace);
        if let Some(recorder) = &mut self.logprobs {
            recorder.emitted();
        }
        let (piece, hit_stop) = self.stops.push(&self.utf8.push(tokenizer.bytes(token)));
        self.emit(&piece, on_text);
        if hit_stop {
            return Ok(Some((FinishReason::Stop, true)));
        }
        if self.tokens.len() >= self.max_tokens {
            return Ok(Some((FinishReason::Length, false)));
        }
        if self.queue.is_empty() && session.tokens().len() >= session.capacity() {
            return Ok(Some((FinishReason::Context, false)));
        }
        self.decode_steps += 1;
        if !self.queue.is_empty() {
            return Ok(None);
        }
        // Decode: run the new token through the model to get the next one(s).
        match decoder {
            Decoder::Stepwise(_) => self.pending = Some(token),
            Decoder::Speculative(speculator) => {
                let tokens = speculator.cycle(session, &mut self.sampler, token, &mut self.counts.all)?;
                self.queued_trace.record_full(TokenSource::Speculative);
                self.decode_rows = speculator.stats().verified_rows;
                self.queue.extend(tokens);
            }
        }
        Ok(None)
    }

    fn emit(&mut self, piece: &str, on_text: &mut dyn FnMut(&str)) {
        if !piece.is_empty() {
            on_text(piece);
            self.text.push_str(piece);
        }
    }

    /// The generation's text, tokens and statistics (after `step` returned a finish reason).
    pub fn finish(self, decoder: &mut Decoder) -> Generation {
        let speculation = match decoder {
            Decoder::Stepwise(_) => None,
            Decoder::Speculative(speculator) => Some(speculator.take_stats()),
        };
        Generation {
            text: self.text,
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            prefilled_tokens: self.prefilled_tokens,
            prefill_secs: self.prefill_secs,
            decode_steps: self.decode_steps,
            decode_rows: self.decode_rows,
            decode_secs: self.decode_start.elapsed().as_secs_f64(),
            finish_reason: self.finish_reason.unwrap_or(FinishReason::Length),
            decode_counts: self.counts.all,
            post_warmup_counts: self.counts.post_warmup,
            post_warmup_steps: self.counts.post_warmup_steps,
            speculation,
        }
    }
}
