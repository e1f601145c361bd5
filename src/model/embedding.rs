//! The token embedding table, left in the memory-mapped file: a lookup dequantises the
//! token's row and nothing else, so the table costs no heap memory.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use candle_core::quantized::GgmlDType;
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::kernels::WeightBytes;
use crate::model::gguf::GgufFile;
use crate::model::linear::check_shape;

pub struct Embedding {
    dtype: GgmlDType,
    bytes: WeightBytes,
    vocab: usize,
    dim: usize,
}

impl Embedding {
    /// The tensor `name` of `gguf`, of shape `[vocab, dim]`.
    pub fn load(gguf: &GgufFile, name: &str, vocab: usize, dim: usize) -> Result<Self> {
        let (dtype, dims, bytes) = gguf.mapped_tensor(name)?;
        check_shape(name, &dims, &[vocab, dim])?;
        if !dim.is_multiple_of(dtype.block_size()) {
            return Err(Error::Metadata(format!(
                "tensor '{name}': rows of {dim} values do not split into {dtype:?} blocks"
            )));
        }
        Ok(Self { dtype, bytes, vocab, dim })
    }

    /// Writes the embedding of `token` (below the vocabulary size) into `out` (`dim` long).
    pub fn row(&self, token: u32, out: &mut [f32]) {
        let token = token as usize;
        assert!(token < self.vocab, "token {token} outside the vocabulary");
        let row_bytes = self.dim / self.dtype.block_size() * self.dtype.type_size();
        let bytes = &self.bytes[token * row_bytes..][..row_bytes];
        match self.dtype {
            GgmlDType::F32 => dequantize::<f32>(bytes, out),
            GgmlDType::F16 => dequantize::<f16>(bytes, out),
            GgmlDType::BF16 => dequantize::<bf16>(bytes, out),
            GgmlDType::Q4_0 => dequantize::<BlockQ4_0>(bytes, out),
            GgmlDType::Q4_1 => dequantize::<BlockQ4_1>(bytes, out),
            GgmlDType::Q5_0 => dequantize::<BlockQ5_0>(bytes, out),
            GgmlDType::Q5_1 => dequantize::<BlockQ5_1>(bytes, out),
            GgmlDType::Q8_0 => dequantize::<BlockQ8_0>(bytes, out),
            GgmlDType::Q2K => dequantize::<BlockQ2K>(bytes, out),
            GgmlDType::Q3K => dequantize::<BlockQ3K>(bytes, out),
            GgmlDType::Q4K => dequantize::<BlockQ4K>(bytes, out),
            GgmlDType::Q5K => dequantize::<BlockQ5K>(bytes, out),
            GgmlDType::Q6K => dequantize::<BlockQ6K>(bytes, out),
            // `mapped_tensor` admits only the types above.
            other => unreachable!("embedding of unsupported type {other:?}"),
        }
    }
}

/// Dequantises one row of blocks of type `B` (candle's block layouts are ggml's).
fn dequantize<B: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    // SAFETY: every bit pattern is a valid block (plain integers and floats); `align_to` only
    // yields the properly aligned middle part.
    let (head, blocks, tail) = unsafe { bytes.align_to::<B>() };
    if head.is_empty() && tail.is_empty() {
        B::to_float(blocks, out);
    } else {
        // A row at an odd address (not in files written with GGUF's alignment): copy it.
        let mut copy = vec![B::zeros(); bytes.len() / std::mem::size_of::<B>()];
        // SAFETY: `copy` has exactly `bytes.len()` bytes of plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy.as_mut_ptr().cast::<u8>(), bytes.len())
        };
        B::to_float(&copy, out);
    }
}
