//! The CUDA kernels of the newer architectures against the reference: the
//! GeGLU gate, logit soft-capping, per-head Q/K RMSNorm, sliding-window
//! attention (including windows that hide whole key spans); and every tiny
//! architecture fixture of crates/model (llama with Llama-3 RoPE, qwen2,
//! qwen3, gemma3, mistral, phi3, as GGUF) against transformers' logits.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{assert_close, backend, finish, store_random_kv};
use serde::Deserialize;
use smelt_backend::testing::TestRng;
use smelt_backend::{
    AttnGeometry, AttnRow, Backend, Feature, HostBuf, HostTensor, KvLayout, KvType,
    ReferenceBackend,
};
use smelt_cuda::CudaBackend;
use smelt_gguf::GgufFile;
use smelt_model::Model;

#[test]
fn gelu_gate_softcap_and_head_norm_match_the_reference() {
    let Some(cuda) = backend("gelu_gate_softcap_and_head_norm_match_the_reference") else {
        return;
    };
    for f in [
        Feature::QkNorm,
        Feature::GeluTanhGate,
        Feature::SlidingWindow,
        Feature::LogitSoftcap,
        Feature::PerLayerRope,
    ] {
        assert!(cuda.supports(f), "{f:?}");
    }
    let mut rng = TestRng::new(301);
    for (rows, cols) in [(1, 7), (3, 640), (9, 2048)] {
        let mut g = rng.buf(rows, cols);
        g.data.iter_mut().for_each(|v| *v *= 4.0);
        let u = rng.buf(rows, cols);
        let mut want = g.clone();
        ReferenceBackend.gelu_tanh_gate(&mut want, &u);
        let mut gc = cuda.upload(&g);
        cuda.gelu_tanh_gate(&mut gc, &cuda.upload(&u));
        let got = cuda.download(&gc);
        finish(&cuda, "gelu_tanh_gate");
        let scale: Vec<f32> = g
            .data
            .iter()
            .zip(&u.data)
            .map(|(a, b)| (a * b).abs() + 1e-3)
            .collect();
        assert_close("gelu_tanh_gate", &got.data, &want.data, &scale, 1e-5);

        let mut x = rng.buf(rows, cols);
        x.data.iter_mut().for_each(|v| *v *= 60.0);
        let mut want = x.clone();
        ReferenceBackend.softcap(&mut want, 30.0);
        let mut xc = cuda.upload(&x);
        cuda.softcap(&mut xc, 30.0);
        let got = cuda.download(&xc);
        finish(&cuda, "softcap");
        assert_close(
            "softcap",
            &got.data,
            &want.data,
            &vec![30.0; want.data.len()],
            1e-6,
        );
    }
    for (n_heads, head_dim, cols) in [(4, 32, 128), (3, 24, 80), (8, 256, 2048)] {
        let rows = 5;
        let x = rng.buf(rows, cols);
        let w: Vec<f32> = (0..head_dim).map(|_| rng.uniform(-1.5, 1.5)).collect();
        let wt = HostTensor::from_f32("q_norm", &w, vec![head_dim]).expect("weight");
        let mut want = x.clone();
        ReferenceBackend.rms_norm_heads(&mut want, n_heads, &wt, 1e-6);
        let wc = cuda.place("q_norm", &wt).expect("place");
        let mut xc = cuda.upload(&x);
        cuda.rms_norm_heads(&mut xc, n_heads, &wc, 1e-6);
        let got = cuda.download(&xc);
        finish(&cuda, "rms_norm_heads");
        // Values past the heads (cols > n_heads * head_dim) stay as they were.
        assert_close(
            "rms_norm_heads",
            &got.data,
            &want.data,
            &vec![2.0; want.data.len()],
            1e-5,
        );
    }
}

#[test]
fn sliding_window_attention_matches_the_reference() {
    let Some(cuda) = backend("sliding_window_attention_matches_the_reference") else {
        return;
    };
    let mut rng = TestRng::new(302);
    let (n_heads, n_kv_heads, head_dim) = (4, 2, 64);
    for kv_type in [KvType::F32, KvType::F16] {
        let n_pos: usize = 2600;
        let layout = KvLayout {
            n_layers: 1,
            n_blocks: n_pos.div_ceil(16),
            block_size: 16,
            n_kv_heads,
            head_dim,
            dtype: kv_type,
        };
        let mut kv_ref = ReferenceBackend.alloc_kv(layout).expect("kv");
        let mut kv_gpu = cuda.alloc_kv(layout).expect("kv");
        // Blocks in reverse order: the table is not the identity.
        let table: Vec<u32> = (0..layout.n_blocks as u32).rev().collect();
        let width = n_kv_heads * head_dim;
        store_random_kv(
            &mut rng,
            &cuda,
            &mut kv_ref,
            &mut kv_gpu,
            0,
            &table,
            0..n_pos,
            width,
        );
        // Rows: early, inside one span, across spans with whole spans hidden.
        let at = [0u32, 5, 700, 1030, 2047, 2599];
        for window in [1usize, 7, 100, 512, 1500, 4096] {
            let q = rng.buf(at.len(), n_heads * head_dim);
            let rows: Vec<AttnRow<'_>> = at
                .iter()
                .map(|&pos| AttnRow {
                    pos,
                    block_table: &table,
                })
                .collect();
            let geom = AttnGeometry {
                n_heads,
                n_kv_heads,
                head_dim,
                scale: 0.125,
                window: Some(window as u32),
            };
            let mut want = HostBuf::zeros(at.len(), n_heads * head_dim);
            ReferenceBackend.attention(&q, &kv_ref, 0, &rows, &geom, &mut want);
            let mut oc = cuda.alloc(at.len(), n_heads * head_dim);
            cuda.attention(&cuda.upload(&q), &kv_gpu, 0, &rows, &geom, &mut oc);
            let got = cuda.download(&oc);
            let what = format!("attention {kv_type:?}, window {window}");
            finish(&cuda, &what);
            assert_close(
                &what,
                &got.data,
                &want.data,
                &vec![1.0; want.data.len()],
                1e-5,
            );
        }
    }
}

#[derive(Deserialize)]
struct Golden {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

/// Logits of every position: one prefill batch, or one row per step.
fn logits<B: Backend>(model: &Model<B>, tokens: &[u32], one_by_one: bool) -> Vec<Vec<f32>> {
    match smelt_model::teacher_forced_logits(model, tokens, one_by_one) {
        Ok(l) => l,
        Err(e) => panic!("forward on {}: {e}", model.backend.name()),
    }
}

#[test]
fn every_architecture_fixture_matches_transformers() {
    let Some(_probe) = backend("every_architecture_fixture_matches_transformers") else {
        return;
    };
    drop(_probe);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures");
    for family in ["llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3"] {
        let text = std::fs::read_to_string(dir.join(family).join("golden.json"))
            .unwrap_or_else(|e| panic!("{family} golden: {e}"));
        let golden: Golden = serde_json::from_str(&text).expect("golden JSON");
        let file = GgufFile::open(&dir.join(format!("{family}.gguf")))
            .unwrap_or_else(|e| panic!("{family}.gguf: {e}"));
        let mut cuda = CudaBackend::new().expect("cuda");
        cuda.set_q8(false);
        let model = match Model::load(Arc::new(file), cuda) {
            Ok(m) => m,
            Err(e) => panic!("{family} on cuda: {e}"),
        };
        for one_by_one in [false, true] {
            let got = logits(&model, &golden.tokens, one_by_one);
            let mut max_diff = 0f32;
            for (pos, (g, w)) in got.iter().zip(&golden.logits).enumerate() {
                assert_eq!(
                    smelt_backend::argmax(g),
                    smelt_backend::argmax(w),
                    "{family} (one by one: {one_by_one}): argmax at position {pos}"
                );
                for (a, b) in g.iter().zip(w) {
                    max_diff = max_diff.max((a - b).abs());
                }
            }
            println!("{family} on cuda (one by one: {one_by_one}): max |Δlogit| {max_diff:.2e}");
            assert!(max_diff <= 1e-3, "{family}: max |Δlogit| {max_diff}");
        }
    }
}
