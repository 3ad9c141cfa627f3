//! Shared by the CUDA tests: the backend (or a printed skip), and closeness checks.

#![allow(dead_code)]

use smelt_cuda::{CudaBackend, CudaError};

/// The CUDA backend, or None after printing why the test is skipped.
///
/// Without CUDA (CI has no GPU) the tests skip with a notice. Where
/// `SMELT_REQUIRE_CUDA=1` (scripts/gpu-test.sh sets it on the GPU machine),
/// a missing or failing GPU is a test failure instead.
pub fn backend(test: &str) -> Option<CudaBackend> {
    let required = std::env::var("SMELT_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) if required => {
            panic!("{test}: SMELT_REQUIRE_CUDA=1 but the CUDA backend failed: {e}")
        }
        Err(e @ (CudaError::NoDriver | CudaError::NoNvrtc | CudaError::Driver { .. })) => {
            notice(&format!("SKIPPED {test}: no usable CUDA here ({e})"));
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Prints a line past the test harness's output capture, so a skip is seen
/// in a plain `cargo test` run.
pub fn notice(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Asserts `got` is within `tol` of `want` elementwise, where each element's
/// allowance is `tol * scale[i]` (the size of the terms that were summed).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0.0f32, 0usize);
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
        let err = (g - w).abs() / (s.abs() + 1e-6);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= tol,
        "{what}: element {i}: got {} want {} (error {:.3e} of scale {}, tolerance {tol:e})",
        got[i],
        want[i],
        worst.0,
        scale[i]
    );
}

/// Relative error ‖got − want‖ / ‖want‖.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        num += ((g - w) as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}
