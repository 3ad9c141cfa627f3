//! Q8 kernels with AVX-512 VNNI (`vpdpbusd`: four unsigned activation bytes
//! times four signed weight bytes summed into each i32 lane, exactly).
//!
//! The integers are exact and the f32 chain of each output is the contract's
//! (see `kernels::q8`): lane arithmetic only ever holds different outputs.

use std::arch::x86_64::*;

use crate::kernels::Dst;
use crate::kernels::q8::unpack::Tile;
use crate::kernels::q8::{ActQ8, BLOCK, Kind, LANES, TILE_ROWS};

/// Runs `m` unpacked weight rows (outputs `o..o + m`) against every
/// activation row.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2 and FMA must be present; `dst` must be valid
/// and exclusive for outputs `(o..o + m, 0..x.n_rows)`.
pub(in crate::kernels) unsafe fn tile(
    kind: Kind,
    t: &Tile,
    x: &ActQ8,
    o: usize,
    m: usize,
    dst: Dst,
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match kind {
            Kind::Plain | Kind::Wide => tile_k::<0>(t, x, o, m, dst),
            Kind::Min => tile_k::<1>(t, x, o, m, dst),
            Kind::Halves => tile_k::<2>(t, x, o, m, dst),
        }
    }
}

const MIN: u8 = 1;
const HALVES: u8 = 2;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn tile_k<const K: u8>(t: &Tile, x: &ActQ8, o: usize, m: usize, dst: Dst) {
    let lane_rows = (x.lane_groups * LANES).min(x.n_rows);
    for g in 0..x.lane_groups {
        for i in 0..m {
            // SAFETY: the caller's contract; `g < lane_groups`, `i < m`.
            unsafe { lanes_row::<K>(t, x, g, i, o, dst) };
        }
    }
    for r in lane_rows..x.n_rows {
        // SAFETY: as above, `r < n_rows`.
        unsafe { small_row::<K>(t, x, r, o, m, dst) };
    }
}

/// Weight row `i` of the tile against the sixteen activation rows of group
/// `g`, one row per lane.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn lanes_row<const K: u8>(t: &Tile, x: &ActQ8, g: usize, i: usize, o: usize, dst: Dst) {
    let nb = t.nb;
    let w = t.row(i);
    let sc = &t.sc[i * t.nbp * 2..(i + 1) * t.nbp * 2];
    let xt = &x.xt[g * nb * BLOCK * LANES..(g + 1) * nb * BLOCK * LANES];
    let (dt, dst_s) = (
        &x.dt[g * nb * LANES..(g + 1) * nb * LANES],
        &x.dst[g * nb * LANES..(g + 1) * nb * LANES],
    );
    let mut acc = _mm512_setzero_ps();
    for b in 0..nb {
        let wb = &w[b * BLOCK..(b + 1) * BLOCK];
        let xb = &xt[b * BLOCK * LANES..(b + 1) * BLOCK * LANES];
        // SAFETY: `wb` holds 32 bytes (8 groups of 4), `xb` 8 × 64 bytes.
        let step = |k4: usize, a: __m512i| unsafe {
            let wv = _mm512_set1_epi32(wb.as_ptr().add(4 * k4).cast::<i32>().read_unaligned());
            let xv = _mm512_loadu_si512(xb.as_ptr().add(64 * k4).cast());
            _mm512_dpbusd_epi32(a, xv, wv)
        };
        let z = _mm512_setzero_si512();
        let (a0, a1) = (step(0, z), step(1, z));
        let (a0, a1) = (step(2, a0), step(3, a1));
        let (b0, b1) = (step(4, z), step(5, z));
        let (b0, b1) = (step(6, b0), step(7, b1));
        let (lo, hi) = (_mm512_add_epi32(a0, a1), _mm512_add_epi32(b0, b1));
        let c = _mm512_set1_epi32(t.c[b * TILE_ROWS + i]);
        let int = if K == HALVES {
            let lo = _mm512_mullo_epi32(lo, _mm512_set1_epi32(sc[2 * b]));
            let hi = _mm512_mullo_epi32(hi, _mm512_set1_epi32(sc[2 * b + 1]));
            _mm512_sub_epi32(_mm512_add_epi32(lo, hi), c)
        } else {
            _mm512_sub_epi32(_mm512_add_epi32(lo, hi), c)
        };
        // SAFETY: `dt`/`dst_s` hold 16 values per block.
        let (dx, ds) = unsafe {
            (
                _mm512_loadu_ps(dt.as_ptr().add(b * LANES)),
                _mm512_loadu_ps(dst_s.as_ptr().add(b * LANES)),
            )
        };
        let s = _mm512_mul_ps(_mm512_set1_ps(t.dw[b * TILE_ROWS + i]), dx);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(int), s, acc);
        if K == MIN {
            acc = _mm512_fmadd_ps(_mm512_set1_ps(t.m_b[b * TILE_ROWS + i]), ds, acc);
        }
    }
    let mut out = [0.0f32; LANES];
    // SAFETY: `out` holds 16 floats.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), acc) };
    for (lane, v) in out.iter().enumerate() {
        let r = g * LANES + lane;
        if r < x.n_rows {
            // SAFETY: `(o + i, r)` is one of our outputs.
            unsafe { *dst.at(o + i, r) = *v };
        }
    }
}

/// Sums each half (256 bits) of eight vectors into one vector: lane `j` of
/// the low half is the sum of `p[j]`'s low half, lane `8 + j` of its high
/// half. Integer sums: any order gives the same value.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn reduce8(p: [__m512i; 8]) -> __m512i {
    let l1 = |a, b| _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    let l2 = |a, b| _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    let e = l2(l1(p[0], p[1]), l1(p[2], p[3]));
    let f = l2(l1(p[4], p[5]), l1(p[6], p[7]));
    // Each 128-bit lane of `e` holds rows 0..4 summed over that lane, of `f`
    // rows 4..8; lanes 0, 1 are the low half's two quarters, 2, 3 the high's.
    let ig = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    let ih = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    _mm512_add_epi32(
        _mm512_permutex2var_epi32(e, ig, f),
        _mm512_permutex2var_epi32(e, ih, f),
    )
}

/// The tile's eight weight rows against activation row `r`, a block pair at
/// a time (row `i`'s blocks `b, b + 1` in one vector), one weight row per
/// output lane after [`reduce8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn small_row<const K: u8>(t: &Tile, x: &ActQ8, r: usize, o: usize, m: usize, dst: Dst) {
    let (n_in, nb, nbp) = (x.n_in, t.nb, t.nbp);
    let stride = nbp * BLOCK;
    let xu = &x.xu[r * n_in..(r + 1) * n_in];
    let (d, ds) = (&x.d[r * nb..(r + 1) * nb], &x.ds[r * nb..(r + 1) * nb]);
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let mut acc = _mm256_setzero_ps();
    let mut b = 0;
    while b < nb {
        let two = b + 1 < nb;
        // SAFETY: 64 bytes of blocks `b, b + 1`, or 32 of the last block.
        let xv = unsafe {
            if two {
                _mm512_loadu_si512(xu.as_ptr().add(b * BLOCK).cast())
            } else {
                _mm512_zextsi256_si512(_mm256_loadu_si256(xu.as_ptr().add(b * BLOCK).cast()))
            }
        };
        let p: [__m512i; 8] = std::array::from_fn(|i| {
            // SAFETY: row `i` of the tile has `nbp * 32` bytes, `b + 1 < nbp`.
            let wv = unsafe { _mm512_loadu_si512(t.q.as_ptr().add(i * stride + b * BLOCK).cast()) };
            let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), xv, wv);
            if K == HALVES {
                // SAFETY: row `i` has `2 * nbp` scales; `b + 1 < nbp`.
                let s4 = unsafe { _mm_loadu_si128(t.sc.as_ptr().add((i * nbp + b) * 2).cast()) };
                let scv = _mm512_permutexvar_epi32(spread, _mm512_castsi128_si512(s4));
                _mm512_mullo_epi32(prod, scv)
            } else {
                prod
            }
        });
        // SAFETY: `[block][row]` arrays hold `nbp * 8` entries; `b + 1 < nbp`.
        let (c, dw, dw1, mb, mb1) = unsafe {
            (
                _mm512_loadu_si512(t.c.as_ptr().add(b * TILE_ROWS).cast()),
                _mm256_loadu_ps(t.dw.as_ptr().add(b * TILE_ROWS)),
                _mm256_loadu_ps(t.dw.as_ptr().add((b + 1) * TILE_ROWS)),
                _mm256_loadu_ps(t.m_b.as_ptr().add(b * TILE_ROWS)),
                _mm256_loadu_ps(t.m_b.as_ptr().add((b + 1) * TILE_ROWS)),
            )
        };
        let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(reduce8(p), c));
        let s = _mm256_mul_ps(dw, _mm256_set1_ps(d[b]));
        acc = _mm256_fmadd_ps(_mm512_castps512_ps256(f), s, acc);
        if K == MIN {
            acc = _mm256_fmadd_ps(mb, _mm256_set1_ps(ds[b]), acc);
        }
        if two {
            let s = _mm256_mul_ps(dw1, _mm256_set1_ps(d[b + 1]));
            acc = _mm256_fmadd_ps(
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f))),
                s,
                acc,
            );
            if K == MIN {
                acc = _mm256_fmadd_ps(mb1, _mm256_set1_ps(ds[b + 1]), acc);
            }
        }
        b += 2;
    }
    let mut out = [0.0f32; TILE_ROWS];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    for (i, v) in out.iter().enumerate().take(m) {
        // SAFETY: `(o + i, r)` is one of our outputs.
        unsafe { *dst.at(o + i, r) = *v };
    }
}
