//! Unquantized element types: F32, F16 and BF16 (little-endian, one value per
//! "block"), and the f32 dot product.

/// Independent partial sums in the dot loops: lets the compiler vectorize the
/// reduction (f32 addition is not associative, so one accumulator cannot be).
const LANES: usize = 8;

/// Dot product of two equal-length f32 slices.
///
/// # Panics
/// If the lengths differ.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert!(
        a.len() == b.len(),
        "dot_f32: lengths differ ({} vs {})",
        a.len(),
        b.len()
    );
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((s, p), q) in acc.iter_mut().zip(ca).zip(cb) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sum of a slice, with the same lane-parallel accumulation as [`dot_f32`].
pub(super) fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dot of `x` with values stored as `WIDTH`-byte little-endian elements, each
/// turned into f32 by `decode`.
#[inline(always)]
fn dot_stored<const WIDTH: usize>(src: &[u8], x: &[f32], decode: impl Fn(&[u8]) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (s_chunks, x_chunks) = (src.chunks_exact(WIDTH * LANES), x.chunks_exact(LANES));
    let tail: f32 = s_chunks
        .remainder()
        .chunks_exact(WIDTH)
        .zip(x_chunks.remainder())
        .map(|(v, q)| decode(v) * q)
        .sum();
    for (cs, cx) in s_chunks.zip(x_chunks) {
        for ((s, v), q) in acc.iter_mut().zip(cs.chunks_exact(WIDTH)).zip(cx) {
            *s += decode(v) * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn f32_of(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline(always)]
fn f16_of(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// bfloat16 is the top half of an f32: widening is a 16-bit shift.
#[inline(always)]
fn bf16_of(b: &[u8]) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
}

pub(super) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (out, v) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *out = f32_of(v);
    }
}

pub(super) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (out, v) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *out = f16_of(v);
    }
}

pub(super) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (out, v) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *out = bf16_of(v);
    }
}

pub(super) fn dot_f32_bytes(src: &[u8], x: &[f32]) -> f32 {
    dot_stored::<4>(src, x, f32_of)
}

pub(super) fn dot_f16_bytes(src: &[u8], x: &[f32]) -> f32 {
    dot_stored::<2>(src, x, f16_of)
}

pub(super) fn dot_bf16_bytes(src: &[u8], x: &[f32]) -> f32 {
    dot_stored::<2>(src, x, bf16_of)
}
