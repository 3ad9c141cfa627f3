//! The forward pass against HF transformers on the real models: logits of
//! plain and chat-templated prompts, and greedy continuations. The reference
//! data is made by scripts/make_logit_goldens.py (transformers loading the
//! same GGUF, dequantized to f32) and committed under tests/golden/.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use smelt_cpu::CpuBackend;
use smelt_gguf::GgufFile;
use smelt_model::{Batch, KV_BLOCK_SIZE, KvType, Model};

/// Largest |Δlogit| allowed against the f32 reference (with an f32 KV cache,
/// the exact-arithmetic configuration).
const MAX_ABS_DIFF: f32 = 2e-2;

#[derive(Deserialize)]
struct Golden {
    model_file: String,
    reference: String,
    probe_ids: Vec<u32>,
    cases: Vec<Case>,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    tokens: Vec<u32>,
    argmax: Vec<u32>,
    top_ids: Vec<Vec<u32>>,
    top_logits: Vec<Vec<f32>>,
    probe_logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt: String,
    tokens: Vec<u32>,
    generated: Vec<u32>,
}

fn assets() -> PathBuf {
    std::env::var_os("SMELT_ASSETS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/smelt/assets"),
        PathBuf::from,
    )
}

fn load(golden_name: &str) -> (Golden, Model<CpuBackend>) {
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(golden_name);
    let text = std::fs::read_to_string(&golden_path)
        .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
    let golden: Golden = serde_json::from_str(&text).expect("golden JSON");
    let path = assets().join(&golden.model_file);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets.sh",
        path.display()
    );
    let file = Arc::new(GgufFile::open(&path).expect("open model"));
    let model = Model::load(file, CpuBackend::new(0).expect("threads")).expect("load model");
    (golden, model)
}

/// Feeds `tokens` as one prefill batch and returns every row's logits.
fn all_logits(model: &Model<CpuBackend>, tokens: &[u32], kv_type: KvType) -> Vec<Vec<f32>> {
    let n_blocks = tokens.len().div_ceil(KV_BLOCK_SIZE);
    let mut kv = model.new_kv(n_blocks, kv_type).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).rev().collect(); // scattered blocks on purpose
    let positions: Vec<u32> = (0..tokens.len() as u32).collect();
    let tables = vec![&table[..]; tokens.len()];
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let batch = Batch {
        tokens,
        positions: &positions,
        block_tables: &tables,
        logits_rows: &rows,
    };
    let logits = model.forward(&mut kv, &batch).expect("forward");
    logits
        .data
        .chunks(logits.cols)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Greedy decode, one row per step through the KV cache.
fn greedy(model: &Model<CpuBackend>, prompt: &[u32], n: usize) -> Vec<u32> {
    let n_blocks = (prompt.len() + n).div_ceil(KV_BLOCK_SIZE);
    let mut kv = model.new_kv(n_blocks, KvType::F32).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut seq = prompt.to_vec();
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let tables = vec![&table[..]; prompt.len()];
    let batch = Batch {
        tokens: prompt,
        positions: &positions,
        block_tables: &tables,
        logits_rows: &[prompt.len() - 1],
    };
    let mut logits = model.forward(&mut kv, &batch).expect("forward").data;
    let mut out = Vec::new();
    while out.len() < n {
        let next = smelt_argmax(&logits);
        out.push(next);
        seq.push(next);
        let pos = [seq.len() as u32 - 1];
        let batch = Batch {
            tokens: &[next],
            positions: &pos,
            block_tables: &[&table[..]],
            logits_rows: &[0],
        };
        logits = model.forward(&mut kv, &batch).expect("forward").data;
    }
    out
}

fn smelt_argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn check_logits(golden_name: &str) {
    let (golden, model) = load(golden_name);
    println!("{golden_name}: reference {}", golden.reference);
    let mut worst = 0f32;
    for case in &golden.cases {
        let logits = all_logits(&model, &case.tokens, KvType::F32);
        assert_eq!(logits.len(), case.argmax.len(), "{}: positions", case.name);
        let mut case_max = 0f32;
        let mut mismatched = Vec::new();
        for (p, row) in logits.iter().enumerate() {
            if smelt_argmax(row) != case.argmax[p] {
                mismatched.push(p);
            }
            let ids = case.top_ids[p].iter().chain(&golden.probe_ids);
            let refs = case.top_logits[p].iter().chain(&case.probe_logits[p]);
            for (&id, &want) in ids.zip(refs) {
                case_max = case_max.max((row[id as usize] - want).abs());
            }
        }
        println!(
            "  {:<28} {:>4} tokens  max|Δlogit| {:.2e}  argmax mismatches {}",
            case.name,
            case.tokens.len(),
            case_max,
            mismatched.len()
        );
        assert!(
            mismatched.is_empty(),
            "{}: argmax differs at positions {mismatched:?}",
            case.name
        );
        worst = worst.max(case_max);
    }
    assert!(
        worst <= MAX_ABS_DIFF,
        "max |Δlogit| {worst} > {MAX_ABS_DIFF}"
    );
}

fn check_greedy(golden_name: &str, min_match: usize) {
    let (golden, model) = load(golden_name);
    for g in &golden.greedy {
        let got = greedy(&model, &g.tokens, g.generated.len());
        let same = got
            .iter()
            .zip(&g.generated)
            .take_while(|(a, b)| a == b)
            .count();
        println!(
            "  greedy {:?}: {same}/{} tokens match the reference",
            g.prompt,
            g.generated.len()
        );
        assert!(
            same >= min_match.min(g.generated.len()),
            "{:?}: only {same} tokens match\n got  {got:?}\n want {:?}",
            g.prompt,
            g.generated
        );
    }
}

#[test]
fn smollm2_logits_match_transformers() {
    check_logits("SmolLM2-135M-Instruct.Q4_1.logits.json");
}

#[test]
fn smollm2_greedy_matches_transformers() {
    check_greedy("SmolLM2-135M-Instruct.Q4_1.logits.json", 32);
}

#[test]
fn qwen25_logits_match_transformers() {
    check_logits("qwen2.5-coder-0.5b-instruct-q4_k_m.logits.json");
}

#[test]
fn qwen25_greedy_matches_transformers() {
    check_greedy("qwen2.5-coder-0.5b-instruct-q4_k_m.logits.json", 32);
}

/// KL(p || q) of two logit rows, in nats.
fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| {
        let max = l.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
        let lse = l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        l.iter().map(move |&v| v as f64 - lse).collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// The default f16 KV cache (half the memory and bandwidth) against the f32
/// cache on the golden prompts: same argmax at >= 99% of positions and mean
/// KL divergence <= 1e-3.
fn check_f16_kv(golden_name: &str) {
    let (golden, model) = load(golden_name);
    let (mut positions, mut agree, mut kl_sum, mut kl_max) = (0usize, 0usize, 0f64, 0f64);
    for case in &golden.cases {
        let exact = all_logits(&model, &case.tokens, KvType::F32);
        let half = all_logits(&model, &case.tokens, KvType::F16);
        for (a, b) in exact.iter().zip(&half) {
            positions += 1;
            agree += usize::from(smelt_argmax(a) == smelt_argmax(b));
            let kl = kl_divergence(a, b);
            kl_sum += kl;
            kl_max = kl_max.max(kl);
        }
    }
    let (rate, mean_kl) = (agree as f64 / positions as f64, kl_sum / positions as f64);
    println!(
        "{golden_name}: f16 vs f32 KV over {positions} positions: argmax agreement {:.2}%, mean KL {mean_kl:.2e}, max KL {kl_max:.2e}",
        rate * 100.0
    );
    assert!(rate >= 0.99, "argmax agreement {rate}");
    assert!(mean_kl <= 1e-3, "mean KL {mean_kl}");
}

#[test]
fn smollm2_f16_kv_cache_stays_close_to_f32() {
    check_f16_kv("SmolLM2-135M-Instruct.Q4_1.logits.json");
}

#[test]
fn qwen25_f16_kv_cache_stays_close_to_f32() {
    check_f16_kv("qwen2.5-coder-0.5b-instruct-q4_k_m.logits.json");
}

#[test]
fn gemma3_logits_match_transformers() {
    check_logits("gemma-3-270m-q4_k_m.logits.json");
}

#[test]
fn gemma3_greedy_matches_transformers() {
    check_greedy("gemma-3-270m-q4_k_m.logits.json", 32);
}
