//! Scalar reference kernels: dequantize a stored row, or dot it with an f32
//! vector, for every [`DType`].
//!
//! These are the plain, readable definitions every SIMD or GPU kernel is
//! tested against, and what the CPU backend runs until faster kernels exist.
//! Block layouts and formulas follow the GGUF/ggml format: the dequantized
//! values are bit-identical to gguf-py's `gguf.quants.dequantize` (checked by
//! the golden tests in `crates/tensor/tests/`).
//!
//! Blocks live at arbitrary (often only 2-byte-aligned) offsets inside a
//! memory map, so every field is read by parsing little-endian bytes; no
//! pointer casts, no alignment assumptions. Nothing here allocates.

mod float;
mod kquants;
mod legacy;

pub use float::dot_f32;
use float::sum_f32;

use crate::DType;

/// Reads the little-endian IEEE half at `block[at..at + 2]` as f32 (exact).
#[inline(always)]
fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Panics with a clear message unless `n_bytes` is exactly the storage of a
/// row of `n_elems` values of `dtype`.
#[track_caller]
fn check_row(what: &str, dtype: DType, n_bytes: usize, n_elems: usize) {
    let expected = match dtype.row_bytes(n_elems as u64) {
        Ok(b) => b,
        Err(e) => panic!("{what}: {e}"),
    };
    assert!(
        expected == n_bytes as u64,
        "{what}: a {dtype} row of {n_elems} elements takes {expected} bytes, got {n_bytes}"
    );
}

/// Applies `block_fn` to each (stored block, output block) pair of a row.
#[inline(always)]
fn each_block(dtype: DType, src: &[u8], dst: &mut [f32], block_fn: impl Fn(&[u8], &mut [f32])) {
    let blocks = src.chunks_exact(dtype.block_bytes());
    let outs = dst.chunks_exact_mut(dtype.block_elems());
    for (block, out) in blocks.zip(outs) {
        block_fn(block, out);
    }
}

/// Sums `block_fn` (the dot of one stored block with its slice of `x`) over a row.
#[inline(always)]
fn sum_blocks(dtype: DType, src: &[u8], x: &[f32], block_fn: impl Fn(&[u8], &[f32]) -> f32) -> f32 {
    let blocks = src.chunks_exact(dtype.block_bytes());
    let xs = x.chunks_exact(dtype.block_elems());
    blocks.zip(xs).map(|(block, x)| block_fn(block, x)).sum()
}

/// Dequantizes one row: `src` holds exactly `dtype.row_bytes(dst.len())` bytes,
/// and `dst[i]` receives the i-th stored value as f32.
///
/// # Panics
/// If `dst.len()` is not a whole number of `dtype` blocks, or `src.len()` is
/// not the byte size of such a row. Lengths are the caller's contract (tensor
/// shapes are validated when a model is loaded), so a mismatch is a bug.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    check_row("dequantize_row", dtype, src.len(), dst.len());
    match dtype {
        DType::F32 => float::dequantize_f32(src, dst),
        DType::F16 => float::dequantize_f16(src, dst),
        DType::BF16 => float::dequantize_bf16(src, dst),
        DType::Q4_0 => each_block(dtype, src, dst, legacy::dequantize_q4_0),
        DType::Q4_1 => each_block(dtype, src, dst, legacy::dequantize_q4_1),
        DType::Q5_0 => each_block(dtype, src, dst, legacy::dequantize_q5_0),
        DType::Q5_1 => each_block(dtype, src, dst, legacy::dequantize_q5_1),
        DType::Q8_0 => each_block(dtype, src, dst, legacy::dequantize_q8_0),
        DType::Q2K => each_block(dtype, src, dst, kquants::dequantize_q2_k),
        DType::Q3K => each_block(dtype, src, dst, kquants::dequantize_q3_k),
        DType::Q4K => each_block(dtype, src, dst, kquants::dequantize_q4_k),
        DType::Q5K => each_block(dtype, src, dst, kquants::dequantize_q5_k),
        DType::Q6K => each_block(dtype, src, dst, kquants::dequantize_q6_k),
        DType::Q8K => each_block(dtype, src, dst, kquants::dequantize_q8_k),
    }
}

/// Dot product of one stored row with an f32 vector of the same length:
/// mathematically `sum_i dequant(src)[i] * x[i]`, accumulated in f32 (per
/// block, then over blocks), so it agrees with an exact dot up to rounding.
/// Does not allocate.
///
/// # Panics
/// If `x.len()` is not a whole number of `dtype` blocks, or `src.len()` is
/// not the byte size of a row of `x.len()` elements (a caller bug, as for
/// [`dequantize_row`]).
pub fn dot_row(dtype: DType, src: &[u8], x: &[f32]) -> f32 {
    check_row("dot_row", dtype, src.len(), x.len());
    match dtype {
        DType::F32 => float::dot_f32_bytes(src, x),
        DType::F16 => float::dot_f16_bytes(src, x),
        DType::BF16 => float::dot_bf16_bytes(src, x),
        DType::Q4_0 => sum_blocks(dtype, src, x, legacy::dot_q4_0),
        DType::Q4_1 => sum_blocks(dtype, src, x, legacy::dot_q4_1),
        DType::Q5_0 => sum_blocks(dtype, src, x, legacy::dot_q5_0),
        DType::Q5_1 => sum_blocks(dtype, src, x, legacy::dot_q5_1),
        DType::Q8_0 => sum_blocks(dtype, src, x, legacy::dot_q8_0),
        DType::Q2K => sum_blocks(dtype, src, x, kquants::dot_q2_k),
        DType::Q3K => sum_blocks(dtype, src, x, kquants::dot_q3_k),
        DType::Q4K => sum_blocks(dtype, src, x, kquants::dot_q4_k),
        DType::Q5K => sum_blocks(dtype, src, x, kquants::dot_q5_k),
        DType::Q6K => sum_blocks(dtype, src, x, kquants::dot_q6_k),
        DType::Q8K => sum_blocks(dtype, src, x, kquants::dot_q8_k),
    }
}
