//! AVX-512 panels and micro-kernel (many activation rows: prefill).
//!
//! Same arithmetic as everywhere (the parent module's contract): a 512-bit
//! register holds **two weight rows side by side**, row A's eight canonical
//! lanes in the low half and row B's in the high half, never sixteen
//! consecutive elements of one output. A panel of weight rows is
//! dequantized once, pair by pair, in that layout (16 floats per step of 8
//! elements: A's 8, then B's 8); the micro-kernel multiplies it with
//! activations broadcast from memory to both halves (one 256-bit load), 4
//! pairs × 6 activation rows at a time (24 accumulators), and reduces each
//! half with the AVX2 path's lane tree.

use std::arch::x86_64::*;

use super::Args;
use super::avx512::store_halves;
use super::avx512_formats::{PairFormat, Sink};
use crate::kernels::{Dst, Scratch, aligned};

/// Weight-row pairs per micro-kernel tile.
const MP: usize = 4;
/// Activation rows per micro-kernel tile.
const NR: usize = 6;
/// Target size of a dequantized weight panel (fits the L2 cache with room
/// for the activation rows being streamed).
const PANEL_BYTES: usize = 256 * 1024;
/// Most weight rows per panel.
const PANEL_MAX_ROWS: usize = 64;

/// The product of every weight row in `a.rows` with every activation row,
/// through dequantized panels.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL, BMI2, AVX2, FMA and F16C; `a` is validated
/// (whole blocks of `F` per row, `dst` valid and exclusive for every
/// output); `a.rows` and `a.n_x` are not empty.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
pub(super) unsafe fn panel<F: PairFormat>(a: &Args<'_>, scratch: &mut Scratch) {
    let kp = a.n_in;
    debug_assert!(kp.is_multiple_of(F::BLOCK_ELEMS));
    let panel_rows = (PANEL_BYTES / (4 * kp)).clamp(2 * MP, PANEL_MAX_ROWS) / (2 * MP) * (2 * MP);
    // One pair takes `2 kp` floats.
    let panel = aligned(&mut scratch.panel, panel_rows * kp);
    let mut p0 = a.rows.start;
    while p0 < a.rows.end {
        let np = panel_rows.min(a.rows.end - p0);
        let n_pairs = np.div_ceil(2);
        for q in 0..n_pairs {
            let (ra, rb) = (p0 + 2 * q, (p0 + 2 * q + 1).min(p0 + np - 1));
            let out = &mut panel[2 * kp * q..2 * kp * (q + 1)];
            // SAFETY: whole rows of `F` and a `2 kp`-value pair slot.
            unsafe { fill_pair::<F>(a.row(ra), a.row(rb), kp, out) };
        }
        // The next panel's stored rows are fetched while this one
        // computes, a share before each micro-kernel call: when the weight
        // comes from memory, dequantizing it would otherwise wait on every
        // line (a hint only; no value changes).
        let next =
            &a.w[(p0 + np) * a.row_bytes..((p0 + np + panel_rows).min(a.rows.end)) * a.row_bytes];
        let calls = a.n_x.div_ceil(NR) * n_pairs.div_ceil(MP);
        let per_call = next.len().div_ceil(64 * calls) * 64;
        let mut fetched = 0;
        let mut r0 = 0;
        while r0 < a.n_x {
            let nr = NR.min(a.n_x - r0);
            let mut q0 = 0;
            while q0 < n_pairs {
                let mp = MP.min(n_pairs - q0);
                let upto = (fetched + per_call).min(next.len());
                while fetched < upto {
                    // A prefetch never faults; the address is inside `next`.
                    _mm_prefetch::<_MM_HINT_T1>(next[fetched..].as_ptr().cast());
                    fetched += 64;
                }
                let rows_here = (np - 2 * q0).min(2 * mp);
                let t = Tile {
                    w: &panel[2 * kp * q0..2 * kp * (q0 + mp)],
                    kp,
                    x: &a.x[r0 * kp..(r0 + nr) * kp],
                    dst: a.dst,
                    o0: p0 + 2 * q0,
                    n_rows: rows_here,
                    r0,
                };
                // SAFETY: `mp` pairs and `nr` activation rows of `kp`
                // values; the outputs are ours.
                unsafe { micro_dispatch(mp, nr, &t) };
                q0 += mp;
            }
            r0 += nr;
        }
        p0 += np;
    }
}

/// Stores each pair vector into a panel pair slot, converting the lane
/// interleaving of [`PairFormat`] (`a0 b0 a1 b1 …`) to halves (`a0..a7 b0..b7`).
struct PanelSink {
    out: *mut f32,
    to_halves: __m512i,
}

impl Sink for PanelSink {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn put(&mut self, c: usize, v: __m512) {
        // SAFETY: vector `c` of the current block lies inside the pair slot.
        unsafe {
            _mm512_storeu_ps(
                self.out.add(16 * c),
                _mm512_permutexvar_ps(self.to_halves, v),
            )
        }
    }
}

/// Dequantizes rows `ra` and `rb` (whole rows of `kp` elements of `F`)
/// into a pair slot: for each step `s` of 8 elements, A's 8 then B's 8.
///
/// # Safety
/// The CPU has the module's features; `ra` and `rb` are whole rows of `F`;
/// `out` holds `2 kp` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn fill_pair<F: PairFormat>(ra: &[u8], rb: &[u8], kp: usize, out: &mut [f32]) {
    debug_assert!(out.len() >= 2 * kp);
    let to_halves = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for b in 0..kp / F::BLOCK_ELEMS {
        // SAFETY: block `b` is whole inside both rows; its `2 BLOCK_ELEMS`
        // values fit `out` at `2 b BLOCK_ELEMS`.
        unsafe {
            let (pa, pb) = (
                ra.as_ptr().add(b * F::BLOCK_BYTES),
                rb.as_ptr().add(b * F::BLOCK_BYTES),
            );
            let prep = F::prep(pa, pb);
            let mut sink = PanelSink {
                out: out.as_mut_ptr().add(2 * b * F::BLOCK_ELEMS),
                to_halves,
            };
            for u in 0..F::UNITS {
                F::unit(pa, pb, &prep, u, &mut sink);
            }
        }
    }
}

/// One micro-kernel call's operands.
struct Tile<'a> {
    /// The tile's pair slots (`2 kp` values each).
    w: &'a [f32],
    kp: usize,
    /// The tile's activation rows (`kp` values each).
    x: &'a [f32],
    dst: Dst,
    /// First weight row of the tile.
    o0: usize,
    /// Weight rows of the tile that are real (an odd last row is paired
    /// with itself, and only its low half is stored).
    n_rows: usize,
    /// First activation row of the tile.
    r0: usize,
}

/// Calls the micro-kernel instance for `mp` pairs × `nr` activation rows.
///
/// # Safety
/// As [`micro`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
unsafe fn micro_dispatch(mp: usize, nr: usize, t: &Tile<'_>) {
    macro_rules! by_rows {
        ($p:literal) => {
            match nr {
                6 => micro::<$p, 6>(t),
                5 => micro::<$p, 5>(t),
                4 => micro::<$p, 4>(t),
                3 => micro::<$p, 3>(t),
                2 => micro::<$p, 2>(t),
                _ => micro::<$p, 1>(t),
            }
        };
    }
    // SAFETY: forwarded contract.
    unsafe {
        match mp {
            4 => by_rows!(4),
            3 => by_rows!(3),
            2 => by_rows!(2),
            _ => by_rows!(1),
        }
    }
}

/// `P` pairs × `N` activation rows over `kp` (a multiple of 8) values.
///
/// # Safety
/// `t.w` holds `P` pair slots, `t.x` `N` rows; outputs
/// `(o0..o0 + n_rows, r0..r0 + N)` are ours.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline(never)]
unsafe fn micro<const P: usize, const N: usize>(t: &Tile<'_>) {
    debug_assert!(t.w.len() >= P * 2 * t.kp && t.x.len() >= N * t.kp);
    let (w, x, kp) = (t.w.as_ptr(), t.x.as_ptr(), t.kp);
    let mut acc = [[_mm512_setzero_ps(); N]; P];
    let mut k = 0;
    while k < kp {
        let mut wv = [_mm512_setzero_ps(); P];
        // Straight-line code (constant indices) keeps the 24 accumulators in
        // registers; loops here made the compiler spill them.
        for_each_row!(P, p => {
            // SAFETY: step `k / 8` of pair slot `p` (16 values) is inside `w`.
            wv[p] = unsafe { _mm512_loadu_ps(w.add(2 * kp * p + 2 * k)) };
        });
        for_each_row!(N, n => {
            // SAFETY: values `k..k + 8` of activation row `n` (`k + 8 <= kp`).
            let xv = unsafe {
                _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                    x.add(n * kp + k).cast(),
                )))
            };
            for_each_row!(P, p => {
                acc[p][n] = _mm512_fmadd_ps(wv[p], xv, acc[p][n]);
            });
        });
        k += 8;
    }
    for_each_row!(N, n => {
        let halves: [__m512; P] = std::array::from_fn(|p| acc[p][n]);
        // SAFETY: outputs `(o0..o0 + n_rows, r0 + n)` are ours.
        unsafe { store_halves(halves, t.n_rows, t.dst, t.o0, t.r0 + n) };
    });
}
