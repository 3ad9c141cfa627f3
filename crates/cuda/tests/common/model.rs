//! Whole-model helpers of the CUDA tests: synthetic models in memory and a
//! prefill-then-decode run (bulk_model.rs, bulk_int8.rs).

use std::sync::Arc;

use smelt_backend::Backend;
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};

pub fn synthetic(spec: &SyntheticSpec) -> Arc<GgufFile> {
    let mut bytes = Vec::new();
    spec.writer()
        .write_to(&mut bytes)
        .expect("write synthetic model");
    Arc::new(GgufFile::from_bytes(bytes).expect("parse synthetic model"))
}

pub fn load<B: Backend>(file: &Arc<GgufFile>, be: B) -> Model<B> {
    match Model::load(file.clone(), be) {
        Ok(m) => m,
        Err(e) => panic!("load: {e}"),
    }
}

/// Feeds `tokens[..prompt]` in chunks of `chunk` rows, logits only of the
/// prompt's last row (as the engine does), then the rest one row at a
/// time; returns the logits of the last prompt row and of every decode
/// step, concatenated.
pub fn prefill_then_decode<B: Backend>(
    m: &Model<B>,
    tokens: &[u32],
    prompt: usize,
    chunk: usize,
    kv: KvType,
) -> Vec<f32> {
    let n_blocks = tokens.len().div_ceil(m.kv_block_size()) + 1;
    let mut cache = m.new_kv(n_blocks, kv).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).rev().collect();
    let mut out = Vec::new();
    let mut step = |range: std::ops::Range<usize>, logits: bool, out: &mut Vec<f32>| {
        let toks = &tokens[range.clone()];
        let positions: Vec<u32> = range.clone().map(|p| p as u32).collect();
        let tables = vec![&table[..]; toks.len()];
        let last = [toks.len() - 1];
        let batch = Batch {
            tokens: toks,
            positions: &positions,
            block_tables: &tables,
            logits_rows: if logits { &last } else { &[] },
        };
        match m.forward(&mut cache, &batch) {
            Ok(l) => out.extend_from_slice(&l.data),
            Err(e) => panic!("forward on {}: {e}", m.backend.name()),
        }
    };
    let mut start = 0;
    while start < prompt {
        let end = (start + chunk).min(prompt);
        step(start..end, end == prompt, &mut out);
        start = end;
    }
    for p in prompt..tokens.len() {
        step(p..p + 1, true, &mut out);
    }
    out
}
