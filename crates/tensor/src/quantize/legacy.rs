//! Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the 32-element block formats, quantized
//! exactly as gguf-py 0.19.0 (and ggml's reference quantizers) do.
//!
//! All arithmetic is f32, in gguf-py's order and without fused
//! multiply-adds, so every rounding matches: the scale `d` used to compute
//! the quants is the f32 value; only the stored copy is rounded to f16.
//! Layouts are in [`crate::reference`]'s legacy module.

use super::{BlockError, argmax_abs, f16_scale};

const QK: usize = 32;

/// `1 / d`, or 0 for a zero scale (an all-zero block).
#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// Index of the first minimum and the first maximum of a block.
#[inline(always)]
fn min_max(x: &[f32]) -> (usize, usize) {
    let (mut lo, mut hi) = (0, 0);
    for (i, &v) in x.iter().enumerate() {
        if v < x[lo] {
            lo = i;
        }
        if v > x[hi] {
            hi = i;
        }
    }
    (lo, hi)
}

/// Packs 32 quants below 16 (or their low nibbles) two per byte: element `j`
/// in the low nibble of byte `j`, element `j + 16` in its high nibble.
#[inline(always)]
fn pack_nibbles(q: &[u8; QK], out: &mut [u8]) {
    for (j, o) in out[..QK / 2].iter_mut().enumerate() {
        *o = (q[j] & 0x0F) | (q[j + QK / 2] << 4);
    }
}

/// The fifth bits of 32 quants as the little-endian u32 `qh` (bit `i` = element `i`).
#[inline(always)]
fn fifth_bits(q: &[u8; QK]) -> [u8; 4] {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &v)| acc | (u32::from(v >> 4) << i));
    qh.to_le_bytes()
}

/// Symmetric 4-/5-bit quants: `min(top, trunc(x * id + offset + 0.5))`.
#[inline(always)]
fn symmetric_quants(x: &[f32], id: f32, offset: f32, top: u8) -> [u8; QK] {
    let half_up = offset + 0.5;
    // `as u8` saturates; x * id + half_up is never below 0 (|x * id| <= offset + tiny).
    std::array::from_fn(|i| ((x[i] * id + half_up).trunc() as u8).min(top))
}

/// Affine 4-/5-bit quants: `min(top, trunc((x - min) * id + 0.5))`.
#[inline(always)]
fn affine_quants(x: &[f32], min: f32, id: f32, top: u8) -> [u8; QK] {
    std::array::from_fn(|i| (((x[i] - min) * id + 0.5).trunc() as u8).min(top))
}

/// Q8_0: d = max|x| / 127, q = x / d rounded half away from zero.
pub(super) fn quantize_q8_0(x: &[f32], out: &mut [u8]) -> Result<(), BlockError> {
    let imax = argmax_abs(x);
    let d = x[imax].abs() / 127.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16_scale(d, imax, "f16 scale d")?.to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        // f32::round is half away from zero, as gguf-py's np_roundf.
        *o = ((v * id).round() as i8) as u8;
    }
    Ok(())
}

/// Q4_0: d = m / -8 for the element m of largest magnitude, q = x / d + 8.
pub(super) fn quantize_q4_0(x: &[f32], out: &mut [u8]) -> Result<(), BlockError> {
    let imax = argmax_abs(x);
    let d = x[imax] / -8.0;
    out[..2].copy_from_slice(&f16_scale(d, imax, "f16 scale d")?.to_le_bytes());
    let q = symmetric_quants(x, inverse(d), 8.0, 15);
    pack_nibbles(&q, &mut out[2..]);
    Ok(())
}

/// Q5_0: d = m / -16 for the element m of largest magnitude, q = x / d + 16.
pub(super) fn quantize_q5_0(x: &[f32], out: &mut [u8]) -> Result<(), BlockError> {
    let imax = argmax_abs(x);
    let d = x[imax] / -16.0;
    out[..2].copy_from_slice(&f16_scale(d, imax, "f16 scale d")?.to_le_bytes());
    let q = symmetric_quants(x, inverse(d), 16.0, 31);
    out[2..6].copy_from_slice(&fifth_bits(&q));
    pack_nibbles(&q, &mut out[6..]);
    Ok(())
}

/// Q4_1 and Q5_1: d = (max - min) / top, m = min, q = (x - min) / d.
fn quantize_affine(x: &[f32], out: &mut [u8], top: u8) -> Result<[u8; QK], BlockError> {
    let (lo, hi) = min_max(x);
    let (min, max) = (x[lo], x[hi]);
    let d = (max - min) / f32::from(top);
    let blame = if max.abs() >= min.abs() { hi } else { lo };
    out[..2].copy_from_slice(&f16_scale(d, blame, "f16 scale d")?.to_le_bytes());
    out[2..4].copy_from_slice(&f16_scale(min, lo, "f16 minimum m")?.to_le_bytes());
    Ok(affine_quants(x, min, inverse(d), top))
}

pub(super) fn quantize_q4_1(x: &[f32], out: &mut [u8]) -> Result<(), BlockError> {
    let q = quantize_affine(x, out, 15)?;
    pack_nibbles(&q, &mut out[4..]);
    Ok(())
}

pub(super) fn quantize_q5_1(x: &[f32], out: &mut [u8]) -> Result<(), BlockError> {
    let q = quantize_affine(x, out, 31)?;
    out[4..8].copy_from_slice(&fifth_bits(&q));
    pack_nibbles(&q, &mut out[8..]);
    Ok(())
}
