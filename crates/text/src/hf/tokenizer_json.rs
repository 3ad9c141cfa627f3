//! Reading `tokenizer.json`: the `tokenizers` pipeline that encodes, plus the
//! vocabulary as plain tables (texts, types, merges, scores) for streaming,
//! special-token handling and GGUF export.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::HfError;
use crate::tokenizer::TokenType;
use crate::tokenizer::hf_backend::PieceStyle;

/// The algorithm of a `tokenizer.json` (`model.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfModelType {
    /// Byte pair encoding (GPT-2 byte level, or SentencePiece-style with byte fallback).
    Bpe,
    /// SentencePiece unigram (pieces with log-probability scores).
    Unigram,
    /// BERT-style WordPiece.
    WordPiece,
    /// Whole-word lookup.
    WordLevel,
}

/// One entry of `added_tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HfAddedToken {
    /// The token id.
    pub id: u32,
    /// The token text.
    pub content: String,
    /// Special tokens (`<|im_end|>`) are control tokens: matched in text only
    /// when special tokens are parsed, and printed as nothing.
    #[serde(default)]
    pub special: bool,
}

/// What Smelt reads from a `tokenizer.json` itself, besides handing it to the
/// `tokenizers` crate.
#[derive(Clone, Debug)]
pub struct TokenizerJson {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// `model.type`.
    pub model_type: HfModelType,
    /// Token texts by id, model vocabulary and added tokens together
    /// (`[PADn]` for ids that neither names).
    pub tokens: Vec<String>,
    /// Each token's type: added tokens are control (special) or user-defined,
    /// `<0xXX>` with byte fallback is a byte token, the unknown token unknown.
    pub token_types: Vec<TokenType>,
    /// Unigram piece scores by id (empty for other models).
    pub scores: Vec<f32>,
    /// BPE merges, best first.
    pub merges: Vec<(String, String)>,
    /// `model.byte_fallback`: characters outside the vocabulary become `<0xXX>` tokens.
    pub byte_fallback: bool,
    /// `model.ignore_merges`: a word that is a token is taken whole.
    pub ignore_merges: bool,
    /// `model.unk_token` (Unigram: the text at `model.unk_id`).
    pub unk_token: Option<String>,
    /// `added_tokens`.
    pub added_tokens: Vec<HfAddedToken>,
    /// The `normalizer`, `pre_tokenizer`, `post_processor` and `decoder`
    /// sections (`Null` when absent).
    pub normalizer: Value,
    pub pre_tokenizer: Value,
    pub post_processor: Value,
    pub decoder: Value,
}

#[derive(Deserialize)]
struct RawTokenizerJson {
    #[serde(default)]
    added_tokens: Vec<HfAddedToken>,
    #[serde(default)]
    normalizer: Value,
    #[serde(default)]
    pre_tokenizer: Value,
    #[serde(default)]
    post_processor: Value,
    #[serde(default)]
    decoder: Value,
    model: RawModel,
}

#[derive(Deserialize)]
struct RawModel {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    vocab: Value,
    #[serde(default)]
    merges: Vec<Value>,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    ignore_merges: bool,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    unk_id: Option<u64>,
}

/// Most ids a vocabulary may have (ids past it would waste memory on holes).
const MAX_VOCAB: u64 = 1 << 24;

impl TokenizerJson {
    /// Reads `path`, returning the tables and the `tokenizers` pipeline.
    pub(crate) fn load(path: &Path) -> Result<(TokenizerJson, tokenizers::Tokenizer), HfError> {
        let bytes = super::read_file(path)?;
        let raw: RawTokenizerJson =
            serde_json::from_slice(&bytes).map_err(|e| super::json_error(path, &e))?;
        let json = TokenizerJson::from_raw(path, raw)?;
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| HfError::Tokenizers {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok((json, tokenizer))
    }

    fn from_raw(path: &Path, raw: RawTokenizerJson) -> Result<TokenizerJson, HfError> {
        let bad = |key: &str, message: String| HfError::BadValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let model = raw.model;
        let model_type = match model.kind.as_deref() {
            Some("BPE") => HfModelType::Bpe,
            Some("Unigram") => HfModelType::Unigram,
            Some("WordPiece") => HfModelType::WordPiece,
            Some("WordLevel") => HfModelType::WordLevel,
            // Files written before `type` existed: BPE has merges, Unigram a list vocab.
            None if !model.merges.is_empty() => HfModelType::Bpe,
            None if model.vocab.is_array() => HfModelType::Unigram,
            other => {
                return Err(bad(
                    "model.type",
                    format!("{other:?} is not BPE, Unigram, WordPiece or WordLevel"),
                ));
            }
        };

        // Model vocabulary: an object text → id, or (Unigram) a list of [text, score].
        let mut by_id: HashMap<u32, String> = HashMap::new();
        let mut scores_by_id: HashMap<u32, f32> = HashMap::new();
        match &model.vocab {
            Value::Object(map) => {
                for (text, id) in map {
                    let id = id
                        .as_u64()
                        .filter(|&id| id < MAX_VOCAB)
                        .ok_or_else(|| bad("model.vocab", format!("{text:?} has id {id}")))?;
                    by_id.entry(id as u32).or_insert_with(|| text.clone());
                }
            }
            Value::Array(items) => {
                for (id, item) in items.iter().enumerate() {
                    let pair = item.as_array().map(Vec::as_slice);
                    let Some([Value::String(text), score]) = pair else {
                        return Err(bad(
                            &format!("model.vocab[{id}]"),
                            "expected [piece, score]".into(),
                        ));
                    };
                    let score = score.as_f64().ok_or_else(|| {
                        bad(
                            &format!("model.vocab[{id}]"),
                            "score is not a number".into(),
                        )
                    })?;
                    by_id.insert(id as u32, text.clone());
                    scores_by_id.insert(id as u32, score as f32);
                }
            }
            other => {
                return Err(bad(
                    "model.vocab",
                    format!("expected an object or a list, found {}", json_kind(other)),
                ));
            }
        }
        if by_id.len() as u64 >= MAX_VOCAB {
            return Err(bad("model.vocab", "too many tokens".into()));
        }
        let unk_token = match (model_type, model.unk_id) {
            (HfModelType::Unigram, Some(id)) => u32::try_from(id)
                .ok()
                .and_then(|id| by_id.get(&id))
                .cloned(),
            _ => model.unk_token,
        };

        let mut n = by_id.keys().max().map_or(0, |&m| m as usize + 1);
        for added in &raw.added_tokens {
            if u64::from(added.id) >= MAX_VOCAB {
                return Err(bad(
                    "added_tokens",
                    format!("{:?} has id {}", added.content, added.id),
                ));
            }
            n = n.max(added.id as usize + 1);
        }
        let mut tokens = Vec::with_capacity(n);
        let mut token_types = Vec::with_capacity(n);
        for id in 0..n as u32 {
            match by_id.remove(&id) {
                Some(text) => {
                    let ty = if unk_token.as_deref() == Some(text.as_str()) {
                        TokenType::Unknown
                    } else if model.byte_fallback && is_byte_token(&text) {
                        TokenType::Byte
                    } else {
                        TokenType::Normal
                    };
                    tokens.push(text);
                    token_types.push(ty);
                }
                None => {
                    tokens.push(format!("[PAD{id}]"));
                    token_types.push(TokenType::Unused);
                }
            }
        }
        for added in &raw.added_tokens {
            let i = added.id as usize;
            tokens[i] = added.content.clone();
            token_types[i] = if added.special {
                TokenType::Control
            } else {
                TokenType::UserDefined
            };
        }
        let scores = if scores_by_id.is_empty() {
            Vec::new()
        } else {
            (0..n as u32)
                .map(|id| scores_by_id.get(&id).copied().unwrap_or(0.0))
                .collect()
        };

        let mut merges = Vec::with_capacity(model.merges.len());
        for (i, merge) in model.merges.iter().enumerate() {
            let pair = match merge {
                // "LEFT RIGHT" (the separator is the first space after the first character).
                Value::String(s) => {
                    let first = s.chars().next().map_or(0, char::len_utf8);
                    s.get(first..)
                        .and_then(|r| r.find(' '))
                        .map(|at| (s[..first + at].to_string(), s[first + at + 1..].to_string()))
                }
                // ["LEFT", "RIGHT"] (tokenizers 0.20 and later).
                Value::Array(parts) => match parts.as_slice() {
                    [Value::String(l), Value::String(r)] => Some((l.clone(), r.clone())),
                    _ => None,
                },
                _ => None,
            };
            merges.push(pair.ok_or_else(|| {
                bad(
                    &format!("model.merges[{i}]"),
                    format!("{merge} is not \"LEFT RIGHT\" or [LEFT, RIGHT]"),
                )
            })?);
        }

        Ok(TokenizerJson {
            path: path.to_path_buf(),
            model_type,
            tokens,
            token_types,
            scores,
            merges,
            byte_fallback: model.byte_fallback,
            ignore_merges: model.ignore_merges,
            unk_token,
            added_tokens: raw.added_tokens,
            normalizer: raw.normalizer,
            pre_tokenizer: raw.pre_tokenizer,
            post_processor: raw.post_processor,
            decoder: raw.decoder,
        })
    }

    /// How token texts print, from the decoder: byte level (`Ġ`), SentencePiece
    /// (`▁`, `<0xXX>`), or as written.
    pub(crate) fn piece_style(&self) -> PieceStyle {
        let steps = steps(&self.decoder, "decoders");
        if steps.iter().any(|d| type_is(d, "ByteLevel")) {
            PieceStyle::ByteLevel
        } else if steps.iter().any(|d| {
            type_is(d, "Metaspace")
                || type_is(d, "ByteFallback")
                || (type_is(d, "Replace") && d["pattern"]["String"] == "\u{2581}")
        }) {
            PieceStyle::Metaspace
        } else {
            PieceStyle::Plain
        }
    }

    /// Whether the normalizer or pre-tokenizer puts `▁` in front of the text
    /// (Llama 2 style), so a decoded text's first space is not part of it.
    pub fn add_space_prefix(&self) -> bool {
        let prepends = steps(&self.normalizer, "normalizers")
            .iter()
            .any(|n| type_is(n, "Prepend") && n["prepend"] == "\u{2581}");
        let metaspace = steps(&self.pre_tokenizer, "pretokenizers").iter().any(|p| {
            type_is(p, "Metaspace")
                && match p["prepend_scheme"].as_str() {
                    Some(scheme) => scheme != "never",
                    None => p["add_prefix_space"].as_bool().unwrap_or(true),
                }
        });
        prepends || metaspace
    }

    /// The special tokens the `post_processor` puts around a single text, as
    /// (first, last) token texts: `TemplateProcessing` `single`, or the
    /// `cls`/`sep` of BERT/RoBERTa processors.
    pub(crate) fn template_specials(&self) -> (Option<String>, Option<String>) {
        let mut first = None;
        let mut last = None;
        for p in steps(&self.post_processor, "processors") {
            if type_is(p, "TemplateProcessing") {
                let single = p["single"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let special = |v: Option<&Value>| {
                    v.and_then(|v| v["SpecialToken"]["id"].as_str())
                        .map(str::to_string)
                };
                if single.len() > 1 {
                    first = special(single.first()).or(first);
                    last = special(single.last()).or(last);
                }
            } else if type_is(p, "RobertaProcessing") || type_is(p, "BertProcessing") {
                first = p["cls"][0].as_str().map(str::to_string).or(first);
                last = p["sep"][0].as_str().map(str::to_string).or(last);
            }
        }
        (first, last)
    }
}

/// The steps of a normalizer / pre-tokenizer / decoder / processor section:
/// the items of a `Sequence` (under `list_key`), or the section itself.
pub(crate) fn steps<'v>(section: &'v Value, list_key: &str) -> Vec<&'v Value> {
    if section.is_null() {
        Vec::new()
    } else if type_is(section, "Sequence") {
        section[list_key]
            .as_array()
            .map(|items| items.iter().collect())
            .unwrap_or_default()
    } else {
        vec![section]
    }
}

pub(crate) fn type_is(v: &Value, name: &str) -> bool {
    v["type"] == name
}

/// `<0xXX>`: a SentencePiece byte token.
fn is_byte_token(text: &str) -> bool {
    text.len() == 6
        && text.starts_with("<0x")
        && text.ends_with('>')
        && text[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
