//! Realised skipping statistics of a generation, from the block counts the model kept.

use serde::Serialize;

use crate::generate::Generation;
use crate::model::{BlockCounts, Llama};

#[derive(Debug, Clone, Serialize)]
pub struct SkipStats {
    /// Skipped FFN blocks over all FFN blocks of all decode steps.
    pub ffn_skip_ratio: f64,
    /// The same over the decode steps after the warm-up.
    pub ffn_skip_ratio_post_warmup: f64,
    pub ffn_skipped_per_layer: Vec<u64>,
    pub attention_runs_per_layer: Vec<u64>,
    pub decoded_tokens_post_warmup: usize,
    /// Mean length of a run of consecutive skipped FFNs (0 when nothing was skipped).
    pub mean_run_length: f64,
    /// Share of the FFN weight bytes of the decode steps that were not read.
    pub ffn_bytes_not_read: f64,
}

fn skipped(counts: &BlockCounts, steps: usize) -> Vec<u64> {
    counts.ffn.iter().map(|&ran| steps as u64 - ran).collect()
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl SkipStats {
    pub fn of(gen: &Generation, model: &Llama) -> Self {
        let n_layers = model.config.n_layers as u64;
        let per_layer = skipped(&gen.decode_counts, gen.decode_rows);
        let total: u64 = per_layer.iter().sum();
        let post: u64 = skipped(&gen.post_warmup_counts, gen.post_warmup_steps).iter().sum();
        let ffn_bytes: Vec<u64> = (0..model.config.n_layers).map(|l| model.layer(l).ffn_bytes() as u64).collect();
        let bytes_skipped: u64 = per_layer.iter().zip(&ffn_bytes).map(|(s, b)| s * b).sum();
        let bytes_all: u64 = ffn_bytes.iter().map(|b| b * gen.decode_rows as u64).sum();
        Self {
            ffn_skip_ratio: ratio(total, gen.decode_rows as u64 * n_layers),
            ffn_skip_ratio_post_warmup: ratio(post, gen.post_warmup_steps as u64 * n_layers),
            ffn_skipped_per_layer: per_layer,
            attention_runs_per_layer: gen.decode_counts.attention.clone(),
            decoded_tokens_post_warmup: gen.post_warmup_steps,
            mean_run_length: ratio(total, gen.decode_counts.ffn_skip_runs),
            ffn_bytes_not_read: ratio(bytes_skipped, bytes_all),
        }
    }
}
