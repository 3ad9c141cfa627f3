//! Compiles the CUDA kernels with NVRTC into the kernel cache
//! (`$SMELT_CUDA_CACHE`, else `~/.cache/smelt/cuda`) without needing a GPU,
//! so a GPU machine with the same NVRTC version starts without compiling.
//!
//! `cuda_precompile [ARCH, default sm_90]`

fn main() {
    let arch = std::env::args().nth(1).unwrap_or_else(|| "sm_90".into());
    if !smelt_cuda::libraries_present() && !nvrtc_present() {
        eprintln!("cuda_precompile: NVRTC (libnvrtc.so) not found");
        std::process::exit(1);
    }
    let t = std::time::Instant::now();
    match smelt_cuda::compile::precompile(&arch) {
        Ok(source) => println!(
            "cuda_precompile: {arch} kernels {source:?} ({:.1} s)",
            t.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("cuda_precompile: {e}");
            std::process::exit(1);
        }
    }
}

fn nvrtc_present() -> bool {
    // SAFETY: tries to dlopen libnvrtc by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}
