//! The "K-quant" super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.
//!
//! Each super-block holds `QK_K` = 256 values, split into groups (16 groups of
//! 16 or 8 groups of 32) that each have a small integer scale (and, for the
//! affine formats, a small integer minimum), themselves scaled by the block's
//! f16 `d` (and `dmin`). Per group the value is
//!
//! * affine (Q2_K, Q4_K, Q5_K): `(d * sc) * q - (dmin * m)`, with unsigned `q`;
//! * symmetric (Q3_K, Q6_K, Q8_K): `(d * sc) * q`, with signed `q`.
//!
//! (Products are rounded to f32 in that order, as ggml and gguf-py do.)
//!
//! Bit packing shared by several formats: a "2-bit plane" byte array `qs`
//! stores element `128 h + 32 s + l` (half `h`, shift `s` in 0..4, `l` in
//! 0..32) in bits `2s..2s+2` of `qs[32 h + l]`; a "high-bit" array `hm[32]`
//! stores a bit of element `32 b + l` in bit `b` of `hm[l]`; a 4-bit plane
//! stores element `64 c + 32 n + l` in nibble `n` of `qs[32 c + l]`.

use super::{dot_f32, f16_at, sum_f32};
use crate::DType;

const QK_K: usize = 256;

/// Q2_K: scales[16]@0 (low nibble: scale, high nibble: min), qs[64]@16 (2-bit
/// plane), d@80, dmin@82. 16 groups of 16.
const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;
/// Q3_K: hmask[32]@0 (high bits), qs[64]@32 (2-bit plane), scales[12]@96
/// (sixteen 6-bit scales), d@108. 16 groups of 16; `q = low2 - 4` when the high bit is clear.
const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
/// Q4_K: d@0, dmin@2, scales[12]@4 (eight 6-bit scales and mins), qs[128]@16
/// (4-bit plane). 8 groups of 32.
const Q4_K_BYTES: usize = 2 + 2 + 12 + QK_K / 2;
/// Q5_K: d@0, dmin@2, scales[12]@4 (as Q4_K), qh[32]@16 (fifth bits),
/// qs[128]@48 (4-bit plane). 8 groups of 32.
const Q5_K_BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
/// Q6_K: ql[128]@0 (low 4 bits), qh[64]@128 (2-bit plane, high 2 bits),
/// scales[16]@192 (i8), d@208. 16 groups of 16; `q = (low | high << 4) - 32`.
const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
/// Q8_K: d@0 (f32), qs[256]@4 (i8), bsums[16]@260 (i16 sums of each 16 quants,
/// only a shortcut for dot kernels: not needed to dequantize).
const Q8_K_BYTES: usize = 4 + QK_K + 2 * QK_K / 16;

const _: () = {
    assert!(Q2_K_BYTES == DType::Q2K.block_bytes() && DType::Q2K.block_elems() == QK_K);
    assert!(Q3_K_BYTES == DType::Q3K.block_bytes() && DType::Q3K.block_elems() == QK_K);
    assert!(Q4_K_BYTES == DType::Q4K.block_bytes() && DType::Q4K.block_elems() == QK_K);
    assert!(Q5_K_BYTES == DType::Q5K.block_bytes() && DType::Q5K.block_elems() == QK_K);
    assert!(Q6_K_BYTES == DType::Q6K.block_bytes() && DType::Q6K.block_elems() == QK_K);
    assert!(Q8_K_BYTES == DType::Q8K.block_bytes() && DType::Q8K.block_elems() == QK_K);
};

// ---- bit planes -------------------------------------------------------------

/// Unpacks a 2-bit plane (`QK_K / 4` bytes) into 256 values in 0..4.
#[inline(always)]
fn two_bit_plane(qs: &[u8]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (half_q, half_qs) in q.chunks_exact_mut(128).zip(qs.chunks_exact(32)) {
        for (s, part) in half_q.chunks_exact_mut(32).enumerate() {
            for (v, &byte) in part.iter_mut().zip(half_qs) {
                *v = (byte >> (2 * s)) & 3;
            }
        }
    }
    q
}

/// Unpacks a 4-bit plane (`QK_K / 2` bytes) into 256 values in 0..16.
#[inline(always)]
fn four_bit_plane(qs: &[u8]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (chunk_q, chunk_qs) in q.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
        let (lo, hi) = chunk_q.split_at_mut(32);
        for ((l, h), &byte) in lo.iter_mut().zip(hi).zip(chunk_qs) {
            *l = byte & 0x0F;
            *h = byte >> 4;
        }
    }
    q
}

/// Bit of element `i` in a high-bit array (`QK_K / 8` bytes), for all 256 elements.
#[inline(always)]
fn high_bits(hm: &[u8]) -> [u8; QK_K] {
    let mut bits = [0u8; QK_K];
    for (b, part) in bits.chunks_exact_mut(32).enumerate() {
        for (v, &byte) in part.iter_mut().zip(hm) {
            *v = (byte >> b) & 1;
        }
    }
    bits
}

/// The eight 6-bit (scale, min) pairs of Q4_K/Q5_K, packed in 12 bytes:
/// bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4; the
/// top 2 bits of those bytes are the high bits of scales/mins 4..8, whose low
/// 4 bits are the nibbles of bytes 8..12 (scale low, min high).
#[inline(always)]
fn scales_mins_6bit(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// The sixteen 6-bit scales of Q3_K (unsigned, before the -32 offset), packed
/// in 12 bytes: low nibbles of scales 0..8 and high nibbles (scales 8..16) in
/// bytes 0..8; their top 2 bits in bytes 8..12, two bits per scale, scale `i`
/// at bits `2 (i / 4)` of byte `8 + i % 4`.
#[inline(always)]
fn scales_q3_k(s: &[u8]) -> [u8; 16] {
    let mut sc = [0u8; 16];
    for (i, v) in sc.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *v = low | (high << 4);
    }
    sc
}

// ---- group kernels ------------------------------------------------------------

/// Affine groups: `out = dl[g] * q - ml[g]`, group size `QK_K / dl.len()`.
#[inline(always)]
fn dequantize_affine(q: &[u8; QK_K], dl: &[f32], ml: &[f32], out: &mut [f32]) {
    let group = QK_K / dl.len();
    for (((out_g, q_g), &dl), &ml) in out
        .chunks_exact_mut(group)
        .zip(q.chunks_exact(group))
        .zip(dl)
        .zip(ml)
    {
        for (o, &v) in out_g.iter_mut().zip(q_g) {
            *o = dl * f32::from(v) - ml;
        }
    }
}

/// Affine groups: `sum_g dl[g] * sum(q * x) - ml[g] * sum(x)`.
#[inline(always)]
fn dot_affine(q: &[u8; QK_K], dl: &[f32], ml: &[f32], x: &[f32]) -> f32 {
    let group = QK_K / dl.len();
    let q = q.map(f32::from);
    let groups = x.chunks_exact(group).zip(q.chunks_exact(group));
    let mut total = 0.0f32;
    for ((x_g, q_g), (&dl, &ml)) in groups.zip(dl.iter().zip(ml)) {
        total += dl * dot_f32(q_g, x_g) - ml * sum_f32(x_g);
    }
    total
}

/// Symmetric groups: `out = dl[g] * q`, group size `QK_K / dl.len()`.
#[inline(always)]
fn dequantize_symmetric(q: &[i8; QK_K], dl: &[f32], out: &mut [f32]) {
    let group = QK_K / dl.len();
    for ((out_g, q_g), &dl) in out
        .chunks_exact_mut(group)
        .zip(q.chunks_exact(group))
        .zip(dl)
    {
        for (o, &v) in out_g.iter_mut().zip(q_g) {
            *o = dl * f32::from(v);
        }
    }
}

/// Symmetric groups: `sum_g dl[g] * sum(q * x)`.
#[inline(always)]
fn dot_symmetric(q: &[i8; QK_K], dl: &[f32], x: &[f32]) -> f32 {
    let group = QK_K / dl.len();
    let q = q.map(f32::from);
    let groups = x.chunks_exact(group).zip(q.chunks_exact(group));
    let mut total = 0.0f32;
    for ((x_g, q_g), &dl) in groups.zip(dl) {
        total += dl * dot_f32(q_g, x_g);
    }
    total
}

// ---- formats ------------------------------------------------------------------

/// Q2_K quants and per-group (scale, min) multipliers.
#[inline(always)]
fn unpack_q2_k(block: &[u8]) -> ([u8; QK_K], [f32; 16], [f32; 16]) {
    let (d, dmin) = (f16_at(block, 80), f16_at(block, 82));
    let (mut dl, mut ml) = ([0.0f32; 16], [0.0f32; 16]);
    for ((dl, ml), &sm) in dl.iter_mut().zip(&mut ml).zip(&block[..16]) {
        *dl = d * f32::from(sm & 0x0F);
        *ml = dmin * f32::from(sm >> 4);
    }
    (two_bit_plane(&block[16..80]), dl, ml)
}

pub(super) fn dequantize_q2_k(block: &[u8], out: &mut [f32]) {
    let (q, dl, ml) = unpack_q2_k(block);
    dequantize_affine(&q, &dl, &ml, out);
}

pub(super) fn dot_q2_k(block: &[u8], x: &[f32]) -> f32 {
    let (q, dl, ml) = unpack_q2_k(block);
    dot_affine(&q, &dl, &ml, x)
}

/// Q3_K signed quants (-4..4) and per-group multipliers.
#[inline(always)]
fn unpack_q3_k(block: &[u8]) -> ([i8; QK_K], [f32; 16]) {
    let d = f16_at(block, 108);
    let mut dl = [0.0f32; 16];
    for (dl, &sc) in dl.iter_mut().zip(&scales_q3_k(&block[96..108])) {
        *dl = d * f32::from(sc as i8 - 32);
    }
    let low = two_bit_plane(&block[32..96]);
    let high = high_bits(&block[..32]);
    let mut q = [0i8; QK_K];
    for ((v, &l), &h) in q.iter_mut().zip(&low).zip(&high) {
        // A clear high bit means "subtract 4"; a set one means no offset.
        *v = l as i8 - if h == 0 { 4 } else { 0 };
    }
    (q, dl)
}

pub(super) fn dequantize_q3_k(block: &[u8], out: &mut [f32]) {
    let (q, dl) = unpack_q3_k(block);
    dequantize_symmetric(&q, &dl, out);
}

pub(super) fn dot_q3_k(block: &[u8], x: &[f32]) -> f32 {
    let (q, dl) = unpack_q3_k(block);
    dot_symmetric(&q, &dl, x)
}

/// Per-group (scale, min) multipliers of Q4_K and Q5_K.
#[inline(always)]
fn multipliers_q4_q5_k(block: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (sc, mn) = scales_mins_6bit(&block[4..16]);
    (
        sc.map(|s| d * f32::from(s)),
        mn.map(|m| dmin * f32::from(m)),
    )
}

pub(super) fn dequantize_q4_k(block: &[u8], out: &mut [f32]) {
    let (dl, ml) = multipliers_q4_q5_k(block);
    dequantize_affine(&four_bit_plane(&block[16..]), &dl, &ml, out);
}

pub(super) fn dot_q4_k(block: &[u8], x: &[f32]) -> f32 {
    let (dl, ml) = multipliers_q4_q5_k(block);
    dot_affine(&four_bit_plane(&block[16..]), &dl, &ml, x)
}

/// Q5_K unsigned quants (0..32).
#[inline(always)]
fn quants_q5_k(block: &[u8]) -> [u8; QK_K] {
    let mut q = four_bit_plane(&block[48..]);
    for (v, &h) in q.iter_mut().zip(&high_bits(&block[16..48])) {
        *v |= h << 4;
    }
    q
}

pub(super) fn dequantize_q5_k(block: &[u8], out: &mut [f32]) {
    let (dl, ml) = multipliers_q4_q5_k(block);
    dequantize_affine(&quants_q5_k(block), &dl, &ml, out);
}

pub(super) fn dot_q5_k(block: &[u8], x: &[f32]) -> f32 {
    let (dl, ml) = multipliers_q4_q5_k(block);
    dot_affine(&quants_q5_k(block), &dl, &ml, x)
}

/// Q6_K signed quants (-32..32) and per-group multipliers.
#[inline(always)]
fn unpack_q6_k(block: &[u8]) -> ([i8; QK_K], [f32; 16]) {
    let d = f16_at(block, 208);
    let dl = std::array::from_fn(|g| d * f32::from(block[192 + g] as i8));
    // The low nibbles form a 4-bit plane over each 128-element half (64 bytes
    // per half), the high 2 bits a 2-bit plane over the whole block.
    let mut q = [0i8; QK_K];
    let high = two_bit_plane(&block[128..192]);
    for ((q_h, ql_h), high_h) in q
        .chunks_exact_mut(128)
        .zip(block[..128].chunks_exact(64))
        .zip(high.chunks_exact(128))
    {
        let (lo, hi) = q_h.split_at_mut(64);
        for (((l, h), &byte), i) in lo.iter_mut().zip(hi).zip(ql_h).zip(0..) {
            *l = ((byte & 0x0F) | (high_h[i] << 4)) as i8 - 32;
            *h = ((byte >> 4) | (high_h[i + 64] << 4)) as i8 - 32;
        }
    }
    (q, dl)
}

pub(super) fn dequantize_q6_k(block: &[u8], out: &mut [f32]) {
    let (q, dl) = unpack_q6_k(block);
    dequantize_symmetric(&q, &dl, out);
}

pub(super) fn dot_q6_k(block: &[u8], x: &[f32]) -> f32 {
    let (q, dl) = unpack_q6_k(block);
    dot_symmetric(&q, &dl, x)
}

#[inline(always)]
fn d_q8_k(block: &[u8]) -> f32 {
    f32::from_le_bytes([block[0], block[1], block[2], block[3]])
}

pub(super) fn dequantize_q8_k(block: &[u8], out: &mut [f32]) {
    let d = d_q8_k(block);
    for (o, &b) in out.iter_mut().zip(&block[4..4 + QK_K]) {
        *o = d * f32::from(b as i8);
    }
}

pub(super) fn dot_q8_k(block: &[u8], x: &[f32]) -> f32 {
    let q: [f32; QK_K] = std::array::from_fn(|i| f32::from(block[4 + i] as i8));
    d_q8_k(block) * dot_f32(&q, x)
}
