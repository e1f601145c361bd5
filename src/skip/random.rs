//! The paper's two random baselines. Each budget token skips one contiguous run of `k` FFNs,
//! placed without looking at the token: *Random Skip* starts it uniformly anywhere in
//! `[0, L − k]`, cold layers included; *No Input Adaptive* places it uniformly inside the window.
//! Neither run is cut, so both skip exactly the budget. Same schedule and warm-up as
//! [`SaturationRun`](crate::skip::SaturationRun), so any gap between them is the saturation
//! test's doing.

use std::ops::RangeInclusive;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::skip::schedule::{Schedule, ScheduleConfig};
use crate::skip::{LayerPlan, Phase, PolicyKind, SkipPolicy};

/// Where a random run may lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere among the model's layers (Random Skip).
    AnyLayer,
    /// Inside the window between the cold regions (No Input Adaptive).
    InsideWindow,
}

#[derive(Debug, Clone)]
pub struct RandomRun {
    schedule: Schedule,
    placement: Placement,
    rng: StdRng,
}

impl RandomRun {
    /// Reproducible: the same seed draws the same runs.
    pub fn new(config: ScheduleConfig, placement: Placement, seed: u64) -> Self {
        Self { schedule: Schedule::new(config), placement, rng: StdRng::seed_from_u64(seed) }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The starts a run of `k` blocks may take (`k` never exceeds the window).
    fn starts(&self, k: usize) -> RangeInclusive<usize> {
        match self.placement {
            Placement::AnyLayer => 0..=self.schedule.config().n_layers - k,
            Placement::InsideWindow => {
                let window = self.schedule.window();
                window.start..=window.end - k
            }
        }
    }
}

impl SkipPolicy for RandomRun {
    fn name(&self) -> &str {
        match self.placement {
            Placement::AnyLayer => PolicyKind::Random.name(),
            Placement::InsideWindow => PolicyKind::NoAdaptive.name(),
        }
    }

    fn begin_step(&mut self, phase: Phase) {
        self.schedule.begin_step(phase);
        let k = self.schedule.budget();
        if k > 0 {
            let start = self.rng.random_range(self.starts(k));
            self.schedule.place_run(start);
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

    const L: usize = 30;

    fn policy(placement: Placement, seed: u64) -> RandomRun {
        let mut config = ScheduleConfig::new(L, 0.25); // k = 9, window 5..25
        config.warmup = 2;
        RandomRun::new(config, placement, seed)
    }

    fn runs(placement: Placement, seed: u64, n: usize) -> Vec<Vec<usize>> {
        let mut p = policy(placement, seed);
        assert!(step(&mut p, Phase::Prefill, L, |_| sat(1.0)).skipped().is_empty());
        decode(&mut p, n, L, |_| sat(1.0)).iter().map(|t| t.skipped()).collect()
    }

    /// The starts drawn over many tokens, checking that every run is whole and contiguous.
    fn starts(placement: Placement) -> std::collections::BTreeSet<usize> {
        let all = runs(placement, 7, 2 + 1200);
        assert!(all[..2].iter().all(Vec::is_empty), "warm-up is dense");
        let mut starts = std::collections::BTreeSet::new();
        for (i, run) in all[2..].iter().enumerate() {
            if i % 6 == 5 {
                assert!(run.is_empty(), "sixth token is dense");
                continue;
            }
            let first = run[0];
            assert_eq!(*run, (first..first + 9).collect::<Vec<_>>(), "k = 9 contiguous, never cut");
            starts.insert(first);
        }
        starts
    }

    #[test]
    fn reproducible_by_seed() {
        for placement in [Placement::AnyLayer, Placement::InsideWindow] {
            assert_eq!(runs(placement, 3, 200), runs(placement, 3, 200));
            assert_ne!(runs(placement, 3, 200), runs(placement, 4, 200));
        }
    }

    #[test]
    fn random_skip_starts_anywhere_cold_layers_included() {
        assert_eq!(starts(Placement::AnyLayer), (0..=L - 9).collect());
    }

    #[test]
    fn no_adaptive_places_the_whole_run_inside_the_window() {
        assert_eq!(starts(Placement::InsideWindow), (5..=25 - 9).collect());
    }

    #[test]
    fn never_measures_saturation() {
        let mut p = policy(Placement::AnyLayer, 0);
        assert!(decode(&mut p, 20, L, |_| sat(1.0)).iter().all(|t| t.measured.is_empty()));
    }
}
