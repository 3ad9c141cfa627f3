//! [`Backend`] for [`CudaBackend`]: buffers, weights and the KV cache in
//! device memory, each operation one or a few kernel launches on one stream.

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use smelt_backend::{
    AttnGeometry, AttnRow, Backend, BackendError, Feature, HostBuf, HostTensor, KvLayout, KvType,
    KvWrite, QkvWeights, RopeParams, RopeStyle, dequantize_all,
};
use smelt_tensor::DType;

use crate::fused::MvOut;
use crate::launch::{Arg, BLOCK};
use crate::meta::Meta;
use crate::queue::Queue;
use crate::{CudaBackend, weight_code};

/// A `rows × cols` row-major f32 matrix in device memory. `data` is None for
/// an empty matrix, or when the allocation failed (the failure is the
/// backend's pending error, and operations on the buffer do nothing).
pub struct CudaBuf {
    data: Option<CudaSlice<f32>>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    queue: Arc<Queue>,
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        // To the pool: recorded launches may still use it, and they run
        // before anything later written to it.
        if let Some(d) = self.data.take() {
            self.queue.give_back(d);
        }
    }
}

/// A weight in device memory: its stored bytes (quantized weights stay
/// quantized), and for vectors (norm weights, biases) their f32 values.
pub struct CudaWeight {
    pub(crate) bytes: CudaSlice<u8>,
    pub(crate) dtype: DType,
    pub(crate) row_len: usize,
    pub(crate) n_rows: usize,
    pub(crate) row_bytes: usize,
    vector: Option<CudaSlice<f32>>,
    queue: Arc<Queue>,
}

impl Drop for CudaWeight {
    fn drop(&mut self) {
        // Launches that read the weight go before it is freed.
        self.queue.flush();
    }
}

impl CudaWeight {
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
}

/// The K/V pool in device memory: for K and for V, `n_layers × n_blocks ×
/// block_size` rows of `n_kv_heads × head_dim` values (f16 or f32 bytes).
pub struct CudaKv {
    pub layout: KvLayout,
    pub(crate) k: CudaSlice<u8>,
    pub(crate) v: CudaSlice<u8>,
    queue: Arc<Queue>,
}

impl Drop for CudaKv {
    fn drop(&mut self) {
        // Launches that use the cache go before it is freed.
        self.queue.flush();
    }
}

impl CudaKv {
    /// One row of K and of V, as f32.
    pub(crate) fn read_row(
        &self,
        be: &CudaBackend,
        layer: usize,
        slot: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), crate::CudaError> {
        let l = self.layout;
        let width = l.row_width();
        let n_slots = l.n_blocks * l.block_size;
        if layer >= l.n_layers || slot >= n_slots {
            return Err(crate::CudaError::Driver {
                what: "read the KV cache",
                reason: format!(
                    "layer {layer} slot {slot} outside {} layers of {n_slots} slots",
                    l.n_layers
                ),
            });
        }
        be.synchronize()?;
        let size = l.dtype.bytes();
        let at = (layer * n_slots + slot) * width * size;
        let read = |c: &CudaSlice<u8>| -> Result<Vec<f32>, crate::CudaError> {
            let mut bytes = vec![0u8; width * size];
            be.queue
                .stream
                .memcpy_dtoh(&c.slice(at..at + width * size), &mut bytes)
                .map_err(|e| crate::CudaError::Driver {
                    what: "read the KV cache",
                    reason: e.to_string(),
                })?;
            Ok(match l.dtype {
                KvType::F32 => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                KvType::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            })
        };
        Ok((read(&self.k)?, read(&self.v)?))
    }
}

/// Largest grid y/z dimension.
pub(crate) const MAX_GRID_Y: usize = 65_535;

pub(crate) fn blocks(n: usize, per: u32) -> u32 {
    n.div_ceil(per as usize) as u32
}

/// The device address of row `r` of `buf`, whose data starts at `base`.
pub(crate) fn row_at(base: u64, buf: &CudaBuf, r: usize) -> u64 {
    base + (r * buf.cols * std::mem::size_of::<f32>()) as u64
}

impl CudaBackend {
    /// The address of a buffer's data, if it has any.
    pub(crate) fn buf_addr(&self, b: &CudaBuf) -> Option<u64> {
        b.data.as_ref().map(|d| self.addr(d))
    }

    /// Addresses of several buffers, or None (nothing to do) if any is empty.
    pub(crate) fn addrs<const N: usize>(&self, bufs: [&CudaBuf; N]) -> Option<[u64; N]> {
        let mut out = [0u64; N];
        for (o, b) in out.iter_mut().zip(bufs) {
            *o = self.buf_addr(b)?;
        }
        Some(out)
    }

    /// A vector weight's f32 values, checking its length.
    pub(crate) fn vector_addr(&self, what: &str, w: &CudaWeight, len: usize) -> Option<u64> {
        match &w.vector {
            Some(v) if v.len() == len => Some(self.addr(v)),
            _ => {
                self.fail(format!(
                    "{what}: weight of {} × {} is not a vector of {len}",
                    w.n_rows, w.row_len
                ));
                None
            }
        }
    }

    fn elementwise(&self, what: &'static str, x: &mut CudaBuf, y: &CudaBuf, op: Elementwise) {
        if !self.ensure((x.rows, x.cols) == (y.rows, y.cols), || {
            format!("{what}: {}×{} and {}×{}", x.rows, x.cols, y.rows, y.cols)
        }) {
            return;
        }
        let Some([xa, ya]) = self.addrs([x, y]) else {
            return;
        };
        let n = x.rows * x.cols;
        let f = match op {
            Elementwise::Swiglu => &self.k.swiglu,
            Elementwise::GeluTanhGate => &self.k.gelu_tanh_gate,
            Elementwise::Add => &self.k.add,
        };
        self.launch(
            what,
            f,
            (blocks(n, BLOCK), 1, 1),
            BLOCK,
            &[Arg::U64(xa), Arg::U64(ya), Arg::U64(n as u64)],
        );
    }
}

/// The two-input elementwise kernels (`x = op(x, y)`).
#[derive(Clone, Copy)]
enum Elementwise {
    Swiglu,
    GeluTanhGate,
    Add,
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Weight = CudaWeight;
    type Kv = CudaKv;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn supports(&self, feature: Feature) -> bool {
        // Every feature has its kernel (ops.cu, attention.cu's window) and
        // per-layer RoPE its two frequency tables (`freq_meta`).
        match feature {
            Feature::QkNorm
            | Feature::GeluTanhGate
            | Feature::SlidingWindow
            | Feature::LogitSoftcap
            | Feature::PerLayerRope => true,
        }
    }

    fn place(&self, name: &str, tensor: &HostTensor) -> Result<CudaWeight, BackendError> {
        let bad = |reason: String| BackendError::BadTensor {
            name: name.to_string(),
            reason,
        };
        if weight_code(tensor.dtype()).is_none() {
            return Err(bad(format!(
                "the CUDA backend cannot read {} weights",
                tensor.dtype()
            )));
        }
        let bytes = self
            .queue
            .stream
            .clone_htod(tensor.bytes())
            .map_err(|e| bad(format!("cannot upload to the GPU: {e}")))?;
        let vector = if tensor.n_rows() == 1 {
            let values = dequantize_all(tensor);
            Some(
                self.queue
                    .stream
                    .clone_htod(&values)
                    .map_err(|e| bad(format!("cannot upload to the GPU: {e}")))?,
            )
        } else {
            None
        };
        Ok(CudaWeight {
            bytes,
            dtype: tensor.dtype(),
            row_len: tensor.row_len(),
            n_rows: tensor.n_rows(),
            row_bytes: tensor.row_bytes(),
            vector,
            queue: self.queue.clone(),
        })
    }

    fn alloc(&self, rows: usize, cols: usize) -> CudaBuf {
        let n = rows * cols;
        let data = if n == 0 {
            None
        } else if let Some(d) = self.queue.take_pooled(n) {
            Some(d)
        } else {
            // SAFETY: the contents are unspecified by the trait's contract;
            // f32 has no invalid bit patterns.
            match unsafe { self.queue.stream.alloc::<f32>(n) } {
                Ok(s) => Some(s),
                Err(e) => {
                    self.fail(format!("cannot allocate {rows}×{cols} activations: {e}"));
                    None
                }
            }
        };
        CudaBuf {
            data,
            rows,
            cols,
            queue: self.queue.clone(),
        }
    }

    fn upload(&self, data: &HostBuf) -> CudaBuf {
        let mut buf = self.alloc(data.rows, data.cols);
        if !self.ensure(data.data.len() == data.rows * data.cols, || {
            "upload: buffer length does not match its shape".into()
        }) {
            return buf;
        }
        // A pooled buffer may still be read by recorded launches: send them
        // before the copy is queued.
        self.queue.flush();
        if let Some(d) = buf.data.as_mut()
            && let Err(e) = self.queue.stream.memcpy_htod(&data.data, d)
        {
            self.fail(format!("upload: {e}"));
        }
        buf
    }

    fn download(&self, buf: &CudaBuf) -> HostBuf {
        self.queue.flush();
        let mut out = HostBuf::zeros(buf.rows, buf.cols);
        if let Some(d) = &buf.data
            && let Err(e) = self
                .queue
                .waiting(|| self.queue.stream.memcpy_dtoh(d, &mut out.data))
        {
            self.fail(format!("download: {e}"));
        }
        out
    }

    fn shape(&self, buf: &CudaBuf) -> (usize, usize) {
        (buf.rows, buf.cols)
    }

    fn alloc_kv(&self, layout: KvLayout) -> Result<CudaKv, BackendError> {
        let bytes = layout.bytes().ok_or(BackendError::OutOfMemory {
            what: "KV cache",
            bytes: usize::MAX,
        })?;
        let oom = |_| BackendError::OutOfMemory {
            what: "KV cache on the GPU",
            bytes,
        };
        // Zeroed: attention never reads an unwritten slot, but a stray read
        // must not meet NaN bit patterns.
        let k = self
            .queue
            .stream
            .alloc_zeros::<u8>(bytes / 2)
            .map_err(oom)?;
        let v = self
            .queue
            .stream
            .alloc_zeros::<u8>(bytes / 2)
            .map_err(oom)?;
        Ok(CudaKv {
            layout,
            k,
            v,
            queue: self.queue.clone(),
        })
    }

    fn embed(&self, table: &CudaWeight, tokens: &[u32], scale: f32, out: &mut CudaBuf) {
        // (The output's shape against the table: `embed_ids`.)
        if !self.ensure(out.rows == tokens.len(), || {
            format!("embed: {} tokens into {} rows", tokens.len(), out.rows)
        }) {
            return;
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= table.n_rows) {
            self.fail(format!(
                "embed: token {t} outside a table of {}",
                table.n_rows
            ));
            return;
        }
        let Some(toks) = self.meta(Meta::Tokens, tokens) else {
            return;
        };
        self.embed_ids(table, toks, scale, out);
    }

    fn embed_chained(&self, table: &CudaWeight, scale: f32, out: &mut CudaBuf) {
        self.embed_chained_on_device(table, scale, out);
    }

    fn chains_greedy(&self) -> bool {
        self.chained
    }

    fn argmax_rows_chained(&self, x: &CudaBuf) -> u64 {
        self.argmax_chained_on_device(x)
    }

    fn chained_ids(&self, ticket: u64) -> Result<Vec<u32>, BackendError> {
        self.chained_ids_on_device(ticket)
    }

    fn rms_norm(&self, x: &CudaBuf, weight: &CudaWeight, eps: f32, out: &mut CudaBuf) {
        if !self.ensure((x.rows, x.cols) == (out.rows, out.cols), || {
            format!(
                "rms_norm: x {}×{}, out {}×{}",
                x.rows, x.cols, out.rows, out.cols
            )
        }) {
            return;
        }
        let Some(wa) = self.vector_addr("rms_norm", weight, x.cols) else {
            return;
        };
        let Some([xa, oa]) = self.addrs([x, out]) else {
            return;
        };
        self.launch(
            "rms_norm",
            &self.k.rms_norm,
            (x.rows as u32, 1, 1),
            BLOCK,
            &[
                Arg::U64(xa),
                Arg::U64(wa),
                Arg::F32(eps),
                Arg::I32(x.cols as i32),
                Arg::U64(oa),
            ],
        );
    }

    fn matmul(&self, x: &CudaBuf, w: &CudaWeight, out: &mut CudaBuf) {
        for run in self.row_runs(x.rows) {
            if run.bulk {
                self.bulk_matmul("matmul", x, w, out, run.rows, false);
            } else {
                self.mv_plain("matmul", x, w, None, out, MvOut::Write, run.rows);
            }
        }
    }

    fn add_bias(&self, x: &mut CudaBuf, bias: &CudaWeight) {
        let Some(ba) = self.vector_addr("add_bias", bias, x.cols) else {
            return;
        };
        let Some(xa) = self.buf_addr(x) else {
            return;
        };
        let n = x.rows * x.cols;
        self.launch(
            "add_bias",
            &self.k.add_bias,
            (blocks(n, BLOCK), 1, 1),
            BLOCK,
            &[
                Arg::U64(xa),
                Arg::U64(ba),
                Arg::I32(x.cols as i32),
                Arg::U64(n as u64),
            ],
        );
    }

    fn rope(&self, x: &mut CudaBuf, n_heads: usize, positions: &[u32], params: &RopeParams) {
        let ok = positions.len() == x.rows
            && n_heads * params.head_dim <= x.cols
            && params.n_rot <= params.head_dim
            && params.inv_freq.len() == params.n_rot / 2;
        if !self.ensure(ok, || {
            format!(
                "rope: {} positions for {}×{}, {n_heads} heads of {} ({} rotated)",
                positions.len(),
                x.rows,
                x.cols,
                params.head_dim,
                params.n_rot
            )
        }) {
            return;
        }
        let Some(xa) = self.buf_addr(x) else {
            return;
        };
        let bits: Vec<u32> = params.inv_freq.iter().map(|f| f.to_bits()).collect();
        let (Some(pos), Some(freq)) =
            (self.meta(Meta::Positions, positions), self.freq_meta(&bits))
        else {
            return;
        };
        self.launch(
            "rope",
            &self.k.rope,
            (x.rows as u32, 1, 1),
            128,
            &[
                Arg::U64(xa),
                Arg::I32(x.cols as i32),
                Arg::I32(n_heads as i32),
                Arg::I32(params.head_dim as i32),
                Arg::I32(params.n_rot as i32),
                Arg::I32(i32::from(params.style == RopeStyle::Neox)),
                Arg::U64(pos),
                Arg::U64(freq),
            ],
        );
    }

    fn kv_store(&self, kv: &mut CudaKv, layer: usize, k: &CudaBuf, v: &CudaBuf, slots: &[u32]) {
        let l = kv.layout;
        let width = l.row_width();
        let n_slots = l.n_blocks * l.block_size;
        let ok = layer < l.n_layers
            && (k.rows, k.cols) == (slots.len(), width)
            && (v.rows, v.cols) == (slots.len(), width)
            && slots.iter().all(|&s| (s as usize) < n_slots);
        if !self.ensure(ok, || {
            format!(
                "kv_store: layer {layer} of {}, k {}×{}, v {}×{}, {} slots (rows of {width}, {n_slots} slots)",
                l.n_layers,
                k.rows,
                k.cols,
                v.rows,
                v.cols,
                slots.len()
            )
        }) {
            return;
        }
        let Some([ka, va]) = self.addrs([k, v]) else {
            return;
        };
        let Some(sl) = self.meta(Meta::Slots, slots) else {
            return;
        };
        let f = match l.dtype {
            KvType::F16 => &self.k.kv_store_f16,
            KvType::F32 => &self.k.kv_store_f32,
        };
        let layer_off = (layer * n_slots * width) as u64;
        self.launch(
            "kv_store",
            f,
            (slots.len() as u32, 1, 1),
            128,
            &[
                Arg::U64(self.addr(&kv.k)),
                Arg::U64(self.addr(&kv.v)),
                Arg::U64(ka),
                Arg::U64(va),
                Arg::U64(sl),
                Arg::I32(width as i32),
                Arg::U64(layer_off),
            ],
        );
    }

    fn attention(
        &self,
        q: &CudaBuf,
        kv: &CudaKv,
        layer: usize,
        rows: &[AttnRow<'_>],
        geom: &AttnGeometry,
        out: &mut CudaBuf,
    ) {
        self.attention_on_device(q, kv, layer, rows, geom, out);
    }

    fn swiglu(&self, gate: &mut CudaBuf, up: &CudaBuf) {
        self.elementwise("swiglu", gate, up, Elementwise::Swiglu);
    }

    fn gelu_tanh_gate(&self, gate: &mut CudaBuf, up: &CudaBuf) {
        self.elementwise("gelu_tanh_gate", gate, up, Elementwise::GeluTanhGate);
    }

    fn rms_norm_heads(&self, x: &mut CudaBuf, n_heads: usize, w: &CudaWeight, eps: f32) {
        const WHAT: &str = "rms_norm_heads";
        let d = w.row_len * w.n_rows;
        if !self.ensure(
            d > 0 && n_heads * d <= x.cols && x.rows <= MAX_GRID_Y,
            || format!("{WHAT}: {n_heads} heads of {d} in rows of {}", x.cols),
        ) {
            return;
        }
        let Some(wa) = self.vector_addr(WHAT, w, d) else {
            return;
        };
        let Some(xa) = self.buf_addr(x) else {
            return;
        };
        self.launch(
            WHAT,
            &self.k.rms_norm_heads,
            (n_heads as u32, x.rows as u32, 1),
            32,
            &[
                Arg::U64(xa),
                Arg::I32(x.cols as i32),
                Arg::I32(d as i32),
                Arg::U64(wa),
                Arg::F32(eps),
            ],
        );
    }

    fn softcap(&self, x: &mut CudaBuf, cap: f32) {
        let Some(xa) = self.buf_addr(x) else {
            return;
        };
        let n = x.rows * x.cols;
        self.launch(
            "softcap",
            &self.k.softcap,
            (blocks(n, BLOCK), 1, 1),
            BLOCK,
            &[Arg::U64(xa), Arg::F32(cap), Arg::U64(n as u64)],
        );
    }

    fn add(&self, x: &mut CudaBuf, y: &CudaBuf) {
        self.elementwise("add", x, y, Elementwise::Add);
    }

    fn gather_rows(&self, x: &CudaBuf, rows: &[usize]) -> CudaBuf {
        let mut out = self.alloc(rows.len(), x.cols);
        if let Some(r) = rows.iter().find(|&&r| r >= x.rows) {
            self.fail(format!("gather_rows: row {r} of a {}-row buffer", x.rows));
            return out;
        }
        let Some([xa, oa]) = self.addrs([x, &out]) else {
            return out;
        };
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let Some(ix) = self.meta(Meta::Gather, &idx) else {
            return out;
        };
        self.launch(
            "gather_rows",
            &self.k.gather_rows,
            (rows.len() as u32, 1, 1),
            BLOCK,
            &[
                Arg::U64(xa),
                Arg::U64(ix),
                Arg::I32(x.cols as i32),
                Arg::U64(oa),
            ],
        );
        out.rows = rows.len();
        out
    }

    fn rms_norm_matmuls(
        &self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        _h: &mut CudaBuf,
        jobs: &mut [(&CudaWeight, &mut CudaBuf)],
    ) {
        for (w, out) in jobs.iter_mut() {
            // The model's final norm and output projection: the logits,
            // always on the matrix-vector kernels.
            self.mv_plain(
                "rms_norm_matmuls",
                x,
                w,
                Some((norm, eps)),
                out,
                MvOut::Logits,
                0..x.rows,
            );
        }
    }

    fn matmul_add(&self, x: &CudaBuf, w: &CudaWeight, _t: &mut CudaBuf, acc: &mut CudaBuf) {
        for run in self.row_runs(x.rows) {
            if run.bulk {
                self.bulk_matmul("matmul_add", x, w, acc, run.rows, true);
            } else {
                self.mv_plain("matmul_add", x, w, None, acc, MvOut::Add, run.rows);
            }
        }
    }

    fn norm_qkv_rope_store(
        &self,
        x: &CudaBuf,
        w: &QkvWeights<'_, CudaWeight>,
        eps: f32,
        geom: &AttnGeometry,
        rope: &RopeParams,
        kv: &mut CudaKv,
        at: &KvWrite<'_>,
        [h, q, k, v]: [&mut CudaBuf; 4],
    ) {
        for run in self.row_runs(x.rows) {
            if run.bulk {
                self.bulk_qkv(
                    x,
                    w,
                    eps,
                    geom,
                    rope,
                    kv,
                    at,
                    [&mut *h, &mut *q, &mut *k, &mut *v],
                    run.rows,
                );
            } else {
                self.qkv_fused(x, w, eps, geom, rope, kv, at, q, run.rows);
            }
        }
    }

    fn norm_gate_up_swiglu(
        &self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        w_gate: &CudaWeight,
        w_up: &CudaWeight,
        h: &mut CudaBuf,
        gate: &mut CudaBuf,
        up: &mut CudaBuf,
    ) {
        for run in self.row_runs(x.rows) {
            if run.bulk {
                self.bulk_gate_up(
                    x,
                    norm,
                    eps,
                    [w_gate, w_up],
                    [&mut *h, &mut *gate, &mut *up],
                    run.rows,
                );
            } else {
                self.gate_up_swiglu_fused(x, norm, eps, w_gate, w_up, gate, run.rows);
            }
        }
    }

    fn argmax_rows(&self, x: &CudaBuf) -> Vec<u32> {
        self.argmax_on_device(x)
    }

    fn top_k_rows(&self, x: &CudaBuf, k: usize) -> Vec<Vec<(u32, f32)>> {
        self.top_k_on_device(x, k)
    }

    fn prefetch(&self, groups: &[&[&CudaWeight]]) {
        self.prefetch_weights(groups);
    }

    fn begin_step(&self, logits_rows: &[usize], n_rows: usize) {
        self.set_step_rows(logits_rows, n_rows);
    }

    fn finish(&self) -> Result<(), BackendError> {
        // The step is over: later operations take the matrix-vector path
        // for every row until the next `begin_step`.
        self.clear_step_rows();
        self.queue.flush();
        let sync = self.queue.waiting(|| self.queue.stream.synchronize());
        let sticky = self.queue.ctx.check_err();
        let device = |reason: String| BackendError::Device {
            backend: "cuda",
            reason,
        };
        if let Some(e) = self.queue.take_error() {
            return Err(device(e));
        }
        sync.map_err(|e| device(format!("queued work failed: {e}")))?;
        sticky.map_err(|e| device(format!("a deferred operation failed: {e}")))
    }
}
