//! A (possibly quantised) weight matrix and its product with a batch of activation rows.
//! Every matrix product of the model goes through `Linear::forward`, so faster kernels can
//! replace this one function without touching the model code.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::sync::Arc;

use crate::error::Result;
use crate::kernels::{QuantMatrix, QuantType};

enum Weight {
    /// Our own kernels (Q4_1, Q8_0).
    Own(QuantMatrix),
    /// Every other type, through candle.
    Candle(QMatMul),
}

pub struct Linear {
    weight: Weight,
    in_dim: usize,
    out_dim: usize,
    bytes: usize,
}

impl Linear {
    /// `weight` has the GGUF shape `[out_dim, in_dim]`.
    pub fn new(weight: Arc<QTensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.shape().dims2()?;
        let bytes = weight.storage_size_in_bytes();
        let own = match weight.dtype() {
            GgmlDType::Q4_1 => Some(QuantType::Q4_1),
            GgmlDType::Q8_0 => Some(QuantType::Q8_0),
            _ => None,
        }
        .and_then(|ty| QuantMatrix::new(ty, weight.data().ok()?.to_vec(), out_dim, in_dim));
        let weight = match own {
            Some(m) => Weight::Own(m),
            None => Weight::Candle(QMatMul::from_arc(weight)?),
        };
        Ok(Self { weight, in_dim, out_dim, bytes })
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Size of the weights in the file, in bytes: what one product has to read.
    pub fn weight_bytes(&self) -> usize {
        self.bytes
    }

    /// `y[r] = W · x[r]` for each of the `rows` rows of `x` (row-major `[rows, in_dim]`).
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(x.len(), rows * self.in_dim);
        match &self.weight {
            Weight::Own(m) => Ok(m.forward(x)),
            Weight::Candle(w) => {
                let x = Tensor::from_slice(x, (rows, self.in_dim), &Device::Cpu)?;
                Ok(w.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}
