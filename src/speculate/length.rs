//! How many tokens to draft next: the length that maximises the expected tokens per second,
//! from running estimates of what a draft costs and how often its tokens are accepted, or none
//! at all when no length beats a plain decode step.
//!
//! With per-token acceptance `α` (the chance that a drafted token is kept, given that the ones
//! before it were), a draft of `k` tokens emits `E(k) = (1 − α^(k+1)) / (1 − α)` tokens per
//! cycle (its accepted tokens and the full model's own one) and costs `k·d + v(k + 1)`: `k`
//! draft steps of `d` seconds (0 for an n-gram lookup) and a verification of `k + 1` rows,
//! modelled as `v(r) = a + b·(r − 1)` with `a` a plain decode step. A plain step emits one token
//! in `a`. Each draft source (n-gram, skip policy) keeps its own `α` and `d`; the verification
//! costs are shared. A source that does not pay is probed again after a pause that doubles
//! each time the probe does not pay either, so drafting that never pays costs a few probes.
//!
//! Sampled decoding must give the same text for the same seed, so there the lengths may not
//! depend on timings: an untimed controller uses nominal costs instead (a plain step 1, an
//! extra verified row [`PRIOR_ROW_COST`], a skip-draft step [`NOMINAL_SKIP_STEP`]) and adapts to
//! the acceptance alone.

use super::ngram;

/// The longest draft: beyond it the verification's rows cost more than a step saves.
pub const MAX_DRAFT: usize = 16;
/// Cycles of plain steps before a source that does not pay is probed again, at first and at most.
const PAUSE_START: usize = 8;
const PAUSE_MAX: usize = 256;
/// The draft length of a probe.
const PROBE: usize = 2;
/// How fast old observations fade: each new cycle's counts weigh 1, older ones by this factor.
const DECAY: f64 = 0.9;
/// Weight of the newest timing in the running costs.
const EMA: f64 = 0.2;
/// Before any verification of several rows is timed, each extra row is assumed to cost this
/// share of a plain step.
const PRIOR_ROW_COST: f64 = 0.5;
/// An untimed controller's cost of a skip-draft step, in plain steps: FFN blocks hold about
/// two thirds of a step's weights, so skipping half of them saves about a third.
const NOMINAL_SKIP_STEP: f64 = 0.7;

/// Where a draft comes from. N-gram continuations are told apart by the length of the match
/// they continue: a longer match is kept more often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ngram(usize),
    Skip,
}

const SOURCES: usize = ngram::MAX_N - ngram::MIN_N + 2;

impl Source {
    fn index(self) -> usize {
        match self {
            Source::Ngram(n) => n.clamp(ngram::MIN_N, ngram::MAX_N) - ngram::MIN_N,
            Source::Skip => SOURCES - 1,
        }
    }
}

/// What is known about one draft source.
#[derive(Debug, Clone)]
struct SourceEstimate {
    /// Decayed counts of accepted and rejected draft tokens, with a prior of α = 0.6.
    accepted: f64,
    rejected: f64,
    /// Seconds per draft step (`None`: not yet timed; n-gram lookups are free).
    step_secs: Option<f64>,
    /// Plain cycles to go before the next probe (only while the source does not pay).
    pause_left: usize,
    pause: usize,
}

impl Default for SourceEstimate {
    fn default() -> Self {
        Self { accepted: 1.5, rejected: 1.0, step_secs: None, pause_left: 0, pause: PAUSE_START }
    }
}

impl SourceEstimate {
    fn alpha(&self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }
}

#[derive(Debug, Clone, Default)]
pub struct DraftLength {
    /// Always draft exactly this many (to measure a draft at one length).
    fixed: Option<usize>,
    /// Use nominal costs instead of timings (reproducible sampling).
    untimed: bool,
    sources: [SourceEstimate; SOURCES],
    /// Seconds of a plain decode step, `a`.
    plain_secs: Option<f64>,
    /// Seconds per extra verified row, `b`.
    row_secs: Option<f64>,
}

fn blend(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |old| old + EMA * (new - old))
}

/// Expected tokens per cycle for a draft of `k` tokens at acceptance `alpha`.
fn expected_tokens(alpha: f64, k: usize) -> f64 {
    (0..=k).map(|i| alpha.powi(i as i32)).sum()
}

impl DraftLength {
    /// Drafts of `k` tokens every cycle, whatever they cost.
    pub fn fixed(k: usize) -> Self {
        Self { fixed: Some(k), ..Self::default() }
    }

    /// Whether lengths depend on timings (neither fixed nor untimed).
    pub fn is_timed(&self) -> bool {
        self.fixed.is_none() && !self.untimed
    }

    /// A controller whose lengths depend on acceptance alone, not on timings.
    pub fn untimed() -> Self {
        Self { untimed: true, ..Self::default() }
    }

    /// The draft length with the best expected tokens per second for `source` (0: a plain step
    /// does better), and that rate over a plain step's.
    fn best(&self, source: Source) -> (usize, f64) {
        let s = &self.sources[source.index()];
        let (a, b, d) = if self.untimed {
            (1.0, PRIOR_ROW_COST, NOMINAL_SKIP_STEP)
        } else {
            let Some(a) = self.plain_secs else {
                // Nothing timed yet: a plain step first, to know what a draft must beat.
                return (0, 1.0);
            };
            (a, self.row_secs.unwrap_or(PRIOR_ROW_COST * a), s.step_secs.unwrap_or(a))
        };
        let d = if source == Source::Skip { d } else { 0.0 };
        let rate = |k: usize| expected_tokens(s.alpha(), k) / (k as f64 * d + a + b * k as f64);
        (1..=MAX_DRAFT).map(|k| (k, rate(k) * a)).fold((0, 1.0), |best, c| if c.1 > best.1 { c } else { best })
    }

    /// The most tokens `source` should draft now; 0 means a plain step. Called once per cycle
    /// and source asked, which is what counts down a pause.
    pub fn budget(&mut self, source: Source) -> usize {
        if let Some(k) = self.fixed {
            return k;
        }
        let (k, _) = self.best(source);
        let s = &mut self.sources[source.index()];
        if k > 0 {
            return k;
        }
        if self.plain_secs.is_none() && !self.untimed {
            return 0;
        }
        if s.pause_left > 0 {
            s.pause_left -= 1;
            return 0;
        }
        PROBE
    }

    /// Records a cycle without a draft: one plain step of `secs`.
    pub fn record_plain(&mut self, secs: f64) {
        self.plain_secs = Some(blend(self.plain_secs, secs));
    }

    /// Records a cycle where `source` drafted `drafted` tokens in `draft_secs` (its draft steps)
    /// and the full model kept `accepted` of them in a verification of `drafted + 1` rows that
    /// took `verify_secs`.
    pub fn record_draft(&mut self, source: Source, drafted: usize, accepted: usize, draft_secs: f64, verify_secs: f64) {
        if let Some(a) = self.plain_secs {
            self.row_secs = Some(blend(self.row_secs, ((verify_secs - a) / drafted as f64).max(0.0)));
        }
        let s = &mut self.sources[source.index()];
        s.accepted = DECAY * s.accepted + accepted as f64;
        s.rejected = DECAY * s.rejected + f64::from(accepted < drafted);
        if source == Source::Skip {
            s.step_secs = Some(blend(s.step_secs, draft_secs / drafted as f64));
        }
        if self.best(source).0 > 0 {
            self.sources[source.index()].pause = PAUSE_START;
        } else {
            let s = &mut self.sources[source.index()];
            s.pause_left = s.pause;
            s.pause = (2 * s.pause).min(PAUSE_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tokens_of_a_geometric_draft() {
        assert_eq!(expected_tokens(0.5, 0), 1.0);
        assert!((expected_tokens(0.5, 2) - 1.75).abs() < 1e-12);
        assert_eq!(expected_tokens(1.0, 4), 5.0);
    }

    #[test]
    fn a_plain_step_comes_first_then_drafts_grow_with_acceptance() {
        let mut d = DraftLength::default();
        assert_eq!(d.budget(Source::Ngram(2)), 0);
        d.record_plain(0.010);
        let first = d.budget(Source::Ngram(2));
        assert!(first > 0, "a free draft at the prior acceptance pays");
        for _ in 0..20 {
            let k = d.budget(Source::Ngram(2));
            d.record_draft(Source::Ngram(2), k, k, 0.0, 0.010 + 0.002 * k as f64);
        }
        assert_eq!(d.budget(Source::Ngram(2)), MAX_DRAFT, "always accepted, cheap rows: the longest draft");
        // Then the text stops repeating itself: every proposal is rejected, and the old
        // acceptances fade.
        for _ in 0..60 {
            d.record_draft(Source::Ngram(2), 1, 0, 0.0, 0.012);
        }
        let mut plain = 0;
        while d.budget(Source::Ngram(2)) == 0 {
            plain += 1;
        }
        assert!(plain >= PAUSE_START, "never accepted: drafting pauses ({plain} plain cycles)");
    }

    /// A skip draft whose step costs 0.9 of a plain step and whose tokens are kept half the
    /// time never pays: after the probes, the pauses double.
    #[test]
    fn a_draft_that_does_not_pay_pauses_longer_each_time() {
        let mut d = DraftLength::default();
        d.record_plain(0.010);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let k = d.budget(Source::Skip);
            assert!(k > 0);
            d.record_draft(Source::Skip, k, k / 2, 0.009 * k as f64, 0.010 + 0.005 * k as f64);
            let mut plain = 0;
            while d.budget(Source::Skip) == 0 {
                plain += 1;
            }
            pauses.push(plain);
        }
        let tail = &pauses[pauses.len() - 3..];
        assert_eq!(tail, [tail[0], 2 * tail[0], 4 * tail[0]], "{pauses:?}");
    }

    /// Two untimed runs that see the same acceptances but very different timings choose the
    /// same lengths.
    #[test]
    fn an_untimed_controller_ignores_timings() {
        let lengths = |scale: f64| {
            let mut d = DraftLength::untimed();
            (0..40)
                .map(|i| {
                    let source = if i % 3 == 0 { Source::Skip } else { Source::Ngram(3) };
                    let k = d.budget(source);
                    if k == 0 {
                        d.record_plain(0.01 * scale);
                    } else {
                        d.record_draft(source, k, (i * 7) % (k + 1), 0.002 * scale * k as f64, 0.01 * scale);
                    }
                    k
                })
                .collect::<Vec<_>>()
        };
        let (fast, slow) = (lengths(1.0), lengths(37.0));
        assert_eq!(fast, slow);
        assert!(fast.iter().any(|&k| k > 0) && fast.iter().any(|&k| k != fast[0]), "{fast:?}");
    }

    #[test]
    fn a_fixed_length_ignores_costs() {
        let mut d = DraftLength::fixed(3);
        assert_eq!(d.budget(Source::Skip), 3);
        d.record_draft(Source::Skip, 3, 0, 1.0, 1.0);
        assert_eq!(d.budget(Source::Skip), 3);
    }
}
