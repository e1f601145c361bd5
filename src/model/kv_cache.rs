//! The key/value cache: one preallocated buffer per layer, `[context, n_kv_heads * head_dim]`.
//! The buffers are zero-allocated, so untouched positions cost no resident memory.

pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> Self {
        let buffer = || vec![0f32; capacity * kv_dim];
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
        self.keys[layer][start..start + k.len()].copy_from_slice(k);
        self.values[layer][start..start + v.len()].copy_from_slice(v);
    }

    /// Keys and values of positions `0..len` of one layer.
    pub fn get(&self, layer: usize, len: usize) -> (&[f32], &[f32]) {
        let end = len * self.kv_dim;
        (&self.keys[layer][..end], &self.values[layer][..end])
    }
}
