//! `smelt convert HF_DIR OUT.gguf`: every architecture fixture of
//! crates/model (tiny random HF models with transformers' logits, made by
//! scripts/make_arch_fixtures.py) converted to GGUF and run by Smelt from
//! the GGUF alone: f32 gives transformers' logits, holds exactly the values
//! of the llama.cpp-style fixture GGUF, and carries a tokenizer that
//! encodes as the HF one; q8_0 keeps the argmax.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use smelt_backend::{ReferenceBackend, argmax};
use smelt_convert::{ConvertError, HfDirSource, Mix, Options, convert_to_file};
use smelt_gguf::GgufFile;
use smelt_model::{Batch, KV_BLOCK_SIZE, KvType, Model, ModelConfig};
use smelt_tensor::dequantize_row;
use smelt_text::hf::HfTextConfig;
use smelt_text::tokenizer::Tokenizer;

const FAMILIES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3"];

/// Largest |Δlogit| against transformers for an f32 conversion.
const MAX_ABS_DIFF: f32 = 1e-3;

#[derive(Deserialize)]
struct Golden {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn fixture(family: &str) -> (PathBuf, Golden) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/fixtures")
        .join(family);
    let text = std::fs::read_to_string(dir.join("golden.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    (dir, serde_json::from_str(&text).expect("golden JSON"))
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-hfconv-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn convert(dir: &Path, out: &Path, mix: Mix) -> GgufFile {
    let source = HfDirSource::open(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(source.notes().is_empty(), "{:?}", source.notes());
    convert_to_file(&source, out, &mut Options::new(mix)).expect("convert");
    GgufFile::open(out).expect("open the converted file")
}

/// Logits of every position of `tokens`, in one prefill.
fn logits(file: GgufFile, tokens: &[u32]) -> Vec<Vec<f32>> {
    let model = Model::load(Arc::new(file), ReferenceBackend).expect("load the converted GGUF");
    let n_blocks = tokens.len().div_ceil(KV_BLOCK_SIZE);
    let mut kv = model.new_kv(n_blocks, KvType::F32).expect("kv");
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let tables = vec![&table[..]; tokens.len()];
    let positions: Vec<u32> = (0..tokens.len() as u32).collect();
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let batch = Batch {
        tokens,
        positions: &positions,
        block_tables: &tables,
        logits_rows: &rows,
    };
    let l = model.forward(&mut kv, &batch).expect("forward");
    (0..l.rows).map(|r| l.row(r).to_vec()).collect()
}

/// (positions whose argmax matches, max |Δ|).
fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (usize, f32) {
    let mut same = 0;
    let mut max_diff = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        same += usize::from(argmax(g) == argmax(w));
        for (a, b) in g.iter().zip(w) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    (same, max_diff)
}

fn values(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    let row_len = t.row_len() as usize;
    let data = file.tensor_data(t);
    let row_bytes = data.len() / t.n_rows() as usize;
    let mut out = vec![0f32; t.n_elements() as usize];
    for (src, dst) in data
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(row_len))
    {
        dequantize_row(t.dtype, src, dst);
    }
    out
}

#[test]
fn f32_conversion_of_every_family_gives_transformers_logits() {
    let tmp = scratch("f32");
    for family in FAMILIES {
        let (dir, golden) = fixture(family);
        let out = tmp.join(format!("{family}.gguf"));
        let file = convert(&dir, &out, Mix::F32);

        // The same config, tensors and values as the llama.cpp-style fixture GGUF.
        let reference = GgufFile::open(&dir.with_extension("gguf")).expect("fixture gguf");
        assert_eq!(
            ModelConfig::from_gguf(&file).expect("config"),
            ModelConfig::from_gguf(&reference).expect("fixture config"),
            "{family}"
        );
        let mut ours: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
        let mut theirs: Vec<&str> = reference
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "{family}: tensor names");
        for name in &ours {
            let (a, b) = (values(&file, name), values(&reference, name));
            // rope_freqs is computed (f64 → f32) rather than copied.
            let tol = if *name == "rope_freqs.weight" {
                1e-6
            } else {
                0.0
            };
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= tol * y.abs(),
                    "{family} {name}: {x} vs {y}"
                );
            }
        }

        let (same, max_diff) = compare(&logits(file, &golden.tokens), &golden.logits);
        eprintln!(
            "{family} f32: argmax {same}/{}, max |Δ| {max_diff:.2e}",
            golden.tokens.len()
        );
        assert_eq!(same, golden.tokens.len(), "{family}: argmax");
        assert!(max_diff <= MAX_ABS_DIFF, "{family}: max |Δ| {max_diff}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn q8_0_conversion_keeps_the_argmax() {
    let tmp = scratch("q8");
    for family in FAMILIES {
        let (dir, golden) = fixture(family);
        let out = tmp.join(format!("{family}.gguf"));
        let file = convert(&dir, &out, Mix::Q8_0);
        assert!(
            file.tensors()
                .iter()
                .any(|t| t.dtype == smelt_tensor::DType::Q8_0),
            "{family}: nothing was quantized"
        );
        let n = golden.tokens.len();
        let (same, max_diff) = compare(&logits(file, &golden.tokens), &golden.logits);
        eprintln!("{family} q8_0: argmax {same}/{n}, max |Δ| {max_diff:.3}");
        // Measured: 24/24 positions keep the argmax (phi3: 23, a position
        // whose top-2 gap is near the fixtures' 0.01 minimum); max |Δ| 0.08
        // to 0.11, qwen2 0.30 (its tied, larger embedding is the Q8_0 output).
        assert!(same + 1 >= n, "{family}: argmax at only {same} of {n}");
        assert!(max_diff < 0.4, "{family}: max |Δ| {max_diff}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn the_converted_tokenizer_encodes_as_the_hf_one() {
    let tmp = scratch("tok");
    let (dir, _) = fixture("qwen2");
    let file = convert(&dir, &tmp.join("qwen2.gguf"), Mix::F16);
    let ours = Tokenizer::from_gguf(&file).expect("tokenizer from the GGUF");
    let hf = HfTextConfig::from_dir(&dir).expect("HF tokenizer");
    for text in [
        "the cat in the sea",
        "<s>Hello, world!</s> and then some\n\n  spaces\tand\ttabs",
        "numbers 12345 and émigré ünïcödé 日本語 🙂",
        "there are rivers; one's and they're",
    ] {
        assert_eq!(
            ours.encode(text, true, true),
            hf.tokenizer.encode(text, true, true),
            "{text:?}"
        );
    }
    assert_eq!(
        ours.end_of_generation_ids(),
        hf.tokenizer.end_of_generation_ids()
    );
    assert_eq!(ours.bos_id(), hf.tokenizer.bos_id());
    assert_eq!(
        file.get_str("tokenizer.chat_template"),
        hf.chat_template.as_deref()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn broken_directories_are_refused_by_name() {
    let tmp = scratch("broken");
    let (src, _) = fixture("qwen2");
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let config = std::fs::read_to_string(src.join("config.json")).expect("config");
    let open_err = |dir: &Path| match HfDirSource::open(dir) {
        Ok(_) => panic!("opened a broken directory"),
        Err(e) => e.to_string(),
    };
    let e = open_err(&dir);
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"qwen2\"", "\"gpt2\""),
    )
    .expect("write");
    let e = open_err(&dir);
    assert!(e.contains("gpt2"), "{e}");
    // A mixed sliding window (Qwen2 max_window_layers) has no GGUF spelling.
    std::fs::write(
        dir.join("config.json"),
        config
            .replace(
                "\"use_sliding_window\": false",
                "\"use_sliding_window\": true",
            )
            .replace("\"sliding_window\": null", "\"sliding_window\": 4")
            .replace("\"max_window_layers\": 28", "\"max_window_layers\": 1")
            .replace(
                "\"layer_types\": [\n    \"full_attention\",\n    \"full_attention\"\n  ],\n",
                "",
            ),
    )
    .expect("write");
    let e = open_err(&dir);
    assert!(e.contains("sliding_window"), "{e}");
    // A truncated safetensors file.
    std::fs::write(dir.join("config.json"), &config).expect("write");
    let bytes = std::fs::read(src.join("model.safetensors")).expect("read");
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).expect("write");
    let e = open_err(&dir);
    assert!(e.contains("model.safetensors"), "{e}");
    // A bad tokenizer.json.
    std::fs::write(dir.join("model.safetensors"), &bytes).expect("write");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 3").expect("write");
    let e = open_err(&dir);
    assert!(e.contains("tokenizer.json"), "{e}");
    assert!(matches!(
        HfDirSource::open(&dir),
        Err(ConvertError::HfText(_))
    ));
    let _ = std::fs::remove_dir_all(&tmp);
}
