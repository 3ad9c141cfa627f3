//! `smelt bench MODEL`: speed of the engine on this machine, with
//! llama-bench's conventions (`-p 512 -n 128 -r 5 -t N`, comma lists), plus
//! time to first token, load time, peak memory, the machine's memory read
//! bandwidth and decode as a share of the bandwidth roofline, and an optional
//! scalar reference-backend baseline. docs/PERF.md explains every number.

mod footprint;
mod json;
mod measure;
mod report;
mod system;

use std::io::Write as _;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use smelt_backend::ReferenceBackend;
use smelt_engine::Session;
use smelt_engine::rng::Rng;
use smelt_gguf::GgufFile;
use smelt_model::{KV_BLOCK_SIZE, KvType, Model, ModelConfig};
use smelt_text::chat_template::ChatMessage;
use smelt_text::tokenizer::Tokenizer;

use crate::args::{DeviceArg, KvTypeArg};
use crate::{fetch, load, membw};
use report::{Baseline, ModelInfo, Report, Stats, TestKind, TestResult, ThreadRun};

/// Words the TTFT user message is built from, as many as it takes to reach
/// the target prompt length.
const TTFT_WORDS: &str = "Please explain in a few short sentences how the gears of a bicycle \
    work and why riders change gears when they climb steep hills or ride fast on flat roads \
    near the sea on a sunny summer afternoon with friends";

/// Most threads one run may ask for (a typo guard, not a hardware limit).
const MAX_THREADS: usize = 1024;

/// Which slow backend to compare the CPU backend with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineBackend {
    /// The scalar, single-threaded reference backend.
    Reference,
}

/// `smelt bench` flags (llama-bench's where they exist).
#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// A GGUF file, or a known model name (`smollm2`, `qwen2.5-coder-0.5b`).
    pub model: String,
    /// Prompt lengths to time (pp<N>), comma-separated; 0 skips.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Decode lengths to time (tg<N>), comma-separated; 0 skips.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Timed repetitions of each test (after one warm-up).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// CPU thread counts, comma-separated (0: one per physical core).
    #[arg(short = 't', long, value_delimiter = ',', default_value = "0")]
    pub threads: Vec<usize>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also time decode on a slow backend and report the CPU backend's speed-up.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineBackend>,
    /// Decode length of the baseline comparison (both backends).
    #[arg(long, default_value_t = 16)]
    pub baseline_n: usize,
    /// Length in tokens of the TTFT chat message (the model's template adds
    /// its own framing and default system prompt); 0 skips TTFT.
    #[arg(long, default_value_t = 16)]
    pub ttft_tokens: usize,
    /// Size of the memory bandwidth buffer in MiB; 0 skips the measurement.
    #[arg(long, default_value_t = 1024)]
    pub membw_mib: usize,
    /// Passes over the bandwidth buffer; the fastest counts.
    #[arg(long, default_value_t = 5)]
    pub membw_passes: usize,
    /// KV cache element type.
    #[arg(long, value_enum, default_value_t = KvTypeArg::F16)]
    pub kv_type: KvTypeArg,
    /// Context size (0: just enough for the longest test).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Where the model runs: `cpu` (one run per -t thread count), `cuda`
    /// (one run on the GPU; the roofline is the device memory bandwidth), or
    /// `auto` (cuda where it is usable, else cpu).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub q8: crate::args::Q8Flag,
}

impl BenchArgs {
    /// Rejects flag values no run could use.
    pub fn validate(&self) -> Result<(), String> {
        if self.repetitions == 0 {
            return Err("-r/--repetitions must be at least 1".into());
        }
        if self.threads.iter().any(|&t| t > MAX_THREADS) {
            return Err(format!("-t/--threads: at most {MAX_THREADS} threads"));
        }
        if self.prompt_lengths().is_empty()
            && self.decode_lengths().is_empty()
            && self.ttft_tokens == 0
            && self.baseline.is_none()
        {
            return Err(
                "nothing to time: every -p and -n is 0, --ttft-tokens is 0 and there is no --baseline"
                    .into(),
            );
        }
        if self.baseline.is_some() && self.baseline_n == 0 {
            return Err("--baseline-n must be at least 1".into());
        }
        Ok(())
    }

    /// The engine's KV cache type.
    pub fn kv(&self) -> KvType {
        match self.kv_type {
            KvTypeArg::F16 => KvType::F16,
            KvTypeArg::F32 => KvType::F32,
        }
    }

    /// pp lengths to run, in order, without 0 and repeats.
    pub fn prompt_lengths(&self) -> Vec<usize> {
        dedup_nonzero(&self.n_prompt)
    }

    /// tg lengths to run, in order, without 0 and repeats.
    pub fn decode_lengths(&self) -> Vec<usize> {
        dedup_nonzero(&self.n_gen)
    }

    /// Context that fits every test: the longest prompt, one prompt token
    /// plus the longest decode, the TTFT prompt (`ttft_prompt` tokens).
    pub fn needed_ctx(&self, ttft_prompt: usize) -> usize {
        let pp = self.prompt_lengths().into_iter().max().unwrap_or(0);
        let tg = self.decode_lengths().into_iter().max().map_or(0, |n| n + 1);
        let base = self.baseline.map_or(0, |_| self.baseline_n + 1);
        pp.max(tg).max(base).max(ttft_prompt).max(1)
    }
}

fn dedup_nonzero(xs: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for &x in xs {
        if x != 0 && !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// `n` token ids drawn uniformly from the vocabulary.
fn random_tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % vocab.max(1) as u64) as u32)
        .collect()
}

/// The TTFT chat prompt: one user message of the fewest leading words of
/// [`TTFT_WORDS`] that make at least `target` tokens (at least one word),
/// rendered with the model's chat template. The templates of both reference
/// models add a default system prompt of their own, so the rendered prompt
/// is longer than the message.
pub struct TtftPrompt {
    pub text: String,
    /// Tokens of the user message alone.
    pub message_tokens: usize,
    /// Tokens of the whole rendered prompt, as the model reads it.
    pub prompt_tokens: usize,
}

fn ttft_prompt(
    file: &GgufFile,
    tokenizer: &Tokenizer,
    target: usize,
) -> Result<TtftPrompt, String> {
    let words: Vec<&str> = TTFT_WORDS.split_whitespace().collect();
    let mut k = 1;
    while k < words.len() && tokenizer.encode(&words[..k].join(" "), false, false).len() < target {
        k += 1;
    }
    let message = words[..k].join(" ");
    let message_tokens = tokenizer.encode(&message, false, false).len();
    let template = load::chat_template(file)?;
    let text = template
        .render(&[ChatMessage::new("user", message)], true)
        .map_err(|e| format!("chat template: {e}"))?;
    let prompt_tokens = tokenizer.encode(&text, false, true).len();
    Ok(TtftPrompt {
        text,
        message_tokens,
        prompt_tokens,
    })
}

/// Runs `f`, noting in its result how much CPU other processes took meanwhile.
fn watched<E>(f: impl FnOnce() -> Result<Stats, E>) -> Result<Stats, E> {
    let before = system::CpuTimes::now();
    let mut stats = f()?;
    stats.other_cpu = before
        .zip(system::CpuTimes::now())
        .and_then(|(a, b)| b.others_since(&a));
    Ok(stats)
}

/// Runs every test and prints the report.
pub fn bench(args: &BenchArgs) -> Result<(), String> {
    args.validate()?;
    let load_avg_before = system::load_average();
    let path = fetch::resolve(&args.model)?;
    if path.is_dir() {
        return Err(format!(
            "{}: smelt bench measures GGUF files (its byte and roofline figures are per stored \
             type); convert the directory first: smelt convert {} model.gguf --type f16",
            path.display(),
            path.display()
        ));
    }
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut file = GgufFile::open(&path).map_err(|e| at(&e))?;
    let config = ModelConfig::from_gguf(&file).map_err(|e| at(&e))?;
    let token_bytes = footprint::bytes_per_token(&file, &config).map_err(|e| at(&e))?;
    let (tokenizer, tokenizer_load_ms) =
        measure::tokenizer_load(&file, args.repetitions).map_err(|e| at(&e))?;
    let ttft = match (args.ttft_tokens, &tokenizer) {
        (0, _) => None,
        (n, Some(tokenizer)) => Some(ttft_prompt(&file, tokenizer, n)?),
        (_, None) => {
            if !args.json {
                eprintln!("smelt bench: the file has no vocabulary: no TTFT test");
            }
            None
        }
    };
    let cuda = match args.device {
        DeviceArg::Cpu => false,
        DeviceArg::Cuda => true,
        DeviceArg::Auto => {
            smelt_cuda::libraries_present() && smelt_cuda::CudaBackend::new().is_ok()
        }
    };
    // As `smelt run` does: the parsed vocabulary is dead weight from here on.
    load::release_vocab(&mut file);
    let file = Arc::new(file);
    let ttft_prompt_tokens = ttft.as_ref().map_or(0, |p| p.prompt_tokens);
    let ttft_message_tokens = ttft.as_ref().map_or(0, |p| p.message_tokens);
    let ctx = match args.ctx {
        0 => args.needed_ctx(ttft_prompt_tokens),
        c => c,
    };
    let kv_blocks = ctx.div_ceil(KV_BLOCK_SIZE);

    let mut rng = Rng::new(args.seed);
    let vocab = config.vocab_size;
    let prompts: Vec<Vec<u32>> = args
        .prompt_lengths()
        .into_iter()
        .map(|n| random_tokens(&mut rng, n, vocab))
        .collect();
    let decodes: Vec<Vec<u32>> = args
        .decode_lengths()
        .into_iter()
        .map(|n| random_tokens(&mut rng, n + 1, vocab))
        .collect();
    let baseline_tokens = random_tokens(&mut rng, args.baseline_n + 1, vocab);

    let say = |msg: String| {
        if !args.json {
            eprintln!("smelt bench: {msg}");
        }
    };
    let plan = Plan {
        args,
        prompts: &prompts,
        decodes: &decodes,
        ttft: ttft.as_ref().zip(tokenizer.as_ref()),
        baseline_tokens: &baseline_tokens,
        ctx,
    };
    let mut runs = Vec::new();
    let mut baseline_cpu = Vec::new();
    if cuda {
        let loaded = measure::timed_load_on(
            &path,
            smelt_cuda::CudaBackend::new,
            kv_blocks,
            args.kv(),
            args.repetitions,
        )?;
        let (run, base) = plan.run("cuda", 0, &loaded)?;
        if let Some(st) = base {
            baseline_cpu.push((0, st));
        }
        runs.push(run);
    } else {
        for &threads in &args.threads {
            let loaded = measure::timed_load(
                &path,
                threads,
                args.q8.value,
                kv_blocks,
                args.kv(),
                args.repetitions,
            )?;
            let threads = loaded.model.backend.threads();
            say_activations(args, loaded.model.backend.activations());
            let (run, base) = plan.run("cpu", threads, &loaded)?;
            if let Some(st) = base {
                baseline_cpu.push((threads, st));
            }
            runs.push(run);
        }
    }

    let baseline = match args.baseline {
        None => None,
        Some(BaselineBackend::Reference) => {
            let reference = watched(|| {
                reference_decode(&file, ctx, args.kv(), &baseline_tokens, args.repetitions)
            })
            .map_err(|e| at(&e))?;
            say(format!(
                "reference tg{}: {:.2} tok/s",
                args.baseline_n,
                reference.mean()
            ));
            Some(Baseline {
                backend: "reference",
                n_tokens: args.baseline_n,
                reference,
                cpu: baseline_cpu,
            })
        }
    };
    // Before the bandwidth buffer exists, so it is not counted.
    let peak_rss_bytes = system::peak_rss_bytes();

    if args.membw_mib > 0 {
        for run in &mut runs {
            let before = system::CpuTimes::now();
            let mut bw = if run.backend == "cuda" {
                gpu_bandwidth(args.membw_mib << 20, args.membw_passes)?
            } else {
                membw::measure(args.membw_mib << 20, run.threads, args.membw_passes)?
            };
            bw.other_cpu = before
                .zip(system::CpuTimes::now())
                .and_then(|(a, b)| b.others_since(&a));
            say(format!(
                "memory read, {}t: {:.1} GB/s",
                run.threads, bw.gb_per_s
            ));
            run.membw = Some(bw);
        }
    }

    let report = Report {
        model: ModelInfo {
            name: file
                .get_str("general.name")
                .unwrap_or("(unnamed)")
                .to_string(),
            path: path.display().to_string(),
            arch: config.arch.name().to_string(),
            quant: footprint::quant_label(&file),
            params: footprint::param_count(&file),
            file_bytes: file.bytes().len() as u64,
        },
        system: system::SystemInfo::detect(),
        load_avg_before,
        load_avg_after: system::load_average(),
        ctx,
        kv_cache_bytes: footprint::kv_cache_bytes(&config, ctx, args.kv()),
        kv_type: args.kv(),
        reps: args.repetitions,
        seed: args.seed,
        token_bytes,
        tokenizer_load_ms,
        ttft_prompt_tokens,
        ttft_message_tokens,
        runs,
        baseline,
        peak_rss_bytes,
    };
    if args.json {
        let _ = write!(std::io::stdout(), "{}", report.json().pretty());
    } else {
        let _ = write!(std::io::stdout(), "{}", report.table());
    }
    Ok(())
}

/// Device memory read bandwidth of the GPU (a fresh context: the model's
/// is gone by now), as the CPU measurement reports it.
fn gpu_bandwidth(bytes: usize, passes: usize) -> Result<membw::MemBandwidth, String> {
    let cuda = smelt_cuda::CudaBackend::new().map_err(|e| e.to_string())?;
    let passes_gb_per_s = cuda
        .read_bandwidth(bytes, passes)
        .map_err(|e| e.to_string())?;
    Ok(membw::MemBandwidth {
        gb_per_s: passes_gb_per_s.iter().copied().fold(0.0, f64::max),
        passes_gb_per_s,
        bytes,
        threads: 0,
        other_cpu: None,
    })
}

/// What every run of one `smelt bench` times.
struct Plan<'a> {
    args: &'a BenchArgs,
    prompts: &'a [Vec<u32>],
    decodes: &'a [Vec<u32>],
    ttft: Option<(&'a TtftPrompt, &'a Tokenizer)>,
    baseline_tokens: &'a [u32],
    ctx: usize,
}

impl Plan<'_> {
    /// Every test on one loaded model; also the decode speed of the
    /// baseline comparison when there is one.
    fn run<B: smelt_backend::Backend>(
        &self,
        backend: &'static str,
        threads: usize,
        loaded: &measure::TimedLoad<B>,
    ) -> Result<(ThreadRun, Option<Stats>), String> {
        let args = self.args;
        let say = |msg: String| {
            if !args.json {
                eprintln!("smelt bench: {msg}");
            }
        };
        let label = if backend == "cpu" {
            format!("cpu {threads}t")
        } else {
            backend.to_string()
        };
        let mut session =
            Session::with_kv_type(&loaded.model, self.ctx, args.kv()).map_err(|e| e.to_string())?;
        let mut tests = Vec::new();
        for tokens in self.prompts {
            let tok_s = watched(|| measure::prompt_speed(&mut session, tokens, args.repetitions))
                .map_err(|e| e.to_string())?;
            say(format!(
                "{label} pp{}: {:.2} tok/s",
                tokens.len(),
                tok_s.mean()
            ));
            tests.push(TestResult {
                kind: TestKind::Prompt,
                n_tokens: tokens.len(),
                tok_s,
            });
        }
        for tokens in self.decodes {
            let tok_s = watched(|| measure::decode_speed(&mut session, tokens, args.repetitions))
                .map_err(|e| e.to_string())?;
            say(format!(
                "{label} tg{}: {:.2} tok/s",
                tokens.len() - 1,
                tok_s.mean()
            ));
            tests.push(TestResult {
                kind: TestKind::Decode,
                n_tokens: tokens.len() - 1,
                tok_s,
            });
        }
        let ttft_ms = match self.ttft {
            None => None,
            Some((p, tokenizer)) => {
                let ms = watched(|| {
                    measure::time_to_first_token(&mut session, tokenizer, &p.text, args.repetitions)
                })
                .map_err(|e| e.to_string())?;
                say(format!("{label} TTFT: {:.1} ms", ms.median()));
                Some(ms)
            }
        };
        let base = match args.baseline {
            None => None,
            Some(_) => Some(
                watched(|| {
                    measure::decode_speed(&mut session, self.baseline_tokens, args.repetitions)
                })
                .map_err(|e| e.to_string())?,
            ),
        };
        let run = ThreadRun {
            backend,
            threads,
            load_ms: loaded.load_ms.clone(),
            kv_alloc_ms: loaded.kv_alloc_ms.clone(),
            tests,
            ttft_ms,
            membw: None,
        };
        Ok((run, base))
    }
}

/// Decode speed on the scalar reference backend.
fn reference_decode(
    file: &Arc<GgufFile>,
    ctx: usize,
    kv: KvType,
    tokens: &[u32],
    reps: usize,
) -> Result<Stats, String> {
    let model = Model::load(file.clone(), ReferenceBackend).map_err(|e| e.to_string())?;
    let mut session = Session::with_kv_type(&model, ctx, kv).map_err(|e| e.to_string())?;
    measure::decode_speed(&mut session, tokens, reps).map_err(|e| e.to_string())
}

/// Says which activation precision the CPU runs use (stderr, not in JSON).
fn say_activations(args: &BenchArgs, a: smelt_cpu::Activations) {
    if !args.json {
        eprintln!("smelt bench: cpu activations {}", a.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("smelt-bench").chain(args.iter().copied()))
            .map(|c| c.bench)
    }

    #[test]
    fn llama_bench_flags_and_comma_lists() {
        let a = parse(&[
            "m.gguf", "-p", "128,512", "-n", "0,64", "-r", "3", "-t", "1,2",
        ])
        .unwrap();
        assert_eq!(a.model, "m.gguf");
        assert_eq!(a.n_prompt, vec![128, 512]);
        assert_eq!(a.prompt_lengths(), vec![128, 512]);
        assert_eq!(a.decode_lengths(), vec![64]);
        assert_eq!(a.repetitions, 3);
        assert_eq!(a.threads, vec![1, 2]);
        assert!(!a.json);
        assert_eq!(a.baseline, None);
        a.validate().unwrap();

        let long = parse(&[
            "smollm2",
            "--n-prompt",
            "64",
            "--n-gen",
            "32",
            "--repetitions",
            "2",
            "--threads",
            "4",
            "--json",
            "--baseline",
            "reference",
        ])
        .unwrap();
        assert_eq!(
            (
                long.n_prompt.as_slice(),
                long.n_gen.as_slice(),
                long.repetitions
            ),
            (&[64][..], &[32][..], 2)
        );
        assert!(long.json);
        assert_eq!(long.baseline, Some(BaselineBackend::Reference));
    }

    #[test]
    fn defaults_are_llama_bench_defaults() {
        let a = parse(&["m.gguf"]).unwrap();
        assert_eq!(
            (a.n_prompt, a.n_gen, a.repetitions, a.threads),
            (vec![512], vec![128], 5, vec![0])
        );
        assert_eq!((a.ttft_tokens, a.baseline_n, a.membw_mib), (16, 16, 1024));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["m.gguf", "-p", "12x"]).is_err());
        assert!(parse(&["m.gguf", "--baseline", "cuda"]).is_err());
        assert!(parse(&[]).is_err());
        let zero_reps = parse(&["m.gguf", "-r", "0"]).unwrap();
        assert!(zero_reps.validate().unwrap_err().contains("repetitions"));
        let nothing = parse(&["m.gguf", "-p", "0", "-n", "0", "--ttft-tokens", "0"]).unwrap();
        assert!(nothing.validate().unwrap_err().contains("nothing to time"));
        let only_baseline = parse(&[
            "m.gguf",
            "-p",
            "0",
            "-n",
            "0",
            "--ttft-tokens",
            "0",
            "--baseline",
            "reference",
        ])
        .unwrap();
        only_baseline.validate().unwrap();
        let many = parse(&["m.gguf", "-t", "2,5000"]).unwrap();
        assert!(many.validate().is_err());
    }

    #[test]
    fn context_fits_the_longest_test() {
        let a = parse(&["m.gguf", "-p", "128,512", "-n", "600"]).unwrap();
        assert_eq!(a.needed_ctx(20), 601);
        let b = parse(&["m.gguf", "-p", "0", "-n", "0", "--baseline", "reference"]).unwrap();
        assert_eq!(b.needed_ctx(20), 20);
        let c = parse(&["m.gguf", "-p", "8", "-n", "0", "--baseline", "reference"]).unwrap();
        assert_eq!(c.needed_ctx(0), 17);
    }

    #[test]
    fn random_tokens_are_seeded_and_in_the_vocabulary() {
        let a = random_tokens(&mut Rng::new(5), 300, 49);
        let b = random_tokens(&mut Rng::new(5), 300, 49);
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t < 49));
        // Uniform enough to hit most ids.
        let mut seen = a.clone();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 40, "{} distinct ids", seen.len());
    }
}
