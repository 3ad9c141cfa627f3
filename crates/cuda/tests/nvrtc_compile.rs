//! The kernels compile with NVRTC for Hopper. Needs only NVRTC, not a GPU,
//! so it also runs on a build machine that has the library; skipped (with a
//! notice) where NVRTC is absent, as on CI.

use std::io::Write;

#[test]
fn kernels_compile_for_sm_90() {
    // SAFETY: tries to dlopen libnvrtc by its usual names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED kernels_compile_for_sm_90: NVRTC (libnvrtc.so) not found: \
             the CUDA kernels were not compiled"
        );
        return;
    }
    let src = smelt_cuda::compile::program_source();
    match smelt_cuda::compile::compile(&src, "sm_90") {
        Ok(cubin) => assert!(cubin.len() > 1000, "CUBIN of {} bytes", cubin.len()),
        Err(e) => panic!("{e}"),
    }
}
