//! Matrix products with 8-bit activations (the CPU backend's `Q8` precision).
//!
//! `out = x · Wᵀ` where the activation rows `x` are first quantized to int8
//! per block of 32 values and each weight block is read as small integers,
//! so the inner products are exact integer dot products (AVX-512 VNNI
//! `vpdpbusd`, AVX2 `vpmaddubsw`/`vpmaddwd`, or plain Rust). Only the f32
//! combination of the blocks rounds, and its order is fixed here, so every
//! output is bit-identical whatever the batch size, the row's place in it,
//! the thread split or the instruction set (batch invariance, as the f32
//! contract of the parent module; the values differ from the f32 path's).
//!
//! # The arithmetic contract
//!
//! **Activations** ([`ActQ8::quantize`]): each row is cut in blocks of 32.
//! For a block with `amax = max |x_k|`: `dx = amax / 127` (f32 division);
//! `q_k = round_half_even(x_k / dx)` (f32 division, clamped to ±127), or all
//! `q_k = 0` and `dx = 0` when `amax = 0`; `S = Σ q_k` and `ds = dx * (S as f32)`.
//! A block with a NaN gets `dx = NaN` (and `q_k = 0`), so NaNs reach the
//! outputs as they do in f32.
//!
//! **Weights**: a row is read as integers `w_k` and, per 32-value block `b`,
//! an f32 multiplier `dw_b` (and for the formats with minimums an f32 `m_b`):
//!
//! | format | `w_k` | `dw_b` | `m_b` | block integer `I_b` |
//! |---|---|---|---|---|
//! | Q8_0 | `q` | `d` | | `Σ w x` |
//! | Q4_0 | `q - 8` | `d` | | `Σ w x` |
//! | Q5_0 | `q - 16` | `d` | | `Σ w x` |
//! | Q4_1 | `q` | `d` | `m` | `Σ w x` |
//! | Q4_K | `q` | `d * sc_j` | `-(dmin * m_j)` | `Σ w x` |
//! | Q6_K | `q - 32` | `d` | | `sc_2j Σ_{first 16} w x + sc_2j+1 Σ_{last 16} w x` |
//!
//! (`d`, `m`, `dmin` widened from f16; the K-quant products are exact in f32.)
//!
//! **One output** is the chain, over the blocks in increasing order, starting
//! from `acc = +0`:
//!
//! ```text
//! acc = fma(I_b as f32, dw_b * dx_b, acc)                    // Q4_0, Q5_0, Q8_0, Q6_K
//! acc = acc + fma(m_b, ds_b, (I_b as f32) * (dw_b * dx_b))   // Q4_1, Q4_K
//! ```
//!
//! (The minimum's term is added to the block's value before the block joins
//! the chain, so each block costs the chain one dependent operation.)
//!
//! `I_b` is an exact integer below 2^24 in magnitude, so `I_b as f32` is exact
//! and any way of summing the integers (VNNI's four-byte groups, AVX2's pairs,
//! a scalar loop) gives the same value. The kernels multiply the formats'
//! unsigned quants `q` (bytes) with the signed activations and subtract the
//! offset times the activations' sums, kept per four values with the
//! quantized rows (offsets are powers of two: a shift); Q8_0's signed weights
//! take `q + 128` on AVX-512 and the sign trick on AVX2.
//! [`dot_reference`] writes the contract out in plain Rust.
//!
//! Other weight types (F32, F16, BF16, Q5_1, Q2_K, Q3_K, Q5_K, Q8_K) have no
//! integer path: [`supports`] says so and the backend keeps them on f32.
//!
//! # Kernels
//!
//! Weight rows go eight at a time (`unpack`: their per-block multipliers,
//! and their quants as bytes where a kernel reads them from there).
//! Activation rows are then taken
//!
//! * sixteen at a time with the rows in the vector lanes ("row lanes": each
//!   4-byte group of the weight row is broadcast and multiplied with sixteen
//!   rows' bytes), for every full group of sixteen and a last group of at
//!   least [`LANE_ROWS_MIN`];
//! * else against the eight weight rows with one weight row per output lane
//!   after a fixed horizontal reduction ("small batches"): AVX-512 takes a
//!   block pair per vector, decodes the stored bytes in registers and serves
//!   up to four activation rows per decode; AVX2 takes one block and one
//!   activation row at a time from the unpacked bytes.
//!
//! Which rows take which kernel changes nothing in their values.

mod reference;
pub(crate) mod unpack;

use std::ops::Range;

use smelt_tensor::DType;

use super::{Dst, Isa, Scratch, detected_isa};
pub use reference::dot_reference;
use unpack::Tile;

/// Values per activation block.
pub const BLOCK: usize = 32;
/// Activation rows per group of the row-lane layout.
pub const LANES: usize = 16;
/// Rows from which a last, partial group of [`LANES`] takes the
/// row-lane kernel rather than the small-batch one.
pub const LANE_ROWS_MIN: usize = 12;
/// Weight rows unpacked together.
pub(crate) const TILE_ROWS: usize = 8;

/// Whether weights of `dtype` with rows of `n_in` values have an integer path.
pub fn supports(dtype: DType, n_in: usize) -> bool {
    matches!(
        dtype,
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0 | DType::Q4K | DType::Q6K
    ) && n_in > 0
        && n_in.is_multiple_of(dtype.block_elems())
        && n_in.is_multiple_of(BLOCK)
}

/// How a format's blocks combine (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `acc = fma(I, dw * dx, acc)`.
    Plain,
    /// `Plain`, then `acc = fma(m, ds, acc)`.
    Min,
    /// `Plain` with `I` from two half-blocks, each with its integer scale.
    Halves,
    /// `Plain` with weights of the full int8 range (Q8_0): AVX2's 16-bit
    /// pair sums need the sign trick instead of unsigned activations.
    Wide,
}

impl Kind {
    pub(crate) fn of(dtype: DType) -> Kind {
        match dtype {
            DType::Q4_1 | DType::Q4K => Kind::Min,
            DType::Q6K => Kind::Halves,
            DType::Q8_0 => Kind::Wide,
            _ => Kind::Plain,
        }
    }
}

/// Activation rows quantized to int8 per block of 32 (see the module docs),
/// in the layouts the kernels read. Reused across calls: it grows to the
/// largest shape seen.
#[derive(Default)]
pub struct ActQ8 {
    pub(crate) n_rows: usize,
    pub(crate) n_in: usize,
    /// `q`, row-major (`n_rows × n_in`).
    pub(crate) xs: Vec<i8>,
    /// Sums of each four consecutive `q` (`n_rows × n_in / 4`).
    pub(crate) s4: Vec<i32>,
    /// `dx` per row and block (`n_rows × n_in / 32`).
    pub(crate) d: Vec<f32>,
    /// `ds` per row and block.
    pub(crate) ds: Vec<f32>,
    /// Row groups laid out for the row-lane kernel.
    pub(crate) lane_groups: usize,
    /// `[group][block][k / 4][lane][4]` of `q` (padding rows: 0).
    pub(crate) xt: Vec<i8>,
    /// `[group][block][half][lane]`: sums of `q` over each half-block.
    pub(crate) st: Vec<i32>,
    /// `[group][block][lane]` of `d` (padding rows: 0).
    pub(crate) dt: Vec<f32>,
    /// `[group][block][lane]` of `ds` (padding rows: 0).
    pub(crate) dst: Vec<f32>,
}

impl ActQ8 {
    /// Empty; grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `n_rows` rows of `n_in` values (`n_in` a multiple of 32).
    ///
    /// # Panics
    /// If `n_in` is not a multiple of 32 or `x` is shorter than the shape.
    pub fn quantize(&mut self, x: &[f32], n_rows: usize, n_in: usize) {
        self.quantize_in_parts(x, n_rows, n_in, 1, &|part: &(dyn Fn(usize) + Sync)| part(0));
    }

    /// [`ActQ8::quantize`] cut in `parts` parts (ranges of blocks, for all
    /// rows) that `run` calls, each once, possibly at the same time on
    /// several threads (`run(f)` must call `f(i)` for every `i` in
    /// `0..parts` and return when all are done). Every block is quantized on
    /// its own, so the values are [`ActQ8::quantize`]'s, bit for bit.
    ///
    /// # Panics
    /// As [`ActQ8::quantize`].
    pub fn quantize_in_parts(
        &mut self,
        x: &[f32],
        n_rows: usize,
        n_in: usize,
        parts: usize,
        run: &PartRunner<'_>,
    ) {
        assert!(
            n_in.is_multiple_of(BLOCK) && x.len() >= n_rows * n_in,
            "quantize: {} values cannot be {n_rows} rows of {n_in} (a multiple of {BLOCK})",
            x.len()
        );
        let nb = n_in / BLOCK;
        self.n_rows = n_rows;
        self.n_in = n_in;
        self.xs.resize(n_rows * n_in, 0);
        self.s4.resize(n_rows * n_in / 4, 0);
        self.d.resize(n_rows * nb, 0.0);
        self.ds.resize(n_rows * nb, 0.0);
        let (full, rest) = (n_rows / LANES, n_rows % LANES);
        self.lane_groups = full + usize::from(rest >= LANE_ROWS_MIN);
        let g_n = self.lane_groups;
        // Every lane is written below (padding lanes with zeros): no need
        // to clear what a previous call left.
        self.xt.resize(g_n * nb * BLOCK * LANES, 0);
        self.st.resize(g_n * nb * 2 * LANES, 0);
        self.dt.resize(g_n * nb * LANES, 0.0);
        self.dst.resize(g_n * nb * LANES, 0.0);
        let out = Parts {
            xs: Shared::new(&mut self.xs),
            s4: Shared::new(&mut self.s4),
            d: Shared::new(&mut self.d),
            ds: Shared::new(&mut self.ds),
            xt: Shared::new(&mut self.xt),
            st: Shared::new(&mut self.st),
            dt: Shared::new(&mut self.dt),
            dst: Shared::new(&mut self.dst),
        };
        let parts = parts.max(1);
        run(&|part| {
            let blocks = crate::pool::split(nb, parts, part);
            if blocks.is_empty() {
                return;
            }
            let (b0, nbk) = (blocks.start, blocks.len());
            for r in 0..n_rows {
                let (e0, ne) = (r * n_in + b0 * BLOCK, nbk * BLOCK);
                // SAFETY: blocks `blocks` of row `r` belong to this part
                // alone (the parts split the blocks of every row).
                unsafe {
                    quantize_rows(
                        &x[e0..e0 + ne],
                        out.xs.slice(e0, ne),
                        out.s4.slice(e0 / 4, ne / 4),
                        out.d.slice(r * nb + b0, nbk),
                        out.ds.slice(r * nb + b0, nbk),
                    )
                };
            }
            for g in 0..g_n {
                for b in blocks.clone() {
                    let gb = g * nb + b;
                    // SAFETY: the row-lane slots of block `b` of group `g`
                    // belong to this part alone; the rows' own values read
                    // here were written above by this part.
                    let (xt, st, dt, dst) = unsafe {
                        (
                            out.xt.slice(gb * BLOCK * LANES, BLOCK * LANES),
                            out.st.slice(gb * 2 * LANES, 2 * LANES),
                            out.dt.slice(gb * LANES, LANES),
                            out.dst.slice(gb * LANES, LANES),
                        )
                    };
                    for lane in 0..LANES {
                        let r = g * LANES + lane;
                        if r >= n_rows {
                            // Padding rows: zeros.
                            for k4 in 0..BLOCK / 4 {
                                xt[(k4 * LANES + lane) * 4..][..4].fill(0);
                            }
                            st[lane] = 0;
                            st[LANES + lane] = 0;
                            dt[lane] = 0.0;
                            dst[lane] = 0.0;
                            continue;
                        }
                        // SAFETY: as above.
                        let (row, s4) = unsafe {
                            (
                                out.xs.slice(r * n_in + b * BLOCK, BLOCK),
                                out.s4.slice((r * n_in + b * BLOCK) / 4, BLOCK / 4),
                            )
                        };
                        for (k4, q) in row.chunks_exact(4).enumerate() {
                            xt[(k4 * LANES + lane) * 4..][..4].copy_from_slice(q);
                        }
                        st[lane] = s4[..4].iter().sum();
                        st[LANES + lane] = s4[4..].iter().sum();
                        // SAFETY: as above.
                        unsafe {
                            dt[lane] = out.d.slice(r * nb + b, 1)[0];
                            dst[lane] = out.ds.slice(r * nb + b, 1)[0];
                        }
                    }
                }
            }
        });
    }

    /// Rows held.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// The int8 values of row `r` (for tests and the reference).
    pub fn row_q(&self, r: usize) -> &[i8] {
        &self.xs[r * self.n_in..(r + 1) * self.n_in]
    }

    /// `dx` of each block of row `r`.
    pub fn row_d(&self, r: usize) -> &[f32] {
        let nb = self.n_in / BLOCK;
        &self.d[r * nb..(r + 1) * nb]
    }

    /// `ds` of each block of row `r`.
    pub fn row_ds(&self, r: usize) -> &[f32] {
        let nb = self.n_in / BLOCK;
        &self.ds[r * nb..(r + 1) * nb]
    }
}

/// Runs a part function for every part ([`ActQ8::quantize_in_parts`]).
pub type PartRunner<'a> = dyn Fn(&(dyn Fn(usize) + Sync)) + 'a;

/// A buffer that the parts of [`ActQ8::quantize_in_parts`] write at
/// disjoint places.
struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the parts access disjoint elements only (see `slice`), and the
// call joins them before the buffers are used again.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn new(v: &mut [T]) -> Self {
        Shared {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// `len` elements at `start`.
    ///
    /// # Safety
    /// No other part may access them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "quantize: part out of bounds");
        // SAFETY: in bounds (checked) and exclusive (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// The buffers of an [`ActQ8`] being filled.
struct Parts {
    xs: Shared<i8>,
    s4: Shared<i32>,
    d: Shared<f32>,
    ds: Shared<f32>,
    xt: Shared<i8>,
    st: Shared<i32>,
    dt: Shared<f32>,
    dst: Shared<f32>,
}

/// The quantization of every block (see the module docs).
fn quantize_rows(x: &[f32], xs: &mut [i8], s4: &mut [i32], d: &mut [f32], ds: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are present (checked just above); the body is
        // plain Rust, compiled with them enabled so that it vectorizes.
        unsafe { quantize_rows_avx2(x, xs, s4, d, ds) };
        return;
    }
    quantize_rows_body(x, xs, s4, d, ds);
}

/// [`quantize_rows_body`] with AVX2: the same values, bit for bit (the
/// division, the rounding to nearest even and the clamp are IEEE operations;
/// a NaN input gives 0 as the scalar `as` conversion does).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_rows_avx2(
    x: &[f32],
    xs: &mut [i8],
    s4: &mut [i32],
    d: &mut [f32],
    ds: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = d.len();
    assert!(x.len() >= n * BLOCK && xs.len() >= n * BLOCK && s4.len() >= n * 8 && ds.len() >= n);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for blk in 0..n {
        // SAFETY: block `blk < n` of each array is in bounds (asserted).
        unsafe {
            let xp = x.as_ptr().add(blk * BLOCK);
            let v: [__m256; 4] = std::array::from_fn(|j| _mm256_loadu_ps(xp.add(8 * j)));
            // max(|v|, acc) keeps `acc` where `v` is NaN, as `f32::max` does.
            let mut m = _mm256_setzero_ps();
            for vj in v {
                m = _mm256_max_ps(_mm256_and_ps(vj, abs_mask), m);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m1 = _mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2));
            let amax = _mm_cvtss_f32(m1);
            let nan = v.iter().fold(_mm256_setzero_ps(), |a, &vj| {
                _mm256_or_ps(a, _mm256_cmp_ps::<_CMP_UNORD_Q>(vj, vj))
            });
            let dx = if _mm256_movemask_ps(nan) != 0 {
                f32::NAN
            } else {
                amax / 127.0
            };
            d[blk] = dx;
            let qp = xs.as_mut_ptr().add(blk * BLOCK);
            let sp = s4.as_mut_ptr().add(blk * 8);
            if dx == 0.0 {
                _mm256_storeu_si256(qp.cast(), _mm256_setzero_si256());
                _mm256_storeu_si256(sp.cast(), _mm256_setzero_si256());
                ds[blk] = 0.0;
                continue;
            }
            let dv = _mm256_set1_ps(dx);
            let q: [__m256i; 4] = std::array::from_fn(|j| {
                let y = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_div_ps(v[j], dv),
                );
                let y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
                _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, lo), hi))
            });
            let w01 = _mm256_packs_epi32(q[0], q[1]);
            let w23 = _mm256_packs_epi32(q[2], q[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
            _mm256_storeu_si256(qp.cast(), bytes);
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, bytes), ones16);
            _mm256_storeu_si256(sp.cast(), sums);
            let s2 = _mm_add_epi32(
                _mm256_castsi256_si128(sums),
                _mm256_extracti128_si256::<1>(sums),
            );
            let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b01_00_11_10>(s2));
            let s0 = _mm_add_epi32(s1, _mm_shuffle_epi32::<0b10_11_00_01>(s1));
            ds[blk] = dx * _mm_cvtsi128_si32(s0) as f32;
        }
    }
}

#[inline(always)]
fn quantize_rows_body(x: &[f32], xs: &mut [i8], s4: &mut [i32], d: &mut [f32], ds: &mut [f32]) {
    for ((((xb, qb), sb), d), ds) in x
        .chunks_exact(BLOCK)
        .zip(xs.chunks_exact_mut(BLOCK))
        .zip(s4.chunks_exact_mut(BLOCK / 4))
        .zip(d.iter_mut())
        .zip(ds.iter_mut())
    {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        // A NaN makes the block's scale NaN, so it reaches the outputs.
        let dx = if xb.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            amax / 127.0
        };
        if dx == 0.0 {
            qb.fill(0);
        } else {
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v / dx).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
        }
        for (s, q4) in sb.iter_mut().zip(qb.chunks_exact(4)) {
            *s = q4.iter().map(|&q| i32::from(q)).sum();
        }
        *d = dx;
        *ds = dx * sb.iter().sum::<i32>() as f32;
    }
}

/// `out[r * out_stride + (o - rows.start)]` for `o` in `rows`, `r` in
/// `0..x.n_rows()`: the Q8 product of weight rows `rows` (stored as `dtype`,
/// rows of `x.n_in` values back to back in `w`) with the quantized
/// activations, on the best instruction set of this machine.
///
/// # Panics
/// If `dtype` has no integer path ([`supports`]), or a slice is too short.
pub fn matmul(
    dtype: DType,
    w: &[u8],
    rows: Range<usize>,
    x: &ActQ8,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut Scratch,
) {
    matmul_with_isa(detected_isa(), dtype, w, rows, x, out, out_stride, scratch)
}

/// [`matmul`] on a chosen instruction set (an unavailable one runs the
/// portable kernel).
///
/// # Panics
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_with_isa(
    isa: Isa,
    dtype: DType,
    w: &[u8],
    rows: Range<usize>,
    x: &ActQ8,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut Scratch,
) {
    let n_x = x.n_rows;
    if rows.is_empty() || n_x == 0 {
        return;
    }
    let need = (n_x - 1) * out_stride + rows.len();
    assert!(
        out.len() >= need && (n_x == 1 || out_stride >= rows.len()),
        "q8 matmul: output of {} values with stride {out_stride} cannot hold {n_x} rows of {}",
        out.len(),
        rows.len()
    );
    let dst = Dst {
        ptr: out.as_mut_ptr(),
        stride: out_stride,
        first: rows.start,
    };
    // SAFETY: `dst` addresses exactly the outputs checked above, borrowed
    // mutably for the call.
    unsafe { run(isa, dtype, w, rows, x, dst, scratch) }
}

/// [`matmul`] writing `out.add(r * out_stride + o)`: several threads fill
/// disjoint columns of one row-major output in place.
///
/// # Safety
/// Every one of those elements must be valid for writes, and no other thread
/// may access them during the call.
///
/// # Panics
/// As [`matmul`].
pub unsafe fn matmul_to_ptr(
    dtype: DType,
    w: &[u8],
    rows: Range<usize>,
    x: &ActQ8,
    out: *mut f32,
    out_stride: usize,
    scratch: &mut Scratch,
) {
    if rows.is_empty() || x.n_rows == 0 {
        return;
    }
    let dst = Dst {
        ptr: out,
        stride: out_stride,
        first: 0,
    };
    // SAFETY: the caller's contract.
    unsafe { run(detected_isa(), dtype, w, rows, x, dst, scratch) }
}

/// Asks for `bytes` to be brought into the cache (a hint; no-op off x86).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: prefetching is a hint that never faults; the address is
        // inside `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Which kernels a call runs with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

/// Whether this machine has AVX-512 VNNI on top of [`Isa::Avx512`].
#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    use std::sync::OnceLock;
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| std::arch::is_x86_feature_detected!("avx512vnni"))
}

fn path_of(isa: Isa) -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && Isa::Avx512.available() && has_vnni() {
            return Path::Vnni;
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.available() {
            return Path::Avx2;
        }
    }
    let _ = isa;
    Path::Portable
}

/// Validates the shapes, then runs the tiles.
///
/// # Safety
/// `dst` must be valid and exclusive for every output `(o, r)`.
unsafe fn run(
    isa: Isa,
    dtype: DType,
    w: &[u8],
    rows: Range<usize>,
    x: &ActQ8,
    dst: Dst,
    scratch: &mut Scratch,
) {
    let n_in = x.n_in;
    assert!(
        supports(dtype, n_in),
        "q8 matmul: no integer path for {dtype} rows of {n_in}"
    );
    let row_bytes = match dtype.row_bytes(n_in as u64) {
        Ok(b) => b as usize,
        Err(e) => panic!("q8 matmul: {e}"),
    };
    assert!(
        rows.end
            .checked_mul(row_bytes)
            .is_some_and(|b| b <= w.len()),
        "q8 matmul: weight of {} bytes has no row {} ({row_bytes} bytes per {dtype} row)",
        w.len(),
        rows.end.saturating_sub(1)
    );
    let path = path_of(isa);
    let kind = Kind::of(dtype);
    let tile = scratch.q8_tile.get_or_insert_with(Tile::default);
    let mut o = rows.start;
    while o < rows.end {
        let m = (rows.end - o).min(TILE_ROWS);
        let raw = &w[o * row_bytes..(o + m) * row_bytes];
        // The next tile's bytes are fetched while this one computes: its
        // first touch (a gather of scales) would otherwise wait on memory.
        let next = (o + m) * row_bytes..((o + m + TILE_ROWS).min(rows.end)) * row_bytes;
        prefetch(&w[next]);
        // The AVX-512 small-batch kernel decodes the weight bytes itself:
        // the tile then needs only the multipliers.
        #[cfg(target_arch = "x86_64")]
        let bytes = !(path == Path::Vnni && x.lane_groups == 0);
        #[cfg(not(target_arch = "x86_64"))]
        let bytes = true;
        unpack::unpack_tile(dtype, raw, n_in, m, tile, bytes);
        // SAFETY: outputs `(o..o + m, r)` are the caller's; the tile holds
        // `m` unpacked rows of `n_in` (padded to TILE_ROWS).
        unsafe {
            match path {
                #[cfg(target_arch = "x86_64")]
                Path::Vnni => super::x86::q8_avx512::tile(dtype, kind, tile, raw, x, o, m, dst),
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => super::x86::q8_avx2::tile(kind, tile, x, o, m, dst),
                Path::Portable => reference::tile(kind, tile, x, o, m, dst),
            }
        }
        o += m;
    }
}

#[cfg(test)]
mod tests;
