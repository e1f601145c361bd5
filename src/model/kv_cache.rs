//! The key/value cache: one preallocated buffer per layer, `[context, n_kv_heads * head_dim]`,
//! in f16 as llama.cpp keeps it by default (half the memory, and the same rounding as the peer
//! engine, whose greedy outputs we reproduce). The buffers are zero-allocated, so untouched
//! positions cost no resident memory.

use half::f16;

pub struct KvCache {
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    kv_dim: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> Self {
        let buffer = || vec![f16::ZERO; capacity * kv_dim];
        Self {
            keys: (0..n_layers).map(|_| buffer()).collect(),
            values: (0..n_layers).map(|_| buffer()).collect(),
            kv_dim,
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores the keys and values of `rows` consecutive positions starting at `pos`.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let start = pos * self.kv_dim;
        let round = |dst: &mut [f16], src: &[f32]| {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = f16::from_f32(*s));
        };
        round(&mut self.keys[layer][start..start + k.len()], k);
        round(&mut self.values[layer][start..start + v.len()], v);
    }

    /// Keys and values of positions `0..len` of one layer.
    pub fn get(&self, layer: usize, len: usize) -> (&[f16], &[f16]) {
        let end = len * self.kv_dim;
        (&self.keys[layer][..end], &self.values[layer][..end])
    }
}
