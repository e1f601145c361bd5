//! One generation as a state machine: `start` prefills, each `step` emits one token (feeding
//! the model when no accepted draft is queued), `finish` gives the statistics. The CLI runs the
//! steps in one loop. The server (and the side-by-side evaluation) split a step in two:
//! `emit_next` emits the token and leaves what to feed pending (the token, or a speculative
//! decoder's token and draft), then `feed_together` feeds the pending tokens of several
//! generations in one batched forward and lets each choose its next tokens from its logits.

use std::collections::VecDeque;
use std::time::Instant;

use super::logprobs::LogprobRecorder;
use super::prefill::Prefill;
use super::session::PREFILL_CHUNK;
use super::{
    Decoder, Feed, FinishReason, GenerateOptions, Generation, Session, StopMatcher, TokenLogprob, TokenSource, TokenTrace,
    WarmupSplit,
};
use crate::error::Result;
use crate::model::{BlockCounts, Llama};
use crate::sampling::Sampler;
use crate::skip::SkipPolicy;
use crate::speculate::Drafted;
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
    /// What has to be fed before the next token can be chosen.
    pending: Option<Pending>,
    /// What the forward that produced the queued tokens ran.
    queued_trace: TokenTrace,
    /// The same for the latest generated token.
    token_trace: TokenTrace,
    /// Only when log-probabilities were asked for.
    logprobs: Option<LogprobRecorder>,
    finish_reason: Option<FinishReason>,
}

/// What a generation feeds the model next; `advance` makes it from the generation's decoder.
enum Pending {
    /// A stepwise decoder's latest token.
    Decode(u32),
    /// A speculative decoder's latest token and its draft, to verify.
    Verify(Drafted),
}

/// A pending feed's tokens, the policy they run under and the counts they fill.
type FeedParts<'g> = (&'g [u32], &'g mut dyn SkipPolicy, &'g mut BlockCounts);

/// A generation's part in a forward it shares with others ([`Generator::feed_together`]).
pub struct Member<'a, 'm> {
    pub generator: &'a mut Generator,
    pub decoder: &'a mut Decoder,
    pub session: &'a mut Session<'m>,
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
        let Prefill { prompt, opts, counts: prefill_counts, mut logits, start, secs: prefill_secs, .. } = prefill;
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
            prefilled_tokens: prompt.len() - start,
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
        let model = session.model();
        let mut logits = std::mem::take(&mut self.logits);
        let (_, fed) = Generator::feed_together(model, &mut [Member { generator: self, decoder, session }], &mut logits);
        self.logits = logits;
        fed?;
        Ok(self.finish_reason)
    }

    /// Feeds what each of `members` has pending (after [`Generator::emit_next`]) in one
    /// forward, and lets each choose its next tokens from its rows of the logits. Returns the
    /// indices of the members fed, and the forward's result (on an error none of them accepted
    /// anything).
    pub fn feed_together(model: &Llama, members: &mut [Member], logits: &mut Vec<f32>) -> (Vec<usize>, Result<()>) {
        let (mut feeds, mut fed) = (Vec::new(), Vec::new());
        for (i, m) in members.iter_mut().enumerate() {
            if let Some((tokens, policy, counts)) = m.generator.feed_parts(m.decoder) {
                fed.push((i, tokens.len()));
                feeds.push(Feed { session: &mut *m.session, tokens, policy, counts });
            }
        }
        if feeds.is_empty() {
            return (Vec::new(), Ok(()));
        }
        let start = Instant::now();
        let result = Session::feed_batch(model, &mut feeds, logits);
        let secs = start.elapsed().as_secs_f64();
        drop(feeds);
        if result.is_ok() {
            let vocab = model.config.vocab_size;
            let mut rows = logits.as_mut_slice();
            for &(i, n) in &fed {
                let (mine, rest) = rows.split_at_mut(n * vocab);
                rows = rest;
                let m = &mut members[i];
                m.generator.accept_fed(m.session, m.decoder, mine, secs);
            }
        }
        (fed.into_iter().map(|(i, _)| i).collect(), result)
    }

    /// The first half of [`Generator::step`]: emits the next token and, when the queue is
    /// empty, leaves what to feed pending for [`Generator::feed_together`] (a speculative
    /// decoder drafts here, with its own forwards when the draft is the skip policy's).
    /// Returns the finish reason once the generation has ended.
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

    /// What to feed before the next token can be chosen, with the policy it runs under (the
    /// full model's, for a speculative draft) and the counts it fills; `None` when nothing is.
    fn feed_parts<'g>(&'g mut self, decoder: &'g mut Decoder) -> Option<FeedParts<'g>> {
        match (&self.pending, decoder) {
            (Some(Pending::Decode(token)), Decoder::Stepwise(policy)) => {
                Some((std::slice::from_ref(token), policy.as_mut(), self.counts.begin_step()))
            }
            (Some(Pending::Verify(drafted)), Decoder::Speculative(speculator)) => {
                Some((drafted.rows(), speculator.verify_policy(), &mut self.counts.all))
            }
            // `advance` makes each pending feed from this generation's decoder.
            _ => None,
        }
    }

    /// The second half of [`Generator::step`], once the pending feed went through the model
    /// (in `forward_secs`) and `logits` holds the logits after each of its tokens: chooses the
    /// next token, or the accepted part of a speculative draft and the full model's next token.
    fn accept_fed(&mut self, session: &mut Session, decoder: &mut Decoder, logits: &mut [f32], forward_secs: f64) {
        match (self.pending.take(), decoder) {
            (Some(Pending::Decode(_)), Decoder::Stepwise(policy)) => {
                self.counts.file_step(policy.as_ref());
                self.queued_trace.record(self.counts.last_step(), TokenSource::Decode, !policy.past_warmup());
                self.decode_rows += 1;
                let token = LogprobRecorder::sample_with(self.logprobs.as_mut(), &mut self.sampler, logits, session.tokens());
                self.queue.push_back(token);
            }
            (Some(Pending::Verify(drafted)), Decoder::Speculative(speculator)) => {
                let tokens = speculator.judge_cycle(session, &mut self.sampler, drafted, logits, forward_secs);
                self.queued_trace.record_full(TokenSource::Speculative);
                self.decode_rows = speculator.stats().verified_rows;
                self.queue.extend(tokens);
            }
            _ => {}
        }
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
        // The new token goes through the model (with a draft, for speculation) to get the
        // next one(s).
        self.pending = Some(match decoder {
            Decoder::Stepwise(_) => Pending::Decode(token),
            Decoder::Speculative(speculator) => Pending::Verify(speculator.draft_cycle(session, &mut self.sampler, token)?),
        });
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
