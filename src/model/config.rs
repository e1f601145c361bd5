//! Hyper-parameters of a llama-family model, read from GGUF metadata (`{arch}.*` keys).

use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;

/// The architectures that share the llama block (pre-norm, RoPE, GQA attention, SwiGLU FFN).
/// What tells them apart is data: [`Architecture::rope_pairs`] and whether Q/K/V carry biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 1–3, SmolLM, TinyLlama, Mistral-style (`llama`, `mistral`).
    Llama,
    /// Qwen2 and Qwen2.5 (`qwen2`): Q/K/V biases, NEOX-style RoPE.
    Qwen2,
}

impl Architecture {
    /// The `general.architecture` names this engine runs, for error messages.
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2";

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// How RoPE pairs a head's dimensions. llama.cpp's converter permutes Llama's Q/K weights
    /// so that adjacent dimensions form the rotated pairs; Qwen2's weights are not permuted, so
    /// dimension `i` pairs with `i + d/2` (ggml's NORM and NEOX modes).
    pub fn rope_pairs(self) -> RopePairs {
        match self {
            Self::Llama => RopePairs::Adjacent,
            Self::Qwen2 => RopePairs::Halves,
        }
    }

    /// Whether the Q, K and V projections add a bias (`blk.N.attn_{q,k,v}.bias`).
    pub fn qkv_bias(self) -> bool {
        self == Self::Qwen2
    }
}

/// Which dimensions of a head RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairs {
    /// `(2i, 2i + 1)`: ggml's NORM mode.
    Adjacent,
    /// `(i, i + rope_dim/2)`: ggml's NEOX mode.
    Halves,
}

/// Ceilings on hyper-parameters read from an untrusted file, far above any real llama-family
/// model: they stop a crafted header from sizing layer tables, caches or workspaces in the
/// terabytes before the tensor shapes could contradict it.
const MAX_LAYERS: usize = 4096;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEAD_DIM: usize = 1 << 12;
const MAX_CONTEXT: usize = 1 << 24;

fn bounded(what: &str, value: usize, max: usize) -> Result<usize> {
    match value <= max {
        true => Ok(value),
        false => Err(Error::Metadata(format!("{what} {value} exceeds the limit of {max}"))),
    }
}

/// The KV padding of llama.cpp 0c1e570, the peer engine (DESIGN §4): 256 positions. The
/// version that produced the SmolLM2 reference outputs (c392e50) padded to 32.
pub const PEER_KV_PAD: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What sets the block's variants apart: [`Architecture::rope_pairs`],
    /// [`Architecture::qkv_bias`].
    pub architecture: Architecture,
    pub n_layers: usize,
    /// Width of the residual stream (`hidden_size`).
    pub dim: usize,
    /// Inner width of the SwiGLU FFN (`intermediate_size`).
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Number of leading dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub context_len: usize,
    /// Attention reads the cache in multiples of this many positions, as llama.cpp pads its
    /// KV view (see `attention.rs`): not a property of the model but of the peer engine whose
    /// rounding we reproduce. [`PEER_KV_PAD`] by default.
    pub kv_pad: usize,
    pub vocab_size: usize,
    /// True when the LM head reuses `token_embd.weight` (no `output.weight` in the file).
    pub tied_embeddings: bool,
}

impl Config {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.string("general.architecture")?.to_string();
        let architecture =
            Architecture::from_name(&arch).ok_or_else(|| Error::UnsupportedArchitecture(arch.clone()))?;
        let key = |k: &str| format!("{arch}.{k}");
        let n_layers = bounded("block count", gguf.u64(&key("block_count"))? as usize, MAX_LAYERS)?;
        let dim = bounded("width", gguf.u64(&key("embedding_length"))? as usize, MAX_WIDTH)?;
        let ffn_dim = bounded("FFN width", gguf.u64(&key("feed_forward_length"))? as usize, MAX_WIDTH)?;
        let n_heads = bounded("head count", gguf.u64(&key("attention.head_count"))? as usize, MAX_WIDTH)?;
        let n_kv_heads = gguf.u64(&key("attention.head_count_kv")).unwrap_or(n_heads as u64) as usize;
        if n_layers == 0 || dim == 0 || ffn_dim == 0 || n_heads == 0 || n_kv_heads == 0 {
            return Err(Error::Metadata("layer, width and head counts must be positive".into()));
        }
        if !dim.is_multiple_of(n_heads) || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(Error::Metadata(format!(
                "inconsistent heads: width {dim}, {n_heads} heads, {n_kv_heads} KV heads"
            )));
        }
        let head_dim = gguf.u64(&key("attention.key_length")).map(|d| d as usize).unwrap_or(dim / n_heads);
        let rope_dim = gguf.u64(&key("rope.dimension_count")).map(|d| d as usize).unwrap_or(head_dim);
        if head_dim == 0 || rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(Error::Metadata(format!("rope dimension {rope_dim} does not fit head size {head_dim}")));
        }
        let head_dim = bounded("head size", head_dim, MAX_HEAD_DIM)?;
        let context_len = bounded("context length", gguf.u64(&key("context_length")).unwrap_or(2048) as usize, MAX_CONTEXT)?;
        let embd = gguf.tensor_dims("token_embd.weight")?;
        let vocab_size = match embd.as_slice() {
            [rows, _] => *rows,
            _ => return Err(Error::Metadata(format!("token_embd.weight has shape {embd:?}, not [vocab, width]"))),
        };
        let rope_base = gguf.f32(&key("rope.freq_base")).unwrap_or(10_000.0);
        let rms_eps = gguf.f32(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5);
        if !(rope_base.is_finite() && rope_base > 0.0 && rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(Error::Metadata(format!("RoPE base {rope_base} or RMS epsilon {rms_eps} is out of range")));
        }
        Ok(Self {
            architecture,
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dim,
            rope_base,
            rms_eps,
            context_len,
            kv_pad: PEER_KV_PAD,
            vocab_size,
            tied_embeddings: !gguf.has_tensor("output.weight"),
        })
    }

    /// Query heads that share one KV head (grouped-query attention).
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
}
