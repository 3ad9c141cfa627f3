//! `smelt serve MODEL`: the OpenAI-compatible server. The engine thread
//! loads the model and runs the continuous-batching scheduler; the main
//! thread runs the HTTP server on tokio.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use smelt_engine::SchedulerConfig;
use smelt_server::{AppState, Command, EngineHandle, Metrics};
use smelt_text::chat_template::ChatTemplate;
use smelt_text::tokenizer::Tokenizer;

use crate::args::ModelArgs;
use crate::load::{Loaded, load, with_model};

/// `smelt serve` flags.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A GGUF file, a Hugging Face model directory, or a known model name
    /// (`smollm2`, fetched on first use).
    pub model: String,
    /// Address to bind (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated together (one batched forward pass per step).
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// KV cache size, e.g. 512M or 2G (default: --ctx × --parallel positions).
    #[arg(long)]
    pub kv_memory: Option<String>,
    /// Require `Authorization: Bearer KEY` on /v1/*, /tokenize, /detokenize.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Requests that may wait for a slot; past this, 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// The model id to report (default: the model file's name).
    #[arg(long)]
    pub alias: Option<String>,
    /// Most rows (tokens) in one forward pass: decode rows plus prompt
    /// chunks (default: 256 on the CPU, 2048 on CUDA, where a prompt chunk's
    /// products only fill the GPU with many rows).
    #[arg(long)]
    pub step_rows: Option<usize>,
    /// Do not reuse the KV of earlier prompts' shared prefixes.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Seconds running requests may take to finish after SIGTERM/Ctrl-C.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_grace: f64,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `--step-rows` on CUDA unless told: on an H100 with 64 streams of
/// 128-token prompts, 256 / 512 / 1024 / 2048 / 8192 rows a step gave 5,812 /
/// 6,333 / 6,543 / 6,524 / 6,337 output tok/s and 6,775 / 7,191 / 7,851 /
/// 9,483 / 16,634 decode tok/s (docs/SERVER.md): 2048 keeps most of the
/// output rate's gain and more of the decode rate's without the largest
/// sizes' time to first token.
const GPU_STEP_ROWS: usize = 2048;

/// What the engine thread reports once the model and KV pool are ready.
struct Ready {
    tokenizer: Arc<Tokenizer>,
    template: Result<Arc<ChatTemplate>, String>,
    config: SchedulerConfig,
    vocab_size: usize,
    kv_bytes: usize,
}

/// Parses `512M`, `2G`, `1.5G`, `4096K` or a byte count (binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return Err(format!("--kv-memory {s}: unknown unit '{c}' (K, M, G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("--kv-memory {s}: not a size (e.g. 512M, 2G)"))?;
    if !x.is_finite() || x <= 0.0 || x * mult as f64 > usize::MAX as f64 / 2.0 {
        return Err(format!("--kv-memory {s}: out of range"));
    }
    Ok((x * mult as f64) as usize)
}

/// The id a model is served under: its file name without `.gguf`, or the
/// known name it was asked for by.
fn model_id(model: &str) -> String {
    let p = Path::new(model);
    match (p.exists(), p.file_name()) {
        (true, Some(name)) => name.to_string_lossy().trim_end_matches(".gguf").to_string(),
        _ => model.to_string(),
    }
}

pub fn serve(args: &ServeArgs) -> Result<(), String> {
    if args.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    let kv_memory = args.kv_memory.as_deref().map(parse_size).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening address: {e}"))?;

    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Arc::new(EngineHandle::new(tx, metrics.clone()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Ready, String>>();
    let thread_args = args.clone();
    let thread_engine = engine.clone();
    let engine_thread = std::thread::Builder::new()
        .name("smelt-engine".into())
        .spawn(move || {
            let loaded = match load(&thread_args.model, &thread_args.model_args) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let Loaded {
                model,
                tokenizer,
                template,
                ctx,
            } = loaded;
            let tokenizer = Arc::new(tokenizer);
            if let Ok(t) = &template {
                crate::load::note_fallback(t);
            }
            let template = template.map(Arc::new);
            let on_gpu = matches!(model, crate::load::AnyModel::Cuda(_));
            with_model!(&model, |m| {
                let kv_type = thread_args.model_args.kv_type();
                let block_bytes = m.kv_layout(1, kv_type).bytes().unwrap_or(usize::MAX).max(1);
                let bs = m.kv_block_size();
                let mut config = SchedulerConfig::for_parallel(ctx, thread_args.parallel, bs);
                config.kv_type = kv_type;
                let default_rows = if on_gpu {
                    GPU_STEP_ROWS
                } else {
                    config.max_step_rows
                };
                config.max_step_rows = thread_args.step_rows.unwrap_or(default_rows).max(1);
                config.prefix_cache = !thread_args.no_prefix_cache;
                if let Some(bytes) = kv_memory {
                    config.n_blocks = bytes / block_bytes;
                    let one = ctx.div_ceil(bs);
                    if config.n_blocks < one {
                        let msg = format!(
                            "--kv-memory {}: holds {} positions but one sequence of --ctx {ctx} \
                             needs {} bytes; raise --kv-memory or lower --ctx",
                            thread_args.kv_memory.as_deref().unwrap_or(""),
                            config.n_blocks * bs,
                            one * block_bytes
                        );
                        let _ = ready_tx.send(Err(msg));
                        return;
                    }
                }
                let vocab_size = m.config.vocab_size;
                let tk = tokenizer.clone();
                smelt_server::run_engine(m, &tk, config, rx, thread_engine, |r| {
                    let _ = ready_tx.send(r.map(|config| Ready {
                        kv_bytes: config.n_blocks * block_bytes,
                        tokenizer: tokenizer.clone(),
                        template: template.clone(),
                        config,
                        vocab_size,
                    }));
                });
            })
        })
        .map_err(|e| format!("engine thread: {e}"))?;
    let ready = ready_rx
        .recv()
        .map_err(|_| "the engine thread stopped while loading".to_string())??;

    let id = args.alias.clone().unwrap_or_else(|| model_id(&args.model));
    let mut aliases = vec![args.model.clone()];
    aliases.retain(|a| *a != id);
    let cfg = &ready.config;
    eprintln!(
        "smelt serve: {id}: {} sequences of up to {} tokens, KV pool {} blocks ({:.0} MiB), \
         prefix cache {}",
        cfg.max_running,
        cfg.max_seq_len,
        cfg.n_blocks,
        ready.kv_bytes as f64 / (1 << 20) as f64,
        if cfg.prefix_cache { "on" } else { "off" },
    );
    let state = Arc::new(AppState {
        model_id: id,
        aliases,
        tokenizer: ready.tokenizer,
        template: ready.template,
        max_seq_len: cfg.max_seq_len,
        vocab_size: ready.vocab_size,
        max_queue: args.queue,
        api_key: args.api_key.clone(),
        engine: engine.clone(),
        metrics,
        shutting_down: Default::default(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    // The line scripts wait for (with --port 0 it names the port chosen).
    eprintln!("smelt serve: listening on http://{local}");
    let grace = Duration::from_secs_f64(args.shutdown_grace.clamp(0.0, 3600.0));
    let served = runtime.block_on(smelt_server::serve(
        listener,
        state,
        smelt_server::shutdown_signal(),
        grace,
    ));
    engine.command(Command::Stop);
    let _ = engine_thread.join();
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("smelt serve: stopped");
    served.map_err(|e| format!("server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "12Q", "-1G", "M", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
