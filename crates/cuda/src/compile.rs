//! Kernel compilation: NVRTC turns the `.cu` sources into a CUBIN for the GPU
//! found, cached on disk under `~/.cache/smelt/cuda/` (or `$SMELT_CUDA_CACHE`),
//! keyed by a hash of the source, the target architecture and the NVRTC
//! version, so a second start loads the binary without compiling.

use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;

use cudarc::nvrtc::sys as nvrtc;
use sha2::{Digest, Sha256};

use crate::CudaError;

/// The kernel sources, compiled as one program in this order.
const SOURCES: [(&str, &str); 14] = [
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("quant.cu", include_str!("kernels/quant.cu")),
    ("gemm.cu", include_str!("kernels/gemm.cu")),
    ("gemm_codes.cu", include_str!("kernels/gemm_codes.cu")),
    ("gemm_q8.cu", include_str!("kernels/gemm_q8.cu")),
    ("gemm_bf16.cu", include_str!("kernels/gemm_bf16.cu")),
    ("units.cu", include_str!("kernels/units.cu")),
    ("matvec.cu", include_str!("kernels/matvec.cu")),
    ("matvec_rows.cu", include_str!("kernels/matvec_rows.cu")),
    ("matvec_q8.cu", include_str!("kernels/matvec_q8.cu")),
    ("matvec_staged.cu", include_str!("kernels/matvec_staged.cu")),
    ("ops.cu", include_str!("kernels/ops.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    (
        "attention_tile.cu",
        include_str!("kernels/attention_tile.cu"),
    ),
];

/// The step programs (kernels/program.cu): compiled only when asked for
/// (`SMELT_CUDA_PROGRAM=1`), as they are slower than separate launches so
/// far (docs/CUDA.md, "Session 10") and add a minute of NVRTC time.
const PROGRAM_SOURCE: (&str, &str) = ("program.cu", include_str!("kernels/program.cu"));

/// Whether the step programs are wanted (`SMELT_CUDA_PROGRAM=1`).
pub fn programs_wanted() -> bool {
    std::env::var("SMELT_CUDA_PROGRAM").is_ok_and(|v| v == "1")
}

/// The whole program text (all kernel files, concatenated).
///
/// `SMELT_CUDA_DEFINES` (e.g. `"SMELT_UNITS=4 SMELT_UNITS_Q6=2"`) prepends
/// `#define`s, for tuning experiments: only the kernels' tunables
/// (`SMELT_*` names) are accepted, and the source changes, so does the
/// cache key.
pub fn program_source() -> String {
    let mut src = String::new();
    for (name, value) in defines() {
        src.push_str(&format!("#define {name} {value}\n"));
    }
    let program = programs_wanted().then_some(PROGRAM_SOURCE);
    for (name, text) in SOURCES.into_iter().chain(program) {
        src.push_str(&format!("// ---- {name}\n"));
        src.push_str(text);
        src.push('\n');
    }
    src
}

/// The value `SMELT_CUDA_DEFINES` gives `name`, if it names it.
pub(crate) fn define(name: &str) -> Option<String> {
    defines()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// The `NAME=VALUE` pairs of `SMELT_CUDA_DEFINES` (a bare `NAME` is 1):
/// only `SMELT_*` names, and names and values of letters, digits and `_`.
fn defines() -> Vec<(String, String)> {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let Ok(defs) = std::env::var("SMELT_CUDA_DEFINES") else {
        return Vec::new();
    };
    defs.split_whitespace()
        .map(|d| d.split_once('=').unwrap_or((d, "1")))
        .filter(|(n, v)| n.starts_with("SMELT_") && word(n) && word(v))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Options every compile uses (besides the architecture).
const OPTIONS: [&str; 2] = ["--std=c++17", "--fmad=true"];

/// The NVRTC version, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are to live locals; NVRTC writes two ints.
    let r = unsafe { nvrtc::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(r: nvrtc::nvrtcResult, what: &str) -> Result<(), CudaError> {
    if r == nvrtc::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Compile(format!("{what} failed: {r:?}")))
    }
}

/// Where compiled kernels are kept, if any directory can be named.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SMELT_CUDA_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("smelt").join("cuda"))
}

/// The cache key of `src` compiled for `arch` (e.g. "sm_90").
fn cache_key(src: &str, arch: &str, nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    for o in OPTIONS {
        h.update(o.as_bytes());
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a compiled program came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// Loaded from this cache file.
    Cache(PathBuf),
    /// Compiled now (and stored at the path, if it could be written).
    Compiled(Option<PathBuf>),
}

/// The CUBIN of the kernels for `arch`, from the cache or compiled now.
pub(crate) fn kernels_cubin(arch: &str) -> Result<(Vec<u8>, KernelSource), CudaError> {
    let src = program_source();
    let version = nvrtc_version()?;
    let path =
        cache_dir().map(|d| d.join(format!("{}-{arch}.cubin", cache_key(&src, arch, version))));
    if let Some(p) = &path
        && let Ok(bytes) = std::fs::read(p)
        && !bytes.is_empty()
    {
        return Ok((bytes, KernelSource::Cache(p.clone())));
    }
    let cubin = compile(&src, arch)?;
    let stored = path.filter(|p| store(p, &cubin).is_ok());
    Ok((cubin, KernelSource::Compiled(stored)))
}

/// Compiles the kernels for `arch` into the cache (unless already there),
/// without a GPU: a build machine with NVRTC can fill the cache that a GPU
/// machine with the same NVRTC version then loads.
pub fn precompile(arch: &str) -> Result<KernelSource, CudaError> {
    kernels_cubin(arch).map(|(_, source)| source)
}

/// Writes the file whole or not at all (a temporary file, then a rename).
fn store(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Compiles `src` to a CUBIN for `arch` with NVRTC.
pub fn compile(src: &str, arch: &str) -> Result<Vec<u8>, CudaError> {
    let c_src = CString::new(src)
        .map_err(|_| CudaError::Compile("kernel source contains a NUL byte".into()))?;
    let name = c"smelt_kernels.cu";
    let mut opts: Vec<CString> = OPTIONS
        .iter()
        .map(|o| CString::new(*o))
        .collect::<Result<_, _>>()
        .map_err(|_| CudaError::Compile("option contains a NUL byte".into()))?;
    opts.push(
        CString::new(format!("--gpu-architecture={arch}"))
            .map_err(|_| CudaError::Compile(format!("bad architecture name {arch:?}")))?,
    );
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();

    let mut prog: nvrtc::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: `prog` is a live out-pointer; source and name are NUL-terminated
    // C strings that outlive the call; no headers are passed (count 0, nulls).
    let r = unsafe {
        nvrtc::nvrtcCreateProgram(
            &mut prog,
            c_src.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    check(r, "nvrtcCreateProgram")?;
    let program = Program(prog);

    // SAFETY: `program.0` is a valid program; `opt_ptrs` holds `len`
    // pointers to NUL-terminated strings owned by `opts`, alive for the call.
    let r =
        unsafe { nvrtc::nvrtcCompileProgram(program.0, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    if r != nvrtc::nvrtcResult::NVRTC_SUCCESS {
        let log = program.log();
        return Err(CudaError::Compile(format!(
            "NVRTC could not compile the kernels for {arch} ({r:?}):\n{log}"
        )));
    }
    let mut size = 0usize;
    // SAFETY: valid program, live out-pointer.
    check(
        unsafe { nvrtc::nvrtcGetCUBINSize(program.0, &mut size) },
        "nvrtcGetCUBINSize",
    )?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has exactly the `size` bytes NVRTC said it will write.
    check(
        unsafe { nvrtc::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) },
        "nvrtcGetCUBIN",
    )?;
    Ok(cubin)
}

/// An NVRTC program, destroyed on drop.
struct Program(nvrtc::nvrtcProgram);

impl Program {
    /// The compiler's log (warnings and errors), or a note if it has none.
    fn log(&self) -> String {
        let mut size = 0usize;
        // SAFETY: valid program, live out-pointer.
        let r = unsafe { nvrtc::nvrtcGetProgramLogSize(self.0, &mut size) };
        if r != nvrtc::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return "(no log)".into();
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds the `size` bytes (NUL included) NVRTC writes.
        let r = unsafe { nvrtc::nvrtcGetProgramLog(self.0, buf.as_mut_ptr().cast()) };
        if r != nvrtc::nvrtcResult::NVRTC_SUCCESS {
            return "(log unreadable)".into();
        }
        CStr::from_bytes_until_nul(&buf)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is
        // destroyed exactly once, here.
        let _ = unsafe { nvrtc::nvrtcDestroyProgram(&mut self.0) };
    }
}
