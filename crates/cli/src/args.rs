//! Command-line flags shared by the subcommands.

use clap::Args;
use smelt_engine::{GenerateRequest, SamplingParams};
use smelt_model::KvType;

/// Which model, how much context, how many threads.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Context size in tokens (0: the model's training context, capped at 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// CPU threads (0: one per physical core).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// KV cache element type.
    #[arg(long, value_enum, default_value_t = KvTypeArg::F16)]
    pub kv_type: KvTypeArg,
    /// Where to run: CUDA when a usable GPU is present (auto), or as told.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub q8: Q8Flag,
    /// CPU: f32 activations whatever the flag and SMELT_CPU_Q8 say (the
    /// reference model of `perplexity --kl-base`).
    #[arg(skip)]
    pub f32_activations: bool,
}

/// `--device` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA if the driver, NVRTC and a GPU are there, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

/// `--q8-activations[=layers|all]`, shared by every command that runs a
/// model on the CPU.
#[derive(Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Q8Flag {
    /// CPU: quantize the matrix products' activations to 8 bits per block of
    /// 32 (integer dot products; faster for batches, not bit-equal to f32):
    /// the layers' products (`--q8-activations`, or `=layers`), or the
    /// logits' product too (`=all`, as llama.cpp). Without it the
    /// SMELT_CPU_Q8 environment variable decides (0, 1, all).
    // `require_equals`: a bare `--q8-activations` must not take the model
    // path that follows it as its value.
    #[arg(long = "q8-activations", value_name = "MODE", value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "layers")]
    pub value: Option<Q8Arg>,
}

/// `--q8-activations` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q8Arg {
    /// The layers' products; the logits' product stays f32.
    Layers,
    /// Every product with an integer path, the logits' too.
    All,
}

impl Q8Arg {
    /// The CPU backend's activation precision.
    pub fn activations(self) -> smelt_cpu::Activations {
        match self {
            Q8Arg::Layers => smelt_cpu::Activations::Q8,
            Q8Arg::All => smelt_cpu::Activations::Q8All,
        }
    }

    /// The flag that asks for it (what `bench-serve` passes to `serve`).
    pub fn flag(self) -> &'static str {
        match self {
            Q8Arg::Layers => "--q8-activations=layers",
            Q8Arg::All => "--q8-activations=all",
        }
    }
}

/// `--kv-type` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvTypeArg {
    /// Half precision: half the memory and bandwidth.
    F16,
    /// Full precision.
    F32,
}

impl ModelArgs {
    /// A CPU backend as these flags ask: threads, and activation precision
    /// (`--q8-activations`, else `SMELT_CPU_Q8`).
    pub fn cpu_backend(&self) -> Result<smelt_cpu::CpuBackend, String> {
        let backend = cpu_backend(self.threads, self.q8.value)?;
        Ok(if self.f32_activations {
            backend.with_activations(smelt_cpu::Activations::F32)
        } else {
            backend
        })
    }

    /// The engine's KV cache type.
    pub fn kv_type(&self) -> KvType {
        match self.kv_type {
            KvTypeArg::F16 => KvType::F16,
            KvTypeArg::F32 => KvType::F32,
        }
    }
}

/// How to sample and when to stop. Defaults follow llama.cpp.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Minimum probability relative to the most likely token (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for recently seen tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties consider.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every recently seen token.
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a recently seen token.
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed (default: random each run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most new tokens to generate.
    #[arg(long, short = 'n', default_value_t = 512)]
    pub max_tokens: usize,
    /// Stop when the output contains this text (repeatable; not printed).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The engine's request, with a fresh seed when none was given.
    pub fn request(&self) -> GenerateRequest {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        GenerateRequest {
            sampling: SamplingParams {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                penalty_last_n: self.repeat_last_n,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed,
            },
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
        }
    }
}

/// A CPU backend on `threads` threads with the 8-bit activations `q8` asks
/// for, else with the precision `SMELT_CPU_Q8` gives.
pub fn cpu_backend(threads: usize, q8: Option<Q8Arg>) -> Result<smelt_cpu::CpuBackend, String> {
    let backend = smelt_cpu::CpuBackend::new(threads).map_err(|e| e.to_string())?;
    Ok(match q8 {
        Some(q8) => backend.with_activations(q8.activations()),
        None => backend,
    })
}
