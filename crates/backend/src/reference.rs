//! The scalar reference backend: one thread, plain loops, f32 throughout.
//! It is written for clarity, not speed: it defines what every other backend
//! must compute.

use smelt_tensor::{dequantize_row, dot_row};

use crate::{
    AttnGeometry, AttnRow, Backend, BackendError, HostBuf, HostKv, HostTensor, KvLayout, RopeParams,
};

/// Scalar, single-threaded implementation of [`Backend`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// `x / (1 + e^-x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
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
    let n_pos = row.pos as usize + 1;
    let d = g.head_dim;
    let kvh = h / (g.n_heads / g.n_kv_heads);
    let qh = &q[h * d..(h + 1) * d];
    let mut max = f32::NEG_INFINITY;
    for (p, s) in scores[..n_pos].iter_mut().enumerate() {
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
    for (p, s) in scores[..n_pos].iter().enumerate() {
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

    fn add(&self, x: &mut HostBuf, y: &HostBuf) {
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
    }

    fn gather_rows(&self, x: &HostBuf, rows: &[usize]) -> HostBuf {
        x.gather(rows)
    }
}
