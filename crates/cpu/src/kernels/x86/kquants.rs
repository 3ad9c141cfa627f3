//! Dequantization into AVX2 registers of the K-quant super-blocks the target
//! models use: Q4_K, Q5_K, Q6_K (256 values per block).
//!
//! `prep` turns the packed per-group scales into f32 multipliers once per
//! block (`d * sc` and `dmin * m` are exact in f32, as in the reference);
//! units then emit `fma(d * sc, q, -(dmin * m))` (affine) or
//! `fma(d * sc, q, -32 d * sc)` (Q6_K, exactly `d * sc * (q - 32)`), each
//! rounding once exactly where the reference does.

use std::arch::x86_64::*;

use smelt_tensor::DType;

use super::formats::{Format, Sink, f16_at, high4, low4, to_f32, u8x8};

/// Per-group multipliers of an affine K-quant block (eight groups of 32).
#[derive(Clone, Copy, Default)]
pub(super) struct Affine8 {
    /// `d * scale` per group.
    dl: [f32; 8],
    /// `-(dmin * min)` per group.
    neg_ml: [f32; 8],
}

/// Decodes Q4_K/Q5_K's d @0, dmin @2 and the eight 6-bit (scale, min)
/// pairs packed in the 12 bytes @4: bytes 0..4 hold scales 0..4 in their
/// low 6 bits, bytes 4..8 mins 0..4; scales/mins 4..8 take their low 4 bits
/// from the nibbles of bytes 8..12 (scale low, min high) and their top 2
/// bits from the top bits of bytes 0..4 / 4..8.
///
/// # Safety
/// `block..block + 16` is readable; the CPU has F16C.
#[inline(always)]
unsafe fn affine8(block: *const u8) -> Affine8 {
    // SAFETY: the first 16 bytes of a whole block (the contract).
    let (d, dmin, s) = unsafe {
        (
            f16_at(block),
            f16_at(block.add(2)),
            block.add(4).cast::<[u8; 12]>().read_unaligned(),
        )
    };
    let mut p = Affine8::default();
    for j in 0..4 {
        let (sc_lo, mn_lo) = (s[j] & 0x3F, s[j + 4] & 0x3F);
        let sc_hi = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        let mn_hi = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
        p.dl[j] = d * f32::from(sc_lo);
        p.dl[j + 4] = d * f32::from(sc_hi);
        p.neg_ml[j] = -(dmin * f32::from(mn_lo));
        p.neg_ml[j + 4] = -(dmin * f32::from(mn_hi));
    }
    p
}

/// Emits group `g` (32 values): `fma(dl[g], q[t], -ml[g])` for its 4 vectors.
///
/// # Safety
/// `g < 8`; `sink` accepts vectors `4 g .. 4 g + 4`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn affine_group<S: Sink>(p: &Affine8, g: usize, q: [__m256i; 4], sink: &mut S) {
    let (dl, ml) = (_mm256_set1_ps(p.dl[g]), _mm256_set1_ps(p.neg_ml[g]));
    for (t, q) in q.into_iter().enumerate() {
        // SAFETY: vector `4 g + t` of the block (the contract).
        unsafe { sink.put(4 * g + t, _mm256_fmadd_ps(dl, to_f32(q), ml)) };
    }
}

/// Q4_K: d @0, dmin @2, scales @4, qs[128] @16. Element `64 c + 32 n + l`
/// is nibble `n` of `qs[32 c + l]`; group = element / 32.
pub(super) struct Q4K;

impl Format for Q4K {
    const DTYPE: DType = DType::Q4K;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 144;
    /// One unit per 32 quant bytes: two groups (both nibbles).
    const UNITS: usize = 4;
    type Prep = Affine8;

    #[inline(always)]
    unsafe fn prep(block: *const u8) -> Affine8 {
        // SAFETY: a whole block (the contract).
        unsafe { affine8(block) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &Affine8, u: usize, sink: &mut S) {
        // SAFETY: quant bytes 32u..32u + 32 of a whole block (u < 4).
        let b = unsafe {
            let qs = block.add(16 + 32 * u);
            [
                u8x8(qs),
                u8x8(qs.add(8)),
                u8x8(qs.add(16)),
                u8x8(qs.add(24)),
            ]
        };
        // SAFETY: groups 2u and 2u + 1 of the block, in order.
        unsafe {
            affine_group(p, 2 * u, b.map(|v| low4(v)), sink);
            affine_group(p, 2 * u + 1, b.map(|v| high4(v)), sink);
        }
    }
}

/// Q5_K: d @0, dmin @2, scales @4, qh[32] @16, qs[128] @48. Low 4 bits as
/// Q4_K; the fifth bit of element `32 b + l` is bit `b` of `qh[l]`.
pub(super) struct Q5K;

impl Format for Q5K {
    const DTYPE: DType = DType::Q5K;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 176;
    const UNITS: usize = 4;
    type Prep = Affine8;

    #[inline(always)]
    unsafe fn prep(block: *const u8) -> Affine8 {
        // SAFETY: a whole block (the contract).
        unsafe { affine8(block) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &Affine8, u: usize, sink: &mut S) {
        // SAFETY: quant bytes 32u..32u + 32 and the 32 high-bit bytes of a
        // whole block (u < 4).
        let (b, h) = unsafe {
            let (qs, qh) = (block.add(48 + 32 * u), block.add(16));
            (
                [
                    u8x8(qs),
                    u8x8(qs.add(8)),
                    u8x8(qs.add(16)),
                    u8x8(qs.add(24)),
                ],
                [
                    u8x8(qh),
                    u8x8(qh.add(8)),
                    u8x8(qh.add(16)),
                    u8x8(qh.add(24)),
                ],
            )
        };
        // Groups 2u (bit 2u of qh) and 2u + 1 (bit 2u + 1): shift that bit to
        // bit 4 (pre-shifting by 4 keeps the count non-negative).
        let bit4 = _mm256_set1_epi32(16);
        let fifth = |bit: usize| {
            let count = _mm_cvtsi32_si128(bit as i32);
            h.map(|v| _mm256_and_si256(_mm256_srl_epi32(_mm256_slli_epi32::<4>(v), count), bit4))
        };
        let (h0, h1) = (fifth(2 * u), fifth(2 * u + 1));
        let q0 = std::array::from_fn(|t| _mm256_or_si256(low4(b[t]), h0[t]));
        let q1 = std::array::from_fn(|t| _mm256_or_si256(high4(b[t]), h1[t]));
        // SAFETY: groups 2u and 2u + 1 of the block, in order.
        unsafe {
            affine_group(p, 2 * u, q0, sink);
            affine_group(p, 2 * u + 1, q1, sink);
        }
    }
}

/// Q6_K's sixteen group multipliers `d * sc` and `-32 d * sc`.
#[derive(Clone, Copy, Default)]
pub(super) struct Q6KPrep {
    dl: [f32; 16],
    neg_32dl: [f32; 16],
}

/// Q6_K: ql[128] @0 (low 4 bits), qh[64] @128 (high 2 bits), scales[16]
/// (i8) @192, d @208; groups of 16. In half `h` (128 elements), element
/// `128 h + 32 s + l` has low bits from nibble `s / 2` of
/// `ql[64 h + 32 (s % 2) + l]` and high bits `2 s..2 s + 2` of `qh[32 h + l]`.
pub(super) struct Q6K;

impl Format for Q6K {
    const DTYPE: DType = DType::Q6K;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 210;
    /// One unit per half.
    const UNITS: usize = 2;
    type Prep = Q6KPrep;

    #[inline(always)]
    unsafe fn prep(block: *const u8) -> Q6KPrep {
        // SAFETY: the scales @192..208 and d @208 of a whole block.
        let (d, sc) = unsafe {
            (
                f16_at(block.add(208)),
                block.add(192).cast::<[i8; 16]>().read_unaligned(),
            )
        };
        let mut p = Q6KPrep::default();
        for ((dl, neg), &sc) in p.dl.iter_mut().zip(&mut p.neg_32dl).zip(&sc) {
            *dl = d * f32::from(sc);
            *neg = -32.0 * *dl;
        }
        p
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(block: *const u8, p: &Q6KPrep, h: usize, sink: &mut S) {
        // SAFETY: ql bytes 64h..64h + 64 and qh bytes 32h..32h + 32 of a
        // whole block (h < 2).
        let (ql, qh) = unsafe {
            let (ql, qh) = (block.add(64 * h), block.add(128 + 32 * h));
            (
                std::array::from_fn::<__m256i, 8, _>(|i| u8x8(ql.add(8 * i))),
                [
                    u8x8(qh),
                    u8x8(qh.add(8)),
                    u8x8(qh.add(16)),
                    u8x8(qh.add(24)),
                ],
            )
        };
        let mask = _mm256_set1_epi32(0x30);
        for s in 0..4 {
            for t in 0..4 {
                let low = if s < 2 {
                    low4(ql[4 * s + t])
                } else {
                    high4(ql[4 * (s - 2) + t])
                };
                // Bits 2s..2s + 2 of qh moved to bits 4..6.
                let high = match s {
                    0 => _mm256_slli_epi32::<4>(qh[t]),
                    1 => _mm256_slli_epi32::<2>(qh[t]),
                    2 => qh[t],
                    _ => _mm256_srli_epi32::<2>(qh[t]),
                };
                let q = to_f32(_mm256_or_si256(low, _mm256_and_si256(high, mask)));
                let g = 8 * h + 2 * s + t / 2;
                let (dl, c) = (_mm256_set1_ps(p.dl[g]), _mm256_set1_ps(p.neg_32dl[g]));
                // SAFETY: vector `16 h + 4 s + t` of the block, in order.
                unsafe { sink.put(16 * h + 4 * s + t, _mm256_fmadd_ps(dl, q, c)) };
            }
        }
    }
}
