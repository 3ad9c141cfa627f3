//! Weight rows read as bytes and per-block multipliers (the weight side of
//! the Q8 contract, see the parent module's table).
//!
//! A tile row holds, per value, the format's unsigned quant `q` (`w = q -
//! 2^shift`, or `w = q` for the formats with minimums), except Q8_0 whose
//! bytes are the signed `w` itself ([`super::Kind::Wide`]).

use smelt_tensor::DType;

use super::{BLOCK, TILE_ROWS};

/// Up to [`TILE_ROWS`] unpacked weight rows.
///
/// Blocks are counted to an even number (`nbp`) so the AVX-512 kernel can
/// take them in pairs; the padding block is never used in a chain.
#[derive(Default)]
pub(crate) struct Tile {
    /// Blocks per row (`n_in / 32`).
    pub(crate) nb: usize,
    /// `nb` rounded up to even: the row stride is `nbp * 32` bytes.
    pub(crate) nbp: usize,
    /// Rows unpacked (the rest of the tile is stale or zero).
    pub(crate) m: usize,
    /// `w = q - 2^shift` (0: `w = q`, or the signed bytes of Q8_0).
    pub(crate) shift: u32,
    /// The bytes per row (`TILE_ROWS × nbp × 32`).
    pub(crate) q: Vec<u8>,
    /// `dw_b` as `[block][row]`.
    pub(crate) dw: Vec<f32>,
    /// `m_b` as `[block][row]` (formats with minimums).
    pub(crate) m_b: Vec<f32>,
    /// Q6_K: the two half-block scales per block, `[row][block][2]`.
    pub(crate) sc: Vec<i32>,
}

impl Tile {
    fn shape(&mut self, dtype: DType, n_in: usize, m: usize) {
        let nb = n_in / BLOCK;
        let nbp = nb.next_multiple_of(2);
        self.q.resize(TILE_ROWS * nbp * BLOCK, 0);
        self.dw.resize(nbp * TILE_ROWS, 0.0);
        self.m_b.resize(nbp * TILE_ROWS, 0.0);
        self.sc.resize(TILE_ROWS * nbp * 2, 0);
        self.nb = nb;
        self.nbp = nbp;
        self.m = m;
        self.shift = shift_of(dtype);
    }

    /// Row `i`'s bytes.
    pub(crate) fn row(&self, i: usize) -> &[u8] {
        let stride = self.nbp * BLOCK;
        &self.q[i * stride..i * stride + self.nb * BLOCK]
    }

    /// Row `i`'s `w_k`.
    pub(crate) fn w(&self, i: usize, k: usize, wide: bool) -> i32 {
        let q = self.row(i)[k];
        if wide {
            i32::from(q as i8)
        } else if self.shift == 0 {
            i32::from(q)
        } else {
            i32::from(q) - (1 << self.shift)
        }
    }
}

/// `log2` of the offset of the unsigned quants (0: none).
pub(crate) fn shift_of(dtype: DType) -> u32 {
    match dtype {
        DType::Q4_0 => 3,
        DType::Q5_0 => 4,
        DType::Q6K => 5,
        _ => 0,
    }
}

/// Unpacks `m` (at most [`TILE_ROWS`]) rows of `n_in` values of `dtype`
/// stored back to back in `w`. Rows `m..TILE_ROWS` hold zeros or copies:
/// their outputs are never written.
/// Without `bytes` only the multipliers need be written (the AVX2 path
/// then skips the bytes).
pub(crate) fn unpack_tile(
    dtype: DType,
    w: &[u8],
    n_in: usize,
    m: usize,
    tile: &mut Tile,
    bytes: bool,
) {
    tile.shape(dtype, n_in, m);
    #[cfg(target_arch = "x86_64")]
    if super::Isa::Avx2.available() {
        // SAFETY: AVX2 and F16C are present (checked just above); the tile
        // was shaped for `n_in` just above.
        unsafe { simd::unpack(dtype, w, m, tile, bytes) };
        return;
    }
    let _ = bytes;
    unpack_scalar(dtype, w, m, tile);
}

/// The plain-Rust unpacking (portable path, and the tests' reference for
/// the SIMD one).
pub(crate) fn unpack_scalar(dtype: DType, w: &[u8], m: usize, tile: &mut Tile) {
    let row_bytes = w.len() / m.max(1);
    let (nb, nbp) = (tile.nb, tile.nbp);
    for i in 0..TILE_ROWS {
        let q_row = &mut tile.q[i * nbp * BLOCK..(i + 1) * nbp * BLOCK];
        if i >= m {
            clear_row(tile, i);
            continue;
        }
        let src = &w[i * row_bytes..(i + 1) * row_bytes];
        let sc_row = &mut tile.sc[i * nbp * 2..(i + 1) * nbp * 2];
        let mut put = |b: usize, q: &[u8; BLOCK], dw: f32, mb: f32, sc: [i32; 2]| {
            q_row[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(q);
            tile.dw[b * TILE_ROWS + i] = dw;
            tile.m_b[b * TILE_ROWS + i] = mb;
            sc_row[2 * b] = sc[0];
            sc_row[2 * b + 1] = sc[1];
        };
        match dtype {
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0 => {
                let bb = dtype.block_bytes();
                for (b, blk) in src.chunks_exact(bb).enumerate().take(nb) {
                    let d = f16_at(blk, 0);
                    let (q, mb) = match dtype {
                        DType::Q4_0 => (nibbles(&blk[2..18]), 0.0),
                        DType::Q4_1 => (nibbles(&blk[4..20]), f16_at(blk, 2)),
                        DType::Q5_0 => {
                            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                            let lo = nibbles(&blk[6..22]);
                            let q = std::array::from_fn(|k| lo[k] | ((((qh >> k) & 1) as u8) << 4));
                            (q, 0.0)
                        }
                        _ => (std::array::from_fn(|k| blk[2 + k]), 0.0),
                    };
                    put(b, &q, d, mb, [1, 1]);
                }
            }
            DType::Q4K => {
                for (s, blk) in src.chunks_exact(DType::Q4K.block_bytes()).enumerate() {
                    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                    let (sc, mn) = scales_mins_6bit(&blk[4..16]);
                    for j in 0..8 {
                        let (c, shift) = (j / 2, 4 * (j % 2));
                        let qs = &blk[16 + 32 * c..16 + 32 * c + 32];
                        let q: [u8; BLOCK] = std::array::from_fn(|l| (qs[l] >> shift) & 0x0F);
                        let dw = d * f32::from(sc[j]);
                        let mb = -(dmin * f32::from(mn[j]));
                        put(8 * s + j, &q, dw, mb, [1, 1]);
                    }
                }
            }
            DType::Q6K => {
                for (s, blk) in src.chunks_exact(DType::Q6K.block_bytes()).enumerate() {
                    let d = f16_at(blk, 208);
                    for j in 0..8 {
                        let (h, quarter) = (j / 4, j % 4);
                        let ql = &blk[64 * h + 32 * (quarter % 2)..][..32];
                        let qh = &blk[128 + 32 * h..][..32];
                        let (lshift, hshift) = (4 * (quarter / 2), 2 * quarter);
                        let q: [u8; BLOCK] = std::array::from_fn(|l| {
                            ((ql[l] >> lshift) & 0x0F) | (((qh[l] >> hshift) & 3) << 4)
                        });
                        put(8 * s + j, &q, d, 0.0, q6k_scales(blk, j));
                    }
                }
            }
            other => panic!("q8 unpack: no integer path for {other}"),
        }
    }
}

/// Zeroes row `i` of the tile (rows past the weight's end).
fn clear_row(tile: &mut Tile, i: usize) {
    let nbp = tile.nbp;
    tile.q[i * nbp * BLOCK..(i + 1) * nbp * BLOCK].fill(0);
    for b in 0..nbp {
        tile.dw[b * TILE_ROWS + i] = 0.0;
        tile.m_b[b * TILE_ROWS + i] = 0.0;
    }
}

/// The two signed 16-value scales of 32-value block `j` of a Q6_K block.
#[inline(always)]
fn q6k_scales(blk: &[u8], j: usize) -> [i32; 2] {
    [
        i32::from(blk[192 + 2 * j] as i8),
        i32::from(blk[192 + 2 * j + 1] as i8),
    ]
}

/// The 32 nibbles of 16 bytes: element `j` low nibble of byte `j`, element
/// `j + 16` its high nibble.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [u8; BLOCK] {
    std::array::from_fn(|k| {
        let byte = qs[k % 16];
        if k < 16 { byte & 0x0F } else { byte >> 4 }
    })
}

#[inline(always)]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The eight 6-bit (scale, min) pairs of Q4_K, packed in 12 bytes: bytes
/// 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4; the top
/// 2 bits of those bytes are the high bits of scales/mins 4..8, whose low 4
/// bits are the nibbles of bytes 8..12 (scale low, min high).
#[inline(always)]
pub(super) fn scales_mins_6bit(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// AVX2 unpacking: the same bytes and multipliers as [`unpack_scalar`].
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use smelt_tensor::DType;

    use super::{BLOCK, TILE_ROWS, Tile, clear_row, q6k_scales, scales_mins_6bit};

    /// Where one tile row goes: its bytes, and its column of the
    /// `[block][row]` multiplier arrays.
    struct RowOut {
        /// Whether to write the bytes (else only the multipliers).
        write_bytes: bool,
        q: *mut u8,
        dw: *mut f32,
        mb: *mut f32,
    }

    impl RowOut {
        /// Block `b`'s 32 bytes.
        ///
        /// # Safety
        /// `b` must be below the tile's block count.
        #[inline(always)]
        unsafe fn bytes(&self, b: usize, v: __m256i) {
            // SAFETY: 32 bytes at `32 b` of the row (the caller's contract).
            unsafe { _mm256_storeu_si256(self.q.add(b * BLOCK).cast(), v) };
        }

        /// Block `b`'s 32 bytes, `dw` and `m`.
        ///
        /// # Safety
        /// `b` must be below the tile's block count.
        #[inline(always)]
        unsafe fn put(&self, b: usize, v: __m256i, dw: f32, mb: f32) {
            // SAFETY: the tile was shaped for at least `b + 1` blocks (the
            // caller's contract): 32 bytes at `32 b` of the row, and entry
            // `b * TILE_ROWS` of this row's multiplier column.
            unsafe {
                if self.write_bytes {
                    _mm256_storeu_si256(self.q.add(b * BLOCK).cast(), v);
                }
                *self.dw.add(b * TILE_ROWS) = dw;
                *self.mb.add(b * TILE_ROWS) = mb;
            }
        }
    }

    /// The f16 at `p` (little-endian), widened.
    ///
    /// # Safety
    /// Two bytes at `p` must be readable; F16C must be present.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        // SAFETY: the caller's contract.
        let h = unsafe { p.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
    }

    /// # Safety
    /// AVX2 and F16C must be present; the tile must be shaped for `w`'s
    /// rows (`m` rows of `tile.nb` blocks).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn unpack(dtype: DType, w: &[u8], m: usize, tile: &mut Tile, bytes: bool) {
        let row_bytes = w.len() / m.max(1);
        let (nb, nbp) = (tile.nb, tile.nbp);
        let bb = dtype.block_bytes();
        let per = dtype.block_elems() / BLOCK;
        assert!(
            row_bytes * m <= w.len() && nb == row_bytes / bb * per && nb <= nbp,
            "q8 unpack: {} bytes are not {m} rows of {nb} blocks of {dtype}",
            w.len()
        );
        for i in m..TILE_ROWS {
            clear_row(tile, i);
        }
        let low = _mm256_set1_epi8(0x0F);
        let legacy = matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0);
        for i in 0..m {
            if legacy && !bytes {
                break;
            }
            let src = w[i * row_bytes..(i + 1) * row_bytes].as_ptr();
            let out = RowOut {
                write_bytes: bytes,
                q: tile.q[i * nbp * BLOCK..].as_mut_ptr(),
                dw: tile.dw[i..].as_mut_ptr(),
                mb: tile.m_b[i..].as_mut_ptr(),
            };
            // SAFETY (every block below): `src + b * bb` is block `b < nb` of
            // the row (the assert above), and each read stays inside it;
            // `put` gets `b < nb`.
            match dtype {
                DType::Q4_0 => {
                    for b in 0..nb {
                        unsafe { out.bytes(b, nibbles(src.add(b * bb + 2))) };
                    }
                }
                DType::Q4_1 => {
                    for b in 0..nb {
                        unsafe { out.bytes(b, nibbles(src.add(b * bb + 4))) };
                    }
                }
                DType::Q5_0 => {
                    for b in 0..nb {
                        unsafe {
                            let blk = src.add(b * bb);
                            let qh = blk.add(2).cast::<u32>().read_unaligned();
                            out.bytes(b, _mm256_or_si256(nibbles(blk.add(6)), fifth_bits(qh)));
                        }
                    }
                }
                DType::Q8_0 => {
                    for b in 0..nb {
                        unsafe { out.bytes(b, _mm256_loadu_si256(src.add(b * bb + 2).cast())) };
                    }
                }
                DType::Q4K => {
                    for s in 0..nb / 8 {
                        unsafe {
                            let blk = src.add(s * bb);
                            let (d, dmin) = (f16(blk), f16(blk.add(2)));
                            let (sc, mn) =
                                scales_mins_6bit(std::slice::from_raw_parts(blk.add(4), 12));
                            for c in 0..4 {
                                let v = _mm256_loadu_si256(blk.add(16 + 32 * c).cast());
                                let (j0, j1) = (2 * c, 2 * c + 1);
                                let lo = _mm256_and_si256(v, low);
                                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                                let m0 = -(dmin * f32::from(mn[j0]));
                                let m1 = -(dmin * f32::from(mn[j1]));
                                out.put(8 * s + j0, lo, d * f32::from(sc[j0]), m0);
                                out.put(8 * s + j1, hi, d * f32::from(sc[j1]), m1);
                            }
                        }
                    }
                }
                DType::Q6K => {
                    let sc_row = &mut tile.sc[i * nbp * 2..(i + 1) * nbp * 2];
                    let two = _mm256_set1_epi8(3);
                    for s in 0..nb / 8 {
                        let blk = &w[i * row_bytes + s * bb..i * row_bytes + (s + 1) * bb];
                        // SAFETY: inside the 210-byte block.
                        let d = unsafe { f16(blk.as_ptr().add(208)) };
                        for h in 0..2 {
                            // SAFETY: ql halves at 64 h (+32) and qh at 128 +
                            // 32 h, 32 bytes each, inside the block.
                            let (ql0, ql1, qh) = unsafe {
                                (
                                    _mm256_loadu_si256(blk.as_ptr().add(64 * h).cast()),
                                    _mm256_loadu_si256(blk.as_ptr().add(64 * h + 32).cast()),
                                    _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * h).cast()),
                                )
                            };
                            let high = |sh: i32| {
                                let v = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(sh));
                                _mm256_slli_epi16::<4>(_mm256_and_si256(v, two))
                            };
                            let lo4 = |v| _mm256_and_si256(v, low);
                            let hi4 = |v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                            let b0 = 8 * s + 4 * h;
                            // SAFETY: blocks `b0..b0 + 4` are below `nb`.
                            unsafe {
                                out.put(b0, _mm256_or_si256(lo4(ql0), high(0)), d, 0.0);
                                out.put(b0 + 1, _mm256_or_si256(lo4(ql1), high(2)), d, 0.0);
                                out.put(b0 + 2, _mm256_or_si256(hi4(ql0), high(4)), d, 0.0);
                                out.put(b0 + 3, _mm256_or_si256(hi4(ql1), high(6)), d, 0.0);
                            }
                        }
                        for j in 0..8 {
                            let sc = q6k_scales(blk, j);
                            sc_row[2 * (8 * s + j)] = sc[0];
                            sc_row[2 * (8 * s + j) + 1] = sc[1];
                        }
                    }
                }
                other => panic!("q8 unpack: no integer path for {other}"),
            }
        }
        if matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0) {
            // SAFETY: the assert above: `m` rows of `nb` blocks of `bb` bytes.
            unsafe { legacy_scales(w, row_bytes, m, nb, bb, dtype == DType::Q4_1, tile) };
        }
    }

    /// `dw` (and Q4_1's `m`) of the 32-value formats, eight rows at a time:
    /// the block's first four bytes (`d`, then `m` or quants) gathered from
    /// the eight rows, widened from f16 together. Rows past `m` read row 0
    /// (their outputs are never written).
    ///
    /// # Safety
    /// AVX2 and F16C must be present; `w` must hold `m` rows of `row_bytes`
    /// with `nb` blocks of `bb` bytes each; the tile must be shaped for `nb`.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn legacy_scales(
        w: &[u8],
        row_bytes: usize,
        m: usize,
        nb: usize,
        bb: usize,
        min: bool,
        tile: &mut Tile,
    ) {
        assert!(m >= 1 && m * row_bytes <= w.len() && nb * bb <= row_bytes);
        assert!(w.len() <= i32::MAX as usize && tile.dw.len() >= nb * TILE_ROWS);
        let rows: [i32; TILE_ROWS] =
            std::array::from_fn(|i| if i < m { (i * row_bytes) as i32 } else { 0 });
        // SAFETY: eight i32.
        let rows = unsafe { _mm256_loadu_si256(rows.as_ptr().cast()) };
        let low = _mm256_set1_epi32(0xFFFF);
        let widen = |v: __m256i| {
            let packed = _mm256_packus_epi32(v, v);
            let halves = _mm256_permute4x64_epi64::<0b10_00>(packed);
            _mm256_cvtph_ps(_mm256_castsi256_si128(halves))
        };
        for b in 0..nb {
            let idx = _mm256_add_epi32(rows, _mm256_set1_epi32((b * bb) as i32));
            // SAFETY: each index is the start of block `b` of a row in `w`,
            // and a block holds at least 4 bytes; the tile holds `nb * 8`
            // multipliers.
            unsafe {
                let v = _mm256_i32gather_epi32::<1>(w.as_ptr().cast(), idx);
                _mm256_storeu_ps(
                    tile.dw.as_mut_ptr().add(b * TILE_ROWS),
                    widen(_mm256_and_si256(v, low)),
                );
                let mb = if min {
                    widen(_mm256_srli_epi32::<16>(v))
                } else {
                    _mm256_setzero_ps()
                };
                _mm256_storeu_ps(tile.m_b.as_mut_ptr().add(b * TILE_ROWS), mb);
            }
        }
    }

    /// The 32 nibbles of the 16 bytes at `p`, in element order.
    ///
    /// # Safety
    /// 16 bytes at `p` must be readable; AVX2 must be present.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller's contract.
        let v = unsafe { _mm_loadu_si128(p.cast()) };
        let low = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(v), low),
            _mm_and_si128(v, low),
        )
    }

    /// `0x10` in byte `k` where bit `k` of `qh` is set.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn fifth_bits(qh: u32) -> __m256i {
        let v = _mm256_set1_epi32(qh as i32);
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread), bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

#[cfg(test)]
mod tests {
    use smelt_backend::testing::{TestRng, random_weight};
    use smelt_tensor::{DType, dequantize_row};

    use super::{BLOCK, TILE_ROWS, Tile, unpack_scalar, unpack_tile};

    const TYPES: [DType; 6] = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q8_0,
        DType::Q4K,
        DType::Q6K,
    ];

    /// `dw * w + m` (Q6_K: `(dw * sc) * w`) is the reference dequantization.
    #[test]
    fn unpacked_rows_dequantize_to_the_reference() {
        let mut rng = TestRng::new(77);
        for dtype in TYPES {
            let n_in = 3 * dtype.block_elems();
            for m in [1, 5, 8] {
                let w = random_weight(&mut rng, dtype, n_in, m).bytes().to_vec();
                let mut tile = Tile::default();
                tile.shape(dtype, n_in, m);
                unpack_scalar(dtype, &w, m, &mut tile);
                let rb = w.len() / m;
                for i in 0..m {
                    let mut want = vec![0.0f32; n_in];
                    dequantize_row(dtype, &w[i * rb..(i + 1) * rb], &mut want);
                    for b in 0..n_in / BLOCK {
                        let (dw, mb) = (tile.dw[b * TILE_ROWS + i], tile.m_b[b * TILE_ROWS + i]);
                        let sc = [
                            tile.sc[(i * tile.nbp + b) * 2],
                            tile.sc[(i * tile.nbp + b) * 2 + 1],
                        ];
                        for k in 0..BLOCK {
                            let wk = tile.w(i, b * BLOCK + k, dtype == DType::Q8_0) as f32;
                            let got = if dtype == DType::Q6K {
                                (dw * sc[k / 16] as f32) * wk
                            } else {
                                dw * wk + mb
                            };
                            let want = want[b * BLOCK + k];
                            // Equal as numbers: `d * 0 + 0` is +0 where the
                            // reference may give -0.
                            assert!(
                                got == want,
                                "{dtype} row {i} value {}: {got} vs {want}",
                                b * BLOCK + k
                            );
                        }
                    }
                }
            }
        }
    }

    /// The SIMD unpacking writes what the scalar one does.
    #[test]
    fn simd_unpacking_equals_the_scalar_one() {
        let mut rng = TestRng::new(78);
        for dtype in TYPES {
            for blocks in [1, 3] {
                let n_in = blocks * dtype.block_elems();
                for m in [1, 7, 8] {
                    let w = random_weight(&mut rng, dtype, n_in, m).bytes().to_vec();
                    let (mut a, mut b) = (Tile::default(), Tile::default());
                    unpack_tile(dtype, &w, n_in, m, &mut a, true);
                    b.shape(dtype, n_in, m);
                    unpack_scalar(dtype, &w, m, &mut b);
                    for i in 0..m {
                        assert_eq!(a.row(i), b.row(i), "{dtype} {n_in} row {i}: bytes");
                    }
                    // Multipliers of the unpacked rows (padding rows may differ).
                    let bits = |v: &[f32]| {
                        v.chunks(TILE_ROWS)
                            .take(a.nb)
                            .flat_map(|c| c[..m].iter().map(|x| x.to_bits()))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&a.dw), bits(&b.dw), "{dtype}: dw");
                    assert_eq!(bits(&a.m_b), bits(&b.m_b), "{dtype}: m");
                    if dtype == DType::Q6K {
                        for i in 0..m {
                            let r = i * a.nbp * 2..i * a.nbp * 2 + a.nb * 2;
                            assert_eq!(a.sc[r.clone()], b.sc[r], "{dtype}: scales");
                        }
                    }
                }
            }
        }
    }
}
