//! Per weight type: its activation format and quantisation, block size, scalar dot product and
//! SIMD tiles, behind one trait so the products (`product.rs`) are written once for every type.

use std::cell::RefCell;

use super::blocks::{
    dot_q4_0_q8_0, dot_q4_1_q8_1, dot_q8_0_q8_0, quantize_q8_0, quantize_q8_1, BlockQ8_0,
    BlockQ8_1, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK,
};
use super::blocks_q5::{dot_q5_0_q8_0, dot_q5_1_q8_1, Q5_0_BYTES, Q5_1_BYTES};
use super::blocks_k::{
    dot_q4_k_q8_k, dot_q6_k_q8_k, quantize_q8_k, quantize_q8_k_rows, BlockQ8K, Q4_K_BYTES,
    Q6_K_BYTES, QK_K,
};
use super::matvec::Kernel;
use super::Rounding;

thread_local! {
    static ACT_Q8_1: RefCell<Vec<BlockQ8_1>> = const { RefCell::new(Vec::new()) };
    static ACT_Q8_0: RefCell<Vec<BlockQ8_0>> = const { RefCell::new(Vec::new()) };
    static ACT_Q8_K: RefCell<Vec<BlockQ8K>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable buffer (a fresh one if it is already in use).
fn with_buffer<T, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    f: impl FnOnce(&mut Vec<T>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// A quantiser that rounds every row alike, as a `weight_type!` quantiser.
fn row_independent<A>(
    quantize: fn(&[f32], &mut Vec<A>),
) -> impl Fn(&[f32], usize, Rounding, &mut Vec<A>) {
    move |x, _cols, _rounding, out| quantize(x, out)
}

/// Q8_K rows marked with the ggml kernel that takes them: the batch's, or the one-row kernel's.
fn quantize_q8_k_for(x: &[f32], cols: usize, rounding: Rounding, out: &mut Vec<BlockQ8K>) {
    match rounding {
        Rounding::Batch => quantize_q8_k_rows(x, cols, out),
        Rounding::PerRow => quantize_q8_k(x, out),
    }
}

/// One weight type's tile function, for every kernel.
pub(super) trait Tiles: Copy + Sync {
    type Act: Sync;
    /// Weights per block.
    const BLOCK_VALUES: usize;
    /// Bytes of one weight block.
    const BLOCK_BYTES: usize;
    /// Runs `f` with the rows of `x` (`cols` wide) quantised for this type (in a reused buffer),
    /// marked to round as `rounding` says.
    fn with_acts<R>(x: &[f32], cols: usize, rounding: Rounding, f: impl FnOnce(&[Self::Act]) -> R) -> R;
    fn kernel(self) -> Kernel;
    /// The scalar product of one weight row with one activation row: the oracle of the tiles.
    fn dot(row: &[u8], acts: &[Self::Act]) -> f32;
    /// The SIMD tile of this type (`vnni`: the AVX-512 VNNI variant, else AVX2).
    ///
    /// # Safety
    /// As [`Tiles::tile`], and the CPU supports the chosen variant.
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_tile<const R: usize, const C: usize>(
        vnni: bool,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const Self::Act; C],
        out: &mut [[f32; C]; R],
    );
    /// The NEON tile of this type.
    ///
    /// # Safety
    /// As [`Tiles::tile`], and the CPU supports NEON.
    #[cfg(target_arch = "aarch64")]
    unsafe fn neon_tile<const R: usize, const C: usize>(
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const Self::Act; C],
        out: &mut [[f32; C]; R],
    );

    /// Whether 4 × 4 tiles fit the registers (32 vector registers with AVX-512).
    fn wide(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.kernel() == Kernel::Avx512Vnni {
            return true;
        }
        false
    }

    /// `out[r][c] = dot(row r at w, acts[c])`.
    ///
    /// # Safety
    /// `w` holds `R` rows of `row_bytes` (≥ `nb` blocks); each `acts[c]` holds `nb` blocks.
    unsafe fn tile<const R: usize, const C: usize>(
        self,
        w: *const u8,
        row_bytes: usize,
        nb: usize,
        acts: [*const Self::Act; C],
        out: &mut [[f32; C]; R],
    ) {
        match self.kernel() {
            Kernel::Scalar => {
                for (r, out) in out.iter_mut().enumerate() {
                    let row = std::slice::from_raw_parts(w.add(r * row_bytes), nb * Self::BLOCK_BYTES);
                    for (o, a) in out.iter_mut().zip(acts) {
                        *o = Self::dot(row, std::slice::from_raw_parts(a, nb));
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => Self::simd_tile::<R, C>(false, w, row_bytes, nb, acts, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => Self::simd_tile::<R, C>(true, w, row_bytes, nb, acts, out),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => Self::neon_tile::<R, C>(w, row_bytes, nb, acts, out),
        }
    }
}

/// Defines the marker type `$name` (holding the kernel) and its `Tiles` impl: activations `$act`
/// quantised by `$quantize(x, cols, rounding, out)` into the thread's `$buffer`, blocks of `$values` weights in
/// `$bytes` bytes, the scalar `$dot`, the NEON tile, the AVX2 and VNNI tiles, and optionally
/// the AVX-512 tile for an even number of rows (which then takes precedence over the VNNI one).
macro_rules! weight_type {
    (
        $name:ident, $act:ty, $quantize:expr, $buffer:ident, $values:expr, $bytes:expr, $dot:path,
        $neon:path, $avx2:path, $vnni:path $(, $avx512_even_rows:path)?
    ) => {
        #[derive(Clone, Copy)]
        pub(super) struct $name(pub(super) Kernel);

        impl Tiles for $name {
            type Act = $act;
            const BLOCK_VALUES: usize = $values;
            const BLOCK_BYTES: usize = $bytes;
            fn with_acts<R>(x: &[f32], cols: usize, rounding: Rounding, f: impl FnOnce(&[$act]) -> R) -> R {
                with_buffer(&$buffer, |acts| {
                    ($quantize)(x, cols, rounding, acts);
                    f(acts)
                })
            }
            fn kernel(self) -> Kernel {
                self.0
            }
            fn dot(row: &[u8], acts: &[$act]) -> f32 {
                $dot(row, acts)
            }
            #[cfg(target_arch = "x86_64")]
            unsafe fn simd_tile<const R: usize, const C: usize>(
                vnni: bool,
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const $act; C],
                out: &mut [[f32; C]; R],
            ) {
                if !vnni {
                    return $avx2(w, row_bytes, nb, acts, out);
                }
                $(if R % 2 == 0 {
                    return $avx512_even_rows(w, row_bytes, nb, acts, out);
                })?
                $vnni(w, row_bytes, nb, acts, out)
            }
            #[cfg(target_arch = "aarch64")]
            unsafe fn neon_tile<const R: usize, const C: usize>(
                w: *const u8,
                row_bytes: usize,
                nb: usize,
                acts: [*const $act; C],
                out: &mut [[f32; C]; R],
            ) {
                $neon(w, row_bytes, nb, acts, out)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use super::{avx2::avx2, avx2::vnni, avx2_k::avx2 as avx2_k, avx2_k::vnni as vnni_k, avx512};
#[cfg(target_arch = "aarch64")]
use super::{neon, neon_k};

// Q8_0 and Q8_1 quantise every row alike; Q8_K rows record which ggml kernel takes them.
weight_type!(
    Q4_0, BlockQ8_0, row_independent(quantize_q8_0), ACT_Q8_0, QK, Q4_0_BYTES, dot_q4_0_q8_0,
    neon::tile_q4_0, avx2::tile_q4_0, vnni::tile_q4_0
);
weight_type!(
    Q4_1, BlockQ8_1, row_independent(quantize_q8_1), ACT_Q8_1, QK, Q4_1_BYTES, dot_q4_1_q8_1,
    neon::tile_q4_1, avx2::tile_q4_1, vnni::tile_q4_1, avx512::tile_q4_1
);
weight_type!(
    Q5_0, BlockQ8_0, row_independent(quantize_q8_0), ACT_Q8_0, QK, Q5_0_BYTES, dot_q5_0_q8_0,
    neon::tile_q5_0, avx2::tile_q5_0, vnni::tile_q5_0, avx512::tile_q5_0
);
weight_type!(
    Q5_1, BlockQ8_1, row_independent(quantize_q8_1), ACT_Q8_1, QK, Q5_1_BYTES, dot_q5_1_q8_1,
    neon::tile_q5_1, avx2::tile_q5_1, vnni::tile_q5_1, avx512::tile_q5_1
);
weight_type!(
    Q8_0, BlockQ8_0, row_independent(quantize_q8_0), ACT_Q8_0, QK, Q8_0_BYTES, dot_q8_0_q8_0,
    neon::tile_q8_0, avx2::tile_q8_0, vnni::tile_q8_0, avx512::tile_q8_0
);
weight_type!(
    Q4K, BlockQ8K, quantize_q8_k_for, ACT_Q8_K, QK_K, Q4_K_BYTES, dot_q4_k_q8_k,
    neon_k::tile_q4_k, avx2_k::tile_q4_k, vnni_k::tile_q4_k
);
weight_type!(
    Q6K, BlockQ8K, quantize_q8_k_for, ACT_Q8_K, QK_K, Q6_K_BYTES, dot_q6_k_q8_k,
    neon_k::tile_q6_k, avx2_k::tile_q6_k, vnni_k::tile_q6_k
);
