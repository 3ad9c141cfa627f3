//! The CPU backend.
//!
//! Weights stay in the model file's memory map in their stored (quantized)
//! format; matrix products dequantize in registers or in small panels, so a
//! weight row is read once per step however many rows the batch holds. The
//! big products and attention run on a persistent spinning [`pool::Pool`]
//! (about a microsecond per parallel region). The per-row and element-wise
//! ops (norms, RoPE, SwiGLU, residual adds, the Q8 quantization, argmax) run
//! on the pool too once a batch gives them enough work (a few thousand
//! operations, so a single decode row mostly keeps them on the calling
//! thread); the residual add after a product and SwiGLU after gate/up run
//! inside the products' region, each thread on the columns it computed.
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
mod parallel;
pub mod pool;
mod rope;

use smelt_backend::{
    AttnGeometry, AttnRow, Backend, BackendError, Feature, HostBuf, HostKv, HostTensor, KvLayout,
    RopeParams, argmax, dequantize_all, gelu_tanh, inv_rms, rope_row, silu, softcap, top_k_sorted,
};
use smelt_tensor::dequantize_row;

use parallel::{COST_ADD, COST_NORM, COST_ROPE, COST_TRANSCENDENTAL, DisjointOut, PAR_MIN_WORK};
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
    /// products ([`Activations::Q8`]; each thread of a product quantizes its
    /// own copy): reused, so a step allocates nothing.
    static Q8_ACTIVATIONS: std::cell::RefCell<kernels::q8::ActQ8> =
        std::cell::RefCell::new(kernels::q8::ActQ8::new());
}

/// Activation rows from which the threads of a Q8 product share one
/// quantization (prompt chunks) instead of each quantizing every row (decode
/// batches): duplicated work grows with the rows, crossing cores does not.
/// (pp512, SmolLM2, two cores: every thread quantizing all 256 rows of a
/// chunk cost ≈ 3 %.)
const SHARED_QUANTIZE_ROWS: usize = 64;

/// Weight rows a matmul hands to a thread come in whole groups of this many.
const MATMUL_ROW_GROUP: usize = 8;

/// Multi-threaded CPU implementation of [`Backend`].
pub struct CpuBackend {
    pool: Pool,
    activations: Activations,
    /// RoPE's cosines and sines of the current step's positions.
    rope_cache: std::sync::Mutex<rope::TableCache>,
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
            rope_cache: Default::default(),
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

impl CpuBackend {
    /// RoPE on every buffer (`n_heads` heads each) in one parallel region:
    /// [`smelt_backend::rope_row`]'s values, with the step's angles
    /// computed once ([`rope::TableCache`]).
    fn rope_bufs(
        &self,
        bufs: &mut [(&mut HostBuf, usize)],
        positions: &[u32],
        params: &RopeParams,
    ) {
        let pairs = params.n_rot / 2;
        let simple = pairs > 0
            && params.inv_freq.len() >= pairs
            && bufs
                .iter()
                .all(|(x, heads)| heads * params.head_dim <= x.cols && x.rows >= positions.len());
        if !simple {
            // Nothing rotates, or a shape the reference handles (or rejects).
            for (x, n_heads) in bufs.iter_mut() {
                for (row, &pos) in x.data.chunks_exact_mut(x.cols).zip(positions) {
                    rope_row(row, *n_heads, pos, params);
                }
            }
            return;
        }
        let n = positions.len();
        let mut cache = self.rope_cache.lock().unwrap_or_else(|e| e.into_inner());
        let table = cache.table(self, positions, params);
        let outs: Vec<(DisjointOut, usize, usize)> = bufs
            .iter_mut()
            .map(|(x, heads)| (DisjointOut::new(&mut x.data), x.cols, *heads))
            .collect();
        let work: usize = outs.iter().map(|o| COST_ROPE * o.2 * params.n_rot).sum();
        self.par_ranges(n, work, &|rows| {
            for r in rows {
                for (out, cols, heads) in &outs {
                    // SAFETY: row `r` of every buffer belongs to this part alone.
                    let row = unsafe { out.slice(r * cols, *cols) };
                    rope::rotate_row(row, *heads, &table[r * pairs..(r + 1) * pairs], params);
                }
            }
        });
    }
}

/// Work run by each thread of a fused product on the columns it computed
/// (see `CpuBackend::run_matmuls`).
type Epilogue<'a> = dyn Fn(std::ops::Range<usize>, &[DisjointOut]) + Sync + 'a;

impl CpuBackend {
    /// The products of `x` with every job's weight, in one parallel
    /// region. Without an epilogue the weight rows of every job, in whole
    /// groups, are dealt out evenly across the threads. With one, every job
    /// must have as many outputs as the first: each thread takes the same
    /// columns (in whole groups) of every job, and then runs
    /// `epilogue(columns, outputs)` on them (the outputs of the jobs, in
    /// order; the thread may access those columns of every row).
    fn run_matmuls(
        &self,
        x: &HostBuf,
        jobs: &mut [(&CpuWeight, &mut HostBuf)],
        epilogue: Option<&Epilogue<'_>>,
    ) {
        let n = x.rows;
        let mut first_group = Vec::with_capacity(jobs.len() + 1);
        let mut total = 0;
        let mut outs = Vec::with_capacity(jobs.len());
        let jobs_n_out = jobs.first().map_or(0, |(w, _)| w.tensor.n_rows());
        for (w, out) in jobs.iter_mut() {
            let t = &w.tensor;
            assert_eq!(
                (x.cols, out.rows, out.cols),
                (t.row_len(), n, t.n_rows()),
                "matmul shapes"
            );
            if epilogue.is_some() {
                assert_eq!(t.n_rows(), jobs_n_out, "fused products of different widths");
            }
            first_group.push(total);
            total += t.n_rows().div_ceil(MATMUL_ROW_GROUP);
            outs.push(DisjointOut::new(&mut out.data));
        }
        first_group.push(total);
        let threads = self.threads();
        // Q8: the activations are quantized once (on every thread, below)
        // for all the jobs that take the integer path.
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
        let any_q8 = q8_job.iter().any(|&q| q);
        let work = |thread: usize, act: &kernels::q8::ActQ8| {
            let mine = split(total, threads, thread);
            let mut columns = 0..0;
            for (j, (w, _)) in jobs.iter().enumerate() {
                let (start, end) = if epilogue.is_some() {
                    // The same groups of every job.
                    let g = split(first_group[j + 1] - first_group[j], threads, thread);
                    (first_group[j] + g.start, first_group[j] + g.end)
                } else {
                    (
                        mine.start.max(first_group[j]),
                        mine.end.min(first_group[j + 1]),
                    )
                };
                if start >= end {
                    continue;
                }
                let t = &w.tensor;
                let n_out = t.n_rows();
                let rows = (start - first_group[j]) * MATMUL_ROW_GROUP
                    ..((end - first_group[j]) * MATMUL_ROW_GROUP).min(n_out);
                columns = rows.clone();
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
            if let Some(epilogue) = epilogue
                && !columns.is_empty()
            {
                epilogue(columns, &outs);
            }
        };
        if any_q8 && n < SHARED_QUANTIZE_ROWS {
            // Every thread quantizes every row into its own buffers (the
            // same values), inside the product's region: no region of its
            // own, and no thread reads quantized rows that another wrote (on
            // two cores this took 16-row steps from 23-28 to 22-24 ms; a row
            // takes 0.3 µs).
            self.pool.run(&|thread| {
                Q8_ACTIVATIONS.with(|cell| {
                    let mut act = cell.borrow_mut();
                    act.quantize(&x.data, n, x.cols);
                    work(thread, &act);
                })
            });
        } else {
            // Prompt chunks: the threads share the quantization (each takes
            // a range of blocks of every row) and then read one copy.
            Q8_ACTIVATIONS.with(|cell| {
                let mut act = cell.borrow_mut();
                if any_q8 {
                    let parts = if n * x.cols >= PAR_MIN_WORK {
                        threads
                    } else {
                        1
                    };
                    act.quantize_in_parts(&x.data, n, x.cols, parts, &|part| {
                        if parts == 1 {
                            part(0)
                        } else {
                            self.pool.run(part)
                        }
                    });
                }
                let act = &*act;
                self.pool.run(&|thread| work(thread, act));
            });
        }
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
        let cols = x.cols;
        let n = x.rows.min(out.rows);
        self.par_rows_mut(
            &mut out.data[..n * cols],
            cols,
            COST_NORM * cols,
            &|r, o| {
                let xr = x.row(r);
                let s = inv_rms(xr, eps);
                for ((o, v), w) in o.iter_mut().zip(xr).zip(w.iter()) {
                    *o = v * s * w;
                }
            },
        );
    }

    fn matmul(&self, x: &HostBuf, w: &CpuWeight, out: &mut HostBuf) {
        self.matmuls(x, &mut [(w, out)]);
    }

    fn matmuls(&self, x: &HostBuf, jobs: &mut [(&CpuWeight, &mut HostBuf)]) {
        self.run_matmuls(x, jobs, None);
    }

    fn matmul_add(&self, x: &HostBuf, w: &CpuWeight, t: &mut HostBuf, acc: &mut HostBuf) {
        // The residual add runs in the product's region: each thread adds
        // the output columns it has just computed (the same `a + b` per
        // element as `add`).
        let cols = t.cols;
        assert_eq!((acc.rows, acc.cols), (t.rows, cols), "matmul_add shapes");
        let dst = DisjointOut::new(&mut acc.data);
        self.run_matmuls(
            x,
            &mut [(w, t)],
            Some(&|range: std::ops::Range<usize>, outs: &[DisjointOut]| {
                for r in 0..x.rows {
                    // SAFETY: columns `range` of every row are this
                    // thread's alone, in `acc` and in the product (which
                    // this thread has finished writing).
                    let (a, b) = unsafe {
                        (
                            dst.slice(r * cols + range.start, range.len()),
                            outs[0].slice(r * cols + range.start, range.len()),
                        )
                    };
                    a.iter_mut().zip(b.iter()).for_each(|(a, b)| *a += *b);
                }
            }),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_gate_up_swiglu(
        &self,
        x: &HostBuf,
        norm: &CpuWeight,
        eps: f32,
        w_gate: &CpuWeight,
        w_up: &CpuWeight,
        h: &mut HostBuf,
        gate: &mut HostBuf,
        up: &mut HostBuf,
    ) {
        self.rms_norm(x, norm, eps, h);
        if w_gate.tensor.n_rows() != w_up.tensor.n_rows() {
            self.matmuls(h, &mut [(w_gate, &mut *gate), (w_up, &mut *up)]);
            self.swiglu(gate, up);
            return;
        }
        // SwiGLU in the products' region: each thread takes the same
        // columns of both products, then gates them.
        let cols = gate.cols;
        let n = h.rows;
        self.run_matmuls(
            h,
            &mut [(w_gate, gate), (w_up, up)],
            Some(&|range: std::ops::Range<usize>, outs: &[DisjointOut]| {
                for r in 0..n {
                    // SAFETY: columns `range` of every row of both products
                    // are this thread's alone, and finished.
                    let (g, u) = unsafe {
                        (
                            outs[0].slice(r * cols + range.start, range.len()),
                            outs[1].slice(r * cols + range.start, range.len()),
                        )
                    };
                    g.iter_mut()
                        .zip(u.iter())
                        .for_each(|(g, u)| *g = silu(*g) * *u);
                }
            }),
        );
    }

    fn add_bias(&self, x: &mut HostBuf, bias: &CpuWeight) {
        let b = bias.values();
        self.par_rows_mut(&mut x.data, b.len(), COST_ADD * b.len(), &|_, row| {
            row.iter_mut().zip(b.iter()).for_each(|(v, b)| *v += b);
        });
    }

    fn rope(&self, x: &mut HostBuf, n_heads: usize, positions: &[u32], params: &RopeParams) {
        self.rope_bufs(&mut [(x, n_heads)], positions, params);
    }

    /// Q and K rotate in one parallel region.
    fn rope_qk(
        &self,
        q: &mut HostBuf,
        n_heads: usize,
        k: &mut HostBuf,
        n_kv_heads: usize,
        positions: &[u32],
        params: &RopeParams,
    ) {
        self.rope_bufs(&mut [(q, n_heads), (k, n_kv_heads)], positions, params);
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
        // uses every thread. With grouped-query attention and enough rows
        // to keep every thread busy, one item per (row, KV head): the
        // group's query heads share one pass over the cache (same values).
        let (d, heads, cols) = (geom.head_dim, geom.n_heads, out.cols);
        let dst = DisjointOut::new(&mut out.data);
        let threads = self.threads();
        let kv_heads = geom.n_kv_heads;
        if kv_heads > 0
            && heads > kv_heads
            && heads.is_multiple_of(kv_heads)
            && rows.len() * kv_heads >= 4 * threads
        {
            let group = heads / kv_heads;
            self.pool.run(&|t| {
                for item in split(rows.len() * kv_heads, threads, t) {
                    let (r, g) = (item / kv_heads, item % kv_heads);
                    // SAFETY: the heads of group `g` of row `r` belong to
                    // this thread alone.
                    let o = unsafe { dst.slice(r * cols + g * group * d, group * d) };
                    attention::attend_group(q.row(r), kv, layer, &rows[r], geom, g, o);
                }
            });
            return;
        }
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
        self.par_zip_mut(&mut gate.data, &up.data, COST_TRANSCENDENTAL, &|g, u| {
            g.iter_mut().zip(u).for_each(|(g, u)| *g = silu(*g) * u);
        });
    }

    fn gelu_tanh_gate(&self, gate: &mut HostBuf, up: &HostBuf) {
        self.par_zip_mut(&mut gate.data, &up.data, COST_TRANSCENDENTAL, &|g, u| {
            g.iter_mut()
                .zip(u)
                .for_each(|(g, u)| *g = gelu_tanh(*g) * u);
        });
    }

    fn rms_norm_heads(&self, x: &mut HostBuf, n_heads: usize, weight: &CpuWeight, eps: f32) {
        let w = weight.values();
        let d = w.len();
        if d == 0 {
            return;
        }
        let cols = x.cols;
        self.par_rows_mut(&mut x.data, cols, COST_NORM * n_heads * d, &|_, row| {
            for head in row[..n_heads * d].chunks_exact_mut(d) {
                let s = inv_rms(head, eps);
                head.iter_mut()
                    .zip(w.iter())
                    .for_each(|(v, w)| *v = *v * s * w);
            }
        });
    }

    fn softcap(&self, x: &mut HostBuf, cap: f32) {
        let cols = x.cols;
        self.par_rows_mut(&mut x.data, cols, COST_TRANSCENDENTAL * cols, &|_, row| {
            row.iter_mut().for_each(|v| *v = softcap(*v, cap));
        });
    }

    fn add(&self, x: &mut HostBuf, y: &HostBuf) {
        self.par_zip_mut(&mut x.data, &y.data, COST_ADD, &|a, b| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        });
    }

    fn argmax_rows(&self, x: &HostBuf) -> Vec<u32> {
        // In place (the logits are already on the host), a row per thread.
        let mut out = vec![0u32; x.rows];
        let dst = DisjointOut::new(&mut out);
        self.par_ranges(x.rows, x.cols, &|rows| {
            // SAFETY: these rows' slots are this part's alone.
            let mine = unsafe { dst.slice(rows.start, rows.len()) };
            for (o, r) in mine.iter_mut().zip(rows) {
                *o = argmax(x.row(r));
            }
        });
        out
    }

    fn top_k_rows(&self, x: &HostBuf, k: usize) -> Vec<Vec<(u32, f32)>> {
        let mut out = vec![Vec::new(); x.rows];
        let dst = DisjointOut::new(&mut out);
        self.par_ranges(x.rows, 2 * x.cols, &|rows| {
            // SAFETY: these rows' slots are this part's alone.
            let mine = unsafe { dst.slice(rows.start, rows.len()) };
            for (o, r) in mine.iter_mut().zip(rows) {
                *o = top_k_sorted(x.row(r), k);
            }
        });
        out
    }

    fn gather_rows(&self, x: &HostBuf, rows: &[usize]) -> HostBuf {
        x.gather(rows)
    }
}
