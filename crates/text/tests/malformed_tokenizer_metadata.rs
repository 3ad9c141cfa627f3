//! Corrupt tokenizer metadata is an error or a working tokenizer, never a
//! panic: the tokenizer and chat-template keys of the real models are
//! edited at random (arrays cut, grown, reordered or given a foreign entry;
//! ids out of range; strings emptied or cut; keys removed), then the
//! tokenizer is built, encodes and decodes text, and the template renders.
//! The models come from `scripts/fetch-assets.sh`.

mod common;

use common::asset;
use std::panic::{AssertUnwindSafe, catch_unwind};

use smelt_gguf::{GgufFile, GgufWriter, Value};
use smelt_text::chat_template::{ChatMessage, ChatTemplate};
use smelt_text::tokenizer::Tokenizer;

/// xorshift64: the edits are the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Builds the tokenizer (and template) from `meta`; Ok(true) when it works.
fn exercise(meta: &[(String, Value)]) -> Result<bool, String> {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k.clone(), v.clone());
    }
    let bytes = w.to_bytes().map_err(|e| e.to_string())?;
    let file = GgufFile::from_bytes(bytes).map_err(|e| e.to_string())?;
    let Ok(tok) = Tokenizer::from_gguf(&file) else {
        return Ok(false);
    };
    let ids = tok.encode(
        "Hello wörld! <|im_start|>user\n 12345 \u{1F600} ",
        true,
        true,
    );
    let _ = tok.decode(&ids);
    let _ = tok.decode(&[0, 1, 2, 99_999, u32::MAX]);
    if let Ok(Some(t)) = ChatTemplate::from_gguf(&file) {
        let _ = t.render(&[ChatMessage::new("user", "hi")], true);
    }
    Ok(true)
}

fn edit(v: &Value, rng: &mut Rng) -> Value {
    match v {
        Value::Array(a) if !a.is_empty() => {
            let mut a = a.clone();
            match rng.below(5) {
                0 => a.truncate(rng.below(a.len())),
                1 => {
                    let j = rng.below(a.len());
                    a[j] = match rng.below(4) {
                        0 => Value::I32(-7),
                        1 => Value::I32(99),
                        2 => Value::String(String::new()),
                        _ => Value::String("a b c".into()),
                    }
                }
                2 => a.push(a[0].clone()),
                3 => {
                    let x = a[rng.below(a.len())].clone();
                    a.insert(0, x)
                }
                _ => a.reverse(),
            }
            Value::Array(a)
        }
        Value::U32(_) | Value::I32(_) | Value::U64(_) | Value::I64(_) => match rng.below(4) {
            0 => Value::U32(u32::MAX),
            1 => Value::I32(-1),
            2 => Value::U32(1 << 20),
            _ => Value::U32(0),
        },
        Value::String(s) => match rng.below(4) {
            0 => Value::String(String::new()),
            1 => Value::String("bogus".into()),
            2 => Value::String(s.chars().take(s.chars().count() / 2).collect()),
            _ => Value::String("{% for %}".into()),
        },
        Value::Bool(b) => Value::Bool(!b),
        _ => Value::U32(1),
    }
}

fn never_panics(model: &str, seed: u64, edits: usize) {
    let file = GgufFile::open(&asset(model)).expect("open model");
    let base: Vec<(String, Value)> = file
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.") || k == "general.architecture")
        .cloned()
        .collect();
    assert_eq!(exercise(&base), Ok(true), "{model}: the unedited keys");
    let mut rng = Rng(seed);
    let (mut panics, mut broken) = (Vec::new(), 0);
    for _ in 0..edits {
        let mut meta = base.clone();
        let i = rng.below(meta.len());
        let key = meta[i].0.clone();
        if rng.below(7) == 0 {
            meta.remove(i);
        } else {
            meta[i].1 = edit(&meta[i].1, &mut rng);
        }
        match catch_unwind(AssertUnwindSafe(|| exercise(&meta))) {
            Ok(Ok(true)) => {}
            Ok(_) => broken += 1,
            Err(_) => panics.push(key),
        }
    }
    assert!(
        panics.is_empty(),
        "{model}: panicked after editing {panics:?}"
    );
    // The edits do break tokenizers (the test reaches the error paths).
    assert!(broken > 0, "{model}: no edit was rejected");
}

#[test]
fn edited_sentencepiece_metadata_never_panics() {
    never_panics("stories260K.gguf", 7, 150);
}

#[test]
fn edited_bpe_metadata_never_panics() {
    never_panics("SmolLM2-135M-Instruct.Q4_1.gguf", 11, 60);
}

#[test]
fn edited_gemma_metadata_never_panics() {
    never_panics("gemma-3-270m-q4_k_m.gguf", 13, 40);
}
