//! Drives policies in tests exactly as the model does, with synthetic saturation signals.

use crate::skip::{LayerPlan, Phase, Saturation, SkipPolicy};

/// What one forward step did.
#[derive(Debug)]
pub struct Trace {
    pub plans: Vec<LayerPlan>,
    /// The layers whose saturation was measured and reported.
    pub measured: Vec<usize>,
}

impl Trace {
    pub fn skipped(&self) -> Vec<usize> {
        (0..self.plans.len()).filter(|&l| self.plans[l] != LayerPlan::Full).collect()
    }
}

/// A saturation whose three signals are all `c`.
pub fn sat(c: f32) -> Saturation {
    Saturation { cosine: c, norm_ratio: 1.0 - c, layer_cosine: c }
}

/// One forward step: `begin_step`, then per layer `plan` → `wants_saturation` → `observe`.
pub fn step(
    policy: &mut dyn SkipPolicy,
    phase: Phase,
    n_layers: usize,
    signal: impl Fn(usize) -> Saturation,
) -> Trace {
    policy.begin_step(phase);
    let mut trace = Trace { plans: Vec::new(), measured: Vec::new() };
    for l in 0..n_layers {
        let plan = policy.plan(l);
        if matches!(plan, LayerPlan::Full | LayerPlan::SkipFfn) {
            let wants = policy.wants_saturation(l);
            if plan == LayerPlan::Full && wants {
                trace.measured.push(l);
                policy.observe(l, signal(l));
            }
        }
        trace.plans.push(plan);
    }
    trace
}

/// `n` decode steps with a signal that does not depend on the step.
pub fn decode(
    policy: &mut dyn SkipPolicy,
    n: usize,
    n_layers: usize,
    signal: impl Fn(usize) -> Saturation,
) -> Vec<Trace> {
    (0..n).map(|_| step(policy, Phase::Decode, n_layers, &signal)).collect()
}
