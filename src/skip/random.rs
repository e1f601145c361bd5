//! The paper's random baseline: each budget token skips one contiguous run of `k` FFNs starting
//! at a uniformly random layer of the window, cut at the cold end. Same schedule and warm-up as
//! [`FfnSkip`](crate::skip::FfnSkip), so any gap between the two is the saturation test's doing.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::skip::schedule::{Schedule, ScheduleConfig};
use crate::skip::{LayerPlan, Phase, SkipPolicy};

#[derive(Debug, Clone)]
pub struct RandomRun {
    schedule: Schedule,
    rng: StdRng,
}

impl RandomRun {
    /// Reproducible: the same seed draws the same runs.
    pub fn new(config: ScheduleConfig, seed: u64) -> Self {
        Self { schedule: Schedule::new(config), rng: StdRng::seed_from_u64(seed) }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl SkipPolicy for RandomRun {
    fn name(&self) -> &str {
        "random"
    }

    fn begin_step(&mut self, phase: Phase) {
        self.schedule.begin_step(phase);
        if self.schedule.budget() > 0 {
            let start = self.rng.random_range(self.schedule.window());
            self.schedule.start_run(start, usize::MAX);
        }
    }

    fn plan(&mut self, layer: usize) -> LayerPlan {
        self.schedule.plan(layer, LayerPlan::SkipFfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, sat, step};

    const L: usize = 30;

    fn policy(seed: u64) -> RandomRun {
        let mut config = ScheduleConfig::new(L, 0.25); // k = 9, window 5..25
        config.warmup = 2;
        RandomRun::new(config, seed)
    }

    fn runs(seed: u64, n: usize) -> Vec<Vec<usize>> {
        let mut p = policy(seed);
        assert!(step(&mut p, Phase::Prefill, L, |_| sat(1.0)).skipped().is_empty());
        decode(&mut p, n, L, |_| sat(1.0)).iter().map(|t| t.skipped()).collect()
    }

    #[test]
    fn reproducible_by_seed() {
        assert_eq!(runs(3, 200), runs(3, 200));
        assert_ne!(runs(3, 200), runs(4, 200));
    }

    #[test]
    fn one_contiguous_run_in_the_window_after_warmup() {
        let all = runs(7, 2 + 600);
        assert!(all[..2].iter().all(Vec::is_empty), "warm-up is dense");
        let mut starts = std::collections::BTreeSet::new();
        for (i, run) in all[2..].iter().enumerate() {
            if i % 6 == 5 {
                assert!(run.is_empty(), "sixth token is dense");
                continue;
            }
            let (&first, &last) = (run.first().unwrap(), run.last().unwrap());
            assert!(first >= 5 && last < 25, "{run:?}");
            assert_eq!(last - first + 1, run.len(), "contiguous: {run:?}");
            assert_eq!(run.len(), 9.min(25 - first), "length k, cut at the cold end: {run:?}");
            starts.insert(first);
        }
        assert_eq!(starts, (5..25).collect(), "every window start is drawn");
    }

    #[test]
    fn never_measures_saturation() {
        let mut p = policy(0);
        assert!(decode(&mut p, 20, L, |_| sat(1.0)).iter().all(|t| t.measured.is_empty()));
    }
}
