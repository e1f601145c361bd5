//! The key/value cache: one preallocated buffer per layer, `[context, n_kv_heads * head_dim]`.
//! f16 by default, as llama.cpp keeps it (half the memory, and the same rounding as the peer
//! engine whose greedy outputs we compare against); f32 on request. The buffers are
//! zero-allocated, so untouched positions cost no resident memory.

use half::f16;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfBitsVecExt;

/// An element type the cache can hold.
pub trait KvElement: Copy + Send + Sync + 'static {
    /// `len` zeros, from zeroed memory (untouched pages stay unallocated).
    fn zeroed(len: usize) -> Vec<Self>;
    fn store(x: f32) -> Self;
    fn load(self) -> f32;
    /// Converts a row to f32 (vectorised for f16: per-element conversion is a call each).
    fn load_slice(src: &[Self], dst: &mut [f32]);
    /// Whether attention reads the cache as it is (no conversion to f32 first).
    fn direct() -> bool;
    /// Rounds a value to this precision: what the cache's dot products see.
    fn round(x: f32) -> f32 {
        Self::store(x).load()
    }
}

impl KvElement for f32 {
    fn zeroed(len: usize) -> Vec<Self> {
        vec![0.0; len]
    }
    fn store(x: f32) -> Self {
        x
    }
    fn load(self) -> f32 {
        self
    }
    fn load_slice(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn direct() -> bool {
        true
    }
}

impl KvElement for f16 {
    fn zeroed(len: usize) -> Vec<Self> {
        // `vec![f16::ZERO; n]` writes every element; zeroed u16s come from calloc.
        vec![0u16; len].reinterpret_into()
    }
    fn store(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn load(self) -> f32 {
        self.to_f32()
    }
    fn load_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn direct() -> bool {
        // With AVX-512 the attention sums convert f16 as they load it.
        #[cfg(target_arch = "x86_64")]
        return crate::model::numerics_avx512::available();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvPrecision {
    #[default]
    F16,
    F32,
}

pub struct KvBuffers<T> {
    keys: Vec<Vec<T>>,
    values: Vec<Vec<T>>,
}

impl<T: KvElement> KvBuffers<T> {
    fn new(n_layers: usize, len: usize) -> Self {
        let buffer = || T::zeroed(len);
        Self { keys: (0..n_layers).map(|_| buffer()).collect(), values: (0..n_layers).map(|_| buffer()).collect() }
    }

    fn write(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let store = |dst: &mut [T], src: &[f32]| dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::store(*s));
        store(&mut self.keys[layer][start..start + k.len()], k);
        store(&mut self.values[layer][start..start + v.len()], v);
    }

    /// Keys and values of the first `end` elements of one layer.
    pub fn get(&self, layer: usize, end: usize) -> (&[T], &[T]) {
        (&self.keys[layer][..end], &self.values[layer][..end])
    }
}

pub enum KvStore {
    F16(KvBuffers<f16>),
    F32(KvBuffers<f32>),
}

pub struct KvCache {
    store: KvStore,
    kv_dim: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize, precision: KvPrecision) -> Self {
        let len = capacity * kv_dim;
        let store = match precision {
            KvPrecision::F16 => KvStore::F16(KvBuffers::new(n_layers, len)),
            KvPrecision::F32 => KvStore::F32(KvBuffers::new(n_layers, len)),
        };
        Self { store, kv_dim, capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores the keys and values of consecutive positions starting at `pos`.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let start = pos * self.kv_dim;
        match &mut self.store {
            KvStore::F16(b) => b.write(layer, start, k, v),
            KvStore::F32(b) => b.write(layer, start, k, v),
        }
    }

    /// The keys and values of positions `0..len` of one layer, as f32.
    pub fn read(&self, layer: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        fn to_f32<T: KvElement>(b: &KvBuffers<T>, layer: usize, end: usize) -> (Vec<f32>, Vec<f32>) {
            let (k, v) = b.get(layer, end);
            (k.iter().map(|x| x.load()).collect(), v.iter().map(|x| x.load()).collect())
        }
        match &self.store {
            KvStore::F16(b) => to_f32(b, layer, len * self.kv_dim),
            KvStore::F32(b) => to_f32(b, layer, len * self.kv_dim),
        }
    }

    /// The buffers; positions `0..len` of a layer are `get(layer, len * kv_dim)`.
    pub fn store(&self) -> &KvStore {
        &self.store
    }
}
