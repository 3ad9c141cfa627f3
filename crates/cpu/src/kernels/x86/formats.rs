//! Dequantization into AVX2 registers: the plain float types and the legacy
//! 32-element block formats (Q4_0, Q4_1, Q5_0, Q8_0).
//!
//! Every formula reproduces the scalar reference's value exactly: the
//! products of a block scale and a small integer quant are exact in f32, so
//! `fma(d, q, c)` rounds once exactly where the reference's `d * q + c` (or
//! the exact `d * (q - offset)`) does.

use std::arch::x86_64::*;

use smelt_tensor::DType;

/// Receives a block's dequantized values, eight at a time.
pub(super) trait Sink {
    /// Vector `c` of the current block: its elements `8 c .. 8 c + 8`. A
    /// format calls this for `c` in increasing order (the canonical
    /// accumulation order).
    ///
    /// # Safety
    /// The CPU has AVX2/FMA/F16C; `c < BLOCK_ELEMS / 8` of the format.
    unsafe fn put(&mut self, c: usize, v: __m256);
}

/// A stored format that can be dequantized straight into registers.
///
/// A block is `BLOCK_ELEMS` values in `BLOCK_BYTES` bytes (for the plain
/// float types, 32 values taken together), split into `UNITS` equal units;
/// `prep` decodes the block's scales once, `unit` emits a unit's vectors.
pub(super) trait Format {
    /// The type this decodes.
    const DTYPE: DType;
    const BLOCK_ELEMS: usize;
    const BLOCK_BYTES: usize;
    const UNITS: usize;
    /// Per-block state decoded by `prep` (scales).
    type Prep: Copy + Default;

    /// Decodes the scales of the block at `block`.
    ///
    /// # Safety
    /// The CPU has AVX2/FMA/F16C; `block` points at `BLOCK_BYTES` readable bytes.
    unsafe fn prep(block: *const u8) -> Self::Prep;

    /// Emits the vectors of unit `u` (`u < UNITS`) of the block, in order.
    ///
    /// # Safety
    /// As [`Format::prep`], with `prep` from the same block.
    unsafe fn unit<S: Sink>(block: *const u8, prep: &Self::Prep, u: usize, sink: &mut S);
}

// ---- helpers ------------------------------------------------------------------

/// Eight bytes at `p`, zero-extended to 32-bit lanes.
///
/// # Safety
/// `p..p + 8` is readable.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn u8x8(p: *const u8) -> __m256i {
    // SAFETY: an unaligned 8-byte load (the contract).
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.cast()) })
}

/// Eight bytes at `p`, sign-extended to 32-bit lanes.
///
/// # Safety
/// `p..p + 8` is readable.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn i8x8(p: *const u8) -> __m256i {
    // SAFETY: an unaligned 8-byte load (the contract).
    _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(p.cast()) })
}

/// An IEEE half (given as its bits) as f32, exactly, in integer
/// arithmetic: block scales are decoded off the vector units, which the
/// dequantization keeps busy. Matches F16C's `vcvtph2ps` bit for bit
/// (signalling NaNs come out quiet).
#[inline(always)]
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1F;
    let man = h & 0x3FF;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: man × 2^-24. Normalize so the top set bit becomes
            // the implicit one.
            let shift = man.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((man << shift) & 0x3FF) << 13)
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, _) => sign | 0x7FC0_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// The little-endian f16 at `p` as f32 (exact).
///
/// # Safety
/// `p..p + 2` is readable.
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: an unaligned 2-byte read (the contract).
    f16_to_f32(u16::from_le(unsafe { p.cast::<u16>().read_unaligned() }))
}

/// `*p` broadcast to all lanes, loaded from memory (`p` comes through
/// [`launder`], so the compiler cannot keep the value in a register, where
/// broadcasting it would take a shuffle).
///
/// # Safety
/// `p` is valid for reads.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn splat(p: *const f32) -> __m256 {
    // SAFETY: the contract.
    _mm256_broadcast_ss(unsafe { &*p })
}

/// The same pointer, opaque to the optimizer: values behind it are read
/// from memory after every earlier write (the asm may read memory), and
/// loads through two launders of one pointer are not merged.
#[inline(always)]
pub(super) fn launder<T>(mut p: *const T) -> *const T {
    // SAFETY: an empty asm block that only claims to change `p` (and
    // possibly to read memory).
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) p, options(readonly, nostack, preserves_flags))
    };
    p
}

/// Lanes as f32 (exact: the quants are small integers).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn to_f32(v: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(v)
}

/// Low nibble of each lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn low4(v: __m256i) -> __m256i {
    _mm256_and_si256(v, _mm256_set1_epi32(0x0F))
}

/// High nibble of each lane (lanes hold bytes).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn high4(v: __m256i) -> __m256i {
    _mm256_srli_epi32::<4>(v)
}

// ---- plain float types ------------------------------------------------------------

/// F32: 32 little-endian floats per "block".
pub(super) struct F32;

impl Format for F32 {
    const DTYPE: DType = DType::F32;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 128;
    const UNITS: usize = 1;
    type Prep = ();

    #[inline(always)]
    unsafe fn prep(_block: *const u8) {}

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, _prep: &(), _u: usize, sink: &mut S) {
        for c in 0..4 {
            // SAFETY: 32 floats at `block` (the contract); `c < 4`.
            unsafe { sink.put(c, _mm256_loadu_ps(block.add(32 * c).cast())) };
        }
    }
}

/// F16: 32 halves per "block", widened with F16C (exact).
pub(super) struct F16;

impl Format for F16 {
    const DTYPE: DType = DType::F16;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 64;
    const UNITS: usize = 1;
    type Prep = ();

    #[inline(always)]
    unsafe fn prep(_block: *const u8) {}

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, _prep: &(), _u: usize, sink: &mut S) {
        for c in 0..4 {
            // SAFETY: 32 halves at `block` (the contract); `c < 4`.
            unsafe {
                let h = _mm_loadu_si128(block.add(16 * c).cast());
                sink.put(c, _mm256_cvtph_ps(h));
            }
        }
    }
}

/// BF16: 32 bfloat16 per "block"; each is the top half of an f32.
pub(super) struct Bf16;

impl Format for Bf16 {
    const DTYPE: DType = DType::BF16;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 64;
    const UNITS: usize = 1;
    type Prep = ();

    #[inline(always)]
    unsafe fn prep(_block: *const u8) {}

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, _prep: &(), _u: usize, sink: &mut S) {
        for c in 0..4 {
            // SAFETY: 32 bfloat16 at `block` (the contract); `c < 4`.
            unsafe {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(block.add(16 * c).cast()));
                sink.put(c, _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h)));
            }
        }
    }
}

// ---- legacy 32-element blocks ---------------------------------------------------------

/// A legacy block's scale `d` and the constant term `c` of `fma(d, q, c)`,
/// kept in memory and broadcast from there.
#[derive(Clone, Copy, Default)]
pub(super) struct BlockScales {
    d: f32,
    c: f32,
}

impl BlockScales {
    /// `d` and `c` from the two halves packed in `bits` (low half: d, high:
    /// c's half), each times its factor (exact: powers of two), converted
    /// with one F16C instruction (few vector operations: the dequantization
    /// keeps the vector units busy).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn from_halves(bits: u32, d_factor: f32, c_factor: f32) -> BlockScales {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        let v = _mm_mul_ps(v, _mm_setr_ps(d_factor, c_factor, 0.0, 0.0));
        let mut out = [0.0f32; 4];
        // SAFETY: a 16-byte store into a local array.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), v) };
        BlockScales {
            d: out[0],
            c: out[1],
        }
    }
}

/// The little-endian u16 at `p`.
///
/// # Safety
/// `p..p + 2` is readable.
#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u32 {
    // SAFETY: an unaligned 2-byte read (the contract).
    u32::from(u16::from_le(unsafe { p.cast::<u16>().read_unaligned() }))
}

/// Lanes of `b` where `mask`'s sign bit is set, of `a` elsewhere: one
/// `vblendvps` (the compiler would otherwise rewrite the intrinsic into a
/// compare and a logical op, one more vector operation).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn blend_by_sign(a: __m256, b: __m256, mask: __m256) -> __m256 {
    let out: __m256;
    // SAFETY: a register-only AVX instruction (AVX is enabled here).
    unsafe {
        std::arch::asm!(
            "vblendvps {out}, {a}, {b}, {mask}",
            out = lateout(ymm_reg) out,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            mask = in(ymm_reg) mask,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    out
}

/// Emits a 32-element block whose 16 quant bytes at `qs` hold elements
/// `0..16` in their low nibbles and `16..32` in their high nibbles, as
/// `fma(d, q, c)`.
///
/// With `FIFTH` (Q5_0), bit `e` of `qh` is element `e`'s fifth bit and
/// `c = -16 d`: an element with the bit set is `d * q4` exactly (its offset
/// cancels), one without is `fma(d, q4, -16 d)`; the bit, moved to the sign
/// of its lane, selects the offset (cheaper than OR-ing it into `q`).
///
/// # Safety
/// `qs..qs + 16` is readable.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibble_block<S: Sink, const FIFTH: bool>(
    qs: *const u8,
    p: &BlockScales,
    qh: u32,
    sink: &mut S,
) {
    // SAFETY: bytes 0..8 and 8..16 of `qs` (the contract); `p` is a reference.
    let (b0, b1, d, c) = unsafe {
        let p = launder(p);
        (u8x8(qs), u8x8(qs.add(8)), splat(&(*p).d), splat(&(*p).c))
    };
    let qh = _mm256_set1_epi32(qh as i32);
    let q = [low4(b0), low4(b1), high4(b0), high4(b1)];
    for (t, q) in q.into_iter().enumerate() {
        let c = if FIFTH {
            let top = 31 - 8 * t as i32;
            let to_sign = _mm256_setr_epi32(
                top,
                top - 1,
                top - 2,
                top - 3,
                top - 4,
                top - 5,
                top - 6,
                top - 7,
            );
            let sign = _mm256_castsi256_ps(_mm256_sllv_epi32(qh, to_sign));
            blend_by_sign(c, _mm256_setzero_ps(), sign)
        } else {
            c
        };
        // SAFETY: `t < 4` vectors of a 32-element block.
        unsafe { sink.put(t, _mm256_fmadd_ps(d, to_f32(q), c)) };
    }
}

/// Q4_0: d (f16) @0, qs[16] @2; `w = d * (q - 8)` = `fma(d, q, -8 d)` (exact).
pub(super) struct Q4_0;

impl Format for Q4_0 {
    const DTYPE: DType = DType::Q4_0;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 18;
    const UNITS: usize = 1;
    type Prep = BlockScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(block: *const u8) -> BlockScales {
        // SAFETY: the scale @0 of a whole block.
        let h = unsafe { u16_at(block) };
        BlockScales::from_halves(h | h << 16, 1.0, -8.0)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &BlockScales, _u: usize, sink: &mut S) {
        // SAFETY: the quants @2 of a whole block.
        unsafe { nibble_block::<S, false>(block.add(2), p, 0, sink) }
    }
}

/// Q4_1: d @0, m @2 (f16), qs[16] @4; `w = d * q + m` = `fma(d, q, m)`.
pub(super) struct Q4_1;

impl Format for Q4_1 {
    const DTYPE: DType = DType::Q4_1;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 20;
    const UNITS: usize = 1;
    type Prep = BlockScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(block: *const u8) -> BlockScales {
        // SAFETY: the scales @0 and @2 of a whole block.
        let (d, m) = unsafe { (u16_at(block), u16_at(block.add(2))) };
        BlockScales::from_halves(d | m << 16, 1.0, 1.0)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &BlockScales, _u: usize, sink: &mut S) {
        // SAFETY: the quants @4 of a whole block.
        unsafe { nibble_block::<S, false>(block.add(4), p, 0, sink) }
    }
}

/// Q5_0: d @0, qh (u32 fifth bits) @2, qs[16] @6;
/// `w = d * (q - 16)` = `fma(d, q, -16 d)` (exact).
pub(super) struct Q5_0;

impl Format for Q5_0 {
    const DTYPE: DType = DType::Q5_0;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 22;
    const UNITS: usize = 1;
    type Prep = BlockScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(block: *const u8) -> BlockScales {
        // SAFETY: the scale @0 of a whole block.
        let h = unsafe { u16_at(block) };
        BlockScales::from_halves(h | h << 16, 1.0, -16.0)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &BlockScales, _u: usize, sink: &mut S) {
        // SAFETY: the fifth bits @2..6 of a whole block.
        let qh = unsafe { u32::from_le(block.add(2).cast::<u32>().read_unaligned()) };
        // SAFETY: the quants @6 of a whole block.
        unsafe { nibble_block::<S, true>(block.add(6), p, qh, sink) }
    }
}

/// Q8_0: d @0, qs[32] (i8) @2; `w = d * q` (exact).
pub(super) struct Q8_0;

impl Format for Q8_0 {
    const DTYPE: DType = DType::Q8_0;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 34;
    const UNITS: usize = 1;
    type Prep = BlockScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(block: *const u8) -> BlockScales {
        // SAFETY: the scale @0 of a whole block.
        let h = unsafe { u16_at(block) };
        BlockScales::from_halves(h, 1.0, 0.0)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &BlockScales, _u: usize, sink: &mut S) {
        // SAFETY: `p` is a reference.
        let d = unsafe { splat(&(*launder(p)).d) };
        for t in 0..4 {
            // SAFETY: quant bytes 8t..8t + 8 @2 of a whole block.
            unsafe {
                let q = to_f32(i8x8(block.add(2 + 8 * t)));
                sink.put(t, _mm256_mul_ps(d, q));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_f16_conversion_matches_f16c_for_every_half() {
        if !crate::kernels::Isa::Avx2.available() {
            return;
        }
        for h in 0..=u16::MAX {
            // SAFETY: F16C is present (checked above).
            let want = unsafe { hardware_f16(h) };
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "half {h:#06x}");
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn hardware_f16(h: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
    }
}
