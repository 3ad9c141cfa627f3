//! The whole model with bulk rows: a synthetic model's prompt goes through
//! the tensor-core path (only its last row wants logits), then decode steps
//! run on the matrix-vector kernels; the logits of the last prompt row and
//! of every decode step stay within model_e2e's bounds of the reference.

mod common;

use common::model::{load, prefill_then_decode, synthetic};
use common::{backend, rel_err};
use smelt_backend::ReferenceBackend;
use smelt_cuda::CudaBackend;
use smelt_model::KvType;
use smelt_model::synthetic::SyntheticSpec;
use smelt_tensor::DType;

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
