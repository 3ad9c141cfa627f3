//! The whole model with bulk rows: a synthetic model's prompt goes through
//! the tensor-core path (only its last row wants logits), then decode steps
//! run on the matrix-vector kernels; the logits of the last prompt row and
//! of every decode step stay within model_e2e's bounds of the reference.

mod common;

use std::sync::Arc;

use common::{backend, rel_err};
use smelt_backend::{Backend, ReferenceBackend};
use smelt_cuda::CudaBackend;
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};
use smelt_tensor::DType;

fn synthetic(spec: &SyntheticSpec) -> Arc<GgufFile> {
    let mut bytes = Vec::new();
    spec.writer()
        .write_to(&mut bytes)
        .expect("write synthetic model");
    Arc::new(GgufFile::from_bytes(bytes).expect("parse synthetic model"))
}

fn load<B: Backend>(file: &Arc<GgufFile>, be: B) -> Model<B> {
    match Model::load(file.clone(), be) {
        Ok(m) => m,
        Err(e) => panic!("load: {e}"),
    }
}

/// Feeds `tokens[..prompt]` in chunks of `chunk` rows, logits only of the
/// prompt's last row (as the engine does), then the rest one row at a
/// time; returns the logits of the last prompt row and of every decode
/// step, concatenated.
fn prefill_then_decode<B: Backend>(
    m: &Model<B>,
    tokens: &[u32],
    prompt: usize,
    chunk: usize,
    kv: KvType,
) -> Vec<f32> {
    let n_blocks = tokens.len().div_ceil(m.kv_block_size()) + 1;
    let mut cache = m.new_kv(n_blocks, kv).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).rev().collect();
    let mut out = Vec::new();
    let mut step = |range: std::ops::Range<usize>, logits: bool, out: &mut Vec<f32>| {
        let toks = &tokens[range.clone()];
        let positions: Vec<u32> = range.clone().map(|p| p as u32).collect();
        let tables = vec![&table[..]; toks.len()];
        let last = [toks.len() - 1];
        let batch = Batch {
            tokens: toks,
            positions: &positions,
            block_tables: &tables,
            logits_rows: if logits { &last } else { &[] },
        };
        match m.forward(&mut cache, &batch) {
            Ok(l) => out.extend_from_slice(&l.data),
            Err(e) => panic!("forward on {}: {e}", m.backend.name()),
        }
    };
    let mut start = 0;
    while start < prompt {
        let end = (start + chunk).min(prompt);
        step(start..end, end == prompt, &mut out);
        start = end;
    }
    for p in prompt..tokens.len() {
        step(p..p + 1, true, &mut out);
    }
    out
}

#[test]
fn synthetic_prefill_on_bulk_rows_matches_the_reference() {
    let Some(_probe) = backend("synthetic_prefill_on_bulk_rows_matches_the_reference") else {
        return;
    };
    drop(_probe);
    let cases = [
        ("llama", DType::Q8_0, DType::Q8_0, true, KvType::F32),
        ("llama", DType::Q4_1, DType::Q6K, false, KvType::F16),
        ("qwen2", DType::Q4K, DType::Q8_0, true, KvType::F32),
        ("llama", DType::Q6K, DType::F16, false, KvType::F32),
        ("qwen2", DType::BF16, DType::BF16, true, KvType::F16),
        ("llama", DType::F16, DType::F32, true, KvType::F32),
    ];
    for (i, &(arch, wt, et, tied, kv)) in cases.iter().enumerate() {
        let k_quant = wt.block_elems() == 256 || et.block_elems() == 256;
        let spec = SyntheticSpec {
            arch: arch.into(),
            n_layers: 2,
            d_model: if k_quant { 256 } else { 128 },
            d_ff: if k_quant { 512 } else { 224 },
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 96,
            weight_type: wt,
            embd_type: et,
            tied_output: tied,
            seed: 200 + i as u64,
            ..SyntheticSpec::default()
        };
        let file = synthetic(&spec);
        let tokens: Vec<u32> = (0..110u32).map(|t| (t * 37 + 5) % 96).collect();
        let prompt = 90;
        let want = prefill_then_decode(&load(&file, ReferenceBackend), &tokens, prompt, 90, kv);
        for (chunk, bulk) in [(90, true), (33, true), (90, false)] {
            let mut be = CudaBackend::new().expect("cuda");
            be.set_q8(false);
            be.set_bulk(bulk);
            let cuda = load(&file, be);
            let got = prefill_then_decode(&cuda, &tokens, prompt, chunk, kv);
            let err = rel_err(&got, &want);
            println!(
                "synthetic {arch} {wt}/{et} kv {kv:?}, prompt of {prompt} in chunks of \
                 {chunk}, bulk {bulk}: relative logit error {err:.2e}"
            );
            let tol = if kv == KvType::F32 { 1e-4 } else { 1e-3 };
            assert!(
                err < tol,
                "{arch} {wt}/{et} chunks of {chunk}, bulk {bulk}: relative logit error {err:.3e}"
            );
        }
    }
}
