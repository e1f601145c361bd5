//! The engine thread: it owns the model and up to `parallel` sessions (KV cache slots), takes
//! jobs from the queue when a slot is free, and advances every running job by one token per
//! round, so sequences join and leave between steps. In a round each job emits its next token,
//! then what every job has to feed goes through the model together in one batched forward (one
//! row for a stepwise decoder; the fed token and its draft for a speculative one, whose
//! skip-policy drafts run their own forwards while it drafts), then one piece of the first
//! joining job's prompt is prefilled: a long prompt delays each round by a piece, not
//! the running streams by its whole prefill. A job whose client has gone (its event channel
//! closed) is dropped at its next step, freeing the slot.

use std::sync::atomic::Ordering::Relaxed;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use super::job::{Event, Job, Outcome, TracedToken};
use super::logprobs::Entry;
use super::metrics::Metrics;
use super::Loaded;
use crate::error::Result;
use crate::generate::{Decoder, FinishReason, GenerateOptions, Generator, Member, Prefill, Session, SkipStats};
use crate::model::Llama;

/// How often the decode throughput gauge is refreshed.
const RATE_WINDOW_SECS: f64 = 1.0;

struct Running {
    slot: usize,
    job: Job,
    decoder: Decoder,
    generator: Generator,
}

/// A job whose prompt is being prefilled, a piece per round.
struct Joining {
    slot: usize,
    job: Job,
    decoder: Decoder,
    prefill: Prefill,
}

pub struct Engine<'m> {
    model: &'m Llama,
    loaded: Arc<Loaded>,
    metrics: Arc<Metrics>,
    sessions: Vec<Session<'m>>,
    free: Vec<usize>,
    running: Vec<Running>,
    /// In admission order; only the first one's prompt advances.
    joining: VecDeque<Joining>,
    /// Rows per prefill piece (see `generate::prefill`).
    piece: usize,
    /// The batched decode step's logits, `[rows, vocab]`.
    logits: Vec<f32>,
}

impl<'m> Engine<'m> {
    /// `piece`: rows per prefill piece, already checked ([`crate::generate::check_piece`]).
    pub fn new(model: &'m Llama, loaded: Arc<Loaded>, metrics: Arc<Metrics>, parallel: usize, piece: usize) -> Result<Self> {
        let sessions = (0..parallel).map(|_| Session::new(model, Some(loaded.context))).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model,
            loaded,
            metrics,
            sessions,
            free: (0..parallel).rev().collect(),
            running: Vec::new(),
            joining: VecDeque::new(),
            piece: crate::generate::piece_rows(model, piece),
            logits: Vec::new(),
        })
    }

    fn busy(&self) -> usize {
        self.running.len() + self.joining.len()
    }

    /// Serves jobs until the queue's senders are gone.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let (mut window_start, mut window_tokens) = (Instant::now(), 0u64);
        loop {
            while !self.free.is_empty() {
                let job = if self.busy() == 0 {
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                } else {
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                };
                self.metrics.queue_depth.fetch_sub(1, Relaxed);
                self.admit(job);
            }
            self.metrics.busy_slots.store(self.busy() as u64, Relaxed);
            if self.busy() == 0 {
                window_start = Instant::now();
                continue;
            }
            window_tokens += self.round();
            self.metrics.busy_slots.store(self.busy() as u64, Relaxed);
            let secs = window_start.elapsed().as_secs_f64();
            if secs >= RATE_WINDOW_SECS {
                self.metrics.set_decode_tok_s(window_tokens as f64 / secs);
                (window_start, window_tokens) = (Instant::now(), 0);
            }
        }
    }

    /// Starts a job in a free slot: its prompt joins the queue of prefills. The slot's cache is
    /// emptied first: reusing another request's prefix would prefill the rest in other chunks,
    /// rounding unlike a fresh run.
    fn admit(&mut self, job: Job) {
        if job.events.is_closed() {
            self.metrics.cancelled.fetch_add(1, Relaxed);
            return;
        }
        let slot = self.free.pop().expect("admit is called with a free slot");
        let session = &mut self.sessions[slot];
        session.rewind(0);
        let opts = GenerateOptions {
            max_tokens: job.max_tokens,
            sampling: job.sampling.clone(),
            stop_strings: job.stop.clone(),
            logprobs: job.logprobs,
        };
        let piece = self.piece;
        let started = job
            .spec
            .build(self.model.config.n_layers, None)
            .and_then(|decoder| Ok((Prefill::begin(session, &job.prompt, &opts, &decoder, piece)?, decoder)));
        match started {
            Ok((prefill, decoder)) => {
                self.metrics.prompt_tokens.fetch_add(job.prompt.len() as u64, Relaxed);
                self.joining.push_back(Joining { slot, job, decoder, prefill });
            }
            Err(e) => {
                let _ = job.events.send(Event::Failed(e.to_string()));
                self.free.push(slot);
            }
        }
    }

    /// One token for every running job, then one batched forward for those that need one,
    /// then one prefill piece; returns how many tokens were generated.
    fn round(&mut self) -> u64 {
        let mut generated = 0;
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            if r.job.events.is_closed() {
                self.metrics.cancelled.fetch_add(1, Relaxed);
                self.release(i);
                continue;
            }
            let before = r.generator.tokens().len();
            let events = &r.job.events;
            let mut text = String::new();
            let step = r.generator.emit_next(&mut self.sessions[r.slot], &self.loaded.tokenizer, &mut r.decoder, &mut |piece| {
                text.push_str(piece);
            });
            let after = r.generator.tokens().len();
            generated += (after - before) as u64;
            let tokenizer = &self.loaded.tokenizer;
            let logprob = r.generator.last_logprob().filter(|_| after > before).map(|lp| Box::new(Entry::new(lp, tokenizer)));
            if !text.is_empty() || logprob.is_some() {
                let _ = events.send(Event::Text { text, logprob });
            }
            if r.job.trace && after > before {
                let id = r.generator.tokens()[after - 1];
                let bytes = self.loaded.tokenizer.bytes(id);
                let token = TracedToken::new(after - 1, id, bytes, r.generator.last_trace());
                let _ = events.send(Event::Token(Box::new(token)));
            }
            match step {
                Ok(None) => i += 1,
                Ok(Some(reason)) => {
                    let r = self.release(i);
                    self.finish(r, reason);
                }
                Err(e) => {
                    let r = self.release(i);
                    let _ = r.job.events.send(Event::Failed(e.to_string()));
                }
            }
        }
        self.metrics.generated_tokens.fetch_add(generated, Relaxed);
        self.feed_batch();
        self.prefill_next();
        generated
    }

    /// Runs the next piece of the first joining job's prompt. Once the prompt is done, the
    /// first token is sampled and the job runs (it emits that token next round).
    fn prefill_next(&mut self) {
        let Some(j) = self.joining.front_mut() else {
            return;
        };
        if j.job.events.is_closed() {
            self.metrics.cancelled.fetch_add(1, Relaxed);
        } else {
            match j.prefill.step(&mut self.sessions[j.slot], &mut j.decoder) {
                Ok(false) => return,
                Ok(true) => {
                    let Joining { slot, job, decoder, prefill } = self.joining.pop_front().expect("front exists");
                    let generator = Generator::prefilled(&self.sessions[slot], prefill);
                    self.running.push(Running { slot, job, decoder, generator });
                    return;
                }
                Err(e) => {
                    let _ = j.job.events.send(Event::Failed(e.to_string()));
                }
            }
        }
        let j = self.joining.pop_front().expect("front exists");
        self.free.push(j.slot);
    }

    /// Feeds what every running job has pending (its token, or a speculative decoder's token
    /// and draft), all in one forward, and lets each choose its next tokens from its rows of
    /// the logits.
    fn feed_batch(&mut self) {
        let mut sessions: Vec<Option<&mut Session<'m>>> = self.sessions.iter_mut().map(Some).collect();
        let mut members: Vec<Member> = self
            .running
            .iter_mut()
            .map(|r| Member {
                generator: &mut r.generator,
                decoder: &mut r.decoder,
                session: sessions[r.slot].take().expect("one running job per slot"),
            })
            .collect();
        let (fed, result) = Generator::feed_together(self.model, &mut members, &mut self.logits);
        drop(members);
        if let Err(e) = result {
            // Highest index first: `release` moves the last job into the freed place.
            for &i in fed.iter().rev() {
                let r = self.release(i);
                let _ = r.job.events.send(Event::Failed(e.to_string()));
            }
        }
    }

    fn release(&mut self, i: usize) -> Running {
        let r = self.running.swap_remove(i);
        self.free.push(r.slot);
        r
    }

    fn finish(&self, mut r: Running, reason: FinishReason) {
        let policy = r.job.spec.to_string();
        let gen = r.generator.finish(&mut r.decoder);
        let skip = SkipStats::of(&gen, self.model);
        let skipped: u64 = skip.ffn_skipped_per_layer.iter().sum();
        self.metrics.ffn_skipped.fetch_add(skipped, Relaxed);
        self.metrics.ffn_blocks.fetch_add((gen.decode_rows * self.model.config.n_layers) as u64, Relaxed);
        let outcome = Outcome {
            finish_reason: match reason {
                FinishReason::Stop => "stop",
                FinishReason::Length | FinishReason::Context => "length",
            },
            prompt_tokens: gen.prompt_tokens,
            completion_tokens: gen.tokens.len(),
            policy,
            ffn_skip_ratio: skip.ffn_skip_ratio,
            ffn_skip_ratio_post_warmup: skip.ffn_skip_ratio_post_warmup,
        };
        let _ = r.job.events.send(Event::Done(Box::new(outcome)));
    }
}
