//! ShortGPT-style layer dropping: a fixed set of whole layers is removed for every step, prefill
//! included, chosen once by calibration as the layers whose output is closest to their input
//! (lowest `1 − cos(x, h_out)`). Nothing runs and no K/V is written for them.

use crate::skip::static_layers::most_saturated;
use crate::skip::{LayerPlan, Phase, PolicyKind, SkipPolicy};

#[derive(Debug, Clone)]
pub struct LayerDrop {
    layers: Vec<usize>,
}

impl LayerDrop {
    pub fn new(layers: Vec<usize>) -> Self {
        Self { layers }
    }

    /// The `n_drop` window layers with the highest mean `cos(x, h_out)` over a calibration set,
    /// in layer order.
    pub fn choose(
        mean_layer_cosine: &[f32],
        cold_start: usize,
        cold_end: usize,
        n_drop: usize,
    ) -> Vec<usize> {
        most_saturated(mean_layer_cosine, cold_start, cold_end, n_drop)
    }

    pub fn layers(&self) -> &[usize] {
        &self.layers
    }
}

impl SkipPolicy for LayerDrop {
    fn name(&self) -> &str {
        PolicyKind::LayerDrop.name()
    }

    fn begin_step(&mut self, _phase: Phase) {}

    fn plan(&mut self, layer: usize) -> LayerPlan {
        if self.layers.contains(&layer) {
            LayerPlan::Drop
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
    fn chooses_the_layers_closest_to_identity() {
        let cos = [0.2, 0.9, 0.6, 0.95, 0.4, 0.93, 0.99];
        assert_eq!(LayerDrop::choose(&cos, 1, 1, 2), vec![3, 5], "6 is cold");
        assert_eq!(LayerDrop::choose(&cos, 0, 0, 1), vec![6]);
    }

    #[test]
    fn drops_the_same_layers_in_prefill_and_decode() {
        let mut p = LayerDrop::new(vec![2, 5]);
        let t = step(&mut p, Phase::Prefill, 8, |_| sat(0.0));
        assert_eq!((t.skipped(), t.plans[2]), (vec![2, 5], LayerPlan::Drop));
        assert!(decode(&mut p, 7, 8, |_| sat(0.0)).iter().all(|t| t.skipped() == vec![2, 5]));
    }
}
