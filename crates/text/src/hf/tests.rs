//! Reading small hand-written model directories: precedence between the
//! files, and errors that name the file and key.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::tokenizer::TokenType;

/// GPT-2's byte alphabet: the character that stands for byte `b`.
fn byte_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        char::from(b)
    } else {
        let k = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + k).unwrap_or('?')
    }
}

/// A byte-level BPE tokenizer.json: bytes 0..=255, then he, ll, hell, hello,
/// Ġw, then added tokens <s> (256+5), </s>, <|im_end|> (special) and <tool> (not).
fn tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b));
    }
    for (i, t) in ["he", "ll", "hell", "hello", "Ġw"].iter().enumerate() {
        vocab.insert((*t).to_string(), json!(256 + i));
    }
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    json!({
        "version": "1.0",
        "added_tokens": [added(261, "<s>", true), added(262, "</s>", true),
                         added(263, "<|im_end|>", true), added(264, "<tool>", false)],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [261], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab,
                  "merges": [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"]]}
    })
}

/// A fresh directory holding `files` (name, contents).
fn model_dir(files: &[(&str, String)]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "smelt-hf-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write file");
    }
    dir
}

fn with_tokenizer(extra: &[(&str, String)]) -> PathBuf {
    let mut files = vec![("tokenizer.json", tokenizer_json().to_string())];
    files.extend(extra.iter().cloned());
    model_dir(&files)
}

fn error(dir: &Path) -> String {
    match HfTextConfig::from_dir(dir) {
        Ok(_) => panic!("accepted a bad directory"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn encodes_and_prints_like_a_gguf_vocabulary() {
    let config = HfTextConfig::from_dir(&with_tokenizer(&[])).expect("read");
    let t = &config.tokenizer;
    assert_eq!(
        t.encode("hello world", false, false),
        [259, 260, 111, 114, 108, 100]
    );
    assert_eq!(t.token_bytes(260), b" w");
    assert_eq!(t.decode(&[259, 260]), "hello w");
    assert_eq!(t.token_type(263), Some(TokenType::Control));
    assert_eq!(t.token_type(264), Some(TokenType::UserDefined));
    // Special tokens only when asked; user-defined ones always.
    assert_eq!(t.encode("he<|im_end|>", false, true), [256, 263]);
    assert_ne!(t.encode("he<|im_end|>", false, false), [256, 263]);
    assert_eq!(t.encode("he<tool>", false, false), [256, 264]);
    // A split UTF-8 character: byte tokens print as their bytes.
    assert_eq!(t.token_bytes(u32::from(0xC3u8)), [0xC3]);
    // No tokenizer_config.json: BOS from the post-processor template is only
    // added when the config names it as bos_token; none here.
    assert_eq!(t.bos_id(), None);
    assert!(!t.add_bos());
    assert!(t.is_end_of_generation(263), "<|im_end|> by text");
    assert!(config.chat_template.is_none());
}

#[test]
fn special_tokens_and_add_bos_from_the_configs() {
    let tc = json!({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
                    "pad_token": null, "chat_template": "{{ bos_token }}{{ messages[0].content }}"});
    let generation = json!({"bos_token_id": 1, "eos_token_id": [263, 262]});
    let dir = with_tokenizer(&[
        ("tokenizer_config.json", tc.to_string()),
        ("generation_config.json", generation.to_string()),
        ("config.json", json!({"pad_token_id": 5}).to_string()),
    ]);
    let config = HfTextConfig::from_dir(&dir).expect("read");
    let t = &config.tokenizer;
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.padding_id()),
        (Some(261), Some(262), Some(5))
    );
    // add_bos_token absent: the post-processor starts with <s> = bos_token.
    assert!(t.add_bos() && !t.add_eos());
    assert_eq!(t.encode("he", true, false), [261, 256]);
    assert_eq!(config.eos_ids, [262, 263]);
    assert!(t.is_end_of_generation(262) && t.is_end_of_generation(263));
    let template = config
        .compile_chat_template()
        .expect("compiles")
        .expect("some");
    let text = template
        .render(
            &[crate::chat_template::ChatMessage::new("user", "hi")],
            false,
        )
        .expect("render");
    assert_eq!(text, "<s>hi");

    // add_bos_token/add_eos_token win over the template.
    let tc = json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false, "add_eos_token": true});
    let dir = with_tokenizer(&[("tokenizer_config.json", tc.to_string())]);
    let t = HfTextConfig::from_dir(&dir).expect("read").tokenizer;
    assert_eq!(t.encode("he", true, false), [256, 262]);
}

#[test]
fn chat_template_precedence() {
    let list = json!({"chat_template": [{"name": "tool_use", "template": "T"},
                                        {"name": "default", "template": "D"}]});
    let dir = with_tokenizer(&[("tokenizer_config.json", list.to_string())]);
    assert_eq!(
        HfTextConfig::from_dir(&dir)
            .expect("read")
            .chat_template
            .as_deref(),
        Some("D")
    );

    let dir = with_tokenizer(&[
        (
            "tokenizer_config.json",
            json!({"chat_template": "C"}).to_string(),
        ),
        ("chat_template.jinja", "J".to_string()),
    ]);
    assert_eq!(
        HfTextConfig::from_dir(&dir)
            .expect("read")
            .chat_template
            .as_deref(),
        Some("J")
    );

    let dir = with_tokenizer(&[(
        "chat_template.json",
        json!({"chat_template": "S"}).to_string(),
    )]);
    assert_eq!(
        HfTextConfig::from_dir(&dir)
            .expect("read")
            .chat_template
            .as_deref(),
        Some("S")
    );

    let no_default = json!({"chat_template": [{"name": "rag", "template": "R"}]});
    let msg = error(&with_tokenizer(&[(
        "tokenizer_config.json",
        no_default.to_string(),
    )]));
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("default") && msg.contains("rag"),
        "{msg}"
    );
}

#[test]
fn errors_name_the_file_and_key() {
    let msg = error(&model_dir(&[]));
    assert!(
        msg.contains("tokenizer.json") && msg.contains("not found"),
        "{msg}"
    );

    let dir = model_dir(&[(
        "tokenizer.json",
        "{\n  \"model\": {\n    \"vocab\": {,\n".to_string(),
    )]);
    let msg = error(&dir);
    assert!(
        msg.contains("tokenizer.json") && msg.contains("line 3"),
        "{msg}"
    );

    let dir = with_tokenizer(&[("tokenizer_config.json", "{\"eos_token\": 7}".to_string())]);
    let msg = error(&dir);
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("eos_token"),
        "{msg}"
    );

    let dir = with_tokenizer(&[(
        "tokenizer_config.json",
        "{\"eos_token\": \"<nope>\"}".to_string(),
    )]);
    let msg = error(&dir);
    assert!(msg.contains("eos_token") && msg.contains("<nope>"), "{msg}");

    let dir = with_tokenizer(&[(
        "generation_config.json",
        "{\"eos_token_id\": [2, 99999]}".to_string(),
    )]);
    let msg = error(&dir);
    assert!(
        msg.contains("generation_config.json")
            && msg.contains("eos_token_id")
            && msg.contains("99999"),
        "{msg}"
    );

    let dir = with_tokenizer(&[(
        "generation_config.json",
        "{\"eos_token_id\": \"x\"}".to_string(),
    )]);
    assert!(error(&dir).contains("eos_token_id"));

    let dir = with_tokenizer(&[("config.json", "[1, 2]".to_string())]);
    let msg = error(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("object"),
        "{msg}"
    );

    let mut bad = tokenizer_json();
    bad["model"]["merges"][2] = json!(3);
    let msg = error(&model_dir(&[("tokenizer.json", bad.to_string())]));
    assert!(msg.contains("model.merges[2]"), "{msg}");
}

/// A SentencePiece-style tokenizer.json (Llama 2 layout): <unk> <s> </s>,
/// byte tokens 3..=258, then ▁ h i ▁h hi ▁hi !, with byte fallback, a `▁`
/// prefix and a `▁` → space decoder.
fn spm_tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert((*t).to_string(), json!(i));
    }
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    for (i, t) in ["▁", "h", "i", "▁h", "hi", "▁hi", "!"].iter().enumerate() {
        vocab.insert((*t).to_string(), json!(259 + i));
    }
    let added = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab,
                  "merges": [["▁", "h"], ["▁h", "i"], ["h", "i"]]}
    })
}

#[test]
fn sentencepiece_style_tokenizer_and_its_gguf_export() {
    let tc = json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true});
    let dir = model_dir(&[
        ("tokenizer.json", spm_tokenizer_json().to_string()),
        ("tokenizer_config.json", tc.to_string()),
    ]);
    let config = HfTextConfig::from_dir(&dir).expect("read");
    let t = &config.tokenizer;
    assert!(t.add_space_prefix());
    assert_eq!(t.encode("hi hi!", true, false), [1, 264, 264, 265]);
    assert_eq!(t.decode(&[1, 264, 264, 265]), "hi hi!");
    assert_eq!(t.token_bytes(264), b" hi");
    assert_eq!(t.token_type(3 + 0xC3), Some(TokenType::Byte));
    assert_eq!(t.token_bytes(3 + 0xC3), [0xC3]);
    assert_eq!(t.unknown_id(), Some(0));

    let meta = gguf_tokenizer_metadata(&config).expect("export");
    let mut writer = smelt_gguf::GgufWriter::new();
    for (key, value) in meta {
        writer.set(key, value);
    }
    let file = smelt_gguf::GgufFile::from_bytes(writer.to_bytes().expect("write")).expect("read");
    assert_eq!(file.get_str("tokenizer.ggml.model"), Some("llama"));
    let gguf = crate::tokenizer::Tokenizer::from_gguf(&file).expect("GGUF tokenizer");
    for text in ["hi hi!", "ih hhi", "é!", " hi", "hi  ", "<s>hi</s>"] {
        for parse_special in [false, true] {
            assert_eq!(
                gguf.encode(text, true, parse_special),
                t.encode(text, true, parse_special),
                "{text:?} parse_special {parse_special}"
            );
        }
        let ids = t.encode(text, false, false);
        assert_eq!(gguf.decode(&ids), t.decode(&ids), "{text:?}");
    }
}

#[test]
fn export_refuses_unknown_pre_tokenizers() {
    let mut json = tokenizer_json();
    json["pre_tokenizer"] = json!({"type": "Split", "pattern": {"Regex": "\\w+"},
                                   "behavior": "Isolated", "invert": false});
    let dir = model_dir(&[("tokenizer.json", json.to_string())]);
    let config = HfTextConfig::from_dir(&dir).expect("read");
    let msg = match gguf_tokenizer_metadata(&config) {
        Ok(_) => panic!("exported an unknown pre-tokenizer"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("tokenizer.json") && msg.contains("\\w+"),
        "{msg}"
    );
    // The GPT-2 ByteLevel pre-tokenizer of the toy vocabulary is "gpt-2".
    let config = HfTextConfig::from_dir(&with_tokenizer(&[])).expect("read");
    let meta = gguf_tokenizer_metadata(&config).expect("export");
    let pre = meta.iter().find(|(k, _)| k == "tokenizer.ggml.pre");
    assert_eq!(pre.and_then(|(_, v)| v.as_str()), Some("gpt-2"));
}
