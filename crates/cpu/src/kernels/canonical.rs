//! The canonical reduction, in plain Rust: the definition every SIMD path
//! reproduces bit for bit, and the portable fallback kernels.

use std::ops::Range;

use smelt_tensor::{DType, dequantize_row};

use super::{Dst, Scratch, aligned, ceil8};

/// Lanes of the canonical accumulator.
pub(crate) const LANES: usize = 8;

/// The fixed summation tree over the eight lanes.
#[inline(always)]
pub(crate) fn tree_sum(l: &[f32; LANES]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// The canonical dot product every kernel computes for one output: lane `j`
/// of an eight-lane accumulator (starting at +0) takes
/// `acc[j] = fma(w[k], x[k], acc[j])` for `k ≡ j (mod 8)` in increasing `k`,
/// both vectors zero-padded to a multiple of 8; then the lane sum
/// (`((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`).
///
/// # Panics
/// If the lengths differ.
pub fn canonical_dot(w: &[f32], x: &[f32]) -> f32 {
    assert!(
        w.len() == x.len(),
        "canonical_dot: lengths differ ({} vs {})",
        w.len(),
        x.len()
    );
    let mut acc = [0.0f32; LANES];
    let (w_chunks, x_chunks) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (w_tail, x_tail) = (w_chunks.remainder(), x_chunks.remainder());
    for (cw, cx) in w_chunks.zip(x_chunks) {
        for ((a, &p), &q) in acc.iter_mut().zip(cw).zip(cx) {
            *a = p.mul_add(q, *a);
        }
    }
    if !w_tail.is_empty() {
        // The padded lanes still take their `fma(0, 0, acc)`: it turns a -0
        // accumulator into +0, exactly as the vector kernels do.
        for (j, a) in acc.iter_mut().enumerate() {
            let (p, q) = (
                w_tail.get(j).copied().unwrap_or(0.0),
                x_tail.get(j).copied().unwrap_or(0.0),
            );
            *a = p.mul_add(q, *a);
        }
    }
    tree_sum(&acc)
}

/// The portable kernels: reference dequantization of each weight row, then
/// [`canonical_dot`] with every activation row.
///
/// # Safety
/// `w` holds at least `rows.end` rows of `n_in` elements of `dtype`, `x`
/// `n_x` rows of `n_in`, and `dst` is valid and exclusive for every output.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    dtype: DType,
    w: &[u8],
    n_in: usize,
    rows: Range<usize>,
    x: &[f32],
    n_x: usize,
    dst: Dst,
    scratch: &mut Scratch,
) {
    let row_bytes = w.len() / rows.end;
    let row = aligned(&mut scratch.panel, ceil8(n_in));
    let row = &mut row[..n_in];
    for o in rows {
        dequantize_row(dtype, &w[o * row_bytes..(o + 1) * row_bytes], row);
        for (r, xr) in x.chunks_exact(n_in).take(n_x).enumerate() {
            // SAFETY: `(o, r)` is one of our outputs (the caller's contract).
            unsafe { *dst.at(o, r) = canonical_dot(row, xr) };
        }
    }
}
