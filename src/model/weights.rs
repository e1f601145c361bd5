//! The weights of a llama-family model, named after the GGUF tensors
//! (`blk.{l}.attn_q.weight` ↔ HF `model.layers.{l}.self_attn.q_proj.weight`, and so on).

use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::model::embedding::Embedding;
use crate::model::gguf::GgufFile;
use crate::model::linear::{check_shape, Linear};

/// The biases Qwen2 adds to its Q, K and V projections.
pub struct QkvBias {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub attn_q: Linear,
    pub attn_k: Linear,
    pub attn_v: Linear,
    /// Present exactly when the architecture has Q/K/V biases (`Architecture::qkv_bias`).
    pub qkv_bias: Option<QkvBias>,
    pub attn_output: Linear,
    pub ffn_norm: Vec<f32>,
    pub ffn_gate: Linear,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
}

impl LayerWeights {
    /// The layer's weight products.
    pub fn linears(&self) -> [&Linear; 7] {
        [&self.attn_q, &self.attn_k, &self.attn_v, &self.attn_output, &self.ffn_gate, &self.ffn_up, &self.ffn_down]
    }

    /// Bytes of weights one FFN evaluation reads: what a skipped FFN saves.
    pub fn ffn_bytes(&self) -> usize {
        self.ffn_gate.weight_bytes() + self.ffn_up.weight_bytes() + self.ffn_down.weight_bytes()
    }

    pub fn attention_bytes(&self) -> usize {
        [&self.attn_q, &self.attn_k, &self.attn_v, &self.attn_output]
            .iter()
            .map(|l| l.weight_bytes())
            .sum()
    }
}

pub struct Weights {
    pub token_embd: Embedding,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    pub output: Linear,
    pub rope_freqs: Option<Vec<f32>>,
}

impl Weights {
    pub fn load(gguf: &GgufFile, cfg: &Config) -> Result<Self> {
        let token_embd = Embedding::load(gguf, "token_embd.weight", cfg.vocab_size, cfg.dim)?;
        let output_name = if cfg.tied_embeddings { "token_embd.weight" } else { "output.weight" };
        let output = Linear::load(gguf, output_name, cfg.vocab_size, cfg.dim)?;
        let layers = (0..cfg.n_layers)
            .map(|l| {
                let p = |name: &str| format!("blk.{l}.{name}.weight");
                let bias = |name: &str, len: usize| vector(gguf, &format!("blk.{l}.{name}.bias"), len);
                let qkv_bias = match cfg.architecture.qkv_bias() {
                    true => Some(QkvBias {
                        q: bias("attn_q", cfg.q_dim())?,
                        k: bias("attn_k", cfg.kv_dim())?,
                        v: bias("attn_v", cfg.kv_dim())?,
                    }),
                    false => None,
                };
                Ok(LayerWeights {
                    qkv_bias,
                    attn_norm: vector(gguf, &p("attn_norm"), cfg.dim)?,
                    attn_q: Linear::load(gguf, &p("attn_q"), cfg.q_dim(), cfg.dim)?,
                    attn_k: Linear::load(gguf, &p("attn_k"), cfg.kv_dim(), cfg.dim)?,
                    attn_v: Linear::load(gguf, &p("attn_v"), cfg.kv_dim(), cfg.dim)?,
                    attn_output: Linear::load(gguf, &p("attn_output"), cfg.dim, cfg.q_dim())?,
                    ffn_norm: vector(gguf, &p("ffn_norm"), cfg.dim)?,
                    ffn_gate: Linear::load(gguf, &p("ffn_gate"), cfg.ffn_dim, cfg.dim)?,
                    ffn_up: Linear::load(gguf, &p("ffn_up"), cfg.ffn_dim, cfg.dim)?,
                    ffn_down: Linear::load(gguf, &p("ffn_down"), cfg.dim, cfg.ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rope_freqs = if gguf.has_tensor("rope_freqs.weight") {
            Some(vector(gguf, "rope_freqs.weight", cfg.rope_dim / 2)?)
        } else {
            None
        };
        Ok(Self {
            token_embd,
            layers,
            output_norm: vector(gguf, "output_norm.weight", cfg.dim)?,
            output,
            rope_freqs,
        })
    }
}

/// A norm weight, bias or RoPE factor: a NaN or infinity here would poison every activation
/// downstream without an error, so it is refused at load time.
fn vector(gguf: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = gguf.tensor(name)?;
    check_shape(name, t.shape().dims(), &[len])?;
    let v = t.dequantize(&candle_core::Device::Cpu)?.to_vec1::<f32>()?;
    match v.iter().all(|x| x.is_finite()) {
        true => Ok(v),
        false => Err(Error::NonFinite(name.to_string())),
    }
}
