//! Every architecture family against HF transformers: tiny random-weight
//! models saved as HF directories (tests/fixtures/<family>/, made by
//! scripts/make_arch_fixtures.py with transformers' own f32 logits), loaded
//! with `Model::load_hf` on the reference and the CPU backend; and the same
//! weights written as GGUF the way llama.cpp's converter writes them
//! (tests/fixtures/<family>.gguf), which must give the same config and logits.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use smelt_backend::{Backend, ReferenceBackend};
use smelt_cpu::CpuBackend;
use smelt_gguf::GgufFile;
use smelt_model::{Arch, Model, RopeStyle};

/// Largest |Δlogit| allowed against transformers (f32 throughout).
const MAX_ABS_DIFF: f32 = 1e-3;

const FAMILIES: &[(&str, Arch)] = &[
    ("llama", Arch::Llama),
    ("qwen2", Arch::Qwen2),
    ("qwen3", Arch::Qwen3),
    ("gemma3", Arch::Gemma3),
    ("mistral", Arch::Llama),
    ("phi3", Arch::Phi3),
];

#[derive(Deserialize)]
struct Golden {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn fixture(family: &str) -> (PathBuf, Golden) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family);
    let text = std::fs::read_to_string(dir.join("golden.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let golden: Golden = serde_json::from_str(&text).expect("golden JSON");
    assert!(golden.tokens.len() >= 20 && golden.logits.len() == golden.tokens.len());
    (dir, golden)
}

/// Logits of every position: one prefill batch, or one row per step.
fn logits<B: Backend>(model: &Model<B>, tokens: &[u32], one_by_one: bool) -> Vec<Vec<f32>> {
    match smelt_model::teacher_forced_logits(model, tokens, one_by_one) {
        Ok(l) => l,
        Err(e) => panic!("forward on {}: {e}", model.backend.name()),
    }
}

fn check(family: &str, what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    let mut max_diff = 0f32;
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{family} {what}: vocab");
        let am = |v: &[f32]| smelt_backend::argmax(v);
        assert_eq!(am(g), am(w), "{family} {what}: argmax at position {pos}");
        for (a, b) in g.iter().zip(w) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    eprintln!("{family} {what}: max |Δlogit| {max_diff:.2e}");
    assert!(
        max_diff <= MAX_ABS_DIFF,
        "{family} {what}: max |Δlogit| {max_diff} > {MAX_ABS_DIFF}"
    );
}

#[test]
fn every_family_matches_transformers_on_reference_and_cpu() {
    for &(family, arch) in FAMILIES {
        let (dir, golden) = fixture(family);
        let reference = Model::load_hf(&dir, ReferenceBackend).expect("load on reference");
        assert_eq!(reference.config.arch, arch, "{family}");
        check(
            family,
            "reference",
            &logits(&reference, &golden.tokens, false),
            &golden.logits,
        );
        let cpu = Model::load_hf(&dir, CpuBackend::new(2).expect("threads")).expect("load on cpu");
        check(
            family,
            "cpu prefill",
            &logits(&cpu, &golden.tokens, false),
            &golden.logits,
        );
        check(
            family,
            "cpu decode",
            &logits(&cpu, &golden.tokens, true),
            &golden.logits,
        );
    }
}

#[test]
fn gguf_and_hf_give_the_same_config_and_logits() {
    for &(family, _) in FAMILIES {
        let (dir, golden) = fixture(family);
        let gguf_path = dir.with_extension("gguf");
        let file = Arc::new(GgufFile::open(&gguf_path).expect("open gguf"));
        let from_gguf = Model::load(file, ReferenceBackend).expect("load gguf");
        let from_hf = Model::load_hf(&dir, ReferenceBackend).expect("load hf");
        // The two spellings of one model: llama.cpp permutes llama Q/K rows
        // to interleaved RoPE pairs and ships Llama 3 scaling as
        // rope_freqs.weight; HF keeps rotate-half rows and the rule's inputs.
        let mut hf = from_hf.config.clone();
        if from_gguf.config.rope_style == RopeStyle::Interleaved {
            hf.rope_style = RopeStyle::Interleaved;
        }
        hf.rope_llama3 = None;
        assert_eq!(from_gguf.config, hf, "{family}: GGUF and HF configs differ");
        check(
            family,
            "gguf reference",
            &logits(&from_gguf, &golden.tokens, false),
            &golden.logits,
        );
        let file = Arc::new(GgufFile::open(&gguf_path).expect("open gguf"));
        let cpu = Model::load(file, CpuBackend::new(2).expect("threads")).expect("load on cpu");
        check(
            family,
            "gguf cpu",
            &logits(&cpu, &golden.tokens, false),
            &golden.logits,
        );
    }
}

#[test]
fn fixtures_exercise_what_they_are_for() {
    let config = |family: &str| {
        let (dir, _) = fixture(family);
        Model::load_hf(&dir, ReferenceBackend).expect("load").config
    };
    let gemma = config("gemma3");
    assert!(gemma.qk_norm && gemma.post_norms && gemma.final_logit_softcap.is_some());
    assert_eq!(gemma.layer_windows, vec![Some(6), None, Some(6)]);
    assert!(config("llama").rope_llama3.is_some());
    assert!(config("qwen3").qk_norm);
    assert_eq!(config("mistral").layer_windows, vec![Some(5); 2]);
    let phi = config("phi3");
    assert_eq!((phi.rope_dims, phi.head_dim), (8, 16));
}

#[test]
fn hf_directories_with_problems_are_refused_by_name() {
    let tmp = std::env::temp_dir().join(format!("smelt-hf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let (src, _) = fixture("qwen2");
    let config = std::fs::read_to_string(src.join("config.json")).expect("config");
    let err = |dir: &std::path::Path| match Model::load_hf(dir, ReferenceBackend) {
        Ok(_) => panic!(
            "loaded a broken directory: {}",
            std::fs::read_to_string(dir.join("config.json")).unwrap_or_default()
        ),
        Err(e) => e.to_string(),
    };
    // No config.
    assert!(err(&tmp).contains("config.json"));
    // No weights.
    std::fs::write(tmp.join("config.json"), &config).expect("write");
    assert!(err(&tmp).contains("model.safetensors"));
    // A weight missing: named by its HF name.
    std::fs::copy(src.join("model.safetensors"), tmp.join("model.safetensors")).expect("copy");
    std::fs::write(
        tmp.join("config.json"),
        config.replace(
            "\"tie_word_embeddings\": true",
            "\"tie_word_embeddings\": false",
        ),
    )
    .expect("write");
    assert!(err(&tmp).contains("lm_head.weight"));
    // Wrong shapes.
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"intermediate_size\": 96", "\"intermediate_size\": 80"),
    )
    .expect("write");
    assert!(err(&tmp).contains("mlp.gate_proj.weight"));
    // An unsupported family lists the supported ones.
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"model_type\": \"qwen2\"", "\"model_type\": \"falcon\""),
    )
    .expect("write");
    let e = err(&tmp);
    assert!(
        e.contains("falcon") && e.contains("gemma3_text") && e.contains("phi3"),
        "{e}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}
