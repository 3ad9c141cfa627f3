//! The forward pass on tiny random-weight models: the CPU backend against the
//! scalar reference, one prefill batch against token-by-token decode through
//! the paged KV cache, and the errors a malformed model gives.

use std::sync::Arc;

use smelt_backend::{Backend, ReferenceBackend};
use smelt_cpu::CpuBackend;
use smelt_gguf::{GgufFile, Value};
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KV_BLOCK_SIZE, KvType, Model, ModelError};
use smelt_tensor::DType;

fn file(spec: &SyntheticSpec) -> Arc<GgufFile> {
    let bytes = spec.writer().to_bytes().expect("write");
    Arc::new(GgufFile::from_bytes(bytes).expect("read back"))
}

const TOKENS: [u32; 21] = [
    5, 17, 3, 3, 79, 0, 42, 8, 8, 8, 61, 2, 33, 70, 1, 15, 16, 17, 18, 40, 41,
];

fn prefill_logits<B: Backend>(model: &Model<B>, tokens: &[u32], table: &[u32]) -> Vec<Vec<f32>> {
    let mut kv = model.new_kv(8, KvType::F32).expect("kv");
    let positions: Vec<u32> = (0..tokens.len() as u32).collect();
    let tables = vec![table; tokens.len()];
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let out = model
        .forward(
            &mut kv,
            &Batch {
                tokens,
                positions: &positions,
                block_tables: &tables,
                logits_rows: &rows,
            },
        )
        .expect("forward");
    out.data.chunks(out.cols).map(<[f32]>::to_vec).collect()
}

fn decode_logits<B: Backend>(model: &Model<B>, tokens: &[u32], table: &[u32]) -> Vec<Vec<f32>> {
    let mut kv = model.new_kv(8, KvType::F32).expect("kv");
    tokens
        .iter()
        .enumerate()
        .map(|(p, &t)| {
            let batch = Batch {
                tokens: &[t],
                positions: &[p as u32],
                block_tables: &[table],
                logits_rows: &[0],
            };
            model.forward(&mut kv, &batch).expect("forward").data
        })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn cpu_matches_reference_and_decode_matches_prefill() {
    for (arch, wt, et, tied) in [
        ("llama", DType::Q4_0, DType::Q8_0, true),
        ("qwen2", DType::Q4K, DType::Q6K, false),
        ("llama", DType::F16, DType::F32, false),
    ] {
        let spec = SyntheticSpec {
            arch: arch.into(),
            d_model: 256,
            d_ff: 512,
            n_heads: 8,
            n_kv_heads: 2,
            weight_type: wt,
            embd_type: et,
            tied_output: tied,
            ..Default::default()
        };
        let f = file(&spec);
        let cpu = Model::load(f.clone(), CpuBackend::new(2).expect("pool")).expect("load");
        let reference = Model::load(f, ReferenceBackend).expect("load");
        let table: Vec<u32> = vec![6, 2, 7]; // 21 positions over scattered 16-slot blocks
        assert!(TOKENS.len() <= table.len() * KV_BLOCK_SIZE);
        let a = prefill_logits(&cpu, &TOKENS, &table);
        let b = prefill_logits(&reference, &TOKENS, &table);
        let c = decode_logits(&cpu, &TOKENS, &table);
        let scale = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        let (d_ref, d_dec) = (max_diff(&a, &b), max_diff(&a, &c));
        println!(
            "{arch} {wt}: |logit| ≤ {scale:.2}, cpu vs reference {d_ref:.2e}, prefill vs decode {d_dec:.2e}"
        );
        assert!(scale > 0.1, "logits are all near zero");
        assert!(d_ref <= 1e-4 * scale, "cpu vs reference: {d_ref}");
        // The CPU backend's rows are batch-invariant: decode gives the very same bits.
        assert_eq!(d_dec, 0.0, "prefill vs decode");
        // Logits differ between positions (the model is not degenerate).
        assert!(max_diff(&a[..1], &a[1..2]) > 1e-3);
    }
}

fn load_err(f: Arc<GgufFile>) -> ModelError {
    match Model::load(f, ReferenceBackend) {
        Ok(_) => panic!("malformed model loaded"),
        Err(e) => e,
    }
}

fn rewrite(spec: &SyntheticSpec, edit: impl FnOnce(&mut smelt_gguf::GgufWriter)) -> Arc<GgufFile> {
    let mut w = spec.writer();
    edit(&mut w);
    Arc::new(GgufFile::from_bytes(w.to_bytes().expect("write")).expect("read"))
}

#[test]
fn malformed_models_give_errors_that_name_the_problem() {
    let spec = SyntheticSpec::default();
    let e = load_err(rewrite(&spec, |w| {
        w.set("general.architecture", Value::String("gpt-j".into()))
    }));
    let msg = e.to_string();
    assert!(matches!(e, ModelError::UnsupportedArch(_)), "{e}");
    assert!(
        msg.contains("gpt-j") && msg.contains("llama") && msg.contains("qwen2"),
        "{msg}"
    );

    let e = load_err(rewrite(&spec, |w| {
        w.set("llama.attention.head_count_kv", Value::U32(3))
    }));
    assert!(e.to_string().contains("head_count_kv"), "{e}");

    let e = load_err(rewrite(&spec, |w| {
        w.set("llama.block_count", Value::U32(3))
    }));
    assert!(e.to_string().contains("blk.2.attn_norm.weight"), "{e}");

    let e = load_err(rewrite(&spec, |w| {
        w.set("llama.embedding_length", Value::U32(32))
    }));
    assert!(matches!(e, ModelError::BadShape { .. }), "{e}");

    let e = load_err(rewrite(&spec, |w| {
        w.set("llama.feed_forward_length", Value::String("big".into()))
    }));
    assert!(e.to_string().contains("feed_forward_length"), "{e}");

    let bytes = spec.writer().to_bytes().expect("write");
    let model = Model::load(
        Arc::new(GgufFile::from_bytes(bytes).expect("read")),
        ReferenceBackend,
    )
    .expect("load");
    let mut kv = model.new_kv(1, KvType::F32).expect("kv");
    let bad_token = Batch {
        tokens: &[80],
        positions: &[0],
        block_tables: &[&[0]],
        logits_rows: &[0],
    };
    assert!(
        model
            .forward(&mut kv, &bad_token)
            .unwrap_err()
            .to_string()
            .contains("token id 80")
    );
    let past_cache = Batch {
        tokens: &[1],
        positions: &[16],
        block_tables: &[&[0]],
        logits_rows: &[0],
    };
    assert!(
        model
            .forward(&mut kv, &past_cache)
            .unwrap_err()
            .to_string()
            .contains("position 16")
    );
}
