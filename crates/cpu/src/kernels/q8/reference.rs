//! The Q8 contract in plain Rust: [`dot_reference`] (element by element,
//! straight from the formats, for the tests) and the portable tile kernel.

use smelt_tensor::DType;

use super::unpack::{Tile, f16_at, scales_mins_6bit};
use super::{ActQ8, BLOCK, Kind, TILE_ROWS};
use crate::kernels::Dst;

/// The integer `w_k` of element `k` of a stored row (the module table).
fn weight_int(dtype: DType, row: &[u8], k: usize) -> i32 {
    let bb = dtype.block_bytes();
    let blk = &row[(k / dtype.block_elems()) * bb..][..bb];
    let nib = |qs: &[u8], j: usize| i32::from(if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 });
    match dtype {
        DType::Q8_0 => i32::from(blk[2 + k % 32] as i8),
        DType::Q4_0 => nib(&blk[2..18], k % 32) - 8,
        DType::Q4_1 => nib(&blk[4..20], k % 32),
        DType::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            nib(&blk[6..22], k % 32) + (((qh >> (k % 32)) & 1) << 4) as i32 - 16
        }
        DType::Q4K => {
            // Element 64 c + 32 n + l: nibble n of qs[32 c + l].
            let e = k % 256;
            let (c, n, l) = (e / 64, (e / 32) % 2, e % 32);
            i32::from((blk[16 + 32 * c + l] >> (4 * n)) & 15)
        }
        DType::Q6K => {
            // Element 128 h + 64 n + l' (l' < 64): nibble n of ql[64 h + l'];
            // high bits: element 128 h + 32 s + l at bits 2 s of qh[32 h + l].
            let e = k % 256;
            let (h, t) = (e / 128, e % 128);
            let low = (blk[64 * h + t % 64] >> (4 * (t / 64))) & 15;
            let high = (blk[128 + 32 * h + t % 32] >> (2 * (t / 32))) & 3;
            i32::from(low | (high << 4)) - 32
        }
        other => panic!("q8: no integer path for {other}"),
    }
}

/// `(dw_b, m_b, [sc_a, sc_b])` of 32-value block `b` of a stored row.
fn block_mults(dtype: DType, row: &[u8], b: usize) -> (f32, f32, [i32; 2]) {
    let per = dtype.block_elems() / BLOCK;
    let bb = dtype.block_bytes();
    let blk = &row[(b / per) * bb..][..bb];
    let j = b % per;
    match dtype {
        DType::Q4_1 => (f16_at(blk, 0), f16_at(blk, 2), [1, 1]),
        DType::Q4K => {
            let (sc, mn) = scales_mins_6bit(&blk[4..16]);
            (
                f16_at(blk, 0) * f32::from(sc[j]),
                -(f16_at(blk, 2) * f32::from(mn[j])),
                [1, 1],
            )
        }
        DType::Q6K => (
            f16_at(blk, 208),
            0.0,
            [
                i32::from(blk[192 + 2 * j] as i8),
                i32::from(blk[192 + 2 * j + 1] as i8),
            ],
        ),
        _ => (f16_at(blk, 0), 0.0, [1, 1]),
    }
}

/// One output of the Q8 contract, written out: weight row `row` (stored as
/// `dtype`, `x.n_in` values) against quantized activation row `r`.
///
/// # Panics
/// If `dtype` has no integer path or `row` is too short.
pub fn dot_reference(dtype: DType, row: &[u8], x: &ActQ8, r: usize) -> f32 {
    let q = x.row_q(r).to_vec();
    let (d, ds) = (x.row_d(r), x.row_ds(r));
    let mut acc = 0.0f32;
    for b in 0..x.n_in / BLOCK {
        let (dw, m, sc) = block_mults(dtype, row, b);
        let mut i_b = 0i32;
        for (k, &qk) in q.iter().enumerate().skip(b * BLOCK).take(BLOCK) {
            let half = (k % BLOCK) / 16;
            i_b += sc[half] * weight_int(dtype, row, k) * i32::from(qk);
        }
        if matches!(dtype, DType::Q4_1 | DType::Q4K) {
            acc += m.mul_add(ds[b], (i_b as f32) * (dw * d[b]));
        } else {
            acc = (i_b as f32).mul_add(dw * d[b], acc);
        }
    }
    acc
}

/// The portable kernel: `m` unpacked weight rows (from `o`) against every
/// activation row.
///
/// # Safety
/// `dst` must be valid and exclusive for outputs `(o..o + m, 0..x.n_rows)`.
pub(super) unsafe fn tile(kind: Kind, t: &Tile, x: &ActQ8, o: usize, m: usize, dst: Dst) {
    let (n_in, nb) = (x.n_in, t.nb);
    let wide = kind == Kind::Wide;
    for i in 0..m {
        let sc = &t.sc[i * t.nbp * 2..];
        let w: Vec<i32> = (0..n_in).map(|k| t.w(i, k, wide)).collect();
        for r in 0..x.n_rows {
            let xs = x.row_q(r);
            let (d, ds) = (x.row_d(r), x.row_ds(r));
            let mut acc = 0.0f32;
            for b in 0..nb {
                let dot = |h: usize| -> i32 {
                    let at = b * BLOCK + 16 * h;
                    w[at..at + 16]
                        .iter()
                        .zip(&xs[at..at + 16])
                        .map(|(&wk, &q)| wk * i32::from(q))
                        .sum()
                };
                let (s0, s1) = match kind {
                    Kind::Halves => (sc[2 * b], sc[2 * b + 1]),
                    _ => (1, 1),
                };
                let i_b = s0 * dot(0) + s1 * dot(1);
                let s = t.dw[b * TILE_ROWS + i] * d[b];
                if kind == Kind::Min {
                    acc += t.m_b[b * TILE_ROWS + i].mul_add(ds[b], i_b as f32 * s);
                } else {
                    acc = (i_b as f32).mul_add(s, acc);
                }
            }
            // SAFETY: `(o + i, r)` is one of our outputs.
            unsafe { *dst.at(o + i, r) = acc };
        }
    }
}
