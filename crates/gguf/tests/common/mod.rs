//! Helpers shared by the integration tests: asset lookup, a deterministic
//! pseudo-random generator, a sample file with every value type and dtype,
//! and comparison against the gguf-py golden facts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use smelt_gguf::{GgufFile, GgufWriter, Value};
use smelt_tensor::DType;

/// The models read by the real-file tests.
pub const STORIES: &str = "stories260K.gguf";
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// Path of a downloaded model; panics with instructions if it is missing.
pub fn asset(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SMELT_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/smelt/assets")
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test asset {} is missing: run scripts/fetch-assets.sh (or set SMELT_ASSETS)",
        path.display()
    );
    path
}

/// Directory of this crate's committed test data.
pub fn test_data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

/// splitmix64: a tiny deterministic generator so fixtures are reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    /// A finite float in roughly [-1000, 1000).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2000.0 - 1000.0
    }
    pub fn string(&mut self) -> String {
        const PIECES: [&str; 8] = ["a", "Ġt", "é", "✓", "日本", "<|im_end|>", " ", "🦀"];
        let n = 1 + self.below(6);
        (0..n).map(|_| PIECES[self.below(8) as usize]).collect()
    }
}

/// One random scalar of every type (and a string).
pub fn random_scalars(rng: &mut Rng) -> Vec<Value> {
    vec![
        Value::U8(rng.next_u64() as u8),
        Value::I8(rng.next_u64() as i8),
        Value::U16(rng.next_u64() as u16),
        Value::I16(rng.next_u64() as i16),
        Value::U32(rng.next_u64() as u32),
        Value::I32(rng.next_u64() as i32),
        Value::U64(rng.next_u64()),
        Value::I64(rng.next_u64() as i64),
        Value::F32(rng.f64() as f32),
        Value::F64(rng.f64()),
        Value::Bool(rng.below(2) == 1),
        Value::String(rng.string()),
    ]
}

/// A random array of `len` values of the same type as `like`.
pub fn random_array_like(rng: &mut Rng, like: &Value, len: usize) -> Value {
    let pos = random_scalars(&mut Rng(0))
        .iter()
        .position(|v| v.type_name() == like.type_name())
        .unwrap_or(0);
    Value::Array(
        (0..len)
            .map(|_| random_scalars(rng).swap_remove(pos))
            .collect(),
    )
}

/// A writer holding every value type (scalars, flat arrays of each, nested
/// arrays up to three levels, an empty array) and one tensor of every dtype,
/// all filled from `seed`. `alignment` is set as `general.alignment` when given.
pub fn sample_writer(seed: u64, alignment: Option<u32>) -> GgufWriter {
    let mut rng = Rng(seed);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("smelt-test".into()));
    if let Some(a) = alignment {
        w.set("general.alignment", Value::U32(a));
    }
    for v in random_scalars(&mut rng) {
        w.set(format!("test.scalar.{}", v.type_name()), v);
    }
    w.set("test.bool.true", Value::Bool(true));
    w.set("test.bool.false", Value::Bool(false));
    w.set("test.i64.min", Value::I64(i64::MIN));
    w.set("test.u64.max", Value::U64(u64::MAX));
    w.set("test.string.empty", Value::String(String::new()));
    for like in random_scalars(&mut rng) {
        let len = 2 + rng.below(9) as usize;
        let array = random_array_like(&mut rng, &like, len);
        w.set(format!("test.array.{}", like.type_name()), array);
    }
    let nested = Value::Array(vec![
        random_array_like(&mut rng, &Value::I32(0), 2),
        random_array_like(&mut rng, &Value::I32(0), 3),
        random_array_like(&mut rng, &Value::I32(0), 1),
    ]);
    w.set("test.nested.i32", nested);
    let strings = Value::Array(vec![
        random_array_like(&mut rng, &Value::String(String::new()), 2),
        random_array_like(&mut rng, &Value::String(String::new()), 4),
    ]);
    w.set("test.nested.string", strings);
    let deep = Value::Array(vec![
        Value::Array(vec![
            random_array_like(&mut rng, &Value::F32(0.0), 2),
            random_array_like(&mut rng, &Value::F32(0.0), 1),
        ]),
        Value::Array(vec![random_array_like(&mut rng, &Value::F32(0.0), 3)]),
    ]);
    w.set("test.nested.deep", deep);
    // Inner arrays carry their own element type, so they may differ.
    let mixed_inner = Value::Array(vec![
        random_array_like(&mut rng, &Value::U8(0), 2),
        random_array_like(&mut rng, &Value::F64(0.0), 2),
    ]);
    w.set("test.nested.mixed_inner", mixed_inner);
    w.set("test.array.empty", Value::Array(vec![]));
    for dtype in DType::ALL {
        let block = dtype.block_elems() as u64;
        let dims = [block * (1 + rng.below(3)), 1 + rng.below(3)];
        let n = dtype.row_bytes(dims[0]).map(|r| r * dims[1]).unwrap_or(0);
        let data = rng.bytes(n as usize);
        w.add_tensor(format!("tensor.{}", dtype.name()), dims, dtype, data)
            .unwrap_or_else(|e| panic!("sample tensor of {dtype} rejected: {e}"));
    }
    w
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// gguf-py's name for a value's type (`UINT32`, `ARRAY[STRING]`, `ARRAY[ARRAY][INT32]`).
pub fn gguf_py_type(v: &Value) -> String {
    fn scalar(v: &Value) -> &'static str {
        match v {
            Value::U8(_) => "UINT8",
            Value::I8(_) => "INT8",
            Value::U16(_) => "UINT16",
            Value::I16(_) => "INT16",
            Value::U32(_) => "UINT32",
            Value::I32(_) => "INT32",
            Value::U64(_) => "UINT64",
            Value::I64(_) => "INT64",
            Value::F32(_) => "FLOAT32",
            Value::F64(_) => "FLOAT64",
            Value::Bool(_) => "BOOL",
            Value::String(_) => "STRING",
            Value::Array(_) => "ARRAY",
        }
    }
    // gguf-py records the element type chain of the first element at each level.
    let mut out = scalar(v).to_owned();
    let mut cur = v;
    let mut first = true;
    while let Value::Array(items) = cur {
        let Some(head) = items.first() else { break };
        out.push_str(if first { "[" } else { "][" });
        out.push_str(scalar(head));
        first = false;
        cur = head;
    }
    if !first || matches!(v, Value::Array(items) if items.is_empty()) {
        // gguf-py writes `ARRAY[]` for an empty array: no element type is recorded.
        if first {
            out.push('[');
        }
        out.push(']');
    }
    out
}

/// The leaf values of a (possibly nested) array, depth first.
pub fn leaves(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().flat_map(leaves).collect(),
        other => vec![other],
    }
}

/// Whether a leaf value equals the JSON number/string/bool gguf-py produced.
pub fn leaf_matches(v: &Value, j: &Json) -> bool {
    match v {
        Value::String(s) => j.as_str() == Some(s.as_str()),
        Value::Bool(b) => j.as_bool() == Some(*b),
        Value::F32(f) => j.as_f64() == Some(f64::from(*f)),
        Value::F64(f) => j.as_f64() == Some(*f),
        Value::U64(u) => j.as_u64() == Some(*u),
        Value::Array(_) => false,
        other => other.as_i64().is_some() && j.as_i64() == other.as_i64(),
    }
}

/// The exact bytes the writer produces for one metadata entry.
pub fn encoded_entry(key: &str, value: &Value) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set(key, value.clone());
    let bytes = w
        .to_bytes()
        .unwrap_or_else(|e| panic!("re-encoding `{key}` failed: {e}"));
    // The 24-byte header, then the entry, then zero padding to the alignment.
    bytes[24..].to_vec()
}

/// Compares an opened file with the gguf-py facts JSON at `golden` in every
/// detail the JSON records; panics naming the first difference.
pub fn check_against_facts(file: &GgufFile, golden: &Path, hash_tensors: bool) {
    let text = std::fs::read_to_string(golden)
        .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", golden.display()));
    let facts: Json = serde_json::from_str(&text).expect("golden is valid JSON");
    let name = facts["file"].as_str().unwrap_or("?");
    assert_eq!(
        file.bytes().len() as u64,
        facts["file_len"].as_u64().unwrap(),
        "{name}: file length"
    );
    assert_eq!(
        u64::from(file.version()),
        facts["version"].as_u64().unwrap(),
        "{name}: version"
    );
    assert_eq!(
        file.alignment(),
        facts["alignment"].as_u64().unwrap(),
        "{name}: alignment"
    );
    assert_eq!(
        file.data_offset(),
        facts["data_offset"].as_u64().unwrap(),
        "{name}: data offset"
    );

    let meta = facts["metadata"].as_array().unwrap();
    assert_eq!(
        file.metadata().len(),
        meta.len(),
        "{name}: metadata entry count"
    );
    for ((key, value), want) in file.metadata().iter().zip(meta) {
        assert_eq!(key, want["key"].as_str().unwrap(), "{name}: key order");
        assert_eq!(
            gguf_py_type(value),
            want["type"].as_str().unwrap(),
            "{name}: type of `{key}`"
        );
        let entry = encoded_entry(key, value);
        let n = want["entry_bytes"].as_u64().unwrap() as usize;
        assert!(
            entry.len() >= n,
            "{name}: `{key}` re-encodes shorter than the file entry"
        );
        assert!(
            entry[n..].iter().all(|&b| b == 0),
            "{name}: `{key}` re-encodes longer"
        );
        assert_eq!(
            sha256_hex(&entry[..n]),
            want["entry_sha256"].as_str().unwrap(),
            "{name}: bytes of `{key}` re-encoded by the writer differ from the file"
        );
        if let Some(len) = want.get("len") {
            assert_eq!(
                leaves(value).len() as u64,
                len.as_u64().unwrap(),
                "{name}: length of `{key}`"
            );
        }
        if let Some(want_value) = want.get("value") {
            assert!(
                leaf_matches(value, want_value),
                "{name}: `{key}` is {value:?}, gguf-py says {want_value}"
            );
        }
        if let Some(want_leaves) = want.get("leaves") {
            let got = leaves(value);
            let want_leaves = want_leaves.as_array().unwrap();
            assert_eq!(got.len(), want_leaves.len(), "{name}: leaves of `{key}`");
            for (g, w) in got.iter().zip(want_leaves) {
                assert!(
                    leaf_matches(g, w),
                    "{name}: `{key}` leaf {g:?} vs gguf-py {w}"
                );
            }
        }
    }

    let tensors = facts["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), tensors.len(), "{name}: tensor count");
    for (t, want) in file.tensors().iter().zip(tensors) {
        let tname = &t.name;
        assert_eq!(
            tname,
            want["name"].as_str().unwrap(),
            "{name}: tensor order"
        );
        let dims: Vec<u64> = want["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, dims, "{name}: dims of `{tname}`");
        assert_eq!(
            t.dtype.name(),
            want["type"].as_str().unwrap(),
            "{name}: type of `{tname}`"
        );
        assert_eq!(
            t.offset,
            want["offset"].as_u64().unwrap(),
            "{name}: offset of `{tname}`"
        );
        assert_eq!(
            t.n_bytes,
            want["n_bytes"].as_u64().unwrap(),
            "{name}: size of `{tname}`"
        );
        let data = file.tensor_data(t);
        assert_eq!(
            data.len() as u64,
            t.n_bytes,
            "{name}: data slice of `{tname}`"
        );
        if hash_tensors {
            assert_eq!(
                sha256_hex(data),
                want["sha256"].as_str().unwrap(),
                "{name}: bytes of `{tname}`"
            );
        }
    }
}
