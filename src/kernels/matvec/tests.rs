//! Bit-identity of every kernel to the scalar oracle, agreement with candle, parallel splits.

use super::*;
use crate::kernels::blocks::{
    dot_q4_0_q8_0, dot_q4_1_q8_1, dot_q8_0_q8_0, quantize_q8_0, quantize_q8_1, Q8_0_BYTES,
};
use crate::kernels::blocks_k::{dot_q4_k_q8_k, dot_q6_k_q8_k, quantize_q8_k_rows, Q4KSums, Q6KSums, QK_K};
use crate::kernels::blocks_q5::{dot_q5_0_q8_0, dot_q5_1_q8_1};
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
    for (ty, dtype) in [
        (QuantType::Q4_0, GgmlDType::Q4_0),
        (QuantType::Q4_1, GgmlDType::Q4_1),
        (QuantType::Q5_0, GgmlDType::Q5_0),
        (QuantType::Q5_1, GgmlDType::Q5_1),
        (QuantType::Q8_0, GgmlDType::Q8_0),
        (QuantType::Q4K, GgmlDType::Q4K),
        (QuantType::Q6K, GgmlDType::Q6K),
    ] {
        let values = ty.block_values();
        for (rows, blocks, n) in [(1, 1, 1), (7, 2, 3), (65, 3, 2), (130, 1536 / values, 1)] {
            let cols = blocks * values;
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

/// The Q5 oracles against candle's dequantised weights dotted (in f64) with the dequantised
/// 8-bit activations: the same product up to f32 rounding, plus for Q5_1 the f16 rounding of
/// each activation block's `s` in the `m·s` term. Catches any misreading of the 5-bit layout.
#[test]
fn q5_oracles_match_candle_dequantised_weights() {
    let (rows, cols) = (9, 8 * 32);
    for (ty, dtype) in [(QuantType::Q5_0, GgmlDType::Q5_0), (QuantType::Q5_1, GgmlDType::Q5_1)] {
        let w = Tensor::from_vec(random(rows * cols, 5), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let deq = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x = random_acts(ty, 1, cols, 6);
        // The activations as the products see them, and each block's `s` rounding allowance.
        let (a, slack): (Vec<f64>, Vec<f64>) = if ty == QuantType::Q5_0 {
            let mut acts = Vec::new();
            quantize_q8_0(&x, &mut acts);
            let a = acts.iter().flat_map(|b| b.qs.map(|q| f64::from(b.d) * f64::from(q))).collect();
            (a, Vec::new())
        } else {
            let mut acts = Vec::new();
            quantize_q8_1(&x, &mut acts);
            let a = acts.iter().flat_map(|b| b.qs.map(|q| f64::from(b.d) * f64::from(q))).collect();
            (a, acts.iter().map(|b| f64::from(b.s.abs()) / 1024.0).collect())
        };
        let row_bytes = bytes.len() / rows;
        for (r, (wr, dr)) in bytes.chunks_exact(row_bytes).zip(deq.chunks_exact(cols)).enumerate() {
            let got = f64::from(oracle(ty, wr, 1, cols, &x)[0]);
            let want: f64 = dr.iter().zip(&a).map(|(&w, a)| f64::from(w) * a).sum();
            let magnitude: f64 = dr.iter().zip(&a).map(|(&w, a)| (f64::from(w) * a).abs()).sum();
            // |m| of each Q5_1 block (the f16 after d) times its `s` allowance.
            let m = |b: &[u8]| f64::from(half::f16::from_le_bytes([b[2], b[3]]).to_f32().abs());
            let m_term: f64 = match ty {
                QuantType::Q5_1 => wr.chunks_exact(ty.block_bytes()).zip(&slack).map(|(b, s)| m(b) * s).sum(),
                _ => 0.0,
            };
            let tol = 1e-5 * magnitude + m_term;
            assert!((got - want).abs() <= tol, "{ty:?} row {r}: {got} vs {want} (tol {tol})");
        }
    }
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Every weight type with our kernels.
const TYPES: [QuantType; 7] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
    QuantType::Q4K,
    QuantType::Q6K,
];

/// A finite f16 scale of either sign: mostly ordinary sizes, sometimes large, subnormal or zero.
fn scale(v: f32, i: usize) -> [u8; 2] {
    f16_bytes(match i % 23 {
        3 => v.signum() * 2.0,
        7 => v * 1e-6,
        11 => 0.0,
        _ => v * 0.05,
    })
}

/// Quant bytes: random, except every seventh block at the extremes (all bits set or clear).
fn quants(n: usize, i: usize, next: &mut impl FnMut() -> f32) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let v = next();
            match i % 7 {
                2 => 0x00,
                5 => 0xFF,
                _ => (v * 128.0 + 128.0) as u8,
            }
        })
        .collect()
}

/// One valid weight block of type `ty` (the `i`-th of the matrix).
fn random_block(ty: QuantType, i: usize, next: &mut impl FnMut() -> f32) -> Vec<u8> {
    let mut block = Vec::new();
    match ty {
        QuantType::Q4_0 => {
            block.extend(scale(next(), i));
            block.extend(quants(16, i, next));
        }
        QuantType::Q4_1 => {
            block.extend(scale(next(), i));
            block.extend(f16_bytes(next() * 0.5));
            block.extend(quants(16, i, next));
        }
        QuantType::Q5_0 => {
            block.extend(scale(next(), i));
            block.extend(quants(4, i + 1, next)); // qh: the fifth bits, at times all set or clear
            block.extend(quants(16, i, next));
        }
        QuantType::Q5_1 => {
            block.extend(scale(next(), i));
            block.extend(f16_bytes(next() * 0.5));
            block.extend(quants(4, i + 1, next));
            block.extend(quants(16, i, next));
        }
        QuantType::Q8_0 => {
            block.extend(scale(next(), i));
            block.extend(quants(32, i, next));
        }
        QuantType::Q4K => {
            block.extend(scale(next(), i));
            block.extend(scale(next(), i + 1)); // dmin
            block.extend(quants(12, i + 3, next)); // 6-bit scales and mins, all 63 or 0 at times
            block.extend(quants(128, i, next));
        }
        QuantType::Q6K => {
            block.extend(quants(128, i, next)); // ql
            block.extend(quants(64, i + 1, next)); // qh
            // i8 scales, at times alternating between the extremes −128 and 127.
            let extreme = i % 5 == 1;
            block.extend(quants(16, i, next).iter().enumerate().map(|(j, &q)| match extreme {
                true => [0x80, 0x7F][j % 2],
                false => q,
            }));
            block.extend(scale(next(), i));
        }
    }
    assert_eq!(block.len(), ty.block_bytes());
    block
}

/// Valid weight bytes: finite f16 scales (of varied sign and size) and arbitrary quants.
fn random_weights(ty: QuantType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let blocks = rows * cols / ty.block_values();
    let vals = random(blocks * (ty.block_bytes() + 4), seed);
    let mut it = vals.into_iter();
    let mut next = || it.next().unwrap();
    (0..blocks).flat_map(|i| random_block(ty, i, &mut next)).collect()
}

/// Activations with rows of very different magnitudes (one with all quants at ±127), some
/// exact zeros, and an all-zero first block.
fn random_acts(ty: QuantType, n: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut x = random(n * cols, seed);
    for (i, v) in x.iter_mut().enumerate() {
        let row = i / cols;
        *v = if row % 5 == 4 { v.signum() } else { *v * [1.0, 1e-3, 30.0, 0.7][row % 5] };
        if i % 37 == 5 {
            *v = 0.0;
        }
    }
    x[..ty.block_values().min(n * cols)].fill(0.0);
    x
}

/// The oracle: one scalar dot per (activation row, weight row).
fn oracle(ty: QuantType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let row_bytes = cols / ty.block_values() * ty.block_bytes();
    // Q8_K rows depend on the batch they are in (`Q4KSums`).
    let mut acts_k = Vec::new();
    quantize_q8_k_rows(x, cols, &mut acts_k);
    let mut y = Vec::new();
    for (i, xr) in x.chunks_exact(cols).enumerate() {
        let row_k = &acts_k[i * cols / QK_K..(i + 1) * cols / QK_K];
        for wr in w.chunks_exact(row_bytes).take(rows) {
            y.push(match ty {
                QuantType::Q4_0 => {
                    let mut a = Vec::new();
                    quantize_q8_0(xr, &mut a);
                    dot_q4_0_q8_0(wr, &a)
                }
                QuantType::Q4_1 => {
                    let mut a = Vec::new();
                    quantize_q8_1(xr, &mut a);
                    dot_q4_1_q8_1(wr, &a)
                }
                QuantType::Q5_0 => {
                    let mut a = Vec::new();
                    quantize_q8_0(xr, &mut a);
                    dot_q5_0_q8_0(wr, &a)
                }
                QuantType::Q5_1 => {
                    let mut a = Vec::new();
                    quantize_q8_1(xr, &mut a);
                    dot_q5_1_q8_1(wr, &a)
                }
                QuantType::Q8_0 => {
                    let mut a = Vec::new();
                    quantize_q8_0(xr, &mut a);
                    dot_q8_0_q8_0(wr, &a)
                }
                QuantType::Q4K => dot_q4_k_q8_k(wr, row_k),
                QuantType::Q6K => dot_q6_k_q8_k(wr, row_k),
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
    for ty in TYPES {
        // Realistic rows: 576 and 1536 values (32-blocks), 1536 and 8960 (256-blocks).
        let realistic = if ty.block_values() == 32 { [18, 48] } else { [6, 35] };
        for nb in [1, 2, 3].into_iter().chain(realistic) {
            let cols = nb * ty.block_values();
            for rows in [1, 3, 4, 5, 9, 64, 131] {
                // 5 and 6: a group of 4 rows through ggml's batched Q4_K order, then single rows;
                // 9: Q6_K's tiled order too.
                for n in [1, 2, 3, 5, 6, 9] {
                    seed += 1;
                    let w = random_weights(ty, rows, cols, seed);
                    let x = random_acts(ty, n, cols, seed + 1000);
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

/// k-quant rows in a batch sum in another order than single rows, as ggml's batched and one-row
/// kernels do: Q4_K rows in complete groups of 4, Q6_K rows of a product with 8 or more. The
/// same activation row then gives other bits, equal up to rounding.
#[test]
fn k_quant_batched_rows_round_otherwise() {
    let (rows, cols) = (64, 1536);
    let row = random_acts(QuantType::Q4K, 1, cols, 6);
    for (ty, n) in [(QuantType::Q4K, 5), (QuantType::Q6K, 9)] {
        let batch: Vec<f32> = row.iter().cycle().take(n * cols).copied().collect();
        let mut acts = Vec::new();
        quantize_q8_k_rows(&batch, cols, &mut acts);
        let marks: Vec<(Q4KSums, Q6KSums)> =
            acts.chunks_exact(cols / QK_K).map(|r| (r[0].q4_k_sums, r[0].q6_k_sums)).collect();
        let q4 = |i: usize| if i < n - n % 4 { Q4KSums::PerSubBlockPair } else { Q4KSums::PerBlock };
        let q6 = if n >= 8 { Q6KSums::PerBlock } else { Q6KSums::Lanes };
        assert_eq!(marks, (0..n).map(|i| (q4(i), q6)).collect::<Vec<_>>(), "{ty:?}");
        let m = QuantMatrix::new(ty, random_weights(ty, rows, cols, 5), rows, cols).unwrap();
        let y = m.forward(&batch);
        let single = m.forward(&row);
        let first = &y[..rows];
        assert!(first.iter().zip(&single).any(|(a, b)| a != b), "{ty:?}: some rounding differs");
        for (a, b) in first.iter().zip(&single) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{ty:?}: {a} vs {b}");
        }
        if ty == QuantType::Q4K {
            assert_same_bits(&y[4 * rows..], &single, "Q4_K: the row after the group of 4");
        }
    }
}

/// With [`Rounding::PerRow`] every row of a batch gets the bits of its own one-row product, for
/// every type, kernel and batch size (the batch sizes cover ggml's Q4_K groups of 4 and its
/// tiled Q6_K kernel from 8 rows): what a speculative verification relies on.
#[test]
fn per_row_rounding_equals_one_row_products() {
    let (rows, cols) = (24, 512);
    for ty in TYPES {
        for kernel in Kernel::available() {
            let m = QuantMatrix::with_kernel(ty, random_weights(ty, rows, cols, 11), rows, cols, kernel).unwrap();
            for n in [2, 4, 5, 9] {
                let batch = random_acts(ty, n, cols, 12 + n as u64);
                let mut y = vec![0f32; n * rows];
                m.forward_into(&batch, Rounding::PerRow, &mut y);
                for (r, (x, got)) in batch.chunks_exact(cols).zip(y.chunks_exact(rows)).enumerate() {
                    assert_same_bits(got, &m.forward(x), &format!("{ty:?} {kernel:?} row {r} of {n}"));
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
    let mut x = random_acts(QuantType::Q8_0, 2, cols, 4);
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
    for ty in TYPES {
        let (rows, cols, n) = (1003, 1536, 3);
        let w = random_weights(ty, rows, cols, 77);
        let x = random_acts(ty, n, cols, 78);
        let want = oracle(ty, &w, rows, cols, &x);
        let m = QuantMatrix::new(ty, w, rows, cols).unwrap();
        for tasks in [1, 2, 3, 8] {
            let got = m.forward_split(&x, tasks);
            assert_same_bits(&got, &want, &format!("{ty:?} tasks={tasks}"));
        }
    }
}

/// A row length that is not a whole number of blocks, or a byte count that does not match.
#[test]
fn rejects_inconsistent_sizes() {
    for ty in TYPES {
        let (values, bytes) = (ty.block_values(), ty.block_bytes());
        assert!(QuantMatrix::new(ty, vec![0; 3 * bytes], 3, values).is_some(), "{ty:?}");
        assert!(QuantMatrix::new(ty, vec![0; bytes], 1, values + 1).is_none(), "{ty:?}");
        assert!(QuantMatrix::new(ty, vec![0; bytes], 1, values / 2).is_none(), "{ty:?}");
        assert!(QuantMatrix::new(ty, vec![0; 3 * bytes - 1], 3, values).is_none(), "{ty:?}");
        assert!(QuantMatrix::new(ty, vec![0; 3 * bytes + 1], 3, values).is_none(), "{ty:?}");
        assert!(QuantMatrix::new(ty, vec![0; 2 * bytes], 1, values).is_none(), "{ty:?}");
    }
}

/// Products sharing their input (Q, K, V) or gated (gate, up) give each single product's bits,
/// for every type (sizes large enough to go through the pool).
#[test]
fn shared_and_gated_products_match_single_ones() {
    let (cols, n) = (512, 3);
    for ty in TYPES {
        let ms: Vec<QuantMatrix> = [(264, 31), (200, 32), (200, 33)]
            .into_iter()
            .map(|(rows, seed)| {
                QuantMatrix::new(ty, random_weights(ty, rows, cols, seed), rows, cols).unwrap()
            })
            .collect();
        let x = random_acts(ty, n, cols, 34);
        let singles: Vec<Vec<f32>> = ms.iter().map(|m| m.forward(&x)).collect();

        let mut ys: Vec<Vec<f32>> = ms.iter().map(|m| vec![0f32; n * m.rows()]).collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
        assert!(QuantMatrix::forward_shared(&[&ms[0], &ms[1], &ms[2]], &x, &mut outs, Rounding::Batch));
        for (i, (y, single)) in ys.iter().zip(&singles).enumerate() {
            assert_same_bits(y, single, &format!("{ty:?} shared {i}"));
        }

        let product = |g: &[f32], u: &mut [f32]| u.iter_mut().zip(g).for_each(|(u, g)| *u *= g);
        let (mut gate_y, mut out) = (vec![0f32; n * 200], vec![0f32; n * 200]);
        assert!(QuantMatrix::forward_gated(&ms[1], &ms[2], &x, &mut gate_y, &mut out, &product, Rounding::Batch));
        let want: Vec<f32> = singles[1].iter().zip(&singles[2]).map(|(g, u)| u * g).collect();
        assert_same_bits(&out, &want, &format!("{ty:?} gated"));
    }
}
