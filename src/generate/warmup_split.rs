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
        session.decode(token, policy, self.begin_step(), logits)?;
        self.file_step(policy);
        Ok(())
    }

    /// The counts for the next decode step to fill (emptied), when the step runs elsewhere
    /// (a batched step); [`WarmupSplit::file_step`] files them after it.
    pub fn begin_step(&mut self) -> &mut BlockCounts {
        self.step.clear();
        &mut self.step
    }

    /// Files the counts of the step `policy` has just run.
    pub fn file_step(&mut self, policy: &dyn SkipPolicy) {
        self.all.add(&self.step);
        if policy.past_warmup() {
            self.post_warmup.add(&self.step);
            self.post_warmup_steps += 1;
        }
    }
}
