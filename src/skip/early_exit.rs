//! The paper's early-exit baseline (CALM/SkipDecode style): after a window layer whose output
//! barely differs from its input, `cos(x, h_out) > τ`, the next `k` *whole* layers are skipped.
//! Their K/V for this position are projected from the exit hidden state ("state copying"), the
//! approximation the paper blames for hallucination, against FFN skipping's exact attention.
//! Same schedule, budget, warm-up and cold regions as [`FfnSkip`](crate::skip::FfnSkip).

use crate::skip::schedule::{Schedule, ScheduleConfig};
use crate::skip::{LayerPlan, Phase, Saturation, SkipPolicy};

#[derive(Debug, Clone)]
pub struct LayerEarlyExit {
    schedule: Schedule,
    tau: f32,
    recheck: bool,
    max_run: usize,
}

impl LayerEarlyExit {
    /// One run per token of the token's whole budget, after the first layer with
    /// `cos(x, h_out) > tau`.
    pub fn new(config: ScheduleConfig, tau: f32) -> Self {
        Self { schedule: Schedule::new(config), tau, recheck: false, max_run: usize::MAX }
    }

    /// Tests again after a run ends; further runs spend the token's remaining budget.
    pub fn with_recheck(mut self, recheck: bool) -> Self {
        self.recheck = recheck;
        self
    }

    /// Caps each run at `max_run` layers.
    pub fn with_max_run(mut self, max_run: usize) -> Self {
        self.max_run = max_run;
        self
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl SkipPolicy for LayerEarlyExit {
    fn name(&self) -> &str {
        "layer-early-exit"
    }

    fn begin_step(&mut self, phase: Phase) {
        self.schedule.begin_step(phase);
    }

    fn plan(&mut self, layer: usize) -> LayerPlan {
        if self.schedule.in_run(layer) {
            LayerPlan::SkipLayerCopyKv
        } else {
            LayerPlan::Full
        }
    }

    fn wants_saturation(&self, layer: usize) -> bool {
        self.schedule.may_start_run_after(layer, self.recheck)
    }

    fn observe(&mut self, layer: usize, saturation: Saturation) {
        if self.wants_saturation(layer) && saturation.layer_cosine > self.tau {
            self.schedule.start_run(layer + 1, self.max_run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, step};

    const L: usize = 30;

    fn policy(warmup: usize) -> LayerEarlyExit {
        let mut config = ScheduleConfig::new(L, 0.25); // k = 9, window 5..25
        config.warmup = warmup;
        LayerEarlyExit::new(config, 0.95)
    }

    /// FFN cosine always saturated; the layer cosine only from `from` on.
    fn signal(from: usize) -> impl Fn(usize) -> Saturation {
        move |l| Saturation {
            cosine: 0.99,
            norm_ratio: 0.01,
            layer_cosine: if l >= from { 0.99 } else { 0.5 },
        }
    }

    #[test]
    fn skips_whole_layers_after_the_layer_cosine_crosses() {
        let mut p = policy(0);
        let t = step(&mut p, Phase::Decode, L, signal(11));
        assert_eq!(t.skipped(), (12..21).collect::<Vec<_>>());
        assert!(t.plans[12..21].iter().all(|&p| p == LayerPlan::SkipLayerCopyKv));
        assert_eq!(t.measured, (5..=11).collect::<Vec<_>>());
        let t = step(&mut p, Phase::Decode, L, signal(19));
        assert_eq!(t.skipped(), (20..25).collect::<Vec<_>>(), "cut at the cold end");
    }

    #[test]
    fn dense_in_prefill_warmup_and_cold_regions() {
        let mut p = policy(2);
        assert!(step(&mut p, Phase::Prefill, L, signal(0)).skipped().is_empty());
        let traces = decode(&mut p, 2, L, signal(0));
        assert!(traces.iter().all(|t| t.skipped().is_empty() && t.measured.is_empty()));
        let t = step(&mut p, Phase::Decode, L, |l| {
            let c = if (5..24).contains(&l) { 0.5 } else { 0.99 };
            Saturation { cosine: c, norm_ratio: 0.0, layer_cosine: c }
        });
        assert!(t.skipped().is_empty(), "{:?}", t.skipped());
    }
}
