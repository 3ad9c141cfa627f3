//! The text side of a Hugging Face model directory: `tokenizer.json` (run by
//! the `tokenizers` crate), `tokenizer_config.json` (chat template, special
//! tokens, `add_bos_token`/`add_eos_token`), `chat_template.jinja`,
//! `generation_config.json` and `config.json` (special ids), put together as
//! transformers does.
//!
//! Precedence, as in transformers:
//! - chat template: `chat_template.jinja` if present, else `tokenizer_config.json`
//!   `chat_template` (a string, or a list of `{name, template}` of which the one
//!   named `default` is used), else `chat_template.json`;
//! - BOS/EOS/UNK/PAD: the token texts of `tokenizer_config.json` (a string or an
//!   `{"content": ...}` object); where absent, the ids of `generation_config.json`,
//!   then `config.json` (and its `text_config`);
//! - end of generation: `generation_config.json` `eos_token_id` (an id or a
//!   list), else `config.json`'s, together with the tokenizer's EOS and the
//!   end-of-turn texts llama.cpp recognises (`<|im_end|>`, `<|eot_id|>`, ...);
//! - `add_bos_token`/`add_eos_token`: `tokenizer_config.json`, else whether the
//!   `post_processor` template starts with BOS / ends with EOS.

mod error;
mod gguf_export;
mod tokenizer_json;

use std::path::Path;

use serde_json::Value;

pub use error::HfError;
pub use gguf_export::gguf_tokenizer_metadata;
pub use tokenizer_json::{HfAddedToken, HfModelType, TokenizerJson};

use crate::chat_template::{ChatTemplate, ChatTemplateError};
use crate::tokenizer::hf_backend::HfModel;
use crate::tokenizer::{Tokenizer, VocabKind, VocabSpec};

/// The tokenizer, chat template and special tokens of a Hugging Face model directory.
pub struct HfTextConfig {
    /// The tokenizer (HF-backed: `tokenizers` runs `tokenizer.json`).
    pub tokenizer: Tokenizer,
    /// The Jinja chat template source, if the directory has one.
    pub chat_template: Option<String>,
    /// The BOS text as `tokenizer_config.json` names it (what a template's
    /// `{{ bos_token }}` prints), if any.
    pub bos_token: Option<String>,
    /// The EOS text as `tokenizer_config.json` names it, if any.
    pub eos_token: Option<String>,
    /// The ids generation stops on by the model's own files
    /// (`generation_config.json`, else `config.json`, else the EOS), ascending.
    /// [`Tokenizer::end_of_generation_ids`] has these and llama.cpp's extras.
    pub eos_ids: Vec<u32>,
    /// What `tokenizer.json` holds, for export to GGUF.
    pub tokenizer_json: TokenizerJson,
}

/// The file names read from a model directory.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_JINJA: &str = "chat_template.jinja";
pub const CHAT_TEMPLATE_JSON: &str = "chat_template.json";
pub const GENERATION_CONFIG_JSON: &str = "generation_config.json";
pub const CONFIG_JSON: &str = "config.json";

impl HfTextConfig {
    /// Reads the text files of the Hugging Face model directory `dir`.
    /// `tokenizer.json` is required; the others are optional, but a file that
    /// exists must be valid.
    pub fn from_dir(dir: &Path) -> Result<HfTextConfig, HfError> {
        let tokenizer_path = dir.join(TOKENIZER_JSON);
        if !tokenizer_path.is_file() {
            return Err(HfError::MissingFile {
                path: tokenizer_path,
            });
        }
        let (json, hf_tokenizer) = TokenizerJson::load(&tokenizer_path)?;

        let tc_path = dir.join(TOKENIZER_CONFIG_JSON);
        let tc = read_json_object(&tc_path)?;
        let gen_path = dir.join(GENERATION_CONFIG_JSON);
        let generation = read_json_object(&gen_path)?;
        let config_path = dir.join(CONFIG_JSON);
        let config = read_json_object(&config_path)?;

        let n = json.tokens.len();
        let token_id = |key: &str, text: &str| {
            hf_tokenizer
                .token_to_id(text)
                .filter(|&id| (id as usize) < n)
                .ok_or_else(|| HfError::UnknownToken {
                    path: tc_path.clone(),
                    key: key.to_string(),
                    token: text.to_string(),
                })
        };
        let token_text = |key: &str| token_content(&tc_path, tc.as_ref(), key);
        let bos_token = token_text("bos_token")?;
        let eos_token = token_text("eos_token")?;
        let unk_token = token_text("unk_token")?;
        let pad_token = token_text("pad_token")?;

        // Ids from generation_config.json, then config.json (and its text_config).
        let id_from_files = |key: &str| -> Result<Vec<u32>, HfError> {
            for (path, file) in [(&gen_path, &generation), (&config_path, &config)] {
                let Some(file) = file else { continue };
                let value = match &file[key] {
                    Value::Null => &file["text_config"][key],
                    v => v,
                };
                let ids = ids_of(path, key, value, n)?;
                if !ids.is_empty() {
                    return Ok(ids);
                }
            }
            Ok(Vec::new())
        };

        let bos_id = match &bos_token {
            Some(t) => Some(token_id("bos_token", t)?),
            None => id_from_files("bos_token_id")?.first().copied(),
        };
        let file_eos_ids = id_from_files("eos_token_id")?;
        let eos_id = match &eos_token {
            Some(t) => Some(token_id("eos_token", t)?),
            None => file_eos_ids.first().copied(),
        };
        let unknown_id = match unk_token.as_ref().or(json.unk_token.as_ref()) {
            Some(t) => hf_tokenizer.token_to_id(t),
            None => None,
        };
        let padding_id = match &pad_token {
            Some(t) => Some(token_id("pad_token", t)?),
            None => id_from_files("pad_token_id")?.first().copied(),
        };
        let mut eos_ids = file_eos_ids;
        eos_ids.extend(eos_id);
        eos_ids.sort_unstable();
        eos_ids.dedup();

        let (template_first, template_last) = json.template_specials();
        let add_bos = match flag(&tc_path, tc.as_ref(), "add_bos_token")? {
            Some(b) => b,
            None => template_first.is_some() && template_first == bos_token,
        };
        let add_eos = match flag(&tc_path, tc.as_ref(), "add_eos_token")? {
            Some(b) => b,
            None => template_last.is_some() && template_last == eos_token,
        };

        let chat_template = chat_template(dir, &tc_path, tc.as_ref())?;

        let spec = VocabSpec {
            kind: VocabKind::Bpe { pre: None },
            tokens: json.tokens.clone(),
            token_types: json.token_types.clone(),
            scores: Vec::new(),
            merges: Vec::new(),
            bos_id,
            eos_id,
            eot_id: None,
            eom_id: None,
            unknown_id,
            padding_id,
            fim_ids: Vec::new(),
            add_bos: Some(add_bos),
            add_eos: Some(add_eos),
            add_space_prefix: None,
        };
        let model = HfModel::new(hf_tokenizer, json.piece_style(), json.add_space_prefix());
        let tokenizer =
            Tokenizer::from_hf_model(spec, model, &eos_ids).map_err(|source| HfError::Vocab {
                path: tokenizer_path.clone(),
                source,
            })?;
        Ok(HfTextConfig {
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            eos_ids,
            tokenizer_json: json,
        })
    }

    /// The compiled chat template (`Ok(None)` if the directory has none), with
    /// `bos_token`/`eos_token` as `tokenizer_config.json` names them.
    pub fn compile_chat_template(&self) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        match &self.chat_template {
            None => Ok(None),
            Some(source) => ChatTemplate::new(
                source,
                self.bos_token.as_deref().unwrap_or(""),
                self.eos_token.as_deref().unwrap_or(""),
            )
            .map(Some),
        }
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, HfError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => HfError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => HfError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// A JSON syntax or shape error at serde's line and column.
pub(crate) fn json_error(path: &Path, e: &serde_json::Error) -> HfError {
    // serde's message ends with " at line L column C", which the error prints already.
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    HfError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: full.strip_suffix(&suffix).unwrap_or(&full).to_string(),
    }
}

/// An optional JSON file holding an object: `Ok(None)` if it does not exist.
fn read_json_object(path: &Path) -> Result<Option<Value>, HfError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read_file(path)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| json_error(path, &e))?;
    if !value.is_object() {
        return Err(HfError::Json {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!(
                "expected a JSON object, found {}",
                tokenizer_json::json_kind(&value)
            ),
        });
    }
    Ok(Some(value))
}

/// A special token's text: a string, or an `{"content": ...}` object (HF's
/// serialized `AddedToken`); null or absent is none.
fn token_content(path: &Path, file: Option<&Value>, key: &str) -> Result<Option<String>, HfError> {
    let Some(file) = file else { return Ok(None) };
    match &file[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(o) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(bad_value(
                path,
                key,
                "an object without a string \"content\"".into(),
            )),
        },
        other => Err(bad_value(
            path,
            key,
            format!(
                "expected a string or {{\"content\": ...}}, found {}",
                tokenizer_json::json_kind(other)
            ),
        )),
    }
}

/// A bool key; null or absent is none.
fn flag(path: &Path, file: Option<&Value>, key: &str) -> Result<Option<bool>, HfError> {
    let Some(file) = file else { return Ok(None) };
    match &file[key] {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(bad_value(
            path,
            key,
            format!(
                "expected a bool, found {}",
                tokenizer_json::json_kind(other)
            ),
        )),
    }
}

/// Token ids: an integer or a list of integers (null: none), each in the vocabulary.
fn ids_of(path: &Path, key: &str, value: &Value, n: usize) -> Result<Vec<u32>, HfError> {
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    items
        .into_iter()
        .map(|v| {
            let id = v.as_u64().ok_or_else(|| {
                bad_value(
                    path,
                    key,
                    format!(
                        "expected a token id or a list of ids, found {}",
                        tokenizer_json::json_kind(v)
                    ),
                )
            })?;
            if id as usize >= n || u32::try_from(id).is_err() {
                return Err(bad_value(
                    path,
                    key,
                    format!("id {id} is outside the vocabulary of {n} tokens"),
                ));
            }
            Ok(id as u32)
        })
        .collect()
}

fn bad_value(path: &Path, key: &str, message: String) -> HfError {
    HfError::BadValue {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    }
}

/// The chat template source: `chat_template.jinja`, else `tokenizer_config.json`
/// `chat_template`, else `chat_template.json`.
fn chat_template(
    dir: &Path,
    tc_path: &Path,
    tc: Option<&Value>,
) -> Result<Option<String>, HfError> {
    let jinja = dir.join(CHAT_TEMPLATE_JINJA);
    if jinja.is_file() {
        let bytes = read_file(&jinja)?;
        return String::from_utf8(bytes).map(Some).map_err(|e| HfError::Io {
            path: jinja,
            message: format!("not UTF-8: {e}"),
        });
    }
    if let Some(tc) = tc
        && let Some(t) = template_value(tc_path, &tc["chat_template"])?
    {
        return Ok(Some(t));
    }
    let json_path = dir.join(CHAT_TEMPLATE_JSON);
    match read_json_object(&json_path)? {
        Some(file) => template_value(&json_path, &file["chat_template"]),
        None => Ok(None),
    }
}

/// A `chat_template` value: a string, or a list of `{name, template}` of which
/// the one named `default` is taken (transformers refuses a list without one).
fn template_value(path: &Path, value: &Value) -> Result<Option<String>, HfError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(items) => {
            let mut names = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let (Some(name), Some(template)) =
                    (item["name"].as_str(), item["template"].as_str())
                else {
                    return Err(bad_value(
                        path,
                        &format!("chat_template[{i}]"),
                        "expected {\"name\": string, \"template\": string}".into(),
                    ));
                };
                if name == "default" {
                    return Ok(Some(template.to_string()));
                }
                names.push(name.to_string());
            }
            Err(bad_value(
                path,
                "chat_template",
                format!(
                    "a list of templates without one named \"default\" (names: {})",
                    names.join(", ")
                ),
            ))
        }
        other => Err(bad_value(
            path,
            "chat_template",
            format!(
                "expected a string or a list of {{name, template}}, found {}",
                tokenizer_json::json_kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
