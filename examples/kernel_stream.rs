//! One-row products over a matrix much larger than the caches, per kernel: how close each
//! kernel's decode-shaped product comes to the read bandwidth (`examples/bandwidth.rs`).
//!
//!     cargo run --release --example kernel_stream -- [THREADS] [REPEATS]
//!
//! The matrices have the output layer's shape in the Qwen2.5-Coder models (151936 rows of 896
//! and of 1536 values), plus the 0.5B one's bytes in 16× longer rows, which shows what each
//! row costs beyond its blocks; their bytes are random, with every f16 scale small and finite.

use std::time::Instant;

use ffnskip::kernels::{Kernel, QuantMatrix, QuantType, Rounding};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(2, |a| a.parse().expect("THREADS: a whole number"));
    let repeats: usize = args.next().map_or(9, |a| a.parse().expect("REPEATS: a whole number"));
    ffnskip::kernels::pool::set_threads(threads);
    println!("threads: {threads}; median of {repeats}");
    println!("| type | shape | kernel | ms | GB/s |\n|---|---|---|---|---|");
    for (ty, cols, rows) in [
        (QuantType::Q8_0, 896, 151_936),
        (QuantType::Q8_0, 14_336, 9_496),
        (QuantType::Q5_0, 896, 151_936),
        (QuantType::Q4K, 1536, 151_936),
        (QuantType::Q6K, 1536, 151_936),
    ] {
        let bytes = random_blocks(ty, rows * cols / ty.block_values());
        let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5).collect();
        let mut y = vec![0f32; rows];
        for kernel in Kernel::available() {
            if kernel == Kernel::Scalar {
                continue;
            }
            let m = QuantMatrix::with_kernel(ty, bytes.clone(), rows, cols, kernel).expect("a valid matrix");
            let mut ms: Vec<f64> = (0..=repeats)
                .map(|_| {
                    let start = Instant::now();
                    m.forward_into(&x, Rounding::PerRow, &mut y);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .skip(1)
                .collect();
            ms.sort_by(f64::total_cmp);
            let med = ms[ms.len() / 2];
            let gbs = m.size_in_bytes() as f64 / med / 1e6;
            println!("| {ty:?} | {rows}×{cols} | {} | {med:.2} | {gbs:.1} |", kernel.name());
        }
    }
}

/// Random blocks whose leading f16 scales (and the k-quants' d/dmin) are 2^-10.
fn random_blocks(ty: QuantType, blocks: usize) -> Vec<u8> {
    let size = ty.block_bytes();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut bytes: Vec<u8> = (0..blocks * size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let scale = half::f16::from_f32(1.0 / 1024.0).to_le_bytes();
    for block in bytes.chunks_mut(size) {
        match ty {
            QuantType::Q4K => {
                block[..2].copy_from_slice(&scale);
                block[2..4].copy_from_slice(&scale);
            }
            QuantType::Q6K => block[size - 2..].copy_from_slice(&scale),
            _ => block[..2].copy_from_slice(&scale),
        }
    }
    bytes
}
