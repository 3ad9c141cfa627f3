//! Q8 kernels with AVX-512 VNNI (`vpdpbusd`: four unsigned activation bytes
//! times four signed weight bytes summed into each i32 lane, exactly).
//!
//! The integers are exact and the f32 chain of each output is the contract's
//! (see `kernels::q8`): lane arithmetic only ever holds different outputs.

use std::arch::x86_64::*;

use smelt_tensor::DType;

use super::q8_avx2::block;
use crate::kernels::Dst;
use crate::kernels::q8::unpack::Tile;
use crate::kernels::q8::{ActQ8, BLOCK, Kind, LANES, TILE_ROWS};

/// Runs `m` weight rows (outputs `o..o + m`; `raw` their stored bytes, `t`
/// their unpacked multipliers, and bytes when any row lanes are used)
/// against every activation row.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2 and FMA must be present; `dst` must be valid
/// and exclusive for outputs `(o..o + m, 0..x.n_rows)`.
#[allow(clippy::too_many_arguments)]
pub(in crate::kernels) unsafe fn tile(
    dtype: DType,
    kind: Kind,
    t: &Tile,
    raw: &[u8],
    x: &ActQ8,
    o: usize,
    m: usize,
    dst: Dst,
) {
    debug_assert_eq!(kind, Kind::of(dtype));
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match dtype {
            DType::Q4_0 => tile_k::<PLAIN, F_Q4_0>(t, raw, x, o, m, dst),
            DType::Q4_1 => tile_k::<MIN, F_Q4_1>(t, raw, x, o, m, dst),
            DType::Q5_0 => tile_k::<PLAIN, F_Q5_0>(t, raw, x, o, m, dst),
            DType::Q8_0 => tile_k::<WIDE, F_Q8_0>(t, raw, x, o, m, dst),
            DType::Q4K => tile_k::<MIN, F_Q4K>(t, raw, x, o, m, dst),
            DType::Q6K => tile_k::<HALVES, F_Q6K>(t, raw, x, o, m, dst),
            other => panic!("q8: no integer path for {other}"),
        }
    }
}

const PLAIN: u8 = 0;
const MIN: u8 = 1;
const HALVES: u8 = 2;
const WIDE: u8 = 3;

const F_Q4_0: u8 = 0;
const F_Q4_1: u8 = 1;
const F_Q5_0: u8 = 2;
const F_Q8_0: u8 = 3;
const F_Q4K: u8 = 4;
const F_Q6K: u8 = 5;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn tile_k<const K: u8, const F: u8>(
    t: &Tile,
    raw: &[u8],
    x: &ActQ8,
    o: usize,
    m: usize,
    dst: Dst,
) {
    let lane_rows = (x.lane_groups * LANES).min(x.n_rows);
    for g in 0..x.lane_groups {
        let mut i = 0;
        // SAFETY (each call): the caller's contract; `g < lane_groups`, and
        // the rows `i..i + R` are below `m`.
        while i + 4 <= m {
            unsafe { lanes_rows::<K, 4>(t, x, g, i, o, dst) };
            i += 4;
        }
        match m - i {
            3 => unsafe { lanes_rows::<K, 3>(t, x, g, i, o, dst) },
            2 => unsafe { lanes_rows::<K, 2>(t, x, g, i, o, dst) },
            1 => unsafe { lanes_rows::<K, 1>(t, x, g, i, o, dst) },
            _ => {}
        }
    }
    let row_bytes = raw.len() / m.max(1);
    let mut r = lane_rows;
    // SAFETY (each call): as above; rows `r..r + R` are below `n_rows`, and
    // `raw` holds `m` rows.
    while r + 4 <= x.n_rows {
        unsafe { small_rows::<K, F, 4>(t, raw, row_bytes, x, r, o, m, dst) };
        r += 4;
    }
    match x.n_rows - r {
        3 => unsafe { small_rows::<K, F, 3>(t, raw, row_bytes, x, r, o, m, dst) },
        2 => unsafe { small_rows::<K, F, 2>(t, raw, row_bytes, x, r, o, m, dst) },
        1 => unsafe { small_rows::<K, F, 1>(t, raw, row_bytes, x, r, o, m, dst) },
        _ => {}
    }
}

/// Blocks `b` and `b + 1` (only `b` when `!two`: the high half is then
/// zero) of the stored row at `row`, as the tile's bytes.
///
/// # Safety
/// `row` must point at a whole stored row of format `F` with block `b` (and
/// `b + 1` when `two`) in it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn decode_pair<const F: u8>(row: *const u8, b: usize, two: bool) -> __m512i {
    let low = _mm512_set1_epi8(0x0F);
    // 16-bit shift counts: 4 in the second and fourth 128-bit lanes.
    let odd4 = _mm512_setr_epi64(
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
    );
    // SAFETY (all reads): inside blocks `b` (and `b + 1` when `two`) of the
    // row, by the formats' layouts (crates/tensor).
    unsafe {
        // Two 16-byte nibble arrays at `off` in blocks of `bb` bytes.
        let nibble_pair = |bb: usize, off: usize| {
            let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(row.add(b * bb + off).cast()));
            let hi = if two {
                _mm256_broadcastsi128_si256(_mm_loadu_si128(row.add((b + 1) * bb + off).cast()))
            } else {
                _mm256_setzero_si256()
            };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            _mm512_and_si512(_mm512_srlv_epi16(z, odd4), low)
        };
        match F {
            F_Q4_0 => nibble_pair(18, 2),
            F_Q4_1 => nibble_pair(20, 4),
            F_Q5_0 => {
                let qh0 = row.add(b * 22 + 2).cast::<u32>().read_unaligned();
                let qh1 = if two {
                    row.add((b + 1) * 22 + 2).cast::<u32>().read_unaligned()
                } else {
                    0
                };
                let mask = u64::from(qh0) | (u64::from(qh1) << 32);
                _mm512_or_si512(
                    nibble_pair(22, 6),
                    _mm512_maskz_mov_epi8(mask, _mm512_set1_epi8(0x10)),
                )
            }
            F_Q8_0 => {
                let lo = _mm256_loadu_si256(row.add(b * 34 + 2).cast());
                let hi = if two {
                    _mm256_loadu_si256(row.add((b + 1) * 34 + 2).cast())
                } else {
                    _mm256_setzero_si256()
                };
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            }
            F_Q4K => {
                // Blocks 2c and 2c + 1 of a super-block: the low and high
                // nibbles of the same 32 bytes (`b` is even).
                let blk = row.add((b / 8) * 144);
                let y = _mm256_loadu_si256(blk.add(16 + 32 * ((b % 8) / 2)).cast());
                let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y), y);
                let hi4 = _mm512_setr_epi64(
                    0,
                    0,
                    0,
                    0,
                    0x0004_0004_0004_0004,
                    0x0004_0004_0004_0004,
                    0x0004_0004_0004_0004,
                    0x0004_0004_0004_0004,
                );
                _mm512_and_si512(_mm512_srlv_epi16(z, hi4), low)
            }
            _ => {
                // Q6_K: blocks j, j + 1 (j even) of half h: quarters q, q + 1
                // with q in {0, 2}: low nibbles (q = 0) or high ones (q = 2)
                // of ql[64 h..64 h + 64]; high bits at 2 q and 2 q + 2 of
                // qh[32 h..32 h + 32].
                let blk = row.add((b / 8) * 210);
                let j = b % 8;
                let (h, q) = (j / 4, j % 4);
                let ql = _mm512_loadu_si512(blk.add(64 * h).cast());
                let lowq =
                    _mm512_and_si512(_mm512_srl_epi16(ql, _mm_cvtsi32_si128(2 * q as i32)), low);
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * h).cast());
                let h0 = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * q as i32));
                let h1 = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * q as i32 + 2));
                let hz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h0), h1);
                let high = _mm512_slli_epi16::<4>(_mm512_and_si512(hz, _mm512_set1_epi8(3)));
                _mm512_or_si512(lowq, high)
            }
        }
    }
}

/// `-(s << shift)` per lane (0 for `shift == 0`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn neg_shifted(s: __m512i, shift: u32) -> __m512i {
    _mm512_sub_epi32(
        _mm512_setzero_si512(),
        _mm512_sll_epi32(s, _mm_cvtsi32_si128(shift as i32)),
    )
}

/// The offset of the tile's bytes as a shift, and the bytes to flip to
/// make them unsigned (Q8_0: `q + 128`).
fn offset(t: &Tile, k: u8) -> (u32, i32) {
    if k == WIDE {
        (7, i32::from_ne_bytes([0x80; 4]))
    } else {
        (t.shift, 0)
    }
}

/// Weight rows `i0..i0 + R` of the tile against the sixteen activation
/// rows of group `g`, one activation row per lane; the `R` weight rows share
/// each activation load and keep `R` independent f32 chains in flight.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn lanes_rows<const K: u8, const R: usize>(
    t: &Tile,
    x: &ActQ8,
    g: usize,
    i0: usize,
    o: usize,
    dst: Dst,
) {
    let nb = t.nb;
    let stride = t.nbp * BLOCK;
    let (shift, _) = offset(t, K);
    let flip = _mm512_set1_epi8(-128);
    let xt = &x.xt[g * nb * BLOCK * LANES..(g + 1) * nb * BLOCK * LANES];
    let st = &x.st[g * nb * 2 * LANES..(g + 1) * nb * 2 * LANES];
    let (dt, dst_s) = (
        &x.dt[g * nb * LANES..(g + 1) * nb * LANES],
        &x.dst[g * nb * LANES..(g + 1) * nb * LANES],
    );
    assert!(i0 + R <= TILE_ROWS && t.q.len() >= TILE_ROWS * stride);
    let q = t.q.as_ptr();
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let xb = &xt[b * BLOCK * LANES..(b + 1) * BLOCK * LANES];
        let z = _mm512_setzero_si512();
        let (lo0, hi0) = if shift == 0 {
            (z, z)
        } else {
            // SAFETY: two half sums of 16 lanes per block.
            unsafe {
                (
                    neg_shifted(
                        _mm512_loadu_si512(st.as_ptr().add(b * 2 * LANES).cast()),
                        shift,
                    ),
                    neg_shifted(
                        _mm512_loadu_si512(st.as_ptr().add((b * 2 + 1) * LANES).cast()),
                        shift,
                    ),
                )
            }
        };
        // Integer chains per weight row, k / 4 even and odd: Q6_K keeps its
        // two halves apart (four chains, each half scaled on its own); the
        // other formats sum the whole block, so two chains carry it
        // (integer sums: any grouping gives the same value) and save the
        // adds that would join four.
        let mut ints = if K == HALVES {
            [[lo0, z, hi0, z]; R]
        } else {
            [[_mm512_add_epi32(lo0, hi0), z, z, z]; R]
        };
        for k4 in 0..BLOCK / 4 {
            // SAFETY: `xb` holds 8 × 64 bytes.
            let xv = unsafe { _mm512_loadu_si512(xb.as_ptr().add(64 * k4).cast()) };
            for (r, int) in ints.iter_mut().enumerate() {
                // SAFETY: row `i0 + r < TILE_ROWS` (asserted) holds `nbp *
                // 32` bytes; group `k4` of block `b < nb` is inside it.
                let wv = unsafe {
                    let p = q.add((i0 + r) * stride + b * BLOCK + 4 * k4);
                    _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
                };
                let wv = if K == WIDE {
                    _mm512_xor_si512(wv, flip)
                } else {
                    wv
                };
                let c = if K == HALVES {
                    (k4 / 4) * 2 + k4 % 2
                } else {
                    k4 % 2
                };
                int[c] = _mm512_dpbusd_epi32(int[c], wv, xv);
            }
        }
        // SAFETY: `dt`/`dst_s` hold 16 values per block.
        let (dx, ds) = unsafe {
            (
                _mm512_loadu_ps(dt.as_ptr().add(b * LANES)),
                _mm512_loadu_ps(dst_s.as_ptr().add(b * LANES)),
            )
        };
        for (r, (acc, int)) in acc.iter_mut().zip(&ints).enumerate() {
            let i = i0 + r;
            let int = if K == HALVES {
                let (lo, hi) = (
                    _mm512_add_epi32(int[0], int[1]),
                    _mm512_add_epi32(int[2], int[3]),
                );
                let sc = &t.sc[(i * t.nbp + b) * 2..(i * t.nbp + b) * 2 + 2];
                let lo = _mm512_mullo_epi32(lo, _mm512_set1_epi32(sc[0]));
                let hi = _mm512_mullo_epi32(hi, _mm512_set1_epi32(sc[1]));
                _mm512_add_epi32(lo, hi)
            } else {
                _mm512_add_epi32(int[0], int[1])
            };
            let s = _mm512_mul_ps(_mm512_set1_ps(t.dw[b * TILE_ROWS + i]), dx);
            let fi = _mm512_cvtepi32_ps(int);
            *acc = if K == MIN {
                let m = _mm512_set1_ps(t.m_b[b * TILE_ROWS + i]);
                _mm512_add_ps(*acc, _mm512_fmadd_ps(m, ds, _mm512_mul_ps(fi, s)))
            } else {
                _mm512_fmadd_ps(fi, s, *acc)
            };
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let mut out = [0.0f32; LANES];
        // SAFETY: `out` holds 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *acc) };
        for (lane, v) in out.iter().enumerate() {
            let row = g * LANES + lane;
            if row < x.n_rows {
                // SAFETY: `(o + i0 + r, row)` is one of our outputs.
                unsafe { *dst.at(o + i0 + r, row) = *v };
            }
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

/// The tile's eight weight rows against activation rows `r0..r0 + R`, a
/// block pair at a time (row `i`'s blocks `b, b + 1` in one vector, decoded
/// once for the `R` rows), one weight row per output lane after [`reduce8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn small_rows<const K: u8, const F: u8, const R: usize>(
    t: &Tile,
    raw: &[u8],
    row_bytes: usize,
    x: &ActQ8,
    r0: usize,
    o: usize,
    m: usize,
    dst: Dst,
) {
    let (n_in, nb, nbp) = (x.n_in, t.nb, t.nbp);
    assert!(m >= 1 && raw.len() >= m * row_bytes && r0 + R <= x.n_rows);
    let (shift, flip) = offset(t, K);
    let flip = _mm512_set1_epi32(flip);
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut b = 0;
    while b < nb {
        let two = b + 1 < nb;
        let w: [__m512i; 8] = std::array::from_fn(|i| {
            // Rows past `m` decode row 0 again (their outputs are dropped).
            let row = if i < m { i } else { 0 };
            // SAFETY: stored row `row < m` of `raw` holds blocks `b` and,
            // when `two`, `b + 1`.
            let wv = unsafe { decode_pair::<F>(raw.as_ptr().add(row * row_bytes), b, two) };
            _mm512_xor_si512(wv, flip)
        });
        let scv: [__m512i; 8] = std::array::from_fn(|i| {
            if K == HALVES {
                // SAFETY: row `i` has `2 * nbp` scales; `b + 1 < nbp`.
                let s4 = unsafe { _mm_loadu_si128(t.sc.as_ptr().add((i * nbp + b) * 2).cast()) };
                _mm512_permutexvar_epi32(spread, _mm512_castsi128_si512(s4))
            } else {
                _mm512_setzero_si512()
            }
        });
        // SAFETY: `[block][row]` arrays hold `nbp * 8` entries; `b + 1 < nbp`.
        let (dw, dw1, mb, mb1) = unsafe {
            (
                _mm256_loadu_ps(t.dw.as_ptr().add(b * TILE_ROWS)),
                _mm256_loadu_ps(t.dw.as_ptr().add((b + 1) * TILE_ROWS)),
                _mm256_loadu_ps(t.m_b.as_ptr().add(b * TILE_ROWS)),
                _mm256_loadu_ps(t.m_b.as_ptr().add((b + 1) * TILE_ROWS)),
            )
        };
        for (rr, acc) in acc.iter_mut().enumerate() {
            let r = r0 + rr;
            let xs = &x.xs[r * n_in..(r + 1) * n_in];
            let s4 = &x.s4[r * n_in / 4..(r + 1) * n_in / 4];
            let (d, ds) = (x.row_d(r), x.row_ds(r));
            // SAFETY: 64 bytes (16 sums) of blocks `b, b + 1`, or 32 (8) of
            // the last block.
            let (xv, sums) = unsafe {
                if two {
                    (
                        _mm512_loadu_si512(xs.as_ptr().add(b * BLOCK).cast()),
                        _mm512_loadu_si512(s4.as_ptr().add(b * 8).cast()),
                    )
                } else {
                    (
                        _mm512_zextsi256_si512(_mm256_loadu_si256(
                            xs.as_ptr().add(b * BLOCK).cast(),
                        )),
                        _mm512_zextsi256_si512(_mm256_loadu_si256(s4.as_ptr().add(b * 8).cast())),
                    )
                }
            };
            let init = if shift == 0 {
                _mm512_setzero_si512()
            } else {
                neg_shifted(sums, shift)
            };
            let p: [__m512i; 8] = std::array::from_fn(|i| {
                let prod = _mm512_dpbusd_epi32(init, w[i], xv);
                if K == HALVES {
                    _mm512_mullo_epi32(prod, scv[i])
                } else {
                    prod
                }
            });
            let f = _mm512_cvtepi32_ps(reduce8(p));
            let s = _mm256_mul_ps(dw, _mm256_set1_ps(d[b]));
            *acc = block::<K>(
                *acc,
                _mm512_castps512_ps256(f),
                s,
                mb,
                _mm256_set1_ps(ds[b]),
            );
            if two {
                let s = _mm256_mul_ps(dw1, _mm256_set1_ps(d[b + 1]));
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f)));
                *acc = block::<K>(*acc, hi, s, mb1, _mm256_set1_ps(ds[b + 1]));
            }
        }
        b += 2;
    }
    for (rr, acc) in acc.iter().enumerate() {
        let mut out = [0.0f32; TILE_ROWS];
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), *acc) };
        for (i, v) in out.iter().enumerate().take(m) {
            // SAFETY: `(o + i, r0 + rr)` is one of our outputs.
            unsafe { *dst.at(o + i, r0 + rr) = *v };
        }
    }
}
