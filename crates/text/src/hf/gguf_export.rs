//! The `tokenizer.ggml.*` metadata of a Hugging Face tokenizer, as llama.cpp's
//! converter writes it, so that a converted GGUF tokenizes as the original.
//!
//! - Byte-level BPE (`model.type` BPE without byte fallback, ByteLevel
//!   decoder) becomes `"gpt2"`: tokens, types, merges (`"LEFT RIGHT"`; a space
//!   inside a part is written as U+0120, as gguf-py does), and
//!   `tokenizer.ggml.pre` recognised from the pre-tokenizer regexes (Qwen2,
//!   Llama 3, GPT-2, SmolLM/StarCoder); an unknown pre-tokenizer is an error
//!   rather than a silently different tokenizer.
//! - SentencePiece-style (BPE with byte fallback, or Unigram, with a `▁`
//!   decoder) becomes `"llama"` with scores. Unigram keeps its scores. For BPE,
//!   llama.cpp's converter writes -1000 for every token, which leaves its
//!   merge-by-score tokenizer no order to follow; here a token's score is
//!   minus the rank of the first merge that makes it, so merging by score
//!   follows the merge list. Tokens no merge makes get -1e9 (never preferred).
//! - Special ids, `add_bos_token`/`add_eos_token` (always written: the values
//!   transformers uses) and the chat template.

use serde_json::Value as Json;
use smelt_gguf::Value;

use super::tokenizer_json::{steps, type_is};
use super::{HfError, HfModelType, HfTextConfig};
use crate::tokenizer::TokenType;
use crate::tokenizer::hf_backend::PieceStyle;

/// Qwen2/2.5/3's split regex as tokenizer.json writes it.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's: Qwen2's with digits in groups of up to three.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The GGUF `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) of `hf`.
pub fn gguf_tokenizer_metadata(hf: &HfTextConfig) -> Result<Vec<(String, Value)>, HfError> {
    let json = &hf.tokenizer_json;
    let tok = &hf.tokenizer;
    let export_error = |message: String| HfError::Export {
        path: json.path.clone(),
        message,
    };
    let style = json.piece_style();
    let mut meta: Vec<(String, Value)> = Vec::new();
    let mut set = |key: &str, value: Value| meta.push((key.to_string(), value));

    let strings =
        |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
    let types = Value::Array(
        json.token_types
            .iter()
            .map(|t| Value::I32(gguf_type(*t)))
            .collect(),
    );

    match (json.model_type, json.byte_fallback, style) {
        (HfModelType::Bpe, false, PieceStyle::ByteLevel) => {
            let pre = recognise_pre(json).map_err(export_error)?;
            set("tokenizer.ggml.model", Value::String("gpt2".into()));
            set("tokenizer.ggml.pre", Value::String(pre.into()));
            set("tokenizer.ggml.tokens", strings(&json.tokens));
            set("tokenizer.ggml.token_type", types);
            let merges = json
                .merges
                .iter()
                .map(|(l, r)| Value::String(format!("{} {}", escape_space(l), escape_space(r))))
                .collect();
            set("tokenizer.ggml.merges", Value::Array(merges));
        }
        (HfModelType::Bpe, true, PieceStyle::Metaspace)
        | (HfModelType::Unigram, _, PieceStyle::Metaspace) => {
            let scores = if json.model_type == HfModelType::Unigram {
                json.scores.clone()
            } else {
                merge_rank_scores(json)
            };
            set("tokenizer.ggml.model", Value::String("llama".into()));
            set("tokenizer.ggml.pre", Value::String("default".into()));
            set("tokenizer.ggml.tokens", strings(&json.tokens));
            set(
                "tokenizer.ggml.scores",
                Value::Array(scores.into_iter().map(Value::F32).collect()),
            );
            set("tokenizer.ggml.token_type", types);
            set(
                "tokenizer.ggml.add_space_prefix",
                Value::Bool(json.add_space_prefix()),
            );
        }
        (model, byte_fallback, style) => {
            return Err(export_error(format!(
                "a {model:?} model (byte_fallback {byte_fallback}) with a {style:?} decoder \
                 has no GGUF tokenizer equivalent; Smelt writes byte-level BPE (\"gpt2\") \
                 and SentencePiece-style (\"llama\") tokenizers"
            )));
        }
    }

    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", tok.bos_id()),
        ("tokenizer.ggml.eos_token_id", tok.eos_id()),
        ("tokenizer.ggml.unknown_token_id", tok.unknown_id()),
        ("tokenizer.ggml.padding_token_id", tok.padding_id()),
    ] {
        if let Some(id) = id {
            set(key, Value::U32(id));
        }
    }
    set("tokenizer.ggml.add_bos_token", Value::Bool(tok.add_bos()));
    set("tokenizer.ggml.add_eos_token", Value::Bool(tok.add_eos()));
    if let Some(template) = &hf.chat_template {
        set("tokenizer.chat_template", Value::String(template.clone()));
    }
    Ok(meta)
}

/// `tokenizer.ggml.token_type` values.
fn gguf_type(t: TokenType) -> i32 {
    match t {
        TokenType::Normal => 1,
        TokenType::Unknown => 2,
        TokenType::Control => 3,
        TokenType::UserDefined => 4,
        TokenType::Unused => 5,
        TokenType::Byte => 6,
    }
}

/// A merge part with its spaces written as U+0120, so "LEFT RIGHT" stays two parts.
fn escape_space(part: &str) -> String {
    part.replace(' ', "\u{120}")
}

/// Scores for a BPE vocabulary read by a merge-by-score tokenizer: minus the
/// rank of the first merge that makes each token; 0 for tokens that are
/// single characters or not normal; -1e9 for other tokens no merge makes.
fn merge_rank_scores(json: &super::TokenizerJson) -> Vec<f32> {
    let index: std::collections::HashMap<&str, usize> = json
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut scores: Vec<f32> = json
        .tokens
        .iter()
        .zip(&json.token_types)
        .map(|(t, ty)| {
            if *ty == TokenType::Normal && t.chars().nth(1).is_some() {
                -1e9
            } else {
                0.0
            }
        })
        .collect();
    let mut merged = String::new();
    for (rank, (l, r)) in json.merges.iter().enumerate() {
        merged.clear();
        merged.push_str(l);
        merged.push_str(r);
        if let Some(&id) = index.get(merged.as_str()) {
            let score = -(rank as f32);
            if scores[id] < score {
                scores[id] = score;
            }
        }
    }
    scores
}

/// The `tokenizer.ggml.pre` name of a byte-level BPE pre-tokenizer.
fn recognise_pre(json: &super::TokenizerJson) -> Result<&'static str, String> {
    let normalizers = steps(&json.normalizer, "normalizers");
    if let Some(n) = normalizers.iter().find(|n| !type_is(n, "NFC")) {
        return Err(format!(
            "normalizer {} has no GGUF equivalent",
            n["type"].as_str().unwrap_or("?")
        ));
    }
    // Each step as a short description: a Split regex, GPT-2's ByteLevel
    // regex, or single digits.
    let mut found: Vec<String> = Vec::new();
    for p in steps(&json.pre_tokenizer, "pretokenizers") {
        if type_is(p, "Split") {
            match (&p["pattern"]["Regex"], p["behavior"].as_str(), &p["invert"]) {
                (Json::String(re), Some("Isolated"), Json::Bool(false) | Json::Null) => {
                    found.push(format!("Split({re})"))
                }
                _ => found.push(format!("Split {p}")),
            }
        } else if type_is(p, "ByteLevel") {
            if p["add_prefix_space"].as_bool() == Some(true) {
                found.push("ByteLevel(add_prefix_space)".into());
            }
            if p["use_regex"].as_bool() != Some(false) {
                found.push("ByteLevel(gpt2 regex)".into());
            }
        } else if type_is(p, "Digits") && p["individual_digits"].as_bool() == Some(true) {
            found.push("Digits(individual)".into());
        } else {
            found.push(p.to_string());
        }
    }
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    let qwen2 = format!("Split({QWEN2_REGEX})");
    let llama3 = format!("Split({LLAMA3_REGEX})");
    let name = match (found.as_slice(), json.ignore_merges) {
        ([s], false) if *s == qwen2 => "qwen2",
        ([s], true) if *s == llama3 => "llama-bpe",
        ([s], false) if *s == llama3 => "smaug-bpe",
        (["ByteLevel(gpt2 regex)"], false) => "gpt-2",
        (["Digits(individual)", "ByteLevel(gpt2 regex)"], false) => "smollm",
        (steps, ignore_merges) => {
            return Err(format!(
                "pre-tokenizer [{}] (ignore_merges {ignore_merges}) is not one Smelt \
                 recognises (Qwen2, Llama 3, GPT-2, SmolLM/StarCoder)",
                steps.join(", ")
            ));
        }
    };
    Ok(name)
}
