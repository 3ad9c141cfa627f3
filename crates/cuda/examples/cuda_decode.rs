//! Decode speed of the CUDA backend: a model file, or a random-weight model
//! of a known shape, prefilled with a short prompt and then decoded greedily
//! one token per step (`Model::forward_greedy`: the argmax is taken on the
//! GPU and only the token id is copied back). Prints the GPU, load time,
//! decode tokens/s and kernels per token.
//!
//! `cuda_decode [PATH.gguf | smollm2 | 1b-q4_k_m | 8b-q4_k_m | 8b-bf16] [decode tokens, default 128]`

use std::sync::Arc;
use std::time::Instant;

use smelt_cuda::CudaBackend;
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};

fn main() {
    if let Err(e) = run() {
        eprintln!("cuda_decode: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("smollm2", String::as_str);
    let n_decode: usize = match args.get(1) {
        Some(s) => s.parse().map_err(|_| format!("bad token count {s:?}"))?,
        None => 128,
    };
    let t0 = Instant::now();
    let file = match SyntheticSpec::preset(what) {
        Some(spec) => {
            let mut bytes = Vec::new();
            spec.writer()
                .write_to(&mut bytes)
                .map_err(|e| e.to_string())?;
            GgufFile::from_bytes(bytes).map_err(|e| e.to_string())?
        }
        None => GgufFile::open(std::path::Path::new(what)).map_err(|e| format!("{what}: {e}"))?,
    };
    let t_file = t0.elapsed();
    let t1 = Instant::now();
    let cuda = CudaBackend::new().map_err(|e| e.to_string())?;
    let info = cuda.info().clone();
    let model = Model::load(Arc::new(file), cuda).map_err(|e| e.to_string())?;
    let t_load = t1.elapsed();
    println!(
        "{what}: GPU {} (sm_{}{}), kernels {:?}; model file {:.2} s, backend+upload {:.2} s",
        info.name,
        info.capability.0,
        info.capability.1,
        info.kernels,
        t_file.as_secs_f64(),
        t_load.as_secs_f64()
    );

    let prompt: Vec<u32> = (0..16u32)
        .map(|i| (i * 131 + 1) % model.config.vocab_size as u32)
        .collect();
    let total = prompt.len() + n_decode;
    let n_blocks = total.div_ceil(model.kv_block_size());
    let mut kv = model
        .new_kv(n_blocks, KvType::F16)
        .map_err(|e| e.to_string())?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut step = |tokens: &[u32], start: usize| -> Result<u32, String> {
        let positions: Vec<u32> = (start as u32..(start + tokens.len()) as u32).collect();
        let tables = vec![&table[..]; tokens.len()];
        let batch = Batch {
            tokens,
            positions: &positions,
            block_tables: &tables,
            logits_rows: &[tokens.len() - 1],
        };
        let next = model
            .forward_greedy(&mut kv, &batch)
            .map_err(|e| e.to_string())?;
        next.first()
            .copied()
            .ok_or_else(|| "no token came back".to_string())
    };
    let t2 = Instant::now();
    let mut next = step(&prompt, 0)?;
    let t_prefill = t2.elapsed();
    // Two warm-up steps, then the timed ones.
    let mut pos = prompt.len();
    for _ in 0..2 {
        next = step(&[next], pos)?;
        pos += 1;
    }
    let timed = n_decode.saturating_sub(2).max(1);
    let launches0 = model.backend.launch_count();
    let t3 = Instant::now();
    for _ in 0..timed {
        next = step(&[next], pos)?;
        pos += 1;
    }
    let dt = t3.elapsed().as_secs_f64();
    let kernels = (model.backend.launch_count() - launches0) as f64 / timed as f64;
    let (replays, captures) = model.backend.graph_counts();
    println!(
        "{what}: prefill {} tokens {:.2} ms; decode {timed} tokens: {:.1} tok/s ({:.3} ms/token, {kernels:.0} kernels/token; {replays} graph replays, {captures} captures; PDL {})",
        prompt.len(),
        t_prefill.as_secs_f64() * 1e3,
        timed as f64 / dt,
        dt * 1e3 / timed as f64,
        if model.backend.pdl() { "on" } else { "off" },
    );
    Ok(())
}
