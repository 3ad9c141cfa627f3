//! Reading OpenAI request bodies: every field is checked on its own so an
//! error names it (`param`) the way OpenAI's do.

use serde_json::{Map, Value};
use smelt_engine::SamplingParams;
use smelt_text::chat_template::ChatMessage;

use crate::error::ApiError;

/// The most stop strings a request may give (OpenAI's limit).
pub const MAX_STOPS: usize = 4;
/// The most alternatives per position for chat `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// The most alternatives per position for completions `logprobs`.
pub const MAX_COMPLETION_LOGPROBS: usize = 5;
/// `max_tokens` of `/v1/completions` when the request gives none (OpenAI's).
pub const COMPLETION_DEFAULT_MAX_TOKENS: usize = 16;

/// What to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// A conversation, rendered through the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text (tokenized with BOS, as `smelt run` does).
    Text(String),
    /// Token ids, fed as they are.
    Tokens(Vec<u32>),
}

/// A parsed completion or chat-completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub model: String,
    pub prompt: PromptInput,
    /// None: up to the end of the context.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `Some(n)`: each token's log-probability and its `n` likeliest alternatives.
    pub logprobs: Option<usize>,
}

/// The JSON object of a request body, or a 400 like OpenAI's.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request ({e}). The request body must be a \
             JSON object."
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_request(format!(
            "The request body must be a JSON object, not {}",
            type_name(&other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of a request object.
pub struct Fields<'a>(pub &'a Map<String, Value>);

fn wrong_type(key: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        key,
        format!(
            "Invalid type for '{key}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
    )
    .with_code("invalid_type")
}

fn out_of_range(key: &str, expected: &str, got: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(
        key,
        format!("Invalid '{key}': expected {expected}, but got {got} instead."),
    )
    .with_code("invalid_value")
}

impl<'a> Fields<'a> {
    /// The value of `key`, treating `null` as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A number in `[lo, hi]`.
    pub fn number(&self, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let x = v.as_f64().ok_or_else(|| wrong_type(key, "a number", v))?;
        if !(lo..=hi).contains(&x) {
            return Err(out_of_range(key, &format!("a value in [{lo}, {hi}]"), x));
        }
        Ok(Some(x as f32))
    }

    /// An integer in `[lo, hi]`.
    pub fn integer(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let x = match v.as_i64() {
            Some(x) => x,
            // A huge positive integer is still an integer, just out of range.
            None if v.as_u64().is_some() => i64::MAX,
            None => return Err(wrong_type(key, "an integer", v)),
        };
        if !(lo..=hi).contains(&x) {
            return Err(out_of_range(key, &format!("a value in [{lo}, {hi}]"), v));
        }
        Ok(Some(x))
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_bool()
            .map(Some)
            .ok_or_else(|| wrong_type(key, "a boolean", v))
    }

    /// A string.
    pub fn string(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str()
            .map(Some)
            .ok_or_else(|| wrong_type(key, "a string", v))
    }
}

/// The fields every generation request shares.
fn common(f: &Fields<'_>, prompt: PromptInput) -> Result<Job, ApiError> {
    let model = f
        .string("model")?
        .ok_or_else(|| {
            ApiError::invalid("model", "you must provide a model parameter")
                .with_code("missing_required_parameter")
        })?
        .to_owned();
    if let Some(n) = f.integer("n", 1, i64::MAX)?
        && n != 1
    {
        return Err(out_of_range("n", "1 (one choice per request)", n));
    }
    let max_tokens = match f.integer("max_completion_tokens", 1, i64::MAX)? {
        Some(n) => Some(n),
        None => f.integer("max_tokens", 1, i64::MAX)?,
    };
    let defaults = SamplingParams::default();
    let seed = match f.integer("seed", i64::MIN, i64::MAX)? {
        Some(s) => s as u64,
        None => fresh_seed(),
    };
    let sampling = SamplingParams {
        temperature: f
            .number("temperature", 0.0, 2.0)?
            .unwrap_or(defaults.temperature),
        top_k: f
            .integer("top_k", -1, i64::from(u32::MAX))?
            .map_or(defaults.top_k, |k| k.max(0) as usize),
        top_p: match f.number("top_p", 0.0, 1.0)? {
            Some(p) if p <= 0.0 => {
                return Err(out_of_range("top_p", "a value in (0, 1]", p));
            }
            Some(p) => p,
            None => defaults.top_p,
        },
        min_p: f.number("min_p", 0.0, 1.0)?.unwrap_or(defaults.min_p),
        repeat_penalty: match f.number("repetition_penalty", 0.0, 100.0)? {
            Some(r) if r <= 0.0 => {
                return Err(out_of_range("repetition_penalty", "a value in (0, 100]", r));
            }
            Some(r) => r,
            None => defaults.repeat_penalty,
        },
        penalty_last_n: defaults.penalty_last_n,
        presence_penalty: f
            .number("presence_penalty", -2.0, 2.0)?
            .unwrap_or(defaults.presence_penalty),
        frequency_penalty: f
            .number("frequency_penalty", -2.0, 2.0)?
            .unwrap_or(defaults.frequency_penalty),
        seed,
    };
    let stream = f.boolean("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).boolean("include_usage")?.unwrap_or(false),
        Some(v) => return Err(wrong_type("stream_options", "an object", v)),
    };
    Ok(Job {
        model,
        prompt,
        max_tokens: max_tokens.map(|n| n as usize),
        sampling,
        stop: stops(f)?,
        stream,
        include_usage,
        logprobs: None,
    })
}

/// `stop`: a string or a list of up to four strings.
fn stops(f: &Fields<'_>) -> Result<Vec<String>, ApiError> {
    let list = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| wrong_type("stop", "a string or an array of strings", v))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(wrong_type("stop", "a string or an array of strings", v)),
    };
    if list.len() > MAX_STOPS {
        return Err(out_of_range(
            "stop",
            &format!("at most {MAX_STOPS} stop sequences"),
            list.len(),
        ));
    }
    Ok(list)
}

/// A seed for a request that gave none: different every time.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
}

/// `POST /v1/chat/completions`.
pub fn parse_chat(body: &[u8]) -> Result<Job, ApiError> {
    let map = parse_object(body)?;
    let f = Fields(&map);
    let messages = match f.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "'messages' must contain at least one message",
            ));
        }
        Some(v) => return Err(wrong_type("messages", "an array", v)),
        None => {
            return Err(
                ApiError::invalid("messages", "you must provide a messages parameter")
                    .with_code("missing_required_parameter"),
            );
        }
    };
    let mut job = common(&f, PromptInput::Chat(messages))?;
    let top = f.integer("top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
    job.logprobs = match f.boolean("logprobs")? {
        Some(true) => Some(top.unwrap_or(0) as usize),
        _ if top.is_some_and(|t| t > 0) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "'top_logprobs' needs 'logprobs' set to true",
            ));
        }
        _ => None,
    };
    Ok(job)
}

/// One entry of `messages`: a role and text content (a string or text parts).
fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let Value::Object(obj) = m else {
        return Err(wrong_type(&param, "an object", m));
    };
    let f = Fields(obj);
    let role = f
        .string("role")?
        .ok_or_else(|| ApiError::invalid(&format!("{param}.role"), "a message needs a role"))?;
    let role = match role {
        "system" | "user" | "assistant" => role,
        // OpenAI's newer name for system instructions.
        "developer" => "system",
        other => {
            return Err(ApiError::invalid(
                &format!("{param}.role"),
                format!(
                    "Invalid value: '{other}'. Supported roles are 'system', 'developer', 'user' \
                     and 'assistant'."
                ),
            ));
        }
    };
    let content = match f.get("content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let p = format!("{param}.content[{j}]");
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(other), _) if other != "text" => {
                        return Err(ApiError::invalid(
                            &p,
                            format!("content parts of type '{other}' are not supported: text only"),
                        ));
                    }
                    _ => return Err(ApiError::invalid(&p, "a text part needs 'text'")),
                }
            }
            text
        }
        Some(v) => {
            return Err(wrong_type(
                &format!("{param}.content"),
                "a string or an array of parts",
                v,
            ));
        }
    };
    Ok(ChatMessage::new(role, content))
}

/// `POST /v1/completions`.
pub fn parse_completion(body: &[u8]) -> Result<Job, ApiError> {
    let map = parse_object(body)?;
    let f = Fields(&map);
    let prompt = completion_prompt(f.get("prompt"))?;
    let mut job = common(&f, prompt)?;
    job.max_tokens = Some(job.max_tokens.unwrap_or(COMPLETION_DEFAULT_MAX_TOKENS));
    job.logprobs = f
        .integer("logprobs", 0, MAX_COMPLETION_LOGPROBS as i64)?
        .map(|n| n as usize);
    if f.boolean("echo")?.unwrap_or(false) {
        return Err(ApiError::invalid("echo", "'echo' is not supported"));
    }
    if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "'suffix' is not supported"));
    }
    if let Some(b) = f.integer("best_of", 1, i64::MAX)?
        && b != 1
    {
        return Err(out_of_range("best_of", "1", b));
    }
    Ok(job)
}

/// `prompt`: a string, token ids, or a one-element list of either.
fn completion_prompt(v: Option<&Value>) -> Result<PromptInput, ApiError> {
    let expected = "a string, an array of token ids, or a one-element array of either";
    match v {
        None => Err(
            ApiError::invalid("prompt", "you must provide a prompt parameter")
                .with_code("missing_required_parameter"),
        ),
        Some(Value::String(s)) => Ok(PromptInput::Text(s.clone())),
        Some(Value::Array(items)) if items.len() == 1 && !items[0].is_number() => {
            completion_prompt(items.first())
        }
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| wrong_type("prompt", expected, t))
            })
            .collect::<Result<_, _>>()
            .map(PromptInput::Tokens),
        Some(Value::Array(_)) => Err(ApiError::invalid(
            "prompt",
            "batched prompts are not supported: send one prompt per request",
        )),
        Some(v) => Err(wrong_type("prompt", expected, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_fields_are_read_and_defaults_applied() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"!"}]}],
            "max_completion_tokens":7,"max_tokens":3,"temperature":0,"seed":-1,"stop":"\n",
            "logprobs":true,"top_logprobs":2,"stream":true,"stream_options":{"include_usage":true}}"#;
        let job = parse_chat(body).unwrap();
        assert_eq!(job.model, "m");
        assert_eq!(
            job.prompt,
            PromptInput::Chat(vec![
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi!")
            ])
        );
        assert_eq!(job.max_tokens, Some(7));
        assert_eq!(job.sampling.temperature, 0.0);
        assert_eq!(job.sampling.seed, u64::MAX);
        assert_eq!(job.sampling.top_k, SamplingParams::default().top_k);
        assert_eq!(job.stop, vec!["\n".to_string()]);
        assert_eq!(job.logprobs, Some(2));
        assert!(job.stream && job.include_usage);
    }

    #[test]
    fn errors_name_the_parameter() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"{not json", None),
            (b"[1]", None),
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (br#"{"model":"m","messages":[]}"#, Some("messages")),
            (br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#, Some("messages[0].role")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2.5}"#, Some("temperature")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#, Some("temperature")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0}"#, Some("top_p")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, Some("max_tokens")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, Some("n")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#, Some("stop")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":21,"logprobs":true}"#, Some("top_logprobs")),
        ];
        for (body, param) in cases {
            let err = parse_chat(body).unwrap_err();
            assert_eq!(err.status, 400, "{}", String::from_utf8_lossy(body));
            assert_eq!(err.param.as_deref(), *param, "{}", err.message);
        }
    }

    #[test]
    fn completion_prompts_and_defaults() {
        let job = parse_completion(br#"{"model":"m","prompt":["Hello"],"logprobs":3}"#).unwrap();
        assert_eq!(job.prompt, PromptInput::Text("Hello".into()));
        assert_eq!(job.max_tokens, Some(COMPLETION_DEFAULT_MAX_TOKENS));
        assert_eq!(job.logprobs, Some(3));
        let job = parse_completion(br#"{"model":"m","prompt":[1,2,3],"max_tokens":5}"#).unwrap();
        assert_eq!(job.prompt, PromptInput::Tokens(vec![1, 2, 3]));
        assert_eq!(job.max_tokens, Some(5));
        for bad in [
            &br#"{"model":"m","prompt":["a","b"]}"#[..],
            br#"{"model":"m","prompt":[-1]}"#,
            br#"{"model":"m","prompt":"a","echo":true}"#,
            br#"{"model":"m","prompt":"a","logprobs":6}"#,
            br#"{"model":"m"}"#,
        ] {
            assert_eq!(parse_completion(bad).unwrap_err().status, 400);
        }
    }
}
