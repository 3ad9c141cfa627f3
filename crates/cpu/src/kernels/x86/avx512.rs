//! AVX-512 fused decode kernels (x86-64 with AVX-512 F/BW/VL and BMI2).
//!
//! The arithmetic is the parent module's contract, unchanged: every output
//! keeps its own eight canonical FMA lanes. A 512-bit register never holds
//! sixteen consecutive elements of one output; it holds **two weight rows
//! interleaved lane by lane**: lane `2 j` is lane `j` of row A's canonical
//! accumulator, lane `2 j + 1` lane `j` of row B's. The activations are
//! duplicated once per call (`x2[2 k] = x2[2 k + 1] = x[k]`) so that one
//! plain load feeds both rows, and a pair's per-block scales are two f32
//! side by side, broadcast with one 64-bit load. At the end each register is
//! de-interleaved and reduced with the AVX2 path's [`reduce4`] tree, so the
//! values are bit-identical to the AVX2 and portable paths.
//!
//! Covered: the fused matrix-vector product (one or two activation rows)
//! for Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K — the types of the target
//! models. Everything else (other types, the panel GEMM for prefill) runs
//! the AVX2 kernels, which this CPU also has.

use std::arch::x86_64::*;
use std::ops::Range;

use smelt_tensor::DType;

use super::formats::launder;
use super::{Args, prefetch_distance, reduce4};
use crate::kernels::{Dst, Scratch, aligned};

/// Pairs per fused tile for two activation rows (2 accumulators per pair).
const PAIRS_2X: usize = 4;

/// The AVX-512 matrix product: fused kernels for the covered types and at
/// most two activation rows, the AVX2 kernels for the rest.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL, BMI2, AVX2, FMA and F16C; `w` holds
/// exactly `rows.end` rows of `n_in` elements of `dtype`; `x` holds exactly
/// `n_x` rows of `n_in`; `dst` is valid and exclusive for every output;
/// `rows` and `n_x` are not empty.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn matmul(
    dtype: DType,
    w: &[u8],
    n_in: usize,
    rows: Range<usize>,
    x: &[f32],
    n_x: usize,
    dst: Dst,
    scratch: &mut Scratch,
) {
    let a = Args {
        w,
        row_bytes: w.len() / rows.end,
        n_in,
        rows: rows.clone(),
        x,
        n_x,
        dst,
    };
    // SAFETY (all arms): the features are present and the arguments valid
    // (this function's contract).
    unsafe {
        match dtype {
            DType::Q4_0 => return by_format::<Q4_0x2>(&a, scratch),
            DType::Q4_1 => return by_format::<Q4_1x2>(&a, scratch),
            DType::Q5_0 => return by_format::<Q5_0x2>(&a, scratch),
            DType::Q8_0 => return by_format::<Q8_0x2>(&a, scratch),
            DType::Q4K => return by_format::<Q4Kx2>(&a, scratch),
            DType::Q6K => return by_format::<Q6Kx2>(&a, scratch),
            _ => {}
        }
        super::matmul(dtype, w, n_in, rows, x, n_x, dst, scratch)
    }
}

/// Fused kernel for one or two activation rows, panels for more.
///
/// # Safety
/// As [`matmul`], with `F` the format of the weight.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn by_format<F: PairFormat>(a: &Args<'_>, scratch: &mut Scratch) {
    // SAFETY: the contract of `matmul`.
    unsafe {
        if a.n_x <= 2 {
            fused::<F>(a, scratch)
        } else {
            super::avx512_gemm::panel::<F>(a, scratch)
        }
    }
}

// ---- the interleaved pair layout ---------------------------------------------------

/// Receives a row pair's dequantized values, sixteen at a time.
pub(super) trait Sink {
    /// Vector `c` of the current block pair: lane `2 j` is row A's element
    /// `8 c + j`, lane `2 j + 1` row B's. Called for `c` in increasing order.
    ///
    /// # Safety
    /// The CPU has the module's features; `c < BLOCK_ELEMS / 8`.
    unsafe fn put(&mut self, c: usize, v: __m512);
}

/// A stored format dequantized two rows at a time, interleaved.
pub(super) trait PairFormat {
    const BLOCK_ELEMS: usize;
    const BLOCK_BYTES: usize;
    /// Equal parts of a block, emitted in order by `unit`.
    const UNITS: usize;
    /// Pairs of weight rows per fused tile for one activation row: enough
    /// independent accumulator chains and dequantization work in flight,
    /// few enough that the format's temporaries stay in registers.
    const PAIRS_1X: usize;
    /// The pair's decoded block scales.
    type Prep: Copy + Default;

    /// Decodes the scales of blocks `a` (row A) and `b` (row B).
    ///
    /// # Safety
    /// The CPU has the module's features; `a` and `b` each point at
    /// `BLOCK_BYTES` readable bytes.
    unsafe fn prep(a: *const u8, b: *const u8) -> Self::Prep;

    /// Emits the vectors of unit `u < UNITS` of the two blocks.
    ///
    /// # Safety
    /// As [`PairFormat::prep`], with `prep` from the same blocks.
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, prep: &Self::Prep, u: usize, sink: &mut S);
}

/// Two f32 side by side (row A's, row B's), read as one 64-bit value.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
pub(super) struct Two([f32; 2]);

/// `[a, b, a, b, …]`: one broadcast load (`p` comes through [`launder`], so
/// the compiler reads it from memory rather than shuffling a register).
///
/// # Safety
/// `p` is valid for reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
unsafe fn splat2(p: *const Two) -> __m512 {
    // SAFETY: an 8-byte aligned read of a `Two` (the contract).
    let bits = unsafe { p.cast::<f64>().read() };
    _mm512_castpd_ps(_mm512_set1_pd(bits))
}

/// Bytes `8 t .. 8 t + 8` of 16 bytes at `a` and at `b`, interleaved
/// (`a0 b0 a1 b1 …`), for `t` in 0..2.
///
/// # Safety
/// `a..a + 16` and `b..b + 16` are readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
unsafe fn interleave16(a: *const u8, b: *const u8) -> [__m128i; 2] {
    // SAFETY: unaligned 16-byte loads (the contract).
    let (va, vb) = unsafe { (_mm_loadu_si128(a.cast()), _mm_loadu_si128(b.cast())) };
    [_mm_unpacklo_epi8(va, vb), _mm_unpackhi_epi8(va, vb)]
}

/// Bytes `8 t .. 8 t + 8` of 32 bytes at `a` and at `b`, interleaved, for
/// `t` in 0..4.
///
/// # Safety
/// `a..a + 32` and `b..b + 32` are readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
unsafe fn interleave32(a: *const u8, b: *const u8) -> [__m128i; 4] {
    // SAFETY: unaligned 32-byte loads (the contract).
    let (va, vb) = unsafe { (_mm256_loadu_si256(a.cast()), _mm256_loadu_si256(b.cast())) };
    // Within each 128-bit half: low = bytes 0..8 (t = 0, 2), high = 8..16 (t = 1, 3).
    let (lo, hi) = (_mm256_unpacklo_epi8(va, vb), _mm256_unpackhi_epi8(va, vb));
    [
        _mm256_castsi256_si128(lo),
        _mm256_castsi256_si128(hi),
        _mm256_extracti128_si256::<1>(lo),
        _mm256_extracti128_si256::<1>(hi),
    ]
}

/// Sixteen bytes zero-extended to 32-bit lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
fn widen(v: __m128i) -> __m512i {
    _mm512_cvtepu8_epi32(v)
}

/// Low nibble of each lane.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
fn low4(v: __m512i) -> __m512i {
    _mm512_and_si512(v, _mm512_set1_epi32(0x0F))
}

/// High nibble of each lane (lanes hold bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
fn high4(v: __m512i) -> __m512i {
    _mm512_srli_epi32::<4>(v)
}

/// Lanes as f32 (exact: the quants are small integers).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
fn to_f32(v: __m512i) -> __m512 {
    _mm512_cvtepi32_ps(v)
}

/// The little-endian u16 at `p`.
///
/// # Safety
/// `p..p + 2` is readable.
#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u64 {
    // SAFETY: an unaligned 2-byte read (the contract).
    u64::from(u16::from_le(unsafe { p.cast::<u16>().read_unaligned() }))
}

// ---- legacy 32-element blocks ---------------------------------------------------------

/// A legacy block pair's `d` and the constant `c` of `fma(d, q, c)`.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
pub(super) struct LegacyPrep {
    d: Two,
    c: Two,
}

impl LegacyPrep {
    /// From four halves packed in `bits` (`dA dB cA cB`, low to high), each
    /// times its factor (powers of two: exact), in one F16C conversion.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    fn from_halves(bits: u64, c_factor: f32) -> LegacyPrep {
        let v = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
        let v = _mm_mul_ps(v, _mm_setr_ps(1.0, 1.0, c_factor, c_factor));
        let mut out = LegacyPrep::default();
        // SAFETY: a 16-byte store into a 16-byte `repr(C)` struct of f32s.
        unsafe { _mm_storeu_ps((&raw mut out).cast(), v) };
        out
    }
}

/// Emits a 32-element nibble block pair (`qs` of 16 bytes each: elements
/// `0..16` in the low nibbles, `16..32` in the high ones) as `fma(d, q, c)`.
/// With `FIFTH` (Q5_0), bit `16 t + L` of `qh2` is the fifth bit of lane `L`
/// of vector `t` (the rows' bits interleaved).
///
/// # Safety
/// `a..a + 16` and `b..b + 16` are readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
unsafe fn nibble_pair<S: Sink, const FIFTH: bool>(
    a: *const u8,
    b: *const u8,
    p: &LegacyPrep,
    qh2: u64,
    sink: &mut S,
) {
    // SAFETY: the contract; `p` is a reference.
    let ([i0, i1], d, c) = unsafe {
        let p = launder(p);
        (interleave16(a, b), splat2(&(*p).d), splat2(&(*p).c))
    };
    let (z0, z1) = (widen(i0), widen(i1));
    let q = [low4(z0), low4(z1), high4(z0), high4(z1)];
    for (t, q) in q.into_iter().enumerate() {
        let q = if FIFTH {
            let k = (qh2 >> (16 * t)) as __mmask16;
            _mm512_mask_or_epi32(q, k, q, _mm512_set1_epi32(16))
        } else {
            q
        };
        // SAFETY: `t < 4` vectors of a 32-element block.
        unsafe { sink.put(t, _mm512_fmadd_ps(d, to_f32(q), c)) };
    }
}

/// Q4_0: d (f16) @0, qs[16] @2; `w = d * (q - 8)` = `fma(d, q, -8 d)`.
struct Q4_0x2;

impl PairFormat for Q4_0x2 {
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 18;
    const UNITS: usize = 1;
    const PAIRS_1X: usize = 8;
    type Prep = LegacyPrep;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(a: *const u8, b: *const u8) -> LegacyPrep {
        // SAFETY: the scales @0 of whole blocks.
        let (da, db) = unsafe { (u16_at(a), u16_at(b)) };
        let d2 = da | db << 16;
        LegacyPrep::from_halves(d2 | d2 << 32, -8.0)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, p: &LegacyPrep, _u: usize, sink: &mut S) {
        // SAFETY: the quants @2 of whole blocks.
        unsafe { nibble_pair::<S, false>(a.add(2), b.add(2), p, 0, sink) }
    }
}

/// Q4_1: d @0, m @2 (f16), qs[16] @4; `w = fma(d, q, m)`.
struct Q4_1x2;

impl PairFormat for Q4_1x2 {
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 20;
    const UNITS: usize = 1;
    const PAIRS_1X: usize = 8;
    type Prep = LegacyPrep;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(a: *const u8, b: *const u8) -> LegacyPrep {
        // SAFETY: the scales @0 and @2 of whole blocks.
        let bits = unsafe {
            u16_at(a) | u16_at(b) << 16 | u16_at(a.add(2)) << 32 | u16_at(b.add(2)) << 48
        };
        LegacyPrep::from_halves(bits, 1.0)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, p: &LegacyPrep, _u: usize, sink: &mut S) {
        // SAFETY: the quants @4 of whole blocks.
        unsafe { nibble_pair::<S, false>(a.add(4), b.add(4), p, 0, sink) }
    }
}

/// Q5_0: d @0, qh (u32 fifth bits) @2, qs[16] @6; `w = d * (q - 16)` =
/// `fma(d, q, -16 d)` with `q` the full 5-bit quant.
struct Q5_0x2;

impl PairFormat for Q5_0x2 {
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 22;
    const UNITS: usize = 1;
    const PAIRS_1X: usize = 8;
    type Prep = LegacyPrep;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(a: *const u8, b: *const u8) -> LegacyPrep {
        // SAFETY: the scales @0 of whole blocks.
        let (da, db) = unsafe { (u16_at(a), u16_at(b)) };
        let d2 = da | db << 16;
        LegacyPrep::from_halves(d2 | d2 << 32, -16.0)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, p: &LegacyPrep, _u: usize, sink: &mut S) {
        // SAFETY: the fifth bits @2..6 of whole blocks.
        let (ha, hb) = unsafe {
            (
                u32::from_le(a.add(2).cast::<u32>().read_unaligned()),
                u32::from_le(b.add(2).cast::<u32>().read_unaligned()),
            )
        };
        // Element e's bits go to bits 2e (row A) and 2e + 1 (row B).
        let qh2 = _pdep_u64(u64::from(ha), 0x5555_5555_5555_5555)
            | _pdep_u64(u64::from(hb), 0xAAAA_AAAA_AAAA_AAAA);
        // SAFETY: the quants @6 of whole blocks.
        unsafe { nibble_pair::<S, true>(a.add(6), b.add(6), p, qh2, sink) }
    }
}

/// Q8_0: d @0, qs[32] (i8) @2; `w = d * q`.
struct Q8_0x2;

impl PairFormat for Q8_0x2 {
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 34;
    const UNITS: usize = 1;
    const PAIRS_1X: usize = 8;
    type Prep = LegacyPrep;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(a: *const u8, b: *const u8) -> LegacyPrep {
        // SAFETY: the scales @0 of whole blocks.
        let bits = unsafe { u16_at(a) | u16_at(b) << 16 };
        LegacyPrep::from_halves(bits, 0.0)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, p: &LegacyPrep, _u: usize, sink: &mut S) {
        // SAFETY: the quants @2 of whole blocks; `p` is a reference.
        let (i, d) = unsafe { (interleave32(a.add(2), b.add(2)), splat2(&(*launder(p)).d)) };
        for (t, i) in i.into_iter().enumerate() {
            let q = to_f32(_mm512_cvtepi8_epi32(i));
            // SAFETY: `t < 4` vectors of a 32-element block.
            unsafe { sink.put(t, _mm512_mul_ps(d, q)) };
        }
    }
}

// ---- K-quants -------------------------------------------------------------------------

/// Per-group multipliers of a Q4_K block pair (eight groups of 32).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Affine8x2 {
    /// `d * scale` per group.
    dl: [Two; 8],
    /// `-(dmin * min)` per group.
    neg_ml: [Two; 8],
}

/// A Q4_K/Q5_K block's eight 6-bit scales and eight 6-bit mins as bytes
/// (8 each, little-endian in a u64), from the 12 bytes @4: bytes 0..4 hold
/// scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4; scales/mins 4..8
/// take their low 4 bits from the nibbles of bytes 8..12 (scale low, min
/// high) and their top 2 bits from the top bits of bytes 0..4 / 4..8.
/// Decoded four bytes at a time in general-purpose registers.
///
/// # Safety
/// `block..block + 16` is readable.
#[inline(always)]
unsafe fn scales_mins(block: *const u8) -> (u64, u64) {
    // SAFETY: bytes 4..16 of a whole block (the contract).
    let [a, b, c] = unsafe { block.add(4).cast::<[u32; 3]>().read_unaligned() }.map(u32::from_le);
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    // Bits 6..8 of each byte moved to bits 4..6 of the same byte.
    const TOP2: u32 = 0x3030_3030;
    let sc_hi = (c & LOW4) | ((a >> 2) & TOP2);
    let mn_hi = ((c >> 4) & LOW4) | ((b >> 2) & TOP2);
    (
        u64::from(a & LOW6) | u64::from(sc_hi) << 32,
        u64::from(b & LOW6) | u64::from(mn_hi) << 32,
    )
}

/// Q4_K: d @0, dmin @2, scales @4, qs[128] @16. Element `64 u + 32 n + l`
/// is nibble `n` of `qs[32 u + l]`; group = element / 32.
struct Q4Kx2;

impl PairFormat for Q4Kx2 {
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 144;
    /// One unit per 32 quant bytes: two groups (both nibbles).
    const UNITS: usize = 4;
    const PAIRS_1X: usize = 4;
    type Prep = Affine8x2;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(a: *const u8, b: *const u8) -> Affine8x2 {
        // SAFETY: whole blocks (the contract): d @0, dmin @2, scales @4.
        let ((sca, mna), (scb, mnb), halves) = unsafe {
            (
                scales_mins(a),
                scales_mins(b),
                // dA dB, then -dminA -dminB (the sign flipped in the half:
                // `(-dmin) * m` is exactly `-(dmin * m)`).
                u16_at(a)
                    | u16_at(b) << 16
                    | (u16_at(a.add(2)) ^ 0x8000) << 32
                    | (u16_at(b.add(2)) ^ 0x8000) << 48,
            )
        };
        let v = _mm_castps_pd(_mm_cvtph_ps(_mm_cvtsi64_si128(halves as i64)));
        let d2 = _mm512_castpd_ps(_mm512_broadcastsd_pd(v));
        let m2 = _mm512_castpd_ps(_mm512_broadcastsd_pd(_mm_unpackhi_pd(v, v)));
        // Group g of row A in lane 2g, of row B in lane 2g + 1.
        let pair = |x: u64, y: u64| {
            let q = _mm_unpacklo_epi8(_mm_cvtsi64_si128(x as i64), _mm_cvtsi64_si128(y as i64));
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q))
        };
        let mut p = Affine8x2::default();
        // SAFETY: 64-byte stores into the two 64-byte arrays of `p`.
        unsafe {
            _mm512_storeu_ps((&raw mut p.dl).cast(), _mm512_mul_ps(d2, pair(sca, scb)));
            _mm512_storeu_ps(
                (&raw mut p.neg_ml).cast(),
                _mm512_mul_ps(m2, pair(mna, mnb)),
            );
        }
        p
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, p: &Affine8x2, u: usize, sink: &mut S) {
        // SAFETY: quant bytes 32u..32u + 32 of whole blocks (u < 4).
        let z = unsafe { interleave32(a.add(16 + 32 * u), b.add(16 + 32 * u)) }.map(|i| widen(i));
        for (n, g) in [(0, 2 * u), (1, 2 * u + 1)] {
            // SAFETY: `p` is a reference; `g < 8`.
            let (dl, ml) = unsafe {
                let p = launder(p);
                (splat2(&(*p).dl[g]), splat2(&(*p).neg_ml[g]))
            };
            for (t, z) in z.into_iter().enumerate() {
                let q = if n == 0 { low4(z) } else { high4(z) };
                // SAFETY: vector `4 g + t` of the block, in order.
                unsafe { sink.put(4 * g + t, _mm512_fmadd_ps(dl, to_f32(q), ml)) };
            }
        }
    }
}

/// Q6_K's sixteen group multipliers `d * sc` and `-32 d * sc`, for a pair.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Q6KPrep2 {
    dl: [Two; 16],
    neg_32dl: [Two; 16],
}

/// Q6_K: ql[128] @0 (low 4 bits), qh[64] @128 (high 2 bits), scales[16]
/// (i8) @192, d @208; groups of 16. In half `h` (128 elements), element
/// `128 h + 32 s + l` has low bits from nibble `s / 2` of
/// `ql[64 h + 32 (s % 2) + l]` and high bits `2 s..2 s + 2` of `qh[32 h + l]`.
struct Q6Kx2;

impl PairFormat for Q6Kx2 {
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 210;
    /// One unit per half.
    const UNITS: usize = 2;
    const PAIRS_1X: usize = 4;
    type Prep = Q6KPrep2;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn prep(a: *const u8, b: *const u8) -> Q6KPrep2 {
        // SAFETY: the scales @192..208 and d @208 of whole blocks.
        let (halves, [s0, s1]) = unsafe {
            (
                u16_at(a.add(208)) | u16_at(b.add(208)) << 16,
                interleave16(a.add(192), b.add(192)),
            )
        };
        let v = _mm_castps_pd(_mm_cvtph_ps(_mm_cvtsi64_si128(halves as i64)));
        let d2 = _mm512_castpd_ps(_mm512_broadcastsd_pd(v));
        // Groups 0..8 and 8..16, rows interleaved: `d * sc` and `-32 * (d * sc)`.
        let dl = [s0, s1].map(|s| _mm512_mul_ps(d2, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(s))));
        let minus32 = _mm512_set1_ps(-32.0);
        let mut p = Q6KPrep2::default();
        // SAFETY: 64-byte stores into the halves of the 128-byte arrays of `p`.
        unsafe {
            let (out_dl, out_neg) = (
                (&raw mut p.dl).cast::<f32>(),
                (&raw mut p.neg_32dl).cast::<f32>(),
            );
            for (i, dl) in dl.into_iter().enumerate() {
                _mm512_storeu_ps(out_dl.add(16 * i), dl);
                _mm512_storeu_ps(out_neg.add(16 * i), _mm512_mul_ps(minus32, dl));
            }
        }
        p
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn unit<S: Sink>(a: *const u8, b: *const u8, p: &Q6KPrep2, h: usize, sink: &mut S) {
        // SAFETY: ql bytes 64h..64h + 64 and qh bytes 32h..32h + 32 of whole
        // blocks (h < 2).
        let (ql0, ql1, qh) = unsafe {
            let (qla, qlb) = (a.add(64 * h), b.add(64 * h));
            (
                interleave32(qla, qlb).map(|i| widen(i)),
                interleave32(qla.add(32), qlb.add(32)).map(|i| widen(i)),
                interleave32(a.add(128 + 32 * h), b.add(128 + 32 * h)).map(|i| widen(i)),
            )
        };
        let mask = _mm512_set1_epi32(0x30);
        for s in 0..4 {
            for t in 0..4 {
                let low = match s {
                    0 => low4(ql0[t]),
                    1 => low4(ql1[t]),
                    2 => high4(ql0[t]),
                    _ => high4(ql1[t]),
                };
                // Bits 2s..2s + 2 of qh moved to bits 4..6.
                let high = match s {
                    0 => _mm512_slli_epi32::<4>(qh[t]),
                    1 => _mm512_slli_epi32::<2>(qh[t]),
                    2 => qh[t],
                    _ => _mm512_srli_epi32::<2>(qh[t]),
                };
                // low | (high & 0x30) in one instruction.
                let q = to_f32(_mm512_ternarylogic_epi32::<0xF8>(low, high, mask));
                let g = 8 * h + 2 * s + t / 2;
                // SAFETY: `p` is a reference; `g < 16`.
                let (dl, c) = unsafe {
                    let p = launder(p);
                    (splat2(&(*p).dl[g]), splat2(&(*p).neg_32dl[g]))
                };
                // SAFETY: vector `16 h + 4 s + t` of the block, in order.
                unsafe { sink.put(16 * h + 4 * s + t, _mm512_fmadd_ps(dl, q, c)) };
            }
        }
    }
}

/// Reduces `P` registers, each holding row A's eight canonical lanes in its
/// low half and row B's in its high half (rows `o0 + 2 p`, `o0 + 2 p + 1`),
/// with [`reduce4`], and writes the first `n` of those rows' outputs for
/// activation row `r`.
///
/// The registers go through memory first: [`reduce4`]'s `vhaddps` has no
/// EVEX form, and fed straight from the accumulators it would confine them
/// to the 16 registers VEX can name, making the compiler spill them in the
/// main loop.
///
/// # Safety
/// `P <= 8`, `n <= 2 P`; outputs `(o0..o0 + n, r)` belong to `dst`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn store_halves<const P: usize>(
    halves: [__m512; P],
    n: usize,
    dst: Dst,
    o0: usize,
    r: usize,
) {
    debug_assert!(P <= 8 && n <= 2 * P);
    let mut buf = [0.0f32; 16 * 8];
    for (p, v) in halves.into_iter().enumerate() {
        // SAFETY: 16 values inside `buf` (`p < P <= 8`).
        unsafe { _mm512_storeu_ps(buf.as_mut_ptr().add(16 * p), v) };
    }
    let lanes = launder(buf.as_ptr());
    let mut sums = [0.0f32; 16];
    for q in 0..P.div_ceil(2) {
        // SAFETY: rows `4 q .. 4 q + 4` of `buf` (8 values each; `q < 4`).
        let s = unsafe {
            let row = |i: usize| _mm256_loadu_ps(lanes.add(8 * (4 * q + i)));
            reduce4(row(0), row(1), row(2), row(3))
        };
        // SAFETY: 4 values inside `sums` (`4 q + 4 <= 16`).
        unsafe { _mm_storeu_ps(sums.as_mut_ptr().add(4 * q), s) };
    }
    for (i, &s) in sums.iter().take(n).enumerate() {
        // SAFETY: output `(o0 + i, r)` is ours (`i < n`).
        unsafe { *dst.at(o0 + i, r) = s };
    }
}

// ---- the fused kernel ---------------------------------------------------------------------

/// Multiply-adds each pair vector into `NX` accumulators, one per
/// activation row (`x` points at the current block of duplicated row 0).
struct FmaSink<'a, const NX: usize> {
    acc: &'a mut [__m512; NX],
    x: *const f32,
    x_stride: usize,
}

impl<const NX: usize> Sink for FmaSink<'_, NX> {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
    #[inline]
    unsafe fn put(&mut self, c: usize, v: __m512) {
        for j in 0..NX {
            // SAFETY: vector `c` of the current block lies inside every
            // duplicated activation row (the `Sink` contract on `c`).
            let xv = unsafe { _mm512_loadu_ps(self.x.add(j * self.x_stride + 16 * c)) };
            self.acc[j] = _mm512_fmadd_ps(v, xv, self.acc[j]);
        }
    }
}

/// `x` with every value twice (`x2[2 k] = x2[2 k + 1] = x[k]`), per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
fn duplicate_x<'a>(x: &[f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    let out = aligned(buf, 2 * x.len());
    let idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let mut src = x.chunks_exact(8);
    let mut dst = out.chunks_exact_mut(16);
    for (s, d) in (&mut src).zip(&mut dst) {
        // SAFETY: 8 readable values and 16 writable ones.
        unsafe {
            let v = _mm512_castps256_ps512(_mm256_loadu_ps(s.as_ptr()));
            _mm512_storeu_ps(d.as_mut_ptr(), _mm512_permutexvar_ps(idx, v));
        }
    }
    for (k, &v) in src.remainder().iter().enumerate() {
        let base = 2 * (x.len() / 8 * 8 + k);
        out[base] = v;
        out[base + 1] = v;
    }
    out
}

/// Fused products of every weight row with the (at most two) activation rows.
///
/// # Safety
/// As [`matmul`]; `a.n_x <= 2`; `F` is the weight's format; `n_in` is whole
/// blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn fused<F: PairFormat>(a: &Args<'_>, scratch: &mut Scratch) {
    debug_assert!(a.n_in.is_multiple_of(F::BLOCK_ELEMS) && a.n_x <= 2);
    let x2 = duplicate_x(a.x, &mut scratch.x_pad);
    let mut o = a.rows.start;
    // SAFETY (all calls): rows `o..o + n` exist and their outputs are ours.
    unsafe {
        if a.n_x == 1 {
            o = match F::PAIRS_1X {
                8 => full_tiles::<F, 8, 1>(a, x2, o),
                _ => full_tiles::<F, 4, 1>(a, x2, o),
            };
            tail::<F, 1>(a, x2, o);
        } else {
            o = full_tiles::<F, PAIRS_2X, 2>(a, x2, o);
            tail::<F, 2>(a, x2, o);
        }
    }
}

/// Tiles of `P` pairs from row `o` while whole ones fit; returns the first
/// row left.
///
/// # Safety
/// As [`fused`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn full_tiles<F: PairFormat, const P: usize, const NX: usize>(
    a: &Args<'_>,
    x2: &[f32],
    mut o: usize,
) -> usize {
    while o + 2 * P <= a.rows.end {
        // SAFETY: rows `o..o + 2P` exist and their outputs are ours.
        unsafe { tile::<F, P, NX>(a, x2, o, 2 * P) };
        o += 2 * P;
    }
    o
}

/// The last rows `o..a.rows.end` (fewer than a full tile), in tiles of
/// four, two and one pairs (an odd last row paired with itself).
///
/// # Safety
/// As [`fused`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
unsafe fn tail<F: PairFormat, const NX: usize>(a: &Args<'_>, x2: &[f32], mut o: usize) {
    // SAFETY (all calls): rows `o..o + n` exist and their outputs are ours.
    unsafe {
        while a.rows.end - o >= 8 {
            tile::<F, 4, NX>(a, x2, o, 8);
            o += 8;
        }
        if a.rows.end - o >= 4 {
            tile::<F, 2, NX>(a, x2, o, 4);
            o += 4;
        }
        match a.rows.end - o {
            0 => {}
            3 => tile::<F, 2, NX>(a, x2, o, 3),
            n => tile::<F, 1, NX>(a, x2, o, n),
        }
    }
}

/// Weight rows `o0..o0 + n` (`2 P - 1 <= n <= 2 P`; an odd last row is
/// paired with itself) × the `NX` activation rows, dequantized in registers.
///
/// # Safety
/// As [`fused`]; rows `o0..o0 + n` are in `a.rows`; `x2` is the duplicated
/// activations.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi2,avx2,fma,f16c")]
#[inline(never)]
unsafe fn tile<F: PairFormat, const P: usize, const NX: usize>(
    a: &Args<'_>,
    x2: &[f32],
    o0: usize,
    n: usize,
) {
    debug_assert!(n >= 1 && n <= 2 * P && 2 * P - n <= 1);
    let n_blocks = a.n_in / F::BLOCK_ELEMS;
    let mut acc = [[_mm512_setzero_ps(); NX]; P];
    let row = |i: usize| a.row(o0 + i.min(n - 1)).as_ptr();
    let pairs: [(*const u8, *const u8); P] = std::array::from_fn(|p| (row(2 * p), row(2 * p + 1)));
    // The tile's rows are one contiguous stretch of memory read as 2P
    // interleaved streams: prefetch linearly, a fixed distance ahead.
    let pf_step = n * F::BLOCK_BYTES;
    let pf_start = pairs[0].0.wrapping_add(prefetch_distance(n * a.row_bytes));
    for blk in 0..n_blocks {
        let pf = pf_start.wrapping_add(blk * pf_step);
        let mut line = 0;
        while line < pf_step {
            // A prefetch is only a hint: it never faults, even past the end.
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(line).cast());
            line += 64;
        }
        let off = blk * F::BLOCK_BYTES;
        let mut preps = [F::Prep::default(); P];
        for_each_row!(P, p => {
            let (pa, pb) = pairs[p];
            // SAFETY: block `blk` of rows holding `n_blocks` whole blocks.
            preps[p] = unsafe { F::prep(pa.add(off), pb.add(off)) };
        });
        // SAFETY: block `blk` of every duplicated activation row is in bounds.
        let xb = unsafe { x2.as_ptr().add(2 * blk * F::BLOCK_ELEMS) };
        for u in 0..F::UNITS {
            // Straight-line code over the pairs keeps the accumulators in
            // registers (a loop would keep them in memory).
            for_each_row!(P, p => {
                let mut sink = FmaSink {
                    acc: &mut acc[p],
                    // A fresh pointer per pair: the compiler may not keep
                    // the activations in registers across pairs (it would
                    // spill).
                    x: launder(xb),
                    x_stride: 2 * a.n_in,
                };
                let (pa, pb) = pairs[p];
                // SAFETY: whole blocks of the format at `pa + off`, `pb + off`.
                unsafe {
                    F::unit(
                        launder(pa.add(off)),
                        launder(pb.add(off)),
                        &preps[p],
                        u,
                        &mut sink,
                    )
                };
            });
        }
    }
    // De-interleave: row A's lanes to the low half, row B's to the high.
    let split = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for j in 0..NX {
        let halves: [__m512; P] = std::array::from_fn(|p| _mm512_permutexvar_ps(split, acc[p][j]));
        // SAFETY: outputs `(o0..o0 + n, j)` are ours.
        unsafe { store_halves(halves, n, a.dst, o0, j) };
    }
}
