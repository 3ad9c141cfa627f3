//! The three real models: a few known facts, then every metadata entry and
//! tensor compared with what gguf-py reads (tests/golden/*.facts.json, made by
//! scripts/gguf_facts.py), tensor bytes included.

mod common;

use common::{QWEN, SMOLLM2, STORIES, asset, check_against_facts, test_data};
use smelt_gguf::{GgufFile, Value};
use smelt_tensor::DType;

fn golden_for(model: &str) -> std::path::PathBuf {
    let stem = model.strip_suffix(".gguf").unwrap_or(model);
    test_data(&format!("golden/{stem}.facts.json"))
}

#[test]
fn smollm2_known_facts() {
    let file = GgufFile::open(&asset(SMOLLM2)).expect("SmolLM2 opens");
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.get_str("general.architecture"), Some("llama"));
    assert_eq!(file.get_u64("llama.block_count"), Some(30));
    assert_eq!(file.get_u64("llama.embedding_length"), Some(576));
    assert_eq!(file.get_f32("llama.rope.freq_base"), Some(100000.0));
    assert_eq!(file.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
    assert_eq!(file.tensors().len(), 272);
    let embd = file
        .tensor("token_embd.weight")
        .expect("token_embd.weight present");
    assert_eq!(embd.dtype, DType::Q8_0);
    assert_eq!(embd.dims, vec![576, 49152]);
    assert_eq!(embd.row_len(), 576);
    assert_eq!(embd.n_rows(), 49152);
    assert_eq!(embd.n_bytes, 576 / 32 * 34 * 49152);
    let tokens = file.get_array("tokenizer.ggml.tokens").expect("token list");
    assert_eq!(tokens.len(), 49152);
    assert!(tokens.iter().all(|t| t.as_str().is_some()));
    assert_eq!(tokens.get(1).and_then(Value::as_str), Some("<|im_start|>"));
    let q = file
        .tensor("blk.0.attn_q.weight")
        .expect("attention weight");
    assert_eq!(q.dtype, DType::Q4_1);
}

#[test]
fn stories260k_known_facts() {
    let file = GgufFile::open(&asset(STORIES)).expect("stories260K opens");
    assert_eq!(file.version(), 3);
    assert_eq!(file.get_u64("llama.block_count"), Some(5));
    assert_eq!(file.get_u64("llama.embedding_length"), Some(64));
    assert_eq!(
        file.get_f32("llama.attention.layer_norm_rms_epsilon"),
        Some(1e-5)
    );
    assert_eq!(file.get_str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(
        file.get_array("tokenizer.ggml.scores").map(<[Value]>::len),
        Some(512)
    );
    assert_eq!(file.tensors().len(), 48);
    let embd = file
        .tensor("token_embd.weight")
        .expect("token_embd.weight present");
    assert_eq!(
        (embd.dtype, embd.dims.as_slice()),
        (DType::F32, &[64u64, 512][..])
    );
}

#[test]
fn qwen_known_facts() {
    let file = GgufFile::open(&asset(QWEN)).expect("Qwen opens");
    assert_eq!(file.version(), 3);
    assert_eq!(file.get_str("general.architecture"), Some("qwen2"));
    assert_eq!(file.get_u64("qwen2.block_count"), Some(24));
    assert_eq!(file.get_u64("tokenizer.ggml.eos_token_id"), Some(151645));
    assert_eq!(file.tensors().len(), 291);
    let dtypes: std::collections::HashSet<DType> = file.tensors().iter().map(|t| t.dtype).collect();
    for d in [DType::F32, DType::Q5_0, DType::Q8_0, DType::Q4K, DType::Q6K] {
        assert!(dtypes.contains(&d), "Qwen Q4_K_M uses {d}");
    }
    assert!(
        file.get_str("tokenizer.chat_template")
            .is_some_and(|t| t.contains("<|im_start|>"))
    );
}

#[test]
fn stories260k_matches_gguf_py() {
    let file = GgufFile::open(&asset(STORIES)).expect("opens");
    check_against_facts(&file, &golden_for(STORIES), true);
}

#[test]
fn smollm2_matches_gguf_py() {
    let file = GgufFile::open(&asset(SMOLLM2)).expect("opens");
    check_against_facts(&file, &golden_for(SMOLLM2), true);
}

#[test]
fn qwen_matches_gguf_py() {
    let file = GgufFile::open(&asset(QWEN)).expect("opens");
    check_against_facts(&file, &golden_for(QWEN), true);
}

#[test]
fn from_bytes_agrees_with_open() {
    let path = asset(STORIES);
    let mapped = GgufFile::open(&path).expect("opens");
    let owned = GgufFile::from_bytes(std::fs::read(&path).expect("reads")).expect("parses");
    assert_eq!(mapped.metadata(), owned.metadata());
    assert_eq!(mapped.tensors(), owned.tensors());
    for t in mapped.tensors() {
        assert!(mapped.tensor_data(t) == owned.tensor_data(t));
    }
}

#[test]
fn missing_file_error_names_the_path() {
    let err = GgufFile::open(std::path::Path::new("/nonexistent/dir/model.gguf"))
        .expect_err("no such file");
    assert!(
        err.to_string().contains("/nonexistent/dir/model.gguf"),
        "{err}"
    );
}
