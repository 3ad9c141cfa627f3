//! Weight rows read as int8 values and per-block multipliers (the weight
//! side of the Q8 contract, see the parent module's table).

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
    /// `w_k` per row (`TILE_ROWS × nbp × 32`).
    pub(crate) q: Vec<i8>,
    /// `dw_b` as `[block][row]`.
    pub(crate) dw: Vec<f32>,
    /// `m_b` as `[block][row]` (formats with minimums).
    pub(crate) m_b: Vec<f32>,
    /// `128 * Σ_b w` (Q6_K: `128 * (sc_a Σ_a w + sc_b Σ_b w)`) as `[block][row]`.
    pub(crate) c: Vec<i32>,
    /// Q6_K: the two half-block scales per block, `[row][block][2]`.
    pub(crate) sc: Vec<i32>,
}

impl Tile {
    fn shape(&mut self, n_in: usize, m: usize) {
        let nb = n_in / BLOCK;
        let nbp = nb.next_multiple_of(2);
        if self.nbp != nbp {
            self.q.clear();
            self.dw.clear();
            self.m_b.clear();
            self.c.clear();
            self.sc.clear();
        }
        self.q.resize(TILE_ROWS * nbp * BLOCK, 0);
        self.dw.resize(nbp * TILE_ROWS, 0.0);
        self.m_b.resize(nbp * TILE_ROWS, 0.0);
        self.c.resize(nbp * TILE_ROWS, 0);
        self.sc.resize(TILE_ROWS * nbp * 2, 0);
        self.nb = nb;
        self.nbp = nbp;
        self.m = m;
    }

    /// Row `i`'s `w_k`.
    pub(crate) fn row(&self, i: usize) -> &[i8] {
        let stride = self.nbp * BLOCK;
        &self.q[i * stride..i * stride + self.nb * BLOCK]
    }
}

/// Unpacks `m` (at most [`TILE_ROWS`]) rows of `n_in` values of `dtype`
/// stored back to back in `w`. Rows `m..TILE_ROWS` are zeroed.
pub(crate) fn unpack_tile(dtype: DType, w: &[u8], n_in: usize, m: usize, tile: &mut Tile) {
    tile.shape(n_in, m);
    #[cfg(target_arch = "x86_64")]
    if super::Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are present (checked just above); the body is
        // plain Rust compiled with them enabled, so that it vectorizes.
        unsafe { unpack_avx2(dtype, w, n_in, m, tile) };
        return;
    }
    unpack_body(dtype, w, n_in, m, tile);
}

/// [`unpack_body`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unpack_avx2(dtype: DType, w: &[u8], n_in: usize, m: usize, tile: &mut Tile) {
    unpack_body(dtype, w, n_in, m, tile);
}

#[inline(always)]
fn unpack_body(dtype: DType, w: &[u8], n_in: usize, m: usize, tile: &mut Tile) {
    let row_bytes = w.len() / m.max(1);
    let (nb, nbp) = (tile.nb, tile.nbp);
    for i in 0..TILE_ROWS {
        let q_row = &mut tile.q[i * nbp * BLOCK..(i + 1) * nbp * BLOCK];
        if i >= m {
            q_row.fill(0);
            for b in 0..nbp {
                tile.dw[b * TILE_ROWS + i] = 0.0;
                tile.m_b[b * TILE_ROWS + i] = 0.0;
                tile.c[b * TILE_ROWS + i] = 0;
            }
            continue;
        }
        let src = &w[i * row_bytes..(i + 1) * row_bytes];
        let sc_row = &mut tile.sc[i * nbp * 2..(i + 1) * nbp * 2];
        let mut put = |b: usize, q: &[i8; BLOCK], dw: f32, mb: f32, sc: [i32; 2]| {
            q_row[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(q);
            let half = |h: usize| {
                q[h * 16..h * 16 + 16]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum::<i32>()
            };
            tile.dw[b * TILE_ROWS + i] = dw;
            tile.m_b[b * TILE_ROWS + i] = mb;
            tile.c[b * TILE_ROWS + i] = 128 * (sc[0] * half(0) + sc[1] * half(1));
            sc_row[2 * b] = sc[0];
            sc_row[2 * b + 1] = sc[1];
        };
        match dtype {
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0 => {
                let bb = dtype.block_bytes();
                for (b, blk) in src.chunks_exact(bb).enumerate().take(nb) {
                    let (q, dw, mb) = legacy_block(dtype, blk);
                    put(b, &q, dw, mb, [1, 1]);
                }
            }
            DType::Q4K => {
                for (s, blk) in src.chunks_exact(DType::Q4K.block_bytes()).enumerate() {
                    let d = f16_at(blk, 0);
                    let dmin = f16_at(blk, 2);
                    let (sc, mn) = scales_mins_6bit(&blk[4..16]);
                    for j in 0..8 {
                        let (c, shift) = (j / 2, 4 * (j % 2));
                        let qs = &blk[16 + 32 * c..16 + 32 * c + 32];
                        let q: [i8; BLOCK] =
                            std::array::from_fn(|l| ((qs[l] >> shift) & 0x0F) as i8);
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
                        let q: [i8; BLOCK] = std::array::from_fn(|l| {
                            let low = (ql[l] >> lshift) & 0x0F;
                            let high = (qh[l] >> hshift) & 3;
                            (low | (high << 4)) as i8 - 32
                        });
                        let sc = [
                            i32::from(blk[192 + 2 * j] as i8),
                            i32::from(blk[192 + 2 * j + 1] as i8),
                        ];
                        put(8 * s + j, &q, d, 0.0, sc);
                    }
                }
            }
            other => panic!("q8 unpack: no integer path for {other}"),
        }
        let _ = n_in;
    }
}

/// One 32-value block of Q4_0, Q4_1, Q5_0 or Q8_0: `(w_k, dw, m)`.
#[inline(always)]
fn legacy_block(dtype: DType, blk: &[u8]) -> ([i8; BLOCK], f32, f32) {
    let d = f16_at(blk, 0);
    match dtype {
        DType::Q4_0 => (nibbles(&blk[2..18], 8), d, 0.0),
        DType::Q4_1 => (nibbles(&blk[4..20], 0), d, f16_at(blk, 2)),
        DType::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let lo = nibbles(&blk[6..22], 0);
            let q = std::array::from_fn(|k| (lo[k] | ((((qh >> k) & 1) as i8) << 4)) - 16);
            (q, d, 0.0)
        }
        _ => (std::array::from_fn(|k| blk[2 + k] as i8), d, 0.0),
    }
}

/// The 32 nibbles of 16 bytes (element `j` low nibble of byte `j`, element
/// `j + 16` its high nibble), minus `offset`.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i8) -> [i8; BLOCK] {
    std::array::from_fn(|k| {
        let byte = qs[k % 16];
        let v = if k < 16 { byte & 0x0F } else { byte >> 4 };
        v as i8 - offset
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

#[cfg(test)]
mod tests {
    use smelt_backend::testing::{TestRng, random_weight};
    use smelt_tensor::{DType, dequantize_row};

    use super::{BLOCK, TILE_ROWS, Tile, unpack_tile};

    /// `dw * w + m` (Q6_K: `(dw * sc) * w`) is the reference dequantization,
    /// exactly, and `c` is `128 Σ w` (scaled for Q6_K).
    #[test]
    fn unpacked_rows_dequantize_to_the_reference() {
        let mut rng = TestRng::new(77);
        for dtype in [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q8_0,
            DType::Q4K,
            DType::Q6K,
        ] {
            let n_in = 3 * dtype.block_elems();
            for m in [1, 5, 8] {
                let w = random_weight(&mut rng, dtype, n_in, m).bytes().to_vec();
                let mut tile = Tile::default();
                unpack_tile(dtype, &w, n_in, m, &mut tile);
                let rb = w.len() / m;
                for i in 0..m {
                    let mut want = vec![0.0f32; n_in];
                    dequantize_row(dtype, &w[i * rb..(i + 1) * rb], &mut want);
                    let q = tile.row(i);
                    for b in 0..n_in / BLOCK {
                        let (dw, mb) = (tile.dw[b * TILE_ROWS + i], tile.m_b[b * TILE_ROWS + i]);
                        let sc = [
                            tile.sc[(i * tile.nbp + b) * 2],
                            tile.sc[(i * tile.nbp + b) * 2 + 1],
                        ];
                        let mut c = 0;
                        for k in 0..BLOCK {
                            let wk = i32::from(q[b * BLOCK + k]);
                            c += 128 * sc[k / 16] * wk;
                            let got = if dtype == DType::Q6K {
                                (dw * sc[k / 16] as f32) * wk as f32
                            } else {
                                dw * wk as f32 + mb
                            };
                            let want = want[b * BLOCK + k];
                            // (Equal as numbers: `d * 0 + 0` is +0 where the
                            // reference may give -0.)
                            assert!(
                                got == want,
                                "{dtype} row {i} value {}: {got} vs {want}",
                                b * BLOCK + k
                            );
                        }
                        assert_eq!(tile.c[b * TILE_ROWS + i], c, "{dtype} row {i} block {b}: c");
                    }
                }
            }
        }
    }
}
