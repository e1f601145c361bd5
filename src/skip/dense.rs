use crate::skip::{LayerPlan, Phase, PolicyKind, SkipPolicy};

/// Runs every block of every layer: the reference the other policies are measured against.
#[derive(Debug, Default, Clone)]
pub struct Dense;

impl SkipPolicy for Dense {
    fn name(&self) -> &str {
        PolicyKind::Dense.name()
    }

    fn begin_step(&mut self, _phase: Phase) {}

    fn plan(&mut self, _layer: usize) -> LayerPlan {
        LayerPlan::Full
    }
}
