//! The paper's early-exit baseline (CALM/SkipDecode style): after a window layer whose output
//! barely differs from its input, `cos(x, h_out) > τ`, the next `k` *whole* layers are skipped.
//! Their K/V for this position are projected from the exit hidden state ("state copying"), the
//! approximation the paper blames for hallucination, against FFN skipping's exact attention.
//! Same schedule, budget, warm-up and cold regions as [`SaturationRun`](crate::skip::SaturationRun).

use crate::skip::schedule::ScheduleConfig;
use crate::skip::{LayerPlan, PolicyKind, SaturationRun, Signal};

impl SaturationRun {
    /// One run per token of the token's whole budget, of whole layers, after the first window
    /// layer with `cos(x, h_out) > tau`.
    pub fn layer_early_exit(config: ScheduleConfig, tau: f32) -> Self {
        Self::with_plan(PolicyKind::LayerEarlyExit, config, Signal::LayerCosine { tau }, LayerPlan::SkipLayerCopyKv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, step};
    use crate::skip::{Phase, Saturation};

    const L: usize = 30;

    fn policy(warmup: usize) -> SaturationRun {
        let mut config = ScheduleConfig::new(L, 0.25); // k = 9, window 5..25
        config.warmup = warmup;
        SaturationRun::layer_early_exit(config, 0.95)
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
        assert_eq!(t.measured, (4..=11).collect::<Vec<_>>());
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
            // Saturated in the cold regions, except the last cold-start layer, whose test may start
            // a run at the first window layer.
            let c = if (4..24).contains(&l) { 0.5 } else { 0.99 };
            Saturation { cosine: c, norm_ratio: 0.0, layer_cosine: c }
        });
        assert!(t.skipped().is_empty(), "{:?}", t.skipped());
    }
}
