//! `smelt quantize` end to end: type mixes against a real llama.cpp file,
//! every --type on stories260K and on a synthetic model with K-quant-sized
//! rows, metadata carried over, error bounds, and atomic output.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use smelt_convert::{
    ConvertError, GgufSource, Mix, Options, TensorSource, convert_to_file, mix::PositionCounter,
    mix_type, quantize_file, temp_path, tensor_type,
};
use smelt_gguf::{GgufFile, GgufWriter, Value};
use smelt_tensor::{DType, dequantize_row};

fn asset(name: &str) -> PathBuf {
    let dir = std::env::var_os("SMELT_ASSETS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/smelt/assets")
        },
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.exists(),
        "missing test asset {}: run scripts/fetch-assets.sh (or set SMELT_ASSETS)",
        path.display()
    );
    path
}

/// A fresh empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-convert-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read scratch dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn dequantize_tensor(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    let row_len = t.row_len() as usize;
    let row_bytes = t.dtype.row_bytes(t.row_len()).expect("row bytes") as usize;
    let mut out = vec![0.0f32; t.n_elements() as usize];
    for (src, dst) in file
        .tensor_data(t)
        .chunks(row_bytes)
        .zip(out.chunks_mut(row_len))
    {
        dequantize_row(t.dtype, src, dst);
    }
    out
}

fn relative_rmse(want: &[f32], got: &[f32]) -> f64 {
    let err: f64 = want
        .iter()
        .zip(got)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let sig: f64 = want.iter().map(|&a| f64::from(a).powi(2)).sum();
    (err / sig.max(f64::MIN_POSITIVE)).sqrt()
}

/// The Gaussian bounds of smelt-tensor's round-trip test, with room for real
/// (heavier-tailed, small) tensors.
fn bound(dtype: DType) -> f64 {
    let gaussian = match dtype {
        DType::F32 => return 0.0,
        DType::F16 => 0.00023,
        DType::BF16 => 0.0018,
        DType::Q8_0 => 0.0059,
        DType::Q6K => 0.0185,
        DType::Q5_1 => 0.042,
        DType::Q5K => 0.038,
        DType::Q5_0 => 0.047,
        DType::Q4_1 => 0.086,
        DType::Q4K => 0.077,
        DType::Q4_0 => 0.095,
        other => panic!("unexpected output type {other}"),
    };
    1.5 * gaussian
}

/// Checks an output file against its source: same metadata except
/// `general.file_type` (and an added `general.quantization_version`), same
/// tensors in the same order with the mix's types, values within bounds.
fn check_output(input: &GgufFile, output: &GgufFile, mix: Mix) -> Vec<(String, DType, f64)> {
    let n_layers = input
        .get_str("general.architecture")
        .and_then(|a| input.get_u64(&format!("{a}.block_count")))
        .expect("block_count") as usize;
    for (key, value) in input.metadata() {
        if key == "general.file_type" {
            continue;
        }
        assert_eq!(
            output.get(key),
            Some(value),
            "{mix}: metadata {key} changed"
        );
    }
    assert_eq!(
        output.get_u64("general.file_type"),
        Some(u64::from(mix.file_type())),
        "{mix}: general.file_type"
    );
    for (key, _) in output.metadata() {
        assert!(
            input.get(key).is_some()
                || key == "general.file_type"
                || key == "general.quantization_version",
            "{mix}: unexpected key {key}"
        );
    }
    assert_eq!(input.tensors().len(), output.tensors().len());
    let mut positions = PositionCounter::default();
    let mut errors = Vec::new();
    for (a, b) in input.tensors().iter().zip(output.tensors()) {
        assert_eq!(
            (&a.name, &a.dims),
            (&b.name, &b.dims),
            "{mix}: tensor order"
        );
        let want = tensor_type(mix, &a.name, &a.dims, positions.next(&a.name), n_layers);
        assert_eq!(b.dtype, want, "{mix}: type of {}", a.name);
        let original = dequantize_tensor(input, &a.name);
        let converted = dequantize_tensor(output, &b.name);
        let rel = relative_rmse(&original, &converted);
        let limit = if a.dtype == b.dtype {
            0.0
        } else {
            bound(b.dtype)
        };
        assert!(
            rel <= limit,
            "{mix}: {} ({} -> {}) relative RMSE {rel:.5} > {limit}",
            a.name,
            a.dtype,
            b.dtype
        );
        errors.push((a.name.clone(), b.dtype, rel));
    }
    errors
}

#[test]
fn q4_k_m_reproduces_the_types_of_llama_cpp_qwen2_5_file() {
    let file = GgufFile::open(&asset("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
        .expect("open Qwen2.5 Q4_K_M");
    assert_eq!(file.get_u64("general.file_type"), Some(15)); // Q4_K_M
    let n_layers = file.get_u64("qwen2.block_count").expect("block_count") as usize;
    let mut positions = PositionCounter::default();
    let mut counts = std::collections::BTreeMap::new();
    for t in file.tensors() {
        let got = tensor_type(
            Mix::Q4KM,
            &t.name,
            &t.dims,
            positions.next(&t.name),
            n_layers,
        );
        assert_eq!(got, t.dtype, "{} {:?}", t.name, t.dims);
        *counts.entry(t.dtype.name()).or_insert(0) += 1;
    }
    // The file's mix has every kind of decision in it.
    assert!(counts.len() >= 5, "{counts:?}");
    assert_eq!(file.tensors().len(), 291);
    // Its layers are stored in string order (0, 1, 10, ...): layer 2 is the
    // 13th attn_v and gets no extra bits, although layer 2 of a file in
    // numeric order would.
    assert_eq!(
        file.tensor("blk.2.attn_v.weight").map(|t| t.dtype),
        Some(DType::Q5_0)
    );
    assert_eq!(
        mix_type(Mix::Q4KM, "blk.2.attn_v.weight", 24, 896),
        DType::Q8_0
    );
    assert_eq!(
        mix_type(Mix::Q4KM, "blk.2.ffn_down.weight", 24, 4864),
        DType::Q6K
    );
}

#[test]
fn stories260k_converts_to_every_type() {
    let input_path = asset("stories260K.gguf");
    let input = GgufFile::open(&input_path).expect("open stories260K");
    let dir = scratch("stories");
    for mix in Mix::ALL {
        let out = dir.join(format!("stories-{mix}.gguf"));
        let summary = quantize_file(&input_path, &out, &mut Options::new(mix))
            .unwrap_or_else(|e| panic!("{mix}: {e}"));
        assert_eq!(summary.tensors.len(), input.tensors().len());
        let output = GgufFile::open(&out).unwrap_or_else(|e| panic!("{mix}: output: {e}"));
        let errors = check_output(&input, &output, mix);
        let worst = errors
            .iter()
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .expect("tensors");
        eprintln!(
            "{mix}: worst tensor {} ({}) relative RMSE {:.5}",
            worst.0, worst.1, worst.2
        );
    }
    let mut listing = dir_listing(&dir);
    listing.retain(|n| n.contains(".tmp-"));
    assert!(listing.is_empty(), "temporary files left: {listing:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Deterministic xorshift64* in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A small llama-shaped F32 model with rows of 512 (whole 256-blocks), 16
/// layers, plus tokenizer-like metadata; `poison` puts a NaN in the last
/// tensor's row 3.
fn synthetic_model(path: &Path, poison: bool) {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.name", Value::String("synthetic".into()));
    w.set("general.file_type", Value::U32(0));
    w.set("llama.block_count", Value::U32(16));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("<s>".into()), Value::String("a".into())]),
    );
    w.set(
        "tokenizer.chat_template",
        Value::String("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
    );
    let mut add = |w: &mut GgufWriter, name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let data: Vec<u8> = (0..n)
            .flat_map(|_| (0.05 * rng.next_f32()).to_le_bytes())
            .collect();
        w.add_tensor(name, dims.to_vec(), DType::F32, data)
            .expect("add tensor");
    };
    add(&mut w, "token_embd.weight", &[512, 40]);
    for l in 0..16 {
        add(&mut w, &format!("blk.{l}.attn_norm.weight"), &[512]);
        add(&mut w, &format!("blk.{l}.attn_v.weight"), &[512, 8]);
        add(&mut w, &format!("blk.{l}.ffn_down.weight"), &[256, 16]);
    }
    add(&mut w, "output_norm.weight", &[512]);
    let n = 512 * 40;
    let mut last: Vec<f32> = (0..n).map(|_| 0.05 * rng.next_f32()).collect();
    if poison {
        last[3 * 512 + 17] = f32::NAN;
    }
    let bytes: Vec<u8> = last.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor("output.weight", vec![512, 40], DType::F32, bytes)
        .expect("add output");
    w.write(path).expect("write synthetic model");
}

#[test]
fn synthetic_model_exercises_the_k_quant_mixes() {
    let dir = scratch("synthetic");
    let input_path = dir.join("in.gguf");
    synthetic_model(&input_path, false);
    let input = GgufFile::open(&input_path).expect("open synthetic");
    for mix in [
        Mix::Q4KM,
        Mix::Q5KM,
        Mix::Q4K,
        Mix::Q5K,
        Mix::Q6K,
        Mix::Q8_0,
        Mix::BF16,
    ] {
        let out = dir.join(format!("{mix}.gguf"));
        quantize_file(&input_path, &out, &mut Options::new(mix))
            .unwrap_or_else(|e| panic!("{mix}: {e}"));
        let output = GgufFile::open(&out).expect("open output");
        check_output(&input, &output, mix);
        if mix == Mix::Q4KM {
            // 16 layers: more bits for layers 0, 1, 4, 7, 10, 13, 14, 15.
            for l in 0..16 {
                let want = if [0, 1, 4, 7, 10, 13, 14, 15].contains(&l) {
                    DType::Q6K
                } else {
                    DType::Q4K
                };
                for kind in ["attn_v", "ffn_down"] {
                    let t = output
                        .tensor(&format!("blk.{l}.{kind}.weight"))
                        .expect("tensor");
                    assert_eq!(t.dtype, want, "layer {l} {kind}");
                }
            }
            assert_eq!(
                output.tensor("output.weight").map(|t| t.dtype),
                Some(DType::Q6K)
            );
            assert_eq!(
                output.tensor("token_embd.weight").map(|t| t.dtype),
                Some(DType::Q4K)
            );
            assert_eq!(
                output.get_str("tokenizer.chat_template"),
                input.get_str("tokenizer.chat_template")
            );
        }
    }
    // Requantizing to the same type copies the stored bytes.
    let again = dir.join("again.gguf");
    quantize_file(&dir.join("q6_k.gguf"), &again, &mut Options::new(Mix::Q6K)).expect("again");
    let (a, b) = (
        GgufFile::open(&dir.join("q6_k.gguf")).expect("q6_k"),
        GgufFile::open(&again).expect("again"),
    );
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(a.tensor_data(x), b.tensor_data(y), "{}", x.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_conversion_leaves_nothing_behind() {
    let dir = scratch("failing");
    let input_path = dir.join("in.gguf");
    synthetic_model(&input_path, true);
    let out = dir.join("out.gguf");
    let err =
        quantize_file(&input_path, &out, &mut Options::new(Mix::Q4KM)).expect_err("NaN accepted");
    let msg = err.to_string();
    assert!(
        msg.contains("output.weight") && msg.contains("row 3") && msg.contains("NaN"),
        "{msg}"
    );
    assert_eq!(dir_listing(&dir), ["in.gguf"]);

    // Cancelled (Ctrl-C) before the first piece.
    let cancel = AtomicBool::new(true);
    let source = GgufSource::open(&input_path).expect("open");
    let mut options = Options::new(Mix::Q8_0);
    options.cancel = Some(&cancel);
    let err = convert_to_file(&source, &out, &mut options).expect_err("cancel ignored");
    assert!(matches!(err, ConvertError::Cancelled), "{err}");
    assert_eq!(dir_listing(&dir), ["in.gguf"]);
    assert!(!temp_path(&out).exists());

    // A truncated input.
    let bytes = std::fs::read(&input_path).expect("read");
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let err = quantize_file(&truncated, &out, &mut Options::new(Mix::Q8_0))
        .expect_err("truncated accepted");
    assert!(err.to_string().contains("truncated.gguf"), "{err}");
    assert_eq!(dir_listing(&dir), ["in.gguf", "truncated.gguf"]);

    // Output over the input.
    let err = quantize_file(&input_path, &input_path, &mut Options::new(Mix::Q8_0))
        .expect_err("output = input accepted");
    assert!(matches!(err, ConvertError::OutputIsInput(_)), "{err}");

    // An output directory that does not exist.
    let err = quantize_file(
        &input_path,
        &dir.join("no/such/dir/out.gguf"),
        &mut Options::new(Mix::Q8_0),
    )
    .expect_err("missing dir accepted");
    assert!(matches!(err, ConvertError::Write { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn progress_reaches_the_total_and_ends_writing() {
    let dir = scratch("progress");
    let input_path = dir.join("in.gguf");
    synthetic_model(&input_path, false);
    let source = GgufSource::open(&input_path).expect("open");
    let total: u64 = source
        .tensors()
        .iter()
        .map(|t| t.row_len() * t.n_rows())
        .sum();
    let mut seen = Vec::new();
    let mut record = |p: smelt_convert::Progress<'_>| seen.push((p.done, p.total, p.writing));
    let mut options = Options::new(Mix::Q4K);
    options.progress = Some(&mut record);
    convert_to_file(&source, &dir.join("out.gguf"), &mut options).expect("convert");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress went back"
    );
    assert!(seen.iter().all(|s| s.1 == total));
    assert_eq!(seen.last(), Some(&(total, total, true)));
    let _ = std::fs::remove_dir_all(&dir);
}
