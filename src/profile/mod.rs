//! Saturation profiles: how much each layer's FFN turns the residual stream while decoding a
//! text, the measurement FFN-SkipLLM's thresholds and cold regions rest on (DESIGN §1), and the
//! calibration of a skip policy against it.

mod calibrate;
mod config;
pub mod plot;
mod stats;
mod windows;

pub use calibrate::{calibrate, check_per_layer, measure, CalibrateOptions, Calibrated, Trial};
pub use config::{Measured, SkipConfig};
pub use stats::{mean, percentile, share_above, Summary};
pub use windows::{feed_window, Windowing};

use serde::Serialize;

use crate::error::Result;
use crate::model::Llama;
use crate::skip::{Calibration, LayerPlan, Phase, Saturation, SkipPolicy};

/// Cosine thresholds whose shares of tokens above are reported per layer.
pub const SHARE_THRESHOLDS: [f32; 3] = [0.9, 0.95, 0.99];

/// Runs every layer in full and records every layer's saturation on decode steps only: prefill
/// rows are never skipped, so their saturation says nothing about what a policy could skip.
#[derive(Debug)]
struct Recorder {
    decoding: bool,
    /// Per layer, one sample per decode step.
    samples: Vec<Vec<Saturation>>,
}

impl SkipPolicy for Recorder {
    fn name(&self) -> &str {
        "profile"
    }

    fn begin_step(&mut self, phase: Phase) {
        self.decoding = phase == Phase::Decode;
    }

    fn plan(&mut self, _layer: usize) -> LayerPlan {
        LayerPlan::Full
    }

    fn wants_saturation(&self, _layer: usize) -> bool {
        self.decoding
    }

    fn observe(&mut self, layer: usize, saturation: Saturation) {
        self.samples[layer].push(saturation);
    }
}

/// Cosine statistics of the tokens at positions `from..=to` of their window.
#[derive(Debug, Clone, Serialize)]
pub struct PositionBucket {
    pub from: usize,
    pub to: usize,
    pub tokens: usize,
    pub cosine: Summary,
}

/// One layer's saturation over all decoded tokens.
#[derive(Debug, Clone, Serialize)]
pub struct LayerProfile {
    pub layer: usize,
    /// `cos(h_mid, h_out)`.
    pub cosine: Summary,
    /// `‖FFN(u)‖ / ‖h_mid‖`.
    pub norm_ratio: Summary,
    /// Shares of tokens with a cosine above each of [`SHARE_THRESHOLDS`], in that order.
    pub cosine_share_above: [f64; 3],
    /// Mean `cos(x, h_out)` of the whole layer.
    pub mean_layer_cosine: f64,
    /// The cosine by position in the window, in [`position_buckets`] order (empty buckets left out).
    pub cosine_by_position: Vec<PositionBucket>,
    /// Every token's `cos(h_mid, h_out)`, ascending: the distribution per-layer thresholds come
    /// from (not written out: thousands of numbers per layer).
    #[serde(skip)]
    pub cosines_sorted: Vec<f32>,
}

/// Every layer's saturation on one text.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub decoded_tokens: usize,
    pub windows: usize,
    pub window: usize,
    pub prefill: usize,
    pub layers: Vec<LayerProfile>,
}

impl Profile {
    /// The per-layer means that `static` and `layer-drop` choose their layers from.
    pub fn calibration(&self) -> Calibration {
        Calibration {
            mean_ffn_cosine: self.layers.iter().map(|l| l.cosine.mean as f32).collect(),
            mean_layer_cosine: self.layers.iter().map(|l| l.mean_layer_cosine as f32).collect(),
            ffn_cosine_tau: Vec::new(),
        }
    }

    /// Each layer's `q`-quantile of its cosine: a token passes layer `l`'s threshold when its
    /// cosine is among the top `1 − q` of that layer's on the profiled text.
    pub fn cosine_quantiles(&self, q: f64) -> Vec<f32> {
        self.layers.iter().map(|l| stats::percentile(&l.cosines_sorted, q) as f32).collect()
    }

    /// One row per layer, the JSON's figures flattened into columns.
    pub fn to_csv(&self) -> String {
        let mut header = vec!["layer".to_string()];
        for signal in ["cos", "norm_ratio"] {
            header.extend(["mean", "p10", "p50", "p90"].map(|s| format!("{signal}_{s}")));
        }
        header.extend(SHARE_THRESHOLDS.map(|t| format!("share_cos_gt_{t}")));
        header.push("layer_cos_mean".into());
        let buckets = position_buckets(self.prefill, self.window);
        header.extend(buckets.iter().map(|(from, to)| format!("cos_mean_pos_{from}_{to}")));
        let mut csv = header.join(",") + "\n";
        for l in &self.layers {
            let mut row = vec![l.layer.to_string()];
            for s in [l.cosine, l.norm_ratio] {
                row.extend([s.mean, s.p10, s.p50, s.p90].map(|v| format!("{v:.6}")));
            }
            row.extend(l.cosine_share_above.map(|v| format!("{v:.6}")));
            row.push(format!("{:.6}", l.mean_layer_cosine));
            for &(from, _) in &buckets {
                let cell = l.cosine_by_position.iter().find(|b| b.from == from);
                row.push(cell.map(|b| format!("{:.6}", b.cosine.mean)).unwrap_or_default());
            }
            csv += &(row.join(",") + "\n");
        }
        csv
    }
}

/// Position buckets `from..=to` of a window: doubling from the prefill length
/// (64–127, 128–255, 256–511 for the protocol's 512/64), so early and late tokens are told apart.
pub fn position_buckets(prefill: usize, window: usize) -> Vec<(usize, usize)> {
    let mut buckets = Vec::new();
    let mut from = prefill.max(1);
    while from < window {
        let to = (2 * from).min(window) - 1;
        buckets.push((from, to));
        from = to + 1;
    }
    buckets
}

/// Decodes `text` as [`Windowing`] says with every FFN running and summarises each layer's
/// saturation. `progress` is called once per decoded token.
pub fn profile(
    model: &Llama,
    text: &[u32],
    windowing: &Windowing,
    progress: &mut dyn FnMut(),
) -> Result<Profile> {
    let windows = windowing.windows(text)?;
    let n_layers = model.config.n_layers;
    let mut recorder = Recorder { decoding: false, samples: vec![Vec::new(); n_layers] };
    let mut positions = Vec::with_capacity(windowing.tokens);
    for window in &windows {
        feed_window(model, window, windowing.prefill, &mut recorder, &mut |position, _, _| {
            positions.push(position);
            progress();
        })?;
    }
    let buckets = position_buckets(windowing.prefill, windowing.window);
    let layers = recorder
        .samples
        .iter()
        .enumerate()
        .map(|(layer, samples)| summarise(layer, samples, &positions, &buckets))
        .collect();
    Ok(Profile {
        decoded_tokens: positions.len(),
        windows: windows.len(),
        window: windowing.window,
        prefill: windowing.prefill,
        layers,
    })
}

fn summarise(layer: usize, samples: &[Saturation], positions: &[usize], buckets: &[(usize, usize)]) -> LayerProfile {
    let cosines: Vec<f32> = samples.iter().map(|s| s.cosine).collect();
    let norm_ratios: Vec<f32> = samples.iter().map(|s| s.norm_ratio).collect();
    let layer_cosines: Vec<f32> = samples.iter().map(|s| s.layer_cosine).collect();
    let cosine_by_position = buckets
        .iter()
        .filter_map(|&(from, to)| {
            let inside: Vec<f32> = cosines
                .iter()
                .zip(positions)
                .filter(|(_, &p)| (from..=to).contains(&p))
                .map(|(&c, _)| c)
                .collect();
            Some(PositionBucket { from, to, tokens: inside.len(), cosine: Summary::of(&inside)? })
        })
        .collect();
    LayerProfile {
        layer,
        cosine: Summary::of(&cosines).expect("a profile decodes at least one token"),
        norm_ratio: Summary::of(&norm_ratios).expect("a profile decodes at least one token"),
        cosine_share_above: SHARE_THRESHOLDS.map(|t| share_above(&cosines, t)),
        mean_layer_cosine: mean(&layer_cosines),
        cosine_by_position,
        cosines_sorted: {
            let mut sorted = cosines;
            sorted.sort_by(f32::total_cmp);
            sorted
        },
    }
}

#[cfg(test)]
mod tests {
    use super::position_buckets;

    #[test]
    fn position_buckets_double_from_the_prefill() {
        assert_eq!(position_buckets(64, 512), vec![(64, 127), (128, 255), (256, 511)]);
        assert_eq!(position_buckets(64, 128), vec![(64, 127)]);
        assert_eq!(position_buckets(48, 128), vec![(48, 95), (96, 127)]);
    }
}
