//! FFN-SkipLLM (Jaiswal et al., 2024): adaptive FFN skipping during decoding.
//!
//! For layer `l`, `h_mid = x + Attn(·)` and `h_out = h_mid + FFN(·)`. When the FFN barely turns
//! the residual stream, `c_l = cos(h_mid, h_out) > τ`, the token is taken to have saturated and the
//! FFNs of the next `k` layers are skipped in a row without re-checking (attention still runs, so
//! the KV cache stays complete). The run is cut at the cold end region; a token gets one run and a
//! token that never crosses `τ` runs dense. `k` comes from the [`Schedule`].

use crate::skip::schedule::{Schedule, ScheduleConfig};
use crate::skip::{LayerPlan, Phase, PolicyKind, Saturation, SkipPolicy};

/// The saturation test run after a window layer's FFN.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The paper's test: `cos(h_mid, h_out) > tau`.
    Cosine { tau: f32 },
    /// `cos(h_mid, h_out) > taus[l]` at layer `l`: each layer against its own cosine
    /// distribution (`ffnskip calibrate --per-layer`), since one global `tau` sits below
    /// almost every layer's cosine on small models.
    CosinePerLayer { taus: Vec<f32> },
    /// `‖FFN(u)‖ / ‖h_mid‖ < threshold`: the FFN's update is small against the residual stream,
    /// whatever its direction.
    NormRatio { threshold: f32 },
    /// The whole layer's test, for early exit: `cos(x, h_out) > tau`.
    LayerCosine { tau: f32 },
}

impl Signal {
    fn crosses(&self, layer: usize, s: &Saturation) -> bool {
        match self {
            Signal::Cosine { tau } => s.cosine > *tau,
            Signal::CosinePerLayer { taus } => s.cosine > taus[layer],
            Signal::NormRatio { threshold } => s.norm_ratio < *threshold,
            Signal::LayerCosine { tau } => s.layer_cosine > *tau,
        }
    }
}

/// A run of skipped blocks placed by a saturation test: the paper's method, and (with a
/// whole-layer test and whole-layer runs) its early-exit baseline.
#[derive(Debug, Clone)]
pub struct SaturationRun {
    kind: PolicyKind,
    schedule: Schedule,
    signal: Signal,
    /// What a layer inside a run does.
    skip: LayerPlan,
    recheck: bool,
    max_run: usize,
}

impl SaturationRun {
    /// The paper's method: one run per token of the token's whole budget.
    pub fn new(config: ScheduleConfig, signal: Signal) -> Self {
        Self::with_plan(PolicyKind::FfnSkip, config, signal, LayerPlan::SkipFfn)
    }

    pub(crate) fn with_plan(kind: PolicyKind, config: ScheduleConfig, signal: Signal, skip: LayerPlan) -> Self {
        Self { kind, schedule: Schedule::new(config), signal, skip, recheck: false, max_run: usize::MAX }
    }

    /// Tests the signal again after a run ends; further runs spend the token's remaining budget.
    pub fn with_recheck(mut self, recheck: bool) -> Self {
        self.recheck = recheck;
        self
    }

    /// Caps each run at `max_run` blocks. A run otherwise takes the whole remaining budget, so
    /// only a cap leaves budget for a recheck to spend.
    pub fn with_max_run(mut self, max_run: usize) -> Self {
        self.max_run = max_run;
        self
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl SkipPolicy for SaturationRun {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn past_warmup(&self) -> bool {
        self.schedule.past_warmup()
    }

    fn begin_step(&mut self, phase: Phase) {
        self.schedule.begin_step(phase);
    }

    fn plan(&mut self, layer: usize) -> LayerPlan {
        self.schedule.plan(layer, self.skip)
    }

    fn wants_saturation(&self, layer: usize) -> bool {
        self.schedule.may_start_run_after(layer, self.recheck)
    }

    fn observe(&mut self, layer: usize, saturation: Saturation) {
        if self.wants_saturation(layer) && self.signal.crosses(layer, &saturation) {
            self.schedule.start_run(layer + 1, self.max_run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, sat, step};

    const L: usize = 30;

    fn policy(ratio: f64, warmup: usize) -> SaturationRun {
        let mut config = ScheduleConfig::new(L, ratio);
        config.warmup = warmup;
        SaturationRun::new(config, Signal::Cosine { tau: 0.95 })
    }

    #[test]
    fn run_starts_after_the_first_saturated_window_layer() {
        let mut p = policy(0.25, 0); // k = 9, window 5..25
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l == 3 || l >= 9 { 0.99 } else { 0.5 }));
        assert_eq!(t.skipped(), (10..19).collect::<Vec<_>>());
        assert!(t.plans[10..19].iter().all(|&p| p == LayerPlan::SkipFfn));
        // Measured from the last cold layer (whose test may start a run at the first window
        // layer) until the crossing; nothing inside or after the run.
        assert_eq!(t.measured, (4..=9).collect::<Vec<_>>());
    }

    #[test]
    fn run_is_cut_at_the_cold_end_and_never_starts_in_it() {
        let mut p = policy(0.25, 0);
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l >= 20 { 0.99 } else { 0.5 }));
        assert_eq!(t.skipped(), vec![21, 22, 23, 24]);
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l >= 24 { 0.99 } else { 0.5 }));
        assert!(t.skipped().is_empty(), "{:?}", t.skipped());
        assert_eq!(*t.measured.last().unwrap(), 23, "no test whose run would start cold");
    }

    #[test]
    fn only_the_last_cold_layer_may_start_a_run_at_the_window_start() {
        let mut p = policy(0.25, 0);
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l < 4 { 0.99 } else { 0.5 }));
        assert!(t.skipped().is_empty());
        assert!(t.measured.iter().all(|&l| (4..24).contains(&l)));
        // The run starts where the baselines' fixed run starts: the first window layer.
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l == 4 { 0.99 } else { 0.5 }));
        assert_eq!(t.skipped(), (5..14).collect::<Vec<_>>());
    }

    #[test]
    fn prefill_warmup_and_the_sixth_token_are_dense_and_unmeasured() {
        let mut p = policy(0.25, 3);
        let t = step(&mut p, Phase::Prefill, L, |_| sat(1.0));
        assert!(t.skipped().is_empty() && t.measured.is_empty());
        let traces = decode(&mut p, 3 + 6, L, |_| sat(1.0));
        for (i, t) in traces.iter().enumerate() {
            let dense = i < 3 || i == 3 + 5;
            assert_eq!(t.skipped().is_empty(), dense, "token {i}");
            assert_eq!(t.measured.is_empty(), dense, "token {i}");
        }
        assert_eq!(traces[3].skipped(), (5..14).collect::<Vec<_>>());
    }

    #[test]
    fn mean_skipped_per_post_warmup_token_meets_the_target() {
        for (ratio, want) in [(0.25, 7.5), (0.3, 9.0)] {
            let mut p = policy(ratio, 16);
            let traces = decode(&mut p, 16 + 600, L, |_| sat(0.99));
            let skipped: usize = traces[16..].iter().map(|t| t.skipped().len()).sum();
            assert_eq!(skipped as f64 / 600.0, want, "r = {ratio}");
            assert_eq!(p.schedule().post_warmup_steps(), 600);
        }
    }

    #[test]
    fn one_run_per_token_unless_recheck() {
        // Saturated everywhere: runs of at most 3, then the signal is tested again.
        let mut once = policy(0.25, 0).with_max_run(3);
        let t = step(&mut once, Phase::Decode, L, |_| sat(0.99));
        assert_eq!(t.skipped(), vec![5, 6, 7]);
        let mut again = policy(0.25, 0).with_max_run(3).with_recheck(true);
        let t = step(&mut again, Phase::Decode, L, |_| sat(0.99));
        assert_eq!(t.skipped(), vec![5, 6, 7, 9, 10, 11, 13, 14, 15]);
        assert_eq!(t.measured, vec![4, 8, 12]);
        assert_eq!(again.schedule().runs(), 3);
    }

    #[test]
    fn per_layer_thresholds_test_each_layer_against_its_own() {
        let mut config = ScheduleConfig::new(L, 0.1); // k = 3, 4, ...
        config.warmup = 0;
        // Layer 8's cosine of 0.9 is above its own threshold; layer 7's 0.97 is not above its own.
        let mut taus = vec![0.99; L];
        taus[8] = 0.85;
        let mut p = SaturationRun::new(config, Signal::CosinePerLayer { taus });
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l == 7 { 0.97 } else { 0.9 }));
        assert_eq!(t.skipped(), vec![9, 10, 11]);
    }

    #[test]
    fn norm_ratio_signal_crosses_below_the_threshold() {
        let mut config = ScheduleConfig::new(L, 0.1); // k = 3, 4, ...
        config.warmup = 0;
        let mut p = SaturationRun::new(config, Signal::NormRatio { threshold: 0.1 });
        let t = step(&mut p, Phase::Decode, L, |l| sat(if l == 12 { 0.95 } else { 0.5 }));
        assert_eq!(t.skipped(), vec![13, 14, 15]);
    }
}
