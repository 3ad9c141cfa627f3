//! The CPU backend.
//!
//! Weights stay in the model file's memory map in their stored (quantized)
//! format; each matrix product dequantizes one weight row at a time into a
//! small buffer and dots it with every activation row, so a weight row is read
//! once per step however many rows the batch holds. Work is split across a
//! private rayon pool sized by `--threads`.
//!
//! Every row is computed with the same arithmetic whatever the batch size or
//! the row's place in it (batch invariance): the split is over weight rows,
//! never over the reduction.

use rayon::prelude::*;
use smelt_backend::{
    AttnGeometry, AttnRow, Backend, BackendError, HostBuf, HostKv, HostTensor, KvLayout,
    RopeParams, attend_row, dequantize_all, inv_rms, rope_row, silu,
};
use smelt_tensor::{dequantize_row, dot_f32};

/// Weight rows per parallel task in a matrix product.
const ROWS_PER_TASK: usize = 16;

/// Errors creating the CPU backend.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot start {threads} CPU threads: {reason}")]
    ThreadPool { threads: usize, reason: String },
}

/// Multi-threaded CPU implementation of [`Backend`].
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl CpuBackend {
    /// A backend running on `threads` threads (0: one per physical core).
    pub fn new(threads: usize) -> Result<Self, CpuError> {
        let threads = if threads == 0 {
            physical_cores()
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("smelt-cpu-{i}"))
            .build()
            .map_err(|e| CpuError::ThreadPool {
                threads,
                reason: e.to_string(),
            })?;
        Ok(CpuBackend { pool, threads })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Physical cores (not hyper-threads) this process may use: decode is bound
/// by memory bandwidth, and a second thread per core only adds contention.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let (mut cores, mut physical) = (std::collections::BTreeSet::new(), "");
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => physical = v,
            (Some("core id"), Some(v)) => {
                cores.insert((physical.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

impl Backend for CpuBackend {
    type Buf = HostBuf;
    type Weight = HostTensor;
    type Kv = HostKv;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn place(&self, _name: &str, tensor: &HostTensor) -> Result<HostTensor, BackendError> {
        // Zero-copy: the tensor keeps pointing into the file's memory map.
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
        let cols = out.cols;
        self.pool.install(|| {
            out.data
                .par_chunks_mut(cols)
                .zip(tokens)
                .for_each(|(dst, &t)| {
                    dequantize_row(table.dtype(), table.row(t as usize), dst);
                    if scale != 1.0 {
                        dst.iter_mut().for_each(|v| *v *= scale);
                    }
                })
        });
    }

    fn rms_norm(&self, x: &HostBuf, weight: &HostTensor, eps: f32, out: &mut HostBuf) {
        let w = dequantize_all(weight);
        let cols = x.cols;
        self.pool.install(|| {
            out.data
                .par_chunks_mut(cols)
                .zip(x.data.par_chunks(cols))
                .for_each(|(o, xr)| {
                    let s = inv_rms(xr, eps);
                    for ((o, v), w) in o.iter_mut().zip(xr).zip(&w) {
                        *o = v * s * w;
                    }
                })
        });
    }

    fn matmul(&self, x: &HostBuf, w: &HostTensor, out: &mut HostBuf) {
        let (n, n_in, n_out) = (x.rows, w.row_len(), w.n_rows());
        debug_assert_eq!((x.cols, out.rows, out.cols), (n_in, n, n_out));
        if n == 1 {
            // One activation row: the output row is the result; no transpose.
            self.pool.install(|| {
                out.data
                    .par_chunks_mut(ROWS_PER_TASK)
                    .enumerate()
                    .for_each(|(c, dst)| {
                        let mut buf = vec![0.0f32; n_in];
                        for (i, o) in dst.iter_mut().enumerate() {
                            dequantize_row(w.dtype(), w.row(c * ROWS_PER_TASK + i), &mut buf);
                            *o = dot_f32(&buf, x.row(0));
                        }
                    })
            });
            return;
        }
        // Output transposed (weight row major) so each task owns a contiguous
        // chunk; each weight row is dequantized once for all activation rows.
        let mut out_t = vec![0.0f32; n * n_out];
        self.pool.install(|| {
            out_t
                .par_chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(|(c, dst)| {
                    let mut buf = vec![0.0f32; n_in];
                    for (i, dst_row) in dst.chunks_exact_mut(n).enumerate() {
                        dequantize_row(w.dtype(), w.row(c * ROWS_PER_TASK + i), &mut buf);
                        for (r, o) in dst_row.iter_mut().enumerate() {
                            *o = dot_f32(&buf, x.row(r));
                        }
                    }
                })
        });
        self.pool.install(|| {
            out.data
                .par_chunks_mut(n_out)
                .enumerate()
                .for_each(|(r, row)| {
                    for (o, v) in row.iter_mut().enumerate() {
                        *v = out_t[o * n + r];
                    }
                })
        });
    }

    fn add_bias(&self, x: &mut HostBuf, bias: &HostTensor) {
        let b = dequantize_all(bias);
        for row in x.data.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(&b).for_each(|(v, b)| *v += b);
        }
    }

    fn rope(&self, x: &mut HostBuf, n_heads: usize, positions: &[u32], params: &RopeParams) {
        let cols = x.cols;
        self.pool.install(|| {
            x.data
                .par_chunks_mut(cols)
                .zip(positions)
                .for_each(|(row, &pos)| rope_row(row, n_heads, pos, params))
        });
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
        let cols = out.cols;
        self.pool.install(|| {
            out.data
                .par_chunks_mut(cols)
                .zip(q.data.par_chunks(q.cols))
                .zip(rows)
                .for_each_init(Vec::new, |scores, ((o, qr), row)| {
                    scores.resize(row.pos as usize + 1, 0.0);
                    attend_row(qr, kv, layer, row, geom, scores, o)
                })
        });
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
        let mut out = HostBuf::zeros(rows.len(), x.cols);
        for (i, &r) in rows.iter().enumerate() {
            out.row_mut(i).copy_from_slice(x.row(r));
        }
        out
    }
}
