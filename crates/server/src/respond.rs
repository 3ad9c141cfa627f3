//! OpenAI's response bodies and stream chunks, built from a sequence's
//! events.

use serde_json::{Map, Value, json};
use smelt_engine::{SeqStats, TokenLogprob};
use smelt_text::tokenizer::Tokenizer;

use crate::metrics::finish_name;

/// Which endpoint a reply is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Completion,
}

/// The fixed parts of one response.
pub(crate) struct Reply {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Whether logprobs were asked for.
    pub logprobs: bool,
    /// `stream_options.include_usage`: chunks carry `"usage": null`.
    pub include_usage: bool,
    /// Characters of text so far (completions' `text_offset`).
    pub offset: usize,
}

/// `usage` with the cached prompt tokens.
pub(crate) fn usage(s: &SeqStats) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
    })
}

/// A token as logprobs show it: its text (control tokens by name) and bytes.
fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_bytes_special(id).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(self.object(chunk)));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert(
            "system_fingerprint".into(),
            json!(concat!("smelt-", env!("CARGO_PKG_VERSION"))),
        );
        m.insert("choices".into(), choices);
        if chunk && self.include_usage {
            m.insert("usage".into(), Value::Null);
        }
        m
    }

    /// The `logprobs` of a choice for these tokens (null if not asked for).
    fn logprobs(&mut self, tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        match self.kind {
            Kind::Chat => {
                let content: Vec<Value> = lps
                    .iter()
                    .map(|lp| {
                        let (text, bytes) = token_text(tok, lp.token);
                        let top: Vec<Value> = lp
                            .top
                            .iter()
                            .map(|&(id, l)| {
                                let (t, b) = token_text(tok, id);
                                json!({"token": t, "logprob": l, "bytes": b})
                            })
                            .collect();
                        json!({"token": text, "logprob": lp.logprob, "bytes": bytes,
                               "top_logprobs": top})
                    })
                    .collect();
                json!({"content": content, "refusal": null})
            }
            Kind::Completion => {
                let mut tokens = Vec::new();
                let mut token_logprobs = Vec::new();
                let mut top = Vec::new();
                let mut offsets = Vec::new();
                for lp in lps {
                    let (text, _) = token_text(tok, lp.token);
                    offsets.push(self.offset);
                    self.offset += text.chars().count();
                    tokens.push(text);
                    token_logprobs.push(lp.logprob);
                    let alts: Map<String, Value> = lp
                        .top
                        .iter()
                        .map(|&(id, l)| (token_text(tok, id).0, json!(l)))
                        .collect();
                    top.push(Value::Object(alts));
                }
                json!({"tokens": tokens, "token_logprobs": token_logprobs,
                       "top_logprobs": top, "text_offset": offsets})
            }
        }
    }

    /// The whole non-streamed response.
    pub fn full(
        &mut self,
        tok: &Tokenizer,
        text: &str,
        lps: &[TokenLogprob],
        stats: &SeqStats,
    ) -> Value {
        let logprobs = self.logprobs(tok, lps);
        let finish = finish_name(stats.finish);
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
            Kind::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
        };
        let mut m = self.envelope(false, json!([choice]));
        m.insert("usage".into(), usage(stats));
        Value::Object(m)
    }

    /// The chunk that opens a chat stream (the assistant role).
    pub fn opening(&self) -> Option<Value> {
        (self.kind == Kind::Chat).then(|| {
            Value::Object(self.envelope(
                true,
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                        "logprobs": null, "finish_reason": null}]),
            ))
        })
    }

    /// A chunk of streamed text (and its tokens' logprobs).
    pub fn delta(&mut self, tok: &Tokenizer, text: &str, lps: &[TokenLogprob]) -> Value {
        let logprobs = self.logprobs(tok, lps);
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "delta": {"content": text},
                                 "logprobs": logprobs, "finish_reason": null}),
            Kind::Completion => json!({"index": 0, "text": text,
                                       "logprobs": logprobs, "finish_reason": null}),
        };
        Value::Object(self.envelope(true, json!([choice])))
    }

    /// The chunk that ends the choice with its finish reason.
    pub fn closing(&self, stats: &SeqStats) -> Value {
        let finish = finish_name(stats.finish);
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "delta": {}, "logprobs": null,
                                 "finish_reason": finish}),
            Kind::Completion => json!({"index": 0, "text": "", "logprobs": null,
                                       "finish_reason": finish}),
        };
        Value::Object(self.envelope(true, json!([choice])))
    }

    /// The last chunk when `include_usage` was asked for: no choices, usage.
    pub fn usage_chunk(&self, stats: &SeqStats) -> Value {
        let mut m = self.envelope(true, json!([]));
        m.insert("usage".into(), usage(stats));
        Value::Object(m)
    }
}
