//! Skip policies: what each layer of a forward step runs. The model asks the policy before
//! every layer and, only when the policy wants it, reports the layer's saturation afterwards.

mod dense;
mod early_exit;
mod saturation_run;
mod layer_drop;
mod fixed_start;
mod kind;
mod random;
mod schedule;
mod spec;
mod static_layers;
#[cfg(test)]
mod testing;

pub use dense::Dense;
pub use saturation_run::{SaturationRun, Signal};
pub use layer_drop::LayerDrop;
pub use fixed_start::FixedStartRun;
pub use kind::PolicyKind;
pub use random::{Placement, RandomRun};
pub use schedule::{default_cold, Schedule, ScheduleConfig, Warmup, DEFAULT_TAU, DEFAULT_WARMUP};
pub use spec::{Calibration, PolicySpec, PER_LAYER};
pub use static_layers::StaticLayers;

/// Which part of the sequence a forward step processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The prompt, in one batched forward. FFN-skipping policies never skip here.
    Prefill,
    /// One generated token.
    Decode,
}

/// What one layer does for the current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPlan {
    /// Attention and FFN both run.
    Full,
    /// Attention runs (and writes K/V); the FFN is skipped: `h_out = h_mid`.
    SkipFfn,
    /// The whole layer is skipped; its K/V for this position are projected from the current
    /// hidden state ("state copying", CALM/SkipDecode early exit).
    SkipLayerCopyKv,
    /// The layer is removed: nothing runs and nothing is written (layer dropping).
    Drop,
}

/// How much the FFN of a layer changed the residual stream, for the token being decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saturation {
    /// `cos(h_mid, h_out)`.
    pub cosine: f32,
    /// `‖FFN(u)‖ / ‖h_mid‖`.
    pub norm_ratio: f32,
    /// `cos(x, h_out)`: the layer's input against its output, for whole-layer tests
    /// (early exit, layer dropping).
    pub layer_cosine: f32,
}

pub trait SkipPolicy {
    /// A short name for reports, e.g. `dense` or `ffnskip`.
    fn name(&self) -> &str;

    /// Called once before each forward step.
    fn begin_step(&mut self, phase: Phase);

    /// Asked before layer `layer` runs.
    fn plan(&mut self, layer: usize) -> LayerPlan;

    /// Whether the model should measure the saturation of `layer` after its FFN.
    /// The dense path answers no, so it pays nothing for the signal.
    fn wants_saturation(&self, _layer: usize) -> bool {
        false
    }

    /// The saturation of `layer`, reported when `wants_saturation` said yes.
    fn observe(&mut self, _layer: usize, _saturation: Saturation) {}

    /// Whether the decode step begun last is past the policy's warm-up (a prefill starts a new
    /// one). The statistics split their counts on it, so they and the policy agree on which
    /// steps were warm-up.
    fn past_warmup(&self) -> bool {
        true
    }
}
