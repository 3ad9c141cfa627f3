//! Smelt's OpenAI-compatible HTTP server.
//!
//! One engine thread ([`engine::run_engine`]) owns the model and a
//! [`Scheduler`](smelt_engine::Scheduler); every request becomes a sequence
//! in its continuously batched forward pass, and the sequence's events come
//! back over a per-request channel that the handler turns into a JSON body
//! or an SSE stream. Endpoints: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`, `/metrics`, `/tokenize`, `/detokenize`.

pub mod engine;
pub mod error;
pub mod metrics;
pub mod params;
mod respond;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use smelt_text::chat_template::ChatTemplate;
use smelt_text::tokenizer::Tokenizer;

pub use engine::{ChannelSink, Command, EngineHandle, run_engine};
pub use error::ApiError;
pub use metrics::Metrics;
pub use routes::router;

/// Everything the handlers share.
pub struct AppState {
    /// The id `/v1/models` reports.
    pub model_id: String,
    /// Other names requests may use for the model.
    pub aliases: Vec<String>,
    pub tokenizer: Arc<Tokenizer>,
    /// The chat template, or why the model's could not be used.
    pub template: Result<Arc<ChatTemplate>, String>,
    /// Positions one sequence may use (prompt + completion).
    pub max_seq_len: usize,
    /// The model's vocabulary size (token ids must be below it).
    pub vocab_size: usize,
    /// Requests that may wait for a slot before new ones get 429.
    pub max_queue: usize,
    /// Bearer token required on `/v1/*`, `/tokenize` and `/detokenize`.
    pub api_key: Option<String>,
    pub engine: Arc<EngineHandle>,
    pub metrics: Arc<Metrics>,
    /// Set when shutdown began: new requests get 503.
    pub shutting_down: AtomicBool,
    /// Unix time the server started (the model's `created`).
    pub created: u64,
}

impl AppState {
    /// Whether `name` names the served model.
    pub fn serves(&self, name: &str) -> bool {
        name == self.model_id || self.aliases.iter().any(|a| a == name)
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves `state` on `listener` until `shutdown` resolves; then refuses new
/// requests (503), lets running ones finish for up to `grace`, cuts the
/// rest, and returns once every connection has closed (or `grace` plus five
/// seconds have passed).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let began = Arc::new(tokio::sync::Notify::new());
    let (st, notify) = (state.clone(), began.clone());
    let signal = async move {
        shutdown.await;
        st.shutting_down.store(true, Ordering::SeqCst);
        eprintln!(
            "smelt serve: shutting down: finishing running requests (up to {} s)",
            grace.as_secs_f32()
        );
        notify.notify_one();
        let engine = st.engine.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            engine.command(Command::CancelAll);
        });
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        began.notified().await;
        tokio::time::sleep(grace + Duration::from_secs(5)).await;
    };
    tokio::select! {
        r = server => r,
        _ = deadline => {
            eprintln!("smelt serve: connections still open after the grace period; exiting");
            Ok(())
        }
    }
}
