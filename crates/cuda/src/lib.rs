//! The CUDA backend.
//!
//! Weights are uploaded once in their stored (quantized) format; matrix
//! products dequantize inside the kernel. Activations are f32 matrices in
//! device memory, the KV cache a pool of f16 (or f32) blocks in device memory
//! with the layout of [`smelt_backend::KvLayout`]. Kernels are CUDA C++ in
//! `src/kernels/`, compiled at run time by NVRTC for the GPU found and cached
//! on disk (see [`compile`]).
//!
//! The CUDA driver and NVRTC are loaded dynamically: Smelt builds and runs on
//! machines without CUDA, and [`CudaBackend::new`] then returns
//! [`CudaError::NoDriver`] (or [`CudaError::NoNvrtc`]) instead of failing to
//! start. Operations queue work on one stream and return nothing; the first
//! error they meet is kept and reported by [`smelt_backend::Backend::finish`].

mod attention;
mod backend;
mod bulk;
mod bulk_q8;
mod chain;
pub mod compile;
mod fused;
mod launch;
mod meta;
mod prefetch;
mod program;
mod queue;
mod scratch;

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use smelt_tensor::DType;

pub use backend::{CudaBuf, CudaKv, CudaWeight};
pub use compile::KernelSource;

/// Errors creating the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "CUDA is not available: the CUDA driver library (libcuda.so) was not found; \
         install an NVIDIA driver or run on the CPU (--device cpu)"
    )]
    NoDriver,
    #[error(
        "CUDA is not available: NVRTC (libnvrtc.so), which compiles Smelt's kernels, was not \
         found; install the CUDA toolkit's runtime compiler or add its lib directory to \
         LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("CUDA driver: cannot {what}: {reason}")]
    Driver { what: &'static str, reason: String },
    #[error("CUDA kernels: {0}")]
    Compile(String),
}

/// True when the CUDA driver and NVRTC libraries can be loaded (it says
/// nothing about whether a GPU is present).
pub fn libraries_present() -> bool {
    // SAFETY: each call tries to dlopen a library by its usual names and
    // closes it again; loading libcuda/libnvrtc runs only their initialisers.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present() }
}

/// A fused matrix-product kernel (matvec.cu), for one batch row per block
/// row (decode) and for eight (prefill): the one that reads any weight type,
/// and ones for a single type (fewer registers, so more warps in flight).
pub(crate) struct MvKernels {
    any: [CudaFunction; 2],
    /// (weight code, kernels) for the types with their own kernels.
    typed: Vec<(usize, [CudaFunction; 2])>,
}

/// Weight types with q8 kernels of their own (`_<suffix>` in matvec_q8.cu).
const TYPED_Q8: [(DType, &str); 4] = [
    (DType::Q4_1, "q4_1"),
    (DType::Q4K, "q4_k"),
    (DType::Q6K, "q6_k"),
    (DType::Q8_0, "q8_0"),
];

/// Weight types with f32-activation kernels of their own (`_<suffix>` in
/// matvec.cu, and the staged-x one-row kernels of matvec_staged.cu): the q8
/// ones, and the 16-bit floats (vector loads of 8 values, so only for rows
/// of a multiple of 8: see `MvKernels::pick`).
const TYPED_MV: [(DType, &str); 6] = [
    (DType::Q4_1, "q4_1"),
    (DType::Q4K, "q4_k"),
    (DType::Q6K, "q6_k"),
    (DType::Q8_0, "q8_0"),
    (DType::BF16, "bf16"),
    (DType::F16, "f16"),
];

impl MvKernels {
    /// The kernel for `n` batch rows of `n_in` values against jobs whose
    /// weights are all of type `code` (None: of several types), and the
    /// batch rows each block row takes. A function of the weight (type and
    /// row length) for the kernel's arithmetic, so batch-invariant.
    pub(crate) fn pick(
        &self,
        n: usize,
        n_in: usize,
        code: Option<usize>,
    ) -> (&CudaFunction, usize) {
        let fs = code
            .filter(|&c| !float16_code(c) || n_in.is_multiple_of(8))
            .and_then(|c| self.typed.iter().find(|(t, _)| *t == c))
            .map_or(&self.any, |(_, f)| f);
        if n == 1 { (&fs[0], 1) } else { (&fs[1], 8) }
    }
}

/// Whether weight code `c` is F16 or BF16.
pub(crate) fn float16_code(c: usize) -> bool {
    [weight_code(DType::BF16), weight_code(DType::F16)].contains(&Some(c))
}

/// The multi-row products with x resident in shared memory
/// (matvec_rows.cu, `mvr_<kind>_8_<type>`), or the one-row ones with x
/// staged there (matvec_staged.cu, `mvs_<kind>_1_<type>`), per weight type.
pub(crate) struct RowsKernels {
    typed: Vec<(usize, CudaFunction)>,
}

/// Weight types with resident-x multi-row kernels (matvec_rows.cu).
const TYPED_MVR: [(DType, &str); 2] = [(DType::Q4_1, "q4_1"), (DType::Q8_0, "q8_0")];

/// Which one-row f32 products take the staged-x kernels (matvec_staged.cu;
/// the same values as the `_1` kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagedMode {
    /// None (`SMELT_CUDA_MVS=0`).
    Off,
    /// The model's logits (the final norm and output projection) only
    /// (`SMELT_CUDA_MVS=logits`).
    Logits,
    /// The logits, and every one-row product of a quantized type: the
    /// default (F16 / BF16 layer products were slower staged).
    Quantized,
    /// Every one-row product of a type that has one (`SMELT_CUDA_MVS=all`).
    All,
}

impl RowsKernels {
    /// The kernel for weights of type `code`, if there is one.
    pub(crate) fn pick(&self, code: usize) -> Option<&CudaFunction> {
        self.typed.iter().find(|(t, _)| *t == code).map(|(_, f)| f)
    }
}

/// Every loaded kernel.
/// The 8-bit-activation versions of one fused product (matvec_q8.cu), per
/// weight type: `[decode, prefill]`.
pub(crate) struct Q8Kernels {
    typed: Vec<(usize, [CudaFunction; 2])>,
}

impl Q8Kernels {
    /// The kernel for `n` batch rows of weights of type `code` (and its rows
    /// per block row), if there is one.
    pub(crate) fn pick(&self, n: usize, code: usize) -> Option<(&CudaFunction, usize)> {
        let (_, fs) = self.typed.iter().find(|(t, _)| *t == code)?;
        Some(if n == 1 { (&fs[0], 1) } else { (&fs[1], 8) })
    }
}

/// Static shared memory a q8 kernel may hold besides its staged input
/// (matvec_q8.cu: the warps' partial sums and the norm's reduction; 2 KiB at 32 warps).
const Q8_STATIC_SHARED: i32 = 4096;

/// Blocks per SM of a q8 grid: each block stages its input once and then
/// loops over items, so the grid is a few blocks per SM, not one per item.
const Q8_BLOCKS_PER_SM: u32 = 1;

/// When the 8-bit-activation products are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q8Mode {
    /// Never: f32 activations everywhere (`SMELT_CUDA_Q8=0`).
    Off,
    /// Only for weights with rows enough to fill at least half of one
    /// block on every SM: the large matrices of 1B+ models, where the q8
    /// path is 1.2–1.5× faster. Small models (SmolLM2's matrices) keep f32
    /// activations: int8 rounding moves SmolLM2's logits enough to change
    /// a greedy token at a 0.22-logit margin (docs/CUDA.md). The default.
    Auto,
    /// For every weight of a q8 type (`SMELT_CUDA_Q8=1`).
    On,
}

/// Where the q8 products apply and how their grids are sized.
pub(crate) struct Q8Config {
    /// Which weights take the q8 path.
    pub mode: Q8Mode,
    /// Most dynamic shared memory a block may use (opt-in limit).
    pub max_shared: usize,
    /// Streaming multiprocessors: the q8 grids are a few blocks per SM.
    pub sm_count: u32,
    /// Blocks per SM of a q8 grid (`SMELT_CUDA_Q8_BLOCKS` overrides).
    pub blocks_per_sm: u32,
    /// Warps per q8 block: `MVQ_WARPS` of matvec_q8.cu, 32 unless
    /// `SMELT_CUDA_DEFINES` sets `SMELT_MVQ_WARPS` (the kernels are then
    /// compiled with it too).
    pub warps: u32,
    /// Whether multi-row products of Q4_1 / Q8_0 weights take the
    /// resident-x kernels (matvec_rows.cu) when their rows fit
    /// (`SMELT_CUDA_RESIDENT=0` turns them off; the values are the same).
    pub resident: bool,
    /// Warps per block of those kernels (`MVR_WARPS`, 8 unless
    /// `SMELT_CUDA_DEFINES` sets `SMELT_MVR_WARPS`).
    pub resident_warps: u32,
    /// Blocks per SM a resident-x grid aims at (`SMELT_CUDA_MVR_BLOCKS`).
    pub resident_blocks_per_sm: u32,
    /// Most warps a q8 item is split over (`SMELT_CUDA_Q8_KW`, 4 by
    /// default: the limit of `warps_per_item`).
    pub max_kw: u32,
    /// Which one-row products take the staged-x kernels.
    pub staged: StagedMode,
    /// Warps per block of those kernels (`MVS_WARPS`, 8 unless
    /// `SMELT_CUDA_DEFINES` sets `SMELT_MVS_WARPS`).
    pub staged_warps: u32,
    /// Blocks per SM of their grids (`SMELT_MVS_MIN_BLOCKS`, 2).
    pub staged_blocks_per_sm: u32,
}

struct Kernels {
    /// Embedding lookup per weight type, indexed by [`weight_code`].
    embed: Vec<CudaFunction>,
    /// The bulk rows' tensor-core product per weight type (gemm.cu),
    /// indexed by [`weight_code`]: 128- and 64-wide output tiles.
    gemm: Vec<[CudaFunction; 2]>,
    /// Adds the k tiles' sums of a GEMM split over k (gemm.cu).
    gemm_sum_tiles: CudaFunction,
    /// The product on exact weight codes (gemm_codes.cu), where the type
    /// has one, and the input split it reads.
    gemm_codes: Vec<Option<[CudaFunction; 2]>>,
    bulk_split_x: CudaFunction,
    /// The product with int8 activations (gemm_q8.cu), where the type has
    /// one, and the input quantization it reads.
    gemm_q8: Vec<Option<[CudaFunction; 2]>>,
    bulk_quant_x: CudaFunction,
    mvq_plain: Q8Kernels,
    mvq_qkv: Q8Kernels,
    mvq_swiglu: Q8Kernels,
    mv_plain: MvKernels,
    mv_qkv: MvKernels,
    mv_swiglu: MvKernels,
    mvr_plain: RowsKernels,
    mvr_qkv: RowsKernels,
    mvr_swiglu: RowsKernels,
    mvs_plain: RowsKernels,
    mvs_qkv: RowsKernels,
    mvs_swiglu: RowsKernels,
    argmax_rows: CudaFunction,
    stream_read: CudaFunction,
    top_k_rows: CudaFunction,
    gelu_tanh_gate: CudaFunction,
    softcap: CudaFunction,
    rms_norm_heads: CudaFunction,
    rms_norm: CudaFunction,
    rope: CudaFunction,
    kv_store_f16: CudaFunction,
    kv_store_f32: CudaFunction,
    attention_f16: CudaFunction,
    attention_f32: CudaFunction,
    attention_merge: CudaFunction,
    prefetch_l2: CudaFunction,
    /// Bulk rows' attention on tensor cores, head dimension 64 and 128.
    attention_tile: [CudaFunction; 2],
    /// The step programs (program.cu), one per type of `PROGRAM_TYPES`;
    /// empty unless `SMELT_CUDA_PROGRAM=1` compiled them.
    programs: Vec<CudaFunction>,
    swiglu: CudaFunction,
    add: CudaFunction,
    add_bias: CudaFunction,
    gather_rows: CudaFunction,
}

/// Weight types with a step program (program.cu, src/program.rs).
const PROGRAM_TYPES: [(DType, &str); 4] = [
    (DType::Q4_1, "q4_1"),
    (DType::Q8_0, "q8_0"),
    (DType::Q4K, "q4_k"),
    (DType::Q6K, "q6_k"),
];

/// Weight types the kernels read, in the order of `WType` in quant.cu.
const WEIGHT_TYPES: [(DType, &str); 13] = [
    (DType::F32, "f32"),
    (DType::F16, "f16"),
    (DType::BF16, "bf16"),
    (DType::Q4_0, "q4_0"),
    (DType::Q4_1, "q4_1"),
    (DType::Q5_0, "q5_0"),
    (DType::Q5_1, "q5_1"),
    (DType::Q8_0, "q8_0"),
    (DType::Q2K, "q2_k"),
    (DType::Q3K, "q3_k"),
    (DType::Q4K, "q4_k"),
    (DType::Q5K, "q5_k"),
    (DType::Q6K, "q6_k"),
];

/// Index of a weight type's kernels, or None if the GPU cannot read it.
fn weight_code(dtype: DType) -> Option<usize> {
    WEIGHT_TYPES.iter().position(|(d, _)| *d == dtype)
}

/// Whether the CUDA backend reads weights of this type.
pub fn supports(dtype: DType) -> bool {
    weight_code(dtype).is_some()
}

/// What was found when the backend started.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
    pub total_memory: usize,
    /// NVRTC version (major, minor).
    pub nvrtc: (i32, i32),
    /// Where the kernel binary came from.
    pub kernels: KernelSource,
}

/// The CUDA implementation of [`smelt_backend::Backend`].
pub struct CudaBackend {
    /// Context, stream, recorded launches, the pending error, the buffer pool.
    queue: Arc<queue::Queue>,
    _module: Arc<CudaModule>,
    k: Kernels,
    q8: Q8Config,
    info: DeviceInfo,
    /// The step's small arrays on the device.
    meta: Mutex<meta::MetaCache>,
    /// Per-span partial results of split attention, grown as needed.
    attn_scratch: Mutex<Option<cudarc::driver::CudaSlice<f32>>>,
    /// `argmax_rows`' indices, counters and per-block partial results
    /// (zeroed when allocated), and the rows and blocks per row it is laid
    /// out for.
    argmax_scratch: Mutex<Option<(cudarc::driver::CudaSlice<u32>, usize, usize)>>,
    /// The host copies of chained greedy steps' ids (chain.rs).
    chain: Mutex<chain::ChainState>,
    /// `top_k_rows`' output: (buffer, its length in u32).
    top_k_scratch: Mutex<Option<(cudarc::driver::CudaSlice<u32>, usize)>>,
    /// Whether greedy steps are chained on the device (chain.rs): off until
    /// measured on a GPU; `SMELT_CUDA_CHAIN=1` turns it on.
    chained: bool,
    /// Whether rows without logits take the tensor-core path (bulk.rs).
    bulk: bool,
    /// Products launched on the staged-x one-row kernels (a diagnostic the
    /// tests read: proof that those kernels ran).
    staged_launches: std::sync::atomic::AtomicU64,
    /// The bulk rows' step, scratch and settings (bulk.rs).
    bulk_state: bulk::BulkState,
    /// Bytes of weights a decode step's layer asks L2 for ahead of use
    /// (prefetch.rs; `SMELT_CUDA_PREFETCH_MIB`, 0: off, the default).
    prefetch_bytes: u64,
}

fn driver(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        what,
        reason: e.to_string(),
    }
}

impl CudaBackend {
    /// The backend on GPU 0.
    pub fn new() -> Result<Self, CudaError> {
        Self::on_device(0)
    }

    /// The backend on GPU `ordinal`.
    pub fn on_device(ordinal: usize) -> Result<Self, CudaError> {
        // SAFETY: see `libraries_present`.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaError::NoNvrtc);
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("open the GPU"))?;
        // SAFETY: Smelt uses one stream per backend and orders every use of a
        // buffer on it (frees are stream-ordered too), so cudarc's per-buffer
        // events for cross-stream synchronisation are not needed. Called
        // before any buffer exists.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver("create a stream"))?;
        let capability = ctx
            .compute_capability()
            .map_err(driver("read the compute capability"))?;
        let name = ctx.name().map_err(driver("read the device name"))?;
        let total_memory = ctx.total_mem().map_err(driver("read the memory size"))?;
        let arch = format!("sm_{}{}", capability.0, capability.1);
        let (cubin, kernels) = compile::kernels_cubin(&arch)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(driver("load the kernels"))?;
        let k = load_kernels(&module)?;
        use cudarc::driver::sys::CUdevice_attribute as A;
        let max_shared = ctx
            .attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(driver("read the shared memory size"))?;
        let sm_count = ctx
            .attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("read the SM count"))?;
        // Dynamic shared memory the q8 kernels may ask for: the opt-in
        // limit less their static shared memory (under 1 KiB).
        let dynamic_limit = (max_shared - Q8_STATIC_SHARED).max(0);
        // The kernels with large dynamic shared memory: q8, resident-x,
        // staged-x products, the bulk rows' attention tiles and int8
        // products.
        let q8_fs = [&k.mvq_plain, &k.mvq_qkv, &k.mvq_swiglu]
            .into_iter()
            .flat_map(|q| q.typed.iter().flat_map(|(_, fs)| fs));
        let rows_fs = [&k.mvr_plain, &k.mvr_qkv, &k.mvr_swiglu]
            .into_iter()
            .chain([&k.mvs_plain, &k.mvs_qkv, &k.mvs_swiglu])
            .flat_map(|r| r.typed.iter().map(|(_, f)| f));
        let gemm_q8_fs = k.gemm_q8.iter().flatten().flatten();
        for f in q8_fs
            .chain(rows_fs)
            .chain(&k.attention_tile)
            .chain(gemm_q8_fs)
        {
            use cudarc::driver::sys::CUfunction_attribute as FA;
            f.set_attribute(
                FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic_limit,
            )
            .map_err(driver("allow the kernels their shared memory"))?;
        }
        let q8 = Q8Config {
            mode: match std::env::var("SMELT_CUDA_Q8").as_deref() {
                Ok("0") => Q8Mode::Off,
                Ok("1") => Q8Mode::On,
                _ => Q8Mode::Auto,
            },
            max_shared: dynamic_limit as usize,
            sm_count: sm_count.max(1) as u32,
            blocks_per_sm: std::env::var("SMELT_CUDA_Q8_BLOCKS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&b: &u32| b > 0)
                .unwrap_or(Q8_BLOCKS_PER_SM),
            warps: compile::define("SMELT_MVQ_WARPS")
                .and_then(|v| v.parse().ok())
                .filter(|w: &u32| [4, 8, 16, 32].contains(w))
                .unwrap_or(32),
            resident: std::env::var("SMELT_CUDA_RESIDENT").map_or(true, |v| v != "0"),
            resident_warps: compile::define("SMELT_MVR_WARPS")
                .and_then(|v| v.parse().ok())
                .filter(|w: &u32| [4, 8, 16, 32].contains(w))
                .unwrap_or(8),
            resident_blocks_per_sm: std::env::var("SMELT_CUDA_MVR_BLOCKS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&b: &u32| b > 0)
                .unwrap_or(2),
            max_kw: std::env::var("SMELT_CUDA_Q8_KW")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|k: &u32| [1, 2, 4].contains(k))
                .unwrap_or(4),
            staged: match std::env::var("SMELT_CUDA_MVS").as_deref() {
                Ok("0") => StagedMode::Off,
                Ok("logits") => StagedMode::Logits,
                Ok("all") => StagedMode::All,
                _ => StagedMode::Quantized,
            },
            staged_warps: compile::define("SMELT_MVS_WARPS")
                .and_then(|v| v.parse().ok())
                .filter(|w: &u32| [4, 8, 16].contains(w))
                .unwrap_or(8),
            staged_blocks_per_sm: compile::define("SMELT_MVS_MIN_BLOCKS")
                .and_then(|v| v.parse().ok())
                .filter(|b: &u32| (1..=8).contains(b))
                .unwrap_or(2),
        };
        let queue = Arc::new(queue::Queue::new(ctx, stream));
        if !k.programs.is_empty() {
            // Without programs every launch is still sent, as its own kernel.
            match program::Programs::set_up(&k, &queue, max_shared, &q8) {
                Ok(p) => queue.use_programs(p),
                Err(_e) => {
                    #[cfg(debug_assertions)]
                    eprintln!("smelt-cuda: no step programs: {_e}");
                }
            }
        }
        let info = DeviceInfo {
            ordinal,
            name,
            capability,
            total_memory,
            nvrtc: compile::nvrtc_version()?,
            kernels,
        };
        Ok(CudaBackend {
            queue,
            _module: module,
            k,
            q8,
            info,
            meta: Mutex::new(meta::MetaCache::default()),
            attn_scratch: Mutex::new(None),
            argmax_scratch: Mutex::new(None),
            chain: Mutex::new(chain::ChainState::default()),
            top_k_scratch: Mutex::new(None),
            chained: std::env::var("SMELT_CUDA_CHAIN").map_or(true, |v| v != "0"),
            bulk: std::env::var("SMELT_CUDA_BULK").map_or(true, |v| v != "0"),
            staged_launches: std::sync::atomic::AtomicU64::new(0),
            bulk_state: bulk::BulkState::from_env(),
            prefetch_bytes: prefetch::budget_from_env(),
        })
    }

    /// The GPU and how the kernels were obtained.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Sends the recorded launches and waits for all queued work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.queue.flush();
        self.queue
            .stream
            .synchronize()
            .map_err(driver("finish queued work"))
    }

    /// How many steps were replayed from a CUDA graph, and how many graphs
    /// were captured.
    pub fn graph_counts(&self) -> (u64, u64) {
        self.queue.graph_counts()
    }

    /// Row `slot` of `layer` of the K and V cache, as f32 (for tests and
    /// debugging: waits for all queued work).
    pub fn read_kv(
        &self,
        kv: &CudaKv,
        layer: usize,
        slot: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        kv.read_row(self, layer, slot)
    }

    /// Time the host has spent waiting for the GPU so far (copies back
    /// and synchronisations): over a run of steps, the rest of the run's
    /// time is the host's own work, during which a step-by-step caller
    /// leaves the GPU idle.
    pub fn host_waited(&self) -> std::time::Duration {
        self.queue.clock(queue::HostClock::Wait)
    }

    /// Host time so far in copies of per-step metadata to the GPU and in
    /// handing launches (or graph replays) to the driver: parts of the
    /// host's own work a step.
    pub fn host_uploads_launches(&self) -> (std::time::Duration, std::time::Duration) {
        (
            self.queue.clock(queue::HostClock::Upload),
            self.queue.clock(queue::HostClock::Launch),
        )
    }

    /// Kernel launches recorded so far (each graph replay counts its
    /// kernels): the difference over a step is the step's kernel count.
    pub fn launch_count(&self) -> u64 {
        self.queue.launch_count()
    }

    /// Whether kernels are launched with programmatic dependent launch
    /// (`SMELT_CUDA_PDL=0` turns it off; a driver that refuses it too).
    /// Device memory read bandwidth, in 10^9 bytes per second, of each of
    /// `passes` streams through a `bytes`-byte buffer (far larger than L2):
    /// the ceiling a memory-bound decode step can reach. Timed with CUDA
    /// events around the one kernel.
    pub fn read_bandwidth(&self, bytes: usize, passes: usize) -> Result<Vec<f64>, CudaError> {
        const THREADS: u32 = 512;
        let words = (bytes / 16).max(1);
        let blocks = self.q8.sm_count * 4;
        self.synchronize()?;
        let stream = &self.queue.stream;
        let buf = stream
            .alloc_zeros::<u8>(words * 16)
            .map_err(driver("allocate the bandwidth buffer"))?;
        let sink = stream
            .alloc_zeros::<u32>((blocks * THREADS / 32) as usize)
            .map_err(driver("allocate the bandwidth sink"))?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (start, end) = (
            self.queue
                .ctx
                .new_event(timing)
                .map_err(driver("create an event"))?,
            self.queue
                .ctx
                .new_event(timing)
                .map_err(driver("create an event"))?,
        );
        let mut out = Vec::with_capacity(passes);
        for _ in 0..passes.max(1) {
            start.record(stream).map_err(driver("record an event"))?;
            self.launch(
                "stream_read",
                &self.k.stream_read,
                (blocks, 1, 1),
                THREADS,
                &[
                    launch::Arg::U64(self.addr(&buf)),
                    launch::Arg::U64(words as u64),
                    launch::Arg::U64(self.addr(&sink)),
                ],
            );
            self.queue.flush();
            end.record(stream).map_err(driver("record an event"))?;
            end.synchronize()
                .map_err(driver("wait for the bandwidth pass"))?;
            let ms = start
                .elapsed_ms(&end)
                .map_err(driver("time the bandwidth pass"))?;
            out.push((words * 16) as f64 / (ms as f64 * 1e-3) / 1e9);
        }
        if let Some(e) = self.queue.take_error() {
            return Err(CudaError::Driver {
                what: "stream the bandwidth buffer",
                reason: e,
            });
        }
        Ok(out)
    }

    /// Turns the 8-bit-activation products (matvec_q8.cu) on for every
    /// weight of a type that has them, or off (f32 activations
    /// everywhere). The default is [`Q8Mode::Auto`] (`SMELT_CUDA_Q8=0|1`
    /// starts Off / On).
    pub fn set_q8(&mut self, on: bool) {
        self.q8.mode = if on { Q8Mode::On } else { Q8Mode::Off };
    }

    /// Sets when the 8-bit-activation products are used (including
    /// [`Q8Mode::Auto`], the default).
    pub fn set_q8_mode(&mut self, mode: Q8Mode) {
        self.q8.mode = mode;
    }

    /// Chains greedy steps on the device (`Backend::chains_greedy`), or
    /// not: `Model::decode_greedy` then steps one `forward_greedy` at a time.
    pub fn set_chained(&mut self, on: bool) {
        self.chained = on;
    }

    /// Sends runs of staged products and attention as one step program
    /// (kernels/program.cu), or every launch as its own kernel. The values
    /// are the same either way. Only where `SMELT_CUDA_PROGRAM=1` compiled
    /// the programs (opt-in: slower so far); otherwise nothing changes.
    pub fn set_programs(&mut self, on: bool) {
        self.queue.set_programs(on);
    }

    /// Step program launches built so far (0 when they are off).
    pub fn program_launches(&self) -> u64 {
        self.queue.program_launches()
    }

    /// How many products have been launched on the staged-x one-row
    /// kernels (matvec_staged.cu) so far.
    pub fn staged_launches(&self) -> u64 {
        self.staged_launches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When the 8-bit-activation products are used.
    pub fn q8_mode(&self) -> Q8Mode {
        self.q8.mode
    }

    /// Which one-row f32 products take the staged-x kernels
    /// (matvec_staged.cu): the same values either way. The default is
    /// [`StagedMode::Quantized`] (`SMELT_CUDA_MVS=0|logits|all` starts Off /
    /// Logits / All).
    pub fn set_staged(&mut self, mode: StagedMode) {
        self.q8.staged = mode;
    }

    /// Sends the rows of a step that want no logits (prompt tokens other
    /// than each prompt's last) to the tensor-core products (on, the
    /// default), or every row to the matrix-vector kernels
    /// (`SMELT_CUDA_BULK=0` starts off). See `bulk.rs`.
    pub fn set_bulk(&mut self, on: bool) {
        self.bulk = on;
    }

    /// Whether bulk rows take the tensor-core products.
    pub fn bulk(&self) -> bool {
        self.bulk
    }

    /// Streaming multiprocessors of the GPU.
    pub(crate) fn sm_count(&self) -> u32 {
        self.q8.sm_count
    }

    pub fn pdl(&self) -> bool {
        self.queue.pdl()
    }
}

fn load_kernels(module: &Arc<CudaModule>) -> Result<Kernels, CudaError> {
    let f = |name: &str| {
        module
            .load_function(name)
            .map_err(|e| CudaError::Compile(format!("kernel {name} missing from the module: {e}")))
    };
    let mut embed = Vec::with_capacity(WEIGHT_TYPES.len());
    let mut gemm = Vec::with_capacity(WEIGHT_TYPES.len());
    let mut gemm_codes = Vec::with_capacity(WEIGHT_TYPES.len());
    let mut gemm_q8 = Vec::with_capacity(WEIGHT_TYPES.len());
    for (dtype, n) in WEIGHT_TYPES {
        embed.push(f(&format!("embed_{n}"))?);
        gemm.push([f(&format!("gemm_{n}"))?, f(&format!("gemm_{n}_n64"))?]);
        gemm_codes.push(match n {
            "f32" | "f16" => None,
            _ => Some([f(&format!("gemmc_{n}"))?, f(&format!("gemmc_{n}_n64"))?]),
        });
        gemm_q8.push(match bulk_q8::kernel_suffix(dtype) {
            Some(s) => Some([f(&format!("gemmq_{s}"))?, f(&format!("gemmq_{s}_n64"))?]),
            None => None,
        });
    }
    // `<name>_1_<type>` / `<name>_8_<type>` of each per-type kernel.
    let typed = |name: &str,
                 list: &[(DType, &str)]|
     -> Result<Vec<(usize, [CudaFunction; 2])>, CudaError> {
        let mut typed = Vec::with_capacity(list.len());
        for &(dtype, suffix) in list {
            if let Some(code) = weight_code(dtype) {
                typed.push((
                    code,
                    [
                        f(&format!("{name}_1_{suffix}"))?,
                        f(&format!("{name}_8_{suffix}"))?,
                    ],
                ));
            }
        }
        Ok(typed)
    };
    let mv = |name: &str| -> Result<MvKernels, CudaError> {
        Ok(MvKernels {
            any: [f(&format!("{name}_1"))?, f(&format!("{name}_8"))?],
            typed: typed(name, &TYPED_MV)?,
        })
    };
    let rows = |name: &str, types: &[(DType, &str)]| -> Result<RowsKernels, CudaError> {
        let mut typed = Vec::with_capacity(types.len());
        for &(dtype, suffix) in types {
            if let Some(code) = weight_code(dtype) {
                typed.push((code, f(&format!("{name}_{suffix}"))?));
            }
        }
        Ok(RowsKernels { typed })
    };
    let q8 = |name: &str| -> Result<Q8Kernels, CudaError> {
        Ok(Q8Kernels {
            typed: typed(name, &TYPED_Q8)?,
        })
    };
    Ok(Kernels {
        embed,
        gemm,
        gemm_sum_tiles: f("gemm_sum_tiles")?,
        gemm_codes,
        bulk_split_x: f("bulk_split_x")?,
        gemm_q8,
        bulk_quant_x: f("bulk_quant_x")?,
        mvq_plain: q8("mvq_plain")?,
        mvq_qkv: q8("mvq_qkv")?,
        mvq_swiglu: q8("mvq_swiglu")?,
        mv_plain: mv("mv_plain")?,
        mv_qkv: mv("mv_qkv")?,
        mv_swiglu: mv("mv_swiglu")?,
        mvr_plain: rows("mvr_plain_8", &TYPED_MVR)?,
        mvr_qkv: rows("mvr_qkv_8", &TYPED_MVR)?,
        mvr_swiglu: rows("mvr_swiglu_8", &TYPED_MVR)?,
        mvs_plain: rows("mvs_plain_1", &TYPED_MV)?,
        mvs_qkv: rows("mvs_qkv_1", &TYPED_MV)?,
        mvs_swiglu: rows("mvs_swiglu_1", &TYPED_MV)?,
        argmax_rows: f("argmax_rows")?,
        stream_read: f("stream_read")?,
        top_k_rows: f("top_k_rows")?,
        gelu_tanh_gate: f("gelu_tanh_gate")?,
        softcap: f("softcap")?,
        rms_norm_heads: f("rms_norm_heads")?,
        rms_norm: f("rms_norm")?,
        rope: f("rope")?,
        kv_store_f16: f("kv_store_f16")?,
        kv_store_f32: f("kv_store_f32")?,
        attention_f16: f("attention_f16")?,
        attention_f32: f("attention_f32")?,
        attention_merge: f("attention_merge")?,
        prefetch_l2: f("prefetch_l2")?,
        attention_tile: [f("attention_tile_f16_64")?, f("attention_tile_f16_128")?],
        programs: if compile::programs_wanted() {
            PROGRAM_TYPES
                .iter()
                .map(|(_, n)| f(&format!("step_program_{n}")))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        },
        swiglu: f("swiglu")?,
        add: f("add")?,
        add_bias: f("add_bias")?,
        gather_rows: f("gather_rows")?,
    })
}
