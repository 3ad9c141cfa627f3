//! `Model::forward_greedy` picks, for every requested row, the argmax of the
//! logits `Model::forward` returns for the same step.

use std::sync::Arc;

use smelt_backend::{ReferenceBackend, argmax};
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};
use smelt_tensor::DType;

/// A small random-weight Llama-style model (96 tokens) on the reference backend.
fn synthetic_model(seed: u64) -> Model<ReferenceBackend> {
    let spec = SyntheticSpec {
        arch: "llama".into(),
        d_model: 128,
        d_ff: 256,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 96,
        weight_type: DType::Q8_0,
        embd_type: DType::Q8_0,
        seed,
        ..SyntheticSpec::default()
    };
    let bytes = spec.writer().to_bytes().expect("write");
    let file = Arc::new(GgufFile::from_bytes(bytes).expect("read back"));
    Model::load(file, ReferenceBackend).expect("load")
}

#[test]
fn forward_greedy_is_the_argmax_of_forward() {
    let model = synthetic_model(3);
    let table = [0u32, 1];
    let tokens = [7u32, 30, 2, 95, 41];
    let positions: Vec<u32> = (0..tokens.len() as u32).collect();
    let tables = vec![&table[..]; tokens.len()];
    let rows = [4usize, 0, 2];
    let batch = Batch {
        tokens: &tokens,
        positions: &positions,
        block_tables: &tables,
        logits_rows: &rows,
    };
    let mut kv = model.new_kv(2, KvType::F32).expect("kv");
    let logits = model.forward(&mut kv, &batch).expect("forward");
    let mut kv = model.new_kv(2, KvType::F32).expect("kv");
    let greedy = model
        .forward_greedy(&mut kv, &batch)
        .expect("forward_greedy");
    let want: Vec<u32> = (0..rows.len()).map(|r| argmax(logits.row(r))).collect();
    assert_eq!(greedy, want);
    // Random logits over 96 tokens: the picks are not all the same token.
    assert!(want.iter().any(|&t| t != want[0]), "{want:?}");
    let none = Batch {
        logits_rows: &[],
        ..batch
    };
    let mut kv = model.new_kv(2, KvType::F32).expect("kv");
    assert!(
        model
            .forward_greedy(&mut kv, &none)
            .expect("no rows")
            .is_empty()
    );
}

/// `Model::decode_greedy` (here the step-by-step path: the reference
/// backend does not chain steps) gives the tokens of `forward_greedy` step
/// by step, stops where `on_token` says, and a run continued from a stop
/// ends where one run does.
#[test]
fn decode_greedy_is_forward_greedy_step_by_step() {
    let model = synthetic_model(11);
    let (n_blocks, n) = (4usize, 20usize);
    // Blocks in scattered order; positions 0..n + 1 fit.
    let table: Vec<u32> = (0..n_blocks as u32).rev().collect();

    let mut kv = model.new_kv(n_blocks, KvType::F32).expect("kv");
    let mut want = Vec::new();
    let mut token = 17u32;
    for p in 0..n as u32 {
        let batch = Batch {
            tokens: &[token],
            positions: &[p],
            block_tables: &[&table],
            logits_rows: &[0],
        };
        token = model.forward_greedy(&mut kv, &batch).expect("step")[0];
        want.push(token);
    }
    assert!(want.iter().any(|&t| t != want[0]), "{want:?}");

    let mut kv = model.new_kv(n_blocks, KvType::F32).expect("kv");
    let mut seen = Vec::new();
    let got = model
        .decode_greedy(&mut kv, &table, 0, 17, n, |t| {
            seen.push(t);
            true
        })
        .expect("decode");
    assert_eq!(got, want);
    assert_eq!(seen, want);

    // Stopped after 7 tokens, then continued from the 7th at position 7.
    let mut kv = model.new_kv(n_blocks, KvType::F32).expect("kv");
    let mut count = 0;
    let head = model
        .decode_greedy(&mut kv, &table, 0, 17, n, |_| {
            count += 1;
            count < 7
        })
        .expect("decode");
    assert_eq!(head, want[..7]);
    let tail = model
        .decode_greedy(&mut kv, &table, 7, head[6], n - 7, |_| true)
        .expect("decode");
    assert_eq!(tail, want[7..]);
    // A position past the block table is an error, not a panic.
    let mut kv = model.new_kv(n_blocks, KvType::F32).expect("kv");
    let too_far = (n_blocks * model.kv_block_size()) as u32;
    assert!(
        model
            .decode_greedy(&mut kv, &table, too_far, 3, 2, |_| true)
            .is_err()
    );
}
