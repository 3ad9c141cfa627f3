//! `/metrics` in the Prometheus text format: request and token counters, the
//! queue and the KV pool, the prefix cache hit rate, and latency histograms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use smelt_engine::{SchedulerStats, StepReport};

/// Bucket bounds (seconds) of the time-to-first-token histogram.
const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds (seconds) of the time-per-output-token histogram.
const TPOT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A cumulative histogram.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, secs: f64, times: u64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if secs <= *b {
                *c += times;
            }
        }
        self.sum += secs * times as f64;
        self.count += times;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    /// `(endpoint, status)` → responses.
    requests: BTreeMap<(String, u16), u64>,
    /// finish reason → sequences.
    finished: BTreeMap<&'static str, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cancelled: u64,
    steps: u64,
    step_rows: u64,
    /// Seconds in forward passes, and in whole steps (forward + sampling + delivery).
    forward_seconds: f64,
    step_seconds: f64,
    ttft: Histogram,
    tpot: Histogram,
    engine: SchedulerStats,
    queued: usize,
}

/// Everything `/metrics` reports; shared by the handlers and the engine thread.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                finished: BTreeMap::new(),
                prompt_tokens: 0,
                completion_tokens: 0,
                cancelled: 0,
                steps: 0,
                step_rows: 0,
                forward_seconds: 0.0,
                step_seconds: 0.0,
                ttft: Histogram::new(TTFT_BUCKETS),
                tpot: Histogram::new(TPOT_BUCKETS),
                engine: SchedulerStats::default(),
                queued: 0,
            }),
        }
    }
}

/// The OpenAI name of a finish reason.
pub fn finish_name(f: smelt_engine::FinishReason) -> &'static str {
    use smelt_engine::FinishReason::*;
    match f {
        EndOfGeneration | StopString => "stop",
        Length | ContextFull => "length",
        Cancelled => "cancelled",
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one response of `endpoint` with `status`.
    pub fn request(&self, endpoint: &str, status: u16) {
        *self
            .lock()
            .requests
            .entry((endpoint.to_owned(), status))
            .or_default() += 1;
    }

    /// Records what one engine step did, `step_time` being its whole duration.
    pub fn step(&self, report: &StepReport, step_time: Duration) {
        let mut m = self.lock();
        if report.rows > 0 {
            m.steps += 1;
            m.step_rows += report.rows as u64;
            m.forward_seconds += report.forward_time.as_secs_f64();
            m.step_seconds += step_time.as_secs_f64();
        }
        // Every decode row waited one step for its token.
        m.tpot
            .observe(step_time.as_secs_f64(), report.decode_rows as u64);
        for t in &report.first_tokens {
            m.ttft.observe(t.as_secs_f64(), 1);
        }
        for s in &report.finished {
            m.prompt_tokens += s.prompt_tokens as u64;
            m.completion_tokens += s.completion_tokens as u64;
            *m.finished.entry(finish_name(s.finish)).or_default() += 1;
        }
        m.cancelled += report.cancelled as u64;
    }

    /// The engine's pool and queue after a step.
    pub fn engine_state(&self, stats: SchedulerStats, queued: usize) {
        let mut m = self.lock();
        m.engine = stats;
        m.queued = queued;
    }

    /// The engine's latest pool and queue counts.
    pub fn snapshot(&self) -> (SchedulerStats, usize) {
        let m = self.lock();
        (m.engine, m.queued)
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let e = &m.engine;
        metric(
            "smelt_prompt_tokens_total",
            "counter",
            "Prompt tokens of finished requests.",
            m.prompt_tokens.to_string(),
        );
        metric(
            "smelt_generation_tokens_total",
            "counter",
            "Tokens generated by finished requests.",
            m.completion_tokens.to_string(),
        );
        metric(
            "smelt_cancelled_total",
            "counter",
            "Sequences dropped because their client went away.",
            m.cancelled.to_string(),
        );
        metric(
            "smelt_steps_total",
            "counter",
            "Forward passes run.",
            m.steps.to_string(),
        );
        metric(
            "smelt_step_rows_total",
            "counter",
            "Rows (tokens) in all forward passes.",
            m.step_rows.to_string(),
        );
        metric(
            "smelt_forward_seconds_total",
            "counter",
            "Time in forward passes.",
            m.forward_seconds.to_string(),
        );
        metric(
            "smelt_step_seconds_total",
            "counter",
            "Time in engine steps (forward pass, sampling, detokenizing, delivery).",
            m.step_seconds.to_string(),
        );
        metric(
            "smelt_queue_depth",
            "gauge",
            "Requests waiting for a running slot or KV blocks.",
            m.queued.to_string(),
        );
        metric(
            "smelt_running_sequences",
            "gauge",
            "Sequences in the batch.",
            e.running.to_string(),
        );
        metric(
            "smelt_kv_blocks_total",
            "gauge",
            "KV cache blocks in the pool.",
            e.kv_blocks_total.to_string(),
        );
        metric(
            "smelt_kv_blocks_free",
            "gauge",
            "KV blocks on the free list.",
            e.kv_blocks_free.to_string(),
        );
        metric(
            "smelt_kv_blocks_in_use",
            "gauge",
            "KV blocks held privately by sequences (0 when idle: no leak).",
            e.kv_blocks_private.to_string(),
        );
        metric(
            "smelt_kv_blocks_cached",
            "gauge",
            "KV blocks owned by the prefix cache.",
            e.kv_blocks_cached.to_string(),
        );
        metric(
            "smelt_kv_blocks_cached_idle",
            "gauge",
            "Prefix-cache blocks no sequence uses (evictable).",
            e.kv_blocks_cached_idle.to_string(),
        );
        metric(
            "smelt_prefix_cache_query_tokens_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            e.prefix_query_tokens.to_string(),
        );
        metric(
            "smelt_prefix_cache_hit_tokens_total",
            "counter",
            "Prompt tokens whose KV came from the prefix cache.",
            e.prefix_hit_tokens.to_string(),
        );
        let rate = if e.prefix_query_tokens == 0 {
            0.0
        } else {
            e.prefix_hit_tokens as f64 / e.prefix_query_tokens as f64
        };
        metric(
            "smelt_prefix_cache_hit_rate",
            "gauge",
            "Share of prompt tokens served from the prefix cache.",
            format!("{rate}"),
        );
        let _ = writeln!(
            out,
            "# HELP smelt_requests_total HTTP responses by endpoint and status.\n\
             # TYPE smelt_requests_total counter"
        );
        for ((endpoint, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "smelt_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP smelt_finished_total Sequences finished, by finish reason.\n\
             # TYPE smelt_finished_total counter"
        );
        for (reason, n) in &m.finished {
            let _ = writeln!(out, "smelt_finished_total{{reason=\"{reason}\"}} {n}");
        }
        m.ttft.render(
            &mut out,
            "smelt_time_to_first_token_seconds",
            "From arrival to the first generated token.",
        );
        m.tpot.render(
            &mut out,
            "smelt_time_per_output_token_seconds",
            "Time between consecutive tokens of a stream (one step).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_text_is_prometheus() {
        let m = Metrics::default();
        let report = StepReport {
            rows: 5,
            decode_rows: 3,
            first_tokens: vec![Duration::from_millis(30), Duration::from_secs(2)],
            ..StepReport::default()
        };
        m.step(&report, Duration::from_millis(20));
        m.request("/v1/chat/completions", 200);
        m.request("/v1/chat/completions", 200);
        let text = m.render();
        assert!(text.contains("smelt_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("smelt_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("smelt_time_to_first_token_seconds_bucket{le=\"2.5\"} 2"));
        assert!(text.contains("smelt_time_to_first_token_seconds_count 2"));
        assert!(text.contains("smelt_time_per_output_token_seconds_bucket{le=\"0.025\"} 3"));
        assert!(text.contains("smelt_time_per_output_token_seconds_bucket{le=\"0.01\"} 0"));
        assert!(
            text.contains(
                "smelt_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2"
            )
        );
        assert!(text.contains("smelt_step_rows_total 5"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("a value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
