//! Decode speed of the CUDA backend: a model file, or a random-weight model
//! of a known shape, prefilled with a short prompt and then decoded greedily
//! one token per step (`Model::decode_greedy`, whose steps the backend chains
//! with `SMELT_CUDA_CHAIN=1`; `SMELT_DECODE_CHAINED=0` calls
//! `Model::forward_greedy` step by step: either way the argmax is taken on
//! the GPU and only the token id is copied back). Prints the GPU, load time,
//! decode tokens/s, kernels per token and the host's time a step outside
//! its waits for the GPU.
//!
//! `cuda_decode [PATH.gguf | smollm2 | 1b-q4_k_m | 8b-q4_k_m | 8b-bf16] [decode tokens, default 128] [sequences, default 1]`
//!
//! With several sequences (as a server's continuous batch), each step
//! decodes one token of every sequence in one batch of that many rows, and
//! tok/s counts the tokens of all of them.

use std::sync::Arc;
use std::time::Instant;

use smelt_backend::Backend;
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
    let n_seqs: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("bad sequence count {s:?}"))?,
        None => 1,
    };
    let total = prompt.len() + n_decode;
    let per_seq = total.div_ceil(model.kv_block_size());
    let mut kv = model
        .new_kv(per_seq * n_seqs, KvType::F16)
        .map_err(|e| e.to_string())?;
    // Sequence i owns blocks i * per_seq ..
    let tables: Vec<Vec<u32>> = (0..n_seqs)
        .map(|i| {
            (0..per_seq as u32)
                .map(|b| b + (i * per_seq) as u32)
                .collect()
        })
        .collect();
    // One token of every sequence (`tokens[i]` at position `pos`), or the
    // prompt of sequence 0 when `prompt` is set.
    let mut step = |tokens: &[u32], start: usize, prompt: bool| -> Result<Vec<u32>, String> {
        let (positions, rows): (Vec<u32>, Vec<&[u32]>) = if prompt {
            (
                (start as u32..(start + tokens.len()) as u32).collect(),
                vec![&tables[0][..]; tokens.len()],
            )
        } else {
            (
                vec![start as u32; tokens.len()],
                tables.iter().map(|t| &t[..]).collect(),
            )
        };
        let logits_rows: Vec<usize> = if prompt {
            vec![tokens.len() - 1]
        } else {
            (0..tokens.len()).collect()
        };
        let batch = Batch {
            tokens,
            positions: &positions,
            block_tables: &rows,
            logits_rows: &logits_rows,
        };
        let next = model
            .forward_greedy(&mut kv, &batch)
            .map_err(|e| e.to_string())?;
        if next.len() != logits_rows.len() {
            return Err(format!(
                "{} tokens came back for {} rows",
                next.len(),
                logits_rows.len()
            ));
        }
        Ok(next)
    };
    let t2 = Instant::now();
    let first = step(&prompt, 0, true)?;
    let t_prefill = t2.elapsed();
    // Every sequence starts from sequence 0's first token with its prompt
    // (the other sequences' caches hold whatever their blocks held: the
    // speed does not depend on the values).
    let mut next = vec![first[0]; n_seqs];
    // Two warm-up steps, then the timed ones.
    let mut pos = prompt.len();
    for _ in 0..2 {
        next = step(&next, pos, false)?;
        pos += 1;
    }
    // A fingerprint of every generated token (FNV-1a), so runs of kernel
    // variants that must not change a value can be compared by one line.
    let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
    let mut remember = |tokens: &[u32]| {
        for &t in tokens {
            fingerprint = (fingerprint ^ u64::from(t)).wrapping_mul(0x100_0000_01b3);
        }
    };
    let timed = n_decode.saturating_sub(2).max(1);
    let launches0 = model.backend.launch_count();
    let waited0 = model.backend.host_waited();
    let (uploads0, launched0) = model.backend.host_uploads_launches();
    // One sequence decodes through `Model::decode_greedy`, whose steps the
    // backend chains when `SMELT_CUDA_CHAIN=1` (each queued before the
    // previous one's token is read); `SMELT_DECODE_CHAINED=0` steps one
    // `forward_greedy` at a time here instead.
    let chained = n_seqs == 1 && std::env::var("SMELT_DECODE_CHAINED").map_or(true, |v| v != "0");
    let t3 = Instant::now();
    if chained {
        model
            .decode_greedy(&mut kv, &tables[0], pos as u32, next[0], timed, |t| {
                remember(&[t]);
                true
            })
            .map_err(|e| e.to_string())?;
    } else {
        for _ in 0..timed {
            next = step(&next, pos, false)?;
            remember(&next);
            pos += 1;
        }
    }
    let dt = t3.elapsed().as_secs_f64();
    let waited = (model.backend.host_waited() - waited0).as_secs_f64();
    let (uploads, launched) = model.backend.host_uploads_launches();
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e6 / timed as f64;
    let (uploads, launched) = (per_step(uploads - uploads0), per_step(launched - launched0));
    let kernels = (model.backend.launch_count() - launches0) as f64 / timed as f64;
    let (replays, captures) = model.backend.graph_counts();
    println!(
        "{what}: prefill {} tokens {:.2} ms; decode {timed} tokens{}: {:.1} tok/s ({:.3} ms/step, {kernels:.0} kernels/token; {replays} graph replays, {captures} captures; PDL {}; steps {}; tokens {fingerprint:016x}; host {:.1} us/step outside waits, of which uploads {uploads:.1}, launches {launched:.1})",
        prompt.len(),
        t_prefill.as_secs_f64() * 1e3,
        if n_seqs > 1 {
            format!(" × {n_seqs} sequences")
        } else {
            String::new()
        },
        (timed * n_seqs) as f64 / dt,
        dt * 1e3 / timed as f64,
        if model.backend.pdl() { "on" } else { "off" },
        if chained && model.backend.chains_greedy() {
            "chained"
        } else {
            "one at a time"
        },
        (dt - waited) * 1e6 / timed as f64,
    );
    Ok(())
}
