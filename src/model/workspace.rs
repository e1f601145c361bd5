//! The buffers of one forward step, kept from step to step so that decoding a token allocates
//! nothing.

use crate::model::batch::{Group, SeqRows};
use crate::model::config::Config;

#[derive(Default)]
pub struct Workspace {
    /// The residual stream, `[rows, dim]`.
    pub x: Vec<f32>,
    /// The normalised residual: the input of a block's products, `[rows, dim]`.
    pub xn: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// The attention heads' outputs, `[rows, q_dim]`.
    pub heads: Vec<f32>,
    /// A block's output before the residual add, `[rows, dim]`.
    pub delta: Vec<f32>,
    /// `gate · u`, `[rows, ffn_dim]`.
    pub gate: Vec<f32>,
    /// `silu(gate · u) ⊙ (up · u)`, `[rows, ffn_dim]`.
    pub hidden: Vec<f32>,
    /// Each sequence's last row's layer input and `h_mid`, `[sequences, dim]`, for the
    /// saturation signals.
    pub layer_input: Vec<f32>,
    pub h_mid: Vec<f32>,
    /// The rows of the sequences running one block, when not every sequence does.
    pub gathered: Vec<f32>,
    /// Where each sequence's rows sit, and the sequences running the current block.
    pub seqs: Vec<SeqRows>,
    pub group: Group,
    /// RoPE's `(sin, cos)` for the step's positions.
    pub rope: Vec<(f32, f32)>,
}

impl Workspace {
    /// Sizes the buffers for a step of `rows` tokens of `sequences` sequences (no allocation
    /// once they are big enough).
    pub fn prepare(&mut self, cfg: &Config, rows: usize, sequences: usize) {
        let size = |buf: &mut Vec<f32>, len: usize| buf.resize(rows * len, 0.0);
        size(&mut self.x, cfg.dim);
        size(&mut self.xn, cfg.dim);
        size(&mut self.q, cfg.q_dim());
        size(&mut self.k, cfg.kv_dim());
        size(&mut self.v, cfg.kv_dim());
        size(&mut self.heads, cfg.q_dim());
        size(&mut self.delta, cfg.dim);
        size(&mut self.gate, cfg.ffn_dim);
        size(&mut self.hidden, cfg.ffn_dim);
        self.layer_input.resize(sequences * cfg.dim, 0.0);
        self.h_mid.resize(sequences * cfg.dim, 0.0);
    }
}
