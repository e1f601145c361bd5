//! The paper's static baseline: the same FFN layers are skipped for every post-warm-up decode
//! token, chosen once by calibration as the most saturated ones. No per-token test and no budget
//! cycle; prefill and warm-up run dense like the other FFN-skipping policies.

use crate::skip::schedule::Warmup;
use crate::skip::{LayerPlan, Phase, PolicyKind, SkipPolicy};

#[derive(Debug, Clone)]
pub struct StaticLayers {
    layers: Vec<usize>,
    warmup: Warmup,
}

impl StaticLayers {
    /// Skips the FFNs of `layers` after `warmup` dense decode steps.
    pub fn new(layers: Vec<usize>, warmup: usize) -> Self {
        Self { layers, warmup: Warmup::new(warmup) }
    }

    /// The `n_skip` window layers with the highest mean `cos(h_mid, h_out)` over a calibration
    /// set (the FFNs that change the residual stream least), in layer order.
    pub fn choose(
        mean_cosine_per_layer: &[f32],
        cold_start: usize,
        cold_end: usize,
        n_skip: usize,
    ) -> Vec<usize> {
        most_saturated(mean_cosine_per_layer, cold_start, cold_end, n_skip)
    }

    pub fn layers(&self) -> &[usize] {
        &self.layers
    }
}

/// The `n` layers of `[cold_start, len - cold_end)` with the highest `score`, in layer order; ties
/// go to the earlier layer.
pub(crate) fn most_saturated(score: &[f32], cold_start: usize, cold_end: usize, n: usize) -> Vec<usize> {
    let end = score.len().saturating_sub(cold_end);
    let mut window: Vec<usize> = (cold_start.min(end)..end).collect();
    window.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    window.truncate(n);
    window.sort_unstable();
    window
}

impl SkipPolicy for StaticLayers {
    fn name(&self) -> &str {
        PolicyKind::Static.name()
    }

    fn begin_step(&mut self, phase: Phase) {
        self.warmup.begin_step(phase);
    }

    fn past_warmup(&self) -> bool {
        self.warmup.past_warmup()
    }

    fn plan(&mut self, layer: usize) -> LayerPlan {
        if self.warmup.past_warmup() && self.layers.contains(&layer) {
            LayerPlan::SkipFfn
        } else {
            LayerPlan::Full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, sat, step};

    #[test]
    fn chooses_the_most_saturated_window_layers() {
        //            0    1    2    3    4    5    6    7    8    9
        let cos = [0.99, 0.50, 0.96, 0.70, 0.98, 0.97, 0.96, 0.80, 0.30, 0.99];
        assert_eq!(StaticLayers::choose(&cos, 2, 2, 3), vec![2, 4, 5], "tie 2/6 goes to 2");
        assert_eq!(StaticLayers::choose(&cos, 1, 1, 2), vec![4, 5], "0 and 9 are cold");
        assert_eq!(StaticLayers::choose(&cos, 2, 2, 10), (2..8).collect::<Vec<_>>());
        assert!(StaticLayers::choose(&cos, 6, 6, 3).is_empty());
    }

    #[test]
    fn skips_the_same_layers_every_post_warmup_token() {
        let mut p = StaticLayers::new(vec![3, 7], 2);
        assert!(step(&mut p, Phase::Prefill, 10, |_| sat(1.0)).skipped().is_empty());
        let traces = decode(&mut p, 2 + 12, 10, |_| sat(0.0));
        assert!(traces[..2].iter().all(|t| t.skipped().is_empty()), "warm-up");
        assert!(traces[2..].iter().all(|t| t.skipped() == vec![3, 7]), "no dense sixth token");
        assert!(traces.iter().all(|t| t.measured.is_empty()));
        assert_eq!(traces[2].plans[3], LayerPlan::SkipFfn);
        assert!(step(&mut p, Phase::Prefill, 10, |_| sat(1.0)).skipped().is_empty());
    }
}
