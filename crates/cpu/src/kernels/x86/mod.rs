//! AVX2 + FMA + F16C kernels (x86-64).
//!
//! Two drivers share one arithmetic (see the parent module's contract):
//!
//! * **fused** (few activation rows, decode): four weight rows at a time are
//!   dequantized straight into registers, eight elements per vector, and
//!   multiply-added into one accumulator per output; the weights stream from
//!   memory once and never touch a buffer.
//! * **panel** (many activation rows, prefill): a panel of weight rows is
//!   dequantized to f32 once into an L2-sized buffer, then a micro-kernel
//!   computes 4 weight rows × 3 activation rows at a time (12 accumulators,
//!   vectorized over `k`), reusing the panel for every activation row.
//!
//! Both feed every output's accumulator the same vectors in the same order,
//! and reduce it with the same [`reduce4`] tree.

/// `body` for `i` in `0..m` (at most 8, a constant) as straight-line code:
/// constant row indices keep per-row accumulators in registers, and no
/// closure stands between the compiler and inlining.
macro_rules! for_each_row {
    ($m:expr, $i:ident => $body:block) => {{
        const { assert!($m <= 8) };
        if $m > 0 {
            let $i = 0usize;
            $body
        }
        if $m > 1 {
            let $i = 1usize;
            $body
        }
        if $m > 2 {
            let $i = 2usize;
            $body
        }
        if $m > 3 {
            let $i = 3usize;
            $body
        }
        if $m > 4 {
            let $i = 4usize;
            $body
        }
        if $m > 5 {
            let $i = 5usize;
            $body
        }
        if $m > 6 {
            let $i = 6usize;
            $body
        }
        if $m > 7 {
            let $i = 7usize;
            $body
        }
    }};
}

pub(super) mod avx512;
mod avx512_formats;
mod avx512_gemm;
mod formats;
mod kquants;
pub(in crate::kernels) mod q8_avx2;
pub(in crate::kernels) mod q8_avx512;

use std::arch::x86_64::*;
use std::ops::Range;

use smelt_tensor::{DType, dequantize_row};

use super::{Dst, Scratch, aligned, ceil8, padded_x};
use formats::{Bf16, F16, F32, Format, Q4_0, Q4_1, Q5_0, Q8_0, Sink, launder};
use kquants::{Q4K, Q5K, Q6K};

/// Activation rows up to which the fused kernel beats dequantized panels.
const FUSED_MAX_X: usize = 2;
/// Weight rows computed together (fused kernel and micro-kernel).
const MR: usize = 4;
/// Activation rows per micro-kernel tile.
const NR: usize = 3;
/// Target size of a dequantized weight panel (fits the L2 cache with room
/// for the activation rows being streamed).
const PANEL_BYTES: usize = 192 * 1024;
/// Most weight rows per panel.
const PANEL_MAX_ROWS: usize = 64;

/// The AVX2 matrix product.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `w` holds exactly `rows.end` rows of
/// `n_in` elements of `dtype`; `x` holds exactly `n_x` rows of `n_in`; `dst`
/// is valid and exclusive for every output; `rows` and `n_x` are not empty.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
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
    let a = Args {
        w,
        row_bytes: w.len() / rows.end,
        n_in,
        rows,
        x,
        n_x,
        dst,
    };
    // SAFETY (all arms): the features are present and the arguments valid
    // (this function's contract).
    unsafe {
        match dtype {
            DType::F32 => by_format::<F32>(a, scratch),
            DType::F16 => by_format::<F16>(a, scratch),
            DType::BF16 => by_format::<Bf16>(a, scratch),
            DType::Q4_0 => by_format::<Q4_0>(a, scratch),
            DType::Q4_1 => by_format::<Q4_1>(a, scratch),
            DType::Q5_0 => by_format::<Q5_0>(a, scratch),
            DType::Q8_0 => by_format::<Q8_0>(a, scratch),
            DType::Q4K => by_format::<Q4K>(a, scratch),
            DType::Q5K => by_format::<Q5K>(a, scratch),
            DType::Q6K => by_format::<Q6K>(a, scratch),
            DType::Q5_1 | DType::Q2K | DType::Q3K | DType::Q8K => {
                let fill = ReferenceFill { dtype };
                panel(&fill, &a, scratch)
            }
        }
    }
}

/// The validated arguments of one call.
struct Args<'a> {
    w: &'a [u8],
    row_bytes: usize,
    n_in: usize,
    rows: Range<usize>,
    x: &'a [f32],
    n_x: usize,
    dst: Dst,
}

impl Args<'_> {
    /// Stored bytes of weight row `o`.
    fn row(&self, o: usize) -> &[u8] {
        &self.w[o * self.row_bytes..(o + 1) * self.row_bytes]
    }
}

/// Fused kernel for few activation rows, panels for many.
///
/// # Safety
/// As [`matmul`], with `F` the format of the weight.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn by_format<F: Format>(a: Args<'_>, scratch: &mut Scratch) {
    // SAFETY: the contract of `matmul`.
    unsafe {
        match a.n_x {
            1 => fused::<F, 1>(&a, 0),
            n if n <= FUSED_MAX_X => {
                for r in 0..n / 2 {
                    fused::<F, 2>(&a, 2 * r);
                }
                if n % 2 == 1 {
                    fused::<F, 1>(&a, n - 1);
                }
            }
            _ => panel(&FormatFill::<F>(std::marker::PhantomData), &a, scratch),
        }
    }
}

// ---- reductions ---------------------------------------------------------------

/// The canonical lane sums of four accumulators:
/// `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))` of each, in lanes 0..4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn reduce4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    // [a01 a23 b01 b23 | a45 a67 b45 b67], then [a0123 b0123 c0123 d0123 | a4567 ...].
    let ab = _mm256_hadd_ps(a, b);
    let cd = _mm256_hadd_ps(c, d);
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// Reduces the accumulators of `M` weight rows (from `o0`) × one activation
/// row `r` and writes the `M` outputs.
///
/// # Safety
/// Outputs `(o0..o0 + M, r)` belong to `dst`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn store_column<const M: usize>(acc: [__m256; M], dst: Dst, o0: usize, r: usize) {
    let z = _mm256_setzero_ps();
    let mut i = 0;
    while i < M {
        let get = |k: usize| if i + k < M { acc[i + k] } else { z };
        let sums = reduce4(get(0), get(1), get(2), get(3));
        // SAFETY: outputs `o0 + i..o0 + i + n` of row `r` are consecutive and ours.
        unsafe {
            let p = dst.at(o0 + i, r);
            if i + 4 <= M {
                _mm_storeu_ps(p, sums);
            } else {
                let mut lanes = [0.0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), sums);
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, M - i);
            }
        }
        i += 4;
    }
}

// ---- fused kernel ---------------------------------------------------------------

/// Multiply-adds each dequantized vector into `NX` accumulators, one per
/// activation row (`x` points at the current block of row 0).
struct FmaSink<'a, const NX: usize> {
    acc: &'a mut [__m256; NX],
    x: *const f32,
    x_stride: usize,
}

impl<const NX: usize> Sink for FmaSink<'_, NX> {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn put(&mut self, c: usize, v: __m256) {
        for j in 0..NX {
            // SAFETY: vector `c` of the current block lies inside every
            // activation row (the `Format` contract on `c`).
            let xv = unsafe { _mm256_loadu_ps(self.x.add(j * self.x_stride + 8 * c)) };
            self.acc[j] = _mm256_fmadd_ps(v, xv, self.acc[j]);
        }
    }
}

/// Fused products of every weight row with activation rows `r0..r0 + NX`.
///
/// # Safety
/// As [`matmul`]; `r0 + NX <= a.n_x`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fused<F: Format, const NX: usize>(a: &Args<'_>, r0: usize) {
    let mut o = a.rows.start;
    // SAFETY (all calls): rows `o..o + M` exist and their outputs are ours.
    unsafe {
        // Enough rows at once that the accumulator chains (one FMA latency
        // per vector) overlap: 8 for one activation row, 4 × 2 for two.
        if NX == 1 {
            while o + 8 <= a.rows.end {
                fused_tile::<F, 8, NX>(a, o, r0);
                o += 8;
            }
        }
        while o + 4 <= a.rows.end {
            fused_tile::<F, 4, NX>(a, o, r0);
            o += 4;
        }
        match a.rows.end - o {
            1 => fused_tile::<F, 1, NX>(a, o, r0),
            2 => fused_tile::<F, 2, NX>(a, o, r0),
            3 => fused_tile::<F, 3, NX>(a, o, r0),
            _ => {}
        }
    }
}

/// Weight rows `o0..o0 + M` × activation rows `r0..r0 + NX`, dequantized in
/// registers.
///
/// # Safety
/// As [`fused`], and rows `o0..o0 + M` are in `a.rows`.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
unsafe fn fused_tile<F: Format, const M: usize, const NX: usize>(
    a: &Args<'_>,
    o0: usize,
    r0: usize,
) {
    let n_blocks = a.n_in / F::BLOCK_ELEMS;
    let mut acc = [[_mm256_setzero_ps(); NX]; M];
    let rows: [&[u8]; M] = std::array::from_fn(|i| a.row(o0 + i));
    let x0 = &a.x[r0 * a.n_in..(r0 + NX) * a.n_in];
    // The tile's rows are one contiguous stretch of memory, read as M
    // interleaved streams: too short for the hardware prefetcher to follow
    // when rows are small, so prefetch linearly, a fixed distance ahead.
    let tile_bytes = M * a.row_bytes;
    let pf_start = rows[0].as_ptr().wrapping_add(prefetch_distance(tile_bytes));
    let pf_step = M * F::BLOCK_BYTES;
    for b in 0..n_blocks {
        let pf = pf_start.wrapping_add(b * pf_step);
        let mut line = 0;
        while line < pf_step {
            // A prefetch is only a hint: it never faults, even past the end.
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(line).cast());
            line += 64;
        }
        let mut blocks = [std::ptr::null::<u8>(); M];
        let mut preps = [F::Prep::default(); M];
        for_each_row!(M, i => {
            // SAFETY: block `b` of a row holding `n_blocks` whole blocks.
            unsafe {
                blocks[i] = rows[i].as_ptr().add(b * F::BLOCK_BYTES);
                preps[i] = F::prep(blocks[i]);
            }
        });
        // SAFETY: block `b` of every activation row is in bounds.
        let xb = unsafe { x0.as_ptr().add(b * F::BLOCK_ELEMS) };
        for u in 0..F::UNITS {
            for_each_row!(M, i => {
                let mut sink = FmaSink {
                    acc: &mut acc[i],
                    // A fresh pointer per row: the compiler may not keep the
                    // activations in registers across rows (it would spill).
                    x: launder(xb),
                    x_stride: a.n_in,
                };
                // SAFETY: a whole block of the format at `blocks[i]`.
                unsafe { F::unit(launder(blocks[i]), &preps[i], u, &mut sink) };
            });
        }
    }
    let k0 = n_blocks * F::BLOCK_ELEMS;
    if k0 < a.n_in {
        // A partial block (plain float types only): dequantize and pad.
        let (w_tail, x_tail) = (
            pad_tail::<F, M>(a, o0, k0),
            pad_x_tail::<NX>(x0, a.n_in, k0),
        );
        for c in 0..(a.n_in - k0).div_ceil(8) {
            for (acc_i, w_i) in acc.iter_mut().zip(&w_tail) {
                // SAFETY: `c < 4` vectors of the 32-value padded buffers.
                let wv = unsafe { _mm256_loadu_ps(w_i.as_ptr().add(8 * c)) };
                for (acc_ij, x_j) in acc_i.iter_mut().zip(&x_tail) {
                    // SAFETY: as above.
                    let xv = unsafe { _mm256_loadu_ps(x_j.as_ptr().add(8 * c)) };
                    *acc_ij = _mm256_fmadd_ps(wv, xv, *acc_ij);
                }
            }
        }
    }
    for j in 0..NX {
        let column: [__m256; M] = std::array::from_fn(|i| acc[i][j]);
        // SAFETY: outputs `(o0..o0 + M, r0 + j)` are ours.
        unsafe { store_column::<M>(column, a.dst, o0, r0 + j) };
    }
}

/// How far ahead of a fused tile's start to prefetch: at least the next
/// tile, and at least a few KiB (enough to cover memory latency at the
/// kernel's streaming rate).
fn prefetch_distance(tile_bytes: usize) -> usize {
    const MIN_DISTANCE: usize = 4096;
    tile_bytes.max(MIN_DISTANCE)
}

/// Elements `k0..n_in` (fewer than one block: plain float types only) of
/// weight rows `o0..o0 + M`, dequantized by the reference and zero-padded.
fn pad_tail<F: Format, const M: usize>(a: &Args<'_>, o0: usize, k0: usize) -> [[f32; 32]; M] {
    let mut out = [[0.0f32; 32]; M];
    let start = k0 / F::BLOCK_ELEMS * F::BLOCK_BYTES;
    for (i, dst) in out.iter_mut().enumerate() {
        dequantize_row(F::DTYPE, &a.row(o0 + i)[start..], &mut dst[..a.n_in - k0]);
    }
    out
}

/// Elements `k0..n_in` of `NX` activation rows, zero-padded to 32.
fn pad_x_tail<const NX: usize>(x: &[f32], n_in: usize, k0: usize) -> [[f32; 32]; NX] {
    let mut out = [[0.0f32; 32]; NX];
    for (dst, row) in out.iter_mut().zip(x.chunks_exact(n_in)) {
        dst[..n_in - k0].copy_from_slice(&row[k0..]);
    }
    out
}

// ---- panels and micro-kernel ------------------------------------------------------

/// Writes one weight row, dequantized to f32 and zero-padded to a multiple
/// of 8, into a panel row.
trait RowFill {
    /// # Safety
    /// The CPU has AVX2/FMA/F16C; `row` is a whole stored row of `n_in`
    /// elements; `out` holds `ceil8(n_in)` values.
    unsafe fn fill(&self, row: &[u8], n_in: usize, out: &mut [f32]);
}

/// Rows of a type without a SIMD format: the scalar reference.
struct ReferenceFill {
    dtype: DType,
}

impl RowFill for ReferenceFill {
    unsafe fn fill(&self, row: &[u8], n_in: usize, out: &mut [f32]) {
        let (values, pad) = out.split_at_mut(n_in);
        dequantize_row(self.dtype, row, values);
        pad.fill(0.0);
    }
}

/// Stores each dequantized vector at its place in a panel row.
struct StoreSink {
    out: *mut f32,
}

impl Sink for StoreSink {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn put(&mut self, c: usize, v: __m256) {
        // SAFETY: vector `c` of the current block lies inside the panel row.
        unsafe { _mm256_storeu_ps(self.out.add(8 * c), v) }
    }
}

/// Rows of a type with a SIMD format.
struct FormatFill<F>(std::marker::PhantomData<F>);

impl<F: Format> RowFill for FormatFill<F> {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fill(&self, row: &[u8], n_in: usize, out: &mut [f32]) {
        let n_blocks = n_in / F::BLOCK_ELEMS;
        for b in 0..n_blocks {
            // SAFETY: block `b` is whole inside `row`, and its `BLOCK_ELEMS`
            // values fit `out` at `b * BLOCK_ELEMS`.
            unsafe {
                let block = row.as_ptr().add(b * F::BLOCK_BYTES);
                let prep = F::prep(block);
                let mut sink = StoreSink {
                    out: out.as_mut_ptr().add(b * F::BLOCK_ELEMS),
                };
                for u in 0..F::UNITS {
                    F::unit(block, &prep, u, &mut sink);
                }
            }
        }
        let k0 = n_blocks * F::BLOCK_ELEMS;
        let (values, pad) = out.split_at_mut(n_in);
        if k0 < n_in {
            dequantize_row(
                F::DTYPE,
                &row[k0 / F::BLOCK_ELEMS * F::BLOCK_BYTES..],
                &mut values[k0..],
            );
        }
        pad.fill(0.0);
    }
}

/// Dequantized panels of weight rows and the 4 × 3 micro-kernel.
///
/// # Safety
/// As [`matmul`]; `fill` produces rows of the weight's type.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel<R: RowFill>(fill: &R, a: &Args<'_>, scratch: &mut Scratch) {
    let kp = ceil8(a.n_in);
    let (x, x_stride) = padded_x(a.x, a.n_in, a.n_x, &mut scratch.x_pad);
    let panel_rows = (PANEL_BYTES / (4 * kp)).clamp(MR, PANEL_MAX_ROWS) / MR * MR;
    let panel = aligned(&mut scratch.panel, panel_rows * kp);
    let mut p0 = a.rows.start;
    while p0 < a.rows.end {
        let np = panel_rows.min(a.rows.end - p0);
        for (i, out) in panel.chunks_exact_mut(kp).take(np).enumerate() {
            // SAFETY: a whole row and a `kp`-value panel row.
            unsafe { fill.fill(a.row(p0 + i), a.n_in, out) };
        }
        let mut r0 = 0;
        while r0 < a.n_x {
            let nr = NR.min(a.n_x - r0);
            let xr = &x[r0 * x_stride..];
            let mut i0 = 0;
            while i0 < np {
                let mr = MR.min(np - i0);
                let w = &panel[i0 * kp..];
                let o0 = p0 + i0;
                // SAFETY: `mr` panel rows and `nr` activation rows of `kp`
                // values each start at `w` and `xr`; outputs are ours.
                unsafe { micro_dispatch(mr, nr, w, kp, xr, x_stride, a.dst, o0, r0) };
                i0 += mr;
            }
            r0 += nr;
        }
        p0 += np;
    }
}

/// Calls the micro-kernel instance for an `mr × nr` tile.
///
/// # Safety
/// As [`micro`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn micro_dispatch(
    mr: usize,
    nr: usize,
    w: &[f32],
    kp: usize,
    x: &[f32],
    x_stride: usize,
    dst: Dst,
    o0: usize,
    r0: usize,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (mr, nr) {
            (4, 3) => micro::<4, 3>(w, kp, x, x_stride, dst, o0, r0),
            (4, 2) => micro::<4, 2>(w, kp, x, x_stride, dst, o0, r0),
            (4, 1) => micro::<4, 1>(w, kp, x, x_stride, dst, o0, r0),
            (3, 3) => micro::<3, 3>(w, kp, x, x_stride, dst, o0, r0),
            (3, 2) => micro::<3, 2>(w, kp, x, x_stride, dst, o0, r0),
            (3, 1) => micro::<3, 1>(w, kp, x, x_stride, dst, o0, r0),
            (2, 3) => micro::<2, 3>(w, kp, x, x_stride, dst, o0, r0),
            (2, 2) => micro::<2, 2>(w, kp, x, x_stride, dst, o0, r0),
            (2, 1) => micro::<2, 1>(w, kp, x, x_stride, dst, o0, r0),
            (1, 3) => micro::<1, 3>(w, kp, x, x_stride, dst, o0, r0),
            (1, 2) => micro::<1, 2>(w, kp, x, x_stride, dst, o0, r0),
            _ => micro::<1, 1>(w, kp, x, x_stride, dst, o0, r0),
        }
    }
}

/// `M` panel rows × `N` activation rows over `kp` (a multiple of 8) values.
///
/// # Safety
/// `w` holds `M` rows of stride `kp`, `x` `N` rows of stride `x_stride`
/// with `kp` values each; outputs `(o0..o0 + M, r0..r0 + N)` are ours.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn micro<const M: usize, const N: usize>(
    w: &[f32],
    kp: usize,
    x: &[f32],
    x_stride: usize,
    dst: Dst,
    o0: usize,
    r0: usize,
) {
    debug_assert!(w.len() >= (M - 1) * kp + kp && x.len() >= (N - 1) * x_stride + kp);
    let (w, x) = (w.as_ptr(), x.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    let mut k = 0;
    while k < kp {
        let mut xv = [_mm256_setzero_ps(); N];
        for j in 0..N {
            // SAFETY: `k + 8 <= kp` values of row `j` (the contract).
            xv[j] = unsafe { _mm256_loadu_ps(x.add(j * x_stride + k)) };
        }
        for i in 0..M {
            // SAFETY: as above for panel row `i`.
            let wv = unsafe { _mm256_loadu_ps(w.add(i * kp + k)) };
            for j in 0..N {
                acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
        k += 8;
    }
    for j in 0..N {
        let column: [__m256; M] = std::array::from_fn(|i| acc[i][j]);
        // SAFETY: outputs `(o0..o0 + M, r0 + j)` are ours.
        unsafe { store_column::<M>(column, dst, o0, r0 + j) };
    }
}
