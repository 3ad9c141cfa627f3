//! The timed loops. Each goes through the engine's own entry point
//! (`Session::feed`, the path `smelt run` takes), so what is measured is what
//! a user gets; nothing is allocated, printed or stored inside a timed region
//! beyond what the engine itself does.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use smelt_backend::Backend;
use smelt_cpu::CpuBackend;
use smelt_engine::{EngineError, Sampler, SamplingParams, Session};
use smelt_gguf::GgufFile;
use smelt_model::{KvType, Model};
use smelt_text::tokenizer::Tokenizer;

use super::report::Stats;

/// Decode steps of the untimed warm-up before a tg test.
const DECODE_WARMUP_STEPS: usize = 16;

/// Prompt processing: `tokens` fed as one prompt into an empty cache (the
/// engine splits it into its prefill chunks), after one warm-up run.
/// Returns tokens per second of each repetition.
pub fn prompt_speed<B: Backend>(
    session: &mut Session<'_, B>,
    tokens: &[u32],
    reps: usize,
) -> Result<Stats, EngineError> {
    let mut samples = Vec::with_capacity(reps);
    for rep in 0..=reps {
        session.truncate(0);
        let t0 = Instant::now();
        black_box(session.feed(tokens)?);
        let secs = t0.elapsed().as_secs_f64();
        if rep > 0 {
            samples.push(tokens.len() as f64 / secs);
        }
    }
    Ok(Stats::new(samples))
}

/// Decode: `tokens[0]` is fed as a one-token prompt (untimed), then each of
/// `tokens[1..]` as one single-row step, timed together. One short warm-up
/// run first. Returns tokens per second of each repetition.
pub fn decode_speed<B: Backend>(
    session: &mut Session<'_, B>,
    tokens: &[u32],
    reps: usize,
) -> Result<Stats, EngineError> {
    let Some((first, steps)) = tokens.split_first() else {
        return Err(EngineError::EmptyPrompt);
    };
    let mut samples = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let steps = if rep == 0 {
            &steps[..steps.len().min(DECODE_WARMUP_STEPS)]
        } else {
            steps
        };
        session.truncate(0);
        session.feed(std::slice::from_ref(first))?;
        let t0 = Instant::now();
        for t in steps {
            black_box(session.feed(std::slice::from_ref(t))?);
        }
        let secs = t0.elapsed().as_secs_f64();
        if rep > 0 {
            samples.push(steps.len() as f64 / secs);
        }
    }
    Ok(Stats::new(samples))
}

/// Time to first token of a chat prompt, in milliseconds: from the start of
/// tokenizing the rendered `prompt` to the first token drawn by the engine's
/// sampler (CLI defaults), on an empty cache. One warm-up run first.
pub fn time_to_first_token<B: Backend>(
    session: &mut Session<'_, B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    reps: usize,
) -> Result<Stats, EngineError> {
    let mut samples = Vec::with_capacity(reps);
    for rep in 0..=reps {
        session.truncate(0);
        let params = SamplingParams {
            seed: rep as u64,
            ..SamplingParams::default()
        };
        let t0 = Instant::now();
        let tokens = tokenizer.encode(prompt, false, true);
        let mut logits = session.feed(&tokens)?;
        let mut sampler = Sampler::new(params);
        black_box(sampler.sample(&mut logits, session.tokens()));
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if rep > 0 {
            samples.push(ms);
        }
    }
    Ok(Stats::new(samples))
}

/// A model loaded `reps + 1` times (the first untimed, to warm the page
/// cache) with the timings of the last `reps`.
pub struct TimedLoad<B: Backend> {
    pub model: Model<B>,
    /// `GgufFile::open` → `Model::load` done (thread pool started, every
    /// weight bound), milliseconds.
    pub load_ms: Stats,
    /// Allocating the KV cache for the benchmark's context, milliseconds.
    pub kv_alloc_ms: Stats,
}

/// Opens and loads `path` on a `threads`-thread CPU backend `reps + 1` times.
pub fn timed_load(
    path: &Path,
    threads: usize,
    q8: Option<crate::args::Q8Arg>,
    kv_blocks: usize,
    kv_type: KvType,
    reps: usize,
) -> Result<TimedLoad<CpuBackend>, String> {
    let make = || crate::args::cpu_backend(threads, q8);
    timed_load_on(path, make, kv_blocks, kv_type, reps)
}

/// Opens and loads `path` `reps + 1` times on backends `backend()` makes
/// (each timed load includes making the backend).
pub fn timed_load_on<B: Backend, E: std::fmt::Display>(
    path: &Path,
    backend: impl Fn() -> Result<B, E>,
    kv_blocks: usize,
    kv_type: KvType,
    reps: usize,
) -> Result<TimedLoad<B>, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let (mut load_ms, mut kv_alloc_ms) = (Vec::new(), Vec::new());
    let mut last = None;
    for rep in 0..=reps {
        // The previous model (and its thread pool) goes before the next
        // opens, so runs do not overlap.
        drop(last.take());
        let t0 = Instant::now();
        let file = GgufFile::open(path).map_err(|e| at(&e))?;
        let backend = backend().map_err(|e| at(&e))?;
        let model = Model::load(Arc::new(file), backend).map_err(|e| at(&e))?;
        let t1 = Instant::now();
        let kv = model.new_kv(kv_blocks, kv_type).map_err(|e| at(&e))?;
        let t2 = Instant::now();
        drop(kv);
        if rep > 0 {
            load_ms.push((t1 - t0).as_secs_f64() * 1e3);
            kv_alloc_ms.push((t2 - t1).as_secs_f64() * 1e3);
        }
        last = Some(model);
    }
    let model = last.ok_or_else(|| "no load ran".to_string())?;
    Ok(TimedLoad {
        model,
        load_ms: Stats::new(load_ms),
        kv_alloc_ms: Stats::new(kv_alloc_ms),
    })
}

/// Loads the tokenizer `reps + 1` times; milliseconds of the last `reps`.
/// A file without a vocabulary (a random-weight model of `smelt synth`)
/// has none: `None` and no samples.
pub fn tokenizer_load(file: &GgufFile, reps: usize) -> Result<(Option<Tokenizer>, Stats), String> {
    if file.get("tokenizer.ggml.tokens").is_none() {
        return Ok((None, Stats::new(Vec::new())));
    }
    let mut samples = Vec::with_capacity(reps);
    let mut last = None;
    for rep in 0..=reps {
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(file).map_err(|e| format!("tokenizer: {e}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if rep > 0 {
            samples.push(ms);
        }
        last = Some(tok);
    }
    let tok = last.ok_or_else(|| "no tokenizer load ran".to_string())?;
    Ok((Some(tok), Stats::new(samples)))
}
