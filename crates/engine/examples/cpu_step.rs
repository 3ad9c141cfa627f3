//! Step time of the CPU backend's forward pass for n decode rows at once
//! (no server, no sampling beyond the argmax): n sequences are prefilled
//! with a 16-token prompt, then `Model::forward_greedy` runs STEPS (default 60) steps of one
//! token per sequence. Prints the minimum and median step time per n.
//!
//! `cpu_step MODEL.gguf|smollm2 [n,n,...  default 1,4,16] [q8|q8all|f32, default q8] [threads, default 2]`

use std::sync::Arc;
use std::time::Instant;

use smelt_cpu::{Activations, CpuBackend};
use smelt_gguf::GgufFile;
use smelt_model::{Batch, KvType, Model};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .expect("usage: cpu_step MODEL.gguf [n,..] [q8|f32] [threads]");
    let ns: Vec<usize> = args
        .get(1)
        .map_or("1,4,16", String::as_str)
        .split(',')
        .map(|s| s.parse().expect("n"))
        .collect();
    let act = match args.get(2).map_or("q8", String::as_str) {
        "f32" => Activations::F32,
        "q8all" => Activations::Q8All,
        _ => Activations::Q8,
    };
    let threads: usize = args.get(3).map_or(2, |s| s.parse().expect("threads"));
    let file = match smelt_model::synthetic::SyntheticSpec::preset(path) {
        Some(spec) => {
            let mut bytes = Vec::new();
            spec.writer().write_to(&mut bytes).expect("synthetic");
            GgufFile::from_bytes(bytes).expect("synthetic")
        }
        None => GgufFile::open(std::path::Path::new(path)).expect("open"),
    };
    let backend = CpuBackend::new(threads)
        .expect("backend")
        .with_activations(act);
    let model = Model::load(Arc::new(file), backend).expect("load");
    // STEPS: decode steps after the prompt (default 60; bench-serve's
    // `-n 128` reaches longer contexts).
    let steps = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60usize);
    let prompt_len = 16usize;
    let vocab = model.config.vocab_size as u32;
    let mut line = String::new();
    for &n in &ns {
        let per_seq = (prompt_len + steps + 2).div_ceil(model.kv_block_size());
        let mut kv = model.new_kv(n * per_seq, KvType::F16).expect("kv");
        let tables: Vec<Vec<u32>> = (0..n)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        let mut next = vec![0u32; n];
        for (s, table) in tables.iter().enumerate() {
            let prompt: Vec<u32> = (0..prompt_len as u32)
                .map(|i| (i * 131 + 7 * s as u32 + 1) % vocab)
                .collect();
            let positions: Vec<u32> = (0..prompt_len as u32).collect();
            let bt = vec![&table[..]; prompt_len];
            let batch = Batch {
                tokens: &prompt,
                positions: &positions,
                block_tables: &bt,
                logits_rows: &[prompt_len - 1],
            };
            next[s] = model.forward_greedy(&mut kv, &batch).expect("prefill")[0];
        }
        let bt: Vec<&[u32]> = tables.iter().map(|t| &t[..]).collect();
        let rows: Vec<usize> = (0..n).collect();
        let mut times = Vec::with_capacity(steps);
        for step in 0..steps {
            let positions = vec![(prompt_len + step) as u32; n];
            let batch = Batch {
                tokens: &next,
                positions: &positions,
                block_tables: &bt,
                logits_rows: &rows,
            };
            let t = Instant::now();
            next = model.forward_greedy(&mut kv, &batch).expect("step");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let (min, med) = (times[0], times[times.len() / 2]);
        line += &format!(
            "n={n}: min {min:.2} med {med:.2} ms ({:.0} tok/s med)  ",
            n as f64 * 1e3 / med
        );
    }
    println!("{line}");
}
