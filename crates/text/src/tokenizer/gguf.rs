//! Reading a [`VocabSpec`] from the `tokenizer.ggml.*` keys of a GGUF file.

use smelt_gguf::{GgufFile, Value};

use super::{TokenType, Tokenizer, TokenizerError, VocabKind, VocabSpec};

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_spec(VocabSpec::from_gguf(file)?)
    }
}

impl VocabSpec {
    /// Reads the `tokenizer.ggml.*` keys of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<VocabSpec, TokenizerError> {
        read_spec(file)
    }
}

fn read_spec(file: &GgufFile) -> Result<VocabSpec, TokenizerError> {
    let model =
        string(file, "tokenizer.ggml.model")?.ok_or_else(|| missing("tokenizer.ggml.model"))?;
    let kind = match model {
        "gpt2" => VocabKind::Bpe {
            pre: string(file, "tokenizer.ggml.pre")?.map(str::to_string),
        },
        "llama" => VocabKind::Spm,
        "gemma4" => VocabKind::CharBpe,
        other => {
            return Err(TokenizerError::UnsupportedModel {
                model: other.to_string(),
            });
        }
    };
    let tokens = array(file, "tokenizer.ggml.tokens")?
        .ok_or_else(|| missing("tokenizer.ggml.tokens"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| element_type("tokenizer.ggml.tokens", "strings", v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = tokens.len();
    let token_types = match array(file, "tokenizer.ggml.token_type")? {
        None => Vec::new(),
        Some(items) => items
            .iter()
            .enumerate()
            .map(|(index, v)| {
                let value = v
                    .as_i64()
                    .ok_or_else(|| element_type("tokenizer.ggml.token_type", "integers", v))?;
                TokenType::from_gguf(value).ok_or(TokenizerError::BadTokenType { index, value })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let scores = match array(file, "tokenizer.ggml.scores")? {
        None => Vec::new(),
        Some(items) => items
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                _ => Err(element_type("tokenizer.ggml.scores", "floats", v)),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let merges = match (&kind, array(file, "tokenizer.ggml.merges")?) {
        (_, Some(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| element_type("tokenizer.ggml.merges", "strings", v))
            })
            .collect::<Result<Vec<_>, _>>()?,
        (VocabKind::Bpe { .. } | VocabKind::CharBpe, None) => {
            return Err(missing("tokenizer.ggml.merges"));
        }
        (VocabKind::Spm, None) => Vec::new(),
    };
    let fim_ids = [
        "tokenizer.ggml.fim_pad_token_id",
        "tokenizer.ggml.fim_rep_token_id",
        "tokenizer.ggml.fim_sep_token_id",
    ]
    .iter()
    .map(|k| id(file, k, n))
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .flatten()
    .collect();
    Ok(VocabSpec {
        kind,
        tokens,
        token_types,
        scores,
        merges,
        bos_id: id(file, "tokenizer.ggml.bos_token_id", n)?,
        eos_id: id(file, "tokenizer.ggml.eos_token_id", n)?,
        eot_id: id(file, "tokenizer.ggml.eot_token_id", n)?,
        eom_id: id(file, "tokenizer.ggml.eom_token_id", n)?,
        unknown_id: id(file, "tokenizer.ggml.unknown_token_id", n)?,
        padding_id: id(file, "tokenizer.ggml.padding_token_id", n)?,
        fim_ids,
        add_bos: boolean(file, "tokenizer.ggml.add_bos_token")?,
        add_eos: boolean(file, "tokenizer.ggml.add_eos_token")?,
        add_space_prefix: boolean(file, "tokenizer.ggml.add_space_prefix")?,
    })
}

fn missing(key: &str) -> TokenizerError {
    TokenizerError::MissingKey {
        key: key.to_string(),
    }
}

fn wrong(key: &str, expected: &'static str, found: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_string(),
        expected,
        found: found.type_name().to_string(),
    }
}

fn element_type(key: &str, expected: &'static str, found: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_string(),
        expected: match expected {
            "strings" => "an array of strings",
            "integers" => "an array of integers",
            _ => "an array of floats",
        },
        found: format!("an array holding {}", found.type_name()),
    }
}

fn string<'f>(file: &'f GgufFile, key: &str) -> Result<Option<&'f str>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| wrong(key, "a string", v)),
    }
}

fn array<'f>(file: &'f GgufFile, key: &str) -> Result<Option<&'f [Value]>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| wrong(key, "an array", v)),
    }
}

fn boolean(file: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(key, "a bool", v)),
    }
}

/// A token id key. Negative values (-1) mean "none".
fn id(file: &GgufFile, key: &str, vocab_size: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = file.get(key) else {
        return Ok(None);
    };
    let Some(x) = v.as_i64() else {
        return Err(wrong(key, "an integer token id", v));
    };
    if x < 0 {
        return Ok(None);
    }
    u32::try_from(x)
        .map(Some)
        .map_err(|_| TokenizerError::IdOutOfRange {
            key: key.to_string(),
            id: x as u64,
            vocab_size,
        })
}
