//! `ModelConfig::gguf_metadata` is the inverse of `ModelConfig::from_gguf`:
//! every fixture family's HF config, written as GGUF metadata and read back,
//! is the same config (in GGUF's spelling: interleaved RoPE for `llama`,
//! Llama 3 scaling as `rope_freqs.weight`); and the metadata matches what
//! the fixture GGUFs (written as llama.cpp's converter does) hold.

use std::path::PathBuf;

use smelt_gguf::{GgufFile, GgufWriter, Value};
use smelt_model::{HfSource, ModelConfig, RopeStyle};
use smelt_tensor::DType;

const FAMILIES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A GGUF holding `meta` and a token embedding of `config`'s shape.
fn gguf_of(meta: &[(String, Value)], config: &ModelConfig) -> GgufFile {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k.clone(), v.clone());
    }
    let n = config.d_model * config.vocab_size;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.37).to_le_bytes())
        .collect();
    w.add_tensor(
        "token_embd.weight",
        vec![config.d_model as u64, config.vocab_size as u64],
        DType::F32,
        data,
    )
    .expect("tensor");
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).expect("write");
    GgufFile::from_bytes(bytes).expect("parse")
}

#[test]
fn hf_configs_round_trip_through_gguf_metadata() {
    for family in FAMILIES {
        let dir = fixtures().join(family);
        let (hf, _) = HfSource::open_dir(&dir).expect("open");
        let meta = hf.gguf_metadata().expect("metadata");
        let back = ModelConfig::from_gguf(&gguf_of(&meta, &hf)).expect("read back");
        let mut want = hf.clone();
        if back.arch.name() == "llama" {
            want.rope_style = RopeStyle::Interleaved;
        }
        want.rope_llama3 = None;
        assert_eq!(back, want, "{family}");

        // The same keys and values as the llama.cpp-style fixture GGUF.
        let reference = GgufFile::open(&dir.with_extension("gguf")).expect("fixture gguf");
        for (key, value) in &meta {
            let theirs = reference
                .get(key)
                .unwrap_or_else(|| panic!("{family}: the fixture GGUF has no {key}"));
            assert_eq!(
                format!("{:?}", theirs.as_f32()),
                format!("{:?}", value.as_f32()),
                "{family}: {key}"
            );
            assert_eq!(theirs.as_str(), value.as_str(), "{family}: {key}");
        }
    }
}

#[test]
fn llama3_divisors_match_the_fixture_rope_freqs() {
    let dir = fixtures().join("llama");
    let (c, _) = HfSource::open_dir(&dir).expect("open");
    let l3 = c.rope_llama3.expect("llama3 scaling");
    let ours = l3.freq_divisors(c.rope_base, c.rope_dims);
    let file = GgufFile::open(&dir.with_extension("gguf")).expect("gguf");
    let t = file.tensor("rope_freqs.weight").expect("rope_freqs");
    let theirs: Vec<f32> = file
        .tensor_data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-6 * b.abs(), "{ours:?} vs {theirs:?}");
    }
    assert!(
        ours.iter().any(|&d| d > 1.0),
        "the fixture must scale some pairs"
    );
}

#[test]
fn settings_gguf_cannot_hold_are_refused_by_name() {
    let dir = fixtures().join("qwen2");
    let (mut c, _) = HfSource::open_dir(&dir).expect("open");
    c.layer_windows = vec![None, Some(4)];
    let e = c.gguf_metadata().expect_err("mixed windows").to_string();
    assert!(e.contains("sliding_window"), "{e}");
}

#[test]
fn gguf_tensor_names_follow_llama_cpp_order_and_refuse_strays() {
    let dir = fixtures().join("llama");
    let (c, src) = HfSource::open_dir(&dir).expect("open");
    let names = src.gguf_tensor_names(c.n_layers).expect("names");
    // Shards by name, names sorted within: lm_head first, then embeddings.
    assert_eq!(names.len(), 2 + 9 * c.n_layers + 1);
    assert!(names.contains(&"output.weight".to_string()));
    let (c, src) = HfSource::open_dir(&fixtures().join("qwen2")).expect("open");
    let names = src.gguf_tensor_names(c.n_layers).expect("names");
    assert!(!names.contains(&"output.weight".to_string()), "tied");
    assert!(names.contains(&"blk.1.attn_q.bias".to_string()));
    // A layer past the config's count has no GGUF name.
    let e = src
        .gguf_tensor_names(1)
        .expect_err("stray layer")
        .to_string();
    assert!(e.contains("model.layers.1."), "{e}");
}
