//! Q8 kernels with AVX2 (`vpmaddubsw` then `vpmaddwd`: unsigned activation
//! bytes times signed weight bytes, pairs summed in 16 bits, then in 32).
//!
//! The 16-bit pair sums cannot saturate: the unsigned weight bytes are at
//! most 63 and activations at most 127 in magnitude, except Q8_0
//! ([`Kind::Wide`]), whose products take the sign trick (`|w|` times `x`
//! with `w`'s sign, at most 128 and 127 in magnitude). The integers are exact; the f32 chain is the
//! contract's (see `kernels::q8`).

use std::arch::x86_64::*;

use crate::kernels::Dst;
use crate::kernels::q8::unpack::Tile;
use crate::kernels::q8::{ActQ8, BLOCK, Kind, LANES, TILE_ROWS};

const PLAIN: u8 = 0;
const MIN: u8 = 1;
const HALVES: u8 = 2;
const WIDE: u8 = 3;

/// Runs `m` unpacked weight rows (outputs `o..o + m`) against every
/// activation row.
///
/// # Safety
/// AVX2 and FMA must be present; `dst` must be valid and exclusive for
/// outputs `(o..o + m, 0..x.n_rows)`.
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
            Kind::Plain => tile_k::<PLAIN>(t, x, o, m, dst),
            Kind::Min => tile_k::<MIN>(t, x, o, m, dst),
            Kind::Halves => tile_k::<HALVES>(t, x, o, m, dst),
            Kind::Wide => tile_k::<WIDE>(t, x, o, m, dst),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
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

/// The exact i32 sums of four adjacent byte products of unsigned weight
/// bytes `wv` and signed activations `xv` (for [`WIDE`], signed weights).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot4<const K: u8>(wv: __m256i, xv: __m256i) -> __m256i {
    let pairs = if K == WIDE {
        _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv))
    } else {
        _mm256_maddubs_epi16(wv, xv)
    };
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// One block's step of the f32 chain: `fma(i, s, acc)`, or for the formats
/// with minimums `acc + fma(m, ds, i * s)` (see `kernels::q8`).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn block<const K: u8>(
    acc: __m256,
    i: __m256,
    s: __m256,
    m: __m256,
    ds: __m256,
) -> __m256 {
    if K == MIN {
        _mm256_add_ps(acc, _mm256_fmadd_ps(m, ds, _mm256_mul_ps(i, s)))
    } else {
        _mm256_fmadd_ps(i, s, acc)
    }
}

/// `-(s << shift)` per lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn neg_shifted(s: __m256i, shift: u32) -> __m256i {
    _mm256_sub_epi32(
        _mm256_setzero_si256(),
        _mm256_sll_epi32(s, _mm_cvtsi32_si128(shift as i32)),
    )
}

/// Weight row `i` of the tile against the sixteen activation rows of group
/// `g`, one row per lane (two vectors of eight).
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_row<const K: u8>(t: &Tile, x: &ActQ8, g: usize, i: usize, o: usize, dst: Dst) {
    let nb = t.nb;
    let w = t.row(i);
    let sc = &t.sc[i * t.nbp * 2..(i + 1) * t.nbp * 2];
    let shift = if K == WIDE { 0 } else { t.shift };
    let xt = &x.xt[g * nb * BLOCK * LANES..(g + 1) * nb * BLOCK * LANES];
    let st = &x.st[g * nb * 2 * LANES..(g + 1) * nb * 2 * LANES];
    let (dt, dst_s) = (
        &x.dt[g * nb * LANES..(g + 1) * nb * LANES],
        &x.dst[g * nb * LANES..(g + 1) * nb * LANES],
    );
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let wb = &w[b * BLOCK..(b + 1) * BLOCK];
        let xb = &xt[b * BLOCK * LANES..(b + 1) * BLOCK * LANES];
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `wb` holds 32 bytes (8 groups of 4), `xb` 8 × 64 bytes.
            let step = |k4: usize| unsafe {
                let wv = _mm256_set1_epi32(wb.as_ptr().add(4 * k4).cast::<i32>().read_unaligned());
                let xv = _mm256_loadu_si256(xb.as_ptr().add(64 * k4 + 32 * h).cast());
                dot4::<K>(wv, xv)
            };
            let add = _mm256_add_epi32;
            let mut lo = add(add(step(0), step(1)), add(step(2), step(3)));
            let mut hi = add(add(step(4), step(5)), add(step(6), step(7)));
            if shift != 0 {
                // SAFETY: two half sums of 16 lanes per block.
                let (s_lo, s_hi) = unsafe {
                    (
                        _mm256_loadu_si256(st.as_ptr().add(b * 2 * LANES + 8 * h).cast()),
                        _mm256_loadu_si256(st.as_ptr().add((b * 2 + 1) * LANES + 8 * h).cast()),
                    )
                };
                lo = add(lo, neg_shifted(s_lo, shift));
                hi = add(hi, neg_shifted(s_hi, shift));
            }
            let int = if K == HALVES {
                let lo = _mm256_mullo_epi32(lo, _mm256_set1_epi32(sc[2 * b]));
                let hi = _mm256_mullo_epi32(hi, _mm256_set1_epi32(sc[2 * b + 1]));
                add(lo, hi)
            } else {
                add(lo, hi)
            };
            let lane0 = b * LANES + 8 * h;
            // SAFETY: `dt`/`dst_s` hold 16 values per block.
            let (dx, ds) = unsafe {
                (
                    _mm256_loadu_ps(dt.as_ptr().add(lane0)),
                    _mm256_loadu_ps(dst_s.as_ptr().add(lane0)),
                )
            };
            let s = _mm256_mul_ps(_mm256_set1_ps(t.dw[b * TILE_ROWS + i]), dx);
            *acc = block::<K>(
                *acc,
                _mm256_cvtepi32_ps(int),
                s,
                _mm256_set1_ps(t.m_b[b * TILE_ROWS + i]),
                ds,
            );
        }
    }
    let mut out = [0.0f32; LANES];
    // SAFETY: `out` holds 16 floats.
    unsafe {
        _mm256_storeu_ps(out.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), acc[1]);
    }
    for (lane, v) in out.iter().enumerate() {
        let r = g * LANES + lane;
        if r < x.n_rows {
            // SAFETY: `(o + i, r)` is one of our outputs.
            unsafe { *dst.at(o + i, r) = *v };
        }
    }
}

/// Lane `j` of the result is the sum of `p[j]`'s eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce8(p: [__m256i; 8]) -> __m256i {
    let h = _mm256_hadd_epi32;
    let u0 = h(h(p[0], p[1]), h(p[2], p[3]));
    let u1 = h(h(p[4], p[5]), h(p[6], p[7]));
    // Each 128-bit half of `u0` holds rows 0..4 summed over that half, of
    // `u1` rows 4..8.
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(u0, u1),
        _mm256_permute2x128_si256::<0x31>(u0, u1),
    )
}

/// The tile's eight weight rows against activation row `r`, a block at a
/// time, one weight row per output lane after [`reduce8`].
#[target_feature(enable = "avx2,fma")]
unsafe fn small_row<const K: u8>(t: &Tile, x: &ActQ8, r: usize, o: usize, m: usize, dst: Dst) {
    let (n_in, nb, nbp) = (x.n_in, t.nb, t.nbp);
    let stride = nbp * BLOCK;
    let shift = if K == WIDE { 0 } else { t.shift };
    let xs = x.row_q(r);
    let s4 = &x.s4[r * n_in / 4..(r + 1) * n_in / 4];
    let (d, ds) = (x.row_d(r), x.row_ds(r));
    let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        // SAFETY: block `b` of the row: 32 bytes, 8 sums.
        let (xv, sums) = unsafe {
            (
                _mm256_loadu_si256(xs.as_ptr().add(b * BLOCK).cast()),
                _mm256_loadu_si256(s4.as_ptr().add(b * 8).cast()),
            )
        };
        let init = if shift == 0 {
            _mm256_setzero_si256()
        } else {
            neg_shifted(sums, shift)
        };
        let p: [__m256i; 8] = std::array::from_fn(|i| {
            // SAFETY: row `i` of the tile has `nbp * 32` bytes, `b < nbp`.
            let wv = unsafe { _mm256_loadu_si256(t.q.as_ptr().add(i * stride + b * BLOCK).cast()) };
            let prod = _mm256_add_epi32(init, dot4::<K>(wv, xv));
            if K == HALVES {
                // SAFETY: row `i` has `2 * nbp` scales; `b < nbp`.
                let s2 = unsafe { _mm_loadl_epi64(t.sc.as_ptr().add((i * nbp + b) * 2).cast()) };
                let scv = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(s2), spread);
                _mm256_mullo_epi32(prod, scv)
            } else {
                prod
            }
        });
        // SAFETY: `[block][row]` arrays hold `nbp * 8` entries; `b < nbp`.
        let (dw, mb) = unsafe {
            (
                _mm256_loadu_ps(t.dw.as_ptr().add(b * TILE_ROWS)),
                _mm256_loadu_ps(t.m_b.as_ptr().add(b * TILE_ROWS)),
            )
        };
        let s = _mm256_mul_ps(dw, _mm256_set1_ps(d[b]));
        acc = block::<K>(
            acc,
            _mm256_cvtepi32_ps(reduce8(p)),
            s,
            mb,
            _mm256_set1_ps(ds[b]),
        );
    }
    let mut out = [0.0f32; TILE_ROWS];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    for (i, v) in out.iter().enumerate().take(m) {
        // SAFETY: `(o + i, r)` is one of our outputs.
        unsafe { *dst.at(o + i, r) = *v };
    }
}
