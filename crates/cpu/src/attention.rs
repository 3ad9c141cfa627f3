//! Attention of one query head over a sequence's KV cache, one pass with an
//! online softmax: positions are visited a cache block at a time (16
//! positions, contiguous in memory); each block's scores update a running
//! maximum, normalizer and weighted sum of values, so K and V are each read
//! exactly once and no score buffer the size of the context is needed.
//!
//! The per-position dot products and value updates use AVX2/FMA/F16C when
//! the CPU has them (f16 caches are widened in registers), else plain loops.
//! A row's result depends only on its own position and cache, never on the
//! batch around it.

use half::f16;
use smelt_backend::{AttnGeometry, AttnRow, HostKv, KvRow};

/// Scores of one block (at most this many positions per cache block).
const MAX_BLOCK: usize = 64;

/// Writes the attention output of query head `h` of one row into `out`
/// (`head_dim` values).
pub fn attend_head(
    q: &[f32],
    kv: &HostKv,
    layer: usize,
    row: &AttnRow<'_>,
    g: &AttnGeometry,
    h: usize,
    out: &mut [f32],
) {
    let d = g.head_dim;
    let rw = kv.layout.row_width();
    let bs = kv.layout.block_size.min(MAX_BLOCK);
    let kvh = h / (g.n_heads / g.n_kv_heads);
    let qh = &q[h * d..(h + 1) * d];
    let n_pos = row.pos as usize + 1;
    // A sliding window starts later; blocks are then visited from the one
    // holding the first visible position.
    let first = g.first_visible(row.pos) as usize;
    let simd = Simd::detect();
    #[cfg(target_arch = "x86_64")]
    if let Simd::Avx2 = simd {
        // SAFETY: `detect` saw avx2, fma and f16c on this CPU.
        let done = unsafe {
            match d {
                64 => avx2::attend_head::<8>(qh, kv, layer, row, first, kvh, g.scale, out),
                128 => avx2::attend_head::<16>(qh, kv, layer, row, first, kvh, g.scale, out),
                _ => false,
            }
        };
        if done {
            return;
        }
    }

    let mut max = f32::NEG_INFINITY;
    let mut norm = 0.0f32;
    out.fill(0.0);
    let mut scores = [0.0f32; MAX_BLOCK];
    let mut p0 = first;
    while p0 < n_pos {
        let count = (bs - p0 % bs).min(n_pos - p0);
        let keys = kv.k_block(layer, row.block_table, p0, count);
        let values = kv.v_block(layer, row.block_table, p0, count);
        let mut block_max = f32::NEG_INFINITY;
        for (j, s) in scores[..count].iter_mut().enumerate() {
            let k = keys.slice(j * rw + kvh * d..j * rw + (kvh + 1) * d);
            *s = simd.dot(qh, k) * g.scale;
            block_max = block_max.max(*s);
        }
        let new_max = max.max(block_max);
        let correction = (max - new_max).exp();
        if correction != 1.0 {
            norm *= correction;
            out.iter_mut().for_each(|o| *o *= correction);
        }
        for (j, s) in scores[..count].iter().enumerate() {
            let w = (s - new_max).exp();
            norm += w;
            let v = values.slice(j * rw + kvh * d..j * rw + (kvh + 1) * d);
            simd.axpy(out, w, v);
        }
        max = new_max;
        p0 += count;
    }
    let inv = 1.0 / norm;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Writes the attention output of every query head of KV head `kvh`'s group
/// (heads `kvh * group .. (kvh + 1) * group`, `group = n_heads /
/// n_kv_heads`) of one row into `out` (`group * head_dim` values, the heads
/// in order); `q` is the row's whole query. Each head's values are
/// [`attend_head`]'s, bit for bit. With AVX-512VL, head width 64 and groups
/// of 2 or 3 heads (SmolLM2: 9 query heads over 3 KV heads), one pass over
/// the cache serves the whole group: each K and V vector is loaded and
/// widened once instead of once per head; otherwise the heads run one by
/// one.
#[allow(clippy::too_many_arguments)]
pub fn attend_group(
    q: &[f32],
    kv: &HostKv,
    layer: usize,
    row: &AttnRow<'_>,
    g: &AttnGeometry,
    kvh: usize,
    out: &mut [f32],
) {
    let d = g.head_dim;
    let group = g.n_heads / g.n_kv_heads;
    let heads = kvh * group..(kvh + 1) * group;
    #[cfg(target_arch = "x86_64")]
    if has_avx512vl() {
        let qg = &q[heads.start * d..heads.end * d];
        let first = g.first_visible(row.pos) as usize;
        let (l, r, s) = (layer, row, g.scale);
        // SAFETY: `has_avx512vl` saw avx2, fma, f16c, avx512f and avx512vl
        // on this CPU; `qg` and `out` hold `group * d` values.
        let done = unsafe {
            match (d, group) {
                (64, 2) => avx2::attend_group::<8, 2>(qg, kv, l, r, first, kvh, s, out),
                (64, 3) => avx2::attend_group::<8, 3>(qg, kv, l, r, first, kvh, s, out),
                _ => false,
            }
        };
        if done {
            return;
        }
    }
    for (i, h) in heads.enumerate() {
        attend_head(q, kv, layer, row, g, h, &mut out[i * d..(i + 1) * d]);
    }
}

/// Whether the CPU has what the fused group kernel needs (AVX2, FMA, F16C,
/// AVX-512F and AVX-512VL).
#[cfg(target_arch = "x86_64")]
fn has_avx512vl() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        matches!(Simd::detect(), Simd::Avx2)
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// Which implementation of the small vector loops this CPU gets.
#[derive(Clone, Copy)]
enum Simd {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Simd {
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static HAS: OnceLock<bool> = OnceLock::new();
            let has = *HAS.get_or_init(|| {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            });
            if has {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }

    /// `q · k`.
    fn dot(self, q: &[f32], k: KvRow<'_>) -> f32 {
        match self {
            Simd::Portable => portable::dot(q, k),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` saw avx2, fma and f16c on this CPU.
            Simd::Avx2 => unsafe { avx2::dot(q, k) },
        }
    }

    /// `out += w * v`.
    fn axpy(self, out: &mut [f32], w: f32, v: KvRow<'_>) {
        match self {
            Simd::Portable => portable::axpy(out, w, v),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` saw avx2, fma and f16c on this CPU.
            Simd::Avx2 => unsafe { avx2::axpy(out, w, v) },
        }
    }
}

mod portable {
    use super::*;

    pub fn dot(q: &[f32], k: KvRow<'_>) -> f32 {
        match k {
            KvRow::F32(k) => q.iter().zip(k).map(|(a, b)| a * b).sum(),
            KvRow::F16(k) => q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum(),
        }
    }

    pub fn axpy(out: &mut [f32], w: f32, v: KvRow<'_>) {
        match v {
            KvRow::F32(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o += w * x),
            KvRow::F16(v) => out
                .iter_mut()
                .zip(v)
                .for_each(|(o, x)| *o += w * x.to_f32()),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
fn portable_get(row: KvRow<'_>, i: usize) -> f32 {
    match row {
        KvRow::F32(r) => r[i],
        KvRow::F16(r) => f16::to_f32(r[i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smelt_backend::testing::TestRng;
    use smelt_backend::{KvLayout, KvType};

    #[test]
    fn simd_and_portable_loops_agree_on_odd_lengths() {
        let mut rng = TestRng::new(9);
        for n in [1, 7, 8, 13, 64, 100] {
            let q: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let k32: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let k16: Vec<f16> = k32.iter().map(|&v| f16::from_f32(v)).collect();
            for k in [KvRow::F32(&k32), KvRow::F16(&k16)] {
                let want = portable::dot(&q, k);
                let got = Simd::detect().dot(&q, k);
                assert!(
                    (got - want).abs() <= 1e-5 * n as f32,
                    "dot n={n}: {got} vs {want}"
                );
                let (mut a, mut b) = (q.clone(), q.clone());
                portable::axpy(&mut a, 0.37, k);
                Simd::detect().axpy(&mut b, 0.37, k);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-6, "axpy n={n}");
                }
            }
        }
    }

    #[test]
    fn online_softmax_matches_two_pass_reference_across_blocks() {
        // 24: the general path; 64 and 128: the register-resident AVX2 kernels.
        for head_dim in [24, 64, 128] {
            online_softmax_case(head_dim);
        }
    }

    #[test]
    fn group_kernel_is_per_head_kernel_bit_for_bit() {
        // 24: the per-head fallback; 64 and 128: the group kernels. Groups
        // of 1, 3 and 4 query heads; block sizes 16 (the group kernel) and
        // 32 (too large for it: head by head).
        let mut rng = TestRng::new(77);
        for d in [24, 64, 128] {
            for (n_heads, n_kv) in [(2, 2), (9, 3), (6, 3), (8, 2)] {
                for block_size in [16, 32] {
                    for window in [None, Some(5), Some(19)] {
                        let g = AttnGeometry {
                            n_heads,
                            n_kv_heads: n_kv,
                            head_dim: d,
                            scale: 0.21,
                            window,
                        };
                        for dtype in [KvType::F32, KvType::F16] {
                            let layout = KvLayout {
                                n_layers: 2,
                                n_blocks: 8,
                                block_size,
                                n_kv_heads: n_kv,
                                head_dim: d,
                                dtype,
                            };
                            let mut kv = HostKv::new(layout).expect("kv");
                            let table = [6u32, 1, 7, 3];
                            let n_pos = 67.min(4 * block_size);
                            for layer in 0..2 {
                                for p in 0..n_pos {
                                    let k: Vec<f32> =
                                        (0..n_kv * d).map(|_| rng.uniform(-3.0, 3.0)).collect();
                                    let v: Vec<f32> =
                                        (0..n_kv * d).map(|_| rng.uniform(-1.0, 1.0)).collect();
                                    let slot = table[p / block_size] as usize * block_size
                                        + p % block_size;
                                    kv.store(layer, slot, &k, &v);
                                }
                            }
                            let q: Vec<f32> =
                                (0..n_heads * d).map(|_| rng.uniform(-2.0, 2.0)).collect();
                            let group = n_heads / n_kv;
                            for pos in [0u32, 3, 15, 16, 17, 40, n_pos as u32 - 1] {
                                let row = AttnRow {
                                    pos,
                                    block_table: &table,
                                };
                                for kvh in 0..n_kv {
                                    let mut got = vec![f32::NAN; group * d];
                                    attend_group(&q, &kv, 1, &row, &g, kvh, &mut got);
                                    for i in 0..group {
                                        let mut want = vec![f32::NAN; d];
                                        attend_head(
                                            &q,
                                            &kv,
                                            1,
                                            &row,
                                            &g,
                                            kvh * group + i,
                                            &mut want,
                                        );
                                        let got = &got[i * d..(i + 1) * d];
                                        assert!(
                                            got.iter()
                                                .zip(&want)
                                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                                            "d {d} heads {n_heads}/{n_kv} bs {block_size} {window:?} \
                                             {dtype:?} pos {pos} kvh {kvh} head {i}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn online_softmax_case(d: usize) {
        for window in [None, Some(1), Some(7), Some(16), Some(21)] {
            online_softmax_window_case(d, window);
        }
    }

    fn online_softmax_window_case(d: usize, window: Option<u32>) {
        let mut rng = TestRng::new(10 + d as u64);
        let g = AttnGeometry {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: d,
            scale: 0.3,
            window,
        };
        for dtype in [KvType::F32, KvType::F16] {
            let layout = KvLayout {
                n_layers: 1,
                n_blocks: 6,
                block_size: 16,
                n_kv_heads: 2,
                head_dim: d,
                dtype,
            };
            let mut kv = HostKv::new(layout).expect("kv");
            let table = [4u32, 0, 5, 2];
            for p in 0..60usize {
                let k: Vec<f32> = (0..2 * d).map(|_| rng.uniform(-3.0, 3.0)).collect();
                let v: Vec<f32> = (0..2 * d).map(|_| rng.uniform(-1.0, 1.0)).collect();
                kv.store(0, table[p / 16] as usize * 16 + p % 16, &k, &v);
            }
            let q: Vec<f32> = (0..4 * d).map(|_| rng.uniform(-2.0, 2.0)).collect();
            for pos in [0u32, 5, 15, 16, 31, 47, 59] {
                let row = AttnRow {
                    pos,
                    block_table: &table,
                };
                for h in 0..4 {
                    let mut scores = vec![0.0; 64];
                    let mut want = vec![0.0; d];
                    smelt_backend::attend_head(&q, &kv, 0, &row, &g, h, &mut scores, &mut want);
                    let mut got = vec![f32::NAN; d];
                    attend_head(&q, &kv, 0, &row, &g, h, &mut got);
                    for (a, b) in got.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 2e-5,
                            "d {d} window {window:?} {dtype:?} pos {pos} head {h}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
