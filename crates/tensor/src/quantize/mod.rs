//! Quantizers: f32 values → stored rows of a [`DType`], the inverse of
//! [`dequantize_row`](crate::dequantize_row).
//!
//! * F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 produce **the same bytes as
//!   gguf-py's `gguf.quants.quantize`** (numpy, gguf 0.19.0), which follows
//!   ggml's reference quantizers: same f32 arithmetic, same rounding (see
//!   `scripts/make_quant_goldens.py` for the exact rules), checked byte for
//!   byte by `crates/tensor/tests/quantize_golden.rs`.
//! * Q4_K, Q5_K, Q6_K (which gguf-py cannot quantize) are Smelt's own: for
//!   each group a search over candidate scales (and minimums) with a
//!   least-squares refit minimises the squared error; the groups' scales are
//!   then quantized to the format's 6- or 8-bit super-block scales, trying the
//!   neighbouring integer scales against the exact dequantized values.
//!
//! Measured round-trip error (RMSE of `dequantize(quantize(x)) - x` over the
//! RMS of `x`) on N(0, 1) data, 256 rows of 4096 (`tests/quantize_roundtrip.rs`
//! asserts the bounds, about 10% above the measurements):
//!
//! | type | bits/weight | measured | bound   |
//! |------|-------------|----------|---------|
//! | F16  | 16          | 0.00021  | 0.00023 |
//! | BF16 | 16          | 0.00166  | 0.0018  |
//! | Q8_0 | 8.5         | 0.00535  | 0.0059  |
//! | Q6_K | 6.5625      | 0.0167   | 0.0185  |
//! | Q5_1 | 6           | 0.0378   | 0.042   |
//! | Q5_K | 5.5         | 0.0344   | 0.038   |
//! | Q5_0 | 5.5         | 0.0427   | 0.047   |
//! | Q4_1 | 5           | 0.0782   | 0.086   |
//! | Q4_K | 4.5         | 0.0699   | 0.077   |
//! | Q4_0 | 4.5         | 0.0859   | 0.095   |
//!
//! The K-quant search lowers the error against plain min/max scales by about
//! 11% (Q4_K, Q6_K) and 10% (Q5_K) on Gaussian data, 5-15% on heavier-tailed
//! weight-like data.
//!
//! Inputs must be finite: a NaN or infinity is an error naming its row and
//! column, and so is a value whose stored form (an F16 element or an f16
//! block scale) would overflow to infinity, where gguf-py would silently
//! write an infinite value.

mod float;
mod kquants;
mod legacy;

use rayon::prelude::*;

use crate::DType;

/// Why a tensor could not be quantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "quantizing to {0} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
    )]
    Unsupported(DType),
    #[error("row of {row_len} elements is not a multiple of the {dtype} block size {block}")]
    RaggedRow {
        dtype: DType,
        row_len: usize,
        block: usize,
    },
    #[error("row length must be positive")]
    EmptyRow,
    #[error("{len} values are not a whole number of rows of {row_len}")]
    PartialRow { len: usize, row_len: usize },
    #[error("a {dtype} row of {row_len} elements takes {expected} bytes, the output has {got}")]
    OutputSize {
        dtype: DType,
        row_len: usize,
        expected: usize,
        got: usize,
    },
    #[error("{dtype} needs {bytes} bytes for {len} values, more than this machine can address")]
    TooLarge {
        dtype: DType,
        len: usize,
        bytes: u64,
    },
    #[error("row {row}, column {col}: value {value} is not finite (NaN or infinity)")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error(
        "row {row}, column {col}: value {value} is too large for {dtype} (the stored {what} would overflow)"
    )]
    OutOfRange {
        dtype: DType,
        row: usize,
        col: usize,
        value: f32,
        /// What would overflow: "value", or the block scale field ("f16 scale d", ...).
        what: &'static str,
    },
}

impl QuantizeError {
    /// The row the error is about, if it is about one.
    pub fn row(&self) -> Option<usize> {
        match self {
            QuantizeError::NonFinite { row, .. } | QuantizeError::OutOfRange { row, .. } => {
                Some(*row)
            }
            _ => None,
        }
    }

    /// The same error with its row moved down by `rows`: for callers that
    /// quantize a tensor in pieces, so the error names the tensor's row.
    pub fn offset_rows(self, rows: usize) -> QuantizeError {
        match self.row() {
            Some(r) => self.in_row(r + rows),
            None => self,
        }
    }

    /// The same error, about row `row` (row-level code reports row 0).
    fn in_row(self, row: usize) -> QuantizeError {
        match self {
            QuantizeError::NonFinite { col, value, .. } => {
                QuantizeError::NonFinite { row, col, value }
            }
            QuantizeError::OutOfRange {
                dtype,
                col,
                value,
                what,
                ..
            } => QuantizeError::OutOfRange {
                dtype,
                row,
                col,
                value,
                what,
            },
            other => other,
        }
    }
}

/// Whether [`quantize_row`] can produce `dtype`.
pub const fn can_quantize(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q8_0
            | DType::Q4_0
            | DType::Q4_1
            | DType::Q5_0
            | DType::Q5_1
            | DType::Q4K
            | DType::Q5K
            | DType::Q6K
    )
}

/// Checks that a row of `row_len` values can be stored as `dtype` and returns its byte size.
fn row_bytes(dtype: DType, row_len: usize) -> Result<usize, QuantizeError> {
    if !can_quantize(dtype) {
        return Err(QuantizeError::Unsupported(dtype));
    }
    let block = dtype.block_elems();
    if !row_len.is_multiple_of(block) {
        return Err(QuantizeError::RaggedRow {
            dtype,
            row_len,
            block,
        });
    }
    let bytes = (row_len / block) as u64 * dtype.block_bytes() as u64;
    usize::try_from(bytes).map_err(|_| QuantizeError::TooLarge {
        dtype,
        len: row_len,
        bytes,
    })
}

/// Errors on the first NaN or infinity of a row.
fn check_finite(src: &[f32]) -> Result<(), QuantizeError> {
    match src.iter().position(|v| !v.is_finite()) {
        Some(col) => Err(QuantizeError::NonFinite {
            row: 0,
            col,
            value: src[col],
        }),
        None => Ok(()),
    }
}

/// Quantizes one row: `dst` must be exactly the storage of `src.len()` values
/// of `dtype` (`dtype.row_bytes(src.len())`). Errors name column and row 0;
/// [`quantize`] reports the tensor's row.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    let expected = row_bytes(dtype, src.len())?;
    if dst.len() != expected {
        return Err(QuantizeError::OutputSize {
            dtype,
            row_len: src.len(),
            expected,
            got: dst.len(),
        });
    }
    check_finite(src)?;
    quantize_checked(dtype, src, dst, Search::Full)
}

/// Quantizes a whole row-major tensor of rows of `row_len` values; rows are
/// independent and run in parallel. Returns the stored bytes (rows back to back).
pub fn quantize(dtype: DType, data: &[f32], row_len: usize) -> Result<Vec<u8>, QuantizeError> {
    quantize_with(dtype, data, row_len, Search::Full)
}

/// [`quantize_row`] for the K-quants without any search: each group's scale
/// and minimum come straight from its minimum and maximum and are rounded to
/// the nearest 6-/8-bit super-block scale. Kept as the baseline the real
/// quantizer is tested against; for the other types it is [`quantize_row`].
pub fn quantize_row_minmax(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    let expected = row_bytes(dtype, src.len())?;
    if dst.len() != expected {
        return Err(QuantizeError::OutputSize {
            dtype,
            row_len: src.len(),
            expected,
            got: dst.len(),
        });
    }
    check_finite(src)?;
    quantize_checked(dtype, src, dst, Search::MinMax)
}

/// How hard the K-quant quantizers look for good scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Search {
    /// Scale/minimum search per group, neighbouring super-block scales tried.
    Full,
    /// Min/max scales, rounded: the naive baseline.
    MinMax,
}

fn quantize_with(
    dtype: DType,
    data: &[f32],
    row_len: usize,
    search: Search,
) -> Result<Vec<u8>, QuantizeError> {
    if row_len == 0 {
        return Err(QuantizeError::EmptyRow);
    }
    let bytes_per_row = row_bytes(dtype, row_len)?;
    if !data.len().is_multiple_of(row_len) {
        return Err(QuantizeError::PartialRow {
            len: data.len(),
            row_len,
        });
    }
    let n_rows = data.len() / row_len;
    let total = n_rows as u64 * bytes_per_row as u64;
    let total = usize::try_from(total).map_err(|_| QuantizeError::TooLarge {
        dtype,
        len: data.len(),
        bytes: total,
    })?;
    let mut out = vec![0u8; total];
    // Every row runs; the error reported is the one of the lowest row, so it
    // does not depend on scheduling.
    let first_error = out
        .par_chunks_mut(bytes_per_row.max(1))
        .zip(data.par_chunks(row_len))
        .enumerate()
        .filter_map(|(r, (dst, src))| {
            check_finite(src)
                .and_then(|()| quantize_checked(dtype, src, dst, search))
                .err()
                .map(|e| e.in_row(r))
        })
        .reduce_with(|a, b| {
            if a.row().unwrap_or(0) <= b.row().unwrap_or(0) {
                a
            } else {
                b
            }
        });
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Dispatch once lengths are checked and the row is known to be finite.
fn quantize_checked(
    dtype: DType,
    src: &[f32],
    dst: &mut [u8],
    search: Search,
) -> Result<(), QuantizeError> {
    match dtype {
        DType::F32 => {
            float::quantize_f32(src, dst);
            Ok(())
        }
        DType::F16 => float::quantize_f16(src, dst),
        DType::BF16 => float::quantize_bf16(src, dst),
        DType::Q8_0 => each_block(dtype, src, dst, legacy::quantize_q8_0),
        DType::Q4_0 => each_block(dtype, src, dst, legacy::quantize_q4_0),
        DType::Q4_1 => each_block(dtype, src, dst, legacy::quantize_q4_1),
        DType::Q5_0 => each_block(dtype, src, dst, legacy::quantize_q5_0),
        DType::Q5_1 => each_block(dtype, src, dst, legacy::quantize_q5_1),
        DType::Q4K => each_block(dtype, src, dst, |x, b| kquants::quantize_q4_k(x, b, search)),
        DType::Q5K => each_block(dtype, src, dst, |x, b| kquants::quantize_q5_k(x, b, search)),
        DType::Q6K => each_block(dtype, src, dst, |x, b| kquants::quantize_q6_k(x, b, search)),
        DType::Q2K | DType::Q3K | DType::Q8K => Err(QuantizeError::Unsupported(dtype)),
    }
}

/// Runs `block_fn` on each (input block, output block) pair of a row. A block
/// function's error names the column within its block; this shifts it to the row.
fn each_block(
    dtype: DType,
    src: &[f32],
    dst: &mut [u8],
    block_fn: impl Fn(&[f32], &mut [u8]) -> Result<(), BlockError>,
) -> Result<(), QuantizeError> {
    let blocks = src.chunks_exact(dtype.block_elems());
    let outs = dst.chunks_exact_mut(dtype.block_bytes());
    for (b, (x, out)) in blocks.zip(outs).enumerate() {
        if let Err(BlockError::ScaleOverflow { col, what }) = block_fn(x, out) {
            return Err(QuantizeError::OutOfRange {
                dtype,
                row: 0,
                col: b * dtype.block_elems() + col,
                value: x[col],
                what,
            });
        }
    }
    Ok(())
}

/// A block's f16 scale would be infinite: `col` is the (block-relative)
/// element that drives it, `what` names the field.
#[derive(Debug)]
enum BlockError {
    ScaleOverflow { col: usize, what: &'static str },
}

/// `v` as an f16, or an error blaming block element `col` if it overflows.
fn f16_scale(v: f32, col: usize, what: &'static str) -> Result<half::f16, BlockError> {
    let h = half::f16::from_f32(v);
    if h.is_infinite() {
        Err(BlockError::ScaleOverflow { col, what })
    } else {
        Ok(h)
    }
}

/// Index of the first element of largest magnitude (numpy's `argmax(abs(x))`).
fn argmax_abs(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    best
}
