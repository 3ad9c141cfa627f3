//! `smelt`: run, chat with and inspect local language models.

/// `println!` for command output: a closed pipe (`smelt info | head`)
/// ends the output quietly instead of panicking, and the command finishes.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod args;
mod bench;
mod bench_serve;
mod chat;
mod fetch;
mod info;
mod load;
mod membw;
mod perplexity;
mod quantize;
mod run;
mod serve;
mod synth;

use clap::{Parser, Subcommand};

use args::{ModelArgs, SamplingArgs};

#[derive(Parser, Debug)]
#[command(
    name = "smelt",
    version,
    about = "A local LLM engine: run GGUF models on your machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream a continuation of PROMPT (read from stdin if omitted).
    Run {
        /// A GGUF file, a Hugging Face model directory, or a known model name
        /// (`smollm2`, fetched on first use).
        model: String,
        prompt: Option<String>,
        #[command(flatten)]
        model_args: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Chat with a model through its own chat template.
    Chat {
        /// A GGUF file, a Hugging Face model directory, or a known model name.
        model: String,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
        /// Print timings after each reply.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        model_args: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Show a model file's architecture, context, vocabulary and tensors.
    Info {
        /// A GGUF file, a Hugging Face model directory, or a known model name.
        model: String,
        /// List every tensor.
        #[arg(long)]
        tensors: bool,
        /// List every metadata key.
        #[arg(long)]
        metadata: bool,
    },
    /// Measure speed (llama-bench style), TTFT, load time, memory and the bandwidth roofline.
    Bench(bench::BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (continuous batching).
    Serve(serve::ServeArgs),
    /// Measure the server: aggregate tok/s and time to first token at several concurrencies.
    BenchServe(bench_serve::BenchServeArgs),
    /// Requantize a GGUF file or convert an HF directory: `smelt convert IN OUT.gguf --type q4_k_m`.
    #[command(alias = "convert")]
    Quantize(quantize::QuantizeArgs),
    /// Write a random-weight model of a known shape for benchmarks:
    /// smollm2, 1b-q4_k_m, 8b-q4_k_m, 8b-bf16.
    Synth {
        /// The shape preset.
        preset: String,
        /// Where to write the GGUF file.
        out: std::path::PathBuf,
    },
    /// Perplexity over a text file (llama.cpp's conventions); with --kl-base, KL divergence.
    Perplexity(perplexity::PerplexityArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run {
            model,
            prompt,
            model_args,
            sampling,
        } => run::run(model, prompt.as_deref(), model_args, sampling),
        Command::Chat {
            model,
            system,
            verbose,
            model_args,
            sampling,
        } => chat::chat(model, system.as_deref(), model_args, sampling, *verbose),
        Command::Info {
            model,
            tensors,
            metadata,
        } => info::info(model, *tensors, *metadata),
        Command::Bench(args) => bench::bench(args),
        Command::Serve(args) => serve::serve(args),
        Command::BenchServe(args) => bench_serve::bench_serve(args),
        Command::Quantize(args) => quantize::quantize(args),
        Command::Synth { preset, out } => synth::synth(preset, out),
        Command::Perplexity(args) => perplexity::perplexity(args),
    };
    if let Err(e) = result {
        eprintln!("smelt: error: {e}");
        std::process::exit(1);
    }
}
