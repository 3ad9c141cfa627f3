//! The launch queue: kernels are recorded as the model calls the ops and
//! sent to the GPU at the next point that needs their results (a download,
//! `finish`, a buffer freed). A list of launches equal to the previous one
//! (a decode step: same kernels, same shapes, same buffers) is captured once
//! as a CUDA graph and from then on replayed with one call, so the steady
//! state of decoding costs no per-kernel host work.
//!
//! Buffers return to a pool when dropped and are handed out again for the
//! same size, so the buffers a step allocates anew (logit rows) keep their
//! addresses from step to step and the step's launch list repeats.
//!
//! Kernels are launched with programmatic dependent launch (PDL): each may
//! start while the previous one runs, fetch its weights, and wait in
//! `griddepcontrol.wait` for the previous one's results (kernels/common.cuh).
//! If the driver refuses such a launch, every later launch is a plain one.
//!
//! Set `SMELT_CUDA_GRAPHS=0` to launch every kernel directly instead, and
//! `SMELT_CUDA_PDL=0` to launch without PDL.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{
    CUgraphInstantiate_flags, CUlaunchAttribute, CUlaunchAttributeID, CUlaunchConfig,
    CUstreamCaptureMode,
};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream};

/// One kernel argument, by value, as the kernel declares it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// A device pointer (`T*`) or a `u64`.
    U64(u64),
    I32(i32),
    F32(f32),
    /// A `MvJob` struct (matvec.cu).
    Job(MvJob),
}

/// One weight of a fused matrix product, laid out as `struct MvJob` in
/// matvec.cu (40 bytes, 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MvJob {
    /// Device address of the stored rows.
    pub w: u64,
    pub row_bytes: u64,
    /// Device address of the output.
    pub out: u64,
    /// Device address of an f32 bias per output row, or 0.
    pub bias: u64,
    /// Index into `WEIGHT_TYPES` (`WType` in quant.cu).
    pub wtype: i32,
    pub n_rows: i32,
}

impl PartialEq for Arg {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Arg::U64(a), Arg::U64(b)) => a == b,
            (Arg::I32(a), Arg::I32(b)) => a == b,
            (Arg::F32(a), Arg::F32(b)) => a.to_bits() == b.to_bits(),
            (Arg::Job(a), Arg::Job(b)) => a == b,
            _ => false,
        }
    }
}

/// A recorded kernel launch.
#[derive(Clone)]
pub(crate) struct Launch {
    pub what: &'static str,
    pub func: CudaFunction,
    pub grid: (u32, u32, u32),
    pub block: u32,
    /// Dynamic shared memory, bytes.
    pub shared: u32,
    pub args: Vec<Arg>,
    /// The kernel's one parameter as raw bytes, instead of `args` (the
    /// step program's, src/program.rs).
    pub param_blob: Option<Arc<[u8]>>,
}

impl PartialEq for Launch {
    fn eq(&self, o: &Self) -> bool {
        self.func.cu_function() == o.func.cu_function()
            && self.grid == o.grid
            && self.block == o.block
            && self.shared == o.shared
            && self.args == o.args
            && self.param_blob == o.param_blob
    }
}

/// A captured graph (not thread-safe by itself: only used under the queue's
/// lock).
struct Graph(CudaGraph);

// SAFETY: the graph is created, launched and destroyed only while holding
// `Queue::state`'s mutex, which serialises every access as CUDA requires.
unsafe impl Send for Graph {}

/// Free buffers kept per length; beyond this many of one length they are freed.
const POOL_PER_LEN: usize = 8;
/// Launch lists shorter than this are not worth a graph.
const MIN_GRAPH_LAUNCHES: usize = 8;

#[derive(Default)]
struct State {
    pending: Vec<Launch>,
    /// The last list flushed without a graph.
    previous: Vec<Launch>,
    /// The captured list and its graph.
    graph: Option<(Vec<Launch>, Graph)>,
    pool: HashMap<usize, Vec<CudaSlice<f32>>>,
    /// Replays, captures and recorded launches, for reports.
    replays: u64,
    captures: u64,
    launches: u64,
    /// Flushes that sent launches so far.
    epoch: u64,
}

/// Shared by the backend and every buffer it hands out.
pub(crate) struct Queue {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    graphs: bool,
    /// Launch with programmatic dependent launch (cleared if refused).
    pdl: AtomicBool,
    state: Mutex<State>,
    /// The first error since the last `take_error`.
    error: Mutex<Option<String>>,
    /// Nanoseconds the host has spent in each [`HostClock`] kind of call,
    /// for reports of the host's share of a step.
    clocks: [AtomicU64; 3],
    /// Runs of launches sent as one step program (src/program.rs), once
    /// the kernels are loaded; unset: every launch is its own kernel.
    programs: std::sync::OnceLock<crate::program::Programs>,
    /// Whether runs are fused now (`CudaBackend::set_programs`).
    programs_on: AtomicBool,
}

/// The host calls whose time is counted (`Queue::timed`).
#[derive(Clone, Copy, Debug)]
pub enum HostClock {
    /// Waits for the GPU: copies back and synchronisations.
    Wait = 0,
    /// Copies of per-step metadata to the GPU.
    Upload = 1,
    /// Kernel launches and graph replays handed to the driver.
    Launch = 2,
}

impl Queue {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Self {
        let graphs = std::env::var("SMELT_CUDA_GRAPHS").map_or(true, |v| v != "0");
        let pdl = std::env::var("SMELT_CUDA_PDL").map_or(true, |v| v != "0");
        Queue {
            ctx,
            stream,
            graphs,
            pdl: AtomicBool::new(pdl),
            state: Mutex::new(State::default()),
            error: Mutex::new(None),
            clocks: Default::default(),
            programs: std::sync::OnceLock::new(),
            programs_on: AtomicBool::new(true),
        }
    }

    /// Fuses runs into step programs (when there are programs), or not.
    pub fn set_programs(&self, on: bool) {
        self.programs_on.store(on, Ordering::Relaxed);
    }

    /// Step program launches built so far (each graph capture builds its
    /// own once; replays build none).
    pub fn program_launches(&self) -> u64 {
        self.programs.get().map_or(0, |p| p.launches())
    }

    /// From now on, runs of launches the programs take are sent as one.
    pub fn use_programs(&self, programs: crate::program::Programs) {
        let _ = self.programs.set(programs);
    }

    /// What is sent for `launches`: runs fused into step programs.
    fn to_send<'a>(&self, launches: &'a [Launch]) -> std::borrow::Cow<'a, [Launch]> {
        match self.programs.get() {
            Some(p) if self.programs_on.load(Ordering::Relaxed) => {
                std::borrow::Cow::Owned(p.fuse(launches))
            }
            _ => std::borrow::Cow::Borrowed(launches),
        }
    }

    /// Runs `f`, a call of kind `clock`, counting the time it takes.
    pub fn timed<T>(&self, clock: HostClock, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let r = f();
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.clocks[clock as usize].fetch_add(ns, Ordering::Relaxed);
        r
    }

    /// Runs `f`, a call that waits for the GPU, counting the time it takes.
    pub fn waiting<T>(&self, f: impl FnOnce() -> T) -> T {
        self.timed(HostClock::Wait, f)
    }

    /// Time spent in calls of kind `clock` so far.
    pub fn clock(&self, clock: HostClock) -> std::time::Duration {
        std::time::Duration::from_nanos(self.clocks[clock as usize].load(Ordering::Relaxed))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `msg` as the pending error unless one is already kept.
    pub fn fail(&self, msg: String) {
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(msg);
        }
    }

    pub fn take_error(&self) -> Option<String> {
        if self.programs.get().is_some_and(|p| p.take_fault()) {
            self.fail(
                "a step program's grid barrier timed out (its blocks were not all resident): \
                 results since the last check are wrong; SMELT_CUDA_PROGRAM=0 avoids programs"
                    .to_string(),
            );
        }
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Records a launch.
    pub fn push(&self, launch: Launch) {
        let mut s = self.state();
        s.launches += 1;
        s.pending.push(launch);
    }

    /// Kernel launches recorded so far (replayed ones included).
    pub fn launch_count(&self) -> u64 {
        self.state().launches
    }

    /// Counts the flushes that sent launches: an array handed to kernels in
    /// the current epoch may still be read by a recorded launch.
    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// (graph replays, graph captures) so far.
    pub fn graph_counts(&self) -> (u64, u64) {
        let s = self.state();
        (s.replays, s.captures)
    }

    /// A pooled buffer of exactly `len` values, if one is free.
    pub fn take_pooled(&self, len: usize) -> Option<CudaSlice<f32>> {
        self.state().pool.get_mut(&len)?.pop()
    }

    /// Returns a buffer to the pool (or frees it, after sending what may
    /// still read it).
    pub fn give_back(&self, buf: CudaSlice<f32>) {
        let mut s = self.state();
        let list = s.pool.entry(buf.len()).or_default();
        if list.len() < POOL_PER_LEN {
            list.push(buf);
            return;
        }
        self.flush_locked(&mut s);
        drop(s);
        drop(buf);
    }

    /// Sends every recorded launch to the GPU.
    pub fn flush(&self) {
        let mut s = self.state();
        self.flush_locked(&mut s);
    }

    fn flush_locked(&self, s: &mut State) {
        if s.pending.is_empty() {
            return;
        }
        let launches = std::mem::take(&mut s.pending);
        s.epoch += 1;
        if let Err(e) = self.ctx.bind_to_thread() {
            self.fail(format!("cannot use the GPU from this thread: {e}"));
            return;
        }
        if self.graphs && launches.len() >= MIN_GRAPH_LAUNCHES {
            if let Some((list, graph)) = &s.graph
                && *list == launches
            {
                if let Err(e) = self.timed(HostClock::Launch, || graph.0.launch()) {
                    self.fail(format!("graph replay failed: {e}"));
                }
                s.replays += 1;
                return;
            }
            if s.previous == launches {
                match self.capture(&self.to_send(&launches)) {
                    Ok(Some(graph)) => {
                        if s.graph.is_some() {
                            // The old graph may still run: let it finish
                            // before it is destroyed.
                            if let Err(e) = self.stream.synchronize() {
                                self.fail(format!("queued work failed: {e}"));
                            }
                            s.graph = None;
                        }
                        if let Err(e) = graph.launch() {
                            self.fail(format!("graph launch failed: {e}"));
                        }
                        s.captures += 1;
                        s.graph = Some((launches, Graph(graph)));
                        s.previous.clear();
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Capture failed: launch directly, remember nothing;
                        // if PDL was on, capture the next time without it.
                        self.fail_soft(&e);
                        self.pdl.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        self.timed(HostClock::Launch, || {
            for l in self.to_send(&launches).iter() {
                self.launch_now(l);
            }
        });
        s.previous = launches;
    }

    /// A capture failure is not the user's error: note it only in debug builds.
    fn fail_soft(&self, _e: &str) {
        #[cfg(debug_assertions)]
        eprintln!("smelt-cuda: graph capture failed, launching directly: {_e}");
    }

    /// Captures `launches` into a graph (launching nothing).
    fn capture(&self, launches: &[Launch]) -> Result<Option<CudaGraph>, String> {
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| format!("begin capture: {e}"))?;
        let mut failed = None;
        for l in launches {
            if let Err(e) = self.raw_launch(l) {
                failed = Some(format!("{}: {e}", l.what));
                break;
            }
        }
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| format!("end capture: {e}"))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(graph),
        }
    }

    fn launch_now(&self, l: &Launch) {
        if let Err(e) = self.raw_launch(l) {
            self.fail(format!("{}: launch failed: {e}", l.what));
        }
    }

    fn raw_launch(&self, l: &Launch) -> Result<(), cudarc::driver::DriverError> {
        let mut vals = l.args.clone();
        let mut params: Vec<*mut c_void> = match &l.param_blob {
            // The driver only reads the parameter (copying it at the launch
            // or into the graph node); `l` keeps it alive through the call.
            Some(b) => vec![b.as_ptr().cast_mut().cast()],
            None => vals
                .iter_mut()
                .map(|a| match a {
                    Arg::U64(v) => (v as *mut u64).cast(),
                    Arg::I32(v) => (v as *mut i32).cast(),
                    Arg::F32(v) => (v as *mut f32).cast(),
                    Arg::Job(v) => (v as *mut MvJob).cast(),
                })
                .collect(),
        };
        if self.pdl.load(Ordering::Relaxed) {
            // SAFETY: a zeroed attribute is valid plain data; the id and the
            // union member it names are set before use.
            let mut attr: CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attr.id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let config = CUlaunchConfig {
                gridDimX: l.grid.0,
                gridDimY: l.grid.1,
                gridDimZ: l.grid.2,
                blockDimX: l.block,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: l.shared,
                hStream: self.stream.cu_stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            // SAFETY: as for the plain launch below; `config` and `attr`
            // outlive the call. Every kernel waits (griddepcontrol.wait)
            // before it reads what an earlier kernel wrote and before it
            // exits, which PDL needs for stream order to hold.
            let r = unsafe {
                cudarc::driver::sys::cuLaunchKernelEx(
                    &config,
                    l.func.cu_function(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
            .result();
            match r {
                Ok(()) => return Ok(()),
                Err(cudarc::driver::DriverError(
                    cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_SUPPORTED
                    | cudarc::driver::sys::CUresult::CUDA_ERROR_INVALID_VALUE,
                )) => {
                    // This driver or device has no PDL: plain launches from now on.
                    self.pdl.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        // SAFETY: `params` points at `vals`, which outlive the call, one value
        // per kernel parameter in the kernel's order and type (each call site
        // lists them as the .cu signature declares; `MvJob` is `repr(C)` as
        // the struct there); every pointer argument is a live device
        // allocation of this context (buffers are pooled, and freed only
        // after the launches that read them were sent) whose extent the call
        // site checked against the grid; one stream orders it all.
        unsafe {
            cudarc::driver::result::launch_kernel(
                l.func.cu_function(),
                l.grid,
                (l.block, 1, 1),
                l.shared,
                self.stream.cu_stream(),
                &mut params,
            )
        }
    }

    /// Whether launches use programmatic dependent launch.
    pub fn pdl(&self) -> bool {
        self.pdl.load(Ordering::Relaxed)
    }
}
