//! F32, F16 and BF16 storage, rounded as gguf-py rounds (nearest, ties to even).

use super::QuantizeError;

pub(super) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (out, v) in dst.chunks_exact_mut(4).zip(src) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

/// IEEE half, round to nearest even (numpy's `astype(np.float16)`); a value
/// that would round to infinity (|v| ≥ 65520) is an error.
pub(super) fn quantize_f16(src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    for (col, (out, &v)) in dst.chunks_exact_mut(2).zip(src).enumerate() {
        let h = half::f16::from_f32(v);
        if h.is_infinite() {
            return Err(QuantizeError::OutOfRange {
                dtype: crate::DType::F16,
                row: 0,
                col,
                value: v,
                what: "value",
            });
        }
        out.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

/// bfloat16: the top 16 bits of the f32, rounded to nearest even by adding
/// `0x7fff` plus the lowest kept bit (gguf-py's and ggml's formula). Inputs
/// are finite, so that formula's NaN case never arises; a value within half a
/// bf16 step of f32's largest would round to infinity: an error.
pub(super) fn quantize_bf16(src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    for (col, (out, v)) in dst.chunks_exact_mut(2).zip(src).enumerate() {
        let bits = u64::from(v.to_bits());
        let rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
        if rounded & 0x7FFF == 0x7F80 {
            return Err(QuantizeError::OutOfRange {
                dtype: crate::DType::BF16,
                row: 0,
                col,
                value: *v,
                what: "value",
            });
        }
        out.copy_from_slice(&rounded.to_le_bytes());
    }
    Ok(())
}
