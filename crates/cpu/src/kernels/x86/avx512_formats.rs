//! Dequantization of two weight rows at a time into AVX-512 registers,
//! interleaved lane by lane (lane `2 j`: row A, lane `2 j + 1`: row B), for
//! the types of the target models: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K.
//!
//! Every value is the one the AVX2 formats (and the scalar reference)
//! produce: the same exact products and single roundings (`fma(d, q, c)`,
//! `d * q`), only two rows per register. Integer tricks (byte interleaving,
//! 5th-bit masks, packed 6-bit scale decoding) only move bits; nothing is
//! approximated and the activations are never quantized.

use std::arch::x86_64::*;

use super::formats::launder;

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
pub(super) struct Q4_0x2;

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
pub(super) struct Q4_1x2;

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
pub(super) struct Q5_0x2;

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
pub(super) struct Q8_0x2;

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
pub(super) struct Q4Kx2;

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
pub(super) struct Q6Kx2;

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
