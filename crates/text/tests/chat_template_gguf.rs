//! ChatTemplate::from_gguf on the real models: the template and special tokens it reads render the
//! committed golden conversations exactly (so the goldens' templates are the models' templates).
//! Needs the models: run scripts/fetch-assets.sh.

mod common;

use common::asset;
use serde_json::Value as Json;
use smelt_gguf::GgufFile;
use smelt_text::chat_template::{ChatMessage, ChatTemplate};
use std::path::PathBuf;

fn open(name: &str) -> GgufFile {
    let path = asset(name);
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden() -> Json {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat/renders.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("renders.json parses")
}

fn check_model(file: &str, template_name: &str) {
    let template = ChatTemplate::from_gguf(&open(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .unwrap_or_else(|| panic!("{file} has no chat template"));
    let golden = golden();
    let mut n = 0;
    for case in golden["renders"].as_array().expect("renders") {
        if case["template"] != template_name || case["expected"].is_null() {
            continue;
        }
        let conv = &golden["conversations"][case["conversation"].as_str().expect("name")];
        let msgs: Vec<ChatMessage> = conv
            .as_array()
            .expect("list")
            .iter()
            .map(|m| {
                ChatMessage::new(
                    m["role"].as_str().expect("role"),
                    m["content"].as_str().expect("content"),
                )
            })
            .collect();
        let agp = case["add_generation_prompt"].as_bool().expect("bool");
        let got = template
            .render_with(&msgs, agp, &case["extra"])
            .expect("renders");
        assert_eq!(
            got,
            case["expected"].as_str().expect("str"),
            "{file}: {case}"
        );
        n += 1;
    }
    assert!(n >= 10, "{template_name}: only {n} golden renders");
}

#[test]
fn smollm2_template_from_gguf() {
    check_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
}

#[test]
fn qwen_template_from_gguf() {
    check_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder");
}

#[test]
fn model_without_template_gives_none() {
    let file = golden()["no_template_model"]
        .as_str()
        .expect("name")
        .to_owned();
    assert!(
        ChatTemplate::from_gguf(&open(&file))
            .expect("reads")
            .is_none()
    );
}
