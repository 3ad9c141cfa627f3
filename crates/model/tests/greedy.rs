//! `Model::forward_greedy` picks, for every requested row, the argmax of the
//! logits `Model::forward` returns for the same step.

use std::sync::Arc;

use smelt_backend::{ReferenceBackend, argmax};
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};
use smelt_tensor::DType;

#[test]
fn forward_greedy_is_the_argmax_of_forward() {
    let spec = SyntheticSpec {
        arch: "llama".into(),
        d_model: 128,
        d_ff: 256,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 96,
        weight_type: DType::Q8_0,
        embd_type: DType::Q8_0,
        seed: 3,
        ..SyntheticSpec::default()
    };
    let bytes = spec.writer().to_bytes().expect("write");
    let file = Arc::new(GgufFile::from_bytes(bytes).expect("read back"));
    let model = Model::load(file, ReferenceBackend).expect("load");
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
