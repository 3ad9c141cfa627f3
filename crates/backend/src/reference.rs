//! The scalar reference backend: one thread, plain loops, f32 throughout.
//! It is written for clarity, not speed: it defines what every other backend
//! must compute.

use smelt_tensor::{dequantize_row, dot_row};

use crate::{
    AttnGeometry, AttnRow, Backend, BackendError, Feature, HostBuf, HostKv, HostTensor, KvLayout,
    RopeParams,
};

/// Scalar, single-threaded implementation of [`Backend`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// `x / (1 + e^-x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (PyTorch's `gelu(x, approximate="tanh")`,
/// HF's `gelu_pytorch_tanh`): `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// Soft-capping: `cap · tanh(x / cap)`, squashing `x` into `(-cap, cap)`.
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * (x / cap).tanh()
}

/// Inverse RMS of a row, accumulated in f32 in index order.
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum_sq: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (sum_sq / x.len() as f32 + eps).sqrt()
}

/// Dequantizes a whole (small) tensor such as a norm weight or a bias.
pub fn dequantize_all(t: &HostTensor) -> Vec<f32> {
    let mut out = vec![0.0; t.row_len() * t.n_rows()];
    for (r, dst) in out.chunks_exact_mut(t.row_len()).enumerate() {
        dequantize_row(t.dtype(), t.row(r), dst);
    }
    out
}

/// Applies RoPE to one row of `n_heads` heads.
#[allow(clippy::needless_range_loop)] // `i` indexes the table and names the pair
pub fn rope_row(row: &mut [f32], n_heads: usize, pos: u32, p: &RopeParams) {
    // The angles depend on the position and pair only: compute them once for
    // all heads of the row.
    const MAX_PAIRS: usize = 256;
    let pairs = p.n_rot / 2;
    let mut table = [(0.0f32, 0.0f32); MAX_PAIRS];
    let cached = pairs <= MAX_PAIRS;
    if cached {
        for (i, t) in table[..pairs].iter_mut().enumerate() {
            *t = p.cos_sin(pos, i);
        }
    }
    for h in 0..n_heads {
        let head = &mut row[h * p.head_dim..(h + 1) * p.head_dim];
        for i in 0..pairs {
            let (a, b) = p.pair(i);
            let (cos, sin) = if cached { table[i] } else { p.cos_sin(pos, i) };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

/// Causal attention of one query row (all heads) over a sequence's cache,
/// with a numerically safe softmax. `scores` is scratch of at least `pos+1`.
pub fn attend_row(
    q: &[f32],
    kv: &HostKv,
    layer: usize,
    row: &AttnRow<'_>,
    g: &AttnGeometry,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = g.head_dim;
    for h in 0..g.n_heads {
        attend_head(
            q,
            kv,
            layer,
            row,
            g,
            h,
            scores,
            &mut out[h * d..(h + 1) * d],
        );
    }
}

/// Attention of query head `h` of one row: writes the head's `head_dim`
/// outputs to `out`.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    q: &[f32],
    kv: &HostKv,
    layer: usize,
    row: &AttnRow<'_>,
    g: &AttnGeometry,
    h: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let first = g.first_visible(row.pos) as usize;
    let n_pos = row.pos as usize + 1 - first;
    let d = g.head_dim;
    let kvh = h / (g.n_heads / g.n_kv_heads);
    let qh = &q[h * d..(h + 1) * d];
    let mut max = f32::NEG_INFINITY;
    for (i, s) in scores[..n_pos].iter_mut().enumerate() {
        let p = first + i;
        let k = kv
            .k_row(layer, row.block_table, p)
            .slice(kvh * d..(kvh + 1) * d);
        *s = qh
            .iter()
            .enumerate()
            .map(|(i, a)| a * k.get(i))
            .sum::<f32>()
            * g.scale;
        max = max.max(*s);
    }
    let mut sum = 0.0f32;
    for s in scores[..n_pos].iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (i, s) in scores[..n_pos].iter().enumerate() {
        let p = first + i;
        let v = kv
            .v_row(layer, row.block_table, p)
            .slice(kvh * d..(kvh + 1) * d);
        let w = s / sum;
        for (i, o) in out.iter_mut().enumerate() {
            *o += w * v.get(i);
        }
    }
}

impl Backend for ReferenceBackend {
    type Buf = HostBuf;
    type Weight = HostTensor;
    type Kv = HostKv;

    fn name(&self) -> &'static str {
        "reference"
    }

    fn supports(&self, _feature: Feature) -> bool {
        true
    }

    fn place(&self, _name: &str, tensor: &HostTensor) -> Result<HostTensor, BackendError> {
        Ok(tensor.clone())
    }

    fn alloc(&self, rows: usize, cols: usize) -> HostBuf {
        HostBuf::zeros(rows, cols)
    }

    fn upload(&self, data: &HostBuf) -> HostBuf {
        data.clone()
    }

    fn download(&self, buf: &HostBuf) -> HostBuf {
        buf.clone()
    }

    fn shape(&self, buf: &HostBuf) -> (usize, usize) {
        (buf.rows, buf.cols)
    }

    fn alloc_kv(&self, layout: KvLayout) -> Result<HostKv, BackendError> {
        HostKv::new(layout)
    }

    fn embed(&self, table: &HostTensor, tokens: &[u32], scale: f32, out: &mut HostBuf) {
        for (r, &t) in tokens.iter().enumerate() {
            let dst = out.row_mut(r);
            dequantize_row(table.dtype(), table.row(t as usize), dst);
            if scale != 1.0 {
                dst.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }

    fn rms_norm(&self, x: &HostBuf, weight: &HostTensor, eps: f32, out: &mut HostBuf) {
        let w = dequantize_all(weight);
        for r in 0..x.rows {
            let xr = x.row(r);
            let s = inv_rms(xr, eps);
            for ((o, v), w) in out.row_mut(r).iter_mut().zip(xr).zip(&w) {
                *o = v * s * w;
            }
        }
    }

    fn matmul(&self, x: &HostBuf, w: &HostTensor, out: &mut HostBuf) {
        for r in 0..x.rows {
            for o in 0..w.n_rows() {
                out.data[r * out.cols + o] = dot_row(w.dtype(), w.row(o), x.row(r));
            }
        }
    }

    fn add_bias(&self, x: &mut HostBuf, bias: &HostTensor) {
        let b = dequantize_all(bias);
        for r in 0..x.rows {
            x.row_mut(r).iter_mut().zip(&b).for_each(|(v, b)| *v += b);
        }
    }

    fn rope(&self, x: &mut HostBuf, n_heads: usize, positions: &[u32], params: &RopeParams) {
        for (r, &pos) in positions.iter().enumerate() {
            rope_row(x.row_mut(r), n_heads, pos, params);
        }
    }

    fn kv_store(&self, kv: &mut HostKv, layer: usize, k: &HostBuf, v: &HostBuf, slots: &[u32]) {
        for (r, &slot) in slots.iter().enumerate() {
            kv.store(layer, slot as usize, k.row(r), v.row(r));
        }
    }

    fn attention(
        &self,
        q: &HostBuf,
        kv: &HostKv,
        layer: usize,
        rows: &[AttnRow<'_>],
        geom: &AttnGeometry,
        out: &mut HostBuf,
    ) {
        let max_pos = rows.iter().map(|r| r.pos as usize + 1).max().unwrap_or(0);
        let mut scores = vec![0.0; max_pos];
        for (r, row) in rows.iter().enumerate() {
            attend_row(q.row(r), kv, layer, row, geom, &mut scores, out.row_mut(r));
        }
    }

    fn swiglu(&self, gate: &mut HostBuf, up: &HostBuf) {
        gate.data
            .iter_mut()
            .zip(&up.data)
            .for_each(|(g, u)| *g = silu(*g) * u);
    }

    fn gelu_tanh_gate(&self, gate: &mut HostBuf, up: &HostBuf) {
        gate.data
            .iter_mut()
            .zip(&up.data)
            .for_each(|(g, u)| *g = gelu_tanh(*g) * u);
    }

    fn rms_norm_heads(&self, x: &mut HostBuf, n_heads: usize, weight: &HostTensor, eps: f32) {
        let w = dequantize_all(weight);
        let d = w.len();
        for r in 0..x.rows {
            for head in x.row_mut(r)[..n_heads * d].chunks_exact_mut(d) {
                let s = inv_rms(head, eps);
                head.iter_mut().zip(&w).for_each(|(v, w)| *v = *v * s * w);
            }
        }
    }

    fn softcap(&self, x: &mut HostBuf, cap: f32) {
        x.data.iter_mut().for_each(|v| *v = softcap(*v, cap));
    }

    fn add(&self, x: &mut HostBuf, y: &HostBuf) {
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
    }

    fn gather_rows(&self, x: &HostBuf, rows: &[usize]) -> HostBuf {
        x.gather(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRng;
    use crate::{Backend, KvType};

    #[test]
    fn gelu_tanh_matches_pytorch() {
        // torch.nn.functional.gelu(x, approximate="tanh") in float32.
        let want = [0.841_192, -0.015_084_296, 0.185_370_94, 3.999_93];
        for (x, w) in [1.0f32, -2.5, 0.3, 4.0].iter().zip(want) {
            assert!((gelu_tanh(*x) - w).abs() < 1e-6, "gelu_tanh({x})");
        }
    }

    #[test]
    fn softcap_is_tanh_scaled_and_bounded() {
        assert!((softcap(30.0, 30.0) - 30.0 * 1f32.tanh()).abs() < 1e-5);
        assert!((softcap(0.01, 30.0) - 0.01).abs() < 1e-7);
        assert!(softcap(1e6, 15.0) <= 15.0);
    }

    #[test]
    fn rms_norm_heads_normalizes_each_head_alone() {
        let mut x = HostBuf {
            data: vec![3.0, 4.0, 0.0, 10.0],
            rows: 1,
            cols: 4,
        };
        let w = HostTensor::from_f32("w", &[1.0, 2.0], vec![2]).expect("tensor");
        ReferenceBackend.rms_norm_heads(&mut x, 2, &w, 0.0);
        let s = (12.5f32).sqrt();
        let want = [3.0 / s, 8.0 / s, 0.0, 2.0 * 10.0 / (50f32).sqrt()];
        for (a, b) in x.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", x.data);
        }
    }

    /// A sliding window of `w` equals attention over only the last `w`
    /// positions, computed here as a plain masked softmax.
    #[test]
    fn sliding_window_sees_only_the_last_positions() {
        let mut rng = TestRng::new(77);
        let d = 8;
        let layout = KvLayout {
            n_layers: 1,
            n_blocks: 3,
            block_size: 4,
            n_kv_heads: 1,
            head_dim: d,
            dtype: KvType::F32,
        };
        let mut kv = HostKv::new(layout).expect("kv");
        let table = [2u32, 0, 1];
        let (keys, values) = (rng.buf(12, d), rng.buf(12, d));
        for p in 0..12 {
            kv.store(
                0,
                table[p / 4] as usize * 4 + p % 4,
                keys.row(p),
                values.row(p),
            );
        }
        let q = rng.buf(1, d);
        for window in [1u32, 2, 5, 11, 12, 40] {
            let g = AttnGeometry {
                n_heads: 1,
                n_kv_heads: 1,
                head_dim: d,
                scale: 0.5,
                window: Some(window),
            };
            for pos in [0u32, 3, 6, 11] {
                let row = AttnRow {
                    pos,
                    block_table: &table,
                };
                let mut out = vec![0.0; d];
                attend_row(q.row(0), &kv, 0, &row, &g, &mut [0.0; 12], &mut out);
                let first = (pos + 1).saturating_sub(window) as usize;
                let scores: Vec<f64> = (first..=pos as usize)
                    .map(|p| {
                        let dot: f64 = (0..d).map(|i| (q.row(0)[i] * keys.row(p)[i]) as f64).sum();
                        dot * 0.5
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (i, o) in out.iter().enumerate() {
                    let want: f64 = e
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w / sum * values.row(first + j)[i] as f64)
                        .sum();
                    assert!((*o as f64 - want).abs() < 1e-5, "window {window} pos {pos}");
                }
            }
        }
    }
}
