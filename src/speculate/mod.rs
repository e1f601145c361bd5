//! Lossless speculative decoding: cheap drafts (the model under a skip policy, or an n-gram
//! lookup of the text so far) checked by the full model in one forward. Greedy output is the
//! dense output token for token; sampled output has the dense distribution.
//!
//! One cycle, with `token` sampled but not yet fed and the cache holding everything before it:
//!
//! ```text
//! draft   d1 … dk              skip-policy decode steps from `token` (or an n-gram lookup)
//! verify  [token, d1 … dk]     one forward of the full model, every row rounded as a decode step
//! judge   keep d1 … dj         while the full model agrees (greedy) or the accept rule keeps them
//! emit    d1 … dj, c           c: the full model's own token at the first disagreement
//! rewind  the cache to token, d1 … dj: the rejected rows' K/V are never read, later overwritten
//! ```

mod draft_spec;
mod judge;
mod length;
pub mod ngram;

use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use draft_spec::DraftSpec;
pub use judge::{judge, Verdict};
pub use length::{DraftLength, Source, MAX_DRAFT};

use crate::error::Result;
use crate::generate::Session;
use crate::model::BlockCounts;
use crate::sampling::Sampler;
use crate::skip::{Calibration, Dense, SkipPolicy};

/// A skip draft stops after a token it gave less than this probability (Draft & Verify's
/// confidence cut-off): the tokens after an unlikely one are rarely accepted.
pub const MIN_CONFIDENCE: f32 = 0.5;

/// What speculation did over a generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecStats {
    pub draft: String,
    /// Verifications that checked at least one drafted token.
    pub verifications: usize,
    /// Steps taken without a draft (no n-gram match, or drafting paused because it did not pay).
    pub plain_steps: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Rows the verifying forwards computed (the fed token of each cycle and its draft).
    pub verified_rows: usize,
    /// Skip-policy decode steps spent drafting.
    pub draft_steps: usize,
    /// Share of the FFN blocks the draft steps skipped.
    pub draft_ffn_skip_ratio: f64,
    pub draft_secs: f64,
    pub verify_secs: f64,
    /// `accepted / drafted`.
    pub acceptance_rate: f64,
    /// Tokens emitted per verification that had a draft (its accepted drafts plus the full
    /// model's own token).
    pub tokens_per_verification: f64,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Drafts and verifies, cycle after cycle, for one generation.
pub struct Speculator {
    spec: DraftSpec,
    policy: Option<Box<dyn SkipPolicy>>,
    length: DraftLength,
    stats: SpecStats,
    draft_counts: BlockCounts,
    n_layers: usize,
    draft_logits: Vec<f32>,
    verify_logits: Vec<f32>,
    verify_policy: Dense,
}

/// A cycle between its draft and its verification: the rows to verify (the fed token, then
/// the draft) and what judging them needs.
pub struct Drafted {
    rows: Vec<u32>,
    draft: Draft,
    /// The session's length before the fed token.
    n0: usize,
    draft_secs: f64,
}

impl Drafted {
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }
}

/// A draft: where it came from, its tokens and the distribution each was drawn from.
struct Draft {
    source: Source,
    tokens: Vec<u32>,
    dists: Vec<Vec<(u32, f32)>>,
}

impl Speculator {
    pub fn new(spec: DraftSpec, n_layers: usize, calibration: Option<&Calibration>) -> Result<Self> {
        let policy = spec.skip_policy().map(|p| p.build(n_layers, calibration)).transpose()?;
        Ok(Self {
            stats: SpecStats { draft: spec.to_string(), ..Default::default() },
            spec,
            policy,
            length: DraftLength::default(),
            draft_counts: BlockCounts::new(n_layers),
            n_layers,
            draft_logits: Vec::new(),
            verify_logits: Vec::new(),
            verify_policy: Dense,
        })
    }

    /// The statistics since the last [`Speculator::take_stats`], which starts them anew.
    pub fn take_stats(&mut self) -> SpecStats {
        let stats = self.stats();
        self.stats = SpecStats { draft: self.spec.to_string(), ..Default::default() };
        self.draft_counts = BlockCounts::new(self.n_layers);
        stats
    }

    /// Drafts exactly `k` tokens (fewer only at the context's end or a skip draft's
    /// confidence cut-off) every cycle instead of adapting: to measure a draft's acceptance
    /// and cost at one length.
    pub fn with_fixed_length(mut self, k: usize) -> Self {
        self.length = DraftLength::fixed(k);
        self
    }

    pub fn stats(&self) -> SpecStats {
        let mut stats = self.stats.clone();
        let ran: u64 = self.draft_counts.ffn.iter().sum();
        let all = stats.draft_steps * self.n_layers;
        stats.draft_ffn_skip_ratio = if all == 0 { 0.0 } else { 1.0 - ratio(ran as usize, all) };
        stats.acceptance_rate = ratio(stats.accepted, stats.drafted);
        stats.tokens_per_verification = ratio(stats.accepted + stats.verifications, stats.verifications);
        stats
    }

    /// One cycle: feeds `token` (sampled, not yet in the cache) with as many drafted tokens as
    /// the full model accepts, and returns those accepted tokens followed by the full model's
    /// next one, which is not yet fed. `counts` gets the verifying forwards' blocks.
    pub fn cycle(
        &mut self,
        session: &mut Session,
        sampler: &mut Sampler,
        token: u32,
        counts: &mut BlockCounts,
    ) -> Result<Vec<u32>> {
        let drafted = self.draft_cycle(session, sampler, token)?;
        let start = Instant::now();
        let mut logits = std::mem::take(&mut self.verify_logits);
        let verified = session.verify(drafted.rows(), &mut self.verify_policy, counts, &mut logits);
        let out = verified.map(|()| self.judge_cycle(session, sampler, drafted, &mut logits, start.elapsed().as_secs_f64()));
        self.verify_logits = logits;
        out
    }

    /// The first half of [`Speculator::cycle`]: drafts after `token`. The caller then feeds
    /// [`Drafted::rows`] to the session in a verifying forward (`Session::verify`, or its rows
    /// in a batched step) under [`Speculator::verify_policy`].
    pub fn draft_cycle(&mut self, session: &mut Session, sampler: &mut Sampler, token: u32) -> Result<Drafted> {
        if !sampler.params().is_greedy() && self.length.is_timed() {
            // Sampled text must not depend on how fast the machine was (see `length`).
            self.length = DraftLength::untimed();
        }
        let start = Instant::now();
        let n0 = session.tokens().len();
        // Verification needs a position for `token` and one per drafted token.
        let room = session.capacity().saturating_sub(n0 + 1);
        let draft = self.draft(session, sampler, token, room)?;
        let rows = std::iter::once(token).chain(draft.tokens.iter().copied()).collect();
        Ok(Drafted { rows, draft, n0, draft_secs: start.elapsed().as_secs_f64() })
    }

    /// The full model's policy for the verifying forward.
    pub fn verify_policy(&mut self) -> &mut dyn SkipPolicy {
        &mut self.verify_policy
    }

    /// The second half of [`Speculator::cycle`], once the session has been fed the draft's rows
    /// and `logits` holds the logits after each, `[rows, vocab]`: keeps what the full model
    /// accepts, rewinds the rest, and returns the accepted tokens followed by the full model's
    /// next one. `verify_secs`: what the verifying forward took.
    pub fn judge_cycle(
        &mut self,
        session: &mut Session,
        sampler: &mut Sampler,
        drafted: Drafted,
        logits: &mut [f32],
        verify_secs: f64,
    ) -> Vec<u32> {
        let Drafted { rows, draft, n0, draft_secs } = drafted;
        let vocab = logits.len() / rows.len();
        let mut history = session.tokens()[..=n0].to_vec();
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in logits.chunks_exact_mut(vocab).enumerate() {
            let p = sampler.distribution(row, &history);
            let Some(&d) = draft.tokens.get(i) else {
                out.push(sampler.draw(&p));
                break;
            };
            match judge(&p, &draft.dists[i], d, sampler) {
                Verdict::Accept => {
                    out.push(d);
                    history.push(d);
                }
                Verdict::Replace(t) => {
                    out.push(t);
                    break;
                }
            }
        }
        let accepted = out.len() - 1;
        session.rewind(n0 + 1 + accepted);

        let k = draft.tokens.len();
        self.stats.verified_rows += rows.len();
        self.stats.draft_secs += draft_secs;
        self.stats.verify_secs += verify_secs;
        if k == 0 {
            self.stats.plain_steps += 1;
            self.length.record_plain(verify_secs);
        } else {
            self.stats.verifications += 1;
            self.stats.drafted += k;
            self.stats.accepted += accepted;
            self.length.record_draft(draft.source, k, accepted, draft_secs, verify_secs);
        }
        out
    }

    /// Draft tokens after `token`, at most `room`: the n-gram continuation if the draft kind
    /// uses one, the text has one and it pays now, else skip-policy decode steps (rewound
    /// afterwards) if they pay; none when neither does.
    fn draft(&mut self, session: &mut Session, sampler: &mut Sampler, token: u32, room: usize) -> Result<Draft> {
        let mut draft = Draft { source: Source::Skip, tokens: Vec::new(), dists: Vec::new() };
        if self.spec.uses_ngram() {
            let mut history = session.tokens().to_vec();
            history.push(token);
            if let Some(found) = ngram::lookup(&history, room.min(MAX_DRAFT)) {
                draft.source = Source::Ngram(found.n);
                let budget = self.length.budget(draft.source);
                draft.tokens = found.tokens[..budget.min(found.tokens.len())].to_vec();
                // A proposal, not a draw: all of its probability on the proposed token.
                draft.dists = draft.tokens.iter().map(|&t| vec![(t, 1.0)]).collect();
                if !draft.tokens.is_empty() {
                    return Ok(draft);
                }
            }
        }
        let Some(policy) = self.policy.as_deref_mut() else {
            return Ok(draft);
        };
        draft.source = Source::Skip;
        let budget = self.length.budget(Source::Skip).min(room);
        let n0 = session.tokens().len();
        let mut next = token;
        for _ in 0..budget {
            session.decode(next, policy, &mut self.draft_counts, &mut self.draft_logits)?;
            self.stats.draft_steps += 1;
            let confidence = top_probability(&self.draft_logits);
            let dist = sampler.distribution(&mut self.draft_logits, session.tokens());
            next = sampler.draw(&dist);
            draft.tokens.push(next);
            draft.dists.push(dist);
            if confidence < MIN_CONFIDENCE {
                break;
            }
        }
        session.rewind(n0);
        Ok(draft)
    }
}

/// The largest softmax probability of `logits`.
fn top_probability(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    1.0 / logits.iter().map(|&l| (l - max).exp()).sum::<f32>()
}
