//! DRAM read bandwidth of this machine: the floor under decode speed, which streams every weight
//! of the model once per token.
//!
//!     cargo run --release --example bandwidth [-- GIB [RUNS]]
//!
//! Reads a buffer of GIB GiB (default 1, far larger than any cache) with 1 and with 2 threads,
//! each thread summing its half with 512-bit loads (AVX-512 when the CPU has it, otherwise
//! whatever the compiler vectorises), and prints the median of RUNS passes (default 7) in GB/s
//! (10^9 bytes per second, as model sizes are given in bytes).

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let gib: usize = args.next().map_or(1, |a| a.parse().expect("GIB: a whole number"));
    let runs: usize = args.next().map_or(7, |a| a.parse().expect("RUNS: a whole number"));
    let words = gib << 27; // u64 words in GIB GiB
    // Written once so that every page is backed by memory before the timing starts.
    let buffer: Vec<u64> = (0..words as u64).collect();
    println!("buffer: {gib} GiB, {runs} passes per thread count, median");
    for threads in [1, 2] {
        let mut seconds: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let sum: u64 = std::thread::scope(|s| {
                    let parts: Vec<_> = buffer
                        .chunks(words.div_ceil(threads))
                        .map(|part| s.spawn(move || read_sum(part)))
                        .collect();
                    parts.into_iter().map(|p| p.join().unwrap()).fold(0, u64::wrapping_add)
                });
                std::hint::black_box(sum);
                start.elapsed().as_secs_f64()
            })
            .collect();
        seconds.sort_by(f64::total_cmp);
        let median = seconds[runs / 2];
        let bytes = (words * 8) as f64;
        println!("{threads} thread(s): {:.1} GB/s", bytes / median / 1e9);
    }
}

/// The wrapping sum of `words`: every byte is read once.
fn read_sum(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { read_sum_avx512(words) };
    }
    words.iter().fold(0, |a, &w| a.wrapping_add(w))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn read_sum_avx512(words: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let chunks = words.chunks_exact(32);
    let tail = chunks.remainder().iter().fold(0u64, |a, &w| a.wrapping_add(w));
    // Four independent accumulators keep four loads in flight per iteration.
    let mut acc = [_mm512_setzero_si512(); 4];
    for c in chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 32 words, so words 8k..8k+8 are readable.
            let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(8 * k).cast()) };
            *a = _mm512_add_epi64(*a, v);
        }
    }
    let total = _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
    (_mm512_reduce_add_epi64(total) as u64).wrapping_add(tail)
}
