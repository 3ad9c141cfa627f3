//! What a benchmark run found, and its two renderings: the human table
//! (llama-bench's columns plus Smelt's extra lines) and one JSON document.

use std::fmt::Write;

use smelt_model::KvType;

use super::footprint::TokenBytes;
use super::json::Json;
use super::system::SystemInfo;
use crate::membw::MemBandwidth;

/// Repeated measurements of one quantity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub samples: Vec<f64>,
    /// CPUs' worth of time other processes took while these were measured
    /// (None: not known).
    pub other_cpu: Option<f64>,
}

impl Stats {
    pub fn new(samples: Vec<f64>) -> Stats {
        Stats {
            samples,
            other_cpu: None,
        }
    }

    pub fn mean(&self) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        self.samples.iter().sum::<f64>() / self.samples.len() as f64
    }

    /// Sample standard deviation (n − 1), 0 for a single sample.
    pub fn sd(&self) -> f64 {
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        let ss: f64 = self.samples.iter().map(|v| (v - m) * (v - m)).sum();
        (ss / (n - 1) as f64).sqrt()
    }

    /// Middle value (mean of the two middle ones for an even count).
    pub fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    fn json(&self) -> Json {
        let fold = |f: fn(f64, f64) -> f64, init: f64| {
            if self.samples.is_empty() {
                f64::NAN
            } else {
                self.samples.iter().copied().fold(init, f)
            }
        };
        Json::Obj(vec![
            ("mean", Json::Num(self.mean())),
            ("sd", Json::Num(self.sd())),
            ("median", Json::Num(self.median())),
            ("min", Json::Num(fold(f64::min, f64::INFINITY))),
            ("max", Json::Num(fold(f64::max, f64::NEG_INFINITY))),
            (
                "samples",
                Json::Arr(self.samples.iter().map(|&v| Json::Num(v)).collect()),
            ),
            ("other_cpu", Json::opt(self.other_cpu, Json::Num)),
        ])
    }
}

/// Which llama-bench test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    /// Prompt processing (`pp<N>`).
    Prompt,
    /// Token generation (`tg<N>`).
    Decode,
}

/// One test's speeds.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub kind: TestKind,
    pub n_tokens: usize,
    /// Tokens per second, one sample per repetition.
    pub tok_s: Stats,
}

impl TestResult {
    /// llama-bench's name: `pp512`, `tg128`.
    pub fn name(&self) -> String {
        match self.kind {
            TestKind::Prompt => format!("pp{}", self.n_tokens),
            TestKind::Decode => format!("tg{}", self.n_tokens),
        }
    }
}

/// Everything measured with one CPU thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadRun {
    /// "cpu", or "cuda" for a GPU run (threads is then 0).
    pub backend: &'static str,
    pub threads: usize,
    pub load_ms: Stats,
    pub kv_alloc_ms: Stats,
    pub tests: Vec<TestResult>,
    pub ttft_ms: Option<Stats>,
    pub membw: Option<MemBandwidth>,
}

/// The reference-backend decode baseline and the CPU backend's speed-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pub backend: &'static str,
    pub n_tokens: usize,
    pub reference: Stats,
    /// CPU decode of the same length, per thread count.
    pub cpu: Vec<(usize, Stats)>,
}

/// The model file under test.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub arch: String,
    pub quant: String,
    pub params: u64,
    pub file_bytes: u64,
}

/// A whole `smelt bench` run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub model: ModelInfo,
    pub system: SystemInfo,
    pub load_avg_before: Option<[f64; 3]>,
    pub load_avg_after: Option<[f64; 3]>,
    pub ctx: usize,
    pub kv_cache_bytes: u64,
    pub kv_type: KvType,
    pub reps: usize,
    pub seed: u64,
    pub token_bytes: TokenBytes,
    pub tokenizer_load_ms: Stats,
    /// Tokens of the rendered TTFT chat prompt (0: no TTFT test).
    pub ttft_prompt_tokens: usize,
    /// Tokens of its user message alone.
    pub ttft_message_tokens: usize,
    pub runs: Vec<ThreadRun>,
    pub baseline: Option<Baseline>,
    pub peak_rss_bytes: Option<u64>,
}

/// Decimal units, as llama.cpp and memory vendors count.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

impl Report {
    /// Decode tokens/s the memory bandwidth allows: bandwidth ÷ bytes per token.
    pub fn roofline_tok_s(&self, run: &ThreadRun) -> Option<f64> {
        let bw = run.membw.as_ref()?;
        Some(bw.gb_per_s * 1e9 / self.token_bytes.total().max(1) as f64)
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.model;
        let sys = &self.system;
        let _ = writeln!(s, "model:   {} ({})", m.name, m.path);
        let _ = writeln!(
            s,
            "         {} {}, {:.1} M params, file {}; {} read per decoded token",
            m.arch,
            m.quant,
            m.params as f64 / 1e6,
            human_bytes(m.file_bytes),
            human_bytes(self.token_bytes.total())
        );
        let _ = writeln!(
            s,
            "machine: {}, {} logical CPUs ({} physical cores); ISA: {}",
            sys.cpu,
            sys.logical_cpus,
            sys.physical_cores,
            if sys.isa.is_empty() {
                "-".to_string()
            } else {
                sys.isa.join(" ")
            }
        );
        let load = |l: Option<[f64; 3]>| l.map_or("?".to_string(), |l| format!("{:.2}", l[0]));
        let _ = writeln!(
            s,
            "         load average (1 min) {} before, {} after",
            load(self.load_avg_before),
            load(self.load_avg_after)
        );
        let _ = writeln!(
            s,
            "run:     {} repetitions after 1 warm-up each, seed {}, context {} tokens (KV cache {}, {:?})",
            self.reps,
            self.seed,
            self.ctx,
            human_bytes(self.kv_cache_bytes),
            self.kv_type
        );
        s.push('\n');

        let size = format!("{:.2} MiB", m.file_bytes as f64 / (1u64 << 20) as f64);
        let params = format!("{:.2} M", m.params as f64 / 1e6);
        let model = format!("{} {}", m.arch, m.quant);
        let mut rows: Vec<[String; 5]> = Vec::new();
        for run in &self.runs {
            for t in &run.tests {
                rows.push([
                    run.backend.into(),
                    run.threads.to_string(),
                    t.name(),
                    speed(&t.tok_s),
                    others(&t.tok_s),
                ]);
            }
        }
        if let Some(b) = &self.baseline {
            for (threads, st) in &b.cpu {
                rows.push([
                    "cpu".into(),
                    threads.to_string(),
                    format!("tg{}", b.n_tokens),
                    speed(st),
                    others(st),
                ]);
            }
            rows.push([
                b.backend.into(),
                "1".into(),
                format!("tg{}", b.n_tokens),
                speed(&b.reference),
                others(&b.reference),
            ]);
        }
        let header = [
            "model", "size", "params", "backend", "threads", "test", "t/s", "others",
        ];
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        let fixed = [&model, &size, &params];
        for (w, v) in widths.iter_mut().zip(fixed) {
            *w = (*w).max(v.len());
        }
        for r in &rows {
            for (w, v) in widths[3..].iter_mut().zip(r) {
                *w = (*w).max(v.chars().count());
            }
        }
        let line = |s: &mut String, cells: [&str; 8]| {
            s.push('|');
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                // Numbers right-aligned, as llama-bench prints them.
                if matches!(i, 1 | 2 | 4 | 6 | 7) {
                    let _ = write!(s, " {c:>w$} |");
                } else {
                    let _ = write!(s, " {c:<w$} |");
                }
            }
            s.push('\n');
        };
        line(&mut s, header);
        s.push('|');
        for (i, w) in widths.iter().enumerate() {
            let dashes = "-".repeat(*w);
            if matches!(i, 1 | 2 | 4 | 6 | 7) {
                let _ = write!(s, " {dashes}:|");
            } else {
                let _ = write!(s, " {dashes} |");
            }
        }
        s.push('\n');
        for r in &rows {
            line(
                &mut s,
                [&model, &size, &params, &r[0], &r[1], &r[2], &r[3], &r[4]],
            );
        }
        let _ = writeln!(
            s,
            "(others: CPUs' worth of time other processes took during the test; \
             above ~0.05 the numbers are disturbed)"
        );
        s.push('\n');

        for run in &self.runs {
            if run.backend == "cpu" {
                let _ = writeln!(s, "cpu, {}:", threads_word(run.threads));
            } else {
                let _ = writeln!(s, "{}:", run.backend);
            }
            let _ = writeln!(
                s,
                "  load (open → model ready)  {:.1} ms median; KV cache allocation {:.1} ms",
                run.load_ms.median(),
                run.kv_alloc_ms.median()
            );
            if let Some(t) = &run.ttft_ms {
                let _ = writeln!(
                    s,
                    "  TTFT (chat: {}-token message, {}-token prompt) {:.1} ms median (min {:.1})",
                    self.ttft_message_tokens,
                    self.ttft_prompt_tokens,
                    t.median(),
                    t.samples.iter().copied().fold(f64::INFINITY, f64::min)
                );
            }
            if let (Some(bw), Some(roof)) = (&run.membw, self.roofline_tok_s(run)) {
                let _ = writeln!(
                    s,
                    "  memory read {:.1} GB/s ({}, best of {}, others {}) ÷ {} per token = roofline {:.0} tok/s",
                    bw.gb_per_s,
                    if run.backend == "cpu" {
                        threads_word(bw.threads)
                    } else {
                        "device memory".into()
                    },
                    bw.passes_gb_per_s.len(),
                    bw.other_cpu.map_or("?".to_string(), |c| format!("{c:.2}")),
                    human_bytes(self.token_bytes.total()),
                    roof
                );
                for t in run.tests.iter().filter(|t| t.kind == TestKind::Decode) {
                    let _ = writeln!(
                        s,
                        "  {} reaches {:.1} % of the roofline",
                        t.name(),
                        100.0 * t.tok_s.mean() / roof
                    );
                }
            }
        }
        if let Some(b) = &self.baseline {
            for (threads, st) in &b.cpu {
                let _ = writeln!(
                    s,
                    "baseline: cpu ({}) decodes {:.1}× as fast as the {} backend (tg{})",
                    threads_word(*threads),
                    st.mean() / b.reference.mean(),
                    b.backend,
                    b.n_tokens
                );
            }
        }
        let _ = writeln!(
            s,
            "tokenizer load {}; peak RSS {} (includes the mapped model file)",
            if self.tokenizer_load_ms.samples.is_empty() {
                "none (the file has no vocabulary)".to_string()
            } else {
                format!("{:.1} ms median", self.tokenizer_load_ms.median())
            },
            self.peak_rss_bytes.map_or("?".to_string(), human_bytes)
        );
        s
    }

    /// The report as one JSON document.
    pub fn json(&self) -> Json {
        let m = &self.model;
        let sys = &self.system;
        let tb = &self.token_bytes;
        let load = |l: Option<[f64; 3]>| {
            Json::opt(l, |l| Json::Arr(l.iter().map(|&v| Json::Num(v)).collect()))
        };
        let runs = self
            .runs
            .iter()
            .map(|run| {
                let roof = self.roofline_tok_s(run);
                let tests = run
                    .tests
                    .iter()
                    .map(|t| {
                        let share = match (t.kind, roof) {
                            (TestKind::Decode, Some(r)) => Json::Num(t.tok_s.mean() / r),
                            _ => Json::Null,
                        };
                        Json::Obj(vec![
                            ("test", Json::Str(t.name())),
                            ("n_tokens", Json::int(t.n_tokens as u64)),
                            ("tok_s", t.tok_s.json()),
                            ("roofline_share", share),
                        ])
                    })
                    .collect();
                Json::Obj(vec![
                    ("backend", Json::str(run.backend)),
                    ("threads", Json::int(run.threads as u64)),
                    ("load_ms", run.load_ms.json()),
                    ("kv_alloc_ms", run.kv_alloc_ms.json()),
                    ("ttft_ms", Json::opt(run.ttft_ms.as_ref(), Stats::json)),
                    (
                        "membw",
                        Json::opt(run.membw.as_ref(), |bw| {
                            Json::Obj(vec![
                                ("gb_per_s", Json::Num(bw.gb_per_s)),
                                (
                                    "passes_gb_per_s",
                                    Json::Arr(
                                        bw.passes_gb_per_s.iter().map(|&v| Json::Num(v)).collect(),
                                    ),
                                ),
                                ("bytes", Json::int(bw.bytes as u64)),
                                ("threads", Json::int(bw.threads as u64)),
                                ("other_cpu", Json::opt(bw.other_cpu, Json::Num)),
                            ])
                        }),
                    ),
                    ("roofline_tok_s", Json::opt(roof, Json::Num)),
                    ("tests", Json::Arr(tests)),
                ])
            })
            .collect();
        let baseline = Json::opt(self.baseline.as_ref(), |b| {
            Json::Obj(vec![
                ("backend", Json::str(b.backend)),
                ("test", Json::Str(format!("tg{}", b.n_tokens))),
                ("reference_tok_s", b.reference.json()),
                (
                    "cpu",
                    Json::Arr(
                        b.cpu
                            .iter()
                            .map(|(threads, st)| {
                                Json::Obj(vec![
                                    ("threads", Json::int(*threads as u64)),
                                    ("tok_s", st.json()),
                                    ("speedup", Json::Num(st.mean() / b.reference.mean())),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ])
        });
        Json::Obj(vec![
            ("smelt_bench_version", Json::int(1u64)),
            (
                "model",
                Json::Obj(vec![
                    ("name", Json::str(&m.name)),
                    ("path", Json::str(&m.path)),
                    ("arch", Json::str(&m.arch)),
                    ("quant", Json::str(&m.quant)),
                    ("params", Json::int(m.params)),
                    ("file_bytes", Json::int(m.file_bytes)),
                ]),
            ),
            (
                "system",
                Json::Obj(vec![
                    ("cpu", Json::str(&sys.cpu)),
                    ("logical_cpus", Json::int(sys.logical_cpus as u64)),
                    ("physical_cores", Json::int(sys.physical_cores as u64)),
                    ("isa", Json::Arr(sys.isa.iter().map(Json::str).collect())),
                    ("load_avg_before", load(self.load_avg_before)),
                    ("load_avg_after", load(self.load_avg_after)),
                ]),
            ),
            ("repetitions", Json::int(self.reps as u64)),
            ("seed", Json::int(self.seed)),
            ("ctx", Json::int(self.ctx as u64)),
            ("kv_cache_bytes", Json::int(self.kv_cache_bytes)),
            (
                "kv_type",
                Json::str(format!("{:?}", self.kv_type).to_lowercase()),
            ),
            (
                "bytes_per_token",
                Json::Obj(vec![
                    ("layer_matrices", Json::int(tb.layer_matrices)),
                    ("output_matrix", Json::int(tb.output_matrix)),
                    ("norms_and_biases", Json::int(tb.norms_and_biases)),
                    ("embedding_row", Json::int(tb.embedding_row)),
                    ("total", Json::int(tb.total())),
                ]),
            ),
            ("tokenizer_load_ms", self.tokenizer_load_ms.json()),
            (
                "ttft_message_tokens",
                Json::int(self.ttft_message_tokens as u64),
            ),
            (
                "ttft_prompt_tokens",
                Json::int(self.ttft_prompt_tokens as u64),
            ),
            ("peak_rss_bytes", Json::opt(self.peak_rss_bytes, Json::int)),
            ("runs", Json::Arr(runs)),
            ("baseline", baseline),
        ])
    }
}

/// Other processes' CPU use during a measurement, in CPUs.
fn others(st: &Stats) -> String {
    st.other_cpu.map_or("?".to_string(), |c| format!("{c:.2}"))
}

/// "1 thread", "2 threads".
fn threads_word(n: usize) -> String {
    if n == 1 {
        "1 thread".to_string()
    } else {
        format!("{n} threads")
    }
}

/// `mean ± sd` tokens per second.
fn speed(st: &Stats) -> String {
    format!("{:.2} ± {:.2}", st.mean(), st.sd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_few_samples() {
        let s = Stats::new(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.mean(), 2.5);
        assert_eq!(s.median(), 2.5);
        // Sample variance of 1..4 is 5/3.
        assert!((s.sd() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let one = Stats::new(vec![7.0]);
        assert_eq!((one.mean(), one.sd(), one.median()), (7.0, 0.0, 7.0));
        assert!(Stats::default().mean().is_nan());
    }

    fn sample_report() -> Report {
        let stats = |v: &[f64]| Stats {
            samples: v.to_vec(),
            other_cpu: Some(0.01),
        };
        Report {
            model: ModelInfo {
                name: "m".into(),
                path: "/m.gguf".into(),
                arch: "llama".into(),
                quant: "Q4_1".into(),
                params: 134_515_008,
                file_bytes: 98_362_432,
            },
            system: SystemInfo {
                cpu: "cpu".into(),
                logical_cpus: 2,
                physical_cores: 2,
                isa: vec!["avx2"],
            },
            load_avg_before: Some([0.1, 0.2, 0.3]),
            load_avg_after: None,
            ctx: 512,
            kv_cache_bytes: 1 << 20,
            kv_type: KvType::F16,
            reps: 2,
            seed: 1,
            token_bytes: TokenBytes {
                layer_matrices: 60_000_000,
                output_matrix: 30_000_000,
                norms_and_biases: 9_999_000,
                embedding_row: 1_000,
            },
            tokenizer_load_ms: stats(&[10.0, 12.0]),
            ttft_prompt_tokens: 46,
            ttft_message_tokens: 16,
            runs: vec![ThreadRun {
                backend: "cpu",
                threads: 2,
                load_ms: stats(&[4.0, 5.0]),
                kv_alloc_ms: stats(&[0.5, 0.5]),
                tests: vec![
                    TestResult {
                        kind: TestKind::Prompt,
                        n_tokens: 512,
                        tok_s: stats(&[190.0, 210.0]),
                    },
                    TestResult {
                        kind: TestKind::Decode,
                        n_tokens: 128,
                        tok_s: stats(&[50.0, 50.0]),
                    },
                ],
                ttft_ms: Some(stats(&[80.0, 90.0])),
                membw: Some(MemBandwidth {
                    gb_per_s: 25.0,
                    passes_gb_per_s: vec![24.0, 25.0],
                    bytes: 1 << 30,
                    threads: 2,
                    other_cpu: Some(0.0),
                }),
            }],
            baseline: Some(Baseline {
                backend: "reference",
                n_tokens: 16,
                reference: stats(&[5.0, 5.0]),
                cpu: vec![(2, stats(&[55.0, 45.0]))],
            }),
            peak_rss_bytes: Some(150_000_000),
        }
    }

    #[test]
    fn roofline_is_bandwidth_over_bytes_per_token() {
        let r = sample_report();
        // 25 GB/s over 100 MB per token.
        let roof = r.roofline_tok_s(&r.runs[0]).unwrap();
        assert!((roof - 250.0).abs() < 1e-9, "{roof}");
        let table = r.table();
        assert!(
            table.contains("| cpu       |       2 | pp512 | 200.00 ± 14.14 |   0.01 |"),
            "{table}"
        );
        assert!(table.contains("roofline 250 tok/s"), "{table}");
        assert!(
            table.contains("tg128 reaches 20.0 % of the roofline"),
            "{table}"
        );
        assert!(
            table.contains("decodes 10.0× as fast as the reference backend (tg16)"),
            "{table}"
        );
        assert!(
            table.contains("TTFT (chat: 16-token message, 46-token prompt) 85.0 ms"),
            "{table}"
        );
        let json = r.json().pretty();
        assert!(json.contains("\"roofline_share\": 0.2"), "{json}");
        assert!(json.contains("\"roofline_tok_s\": 250"), "{json}");
        assert!(json.contains("\"speedup\": 10"), "{json}");
        assert!(json.contains("\"total\": 100000000"), "{json}");
    }
}
