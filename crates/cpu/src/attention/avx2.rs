//! The AVX2 + FMA + F16C (and AVX-512VL group) loops of `attention`: each
//! is checked against the portable loops in `attention`'s tests.

use std::arch::x86_64::*;

use super::*;

/// Asks for the cache lines of `row` (a hint that never faults).
#[inline(always)]
fn prefetch_row(row: KvRow<'_>) {
    let (ptr, bytes) = match row {
        KvRow::F32(r) => (r.as_ptr() as *const i8, std::mem::size_of_val(r)),
        KvRow::F16(r) => (r.as_ptr() as *const i8, std::mem::size_of_val(r)),
    };
    let mut off = 0;
    while off < bytes {
        // SAFETY: a prefetch is a hint and never faults; the address is
        // inside `row`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.add(off)) };
        off += 64;
    }
    // The last line, where the row does not start on a line boundary.
    if bytes > 0 {
        // SAFETY: as above (the row's last byte).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.add(bytes - 1)) };
    }
}

/// Loads 8 values of a row at `i` as f32.
///
/// # Safety
/// `i + 8 <= row length`; the CPU has AVX2 and F16C.
#[inline(always)]
unsafe fn load8(row: KvRow<'_>, i: usize) -> __m256 {
    // SAFETY: in bounds per the contract; unaligned loads.
    unsafe {
        match row {
            KvRow::F32(r) => _mm256_loadu_ps(r.as_ptr().add(i)),
            KvRow::F16(r) => _mm256_cvtph_ps(_mm_loadu_si128(r.as_ptr().add(i) as *const __m128i)),
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only AVX operations.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `k` is at least as long as `q`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(q: &[f32], k: KvRow<'_>) -> f32 {
    let n = q.len();
    let mut i = 0;
    let mut acc = _mm256_setzero_ps();
    // SAFETY: every load reads `i..i + 8` with `i + 8 <= n`.
    unsafe {
        while i + 8 <= n {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i)), load8(k, i), acc);
            i += 8;
        }
        let mut sum = hsum(acc);
        while i < n {
            sum += q[i] * super::portable_get(k, i);
            i += 1;
        }
        sum
    }
}

/// `e^x` for 8 lanes (|relative error| < 2e-7 for x in [-87, 0]; lanes
/// below -87, including -inf, give exactly 0).
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    // SAFETY: register-only AVX2/FMA operations.
    unsafe {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.0));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        // x = n ln2 + r, |r| <= ln2 / 2.
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        // e^r by its Taylor polynomial to degree 6 (Horner).
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // Multiply by 2^n through the exponent bits.
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
        _mm256_andnot_ps(tiny, y)
    }
}

/// The 8 horizontal sums of `a[0..8]`, as one vector (lane j = sum of a[j]).
#[inline(always)]
unsafe fn hsum8(a: [__m256; 8]) -> __m256 {
    // SAFETY: register-only AVX operations.
    unsafe {
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(u0, u1),
            _mm256_permute2f128_ps::<0x31>(u0, u1),
        )
    }
}

/// One cache block's update of one head's online softmax: the scores
/// of positions `0..count` (position j's head at `j * stride + offset`
/// of `keys`), the running maximum `max`, normalizer `norm` and weighted
/// sum of values `acc` (width `8 * C`). The per-head kernel and the
/// group kernel both run exactly this, so their values are the same bit
/// for bit.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `count <= MAX_BLOCK`; `keys` and
/// `values` hold `(count - 1) * stride + offset + 8 * C` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_update<const C: usize>(
    qv: &[__m256; C],
    keys: KvRow<'_>,
    values: KvRow<'_>,
    stride: usize,
    offset: usize,
    count: usize,
    scale: f32,
    acc: &mut [__m256; C],
    max: &mut f32,
    norm: &mut f32,
) {
    // SAFETY: every load reads 8 values at `j * stride + offset + 8 c`
    // with `j < count`, `c < C`, inside the rows (the contract).
    unsafe {
        let mut scores = [f32::NEG_INFINITY; MAX_BLOCK];
        // Scores, 8 positions at a time.
        let mut j0 = 0;
        while j0 < count {
            let mut dots = [_mm256_setzero_ps(); 8];
            for (jj, dot) in dots.iter_mut().enumerate().take(count - j0) {
                let base = (j0 + jj) * stride + offset;
                for (c, qc) in qv.iter().enumerate() {
                    *dot = _mm256_fmadd_ps(*qc, load8(keys, base + 8 * c), *dot);
                }
            }
            let s = _mm256_mul_ps(hsum8(dots), _mm256_set1_ps(scale));
            _mm256_storeu_ps(scores.as_mut_ptr().add(j0), s);
            j0 += 8;
        }
        let mut block_max = f32::NEG_INFINITY;
        for s in &scores[..count] {
            block_max = block_max.max(*s);
        }
        let new_max = max.max(block_max);
        let correction = (*max - new_max).exp();
        *norm *= correction;
        let cv = _mm256_set1_ps(correction);
        for a in acc.iter_mut() {
            *a = _mm256_mul_ps(*a, cv);
        }
        // Weights e^(s - max), 8 at a time; positions past `count`
        // score -inf and weigh 0.
        let mv = _mm256_set1_ps(new_max);
        let mut j0 = 0;
        while j0 < count {
            let mut w = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores.as_ptr().add(j0)), mv));
            if count - j0 < 8 {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((count - j0) as i32), lane);
                w = _mm256_and_ps(w, _mm256_castsi256_ps(keep));
            }
            let mut ws = [0.0f32; 8];
            _mm256_storeu_ps(ws.as_mut_ptr(), w);
            for (jj, &wj) in ws.iter().enumerate().take(count - j0) {
                *norm += wj;
                let wv = _mm256_set1_ps(wj);
                let base = (j0 + jj) * stride + offset;
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(wv, load8(values, base + 8 * c), *a);
                }
            }
            j0 += 8;
        }
        *max = new_max;
    }
}

/// The whole attention of one head of width `8 * C` (C = 8: 64, C = 16:
/// 128) over positions `first..=row.pos`, the output accumulated in
/// registers; false if the cache block is larger than this kernel
/// handles (the caller then takes the general path).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `q` and `out` hold `8 * C` values.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_head<const C: usize>(
    q: &[f32],
    kv: &HostKv,
    layer: usize,
    row: &AttnRow<'_>,
    first: usize,
    kvh: usize,
    scale: f32,
    out: &mut [f32],
) -> bool {
    let d = 8 * C;
    let rw = kv.layout.row_width();
    let bs = kv.layout.block_size;
    if bs > MAX_BLOCK || q.len() < d || out.len() < d {
        return false;
    }
    let n_pos = row.pos as usize + 1;
    // SAFETY: every load below reads 8 values of a q, K or V head at an
    // offset that is a multiple of 8 below `d`, inside rows that
    // `k_block`/`v_block` returned in full.
    unsafe {
        let mut qv = [_mm256_setzero_ps(); C];
        for (c, v) in qv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(q.as_ptr().add(8 * c));
        }
        let mut acc = [_mm256_setzero_ps(); C];
        let (mut max, mut norm) = (f32::NEG_INFINITY, 0.0f32);
        let mut p0 = first;
        while p0 < n_pos {
            let count = (bs - p0 % bs).min(n_pos - p0);
            let keys = kv.k_block(layer, row.block_table, p0, count);
            let values = kv.v_block(layer, row.block_table, p0, count);
            block_update::<C>(
                &qv,
                keys,
                values,
                rw,
                kvh * d,
                count,
                scale,
                &mut acc,
                &mut max,
                &mut norm,
            );
            p0 += count;
        }
        let inv = _mm256_set1_ps(1.0 / norm);
        for (c, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), _mm256_mul_ps(*a, inv));
        }
    }
    true
}

/// Every query head of one KV head's group (`q` and `out`: `G` heads of
/// `8 * C` values, in order) in one pass over the cache: each K and V
/// vector is loaded (and widened) once and used by all `G` heads, whose
/// dot products, weights and sums of values are interleaved. Each head
/// runs exactly [`block_update`]'s operations in the same order, so its
/// values are [`attend_head`]'s bit for bit. The `G * 8` score sums and
/// `G * C` output sums want AVX-512VL's 32 vector registers (the
/// arithmetic stays 8 lanes wide). False if the cache block is larger
/// than this kernel handles.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C, AVX-512F and AVX-512VL; `q` and `out`
/// hold `G * 8 * C` values.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
// Positions, heads and vector columns index several arrays at once.
#[allow(clippy::needless_range_loop)]
pub unsafe fn attend_group<const C: usize, const G: usize>(
    q: &[f32],
    kv: &HostKv,
    layer: usize,
    row: &AttnRow<'_>,
    first: usize,
    kvh: usize,
    scale: f32,
    out: &mut [f32],
) -> bool {
    let d = 8 * C;
    let rw = kv.layout.row_width();
    let bs = kv.layout.block_size;
    if bs > MAX_BLOCK || q.len() < G * d || out.len() < G * d {
        return false;
    }
    let n_pos = row.pos as usize + 1;
    // SAFETY: every load below reads 8 values of a q head (`h * d + 8 c`,
    // h < G, c < C) or of this KV head of a K or V row `j < count`
    // (`j * rw + kvh * d + 8 c`) that `k_block`/`v_block` returned in
    // full; the stores write `out`'s `G * d` values and local arrays.
    unsafe {
        let mut qv = [[_mm256_setzero_ps(); C]; G];
        for (h, qh) in qv.iter_mut().enumerate() {
            for (c, v) in qh.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(q.as_ptr().add(h * d + 8 * c));
            }
        }
        let mut acc = [[_mm256_setzero_ps(); C]; G];
        let mut max = [f32::NEG_INFINITY; G];
        let mut norm = [0.0f32; G];
        let mut p0 = first;
        while p0 < n_pos {
            let count = (bs - p0 % bs).min(n_pos - p0);
            let keys = kv.k_block(layer, row.block_table, p0, count);
            let values = kv.v_block(layer, row.block_table, p0, count);
            // The next block's K and V of this KV head are fetched
            // while this one computes (a hint: blocks are scattered, so
            // the hardware prefetcher does not find them).
            let p1 = p0 + count;
            if p1 < n_pos {
                let count1 = (bs - p1 % bs).min(n_pos - p1);
                for rows in [
                    kv.k_block(layer, row.block_table, p1, count1),
                    kv.v_block(layer, row.block_table, p1, count1),
                ] {
                    for j in 0..count1 {
                        let head = rows.slice(j * rw + kvh * d..j * rw + (kvh + 1) * d);
                        prefetch_row(head);
                    }
                }
            }
            let mut scores = [[f32::NEG_INFINITY; MAX_BLOCK]; G];
            // Scores, 8 positions at a time, every head at once.
            let mut j0 = 0;
            while j0 < count {
                let n = count - j0;
                let mut dots = [[_mm256_setzero_ps(); 8]; G];
                for jj in 0..8 {
                    if jj < n {
                        let base = (j0 + jj) * rw + kvh * d;
                        for c in 0..C {
                            let k = load8(keys, base + 8 * c);
                            for h in 0..G {
                                dots[h][jj] = _mm256_fmadd_ps(qv[h][c], k, dots[h][jj]);
                            }
                        }
                    }
                }
                for h in 0..G {
                    let s = _mm256_mul_ps(hsum8(dots[h]), _mm256_set1_ps(scale));
                    _mm256_storeu_ps(scores[h].as_mut_ptr().add(j0), s);
                }
                j0 += 8;
            }
            // Each head's maximum and rescaling, as in `block_update`.
            for h in 0..G {
                let mut block_max = f32::NEG_INFINITY;
                for s in &scores[h][..count] {
                    block_max = block_max.max(*s);
                }
                let new_max = max[h].max(block_max);
                let correction = (max[h] - new_max).exp();
                norm[h] *= correction;
                let cv = _mm256_set1_ps(correction);
                for a in acc[h].iter_mut() {
                    *a = _mm256_mul_ps(*a, cv);
                }
                max[h] = new_max;
            }
            // Weights and sums of values, 8 positions at a time.
            let mut j0 = 0;
            while j0 < count {
                let n = count - j0;
                let mut ws = [[0.0f32; 8]; G];
                for h in 0..G {
                    let mv = _mm256_set1_ps(max[h]);
                    let mut w = exp8(_mm256_sub_ps(
                        _mm256_loadu_ps(scores[h].as_ptr().add(j0)),
                        mv,
                    ));
                    if n < 8 {
                        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                        let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
                        w = _mm256_and_ps(w, _mm256_castsi256_ps(keep));
                    }
                    _mm256_storeu_ps(ws[h].as_mut_ptr(), w);
                }
                for jj in 0..8 {
                    if jj < n {
                        let mut wv = [_mm256_setzero_ps(); G];
                        for h in 0..G {
                            norm[h] += ws[h][jj];
                            wv[h] = _mm256_set1_ps(ws[h][jj]);
                        }
                        let base = (j0 + jj) * rw + kvh * d;
                        for c in 0..C {
                            let v = load8(values, base + 8 * c);
                            for h in 0..G {
                                acc[h][c] = _mm256_fmadd_ps(wv[h], v, acc[h][c]);
                            }
                        }
                    }
                }
                j0 += 8;
            }
            p0 += count;
        }
        for h in 0..G {
            let inv = _mm256_set1_ps(1.0 / norm[h]);
            for (c, a) in acc[h].iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(h * d + 8 * c), _mm256_mul_ps(*a, inv));
            }
        }
    }
    true
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `v` is at least as long as `out`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(out: &mut [f32], w: f32, v: KvRow<'_>) {
    let n = out.len();
    let mut i = 0;
    let wv = _mm256_set1_ps(w);
    // SAFETY: every load and store touches `i..i + 8` with `i + 8 <= n`.
    unsafe {
        while i + 8 <= n {
            let p = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(wv, load8(v, i), _mm256_loadu_ps(p)));
            i += 8;
        }
    }
    while i < n {
        out[i] += w * super::portable_get(v, i);
        i += 1;
    }
}
