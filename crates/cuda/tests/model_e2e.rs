//! The whole model on CUDA: a tiny synthetic model's logits against the
//! scalar reference, and real models' greedy tokens against the CPU backend.

mod common;

use std::sync::Arc;

use common::{asset, backend, rel_err};
use smelt_backend::{Backend, ReferenceBackend};
use smelt_cpu::CpuBackend;
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};
use smelt_tensor::DType;
use smelt_text::tokenizer::Tokenizer;

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

/// Feeds `tokens[..prompt]` as one batch (logits of every row), then the rest
/// one row at a time; returns every step's logits, concatenated.
fn teacher_forced<B: Backend>(m: &Model<B>, tokens: &[u32], prompt: usize, kv: KvType) -> Vec<f32> {
    let n_blocks = tokens.len().div_ceil(m.kv_block_size()) + 1;
    let mut cache = m.new_kv(n_blocks, kv).expect("kv");
    // A scattered block table: the sequence's blocks in reverse pool order.
    let table: Vec<u32> = (0..n_blocks as u32).rev().collect();
    let mut out = Vec::new();
    let mut step = |range: std::ops::Range<usize>, out: &mut Vec<f32>| {
        let toks = &tokens[range.clone()];
        let positions: Vec<u32> = range.clone().map(|p| p as u32).collect();
        let tables = vec![&table[..]; toks.len()];
        let rows: Vec<usize> = (0..toks.len()).collect();
        let batch = Batch {
            tokens: toks,
            positions: &positions,
            block_tables: &tables,
            logits_rows: &rows,
        };
        match m.forward(&mut cache, &batch) {
            Ok(l) => out.extend_from_slice(&l.data),
            Err(e) => panic!("forward on {}: {e}", m.backend.name()),
        }
    };
    step(0..prompt, &mut out);
    for p in prompt..tokens.len() {
        step(p..p + 1, &mut out);
    }
    out
}

#[test]
fn synthetic_models_match_the_reference() {
    let Some(_probe) = backend("synthetic_models_match_the_reference") else {
        return;
    };
    drop(_probe);
    let cases = [
        ("llama", DType::Q8_0, DType::Q8_0, true, KvType::F32),
        ("llama", DType::Q4_1, DType::Q6K, false, KvType::F16),
        ("qwen2", DType::Q4_0, DType::Q8_0, true, KvType::F16),
        ("llama", DType::Q4K, DType::F16, false, KvType::F32),
        ("qwen2", DType::Q5K, DType::BF16, true, KvType::F16),
        ("llama", DType::Q5_0, DType::F32, true, KvType::F16),
    ];
    let mut q8_failures = Vec::new();
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
            seed: 100 + i as u64,
            ..SyntheticSpec::default()
        };
        let file = synthetic(&spec);
        let tokens: Vec<u32> = (0..40u32).map(|t| (t * 37 + 5) % 96).collect();
        let want = teacher_forced(&load(&file, ReferenceBackend), &tokens, 21, kv);
        let mut exact = CudaBackend::new().expect("cuda");
        exact.set_q8(false);
        let cuda = load(&file, exact);
        let got = teacher_forced(&cuda, &tokens, 21, kv);
        // 19 single-row steps: the second is captured as a graph, the rest replay it.
        let (replays, captures) = cuda.backend.graph_counts();
        if std::env::var("SMELT_CUDA_GRAPHS").map_or(true, |v| v != "0") {
            assert!(
                replays >= 15 && captures >= 1,
                "graphs: {replays} replays, {captures} captures"
            );
        }
        let err = rel_err(&got, &want);
        println!("synthetic {arch} {wt}/{et} kv {kv:?}: relative logit error {err:.2e}");
        // f16 K/V can round a value computed slightly differently to the
        // neighbouring half; kernels that are wrong miss by far more.
        let tol = if kv == KvType::F32 { 1e-4 } else { 1e-3 };
        assert!(
            err < tol,
            "{arch} {wt}/{et}: relative logit error {err:.3e}"
        );
        // As models run by default: 8-bit activations where the type has
        // q8 kernels. Their rounding (about 1/254 of each 32-value block's
        // largest input) moves logits by well under 1%; a wrong kernel by
        // far more.
        let mut q8_backend = CudaBackend::new().expect("cuda");
        q8_backend.set_q8(true);
        let q8 = load(&file, q8_backend);
        let got = teacher_forced(&q8, &tokens, 21, kv);
        let err = rel_err(&got, &want);
        let agree = common::argmax_agreement(&got, &want, 96);
        println!(
            "synthetic {arch} {wt}/{et} kv {kv:?}, q8: relative logit error {err:.2e}, same argmax at {:.0}% of positions",
            agree * 100.0
        );
        // Random-weight models have heavy-tailed activations (no training
        // shaped them), which int8 rounding per 32 values follows loosely:
        // their logits move by up to ~20% where the real SmolLM2's greedy
        // tokens do not change at all (smollm2_greedy_tokens_match_cpu).
        // A wrong kernel scrambles the argmax.
        let q8_used = common::q8_type(wt) || common::q8_type(et);
        let ok = if q8_used {
            err < 0.3 && agree >= 0.8
        } else {
            err < tol
        };
        if !ok {
            q8_failures.push(format!(
                "{arch} {wt}/{et} q8: relative logit error {err:.3e}, argmax agreement {agree:.2}"
            ));
        }
    }
    assert!(q8_failures.is_empty(), "{q8_failures:?}");
}

use smelt_cuda::CudaBackend;

/// Greedy decoding of `n` tokens after `prompt`, one row per step
/// (`Model::forward_greedy`).
fn greedy<B: Backend>(m: &Model<B>, prompt: &[u32], n: usize) -> Vec<u32> {
    let total = prompt.len() + n;
    let n_blocks = total.div_ceil(m.kv_block_size());
    let mut cache = m.new_kv(n_blocks, KvType::F16).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut seq = prompt.to_vec();
    let mut fed = 0;
    let mut out = Vec::new();
    while out.len() < n {
        let toks = &seq[fed..];
        let positions: Vec<u32> = (fed as u32..seq.len() as u32).collect();
        let tables = vec![&table[..]; toks.len()];
        let batch = Batch {
            tokens: toks,
            positions: &positions,
            block_tables: &tables,
            logits_rows: &[toks.len() - 1],
        };
        // The argmax is taken where the logits are (on the GPU for CUDA).
        let next = match m.forward_greedy(&mut cache, &batch) {
            Ok(t) => t[0],
            Err(e) => panic!("forward on {}: {e}", m.backend.name()),
        };
        fed = seq.len();
        seq.push(next);
        out.push(next);
    }
    out
}

fn real_model_greedy_matches_cpu(test: &str, name: &str, prompt: &str) {
    let Some(_probe) = backend(test) else {
        return;
    };
    drop(_probe);
    let Some(path) = asset(name) else {
        return;
    };
    let file = Arc::new(GgufFile::open(&path).expect("open model"));
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let ids = tok.encode(prompt, true, false);
    let cpu = load(&file, CpuBackend::new(0).expect("cpu"));
    let want = greedy(&cpu, &ids, 32);
    // The default backend (q8 only for large layer matrices, none of
    // SmolLM2's or the logits' product): the CPU's tokens.
    let cuda = load(&file, CudaBackend::new().expect("cuda"));
    let got = greedy(&cuda, &ids, 32);
    println!("{name}: cpu  {:?}", tok.decode(&want));
    println!("{name}: cuda {:?}", tok.decode(&got));
    let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    assert_eq!(
        got, want,
        "{name}: CUDA greedy tokens differ from the CPU's after {same} of 32"
    );
    drop(cuda);
    // 8-bit activations everywhere (SMELT_CUDA_Q8=1): measured on the H200,
    // SmolLM2's tokens part from the CPU's at token 5 of 32, where the
    // CPU's choice leads by 0.22 logits; a wrong kernel would part early
    // and by far more. (Why the default keeps such models in f32.) Then
    // the prompt's bulk rows on the int8 products (SMELT_CUDA_GEMM_Q8=1,
    // opt-in; docs/CUDA.md "Session 12") with the default decode, held to
    // the same rule.
    for (label, q8, int8_prompt) in [("q8", true, false), ("int8 prompt", false, true)] {
        let mut be = CudaBackend::new().expect("cuda");
        if q8 {
            be.set_q8(true);
        }
        be.set_gemm_q8(Some(int8_prompt));
        let cuda = load(&file, be);
        let got = greedy(&cuda, &ids, 32);
        println!("{name}: cuda {label} {:?}", tok.decode(&got));
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        if same < want.len() {
            let mut prefix = ids.clone();
            prefix.extend_from_slice(&want[..same]);
            let logits = last_logits(&cpu, &prefix);
            let gap = logits[want[same] as usize] - logits[got[same] as usize];
            println!(
                "{name}: {label} tokens part from the CPU's at {same} of 32; CPU logit gap there {gap:.4}"
            );
            assert!(
                same >= 4 && gap < 0.5,
                "{name}: {label} greedy differs at {same} where the CPU's choice leads by {gap}"
            );
        } else {
            println!("{name}: {label} greedy tokens equal the CPU's (32 of 32)");
        }
    }
}

/// The logits of the last of `tokens`, fed as one prompt.
fn last_logits<B: Backend>(m: &Model<B>, tokens: &[u32]) -> Vec<f32> {
    let n_blocks = tokens.len().div_ceil(m.kv_block_size());
    let mut cache = m.new_kv(n_blocks, KvType::F16).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let positions: Vec<u32> = (0..tokens.len() as u32).collect();
    let tables = vec![&table[..]; tokens.len()];
    let batch = Batch {
        tokens,
        positions: &positions,
        block_tables: &tables,
        logits_rows: &[tokens.len() - 1],
    };
    match m.forward(&mut cache, &batch) {
        Ok(l) => l.row(0).to_vec(),
        Err(e) => panic!("forward on {}: {e}", m.backend.name()),
    }
}

#[test]
fn smollm2_greedy_tokens_match_cpu() {
    real_model_greedy_matches_cpu(
        "smollm2_greedy_tokens_match_cpu",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "The capital of France is",
    );
}

#[test]
fn qwen25_greedy_tokens_match_cpu() {
    real_model_greedy_matches_cpu(
        "qwen25_greedy_tokens_match_cpu",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "def fibonacci(n):",
    );
}
