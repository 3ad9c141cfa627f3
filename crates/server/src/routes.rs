//! The endpoints: each generation request is parsed, tokenized, checked
//! against the limits, handed to the engine thread, and answered from its
//! events as one JSON body or an SSE stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use smelt_engine::scheduler::check_request;
use smelt_engine::{GenerateRequest, SeqEnd, SeqEvent, SeqRequest, SubmitError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::engine::ChannelSink;
use crate::error::ApiError;
use crate::params::{Fields, Job, PromptInput, parse_chat, parse_completion, parse_object};
use crate::respond::{Kind, Reply};

type Shared = State<Arc<AppState>>;

/// The server's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts each response by route and status.
async fn count(State(st): Shared, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let resp = next.run(req).await;
    st.metrics.request(&path, resp.status().as_u16());
    resp
}

/// Requires `Authorization: Bearer <key>` when the server has a key.
async fn auth(State(st): Shared, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return ApiError::unauthorized(
                    "You didn't provide an API key: send it as 'Authorization: Bearer KEY'.",
                )
                .into_response();
            }
            Some(g) if !same_secret(g.trim().as_bytes(), key.as_bytes()) => {
                return ApiError::unauthorized("Incorrect API key provided.").into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

async fn not_found(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: Some("unknown_url"),
        ..ApiError::bad_request(format!(
            "Unknown request URL: {} {}",
            req.method(),
            req.uri().path()
        ))
    }
}

async fn health(State(st): Shared) -> Response {
    if st.shutting_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(st): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

fn model_object(st: &AppState) -> Value {
    json!({"id": st.model_id, "object": "model", "created": st.created, "owned_by": "smelt",
           "max_model_len": st.max_seq_len})
}

async fn models(State(st): Shared) -> Response {
    axum::Json(json!({"object": "list", "data": [model_object(&st)]})).into_response()
}

async fn model(State(st): Shared, Path(id): Path<String>) -> Response {
    if st.serves(&id) {
        axum::Json(model_object(&st)).into_response()
    } else {
        ApiError::unknown_model(&id, &st.model_id).into_response()
    }
}

/// `{"content": text, "add_special": bool, "parse_special": bool}` → `{"tokens": [...]}`.
async fn tokenize(State(st): Shared, body: Bytes) -> Result<Response, ApiError> {
    let map = parse_object(&body)?;
    let f = Fields(&map);
    let content = f
        .string("content")?
        .ok_or_else(|| ApiError::invalid("content", "you must provide 'content'"))?
        .to_owned();
    let add_special = f.boolean("add_special")?.unwrap_or(false);
    let parse_special = f.boolean("parse_special")?.unwrap_or(true);
    let tok = st.tokenizer.clone();
    let tokens =
        tokio::task::spawn_blocking(move || tok.encode(&content, add_special, parse_special))
            .await
            .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))?;
    Ok(axum::Json(json!({"tokens": tokens})).into_response())
}

/// `{"tokens": [...]}` → `{"content": text}`.
async fn detokenize(State(st): Shared, body: Bytes) -> Result<Response, ApiError> {
    let map = parse_object(&body)?;
    let tokens = match Fields(&map).get("tokens") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .filter(|&t| (t as usize) < st.vocab_size)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "tokens",
                            format!("token ids must be integers below {}", st.vocab_size),
                        )
                    })
            })
            .collect::<Result<Vec<u32>, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                "tokens",
                "you must provide 'tokens', an array",
            ));
        }
    };
    Ok(axum::Json(json!({"content": st.tokenizer.decode(&tokens)})).into_response())
}

async fn chat(State(st): Shared, body: Bytes) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let job = parse_chat(&body)?;
    generate(st, Kind::Chat, job, arrived).await
}

async fn completions(State(st): Shared, body: Bytes) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let job = parse_completion(&body)?;
    generate(st, Kind::Completion, job, arrived).await
}

/// The prompt's tokens: chat through the template (as `smelt chat`), text
/// with BOS (as `smelt run`), ids as given.
async fn prompt_tokens(st: &Arc<AppState>, prompt: PromptInput) -> Result<Vec<u32>, ApiError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || match prompt {
        PromptInput::Tokens(t) => Ok(t),
        PromptInput::Text(text) => Ok(st.tokenizer.encode(&text, true, true)),
        PromptInput::Chat(messages) => {
            let template = st.template.as_ref().map_err(|e| {
                ApiError::internal(format!("this model's chat template cannot be used: {e}"))
            })?;
            let text = template
                .render(&messages, true)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            Ok(st.tokenizer.encode(&text, false, true))
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))?
}

fn next_id(kind: Kind) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    format!("{prefix}-{t:x}{n:04x}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Admission, submission and the answer of a parsed generation request.
async fn generate(
    st: Arc<AppState>,
    kind: Kind,
    job: Job,
    arrived: Instant,
) -> Result<Response, ApiError> {
    if !st.serves(&job.model) {
        return Err(ApiError::unknown_model(&job.model, &st.model_id));
    }
    let prompt_param = match kind {
        Kind::Chat => "messages",
        Kind::Completion => "prompt",
    };
    let prompt = prompt_tokens(&st, job.prompt).await?;
    let room = st.max_seq_len.saturating_sub(prompt.len()).max(1);
    let request = GenerateRequest {
        sampling: job.sampling,
        max_tokens: job.max_tokens.unwrap_or(room),
        stop: job.stop,
    };
    check_request(&prompt, &request, st.max_seq_len, st.vocab_size).map_err(|e| {
        let param = match &e {
            SubmitError::NoTokens => "max_tokens",
            SubmitError::Sampling(b) => b.name,
            _ => prompt_param,
        };
        let err = ApiError::invalid(param, e.to_string());
        match e {
            SubmitError::TooLong { .. } => err.with_code("context_length_exceeded"),
            _ => err,
        }
    })?;
    if st.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::shutting_down());
    }
    let queued = st.engine.queued();
    if queued >= st.max_queue {
        return Err(ApiError::busy(queued));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let req = SeqRequest {
        prompt,
        generate: request,
        logprobs: job.logprobs,
        sink: Box::new(ChannelSink(tx)),
        arrived,
    };
    if !st.engine.submit(req) {
        return Err(ApiError::internal("the engine thread has stopped"));
    }
    let reply = Reply {
        kind,
        id: next_id(kind),
        created: unix_now(),
        model: job.model,
        logprobs: job.logprobs.is_some(),
        include_usage: job.include_usage,
        offset: 0,
    };
    if job.stream {
        Ok(stream(st, reply, rx))
    } else {
        collect(&st, reply, rx).await
    }
}

/// Waits for the whole completion.
async fn collect(
    st: &AppState,
    mut reply: Reply,
    mut rx: mpsc::UnboundedReceiver<SeqEvent>,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(ev) = rx.recv().await {
        text.push_str(&ev.text);
        logprobs.extend(ev.logprobs);
        match ev.end {
            Some(SeqEnd::Finished(stats)) => {
                let body = reply.full(&st.tokenizer, &text, &logprobs, &stats);
                return Ok(axum::Json(body).into_response());
            }
            Some(SeqEnd::Failed(message)) => return Err(ApiError::internal(message)),
            None => {}
        }
    }
    // The engine dropped the sequence without finishing it: shutdown.
    Err(ApiError::shutting_down())
}

/// Relays the sequence's events as OpenAI SSE chunks, ending with
/// `data: [DONE]`. A client that goes away closes the SSE channel; the relay
/// then drops the sequence's receiver, which cancels it at the next step.
fn stream(
    st: Arc<AppState>,
    mut reply: Reply,
    mut rx: mpsc::UnboundedReceiver<SeqEvent>,
) -> Response {
    let (out, events) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let data = |v: &Value| Ok(Event::default().data(v.to_string()));
        if let Some(open) = reply.opening()
            && out.send(data(&open)).await.is_err()
        {
            return;
        }
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = out.closed() => return,
            };
            let Some(ev) = ev else {
                // Cut by shutdown: end the stream without [DONE].
                return;
            };
            let mut chunks = Vec::new();
            if !ev.text.is_empty() || !ev.logprobs.is_empty() {
                chunks.push(reply.delta(&st.tokenizer, &ev.text, &ev.logprobs));
            }
            let mut last = false;
            match &ev.end {
                Some(SeqEnd::Finished(stats)) => {
                    chunks.push(reply.closing(stats));
                    if reply.include_usage {
                        chunks.push(reply.usage_chunk(stats));
                    }
                    last = true;
                }
                Some(SeqEnd::Failed(message)) => {
                    chunks.push(ApiError::internal(message.clone()).body());
                    last = true;
                }
                None => {}
            }
            for c in &chunks {
                if out.send(data(c)).await.is_err() {
                    return;
                }
            }
            if last {
                let _ = out.send(Ok(Event::default().data("[DONE]"))).await;
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(events)).into_response()
}
