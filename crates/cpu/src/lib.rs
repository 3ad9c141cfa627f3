//! The CPU backend.
//!
//! Weights stay in the model file's memory map in their stored (quantized)
//! format; matrix products dequantize in registers or in small panels, so a
//! weight row is read once per step however many rows the batch holds. The
//! big products and attention run on a persistent spinning [`pool::Pool`]
//! (about a microsecond per parallel region); the small per-row ops (norms,
//! RoPE, residual adds) run on the calling thread, where a region would cost
//! more than the work.
//!
//! Every row is computed with the same arithmetic whatever the batch size or
//! the row's place in it (batch invariance): work is split over weight rows
//! and attention heads, never over a reduction.
//!
//! The activations of the matrix products are f32 by default
//! ([`Activations::F32`], the canonical reduction of [`kernels`]); with
//! [`Activations::Q8`] they are quantized to int8 per block of 32 and the
//! quantized weight types take exact integer block dot products
//! ([`kernels::q8`]), still batch-invariant bit for bit.

mod attention;
pub mod kernels;
pub mod pool;

use smelt_backend::{
    AttnGeometry, AttnRow, Backend, BackendError, Feature, HostBuf, HostKv, HostTensor, KvLayout,
    RopeParams, dequantize_all, gelu_tanh, inv_rms, rope_row, silu, softcap,
};
use smelt_tensor::dequantize_row;

use pool::{Pool, split};

/// Errors creating the CPU backend.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot start {threads} CPU threads: {reason}")]
    ThreadPool { threads: usize, reason: String },
    #[error("{var}={value:?} is not a CPU activation precision (use 0, 1 or all)")]
    BadEnv { var: &'static str, value: String },
}

/// The precision of the activations in the CPU matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activations {
    /// f32 activations, one canonical f32 reduction per output (exact
    /// products of the dequantized weights).
    #[default]
    F32,
    /// int8 activations per block of 32 with exact integer block dot
    /// products for Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K weights; every
    /// other weight type, and the logits' product (the output matrix, or
    /// the token embedding where it is tied), stay on f32.
    Q8,
    /// [`Activations::Q8`] for the logits' product too.
    Q8All,
}

impl Activations {
    /// The environment variable read by [`Activations::from_env`].
    pub const ENV: &'static str = "SMELT_CPU_Q8";

    /// `SMELT_CPU_Q8`: unset, empty or `0` for [`Activations::F32`], `1` for
    /// [`Activations::Q8`], `all` for [`Activations::Q8All`].
    pub fn from_env() -> Result<Activations, CpuError> {
        match std::env::var(Self::ENV) {
            Err(_) => Ok(Activations::F32),
            Ok(v) => match v.trim() {
                "" | "0" => Ok(Activations::F32),
                "1" => Ok(Activations::Q8),
                "all" => Ok(Activations::Q8All),
                _ => Err(CpuError::BadEnv {
                    var: Self::ENV,
                    value: v,
                }),
            },
        }
    }

    /// A short name for reports: `f32`, `q8` or `q8-all`.
    pub fn name(self) -> &'static str {
        match self {
            Activations::F32 => "f32",
            Activations::Q8 => "q8",
            Activations::Q8All => "q8-all",
        }
    }
}

/// Tensor names of the logits' product ([`Activations::Q8`] keeps it on f32).
const LOGITS_WEIGHTS: [&str; 2] = ["output.weight", "token_embd.weight"];

/// A weight placed on the CPU: the stored tensor (a view into the file), and
/// for vectors (norm weights, biases) their f32 values, dequantized once so
/// the per-token ops neither allocate nor convert.
#[derive(Clone, Debug)]
pub struct CpuWeight {
    pub tensor: HostTensor,
    vector: Option<Vec<f32>>,
    /// Whether this is the logits' product (kept on f32 in [`Activations::Q8`]).
    logits: bool,
}

impl CpuWeight {
    /// The f32 values of a vector weight.
    fn values(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.vector {
            Some(v) => std::borrow::Cow::Borrowed(v),
            None => std::borrow::Cow::Owned(dequantize_all(&self.tensor)),
        }
    }
}

std::thread_local! {
    /// The quantized activations of the calling thread's current matrix
    /// products ([`Activations::Q8`]): reused, so a step allocates nothing.
    static Q8_ACTIVATIONS: std::cell::RefCell<kernels::q8::ActQ8> =
        std::cell::RefCell::new(kernels::q8::ActQ8::new());
}

/// Weight rows a matmul hands to a thread come in whole groups of this many.
const MATMUL_ROW_GROUP: usize = 8;

/// Multi-threaded CPU implementation of [`Backend`].
pub struct CpuBackend {
    pool: Pool,
    activations: Activations,
}

impl CpuBackend {
    /// A backend running on `threads` threads (0: one per physical core),
    /// with the activation precision of `SMELT_CPU_Q8` ([`Activations::from_env`]).
    pub fn new(threads: usize) -> Result<Self, CpuError> {
        let activations = Activations::from_env()?;
        Ok(Self::with_threads(threads)?.with_activations(activations))
    }

    /// The same backend with activations of precision `a`.
    pub fn with_activations(mut self, a: Activations) -> Self {
        self.activations = a;
        self
    }

    /// The activation precision of the matrix products.
    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// A backend with f32 activations, whatever the environment says.
    fn with_threads(threads: usize) -> Result<Self, CpuError> {
        let threads = if threads == 0 {
            physical_cores()
        } else {
            threads
        };
        let pool = Pool::new(threads).map_err(|e| CpuError::ThreadPool {
            threads,
            reason: e.to_string(),
        })?;
        Ok(CpuBackend {
            pool,
            activations: Activations::F32,
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.threads()
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

/// An output buffer that several threads fill at disjoint indices.
struct DisjointOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: threads only write through `set`, each to indices no other thread
// touches during the same parallel region (the callers split by weight rows
// or attention rows), and the region joins before the buffer is read.
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
    fn new(out: &mut [f32]) -> Self {
        DisjointOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// The start of the buffer, for kernels that take the disjointness
    /// contract themselves.
    fn ptr(&self) -> *mut f32 {
        self.ptr
    }

    /// The `len` values at `start`, for one thread's exclusive use.
    ///
    /// # Safety
    /// No other thread may access `start..start + len` while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "disjoint write out of bounds");
        // SAFETY: in bounds (checked above) and exclusive (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

impl Backend for CpuBackend {
    type Buf = HostBuf;
    type Weight = CpuWeight;
    type Kv = HostKv;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, _feature: Feature) -> bool {
        true
    }

    fn place(&self, name: &str, tensor: &HostTensor) -> Result<CpuWeight, BackendError> {
        // Zero-copy: the tensor keeps pointing into the file's memory map.
        // Vectors are tiny; their f32 values are kept ready.
        let vector = (tensor.n_rows() == 1).then(|| dequantize_all(tensor));
        Ok(CpuWeight {
            tensor: tensor.clone(),
            vector,
            logits: LOGITS_WEIGHTS.contains(&name),
        })
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

    fn embed(&self, table: &CpuWeight, tokens: &[u32], scale: f32, out: &mut HostBuf) {
        let table = &table.tensor;
        for (dst, &t) in out.data.chunks_exact_mut(out.cols).zip(tokens) {
            dequantize_row(table.dtype(), table.row(t as usize), dst);
            if scale != 1.0 {
                dst.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }

    fn rms_norm(&self, x: &HostBuf, weight: &CpuWeight, eps: f32, out: &mut HostBuf) {
        let w = weight.values();
        for (o, xr) in out
            .data
            .chunks_exact_mut(x.cols)
            .zip(x.data.chunks_exact(x.cols))
        {
            let s = inv_rms(xr, eps);
            for ((o, v), w) in o.iter_mut().zip(xr).zip(w.iter()) {
                *o = v * s * w;
            }
        }
    }

    fn matmul(&self, x: &HostBuf, w: &CpuWeight, out: &mut HostBuf) {
        self.matmuls(x, &mut [(w, out)]);
    }

    fn matmuls(&self, x: &HostBuf, jobs: &mut [(&CpuWeight, &mut HostBuf)]) {
        // One parallel region for all products: the weight rows of every job,
        // in whole groups, are dealt out evenly across the threads.
        let n = x.rows;
        let mut first_group = Vec::with_capacity(jobs.len() + 1);
        let mut total = 0;
        let mut outs = Vec::with_capacity(jobs.len());
        for (w, out) in jobs.iter_mut() {
            let t = &w.tensor;
            assert_eq!(
                (x.cols, out.rows, out.cols),
                (t.row_len(), n, t.n_rows()),
                "matmul shapes"
            );
            first_group.push(total);
            total += t.n_rows().div_ceil(MATMUL_ROW_GROUP);
            outs.push(DisjointOut::new(&mut out.data));
        }
        first_group.push(total);
        let threads = self.threads();
        // Q8: the activations are quantized once, here, for every job that
        // takes the integer path.
        let q8_job: Vec<bool> = jobs
            .iter()
            .map(|(w, _)| {
                let t = &w.tensor;
                match self.activations {
                    Activations::F32 => false,
                    Activations::Q8 => !w.logits && kernels::q8::supports(t.dtype(), t.row_len()),
                    Activations::Q8All => kernels::q8::supports(t.dtype(), t.row_len()),
                }
            })
            .collect();
        Q8_ACTIVATIONS.with(|cell| {
            let mut act = cell.borrow_mut();
            if q8_job.iter().any(|&q| q) {
                act.quantize(&x.data, n, x.cols);
            }
            let act = &*act;
            self.pool.run(&|thread| {
                let mine = split(total, threads, thread);
                for (j, (w, _)) in jobs.iter().enumerate() {
                    let (start, end) = (
                        mine.start.max(first_group[j]),
                        mine.end.min(first_group[j + 1]),
                    );
                    if start >= end {
                        continue;
                    }
                    let t = &w.tensor;
                    let n_out = t.n_rows();
                    let rows = (start - first_group[j]) * MATMUL_ROW_GROUP
                        ..((end - first_group[j]) * MATMUL_ROW_GROUP).min(n_out);
                    kernels::with_thread_scratch(|scratch| {
                        // SAFETY: this thread alone writes output columns
                        // `rows` of every row of job j's output (n × n_out,
                        // row-major).
                        unsafe {
                            if q8_job[j] {
                                kernels::q8::matmul_to_ptr(
                                    t.dtype(),
                                    t.bytes(),
                                    rows,
                                    act,
                                    outs[j].ptr(),
                                    n_out,
                                    scratch,
                                )
                            } else {
                                kernels::matmul_to_ptr(
                                    t.dtype(),
                                    t.bytes(),
                                    t.row_len(),
                                    rows,
                                    &x.data,
                                    n,
                                    outs[j].ptr(),
                                    n_out,
                                    scratch,
                                )
                            }
                        }
                    })
                }
            });
        });
    }

    fn add_bias(&self, x: &mut HostBuf, bias: &CpuWeight) {
        let b = bias.values();
        for row in x.data.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b.iter()).for_each(|(v, b)| *v += b);
        }
    }

    fn rope(&self, x: &mut HostBuf, n_heads: usize, positions: &[u32], params: &RopeParams) {
        for (row, &pos) in x.data.chunks_exact_mut(x.cols).zip(positions) {
            rope_row(row, n_heads, pos, params);
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
        // One work item per (row, head), split evenly: decode (one row) still
        // uses every thread.
        let (d, heads, cols) = (geom.head_dim, geom.n_heads, out.cols);
        let dst = DisjointOut::new(&mut out.data);
        let threads = self.threads();
        self.pool.run(&|t| {
            for item in split(rows.len() * heads, threads, t) {
                let (r, h) = (item / heads, item % heads);
                // SAFETY: head `h` of row `r` belongs to this thread alone.
                let o = unsafe { dst.slice(r * cols + h * d, d) };
                attention::attend_head(q.row(r), kv, layer, &rows[r], geom, h, o);
            }
        });
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

    fn rms_norm_heads(&self, x: &mut HostBuf, n_heads: usize, weight: &CpuWeight, eps: f32) {
        let w = weight.values();
        let d = w.len();
        for row in x.data.chunks_exact_mut(x.cols) {
            for head in row[..n_heads * d].chunks_exact_mut(d) {
                let s = inv_rms(head, eps);
                head.iter_mut()
                    .zip(w.iter())
                    .for_each(|(v, w)| *v = *v * s * w);
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
