//! The rows of a forward step shared by several sequences: where each sequence's rows sit in
//! the residual stream, and how the rows of the sequences that run a block are gathered for its
//! products and scattered back. Each sequence plans its own layers, so a block always takes
//! whole sequences, in step order.

use std::ops::Range;

use crate::model::kv_cache::KvCache;
use crate::model::llama::{BlockCounts, Step};
use crate::model::ops::add_assign;
use crate::skip::{LayerPlan, SkipPolicy};

/// One sequence's part of a forward step: its rows, the cache they attend over and write to,
/// the policy that plans their layers, and the counts of the blocks they ran.
pub struct SeqStep<'a> {
    pub step: Step<'a>,
    pub cache: &'a mut KvCache,
    pub policy: &'a mut dyn SkipPolicy,
    pub counts: &'a mut BlockCounts,
}

/// A sequence's rows in the step and what its layer does.
#[derive(Debug, Clone, Copy)]
pub struct SeqRows {
    /// Its first row in the residual stream.
    pub start: usize,
    /// Its rows there now: the step's rows, or only the rows whose logits are wanted once the
    /// last layer's attention has run.
    pub len: usize,
    /// Its first row in the step's RoPE angles (the step's own row order).
    pub angle_start: usize,
    /// The step's rows: what the block counts count.
    pub step_rows: usize,
    pub plan: LayerPlan,
    pub previous_ffn_ran: bool,
    /// Whether its policy wants this layer's saturation (of its last row).
    pub wants: bool,
}

impl SeqRows {
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// Its last row.
    pub fn last(&self) -> usize {
        self.start + self.len - 1
    }
}

/// The sequences running one block: their indices in the step, and where their rows sit in
/// the gathered buffers (`offsets[i]` rows before member `i`).
#[derive(Default)]
pub struct Group {
    pub members: Vec<usize>,
    pub offsets: Vec<usize>,
    pub rows: usize,
    /// Whether the members are every sequence, so the residual stream is used as it is.
    pub all: bool,
}

impl Group {
    /// The sequences whose plan passes `runs`.
    pub fn select(&mut self, seqs: &[SeqRows], runs: impl Fn(LayerPlan) -> bool) {
        self.members.clear();
        self.offsets.clear();
        self.rows = 0;
        for (i, s) in seqs.iter().enumerate() {
            if runs(s.plan) {
                self.members.push(i);
                self.offsets.push(self.rows);
                self.rows += s.len;
            }
        }
        self.all = self.members.len() == seqs.len();
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `(sequence index, its rows in the gathered buffers)` for each member.
    pub fn parts<'s>(&'s self, seqs: &'s [SeqRows]) -> impl Iterator<Item = (usize, Range<usize>)> + 's {
        self.members.iter().zip(&self.offsets).map(move |(&i, &o)| (i, o..o + seqs[i].len))
    }

    /// The members' rows of `x` (`width` values a row): `x` itself when every sequence is a
    /// member, else a copy in `gathered`.
    pub fn input<'b>(&self, seqs: &[SeqRows], x: &'b [f32], width: usize, gathered: &'b mut Vec<f32>) -> &'b [f32] {
        if self.all {
            return x;
        }
        gathered.clear();
        for &i in &self.members {
            let r = seqs[i].range();
            gathered.extend_from_slice(&x[r.start * width..r.end * width]);
        }
        gathered
    }

    /// `x += delta` on the members' rows, `delta` being gathered.
    pub fn add_back(&self, seqs: &[SeqRows], x: &mut [f32], delta: &[f32], width: usize) {
        if self.all {
            add_assign(x, &delta[..x.len()]);
            return;
        }
        for (i, g) in self.parts(seqs) {
            let r = seqs[i].range();
            add_assign(&mut x[r.start * width..r.end * width], &delta[g.start * width..g.end * width]);
        }
    }
}

/// Keeps only the rows whose logits are wanted, each sequence's last row unless its step wants
/// all: the rows dropped are not skipped (they ran the attention and are counted), only
/// unused from here on.
pub fn keep_output_rows(x: &mut Vec<f32>, seqs: &mut [SeqRows], all_logits: impl Fn(usize) -> bool, width: usize) {
    let mut kept = 0;
    for (i, s) in seqs.iter_mut().enumerate() {
        let keep = if all_logits(i) { s.len } else { 1 };
        let from = s.start + s.len - keep;
        x.copy_within(from * width..(from + keep) * width, kept * width);
        (s.start, s.len) = (kept, keep);
        kept += keep;
    }
    x.truncate(kept * width);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lens: &[usize], plans: &[LayerPlan]) -> Vec<SeqRows> {
        let mut start = 0;
        lens.iter()
            .zip(plans)
            .map(|(&len, &plan)| {
                let s = SeqRows { start, len, angle_start: start, step_rows: len, plan, previous_ffn_ran: true, wants: false };
                start += len;
                s
            })
            .collect()
    }

    #[test]
    fn a_group_gathers_its_members_and_adds_back_only_to_them() {
        let seqs = rows(&[2, 1, 3], &[LayerPlan::Full, LayerPlan::SkipFfn, LayerPlan::Full]);
        let mut group = Group::default();
        group.select(&seqs, |p| p == LayerPlan::Full);
        assert_eq!((group.members.as_slice(), group.offsets.as_slice(), group.rows, group.all), (&[0, 2][..], &[0, 2][..], 5, false));
        let x: Vec<f32> = (0..6).map(|r| r as f32).collect();
        let mut gathered = Vec::new();
        assert_eq!(group.input(&seqs, &x, 1, &mut gathered), &[0.0, 1.0, 3.0, 4.0, 5.0]);
        let mut x = x;
        group.add_back(&seqs, &mut x, &[10.0; 5], 1);
        assert_eq!(x, [10.0, 11.0, 2.0, 13.0, 14.0, 15.0]);
        group.select(&seqs, |p| p != LayerPlan::Drop);
        assert!(group.all);
        assert_eq!(group.input(&seqs, &x, 1, &mut gathered).len(), 6);
    }

    #[test]
    fn output_rows_are_each_sequences_last_unless_it_wants_all() {
        let mut seqs = rows(&[2, 1, 3], &[LayerPlan::Full; 3]);
        let mut x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        keep_output_rows(&mut x, &mut seqs, |i| i == 2, 2);
        assert_eq!(x, [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
        assert_eq!(seqs.iter().map(|s| (s.start, s.len)).collect::<Vec<_>>(), [(0, 1), (1, 1), (2, 3)]);
    }
}
