//! Hugging Face `tokenizer.json` files against llama.cpp's vectors: Qwen3's
//! (the Qwen2 vocabulary) must give `ggml-vocab-qwen2`'s ids and Llama 3's
//! `ggml-vocab-llama-bpe`'s, 47/47; decoding gives the input back; and the
//! HF-backed tokenizer agrees with the GGUF one built from llama.cpp's
//! vocab-only file of the same vocabulary, id by id.
//!
//! Fetch both with `scripts/fetch-vocab-vectors.sh`.

mod common;

use common::assets;
use std::path::{Path, PathBuf};

use smelt_gguf::{GgufFile, GgufWriter};
use smelt_text::hf::{HfTextConfig, gguf_tokenizer_metadata};
use smelt_text::stream::Utf8Stream;
use smelt_text::tokenizer::{TokenType, Tokenizer};

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// (HF tokenizer directory under hf-tokenizers/, llama.cpp vocab name).
const PAIRS: &[(&str, &str)] = &[("qwen3", "qwen2"), ("llama3", "llama-bpe")];

fn hf_dir(name: &str) -> PathBuf {
    let dir = assets().join("hf-tokenizers").join(name);
    assert!(
        dir.join("tokenizer.json").is_file(),
        "{}/tokenizer.json not found: run scripts/fetch-vocab-vectors.sh",
        dir.display()
    );
    dir
}

fn vocab_file(name: &str) -> PathBuf {
    let path = assets()
        .join("vocab")
        .join(format!("ggml-vocab-{name}.gguf"));
    assert!(
        path.is_file(),
        "{} not found: run scripts/fetch-vocab-vectors.sh",
        path.display()
    );
    path
}

/// (input, expected ids) pairs of one llama.cpp vocabulary.
fn cases(vocab: &Path) -> Vec<(String, Vec<u32>)> {
    let with = |ext: &str| {
        let mut p = vocab.as_os_str().to_owned();
        p.push(ext);
        std::fs::read_to_string(PathBuf::from(p)).expect("read vectors")
    };
    let inp = with(".inp");
    let out = with(".out");
    let inp = inp
        .strip_suffix(SEPARATOR)
        .or_else(|| inp.strip_suffix(SEPARATOR.trim_end_matches('\n')))
        .unwrap_or(&inp);
    let inputs: Vec<&str> = inp.split(SEPARATOR).collect();
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(inputs.len(), outputs.len());
    inputs
        .into_iter()
        .map(str::to_string)
        .zip(outputs)
        .collect()
}

fn gguf_tokenizer(name: &str) -> Tokenizer {
    let file = GgufFile::open(&vocab_file(name)).expect("open vocab gguf");
    Tokenizer::from_gguf(&file).expect("gguf tokenizer")
}

#[test]
fn hf_tokenizers_reproduce_llama_cpp_vectors() {
    for &(hf, vocab) in PAIRS {
        let config = HfTextConfig::from_dir(&hf_dir(hf)).expect("read HF tokenizer");
        let tok = &config.tokenizer;
        assert!(tok.is_hf());
        let cases = cases(&vocab_file(vocab));
        // llama.cpp's set of this version has 46 cases per vocabulary.
        assert!(cases.len() >= 46, "{vocab}: {} cases", cases.len());
        let mut failures = Vec::new();
        for (text, want) in &cases {
            let got = tok.encode(text, false, false);
            if &got != want {
                failures.push(format!("{text:?}: want {want:?}, got {got:?}"));
            }
            // Whole and streamed decoding give the text back.
            assert_eq!(&tok.decode(&got), text, "{hf}: decode");
            let mut stream = Utf8Stream::new();
            let mut streamed = String::new();
            for &id in &got {
                streamed.push_str(stream.push(tok.token_bytes(id)));
            }
            streamed.push_str(stream.finish());
            assert_eq!(&streamed, text, "{hf}: streamed decode");
        }
        assert!(
            failures.is_empty(),
            "{hf} vs {vocab}: {}/{} fail:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn hf_and_gguf_tokenizers_agree_on_the_same_vocabulary() {
    for &(hf, vocab) in PAIRS {
        let config = HfTextConfig::from_dir(&hf_dir(hf)).expect("read HF tokenizer");
        let hf_tok = &config.tokenizer;
        let gguf = gguf_tokenizer(vocab);
        // The GGUF files pad the vocabulary to the model's embedding rows, and
        // llama.cpp's Qwen2 file predates Qwen2.5's extra added tokens: ids
        // that are padding there are skipped.
        let n = hf_tok.vocab_size().min(gguf.vocab_size());
        assert!(n > 100_000, "{hf}: {n} tokens");
        let mut differ = Vec::new();
        let mut compared = 0;
        for id in 0..n as u32 {
            if gguf.token_type(id) == Some(TokenType::Unused)
                || gguf.token_text(id) == Some(&format!("[PAD{id}]"))
            {
                continue;
            }
            compared += 1;
            if hf_tok.token_bytes_special(id) != gguf.token_bytes_special(id)
                || hf_tok.token_bytes(id) != gguf.token_bytes(id)
            {
                differ.push(format!(
                    "{id}: hf {:?} gguf {:?}",
                    hf_tok.token_text(id),
                    gguf.token_text(id)
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{hf} vs {vocab}: {} tokens print differently: {:?}",
            differ.len(),
            &differ[..differ.len().min(10)]
        );
        assert!(compared > 100_000, "{hf}: compared {compared}");
        // Special tokens are parsed or not alike.
        let text = "<|im_start|>user\nhi<|im_end|><|begin_of_text|><|eot_id|> x";
        for parse_special in [false, true] {
            assert_eq!(
                hf_tok.encode(text, false, parse_special),
                gguf.encode(text, false, parse_special),
                "{hf}: parse_special {parse_special}"
            );
        }
        for (text, _) in cases(&vocab_file(vocab)) {
            assert_eq!(
                hf_tok.encode(&text, false, true),
                gguf.encode(&text, false, true)
            );
        }
    }
}

#[test]
fn qwen3_special_tokens_and_template() {
    let config = HfTextConfig::from_dir(&hf_dir("qwen3")).expect("read");
    let tok = &config.tokenizer;
    // tokenizer_config.json: eos <|im_end|>, pad <|endoftext|>, no bos, add_bos false.
    assert_eq!(tok.eos_id(), Some(151645));
    assert_eq!(tok.padding_id(), Some(151643));
    assert_eq!(tok.bos_id(), None);
    assert!(!tok.add_bos());
    assert_eq!(config.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(tok.is_end_of_generation(151645) && tok.is_end_of_generation(151643));
    assert_eq!(tok.token_type(151644), Some(TokenType::Control));
    // <tool_call> is an added token that is not special.
    let tool_call = tok.token_id("<tool_call>").expect("<tool_call>");
    assert_eq!(tok.token_type(tool_call), Some(TokenType::UserDefined));
    assert_eq!(
        tok.encode("a<tool_call>", false, false).last(),
        Some(&tool_call)
    );
    // Control tokens: text only when parsing specials, printed as nothing.
    assert_eq!(tok.encode("<|im_start|>", false, true), [151644]);
    assert_ne!(tok.encode("<|im_start|>", false, false), [151644]);
    assert_eq!(tok.token_bytes(151644), b"");
    assert_eq!(tok.token_bytes_special(151644), b"<|im_start|>");
    let template = config
        .compile_chat_template()
        .expect("compiles")
        .expect("has a template");
    let prompt = template
        .render(
            &[smelt_text::chat_template::ChatMessage::new("user", "Hi")],
            true,
        )
        .expect("renders");
    assert_eq!(
        prompt,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn llama3_bos_from_tokenizer_config() {
    let config = HfTextConfig::from_dir(&hf_dir("llama3")).expect("read");
    let tok = &config.tokenizer;
    assert_eq!(tok.bos_id(), Some(128000));
    assert_eq!(tok.eos_id(), Some(128001));
    // This tokenizer.json's post-processor adds nothing and tokenizer_config.json
    // has no add_bos_token: transformers adds no BOS, and neither does Smelt.
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("Hello", true, false), [9906]);
    assert!(tok.is_end_of_generation(128009), "<|eot_id|>");
}

/// The GGUF metadata of an HF tokenizer, written and read back by Smelt's GGUF
/// tokenizer, tokenizes every vector as the HF tokenizer does.
#[test]
fn exported_gguf_tokenizer_matches_hf() {
    for &(hf, vocab) in PAIRS {
        let config = HfTextConfig::from_dir(&hf_dir(hf)).expect("read HF tokenizer");
        let meta = gguf_tokenizer_metadata(&config).expect("export");
        let mut writer = GgufWriter::new();
        for (key, value) in meta {
            writer.set(key, value);
        }
        let file = GgufFile::from_bytes(writer.to_bytes().expect("write")).expect("read back");
        let gguf = Tokenizer::from_gguf(&file).expect("GGUF tokenizer");
        let want_pre = if hf == "qwen3" { "qwen2" } else { "llama-bpe" };
        assert_eq!(gguf.pre_tokenizer(), Some(want_pre));
        assert_eq!(file.get_str("tokenizer.ggml.model"), Some("gpt2"));
        let hf_tok = &config.tokenizer;
        assert_eq!(gguf.vocab_size(), hf_tok.vocab_size());
        assert_eq!(
            (
                gguf.bos_id(),
                gguf.eos_id(),
                gguf.padding_id(),
                gguf.add_bos()
            ),
            (
                hf_tok.bos_id(),
                hf_tok.eos_id(),
                hf_tok.padding_id(),
                hf_tok.add_bos()
            )
        );
        assert_eq!(
            file.get_str("tokenizer.chat_template"),
            config.chat_template.as_deref()
        );
        let cases = cases(&vocab_file(vocab));
        for (text, want) in &cases {
            assert_eq!(&gguf.encode(text, false, false), want, "{hf}: {text:?}");
            assert_eq!(
                gguf.encode(text, true, true),
                hf_tok.encode(text, true, true)
            );
        }
        let text = "<|im_start|>user\nhi<tool_call><|im_end|><|eot_id|> x";
        for parse_special in [false, true] {
            assert_eq!(
                gguf.encode(text, false, parse_special),
                hf_tok.encode(text, false, parse_special),
                "{hf}: parse_special {parse_special}"
            );
        }
        for id in 0..hf_tok.vocab_size() as u32 {
            assert_eq!(
                gguf.token_bytes(id),
                hf_tok.token_bytes(id),
                "{hf}: token {id}"
            );
        }
    }
}
