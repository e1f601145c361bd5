//! A quantized weight matrix kept as the file's bytes, the kernels that multiply it, and its
//! products with activation rows (run over the worker pool by `product.rs`).

use std::sync::Arc;

use memmap2::Mmap;

use super::product::{self, Combine, Split, MAX_SHARED};
pub(super) use super::tiles::Tiles;
use super::tiles::{Q4K, Q4_0, Q4_1, Q5_0, Q5_1, Q6K, Q8_0};
use super::Rounding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl QuantType {
    /// Weights per block: a row's length must be a multiple of it.
    pub fn block_values(self) -> usize {
        match self {
            QuantType::Q4_0 => Q4_0::BLOCK_VALUES,
            QuantType::Q4_1 => Q4_1::BLOCK_VALUES,
            QuantType::Q5_0 => Q5_0::BLOCK_VALUES,
            QuantType::Q5_1 => Q5_1::BLOCK_VALUES,
            QuantType::Q8_0 => Q8_0::BLOCK_VALUES,
            QuantType::Q4K => Q4K::BLOCK_VALUES,
            QuantType::Q6K => Q6K::BLOCK_VALUES,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => Q4_0::BLOCK_BYTES,
            QuantType::Q4_1 => Q4_1::BLOCK_BYTES,
            QuantType::Q5_0 => Q5_0::BLOCK_BYTES,
            QuantType::Q5_1 => Q5_1::BLOCK_BYTES,
            QuantType::Q8_0 => Q8_0::BLOCK_BYTES,
            QuantType::Q4K => Q4K::BLOCK_BYTES,
            QuantType::Q6K => Q6K::BLOCK_BYTES,
        }
    }
}

/// Which implementation of the dot products a matrix uses; all give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable code, the oracle of the others.
    Scalar,
    /// AVX2 + FMA + F16C (`avx2.rs`).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, BW, VL, VNNI): for Q4_1, Q5_0, Q5_1 and Q8_0, two weight rows per 512-bit
    /// register (`avx512.rs`); otherwise, and for odd remainders, the 256-bit
    /// tiles with `vpdpbusd`.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// NEON (`neon.rs`, `neon_k.rs`).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU supports (`FFNSKIP_KERNEL=scalar|avx2|avx512vnni|neon` picks
    /// a supported one instead, for comparisons).
    pub fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let all = Kernel::available();
            let wanted = std::env::var("FFNSKIP_KERNEL").ok();
            wanted
                .and_then(|w| all.iter().copied().find(|k| k.name() == w))
                .unwrap_or(*all.last().expect("scalar is always available"))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512vnni",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "neon",
        }
    }

    /// Every kernel this CPU can run, slowest first.
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2 {
                all.push(Kernel::Avx2);
            }
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                all.push(Kernel::Avx512Vnni);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            all.push(Kernel::Neon);
        }
        all
    }
}

/// A matrix's bytes: owned, or a range of a memory-mapped model file (no copy).
pub enum WeightBytes {
    Owned(Vec<u8>),
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Owned(v) => v,
            WeightBytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(v: Vec<u8>) -> Self {
        WeightBytes::Owned(v)
    }
}

pub struct QuantMatrix {
    ty: QuantType,
    kernel: Kernel,
    bytes: WeightBytes,
    rows: usize,
    cols: usize,
}

/// Evaluates `$body` with `$tiles` bound to the [`Tiles`] of matrix `$m`'s type and kernel: the
/// one place a weight type meets its kernels.
macro_rules! with_tiles {
    ($m:expr, |$tiles:ident| $body:expr) => {
        match $m.ty {
            QuantType::Q4_0 => {
                let $tiles = Q4_0($m.kernel);
                $body
            }
            QuantType::Q4_1 => {
                let $tiles = Q4_1($m.kernel);
                $body
            }
            QuantType::Q5_0 => {
                let $tiles = Q5_0($m.kernel);
                $body
            }
            QuantType::Q5_1 => {
                let $tiles = Q5_1($m.kernel);
                $body
            }
            QuantType::Q8_0 => {
                let $tiles = Q8_0($m.kernel);
                $body
            }
            QuantType::Q4K => {
                let $tiles = Q4K($m.kernel);
                $body
            }
            QuantType::Q6K => {
                let $tiles = Q6K($m.kernel);
                $body
            }
        }
    };
}

impl QuantMatrix {
    /// `bytes` holds `rows` rows of `cols / ty.block_values()` blocks each; `cols` must be a
    /// multiple of the block (32 values, 256 for k-quants).
    pub fn new(ty: QuantType, bytes: impl Into<WeightBytes>, rows: usize, cols: usize) -> Option<Self> {
        Self::with_kernel(ty, bytes, rows, cols, Kernel::detect())
    }

    /// As [`QuantMatrix::new`] with a given kernel (`None` if this CPU cannot run it).
    pub fn with_kernel(
        ty: QuantType,
        bytes: impl Into<WeightBytes>,
        rows: usize,
        cols: usize,
        kernel: Kernel,
    ) -> Option<Self> {
        let bytes = bytes.into();
        let values = ty.block_values();
        let ok = cols.is_multiple_of(values)
            && bytes.len() == rows * (cols / values) * ty.block_bytes()
            && Kernel::available().contains(&kernel);
        ok.then_some(Self { ty, kernel, bytes, rows, cols })
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn size_in_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `y[r] = W · x[r]` for each row of `x` (`[n, cols]` → `[n, rows]`), rounded as a batch.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len() / self.cols * self.rows];
        self.forward_into(x, Rounding::Batch, &mut y);
        y
    }

    /// [`QuantMatrix::forward`] into `y` (`n · rows` long), rounded as `rounding` says.
    pub fn forward_into(&self, x: &[f32], rounding: Rounding, y: &mut [f32]) {
        self.shared(&[self], x, &mut [y], rounding, Split::Auto);
    }

    /// [`QuantMatrix::forward`] in a given number of parallel chunks.
    #[cfg(test)]
    fn forward_split(&self, x: &[f32], tasks: usize) -> Vec<f32> {
        let mut y = vec![0f32; x.len() / self.cols * self.rows];
        self.shared(&[self], x, &mut [&mut y[..]], Rounding::Batch, Split::Chunks(tasks));
        y
    }

    /// `ys[i] = ms[i] · x` for up to three matrices that share their input (Q, K and V): the
    /// input is quantised once and the products run in one hand-off to the pool. Returns
    /// `false`, computing nothing, unless the matrices have the same type, kernel and width.
    pub fn forward_shared(ms: &[&QuantMatrix], x: &[f32], ys: &mut [&mut [f32]], rounding: Rounding) -> bool {
        let first = ms[0];
        let same = ms.iter().all(|m| (m.ty, m.kernel, m.cols) == (first.ty, first.kernel, first.cols));
        if !same || ms.len() > MAX_SHARED || ms.len() != ys.len() {
            return false;
        }
        first.shared(ms, x, ys, rounding, Split::Auto);
        true
    }

    /// `out = combine(gate · x, up · x)` in one hand-off, each chunk of rows combined as soon
    /// as both of its products are done (SwiGLU's `silu(gate) · up`). `gate_y` is scratch of
    /// `out`'s size. Returns `false`, computing nothing, unless both matrices have the same
    /// type, kernel and shape.
    pub fn forward_gated(
        gate: &QuantMatrix,
        up: &QuantMatrix,
        x: &[f32],
        gate_y: &mut [f32],
        out: &mut [f32],
        combine: Combine,
        rounding: Rounding,
    ) -> bool {
        let key = |m: &QuantMatrix| (m.ty, m.kernel, m.rows, m.cols);
        if key(gate) != key(up) {
            return false;
        }
        with_tiles!(gate, |tiles| product::run_gated(tiles, gate, up, x, gate_y, out, combine, rounding, Split::Auto));
        true
    }

    /// The products of `ms`, all of `self`'s type and kernel.
    fn shared(&self, ms: &[&QuantMatrix], x: &[f32], ys: &mut [&mut [f32]], rounding: Rounding, split: Split) {
        if x.len() < self.cols || self.rows == 0 {
            return;
        }
        with_tiles!(self, |tiles| product::run_shared(tiles, ms, x, ys, rounding, split));
    }
}

#[cfg(test)]
mod tests;
