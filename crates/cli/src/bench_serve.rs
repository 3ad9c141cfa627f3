//! `smelt bench-serve MODEL`: the server under concurrent streams. Starts
//! `smelt serve` (this same binary) on a free loopback port, then for each
//! concurrency level runs that many streaming clients over plain HTTP/1.1
//! with fixed prompt and output lengths, and reports aggregate output tok/s
//! and the p50/p99 time to first token. Prompts count upwards ("1, 2, 3,
//! ..."), which the model continues without stopping, so every stream
//! produces its full output; each starts at a different number so prompts
//! do not share a prefix.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `smelt bench-serve` flags.
#[derive(Args, Debug, Clone)]
pub struct BenchServeArgs {
    /// A GGUF file, a Hugging Face model directory, or a known model name.
    pub model: String,
    /// Concurrent streams to measure, comma-separated.
    #[arg(short = 'c', long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Prompt tokens per request.
    #[arg(short = 'p', long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Output tokens per request.
    #[arg(short = 'n', long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// Requests per level, as a multiple of its concurrency (at least 4).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Extra flags for `smelt serve` (e.g. "--device cpu -t 2").
    #[arg(long, default_value = "")]
    pub serve_args: String,
    // Passed on to `smelt serve`.
    #[command(flatten)]
    pub q8: crate::args::Q8Flag,
}

/// One request's timings.
struct Sample {
    ttft: Duration,
    /// Mean time between tokens after the first.
    tpot: Duration,
    tokens: usize,
}

/// One concurrency level's results.
pub struct Level {
    pub concurrency: usize,
    pub requests: usize,
    pub tokens: usize,
    pub wall: Duration,
    pub ttft_p50: Duration,
    pub ttft_p99: Duration,
    /// Median over requests of the mean time between tokens.
    pub tpot_p50: Duration,
    /// The engine's time in steps, and in forward passes, during the level.
    pub step_secs: f64,
    pub forward_secs: f64,
}

impl Level {
    /// Output tokens per second over the level's wall time.
    pub fn tok_per_s(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The aggregate decode rate while every stream is decoding:
    /// concurrency over the median time between tokens.
    pub fn decode_tok_per_s(&self) -> f64 {
        self.concurrency as f64 / self.tpot_p50.as_secs_f64().max(1e-9)
    }
}

/// The `q` quantile (nearest rank) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The server child, killed when dropped.
struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bench_serve(args: &BenchServeArgs) -> Result<(), String> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    if args.concurrency.contains(&0) || args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err("concurrency, --prompt-tokens and --gen-tokens must be at least 1".into());
    }
    let ctx = (args.prompt_tokens + args.gen_tokens).next_multiple_of(16);
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", &args.model, "--port", "0", "--host", "127.0.0.1"])
        .args(["--parallel", &max_c.to_string(), "--ctx", &ctx.to_string()])
        .args(["--queue", &(max_c * args.rounds.max(1) + 64).to_string()])
        .args(args.serve_args.split_whitespace())
        .args(args.q8.value.map(crate::args::Q8Arg::flag))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting smelt serve: {e}"))?;
    let stderr = child.stderr.take();
    let server = ServerChild(child);
    let mut addr = None;
    if let Some(stderr) = stderr {
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let line = line.map_err(|e| format!("server log: {e}"))?;
            eprintln!("{line}");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.trim().to_string());
                break;
            }
        }
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
    }
    let addr = addr.ok_or("smelt serve exited before listening")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let result = runtime.block_on(run_levels(&addr, args));
    drop(server);
    let levels = result?;

    outln!(
        "\nsmelt bench-serve {}: prompt {} tokens, output {} tokens per request",
        args.model,
        args.prompt_tokens,
        args.gen_tokens
    );
    outln!(
        "| streams | requests | output tok/s | TTFT p50 (ms) | TTFT p99 (ms) | ms/token p50 | decode tok/s | engine busy | forward share |"
    );
    outln!(
        "|--------:|---------:|-------------:|--------------:|--------------:|-------------:|-------------:|------------:|--------------:|"
    );
    for l in &levels {
        let wall = l.wall.as_secs_f64().max(1e-9);
        outln!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} % | {:.0} % |",
            l.concurrency,
            l.requests,
            l.tok_per_s(),
            l.ttft_p50.as_secs_f64() * 1e3,
            l.ttft_p99.as_secs_f64() * 1e3,
            l.tpot_p50.as_secs_f64() * 1e3,
            l.decode_tok_per_s(),
            100.0 * l.step_secs / wall,
            100.0 * l.forward_secs / l.step_secs.max(1e-9),
        );
    }
    if let Some(one) = levels.iter().find(|l| l.concurrency == 1) {
        for l in levels.iter().filter(|l| l.concurrency > 1) {
            outln!(
                "{} streams: output {:.2}x, decode {:.2}x the single-stream rate",
                l.concurrency,
                l.tok_per_s() / one.tok_per_s().max(1e-9),
                l.decode_tok_per_s() / one.decode_tok_per_s().max(1e-9)
            );
        }
    }
    Ok(())
}

/// Prompt token ids: a count from `start`, cut to `n` tokens.
async fn prompt(addr: &str, start: usize, n: usize) -> Result<Vec<u64>, String> {
    let mut text = String::new();
    let mut k = start;
    let mut tokens = Vec::new();
    while tokens.len() < n {
        while text.len() < n * 4 {
            text.push_str(&format!("{k}, "));
            k += 1;
        }
        let body = json!({"content": text, "add_special": true}).to_string();
        let (status, resp) = post(addr, "/tokenize", &body, |_| {}).await?;
        if status != 200 {
            return Err(format!("/tokenize answered {status}: {resp}"));
        }
        let v: Value = serde_json::from_str(&resp).map_err(|e| format!("/tokenize: {e}"))?;
        tokens = v["tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        text.push_str(&format!("{k}, "));
        k += 1;
    }
    tokens.truncate(n);
    Ok(tokens)
}

async fn run_levels(addr: &str, args: &BenchServeArgs) -> Result<Vec<Level>, String> {
    let mut levels = Vec::new();
    let mut next_start = 1usize;
    // Warm up: one short request.
    let model = Arc::new(model_id(addr).await?);
    let warm = prompt(addr, 7, args.prompt_tokens.min(32)).await?;
    one_request(addr, &model, &warm, 4).await?;
    for &c in &args.concurrency {
        let n = (c * args.rounds.max(1)).max(4);
        let mut prompts = Vec::with_capacity(n);
        for _ in 0..n {
            prompts.push(prompt(addr, next_start * 1000, args.prompt_tokens).await?);
            next_start += 1;
        }
        let prompts = Arc::new(prompts);
        let next = Arc::new(AtomicUsize::new(0));
        let before = engine_seconds(addr).await?;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..c {
            let (prompts, next, addr) = (prompts.clone(), next.clone(), addr.to_string());
            let model = model.clone();
            let gen_tokens = args.gen_tokens;
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = prompts.get(i) else {
                        return Ok::<_, String>(samples);
                    };
                    samples.push(one_request(&addr, &model, p, gen_tokens).await?);
                }
            }));
        }
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await.map_err(|e| format!("client task: {e}"))??);
        }
        let wall = t0.elapsed();
        let after = engine_seconds(addr).await?;
        let mut ttfts: Vec<Duration> = samples.iter().map(|s| s.ttft).collect();
        ttfts.sort();
        let mut tpots: Vec<Duration> = samples.iter().map(|s| s.tpot).collect();
        tpots.sort();
        let level = Level {
            concurrency: c,
            requests: samples.len(),
            tokens: samples.iter().map(|s| s.tokens).sum(),
            wall,
            ttft_p50: quantile(&ttfts, 0.5),
            ttft_p99: quantile(&ttfts, 0.99),
            tpot_p50: quantile(&tpots, 0.5),
            step_secs: after.0 - before.0,
            forward_secs: after.1 - before.1,
        };
        eprintln!(
            "bench-serve: {c} streams: {:.1} tok/s, TTFT p50 {:.0} ms",
            level.tok_per_s(),
            level.ttft_p50.as_secs_f64() * 1e3
        );
        levels.push(level);
    }
    Ok(levels)
}

/// One streaming completion; its time to first token and output tokens.
async fn one_request(
    addr: &str,
    model: &str,
    prompt: &[u64],
    max_tokens: usize,
) -> Result<Sample, String> {
    let body = json!({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true},
    })
    .to_string();
    let t0 = Instant::now();
    let mut first = None;
    let mut last = None;
    let mut tokens = 0;
    let mut pending = String::new();
    let (status, rest) = post(addr, "/v1/completions", &body, |data| {
        pending.push_str(data);
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(payload) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if payload == "[DONE]" {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(payload) {
                let text = v["choices"][0]["text"].as_str().unwrap_or("");
                if !text.is_empty() {
                    last = Some(t0.elapsed());
                    first = first.or(last);
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    tokens = n as usize;
                }
            }
        }
    })
    .await?;
    if status != 200 {
        return Err(format!("/v1/completions answered {status}: {rest}"));
    }
    let ttft = first.unwrap_or_else(|| t0.elapsed());
    let decode = last.unwrap_or(ttft).saturating_sub(ttft);
    Ok(Sample {
        ttft,
        tpot: decode / tokens.saturating_sub(1).max(1) as u32,
        tokens,
    })
}

/// POSTs `body` and feeds the response body to `on_data` as it arrives
/// (de-chunked); returns the status and, for non-200 answers or small
/// bodies, the body text.
async fn post(
    addr: &str,
    path: &str,
    body: &str,
    mut on_data: impl FnMut(&str),
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut head_end = None;
    let mut chunked = false;
    let mut status = 0;
    let mut pos = 0; // de-chunking cursor into buf (after the head)
    let mut text = String::new();
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        if head_end.is_none()
            && let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            chunked = head.contains("transfer-encoding: chunked");
            head_end = Some(i + 4);
            pos = i + 4;
        }
        if head_end.is_some() {
            if chunked {
                // Take every complete chunk: "<hex>\r\n<data>\r\n".
                while let Some(nl) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    let size_line = String::from_utf8_lossy(&buf[pos..pos + nl]).to_string();
                    let size = usize::from_str_radix(size_line.trim(), 16)
                        .map_err(|_| format!("bad chunk size {size_line:?}"))?;
                    let start = pos + nl + 2;
                    if buf.len() < start + size + 2 {
                        break;
                    }
                    let data = String::from_utf8_lossy(&buf[start..start + size]).to_string();
                    on_data(&data);
                    text.push_str(&data);
                    pos = start + size + 2;
                    if size == 0 {
                        return Ok((status, text));
                    }
                }
            } else if pos < buf.len() {
                let data = String::from_utf8_lossy(&buf[pos..]).to_string();
                on_data(&data);
                text.push_str(&data);
                pos = buf.len();
            }
        }
        if n == 0 {
            return Ok((status, text));
        }
    }
}

/// The engine's step and forward seconds so far, from `/metrics`.
async fn engine_seconds(addr: &str) -> Result<(f64, f64), String> {
    let text = get(addr, "/metrics").await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("smelt_step_seconds_total"),
        value("smelt_forward_seconds_total"),
    ))
}

/// The body of a GET (read to the end of the connection).
async fn get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&resp).into_owned())
}

/// The served model's id.
async fn model_id(addr: &str) -> Result<String, String> {
    let text = get(addr, "/v1/models").await?;
    let id = text
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| format!("no model id in /v1/models: {text}"))?
        .to_string();
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&x| Duration::from_millis(x))
                .collect::<Vec<_>>()
        };
        let d = ms(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(quantile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&d, 0.99), Duration::from_millis(100));
        assert_eq!(quantile(&d[..1], 0.5), Duration::from_millis(10));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
