//! Bit-identity of every kernel to the scalar oracle, agreement with candle, parallel splits.

use super::*;
use crate::kernels::blocks::{dot_q4_1_q8_1, dot_q8_0_q8_0, Q8_0_BYTES, QK};
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
            let x = random(n * cols, 2);
            let got: Vec<Vec<f32>> = Kernel::available()
                .into_iter()
                .map(|k| {
                    let bytes = q.data().unwrap().to_vec();
                    QuantMatrix::with_kernel(ty, bytes, rows, cols, k).unwrap().forward(&x)
                })
                .collect();
            let reference = QMatMul::Tensor(q.dequantize(&Device::Cpu).unwrap())
                .forward(&Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // 8-bit activations: the error is a small fraction of the row's magnitude.
            let tol = 0.02 * (cols as f32).sqrt();
            for one in &got {
                for (g, r) in one.iter().zip(&reference) {
                    assert!((g - r).abs() < tol, "{ty:?} {rows}x{cols}: {g} vs {r}");
                }
                assert_same_bits(one, &got[0], &format!("{ty:?} {rows}x{cols} kernels"));
            }
        }
    }
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Valid weight bytes: finite f16 scales (of varied sign and size) and arbitrary quants.
fn random_weights(ty: QuantType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let vals = random(rows * cols / QK * 40, seed);
    let mut it = vals.iter();
    let mut next = || *it.next().unwrap();
    let mut bytes = Vec::new();
    for _ in 0..rows * cols / QK {
        bytes.extend(f16_bytes(next() * 0.05));
        if ty == QuantType::Q4_1 {
            bytes.extend(f16_bytes(next() * 0.5));
        }
        let quants = if ty == QuantType::Q4_1 { 16 } else { 32 };
        bytes.extend((0..quants).map(|_| (next() * 128.0 + 128.0) as u8));
    }
    assert_eq!(bytes.len(), rows * cols / QK * ty.block_bytes());
    bytes
}

/// Activations with rows of very different magnitudes, some exact zeros and extremes.
fn random_acts(n: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut x = random(n * cols, seed);
    for (i, v) in x.iter_mut().enumerate() {
        let row = i / cols;
        *v *= [1.0, 1e-3, 30.0, 0.7][row % 4];
        if i % 37 == 5 {
            *v = 0.0;
        }
    }
    if n * cols >= QK {
        x[..QK].fill(0.0); // an all-zero block
    }
    x
}

/// The oracle: one scalar dot per (activation row, weight row).
fn oracle(ty: QuantType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let row_bytes = cols / QK * ty.block_bytes();
    let mut y = Vec::new();
    for xr in x.chunks_exact(cols) {
        for wr in w.chunks_exact(row_bytes).take(rows) {
            y.push(match ty {
                QuantType::Q4_1 => {
                    let mut a = Vec::new();
                    quantize_q8_1(xr, &mut a);
                    dot_q4_1_q8_1(wr, &a)
                }
                QuantType::Q8_0 => {
                    let mut a = Vec::new();
                    quantize_q8_0(xr, &mut a);
                    dot_q8_0_q8_0(wr, &a)
                }
            });
        }
    }
    y
}

fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// Every kernel, tile shape and remainder path gives the scalar dot's bits.
#[test]
fn kernels_match_scalar_bit_for_bit() {
    let mut seed = 10;
    for ty in [QuantType::Q4_1, QuantType::Q8_0] {
        for nb in [1, 2, 3, 18, 48] {
            let cols = nb * QK;
            for rows in [1, 3, 4, 5, 9, 64, 131] {
                for n in [1, 2, 3, 5] {
                    seed += 1;
                    let w = random_weights(ty, rows, cols, seed);
                    let x = random_acts(n, cols, seed + 1000);
                    let want = oracle(ty, &w, rows, cols, &x);
                    for kernel in Kernel::available() {
                        let m = QuantMatrix::with_kernel(ty, w.clone(), rows, cols, kernel)
                            .unwrap();
                        let what = format!("{ty:?} {kernel:?} {rows}x{cols} n={n}");
                        assert_same_bits(&m.forward(&x), &want, &what);
                    }
                }
            }
        }
    }
}

/// Q8_0 weights at the extremes (−128, −127, 127) against the sign trick.
#[test]
fn q8_0_extreme_weights_match_scalar() {
    let (rows, cols) = (8, 64);
    let mut w = random_weights(QuantType::Q8_0, rows, cols, 3);
    for (i, block) in w.chunks_exact_mut(Q8_0_BYTES).enumerate() {
        for (j, q) in block[2..].iter_mut().enumerate() {
            *q = [0x80u8, 0x81, 0x7F, 0x00][(i + j) % 4];
        }
    }
    let mut x = random_acts(2, cols, 4);
    x[cols..].iter_mut().for_each(|v| *v = v.signum()); // quants at ±127
    let want = oracle(QuantType::Q8_0, &w, rows, cols, &x);
    for kernel in Kernel::available() {
        let m = QuantMatrix::with_kernel(QuantType::Q8_0, w.clone(), rows, cols, kernel).unwrap();
        assert_same_bits(&m.forward(&x), &want, &format!("{kernel:?}"));
    }
}

/// Products split into any number of chunks, over the pool: the same bits.
#[test]
fn parallel_split_is_bit_identical() {
    for ty in [QuantType::Q4_1, QuantType::Q8_0] {
        let (rows, cols, n) = (1003, 576, 3);
        let w = random_weights(ty, rows, cols, 77);
        let x = random_acts(n, cols, 78);
        let want = oracle(ty, &w, rows, cols, &x);
        let m = QuantMatrix::new(ty, w, rows, cols).unwrap();
        for tasks in [1, 2, 3, 8] {
            let got = m.forward_split(&x, tasks);
            assert_same_bits(&got, &want, &format!("{ty:?} tasks={tasks}"));
        }
    }
}

#[test]
fn rejects_inconsistent_sizes() {
    assert!(QuantMatrix::new(QuantType::Q4_1, vec![0; 20], 1, 33).is_none());
    assert!(QuantMatrix::new(QuantType::Q4_1, vec![0; 19], 1, 32).is_none());
}
