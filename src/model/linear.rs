//! A (possibly quantised) weight matrix and its product with a batch of activation rows.
//! Every matrix product of the model goes through `Linear::forward`, so faster kernels can
//! replace this one function without touching the model code.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::kernels::{Combine, QuantMatrix, QuantType, Rounding, MAX_SHARED};
use crate::model::gguf::GgufFile;

/// Checks a tensor's shape against the one the metadata implies.
pub fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::Metadata(format!(
            "tensor '{name}' has shape {got:?}, the metadata implies {want:?}"
        )));
    }
    Ok(())
}

enum Weight {
    /// Our own kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K).
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
    /// The tensor `name` of `gguf`, of shape `[out_dim, in_dim]`. Types with our own kernels
    /// stay in the memory-mapped file; the others are read into candle's storage.
    pub fn load(gguf: &GgufFile, name: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        let (dtype, dims, bytes) = gguf.mapped_tensor(name)?;
        check_shape(name, &dims, &[out_dim, in_dim])?;
        let len = bytes.len();
        let own = match dtype {
            GgmlDType::Q4_0 => Some(QuantType::Q4_0),
            GgmlDType::Q4_1 => Some(QuantType::Q4_1),
            GgmlDType::Q5_0 => Some(QuantType::Q5_0),
            GgmlDType::Q5_1 => Some(QuantType::Q5_1),
            GgmlDType::Q8_0 => Some(QuantType::Q8_0),
            GgmlDType::Q4K => Some(QuantType::Q4K),
            GgmlDType::Q6K => Some(QuantType::Q6K),
            _ => None,
        };
        let weight = match own.and_then(|ty| QuantMatrix::new(ty, bytes, out_dim, in_dim)) {
            Some(m) => Weight::Own(m),
            None => Weight::Candle(QMatMul::from_arc(Arc::new(gguf.tensor(name)?))?),
        };
        Ok(Self { weight, in_dim, out_dim, bytes: len })
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

    /// `y[r] = W · x[r]` for each of the `rows` rows of `x` (row-major `[rows, in_dim]`),
    /// rounded as a batch.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut y = vec![0f32; rows * self.out_dim];
        self.forward_into(x, rows, Rounding::Batch, &mut y)?;
        Ok(y)
    }

    /// [`Linear::forward`] into `y` (`rows · out_dim` long), rounded as `rounding` says.
    pub fn forward_into(&self, x: &[f32], rows: usize, rounding: Rounding, y: &mut [f32]) -> Result<()> {
        debug_assert_eq!(x.len(), rows * self.in_dim);
        match &self.weight {
            Weight::Own(m) => m.forward_into(x, rounding, y),
            // candle's float products sum a batch in another order than one row, so rows that
            // must round as one-row products go one at a time.
            Weight::Candle(_) if rounding == Rounding::PerRow && rows > 1 => {
                for (x, y) in x.chunks_exact(self.in_dim).zip(y.chunks_exact_mut(self.out_dim)) {
                    self.forward_into(x, 1, rounding, y)?;
                }
            }
            Weight::Candle(w) => {
                let x = Tensor::from_slice(x, (rows, self.in_dim), &Device::Cpu)?;
                y.copy_from_slice(&w.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(())
    }

    /// `ys[i] = ls[i] · x` for matrices that share their input: one hand-off to the worker
    /// pool when they have the same type, else one product each. Same results either way.
    pub fn forward_shared(
        ls: &[&Linear],
        x: &[f32],
        rows: usize,
        rounding: Rounding,
        ys: &mut [&mut [f32]],
    ) -> Result<()> {
        let n = ls.len();
        let own: [Option<&QuantMatrix>; MAX_SHARED] = std::array::from_fn(|i| ls.get(i)?.own());
        if (1..=MAX_SHARED).contains(&n) && own[..n].iter().all(Option::is_some) {
            let ms: [&QuantMatrix; MAX_SHARED] = std::array::from_fn(|i| own[i.min(n - 1)].expect("checked"));
            if QuantMatrix::forward_shared(&ms[..n], x, ys, rounding) {
                return Ok(());
            }
        }
        for (l, y) in ls.iter().zip(ys.iter_mut()) {
            l.forward_into(x, rows, rounding, y)?;
        }
        Ok(())
    }

    /// `out = combine(gate · x, up · x)`, in one hand-off when both use the same kernel type.
    /// `gate_y` is scratch of `out`'s size.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_gated(
        gate: &Linear,
        up: &Linear,
        x: &[f32],
        rows: usize,
        rounding: Rounding,
        gate_y: &mut [f32],
        out: &mut [f32],
        combine: Combine,
    ) -> Result<()> {
        if let (Some(g), Some(u)) = (gate.own(), up.own()) {
            if QuantMatrix::forward_gated(g, u, x, gate_y, out, combine, rounding) {
                return Ok(());
            }
        }
        gate.forward_into(x, rows, rounding, gate_y)?;
        up.forward_into(x, rows, rounding, out)?;
        combine(gate_y, out);
        Ok(())
    }

    /// Whether the product runs on our own kernels, whose rows' bits depend on the batch only
    /// through its row count (see `generate::prefill`), not on candle's.
    pub fn has_own_kernel(&self) -> bool {
        self.own().is_some()
    }

    fn own(&self) -> Option<&QuantMatrix> {
        match &self.weight {
            Weight::Own(m) => Some(m),
            Weight::Candle(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{gguf_file, QTensor};
    use std::path::Path;

    /// Writes a GGUF holding one `[rows, cols]` tensor per type (named after the type).
    fn write_gguf(path: &Path, types: &[GgmlDType], rows: usize, cols: usize) -> Vec<QTensor> {
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let w = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let tensors: Vec<QTensor> = types.iter().map(|&t| QTensor::quantize(&w, t).unwrap()).collect();
        let names: Vec<String> = types.iter().map(|t| format!("{t:?}")).collect();
        let named: Vec<(&str, &QTensor)> = names.iter().map(|n| n.as_str()).zip(&tensors).collect();
        let mut file = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut file, &[], &named).unwrap();
        tensors
    }

    /// Q4_0, Q5_0, Q5_1, Q4_K and Q6_K tensors of a model file go through our kernels (Q5_K
    /// still through candle), within the kernel tests' tolerance of candle's own product.
    #[test]
    fn loads_our_kernels_for_q4_0_q5_and_k_quants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let types =
            [GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5K];
        let (rows, cols) = (12, 512);
        let tensors = write_gguf(&path, &types, rows, cols);
        let gguf = GgufFile::open(&path).unwrap();
        let x: Vec<f32> = (0..2 * cols).map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0).collect();
        for (ty, q) in types.iter().zip(tensors) {
            let linear = Linear::load(&gguf, &format!("{ty:?}"), rows, cols).unwrap();
            let own = matches!(linear.weight, Weight::Own(_));
            assert_eq!(own, *ty != GgmlDType::Q5K, "{ty:?}");
            let got = linear.forward(&x, 2).unwrap();
            let xt = Tensor::from_slice(&x, (2, cols), &Device::Cpu).unwrap();
            let want = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 0.02 * (cols as f32).sqrt(), "{ty:?}: {g} vs {w}");
            }
        }
    }
}
