//! A fixed run: each budget token skips the FFNs of the first `k` window layers, with no
//! saturation test and no randomness (the paper's No Input Adaptive draws the place at random:
//! `no-adaptive`). Same schedule and warm-up as
//! [`SaturationRun`](crate::skip::SaturationRun), which places its run after the first saturated layer instead.

use crate::skip::schedule::{Schedule, ScheduleConfig};
use crate::skip::{LayerPlan, Phase, PolicyKind, SkipPolicy};

#[derive(Debug, Clone)]
pub struct FixedStartRun {
    schedule: Schedule,
}

impl FixedStartRun {
    pub fn new(config: ScheduleConfig) -> Self {
        Self { schedule: Schedule::new(config) }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl SkipPolicy for FixedStartRun {
    fn name(&self) -> &str {
        PolicyKind::FixedStart.name()
    }

    fn begin_step(&mut self, phase: Phase) {
        self.schedule.begin_step(phase);
        if self.schedule.budget() > 0 {
            let start = self.schedule.window().start;
            self.schedule.start_run(start, usize::MAX);
        }
    }

    fn plan(&mut self, layer: usize) -> LayerPlan {
        self.schedule.plan(layer, LayerPlan::SkipFfn)
    }

    fn past_warmup(&self) -> bool {
        self.schedule.past_warmup()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, sat, step};

    #[test]
    fn skips_the_first_k_window_layers_without_testing() {
        let mut config = ScheduleConfig::new(30, 0.3); // k = 10, 11, 11, 11, 11, window 5..25
        config.warmup = 1;
        let mut p = FixedStartRun::new(config);
        assert!(step(&mut p, Phase::Prefill, 30, |_| sat(0.0)).skipped().is_empty());
        let traces = decode(&mut p, 1 + 6, 30, |_| sat(0.0));
        assert!(traces[0].skipped().is_empty(), "warm-up");
        assert_eq!(traces[1].skipped(), (5..15).collect::<Vec<_>>());
        assert_eq!(traces[2].skipped(), (5..16).collect::<Vec<_>>());
        assert!(traces[6].skipped().is_empty(), "sixth token");
        assert!(traces.iter().all(|t| t.measured.is_empty()));
    }

    #[test]
    fn run_never_leaves_the_window() {
        let mut config = ScheduleConfig::new(10, 0.7); // m = 8.4, capped at the window 2..8
        config.warmup = 0;
        let mut p = FixedStartRun::new(config);
        assert_eq!(step(&mut p, Phase::Decode, 10, |_| sat(0.0)).skipped(), (2..8).collect::<Vec<_>>());
    }
}
