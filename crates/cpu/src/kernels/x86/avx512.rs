//! AVX-512 fused decode kernels (x86-64 with AVX-512 F/BW/VL and BMI2).
//!
//! The arithmetic is the parent module's contract, unchanged: every output
//! keeps its own eight canonical FMA lanes. A 512-bit register never holds
//! sixteen consecutive elements of one output; it holds **two weight rows
//! interleaved lane by lane**: lane `2 j` is lane `j` of row A's canonical
//! accumulator, lane `2 j + 1` lane `j` of row B's. The activations are
//! duplicated once per call (`x2[2 k] = x2[2 k + 1] = x[k]`) so that one
//! plain load feeds both rows, and a pair's per-block scales are two f32
//! side by side, broadcast with one 64-bit load. At the end each register is
//! de-interleaved and reduced with the AVX2 path's [`reduce4`] tree, so the
//! values are bit-identical to the AVX2 and portable paths.
//!
//! Covered: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K (the types of the target
//! models; their pair dequantization is in `avx512_formats`): the fused
//! matrix-vector product here (one or two activation rows), the panel GEMM
//! in `avx512_gemm` (more). Every other type runs the AVX2 kernels, which
//! this CPU also has.

use std::arch::x86_64::*;
use std::ops::Range;

use smelt_tensor::DType;

use super::avx512_formats::{PairFormat, Q4_0x2, Q4_1x2, Q4Kx2, Q5_0x2, Q6Kx2, Q8_0x2, Sink};
use super::formats::launder;
use super::{Args, prefetch_distance, reduce4};
use crate::kernels::{Dst, Scratch, aligned};

/// Pairs per fused tile for two activation rows (2 accumulators per pair).
const PAIRS_2X: usize = 4;

/// The AVX-512 matrix product: fused kernels for the covered types and at
/// most two activation rows, the AVX2 kernels for the rest.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL, BMI2, AVX2, FMA and F16C; `w` holds
/// exactly `rows.end` rows of `n_in` elements of `dtype`; `x` holds exactly
/// `n_x` rows of `n_in`; `dst` is valid and exclusive for every output;
/// `rows` and `n_x` are not empty.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn matmul(
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
        rows: rows.clone(),
        x,
        n_x,
        dst,
    };
    // SAFETY (all arms): the features are present and the arguments valid
    // (this function's contract).
    unsafe {
        match dtype {
            DType::Q4_0 => return by_format::<Q4_0x2>(&a, scratch),
            DType::Q4_1 => return by_format::<Q4_1x2>(&a, scratch),
            DType::Q5_0 => return by_format::<Q5_0x2>(&a, scratch),
            DType::Q8_0 => return by_format::<Q8_0x2>(&a, scratch),
            DType::Q4K => return by_format::<Q4Kx2>(&a, scratch),
            DType::Q6K => return by_format::<Q6Kx2>(&a, scratch),
            _ => {}
        }
        super::matmul(dtype, w, n_in, rows, x, n_x, dst, scratch)
    }
}

/// Fused kernel for one or two activation rows, panels for more.
///
/// # Safety
/// As [`matmul`], with `F` the format of the weight.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn by_format<F: PairFormat>(a: &Args<'_>, scratch: &mut Scratch) {
    // SAFETY: the contract of `matmul`.
    unsafe {
        if a.n_x <= 2 {
            fused::<F>(a, scratch)
        } else {
            super::avx512_gemm::panel::<F>(a, scratch)
        }
    }
}

/// Reduces `P` registers, each holding row A's eight canonical lanes in its
/// low half and row B's in its high half (rows `o0 + 2 p`, `o0 + 2 p + 1`),
/// with [`reduce4`], and writes the first `n` of those rows' outputs for
/// activation row `r`.
///
/// The registers go through memory first: [`reduce4`]'s `vhaddps` has no
/// EVEX form, and fed straight from the accumulators it would confine them
/// to the 16 registers VEX can name, making the compiler spill them in the
/// main loop.
///
/// # Safety
/// `P <= 8`, `n <= 2 P`; outputs `(o0..o0 + n, r)` belong to `dst`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn store_halves<const P: usize>(
    halves: [__m512; P],
    n: usize,
    dst: Dst,
    o0: usize,
    r: usize,
) {
    debug_assert!(P <= 8 && n <= 2 * P);
    let mut buf = [0.0f32; 16 * 8];
    for (p, v) in halves.into_iter().enumerate() {
        // SAFETY: 16 values inside `buf` (`p < P <= 8`).
        unsafe { _mm512_storeu_ps(buf.as_mut_ptr().add(16 * p), v) };
    }
    let lanes = launder(buf.as_ptr());
    let mut sums = [0.0f32; 16];
    for q in 0..P.div_ceil(2) {
        // SAFETY: rows `4 q .. 4 q + 4` of `buf` (8 values each; `q < 4`).
        let s = unsafe {
            let row = |i: usize| _mm256_loadu_ps(lanes.add(8 * (4 * q + i)));
            reduce4(row(0), row(1), row(2), row(3))
        };
        // SAFETY: 4 values inside `sums` (`4 q + 4 <= 16`).
        unsafe { _mm_storeu_ps(sums.as_mut_ptr().add(4 * q), s) };
    }
    for (i, &s) in sums.iter().take(n).enumerate() {
        // SAFETY: output `(o0 + i, r)` is ours (`i < n`).
        unsafe { *dst.at(o0 + i, r) = s };
    }
}

// ---- the fused kernel ---------------------------------------------------------------------

/// Multiply-adds each pair vector into `NX` accumulators, one per
/// activation row (`x` points at the current block of duplicated row 0).
struct FmaSink<'a, const NX: usize> {
    acc: &'a mut [__m512; NX],
    x: *const f32,
    x_stride: usize,
}

impl<const NX: usize> Sink for FmaSink<'_, NX> {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn put(&mut self, c: usize, v: __m512) {
        for j in 0..NX {
            // SAFETY: vector `c` of the current block lies inside every
            // duplicated activation row (the `Sink` contract on `c`).
            let xv = unsafe { _mm512_loadu_ps(self.x.add(j * self.x_stride + 16 * c)) };
            self.acc[j] = _mm512_fmadd_ps(v, xv, self.acc[j]);
        }
    }
}

/// `x` with every value twice (`x2[2 k] = x2[2 k + 1] = x[k]`), per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
fn duplicate_x<'a>(x: &[f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    let out = aligned(buf, 2 * x.len());
    let idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let mut src = x.chunks_exact(8);
    let mut dst = out.chunks_exact_mut(16);
    for (s, d) in (&mut src).zip(&mut dst) {
        // SAFETY: 8 readable values and 16 writable ones.
        unsafe {
            let v = _mm512_castps256_ps512(_mm256_loadu_ps(s.as_ptr()));
            _mm512_storeu_ps(d.as_mut_ptr(), _mm512_permutexvar_ps(idx, v));
        }
    }
    for (k, &v) in src.remainder().iter().enumerate() {
        let base = 2 * (x.len() / 8 * 8 + k);
        out[base] = v;
        out[base + 1] = v;
    }
    out
}

/// Fused products of every weight row with the (at most two) activation rows.
///
/// # Safety
/// As [`matmul`]; `a.n_x <= 2`; `F` is the weight's format; `n_in` is whole
/// blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn fused<F: PairFormat>(a: &Args<'_>, scratch: &mut Scratch) {
    debug_assert!(a.n_in.is_multiple_of(F::BLOCK_ELEMS) && a.n_x <= 2);
    let x2 = duplicate_x(a.x, &mut scratch.x_pad);
    let mut o = a.rows.start;
    // SAFETY (all calls): rows `o..o + n` exist and their outputs are ours.
    unsafe {
        if a.n_x == 1 {
            o = match F::PAIRS_1X {
                8 => full_tiles::<F, 8, 1>(a, x2, o),
                _ => full_tiles::<F, 4, 1>(a, x2, o),
            };
            tail::<F, 1>(a, x2, o);
        } else {
            o = full_tiles::<F, PAIRS_2X, 2>(a, x2, o);
            tail::<F, 2>(a, x2, o);
        }
    }
}

/// Tiles of `P` pairs from row `o` while whole ones fit; returns the first
/// row left.
///
/// # Safety
/// As [`fused`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn full_tiles<F: PairFormat, const P: usize, const NX: usize>(
    a: &Args<'_>,
    x2: &[f32],
    mut o: usize,
) -> usize {
    while o + 2 * P <= a.rows.end {
        // SAFETY: rows `o..o + 2P` exist and their outputs are ours.
        unsafe { tile::<F, P, NX>(a, x2, o, 2 * P) };
        o += 2 * P;
    }
    o
}

/// The last rows `o..a.rows.end` (fewer than a full tile), in tiles of
/// four, two and one pairs (an odd last row paired with itself).
///
/// # Safety
/// As [`fused`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn tail<F: PairFormat, const NX: usize>(a: &Args<'_>, x2: &[f32], mut o: usize) {
    // SAFETY (all calls): rows `o..o + n` exist and their outputs are ours.
    unsafe {
        while a.rows.end - o >= 8 {
            tile::<F, 4, NX>(a, x2, o, 8);
            o += 8;
        }
        if a.rows.end - o >= 4 {
            tile::<F, 2, NX>(a, x2, o, 4);
            o += 4;
        }
        match a.rows.end - o {
            0 => {}
            3 => tile::<F, 2, NX>(a, x2, o, 3),
            n => tile::<F, 1, NX>(a, x2, o, n),
        }
    }
}

/// Weight rows `o0..o0 + n` (`2 P - 1 <= n <= 2 P`; an odd last row is
/// paired with itself) × the `NX` activation rows, dequantized in registers.
///
/// # Safety
/// As [`fused`]; rows `o0..o0 + n` are in `a.rows`; `x2` is the duplicated
/// activations.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline(never)]
unsafe fn tile<F: PairFormat, const P: usize, const NX: usize>(
    a: &Args<'_>,
    x2: &[f32],
    o0: usize,
    n: usize,
) {
    debug_assert!(n >= 1 && n <= 2 * P && 2 * P - n <= 1);
    let n_blocks = a.n_in / F::BLOCK_ELEMS;
    let mut acc = [[_mm512_setzero_ps(); NX]; P];
    let row = |i: usize| a.row(o0 + i.min(n - 1)).as_ptr();
    let pairs: [(*const u8, *const u8); P] = std::array::from_fn(|p| (row(2 * p), row(2 * p + 1)));
    // The tile's rows are one contiguous stretch of memory read as 2P
    // interleaved streams: prefetch linearly, a fixed distance ahead.
    let pf_step = n * F::BLOCK_BYTES;
    let pf_start = pairs[0].0.wrapping_add(prefetch_distance(n * a.row_bytes));
    for blk in 0..n_blocks {
        let pf = pf_start.wrapping_add(blk * pf_step);
        let mut line = 0;
        while line < pf_step {
            // A prefetch is only a hint: it never faults, even past the end.
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(line).cast());
            line += 64;
        }
        let off = blk * F::BLOCK_BYTES;
        let mut preps = [F::Prep::default(); P];
        for_each_row!(P, p => {
            let (pa, pb) = pairs[p];
            // SAFETY: block `blk` of rows holding `n_blocks` whole blocks.
            preps[p] = unsafe { F::prep(pa.add(off), pb.add(off)) };
        });
        // SAFETY: block `blk` of every duplicated activation row is in bounds.
        let xb = unsafe { x2.as_ptr().add(2 * blk * F::BLOCK_ELEMS) };
        for u in 0..F::UNITS {
            // Straight-line code over the pairs keeps the accumulators in
            // registers (a loop would keep them in memory).
            for_each_row!(P, p => {
                let mut sink = FmaSink {
                    acc: &mut acc[p],
                    // A fresh pointer per pair: the compiler may not keep
                    // the activations in registers across pairs (it would
                    // spill).
                    x: launder(xb),
                    x_stride: 2 * a.n_in,
                };
                let (pa, pb) = pairs[p];
                // SAFETY: whole blocks of the format at `pa + off`, `pb + off`.
                unsafe {
                    F::unit(
                        launder(pa.add(off)),
                        launder(pb.add(off)),
                        &preps[p],
                        u,
                        &mut sink,
                    )
                };
            });
        }
    }
    // De-interleave: row A's lanes to the low half, row B's to the high.
    let split = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for j in 0..NX {
        let halves: [__m512; P] = std::array::from_fn(|p| _mm512_permutexvar_ps(split, acc[p][j]));
        // SAFETY: outputs `(o0..o0 + n, j)` are ours.
        unsafe { store_halves(halves, n, a.dst, o0, j) };
    }
}
