//! The per-sequence state the run-based policies share: warm-up, the six-token budget cycle, and
//! the FFN (or layer) run of the token being decoded.
//!
//! After `warmup` dense decode steps, tokens go in cycles of six: five tokens with a budget of `k`
//! skipped blocks, then one dense token. For a target ratio `r` over `L` layers the mean budget of
//! a budget token is
//!
//! ```text
//!     m = 6 r L / 5        so that   (5 m + 0) / 6 = r L   skipped blocks per post-warm-up token
//! ```
//!
//! and the `j`-th budget token gets `k_j = ⌊m (j + 1)⌋ − ⌊m j⌋` (Bresenham): `k` alternates
//! between `⌊m⌋` and `⌈m⌉` and never drifts from the target. `k` is capped at the window size.
//! This is the *intended* ratio; runs cut at the cold end and tokens that never saturate make the
//! realised ratio lower.

use std::ops::Range;

use crate::skip::{LayerPlan, Phase};

/// Dense decode steps at the start of a sequence (attention sinks keep exact K/V).
pub const DEFAULT_WARMUP: usize = 16;
/// The paper's cosine threshold.
pub const DEFAULT_TAU: f32 = 0.95;
/// Tokens per budget cycle: `CYCLE - 1` budget tokens, then one dense token.
const CYCLE: usize = 6;
/// Absorbs the rounding error of `6 r L / 5` in f64 (e.g. `6 · 0.3 · 30 / 5 = 10.7999…`).
const EPS: f64 = 1e-9;

/// The cold regions of `n_layers` layers: about 15% each side, as the authors' 5 of 32.
pub fn default_cold(n_layers: usize) -> usize {
    (0.15 * n_layers as f64 - EPS).ceil().max(0.0) as usize
}

/// Where and how much a run-based policy may skip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleConfig {
    pub n_layers: usize,
    /// The first layers, never skipped.
    pub cold_start: usize,
    /// The last layers, never skipped; runs are cut where this region starts.
    pub cold_end: usize,
    /// Decode steps that run dense before any skipping.
    pub warmup: usize,
    /// The target share `r` of FFN blocks skipped per post-warm-up token.
    pub target_ratio: f64,
}

impl ScheduleConfig {
    /// The defaults: cold regions of [`default_cold`] layers each side, [`DEFAULT_WARMUP`] steps.
    pub fn new(n_layers: usize, target_ratio: f64) -> Self {
        let cold = default_cold(n_layers);
        Self { n_layers, cold_start: cold, cold_end: cold, warmup: DEFAULT_WARMUP, target_ratio }
    }

    /// The skippable layers `[cold_start, n_layers - cold_end)`; empty when the cold regions meet.
    pub fn window(&self) -> Range<usize> {
        let end = self.n_layers.saturating_sub(self.cold_end);
        self.cold_start.min(end)..end
    }

    /// `m = 6 r L / 5`, the mean budget of a budget token before the window cap.
    pub fn mean_budget(&self) -> f64 {
        (CYCLE as f64) * self.target_ratio * self.n_layers as f64 / (CYCLE - 1) as f64
    }

    /// The budget of the `p`-th post-warm-up token (from 0).
    fn token_budget(&self, p: usize) -> usize {
        if p % CYCLE == CYCLE - 1 {
            return 0;
        }
        let j = (p / CYCLE * (CYCLE - 1) + p % CYCLE) as f64;
        let m = self.mean_budget();
        let k = (m * (j + 1.0) + EPS).floor() - (m * j + EPS).floor();
        (k as usize).min(self.window().len())
    }
}

/// Counts the decode steps of the current prompt and says which of them are past warm-up. A
/// prefill starts a new prompt (or chat turn), and with it a new warm-up: the attention sinks
/// of the new text get exact K/V too.
#[derive(Debug, Clone)]
pub struct Warmup {
    len: usize,
    decode_steps: usize,
    /// Whether the step begun last is a decode step past the warm-up.
    past: bool,
}

impl Warmup {
    pub fn new(len: usize) -> Self {
        Self { len, decode_steps: 0, past: false }
    }

    /// Starts a step; returns the index of this step among the prompt's post-warm-up decode
    /// steps, or `None` for prefill and warm-up steps.
    pub fn begin_step(&mut self, phase: Phase) -> Option<usize> {
        if phase == Phase::Prefill {
            self.decode_steps = 0;
            self.past = false;
            return None;
        }
        self.decode_steps += 1;
        let index = self.decode_steps.checked_sub(self.len + 1);
        self.past = index.is_some();
        index
    }

    /// Decode steps since the last prefill.
    pub fn decode_steps(&self) -> usize {
        self.decode_steps
    }

    pub fn post_warmup_steps(&self) -> usize {
        self.decode_steps.saturating_sub(self.len)
    }

    pub fn past_warmup(&self) -> bool {
        self.past
    }
}

/// Warm-up, the budget cycle and the current token's runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: ScheduleConfig,
    warmup: Warmup,
    /// Blocks the current token may still skip.
    budget: usize,
    /// The latest run of the current token (empty when none).
    run: Range<usize>,
    runs: usize,
}

impl Schedule {
    pub fn new(config: ScheduleConfig) -> Self {
        Self { config, warmup: Warmup::new(config.warmup), budget: 0, run: 0..0, runs: 0 }
    }

    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    pub fn window(&self) -> Range<usize> {
        self.config.window()
    }

    /// Starts a step: sets the token's budget (zero for prefill, warm-up and every sixth token).
    pub fn begin_step(&mut self, phase: Phase) {
        self.budget = self.warmup.begin_step(phase).map_or(0, |p| self.config.token_budget(p));
        self.run = 0..0;
        self.runs = 0;
    }

    pub fn decode_steps(&self) -> usize {
        self.warmup.decode_steps()
    }

    pub fn post_warmup_steps(&self) -> usize {
        self.warmup.post_warmup_steps()
    }

    pub fn past_warmup(&self) -> bool {
        self.warmup.past_warmup()
    }

    /// Blocks the current token may still skip.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Runs the current token has started.
    pub fn runs(&self) -> usize {
        self.runs
    }

    pub fn in_run(&self, layer: usize) -> bool {
        self.run.contains(&layer)
    }

    /// `skip` for the layers of the current run, `Full` for the others.
    pub fn plan(&self, layer: usize, skip: LayerPlan) -> LayerPlan {
        if self.in_run(layer) {
            skip
        } else {
            LayerPlan::Full
        }
    }

    /// Whether a test after `layer` could start a run at `layer + 1`: the token has budget,
    /// `layer + 1` is a window layer (so the last cold layer's test may start a run at the first
    /// window layer, where the baselines' runs may start too), no run covers `layer`, and this is
    /// the token's first run unless `recheck`.
    pub fn may_start_run_after(&self, layer: usize, recheck: bool) -> bool {
        self.budget > 0
            && self.window().contains(&(layer + 1))
            && layer >= self.run.end
            && (recheck || self.runs == 0)
    }

    /// Places a run of the whole remaining budget at `start`, wherever that lies (the caller
    /// keeps it within the layers), and spends it.
    pub fn place_run(&mut self, start: usize) -> Range<usize> {
        debug_assert!(start + self.budget <= self.config.n_layers);
        self.run = start..start + self.budget;
        self.budget = 0;
        self.runs += 1;
        self.run.clone()
    }

    /// Starts a run at `start` of the remaining budget (at most `max_len` blocks), cut at the
    /// cold end, and spends it.
    pub fn start_run(&mut self, start: usize, max_len: usize) -> Range<usize> {
        let end = (start + self.budget.min(max_len)).min(self.window().end).max(start);
        self.budget -= end - start;
        self.run = start..end;
        self.runs += 1;
        self.run.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(config: ScheduleConfig, steps: usize) -> Vec<usize> {
        let mut s = Schedule::new(config);
        s.begin_step(Phase::Prefill);
        assert_eq!(s.budget(), 0, "prefill never skips");
        (0..steps)
            .map(|_| {
                s.begin_step(Phase::Decode);
                s.budget()
            })
            .collect()
    }

    #[test]
    fn default_cold_regions_are_fifteen_percent_rounded_up() {
        assert_eq!(default_cold(30), 5);
        assert_eq!(default_cold(32), 5);
        assert_eq!(default_cold(40), 6);
        assert_eq!(default_cold(20), 3);
        assert_eq!(ScheduleConfig::new(30, 0.25).window(), 5..25);
    }

    #[test]
    fn warmup_is_dense_then_every_sixth_token_is_dense() {
        let mut config = ScheduleConfig::new(30, 0.25);
        config.warmup = 4;
        let b = budgets(config, 4 + 12);
        assert_eq!(&b[..4], &[0, 0, 0, 0]);
        assert_eq!(&b[4..], &[9, 9, 9, 9, 9, 0, 9, 9, 9, 9, 9, 0]);
    }

    #[test]
    fn fractional_budget_alternates_and_meets_the_target() {
        // r = 0.3, L = 30: m = 10.8, so each group of five budget tokens skips 54 = 5 · 10.8.
        let mut config = ScheduleConfig::new(30, 0.3);
        config.warmup = 0;
        let b = budgets(config, 600);
        assert!(b.iter().all(|&k| k == 0 || k == 10 || k == 11), "{b:?}");
        let mean = b.iter().sum::<usize>() as f64 / b.len() as f64;
        assert!((mean - 9.0).abs() < 1e-9, "mean {mean}, want r L = 9");
        // r = 0.1, L = 30: m = 3.6, alternating 3 and 4.
        let mut config = ScheduleConfig::new(30, 0.1);
        config.warmup = 0;
        let b = budgets(config, 6);
        assert_eq!(b, vec![3, 4, 3, 4, 4, 0]);
    }

    #[test]
    fn budget_is_capped_at_the_window() {
        let mut config = ScheduleConfig::new(30, 0.9); // m = 32.4 > 20 window layers
        config.warmup = 0;
        assert_eq!(budgets(config, 6), vec![20, 20, 20, 20, 20, 0]);
    }

    #[test]
    fn counts_decode_and_post_warmup_steps_and_a_prefill_starts_a_new_warmup() {
        let mut s = Schedule::new(ScheduleConfig::new(30, 0.25));
        s.begin_step(Phase::Prefill);
        let past: Vec<bool> = (0..20)
            .map(|_| {
                s.begin_step(Phase::Decode);
                s.past_warmup()
            })
            .collect();
        assert_eq!(past, [vec![false; 16], vec![true; 4]].concat());
        assert_eq!((s.decode_steps(), s.post_warmup_steps()), (20, 4));
        // The next chat turn: its prefill restarts the warm-up, so its first steps are dense.
        s.begin_step(Phase::Prefill);
        assert!(!s.past_warmup());
        s.begin_step(Phase::Decode);
        assert_eq!((s.decode_steps(), s.budget(), s.past_warmup()), (1, 0, false));
    }

    #[test]
    fn runs_spend_the_budget_and_stop_at_the_cold_end() {
        let mut config = ScheduleConfig::new(30, 0.25);
        config.warmup = 0;
        let mut s = Schedule::new(config);
        s.begin_step(Phase::Decode);
        assert!(s.may_start_run_after(4, false) && !s.may_start_run_after(3, false), "cold start");
        assert!(!s.may_start_run_after(24, true), "no window layer after 24");
        assert_eq!(s.start_run(8, 3), 8..11);
        assert_eq!(s.budget(), 6);
        assert!(!s.may_start_run_after(9, true), "inside the run");
        assert!(s.may_start_run_after(11, true) && !s.may_start_run_after(11, false));
        assert_eq!(s.start_run(20, usize::MAX), 20..25, "cut at the cold end");
        assert_eq!((s.budget(), s.runs()), (1, 2));
        assert!(s.in_run(24) && !s.in_run(25) && !s.in_run(9));
    }
}
