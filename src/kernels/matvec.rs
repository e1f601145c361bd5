//! A quantized weight matrix kept as the file's bytes, and its product with activation rows,
//! parallel over output rows.

use rayon::prelude::*;

use super::blocks::{
    dot_q4_1_q8_1, dot_q8_0_q8_0, quantize_q8_0, quantize_q8_1, Q4_1_BYTES, Q8_0_BYTES, QK,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q4_1,
    Q8_0,
}

impl QuantType {
    fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_1 => Q4_1_BYTES,
            QuantType::Q8_0 => Q8_0_BYTES,
        }
    }
}

pub struct QuantMatrix {
    ty: QuantType,
    bytes: Vec<u8>,
    rows: usize,
    cols: usize,
}

/// Rows per parallel task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

impl QuantMatrix {
    /// `bytes` holds `rows` rows of `cols / 32` blocks each; `cols` must be a multiple of 32.
    pub fn new(ty: QuantType, bytes: Vec<u8>, rows: usize, cols: usize) -> Option<Self> {
        let ok = cols % QK == 0 && bytes.len() == rows * cols / QK * ty.block_bytes();
        ok.then_some(Self { ty, bytes, rows, cols })
    }

    pub fn size_in_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// `y[r] = W · x[r]` for each row of `x` (`[n, cols]` → `[n, rows]`).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.cols;
        let row_bytes = self.cols / QK * self.ty.block_bytes();
        let mut y = vec![0f32; n * self.rows];
        for (xr, yr) in x.chunks_exact(self.cols).zip(y.chunks_exact_mut(self.rows)) {
            match self.ty {
                QuantType::Q4_1 => {
                    let mut act = Vec::new();
                    quantize_q8_1(xr, &mut act);
                    self.rows_par(yr, row_bytes, |w| dot_q4_1_q8_1(w, &act));
                }
                QuantType::Q8_0 => {
                    let mut act = Vec::new();
                    quantize_q8_0(xr, &mut act);
                    self.rows_par(yr, row_bytes, |w| dot_q8_0_q8_0(w, &act));
                }
            }
        }
        y
    }

    fn rows_par(&self, y: &mut [f32], row_bytes: usize, dot: impl Fn(&[u8]) -> f32 + Sync) {
        y.par_chunks_mut(ROWS_PER_TASK)
            .zip(self.bytes.par_chunks(ROWS_PER_TASK * row_bytes))
            .for_each(|(ys, ws)| {
                for (yi, w) in ys.iter_mut().zip(ws.chunks_exact(row_bytes)) {
                    *yi = dot(w);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Our kernels against candle's dequantise-and-matmul on random data, odd shapes included.
    #[test]
    fn matches_candle_dequantized_product() {
        for (ty, dtype) in [(QuantType::Q4_1, GgmlDType::Q4_1), (QuantType::Q8_0, GgmlDType::Q8_0)] {
            for (rows, cols, n) in [(1, 32, 1), (7, 64, 3), (65, 96, 2), (130, 576, 1)] {
                let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let ours = QuantMatrix::new(ty, q.data().unwrap().to_vec(), rows, cols).unwrap();
                let x = random(n * cols, 2);
                let got = ours.forward(&x);
                let reference = QMatMul::Tensor(q.dequantize(&Device::Cpu).unwrap())
                    .forward(&Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                // 8-bit activations: the error is a small fraction of the row's magnitude.
                let tol = 0.02 * (cols as f32).sqrt();
                for (g, r) in got.iter().zip(&reference) {
                    assert!((g - r).abs() < tol, "{ty:?} {rows}x{cols}: {g} vs {r}");
                }
            }
        }
    }

    #[test]
    fn rejects_inconsistent_sizes() {
        assert!(QuantMatrix::new(QuantType::Q4_1, vec![0; 20], 1, 33).is_none());
        assert!(QuantMatrix::new(QuantType::Q4_1, vec![0; 19], 1, 32).is_none());
    }
}
