//! The step program (kernels/program.cu): a run of consecutive launches of
//! the one-row staged products of one weight type and the attention is sent
//! as one persistent kernel that runs each launch's blocks in turn, with a
//! grid barrier between launches, instead of one kernel each. The recorded
//! launch list is unchanged (the graph is still matched against it); only
//! what is sent differs.
//!
//! Each fused launch becomes an op: its kind, its grid and its parameters
//! packed as the kernel declares them (natural alignment, as a C struct of
//! the same members). The program is the kernel's one parameter (up to
//! [`PROGRAM_OPS`] ops, 32 KiB), so a captured graph holds its own copy.
//!
//! Opt-in (`SMELT_CUDA_PROGRAM=1` compiles the programs and turns them on):
//! on an H100 they were slower than separate launches with PDL (SmolLM2
//! shape 956 vs 1,440 tok/s, docs/CUDA.md "Session 10"): a grid barrier of
//! 264 blocks costs more than a kernel boundary.

use std::sync::Arc;

use cudarc::driver::sys::CUfunction;
use cudarc::driver::{CudaFunction, CudaSlice, PinnedHostSlice};

use crate::queue::{Arg, Launch, MvJob, Queue};
use crate::{CudaError, Kernels, PROGRAM_TYPES, Q8Config, RowsKernels, driver, weight_code};

/// Ops one program holds (`PROGRAM_OPS` in program.cu).
const PROGRAM_OPS: usize = 127;
/// Bytes of an op (`OpRec`): kind, grid, then the parameters.
const OP_BYTES: usize = 256;
const OP_PARAM_BYTES: usize = 240;
/// Bytes of the kernel's parameter (`Program`): barrier and fault
/// pointers, op count, padding, the ops.
const PROGRAM_HEAD: usize = 24;
const PROGRAM_BYTES: usize = PROGRAM_HEAD + OP_BYTES * PROGRAM_OPS;
/// Threads per block of the program and of every launch it takes.
const PROGRAM_THREADS: u32 = 256;
/// Barrier words per program launch (count, generation) and the programs
/// a flush may hold before their barriers are reused.
const BARRIER_WORDS: usize = 2;
const BARRIER_SLOTS: usize = 64;

/// What an op runs (`OP_*` in program.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Plain = 0,
    Qkv = 1,
    Swiglu = 2,
    AttentionF16 = 3,
}

/// A kernel the program can run: which program (weight type) it needs, if
/// any (the attention runs in every one), and as which op.
struct Fusable {
    func: CUfunction,
    program: Option<usize>,
    kind: OpKind,
}

/// Device memory of the programs' barriers: per-launch barrier words and
/// the fault word (host memory the GPU writes through).
pub(crate) struct ProgramMemory {
    /// Held so that `barrier_base` stays valid.
    pub _barriers: CudaSlice<u32>,
    pub barrier_base: u64,
    pub fault: PinnedHostSlice<u32>,
    pub fault_addr: u64,
}

/// The programs (one per weight type) and what they can take.
pub(crate) struct Programs {
    fusable: Vec<Fusable>,
    programs: Vec<CudaFunction>,
    /// Blocks per SM of a program launch (at most what the staged products
    /// launch with), by program and dynamic shared memory.
    occupancy: std::sync::Mutex<Vec<((usize, u32), u32)>>,
    max_blocks_per_sm: u32,
    sm_count: u32,
    /// The barrier and fault words the programs' addresses point into.
    memory: ProgramMemory,
    /// Program launches built (for tests and reports).
    built: std::sync::atomic::AtomicU64,
}

// SAFETY: the CUfunction handles are only compared and handed to the
// driver, which allows that from any thread; the context outlives them.
unsafe impl Send for Programs {}
// SAFETY: as above; the occupancy cache is behind a mutex.
unsafe impl Sync for Programs {}

impl Programs {
    /// `programs[t]` runs the products of `staged[t]` (plain, qkv, swiglu)
    /// and the attention `attention`.
    pub fn new(
        programs: Vec<CudaFunction>,
        staged: Vec<[CudaFunction; 3]>,
        attention: &CudaFunction,
        sm_count: u32,
        max_blocks_per_sm: u32,
        memory: ProgramMemory,
    ) -> Self {
        let mut fusable = vec![Fusable {
            func: attention.cu_function(),
            program: None,
            kind: OpKind::AttentionF16,
        }];
        for (t, fs) in staged.iter().enumerate() {
            for (f, kind) in fs.iter().zip([OpKind::Plain, OpKind::Qkv, OpKind::Swiglu]) {
                fusable.push(Fusable {
                    func: f.cu_function(),
                    program: Some(t),
                    kind,
                });
            }
        }
        Programs {
            fusable,
            programs,
            occupancy: std::sync::Mutex::new(Vec::new()),
            max_blocks_per_sm,
            sm_count,
            memory,
            built: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a program's barrier timed out (some block never arrived);
    /// clears the word.
    pub fn take_fault(&self) -> bool {
        let Ok(p) = self.memory.fault.as_ptr() else {
            return false;
        };
        // SAFETY: `p` points at the one u32 of the live pinned allocation;
        // the GPU writes it only to set it, so a volatile read sees 0 or 1,
        // and clearing it races with nothing but another fault.
        unsafe {
            let p = p.cast_mut();
            let set = std::ptr::read_volatile(p) != 0;
            if set {
                std::ptr::write_volatile(p, 0);
            }
            set
        }
    }

    /// Program launches built so far.
    pub fn launches(&self) -> u64 {
        self.built.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The programs of `k` (compiled: `SMELT_CUDA_PROGRAM=1`) and the staged
    /// products and attention they run, with zeroed barrier words.
    pub(crate) fn set_up(
        k: &Kernels,
        queue: &Queue,
        max_shared: i32,
        q8: &Q8Config,
    ) -> Result<Programs, CudaError> {
        use cudarc::driver::sys::CUfunction_attribute as FA;
        let mut staged = Vec::with_capacity(PROGRAM_TYPES.len());
        for (dtype, _) in PROGRAM_TYPES {
            let pick = |r: &RowsKernels| {
                weight_code(dtype)
                    .and_then(|c| r.typed.iter().find(|(t, _)| *t == c))
                    .map(|(_, f)| f.clone())
                    .ok_or_else(|| CudaError::Compile(format!("no staged kernel for {dtype:?}")))
            };
            staged.push([pick(&k.mvs_plain)?, pick(&k.mvs_qkv)?, pick(&k.mvs_swiglu)?]);
        }
        for f in &k.programs {
            // The opt-in limit less the program's static shared memory (the
            // attention's and the products' arrays, ~18 KiB).
            let fixed = f
                .get_attribute(FA::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(driver("read the step programs' shared memory"))?;
            f.set_attribute(
                FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                (max_shared - fixed).max(0),
            )
            .map_err(driver("allow the step programs their shared memory"))?;
        }
        let barriers = queue
            .stream
            .alloc_zeros::<u32>(Programs::barrier_words())
            .map_err(driver("allocate the step programs' barriers"))?;
        let (base, _guard) = cudarc::driver::DevicePtr::device_ptr(&barriers, &queue.stream);
        drop(_guard);
        // The fault word, in host memory the device writes through.
        // SAFETY: the word is set to 0 below before any kernel can see it.
        let fault = unsafe {
            queue.ctx.alloc_pinned_with_flags::<u32>(
                1,
                cudarc::driver::sys::CU_MEMHOSTALLOC_DEVICEMAP
                    | cudarc::driver::sys::CU_MEMHOSTALLOC_PORTABLE,
            )
        }
        .map_err(driver("allocate the step programs' fault word"))?;
        let host = fault
            .as_ptr()
            .map_err(driver("read the step programs' fault word"))?;
        let mut fault_addr: cudarc::driver::sys::CUdeviceptr = 0;
        // SAFETY: `host` is a live pinned allocation made with DEVICEMAP, so
        // the driver has a device address for it; 0 is a valid u32.
        unsafe {
            std::ptr::write_volatile(host.cast_mut(), 0);
            cudarc::driver::sys::cuMemHostGetDevicePointer_v2(
                &mut fault_addr,
                host.cast_mut().cast(),
                0,
            )
        }
        .result()
        .map_err(driver("map the step programs' fault word"))?;
        Ok(Programs::new(
            k.programs.clone(),
            staged,
            &k.attention_f16,
            q8.sm_count,
            q8.staged_blocks_per_sm,
            ProgramMemory {
                _barriers: barriers,
                barrier_base: base,
                fault,
                fault_addr,
            },
        ))
    }

    /// Bytes of barrier words (for the device allocation).
    pub fn barrier_words() -> usize {
        BARRIER_WORDS * BARRIER_SLOTS
    }

    fn lookup(&self, l: &Launch) -> Option<&Fusable> {
        if l.block != PROGRAM_THREADS || l.param_blob.is_some() {
            return None;
        }
        let f = l.func.cu_function();
        self.fusable.iter().find(|x| x.func == f)
    }

    fn blocks_per_sm(&self, program: usize, shared: u32) -> u32 {
        let mut cache = self.occupancy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, b)) = cache.iter().find(|(k, _)| *k == (program, shared)) {
            return b;
        }
        let b = self.programs[program]
            .occupancy_max_active_blocks_per_multiprocessor(PROGRAM_THREADS, shared as usize, None)
            .unwrap_or(0)
            .min(self.max_blocks_per_sm);
        cache.push(((program, shared), b));
        b
    }

    /// `launches` with each run of two or more fusable launches of one
    /// program replaced by a program launch.
    pub fn fuse(&self, launches: &[Launch]) -> Vec<Launch> {
        let found: Vec<Option<&Fusable>> = launches.iter().map(|l| self.lookup(l)).collect();
        let programs: Vec<Option<Option<usize>>> =
            found.iter().map(|f| f.map(|f| f.program)).collect();
        let mut out = Vec::with_capacity(launches.len());
        let mut slot = 0usize;
        let mut i = 0;
        while i < launches.len() {
            let (program, end) = run_from(&programs, i);
            let run = &launches[i..end];
            let sent = match program {
                Some(p) if run.len() >= 2 => self.program_launch(p, run, &found[i..end], slot),
                _ => None,
            };
            match sent {
                Some(l) => {
                    out.push(l);
                    slot += 1;
                    i = end;
                }
                None => {
                    out.push(launches[i].clone());
                    i += 1;
                }
            }
        }
        out
    }

    fn program_launch(
        &self,
        program: usize,
        run: &[Launch],
        found: &[Option<&Fusable>],
        slot: usize,
    ) -> Option<Launch> {
        let shared = run.iter().map(|l| l.shared).max().unwrap_or(0);
        let per_sm = self.blocks_per_sm(program, shared);
        if per_sm == 0 {
            return None;
        }
        let mut blob = vec![0u8; PROGRAM_BYTES];
        let bar = self.memory.barrier_base + ((slot % BARRIER_SLOTS) * BARRIER_WORDS * 4) as u64;
        blob[0..8].copy_from_slice(&bar.to_le_bytes());
        blob[8..16].copy_from_slice(&self.memory.fault_addr.to_le_bytes());
        blob[16..20].copy_from_slice(&(run.len() as i32).to_le_bytes());
        for (n, (l, f)) in run.iter().zip(found).enumerate() {
            let kind = f.as_ref()?.kind;
            let at = PROGRAM_HEAD + n * OP_BYTES;
            let op = &mut blob[at..at + OP_BYTES];
            op[0..4].copy_from_slice(&(kind as i32).to_le_bytes());
            op[4..8].copy_from_slice(&l.grid.0.to_le_bytes());
            op[8..12].copy_from_slice(&l.grid.1.to_le_bytes());
            op[12..16].copy_from_slice(&l.grid.2.to_le_bytes());
            pack_params(&l.args, &mut op[16..16 + OP_PARAM_BYTES])?;
        }
        self.built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Launch {
            what: "step program",
            func: self.programs[program].clone(),
            grid: (self.sm_count * per_sm, 1, 1),
            block: PROGRAM_THREADS,
            shared,
            args: Vec::new(),
            param_blob: Some(Arc::from(blob)),
        })
    }
}

/// The longest run of launches from `i` one program can take, and that
/// program: `programs[j]` is None for a launch no program takes, Some(None)
/// for one every program takes (the attention), Some(Some(p)) for one only
/// program p takes. At most [`PROGRAM_OPS`] launches.
fn run_from(programs: &[Option<Option<usize>>], i: usize) -> (Option<usize>, usize) {
    let mut program = None;
    let mut j = i;
    while j < programs.len() && j - i < PROGRAM_OPS {
        let Some(p) = programs[j] else {
            break;
        };
        match (program, p) {
            (Some(a), Some(b)) if a != b => break,
            (None, Some(b)) => program = Some(b),
            _ => {}
        }
        j += 1;
    }
    (program, j)
}

/// Lays `args` out as a C struct of the same members (each at its natural
/// alignment), as the driver lays out kernel parameters; None if they do
/// not fit.
fn pack_params(args: &[Arg], out: &mut [u8]) -> Option<()> {
    let mut at = 0usize;
    let mut put = |align: usize, bytes: &[u8]| -> Option<()> {
        at = at.next_multiple_of(align);
        out.get_mut(at..at + bytes.len())?.copy_from_slice(bytes);
        at += bytes.len();
        Some(())
    };
    for a in args {
        match a {
            Arg::U64(v) => put(8, &v.to_le_bytes())?,
            Arg::I32(v) => put(4, &v.to_le_bytes())?,
            Arg::F32(v) => put(4, &v.to_le_bytes())?,
            Arg::Job(j) => put(8, &job_bytes(j))?,
        }
    }
    Some(())
}

/// `struct MvJob` of matvec.cu: four u64, two i32.
fn job_bytes(j: &MvJob) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[0..8].copy_from_slice(&j.w.to_le_bytes());
    b[8..16].copy_from_slice(&j.row_bytes.to_le_bytes());
    b[16..24].copy_from_slice(&j.out.to_le_bytes());
    b[24..32].copy_from_slice(&j.bias.to_le_bytes());
    b[32..36].copy_from_slice(&j.wtype.to_le_bytes());
    b[36..40].copy_from_slice(&j.n_rows.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_pack_at_natural_alignment() {
        // (MvJob, ptr, int, int, ptr, float, int, int): the plain product.
        let job = MvJob {
            w: 1,
            row_bytes: 2,
            out: 3,
            bias: 4,
            wtype: 5,
            n_rows: 6,
        };
        let args = [
            Arg::Job(job),
            Arg::U64(0x1122),
            Arg::I32(7),
            Arg::I32(8),
            Arg::U64(9),
            Arg::F32(1.5),
            Arg::I32(10),
            Arg::I32(11),
        ];
        let mut out = [0u8; OP_PARAM_BYTES];
        pack_params(&args, &mut out).expect("fits");
        let u64_at = |o: usize| u64::from_le_bytes(out[o..o + 8].try_into().expect("8"));
        let i32_at = |o: usize| i32::from_le_bytes(out[o..o + 4].try_into().expect("4"));
        assert_eq!(u64_at(24), 4);
        assert_eq!(i32_at(36), 6);
        assert_eq!(u64_at(40), 0x1122);
        assert_eq!((i32_at(48), i32_at(52)), (7, 8));
        assert_eq!(u64_at(56), 9);
        assert_eq!(f32::from_le_bytes(out[64..68].try_into().expect("4")), 1.5);
        assert_eq!((i32_at(68), i32_at(72)), (10, 11));
        // An int then a pointer: the pointer moves to the next 8 bytes.
        let mut out = [0u8; 16];
        pack_params(&[Arg::I32(1), Arg::U64(2)], &mut out).expect("fits");
        assert_eq!(u64_at_slice(&out, 8), 2);
        // Too many: None, not a panic.
        let many = vec![Arg::U64(0); 31];
        assert!(pack_params(&many, &mut [0u8; OP_PARAM_BYTES]).is_none());
    }

    #[test]
    fn runs_share_one_program_and_stop_at_other_launches() {
        // embed, [q4_1 qkv, attention, q4_1 o, q4_1 swiglu], q8_0 logits.
        let a = Some(None);
        let list = [
            None,
            Some(Some(0)),
            a,
            Some(Some(0)),
            Some(Some(0)),
            Some(Some(1)),
        ];
        assert_eq!(run_from(&list, 0), (None, 0));
        assert_eq!(run_from(&list, 1), (Some(0), 5));
        assert_eq!(run_from(&list, 5), (Some(1), 6));
        // A run may start with the attention; attention alone has no program.
        assert_eq!(
            run_from(&[a, Some(Some(2)), Some(Some(3))], 0),
            (Some(2), 2)
        );
        assert_eq!(run_from(&[a, None], 0), (None, 1));
        // Long runs split at PROGRAM_OPS.
        let long = vec![Some(Some(0)); 300];
        assert_eq!(run_from(&long, 0), (Some(0), PROGRAM_OPS));
        assert_eq!(run_from(&long, 254), (Some(0), 300));
    }

    fn u64_at_slice(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().expect("8"))
    }
}
