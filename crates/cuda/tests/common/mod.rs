//! Shared by the CUDA tests: the backend (or a printed skip), and closeness checks.

#![allow(dead_code)]

use std::path::PathBuf;

pub mod model;

use smelt_backend::testing::TestRng;
use smelt_backend::{Backend, HostKv, HostTensor, ReferenceBackend};
use smelt_cuda::{CudaBackend, CudaError, CudaKv, CudaWeight};

/// The CUDA backend with f32 activations everywhere (the exact path the
/// reference comparisons hold to 1e-5), or None after printing why the test
/// is skipped.
///
/// Without CUDA (CI has no GPU) the tests skip with a notice. Where
/// `SMELT_REQUIRE_CUDA=1` (scripts/gpu-test.sh sets it on the GPU machine),
/// a missing or failing GPU is a test failure instead.
pub fn backend(test: &str) -> Option<CudaBackend> {
    let required = std::env::var("SMELT_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    match CudaBackend::new() {
        Ok(mut b) => {
            b.set_q8(false);
            Some(b)
        }
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

/// The CUDA backend with 8-bit activations for the weight types that have
/// q8 kernels (Q4_1, Q8_0, Q4_K, Q6_K).
pub fn backend_q8(test: &str) -> Option<CudaBackend> {
    let mut b = backend(test)?;
    b.set_q8(true);
    Some(b)
}

/// A weight on the device (a test failure if it cannot be placed).
pub fn place(cuda: &CudaBackend, t: &HostTensor) -> CudaWeight {
    match cuda.place("w", t) {
        Ok(w) => w,
        Err(e) => panic!("place {:?}: {e}", t.dtype()),
    }
}

/// Waits for the queued work; a deferred backend error fails the test.
pub fn finish(cuda: &CudaBackend, what: &str) {
    if let Err(e) = cuda.finish() {
        panic!("{what}: {e}");
    }
}

/// A vector of `len` values uniform in `lo..hi`.
pub fn vector(rng: &mut TestRng, len: usize, lo: f32, hi: f32) -> HostTensor {
    let v: Vec<f32> = (0..len).map(|_| rng.uniform(lo, hi)).collect();
    HostTensor::from_f32("vector", &v, vec![len]).expect("vector")
}

/// The share of rows (of `vocab` logits) whose argmax is the same in both.
pub fn argmax_agreement(got: &[f32], want: &[f32], vocab: usize) -> f64 {
    let rows = want.len() / vocab;
    let same = got
        .chunks_exact(vocab)
        .zip(want.chunks_exact(vocab))
        .filter(|(g, w)| smelt_backend::argmax(g) == smelt_backend::argmax(w))
        .count();
    same as f64 / rows.max(1) as f64
}

/// Random K and V rows for positions `positions` of the sequence whose
/// block table is `table` (16 slots a block), stored alike into the
/// reference's and the GPU's cache at `layer`.
#[allow(clippy::too_many_arguments)]
pub fn store_random_kv(
    rng: &mut TestRng,
    cuda: &CudaBackend,
    kv_ref: &mut HostKv,
    kv_gpu: &mut CudaKv,
    layer: usize,
    table: &[u32],
    positions: std::ops::Range<usize>,
    width: usize,
) {
    let slots: Vec<u32> = positions
        .map(|p| table[p / 16] * 16 + (p % 16) as u32)
        .collect();
    let k = rng.buf(slots.len(), width);
    let v = rng.buf(slots.len(), width);
    ReferenceBackend.kv_store(kv_ref, layer, &k, &v, &slots);
    cuda.kv_store(kv_gpu, layer, &cuda.upload(&k), &cuda.upload(&v), &slots);
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

/// Whether the GPU multiplies weights of this type with 8-bit activations.
pub fn q8_type(dtype: smelt_tensor::DType) -> bool {
    use smelt_tensor::DType;
    matches!(dtype, DType::Q4_1 | DType::Q8_0 | DType::Q4K | DType::Q6K)
}

/// For each (row r, output o): `sum_k |w[o][k]| * dx(r, k) / 2`, where dx is
/// the int8 step (amax / 127) of the 32-value block of input row r holding
/// k: the most rounding the input to int8 can move that dot product.
pub fn q8_allowance(w: &smelt_backend::HostTensor, h: &smelt_backend::HostBuf) -> Vec<f32> {
    let wd = smelt_backend::dequantize_all(w);
    let n_in = w.row_len();
    let mut out = Vec::with_capacity(h.rows * w.n_rows());
    for r in 0..h.rows {
        let steps: Vec<f32> = h
            .row(r)
            .chunks(32)
            .map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0)
            .collect();
        for row in wd.chunks_exact(n_in) {
            let a: f32 = row
                .iter()
                .enumerate()
                .map(|(k, v)| v.abs() * steps[k / 32] / 2.0)
                .sum();
            out.push(a);
        }
    }
    out
}

/// A model file of the assets (scripts/fetch-assets.sh), or None (after a
/// notice) where `SMELT_ALLOW_MISSING_ASSETS=1` allows it to be missing.
pub fn asset(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SMELT_ASSETS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/smelt/assets"),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    // On the GPU machine the models may not have been carried (see
    // scripts/gpu-test.sh): there, and only when asked, a missing model skips.
    if std::env::var("SMELT_ALLOW_MISSING_ASSETS").is_ok_and(|v| v == "1") {
        println!(
            "SKIPPED: {} is missing (SMELT_ALLOW_MISSING_ASSETS=1)",
            path.display()
        );
        return None;
    }
    panic!("{} is missing: run scripts/fetch-assets.sh", path.display());
}
