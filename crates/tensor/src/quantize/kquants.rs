//! Q4_K, Q5_K, Q6_K: Smelt's own quantizers for the K-quant super-blocks
//! (gguf-py has none). Layouts are in [`crate::reference`]'s kquants module.
//!
//! Two levels, both chosen to minimise the squared error of the values the
//! reference dequantizer will produce:
//!
//! 1. **Groups** (8 of 32 for Q4_K/Q5_K, 16 of 16 for Q6_K). Affine groups
//!    store `scale * q - offset` with `q` in `0..=top`, symmetric ones
//!    `scale * q` with `q` in `-32..=31`. Candidate scales around the
//!    min/max one (the range mapped onto `top ± 1` levels in tenths) each
//!    give a set of quants; a least-squares refit of (scale, offset) to those
//!    quants, then re-rounding the quants to the refit values, gives a
//!    candidate encoding whose exact error is measured; the best one wins.
//! 2. **Super-block.** The groups' scales (and offsets) become 6-bit
//!    (Q4_K/Q5_K) or signed 8-bit (Q6_K) multiples of an f16 super-scale.
//!    For each group, the nearest integer scale and its neighbours are tried
//!    with the exact f16/f32 arithmetic of the dequantizer, quants
//!    re-rounded each time, and the lowest-error choice is stored.
//!
//! With [`Search::MinMax`] both levels degrade to plain min/max scales and
//! nearest rounding: the baseline the tests require the search to beat.

use super::{BlockError, Search, argmax_abs, f16_scale};

const QK_K: usize = 256;

/// Candidate level counts tried per group: `top + STEP * k` for `k` in `-STEPS..=STEPS`.
const STEPS: i32 = 15;
const STEP: f32 = 0.2;

/// Nearest integer (ties to even) of `v`, exact for |v| < 2^22 (callers clamp
/// first): adding and removing 1.5 * 2^23 rounds in the FPU, with no libm call.
#[inline(always)]
fn nearest(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// The quant of `v` for an affine group: `clamp(round((v + offset) * inv), 0, top)`.
#[inline(always)]
fn affine_q(v: f32, offset: f32, inv: f32, top: f32) -> f32 {
    nearest(((v + offset) * inv).clamp(0.0, top))
}

/// The quant of `v` for a symmetric 6-bit group: `clamp(round(v * inv), -32, 31)`.
#[inline(always)]
fn symmetric_q(v: f32, inv: f32) -> f32 {
    nearest((v * inv).clamp(-32.0, 31.0))
}

#[inline(always)]
fn inverse(s: f32) -> f32 {
    if s == 0.0 { 0.0 } else { 1.0 / s }
}

/// Squared error of an affine group stored as `scale * q - offset`, quants re-rounded.
#[inline(always)]
fn affine_error(x: &[f32], scale: f32, offset: f32, top: f32) -> f32 {
    let inv = inverse(scale);
    x.iter()
        .map(|&v| {
            let e = scale * affine_q(v, offset, inv, top) - offset - v;
            e * e
        })
        .sum()
}

/// Squared error of a symmetric group stored as `scale * q`, quants re-rounded.
#[inline(always)]
fn symmetric_error(x: &[f32], scale: f32) -> f32 {
    let inv = inverse(scale);
    x.iter()
        .map(|&v| {
            let e = scale * symmetric_q(v, inv) - v;
            e * e
        })
        .sum()
}

/// (scale, offset), both ≥ 0, for one affine group with quants in `0..=top`.
fn fit_affine(x: &[f32], top: f32, search: Search) -> (f32, f32) {
    let (mut lo, mut hi) = (0.0f32, f32::MIN);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    // The offset is stored unsigned: the lowest level is never above 0.
    let range = hi - lo;
    if range <= 0.0 {
        return (0.0, -lo);
    }
    let naive = (range / top, -lo);
    if search == Search::MinMax {
        return naive;
    }
    let mut best = naive;
    let mut best_err = affine_error(x, naive.0, naive.1, top);
    let n = x.len() as f32;
    for k in -STEPS..=STEPS {
        let inv = (top + STEP * k as f32) / range;
        let (mut sq, mut sqq, mut sx, mut sqx) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &v in x {
            let q = affine_q(v, -lo, inv, top);
            sq += q;
            sqq += q * q;
            sx += v;
            sqx += q * v;
        }
        // Least squares for v ≈ scale * q + bias; the bias must stay ≤ 0.
        let det = n * sqq - sq * sq;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (n * sqx - sq * sx) / det;
        let mut bias = (sqq * sx - sq * sqx) / det;
        if bias > 0.0 {
            bias = 0.0;
            scale = sqx / sqq;
        }
        if scale.is_nan() || scale <= 0.0 {
            continue;
        }
        let err = affine_error(x, scale, -bias, top);
        if err < best_err {
            best = (scale, -bias);
            best_err = err;
        }
    }
    best
}

/// Signed scale for one symmetric group of 6-bit quants (`-32..=31`).
fn fit_symmetric(x: &[f32], search: Search) -> f32 {
    let m = x[argmax_abs(x)];
    if m == 0.0 {
        return 0.0;
    }
    // The extreme element maps to -32, the end of the range with room.
    let naive = m / -32.0;
    if search == Search::MinMax {
        return naive;
    }
    let mut best = naive;
    let mut best_err = symmetric_error(x, naive);
    for k in -STEPS..=STEPS {
        let inv = -(32.0 + STEP * k as f32) / m;
        let (mut sqq, mut sqx) = (0.0f32, 0.0f32);
        for &v in x {
            let q = symmetric_q(v, inv);
            sqq += q * q;
            sqx += q * v;
        }
        if sqq <= 0.0 {
            continue;
        }
        let scale = sqx / sqq;
        let err = symmetric_error(x, scale);
        if err < best_err {
            best = scale;
            best_err = err;
        }
    }
    best
}

/// `round(v / unit)` clamped to `lo..=hi`, or 0 when `unit` is 0.
#[inline(always)]
fn integer_multiple(v: f32, unit: f32, lo: f32, hi: f32) -> i32 {
    if unit == 0.0 {
        0
    } else {
        nearest((v / unit).clamp(lo, hi)) as i32
    }
}

/// Candidate integers: `center` alone, or with its neighbours within `lo..=hi`.
fn neighbours(center: i32, lo: i32, hi: i32, search: Search) -> std::ops::RangeInclusive<i32> {
    match search {
        Search::MinMax => center..=center,
        Search::Full => (center - 1).max(lo)..=(center + 1).min(hi),
    }
}

/// Quantizes a super-block of affine groups (Q4_K: `top` 15, Q5_K: 31): writes
/// d@0, dmin@2 and the packed 6-bit scales@4, returns the 256 quants.
fn quantize_affine_super_block(
    x: &[f32],
    out: &mut [u8],
    top: f32,
    search: Search,
) -> Result<[u8; QK_K], BlockError> {
    let mut fits = [(0.0f32, 0.0f32); 8];
    for (fit, g) in fits.iter_mut().zip(x.chunks_exact(32)) {
        *fit = fit_affine(g, top, search);
    }
    let max_scale = fits.iter().fold(0.0f32, |a, f| a.max(f.0));
    let max_offset = fits.iter().fold(0.0f32, |a, f| a.max(f.1));
    let blame = argmax_abs(x);
    let d = f16_scale(max_scale / 63.0, blame, "f16 scale d")?;
    let dmin = f16_scale(max_offset / 63.0, blame, "f16 minimum scale dmin")?;
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    let (d, dmin) = (d.to_f32(), dmin.to_f32());

    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    let mut q = [0u8; QK_K];
    for (j, (g, &(scale, offset))) in x.chunks_exact(32).zip(&fits).enumerate() {
        let sc0 = integer_multiple(scale, d, 0.0, 63.0);
        let mn0 = integer_multiple(offset, dmin, 0.0, 63.0);
        let mut best = (sc0, mn0);
        let mut best_err = f32::INFINITY;
        for s in neighbours(sc0, 0, 63, search) {
            for m in neighbours(mn0, 0, 63, search) {
                // The dequantizer's products: (d * sc) * q - (dmin * mn).
                let err = affine_error(g, d * s as f32, dmin * m as f32, top);
                if err < best_err {
                    best = (s, m);
                    best_err = err;
                }
            }
        }
        sc[j] = best.0 as u8;
        mn[j] = best.1 as u8;
        let (dl, ml) = (d * f32::from(sc[j]), dmin * f32::from(mn[j]));
        let inv = inverse(dl);
        for (qv, &v) in q[32 * j..32 * (j + 1)].iter_mut().zip(g) {
            *qv = affine_q(v, ml, inv, top) as u8;
        }
    }
    pack_scales_mins_6bit(&sc, &mn, &mut out[4..16]);
    Ok(q)
}

/// Packs eight 6-bit scales and mins into 12 bytes (the inverse of the
/// reference's `scales_mins_6bit`): bytes 0..4 scales 0..4, bytes 4..8 mins
/// 0..4, their top 2 bits carrying the high bits of scales/mins 4..8 whose
/// low nibbles fill bytes 8..12 (scale low, min high).
fn pack_scales_mins_6bit(sc: &[u8; 8], mn: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        out[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        out[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
    }
}

/// Writes the low 4 bits of 256 quants as a 4-bit plane (128 bytes): element
/// `64 c + 32 n + l` in nibble `n` of byte `32 c + l`.
fn pack_four_bit_plane(q: &[u8; QK_K], out: &mut [u8]) {
    for (chunk_out, chunk_q) in out.chunks_exact_mut(32).zip(q.chunks_exact(64)) {
        for (l, o) in chunk_out.iter_mut().enumerate() {
            *o = (chunk_q[l] & 0x0F) | ((chunk_q[l + 32] & 0x0F) << 4);
        }
    }
}

pub(super) fn quantize_q4_k(x: &[f32], out: &mut [u8], search: Search) -> Result<(), BlockError> {
    let q = quantize_affine_super_block(x, out, 15.0, search)?;
    pack_four_bit_plane(&q, &mut out[16..144]);
    Ok(())
}

pub(super) fn quantize_q5_k(x: &[f32], out: &mut [u8], search: Search) -> Result<(), BlockError> {
    let q = quantize_affine_super_block(x, out, 31.0, search)?;
    // Fifth bits: bit b of qh[l] belongs to element 32 b + l.
    let qh = &mut out[16..48];
    qh.fill(0);
    for (b, part) in q.chunks_exact(32).enumerate() {
        for (h, &v) in qh.iter_mut().zip(part) {
            *h |= (v >> 4) << b;
        }
    }
    pack_four_bit_plane(&q, &mut out[48..176]);
    Ok(())
}

pub(super) fn quantize_q6_k(x: &[f32], out: &mut [u8], search: Search) -> Result<(), BlockError> {
    let mut scales = [0.0f32; 16];
    for (s, g) in scales.iter_mut().zip(x.chunks_exact(16)) {
        *s = fit_symmetric(g, search);
    }
    let max_abs = scales.iter().fold(0.0f32, |a, s| a.max(s.abs()));
    let d = f16_scale(max_abs / 127.0, argmax_abs(x), "f16 scale d")?;
    out[208..210].copy_from_slice(&d.to_le_bytes());
    let d = d.to_f32();

    let mut q = [0i8; QK_K];
    for (j, (g, &scale)) in x.chunks_exact(16).zip(&scales).enumerate() {
        let sc0 = integer_multiple(scale, d, -128.0, 127.0);
        let mut best = sc0;
        let mut best_err = f32::INFINITY;
        for s in neighbours(sc0, -128, 127, search) {
            let err = symmetric_error(g, d * s as f32);
            if err < best_err {
                best = s;
                best_err = err;
            }
        }
        out[192 + j] = (best as i8) as u8;
        let inv = inverse(d * best as f32);
        for (qv, &v) in q[16 * j..16 * (j + 1)].iter_mut().zip(g) {
            *qv = symmetric_q(v, inv) as i8;
        }
    }

    // Stored unsigned (q + 32): low nibbles as a 4-bit plane per 128-element
    // half (element 128 h + 64 n + i in nibble n of ql[64 h + i]); the high
    // two bits as a 2-bit plane (element 128 h + 32 s + l in bits 2s..2s+2
    // of qh[32 h + l]).
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    qh.fill(0);
    for (h, half) in q.chunks_exact(128).enumerate() {
        for (j, &v) in half.iter().enumerate() {
            let u = (v + 32) as u8;
            let byte = &mut ql[64 * h + j % 64];
            if j < 64 {
                *byte = u & 0x0F;
            } else {
                *byte |= (u & 0x0F) << 4;
            }
            qh[32 * h + j % 32] |= (u >> 4) << (2 * (j / 32));
        }
    }
    Ok(())
}
