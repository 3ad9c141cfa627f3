//! The original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Each block holds 32 values. Scales (`d`) and minimums (`m`) are IEEE
//! halves. The packed 4-bit quants put element `j` in the low nibble of byte
//! `j` and element `j + 16` in its high nibble. Q5 formats keep each
//! element's fifth bit in a little-endian u32 `qh`: bit `i` belongs to element `i`.
//!
//! | format | layout (byte offsets)                      | value             |
//! |--------|--------------------------------------------|-------------------|
//! | Q4_0   | d@0, qs[16]@2                              | d * (q - 8)       |
//! | Q4_1   | d@0, m@2, qs[16]@4                         | d * q + m         |
//! | Q5_0   | d@0, qh@2 (u32), qs[16]@6                  | d * (q - 16)      |
//! | Q5_1   | d@0, m@2, qh@4 (u32), qs[16]@8             | d * q + m         |
//! | Q8_0   | d@0, qs[32]@2 (i8)                         | d * q             |
//!
//! The dot kernels factor the scale out of the block: `d * sum(q * x)` (and
//! `+ m * sum(x)`), which is the same sum up to rounding.

use super::{dot_f32, f16_at, sum_f32};
use crate::DType;

const QK: usize = 32;

const Q4_0_BYTES: usize = 2 + QK / 2;
const Q4_1_BYTES: usize = 2 + 2 + QK / 2;
const Q5_0_BYTES: usize = 2 + 4 + QK / 2;
const Q5_1_BYTES: usize = 2 + 2 + 4 + QK / 2;
const Q8_0_BYTES: usize = 2 + QK;

const _: () = {
    assert!(Q4_0_BYTES == DType::Q4_0.block_bytes() && DType::Q4_0.block_elems() == QK);
    assert!(Q4_1_BYTES == DType::Q4_1.block_bytes() && DType::Q4_1.block_elems() == QK);
    assert!(Q5_0_BYTES == DType::Q5_0.block_bytes() && DType::Q5_0.block_elems() == QK);
    assert!(Q5_1_BYTES == DType::Q5_1.block_bytes() && DType::Q5_1.block_elems() == QK);
    assert!(Q8_0_BYTES == DType::Q8_0.block_bytes() && DType::Q8_0.block_elems() == QK);
};

/// Unpacks 16 bytes of nibbles into the 32 unsigned 4-bit quants, in element order.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [u8; QK] {
    let mut q = [0u8; QK];
    let (lo, hi) = q.split_at_mut(QK / 2);
    for ((l, h), &byte) in lo.iter_mut().zip(hi).zip(&qs[..QK / 2]) {
        *l = byte & 0x0F;
        *h = byte >> 4;
    }
    q
}

/// Unpacks the 32 unsigned 5-bit quants: low nibbles from `qs`, fifth bits from `qh`.
#[inline(always)]
fn five_bit(qh_bytes: &[u8], qs: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([qh_bytes[0], qh_bytes[1], qh_bytes[2], qh_bytes[3]]);
    let mut q = nibbles(qs);
    for (i, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> i) & 1) as u8) << 4;
    }
    q
}

/// `d * (q - offset)` for every element.
#[inline(always)]
fn dequantize_symmetric(d: f32, q: &[u8; QK], offset: i32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(q) {
        *o = d * (i32::from(v) - offset) as f32;
    }
}

/// `d * q + m` for every element.
#[inline(always)]
fn dequantize_affine(d: f32, m: f32, q: &[u8; QK], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(q) {
        *o = d * f32::from(v) + m;
    }
}

/// `d * sum((q - offset) * x)`.
#[inline(always)]
fn dot_symmetric(d: f32, q: &[u8; QK], offset: i32, x: &[f32]) -> f32 {
    d * dot_f32(&q.map(|v| (i32::from(v) - offset) as f32), x)
}

/// `d * sum(q * x) + m * sum(x)`.
#[inline(always)]
fn dot_affine(d: f32, m: f32, q: &[u8; QK], x: &[f32]) -> f32 {
    d * dot_f32(&q.map(f32::from), x) + m * sum_f32(x)
}

pub(super) fn dequantize_q4_0(block: &[u8], out: &mut [f32]) {
    dequantize_symmetric(f16_at(block, 0), &nibbles(&block[2..]), 8, out);
}

pub(super) fn dot_q4_0(block: &[u8], x: &[f32]) -> f32 {
    dot_symmetric(f16_at(block, 0), &nibbles(&block[2..]), 8, x)
}

pub(super) fn dequantize_q4_1(block: &[u8], out: &mut [f32]) {
    dequantize_affine(
        f16_at(block, 0),
        f16_at(block, 2),
        &nibbles(&block[4..]),
        out,
    );
}

pub(super) fn dot_q4_1(block: &[u8], x: &[f32]) -> f32 {
    dot_affine(f16_at(block, 0), f16_at(block, 2), &nibbles(&block[4..]), x)
}

pub(super) fn dequantize_q5_0(block: &[u8], out: &mut [f32]) {
    dequantize_symmetric(
        f16_at(block, 0),
        &five_bit(&block[2..6], &block[6..]),
        16,
        out,
    );
}

pub(super) fn dot_q5_0(block: &[u8], x: &[f32]) -> f32 {
    dot_symmetric(
        f16_at(block, 0),
        &five_bit(&block[2..6], &block[6..]),
        16,
        x,
    )
}

pub(super) fn dequantize_q5_1(block: &[u8], out: &mut [f32]) {
    let q = five_bit(&block[4..8], &block[8..]);
    dequantize_affine(f16_at(block, 0), f16_at(block, 2), &q, out);
}

pub(super) fn dot_q5_1(block: &[u8], x: &[f32]) -> f32 {
    let q = five_bit(&block[4..8], &block[8..]);
    dot_affine(f16_at(block, 0), f16_at(block, 2), &q, x)
}

/// The 32 signed 8-bit quants of Q8_0, as f32.
#[inline(always)]
fn quants_q8(qs: &[u8]) -> [f32; QK] {
    std::array::from_fn(|i| f32::from(qs[i] as i8))
}

pub(super) fn dequantize_q8_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    for (o, &b) in out.iter_mut().zip(&block[2..]) {
        *o = d * f32::from(b as i8);
    }
}

pub(super) fn dot_q8_0(block: &[u8], x: &[f32]) -> f32 {
    f16_at(block, 0) * dot_f32(&quants_q8(&block[2..]), x)
}
