//! Absurd model metadata is an error naming what is wrong, never a panic or
//! a silently different model: every numeric, float and string key of small
//! synthetic models is set to values a corrupt or hand-edited file could
//! hold, and the file is loaded and run for one step.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use smelt_backend::ReferenceBackend;
use smelt_gguf::{GgufFile, GgufWriter, Value};
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model, ModelError};
use smelt_tensor::DType;

fn spec(arch: &str) -> SyntheticSpec {
    SyntheticSpec {
        arch: arch.into(),
        d_model: 64,
        d_ff: 128,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 40,
        n_layers: 2,
        weight_type: DType::Q8_0,
        embd_type: DType::Q8_0,
        seed: 3,
        ..SyntheticSpec::default()
    }
}

/// Loads the file and runs a 3-token prompt; the first error on the way.
fn load_and_run(w: &GgufWriter) -> Result<(), String> {
    let bytes = w.to_bytes().map_err(|e| format!("write: {e}"))?;
    let file = Arc::new(GgufFile::from_bytes(bytes).map_err(|e| format!("parse: {e}"))?);
    let model = Model::load(file, ReferenceBackend).map_err(|e| format!("load: {e}"))?;
    let mut kv = model
        .new_kv(4, KvType::F32)
        .map_err(|e| format!("kv: {e}"))?;
    let table = [0u32, 1, 2, 3];
    let tables = vec![&table[..]; 3];
    let batch = Batch {
        tokens: &[1, 2, 3],
        positions: &[0, 1, 2],
        block_tables: &tables,
        logits_rows: &[2],
    };
    let logits = model
        .forward(&mut kv, &batch)
        .map_err(|e| format!("forward: {e}"))?;
    if logits.row(0).iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err("non-finite logits".into())
    }
}

fn candidates(v: &Value) -> Vec<Value> {
    match v {
        Value::U32(_) | Value::I32(_) | Value::U64(_) | Value::I64(_) => vec![
            Value::U32(0),
            Value::U32(1),
            Value::U32(3),
            Value::U32(63),
            Value::U32(65),
            Value::U32(1 << 20),
            Value::U32(u32::MAX),
            Value::I32(-1),
            Value::U64(u64::MAX),
            Value::F32(2.0),
            Value::String("x".into()),
        ],
        Value::F32(_) | Value::F64(_) => vec![
            Value::F32(0.0),
            Value::F32(-1.0),
            Value::F32(f32::NAN),
            Value::F32(f32::INFINITY),
            Value::F32(1e30),
            Value::U32(5),
            Value::Bool(true),
        ],
        _ => vec![
            Value::String(String::new()),
            Value::U32(1),
            Value::Bool(false),
        ],
    }
}

#[test]
fn absurd_metadata_values_never_panic() {
    let mut panics = Vec::new();
    let mut errors = 0;
    for arch in ["llama", "qwen2", "phi3"] {
        let base = spec(arch).writer();
        assert_eq!(load_and_run(&base), Ok(()), "{arch}: the unedited file");
        for (key, value) in base.metadata().to_vec() {
            for c in candidates(&value) {
                let mut w = base.clone();
                w.set(key.clone(), c.clone());
                match catch_unwind(AssertUnwindSafe(|| load_and_run(&w))) {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => errors += 1,
                    Err(_) => panics.push(format!("{arch}: {key} = {c:?}")),
                }
            }
        }
    }
    assert!(panics.is_empty(), "panicked on: {panics:#?}");
    // The sizes, counts and norms above are rejected, not run.
    assert!(errors > 100, "only {errors} edits were errors");
}

#[test]
fn zero_or_huge_sizes_are_errors_naming_the_key() {
    for key in [
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.block_count",
    ] {
        for v in [
            Value::U32(0),
            Value::U32(u32::MAX),
            Value::String("x".into()),
        ] {
            let mut w = spec("llama").writer();
            w.set(key, v.clone());
            let bytes = w.to_bytes().expect("write");
            let file = Arc::new(GgufFile::from_bytes(bytes).expect("parse"));
            match Model::load(file, ReferenceBackend) {
                Err(e) => assert!(
                    e.to_string().contains(key)
                        || matches!(
                            e,
                            ModelError::BadShape { .. } | ModelError::MissingTensor(_)
                        ),
                    "{key} = {v:?}: {e}"
                ),
                Ok(_) => panic!("{key} = {v:?} loaded"),
            }
        }
    }
}

#[test]
fn a_block_count_below_the_blocks_in_the_file_is_an_error() {
    let mut w = spec("llama").writer();
    w.set("llama.block_count", Value::U32(1));
    let file = Arc::new(GgufFile::from_bytes(w.to_bytes().expect("write")).expect("parse"));
    let e = Model::load(file, ReferenceBackend)
        .err()
        .expect("a 2-block file read as 1 block");
    assert!(
        matches!(&e, ModelError::BadValue { key, .. } if key == "llama.block_count")
            && e.to_string().contains("block 1"),
        "{e}"
    );
}
