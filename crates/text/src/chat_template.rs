//! The model's chat template (GGUF `tokenizer.chat_template`), rendered byte for byte as HF
//! transformers' `apply_chat_template` renders it.
//!
//! transformers compiles the template with jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` (and the default `keep_trailing_newline=False`), adds a `tojson` filter that
//! is `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, the
//! globals `raise_exception(message)` and `strftime_now(format)`, and renders it with `messages`,
//! `tools=None`, `documents=None`, `add_generation_prompt`, the tokenizer's special tokens
//! (`bos_token`, `eos_token`, ...) and any extra keyword arguments. Here the same template runs on
//! minijinja with minijinja-contrib's Python string methods (`.strip()`, `.split()`, ...), values
//! print as Python's `str()` would (`None`, `True`, `['a']`), and `{% generation %}` blocks (HF's
//! assistant-mask extension) render their body.

mod pyfilters;
mod pyjson;
mod pymethods;
mod pystr;
mod strftime;

pub use strftime::strftime_utc;

use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use smelt_gguf::GgufFile;

/// The GGUF metadata key holding the Jinja chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The name the template is registered under; error messages mention it.
const TEMPLATE_NAME: &str = "chat_template";

/// One turn of a conversation, as the template sees it: `message.role`, `message.content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, or whatever roles the template knows.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template is not valid Jinja.
    #[error("chat template syntax error (line {line}): {message}")]
    Syntax {
        /// 1-based line in the template source.
        line: usize,
        /// What the parser objected to.
        message: String,
    },
    /// The template called `raise_exception(message)`, e.g. "Conversation roles must alternate".
    #[error("the chat template rejected the conversation: {message}")]
    Raised {
        /// The template's own message, verbatim.
        message: String,
    },
    /// Rendering failed for another reason (a bad operation, an unknown filter, ...).
    #[error("chat template failed to render (line {line}): {message}")]
    Render {
        /// 1-based line in the template source (0 if unknown).
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// The extra variables given to [`ChatTemplate::render_with`] were not a map of names to values.
    #[error("extra chat template variables must be a map of names to values: {message}")]
    BadExtra {
        /// What was wrong with them.
        message: String,
    },
    /// An extra variable tried to replace `messages` or `add_generation_prompt`.
    #[error("extra chat template variable `{name}` is reserved (pass it as an argument instead)")]
    ReservedExtra {
        /// The variable's name.
        name: String,
    },
    /// A GGUF key the template needs has the wrong type or an out-of-range value.
    #[error("GGUF key `{key}`: {message}")]
    Gguf {
        /// The metadata key.
        key: String,
        /// What was wrong with it.
        message: String,
    },
}

/// The error source that marks an error as coming from the template's `raise_exception`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedByTemplate(String);

/// How a [`ChatTemplate`] renders.
#[derive(Debug)]
enum Renderer {
    /// The model's Jinja template, compiled in an environment set up like HF's.
    Jinja(Box<Environment<'static>>),
    /// [`ChatTemplate::fallback`]'s ChatML.
    ChatMl,
}

/// A compiled chat template plus the special tokens it may print.
#[derive(Debug)]
pub struct ChatTemplate {
    renderer: Renderer,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source` (Jinja, as stored in GGUF `tokenizer.chat_template`). `bos_token` and
    /// `eos_token` are the token strings the template may print (`{{ bos_token }}`).
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = hf_environment();
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source))
            .map_err(|e| ChatTemplateError::Syntax {
                line: e.line().unwrap_or(0),
                message: error_message(&e),
            })?;
        Ok(ChatTemplate {
            renderer: Renderer::Jinja(Box::new(env)),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template for models without one: ChatML, exactly what transformers' former default
    /// chat template rendered:
    ///
    /// ```text
    /// <|im_start|>{role}\n{content}<|im_end|>\n      (for each message)
    /// <|im_start|>assistant\n                        (if add_generation_prompt)
    /// ```
    ///
    /// Base models were not trained on any chat format, so callers should say they are falling back.
    pub fn fallback() -> ChatTemplate {
        ChatTemplate {
            renderer: Renderer::ChatMl,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// Reads the template from GGUF metadata: `Ok(None)` if the file has no `tokenizer.chat_template`.
    /// `bos_token`/`eos_token` are the vocabulary entries (`tokenizer.ggml.tokens`) at
    /// `tokenizer.ggml.bos_token_id`/`eos_token_id`, or empty if the file names none.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        let Some(value) = file.get(CHAT_TEMPLATE_KEY) else {
            return Ok(None);
        };
        let source = value.as_str().ok_or_else(|| ChatTemplateError::Gguf {
            key: CHAT_TEMPLATE_KEY.to_owned(),
            message: format!("expected a string, found {}", value.type_name()),
        })?;
        let bos = special_token(file, "tokenizer.ggml.bos_token_id")?;
        let eos = special_token(file, "tokenizer.ggml.eos_token_id")?;
        ChatTemplate::new(source, &bos, &eos).map(Some)
    }

    /// True for [`ChatTemplate::fallback`].
    pub fn is_fallback(&self) -> bool {
        matches!(self.renderer, Renderer::ChatMl)
    }

    /// Renders the conversation into the prompt text. With `add_generation_prompt` the text ends
    /// with the header of an assistant turn, ready for the model to continue.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_with(messages, add_generation_prompt, ())
    }

    /// [`render`](Self::render) with extra template variables, like the keyword arguments of
    /// `apply_chat_template`: `extra` must serialize to a map (a struct, a `serde_json` object,
    /// `()` for none), e.g. `{"tools": [...]}` or `{"date_string": "26 Jul 2024"}`. They may
    /// replace `bos_token`, `eos_token`, `tools` and `documents`. Maps keep their order only if the
    /// type does (`serde_json::Map` sorts its keys unless serde_json's `preserve_order` is on),
    /// and the order shows in `tojson` output.
    pub fn render_with<S: Serialize>(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: S,
    ) -> Result<String, ChatTemplateError> {
        let env = match &self.renderer {
            Renderer::Jinja(env) => env,
            Renderer::ChatMl => return Ok(render_chatml(messages, add_generation_prompt)),
        };
        let mut context: Vec<(String, Value)> = vec![
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
            ("tools".into(), Value::from(())),
            ("documents".into(), Value::from(())),
        ];
        let extra = Value::from_serialize(&extra);
        if !extra.is_none() && !extra.is_undefined() {
            let keys = extra.try_iter().map_err(|e| ChatTemplateError::BadExtra {
                message: error_message(&e),
            })?;
            if extra.kind() != minijinja::value::ValueKind::Map {
                return Err(ChatTemplateError::BadExtra {
                    message: format!("got a {}", extra.kind()),
                });
            }
            for key in keys {
                let name =
                    key.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ChatTemplateError::BadExtra {
                            message: format!("key {key} is not a string"),
                        })?;
                if name == "messages" || name == "add_generation_prompt" {
                    return Err(ChatTemplateError::ReservedExtra { name });
                }
                let item = extra
                    .get_item(&key)
                    .map_err(|e| ChatTemplateError::BadExtra {
                        message: error_message(&e),
                    })?;
                match context.iter_mut().find(|(k, _)| *k == name) {
                    Some(slot) => slot.1 = item,
                    None => context.push((name, item)),
                }
            }
        }
        context.push(("messages".into(), Value::from_serialize(messages)));
        context.push((
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        ));
        let context: Value = context.into_iter().collect();

        let template = env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        template.render(context).map_err(render_error)
    }
}

/// The token string at the id stored under `id_key`, or "" if the key is absent.
fn special_token(file: &GgufFile, id_key: &str) -> Result<String, ChatTemplateError> {
    let Some(id) = file.get(id_key) else {
        return Ok(String::new());
    };
    let bad = |message: String| ChatTemplateError::Gguf {
        key: id_key.to_owned(),
        message,
    };
    let id = id
        .as_u64()
        .ok_or_else(|| bad(format!("expected a token id, found {}", id.type_name())))?;
    let tokens = file
        .get_array("tokenizer.ggml.tokens")
        .ok_or_else(|| bad("the file has no tokenizer.ggml.tokens array".into()))?;
    let token = usize::try_from(id)
        .ok()
        .and_then(|i| tokens.get(i))
        .ok_or_else(|| {
            bad(format!(
                "id {id} is outside the {}-token vocabulary",
                tokens.len()
            ))
        })?;
    token.as_str().map(str::to_owned).ok_or_else(|| {
        bad(format!(
            "token {id} is a {}, not a string",
            token.type_name()
        ))
    })
}

/// [`ChatTemplate::fallback`]'s rendering.
fn render_chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(&m.role);
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

/// A minijinja environment that behaves like transformers' chat-template environment.
fn hf_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_debug(false);
    env.set_unknown_method_callback(pymethods::python_methods);
    env.set_formatter(|out, _state, value| {
        let mut text = String::new();
        pystr::write_str(&mut text, value);
        out.write_str(&text).map_err(Error::from)
    });
    env.add_filter("tojson", pyjson::tojson_filter);
    env.add_filter("string", pyfilters::string);
    env.add_filter("round", pyfilters::round);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", |format: &str| {
        strftime_utc(format, strftime::now_unix_secs())
    });
    env
}

/// The template's `raise_exception(message)`: fails the render with the template's message.
fn raise_exception(message: Value, kwargs: Kwargs) -> Result<Value, Error> {
    kwargs.assert_all_used()?;
    let mut text = String::new();
    pystr::write_str(&mut text, &message);
    Err(Error::new(ErrorKind::InvalidOperation, text.clone()).with_source(RaisedByTemplate(text)))
}

/// Maps a minijinja render error to ours, recognising `raise_exception`.
fn render_error(e: Error) -> ChatTemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(RaisedByTemplate(message)) = err.downcast_ref::<RaisedByTemplate>() {
            return ChatTemplateError::Raised {
                message: message.clone(),
            };
        }
        source = err.source();
    }
    if e.kind() == ErrorKind::SyntaxError {
        return ChatTemplateError::Syntax {
            line: e.line().unwrap_or(0),
            message: error_message(&e),
        };
    }
    ChatTemplateError::Render {
        line: e.line().unwrap_or(0),
        message: error_message(&e),
    }
}

/// minijinja's description of an error without the "(in chat_template:3)" location suffix.
fn error_message(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Turns HF's `{% generation %}` / `{% endgeneration %}` (an extension that records where assistant
/// text is; without tracking it just renders its body) into `{% if true %}` / `{% endif %}`, keeping
/// the whitespace-control markers so trimming stays the same.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        match parse_generation_tag(after) {
            Some((open_marker, is_end, close_marker, len)) => {
                out.push_str("{%");
                out.push_str(open_marker);
                out.push_str(if is_end { " endif " } else { " if true " });
                out.push_str(close_marker);
                out.push_str("%}");
                rest = &after[len..];
            }
            None => {
                out.push_str("{%");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses `[-+]? generation|endgeneration [-+]? %}` after a `{%`: the markers, whether it is the
/// end tag, and the length consumed.
fn parse_generation_tag(s: &str) -> Option<(&str, bool, &str, usize)> {
    let marker_len = |t: &str| usize::from(t.starts_with(['-', '+']));
    let open_len = marker_len(s);
    let open_marker = &s[..open_len];
    let body = &s[open_len..];
    let trimmed = body.trim_start();
    let (is_end, after_name) = if let Some(r) = trimmed.strip_prefix("endgeneration") {
        (true, r)
    } else if let Some(r) = trimmed.strip_prefix("generation") {
        (false, r)
    } else {
        return None;
    };
    let after_space = after_name.trim_start();
    if after_space.len() == after_name.len() && !after_name.starts_with(['-', '+', '%']) {
        return None; // e.g. `generation_prompt`: a different word
    }
    let close_len = marker_len(after_space);
    let close_marker = &after_space[..close_len];
    let tail = after_space[close_len..].strip_prefix("%}")?;
    Some((open_marker, is_end, close_marker, s.len() - tail.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{% generation %}b{%- endgeneration -%}c{%+generation%}"),
            "a{% if true %}b{%- endif -%}c{%+ if true %}"
        );
        // Other tags and look-alike words are left alone.
        let other = "{% if generation_prompt %}{%generations%}{{ '{%' }}";
        assert_eq!(rewrite_generation_tags(other), other);
    }
}
