//! Block counts of decode steps, split where the policy's own warm-up ends
//! ([`SkipPolicy::past_warmup`]), so the post-warm-up skip ratio counts exactly the steps in
//! which the policy was allowed to skip, however the prompts and turns fall.

use crate::error::Result;
use crate::generate::Session;
use crate::model::BlockCounts;
use crate::skip::SkipPolicy;

#[derive(Debug, Clone)]
pub struct WarmupSplit {
    /// Every decode step.
    pub all: BlockCounts,
    /// The steps past the warm-up.
    pub post_warmup: BlockCounts,
    pub post_warmup_steps: usize,
    /// The latest step's counts (kept, so a step allocates nothing).
    step: BlockCounts,
}

impl WarmupSplit {
    pub fn new(n_layers: usize) -> Self {
        Self {
            all: BlockCounts::new(n_layers),
            post_warmup: BlockCounts::new(n_layers),
            post_warmup_steps: 0,
            step: BlockCounts::new(n_layers),
        }
    }

    /// The latest decode step's counts.
    pub fn last_step(&self) -> &BlockCounts {
        &self.step
    }

    /// Feeds `token` as one decode step under `policy` and files the step's counts.
    pub fn decode(
        &mut self,
        session: &mut Session,
        token: u32,
        policy: &mut dyn SkipPolicy,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.step.clear();
        session.decode(token, policy, &mut self.step, logits)?;
        self.all.add(&self.step);
        if policy.past_warmup() {
            self.post_warmup.add(&self.step);
            self.post_warmup_steps += 1;
        }
        Ok(())
    }
}
