//! The real models' tokenizers against reference ids recorded by
//! `scripts/make_tokenizer_goldens.py` (HF tokenizers for SmolLM2 and
//! Qwen2.5, the sentencepiece library for stories260K) in
//! `golden/tokenizer_models.json`. The models come from `scripts/fetch-assets.sh`.

mod common;

use common::asset;

use serde_json::Value;
use smelt_gguf::GgufFile;
use smelt_text::tokenizer::Tokenizer;

fn golden(model: &str) -> (Tokenizer, Vec<(String, Vec<u32>, String)>) {
    let text = include_str!("golden/tokenizer_models.json");
    let all: Value = serde_json::from_str(text).expect("golden JSON");
    let entry = &all[model];
    let file = entry["file"].as_str().expect("file name");
    let gguf = GgufFile::open(&asset(file)).expect("open model");
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer from GGUF");
    let cases = entry["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|i| i.as_u64().expect("id") as u32)
                .collect();
            (
                c["text"].as_str().expect("text").to_string(),
                ids,
                c["decoded"].as_str().expect("decoded").to_string(),
            )
        })
        .collect();
    (tok, cases)
}

fn check(model: &str, parse_special: bool) -> Tokenizer {
    let (tok, cases) = golden(model);
    assert!(cases.len() >= 10, "{model}: too few golden cases");
    for (text, want, decoded) in &cases {
        let got = tok.encode(text, false, parse_special);
        assert_eq!(&got, want, "{model}: encode({text:?})");
        assert_eq!(&tok.decode(want), decoded, "{model}: decode of {text:?}");
    }
    tok
}

#[test]
fn smollm2_matches_hf() {
    let tok = check("smollm2", true);
    assert_eq!(tok.pre_tokenizer(), Some("smollm"));
    assert!(!tok.add_bos());
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert!(tok.is_end_of_generation(2), "<|im_end|> ends generation");
    assert!(tok.is_end_of_generation(0), "<|endoftext|> ends generation");
    assert_eq!(tok.token_bytes(2), b"");
    assert_eq!(tok.token_bytes_special(2), b"<|im_end|>");
}

#[test]
fn qwen25_matches_hf() {
    let tok = check("qwen2.5", true);
    assert_eq!(tok.pre_tokenizer(), Some("qwen2"));
    assert_eq!(tok.eos_id(), Some(151645));
    assert!(!tok.add_bos());
    for id in [151643, 151645] {
        assert!(tok.is_end_of_generation(id), "{id} ends generation");
    }
    assert!(!tok.is_end_of_generation(151644), "<|im_start|> does not");
}

#[test]
fn stories260k_matches_sentencepiece() {
    let tok = check("stories260K", false);
    assert!(tok.add_bos() && tok.add_space_prefix());
    assert_eq!(tok.bos_id(), Some(1));
    let ids = tok.encode("Once upon a time", true, false);
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(tok.decode(&ids), "Once upon a time");
    assert_eq!(tok.end_of_generation_ids(), [2]);
}
