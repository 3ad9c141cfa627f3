//! Malformed files get the right error variant (and a message naming where),
//! never a panic. Most cases patch a file the writer made; a few are built
//! byte by byte where the writer (rightly) refuses to produce them.

mod common;

use common::Rng;
use smelt_gguf::{GgufError, GgufFile, GgufWriter, MAX_ARRAY_DEPTH, Value};
use smelt_tensor::{DType, DTypeError};

/// Byte position of the first occurrence of `needle`; panics if absent.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(needle)))
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A small file: a few keys of different types and two tensors of random data.
fn small_writer() -> GgufWriter {
    let mut rng = Rng(42);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("test.flag", Value::Bool(true));
    w.set("test.count", Value::U32(7));
    w.set(
        "test.words",
        Value::Array(vec![
            Value::String("alpha".into()),
            Value::String("beta".into()),
        ]),
    );
    w.add_tensor("weight.f32", [4u64, 2], DType::F32, rng.bytes(32))
        .expect("valid");
    w.add_tensor("weight.q8", [32u64, 3], DType::Q8_0, rng.bytes(102))
        .expect("valid");
    w
}

fn small_file() -> Vec<u8> {
    small_writer().to_bytes().expect("writes")
}

fn parse_err(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("malformed file was accepted: {f:?}"),
        Err(e) => e,
    }
}

/// Offset just past a tensor's name inside its tensor info (where n_dims is).
fn tensor_info_at(bytes: &[u8], name: &str) -> usize {
    // The name is preceded by its u64 length; search for both to skip any
    // metadata string that happens to contain the name.
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    find(bytes, &needle) + needle.len()
}

/// Where the fields of a two-dimensional tensor's info start.
struct InfoFields {
    n_dims: usize,
    dim0: usize,
    dim1: usize,
    type_id: usize,
    offset: usize,
}

fn fields_of(bytes: &[u8], name: &str) -> InfoFields {
    let n_dims = tensor_info_at(bytes, name);
    InfoFields {
        n_dims,
        dim0: n_dims + 4,
        dim1: n_dims + 12,
        type_id: n_dims + 20,
        offset: n_dims + 24,
    }
}

#[test]
fn the_unpatched_small_file_is_valid() {
    let file = GgufFile::from_bytes(small_file()).expect("valid");
    assert_eq!(file.tensors().len(), 2);
    let q8 = fields_of(file.bytes(), "weight.q8");
    let rel = u64::from_le_bytes(file.bytes()[q8.offset..q8.offset + 8].try_into().unwrap());
    assert_eq!(
        file.tensor("weight.q8").unwrap().offset,
        file.data_offset() + rel
    );
}

#[test]
fn bad_magic() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGML");
    let err = parse_err(bytes);
    assert!(
        matches!(err, GgufError::BadMagic { found } if &found == b"GGML"),
        "{err:?}"
    );
    assert!(err.to_string().contains("GGUF"));
}

#[test]
fn every_truncation_is_an_error_until_the_last_tensor_is_whole() {
    let bytes = small_file();
    let whole = GgufFile::from_bytes(bytes.clone()).expect("valid");
    let data_end = whole
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    assert!(
        data_end < bytes.len(),
        "the writer pads after the last tensor"
    );
    for len in 0..bytes.len() {
        let result = GgufFile::from_bytes(bytes[..len].to_vec());
        if len >= data_end {
            // Only trailing padding is missing: still a complete file.
            let file = result.unwrap_or_else(|e| panic!("prefix {len} rejected: {e}"));
            assert_eq!(file.tensors(), whole.tensors());
            continue;
        }
        match result {
            Err(GgufError::Truncated {
                offset,
                needed,
                available,
                ..
            }) => {
                assert!(offset <= len as u64 && needed > available, "prefix {len}");
            }
            Err(GgufError::ImpossibleCount { .. } | GgufError::TensorOutOfBounds { .. }) => {}
            other => panic!("prefix {len} of {}: unexpected {other:?}", bytes.len()),
        }
    }
}

#[test]
fn versions_other_than_2_and_3_are_rejected() {
    for (version, ok) in [(1u32, false), (2, true), (3, true), (4, false), (0, false)] {
        let mut bytes = small_file();
        put_u32(&mut bytes, 4, version);
        match GgufFile::from_bytes(bytes) {
            Ok(f) => {
                assert!(ok, "version {version} accepted");
                assert_eq!(f.version(), version);
            }
            Err(GgufError::UnsupportedVersion { version: v }) => {
                assert!(!ok && v == version, "version {version}");
            }
            Err(e) => panic!("version {version}: unexpected {e:?}"),
        }
    }
    let err = parse_err({
        let mut b = small_file();
        put_u32(&mut b, 4, 1);
        b
    });
    assert!(err.to_string().contains("version 1"), "{err}");
}

#[test]
fn big_endian_files_are_named_as_such() {
    let mut bytes = small_file();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let err = parse_err(bytes);
    assert!(matches!(err, GgufError::BigEndian { .. }), "{err:?}");
    assert!(err.to_string().contains("big-endian"), "{err}");
}

#[test]
fn unknown_and_unsupported_tensor_types_name_the_tensor() {
    let bytes = small_file();
    let f = fields_of(&bytes, "weight.q8");
    let mut unknown = bytes.clone();
    put_u32(&mut unknown, f.type_id, 1000);
    let err = parse_err(unknown);
    assert!(
        matches!(&err, GgufError::TensorType { tensor, source: DTypeError::Unknown(1000), .. } if tensor == "weight.q8"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("weight.q8") && err.to_string().contains("1000"),
        "{err}"
    );

    let mut unsupported = bytes;
    put_u32(&mut unsupported, f.type_id, 16);
    let err = parse_err(unsupported);
    assert!(
        matches!(
            &err,
            GgufError::TensorType {
                source: DTypeError::Unsupported { id: 16, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("IQ2_XXS"), "{err}");
}

#[test]
fn tensor_data_past_the_end_of_the_file() {
    let bytes = small_file();
    let f = fields_of(&bytes, "weight.q8");
    for rel in [bytes.len() as u64 / 32 * 32, 1 << 40, u64::MAX - 31] {
        let mut b = bytes.clone();
        put_u64(&mut b, f.offset, rel);
        let err = parse_err(b);
        assert!(
            matches!(&err, GgufError::TensorOutOfBounds { tensor, file_len, .. }
                if tensor == "weight.q8" && *file_len == bytes.len() as u64),
            "offset {rel}: {err:?}"
        );
    }
    // A shape too big for the file, at a valid offset.
    let mut b = bytes.clone();
    put_u64(&mut b, f.dim1, 1000);
    assert!(matches!(parse_err(b), GgufError::TensorOutOfBounds { .. }));
}

#[test]
fn misaligned_tensor_offset() {
    let bytes = small_file();
    let f = fields_of(&bytes, "weight.q8");
    let mut b = bytes.clone();
    let rel = u64::from_le_bytes(b[f.offset..f.offset + 8].try_into().unwrap());
    put_u64(&mut b, f.offset, rel + 4);
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::MisalignedTensor { tensor, offset, alignment: 32 }
            if tensor == "weight.q8" && *offset == rel + 4),
        "{err:?}"
    );
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    for (at, what) in [(8usize, "tensor count"), (16, "metadata key/value count")] {
        for count in [u64::MAX, 1 << 40, 100_000] {
            let mut b = small_file();
            put_u64(&mut b, at, count);
            let err = parse_err(b);
            assert!(
                matches!(&err, GgufError::ImpossibleCount { count: c, offset, .. } if *c == count && *offset == at as u64),
                "{what} = {count}: {err:?}"
            );
            assert!(err.to_string().contains(what), "{err}");
        }
    }
    // An array length.
    let mut b = small_file();
    let words = find(&b, b"test.words") + "test.words".len();
    // type id (9), element type (8), then the u64 length.
    put_u64(&mut b, words + 8, u64::MAX);
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::ImpossibleCount { what, .. } if what.contains("test.words")),
        "{err:?}"
    );
}

#[test]
fn string_lengths_past_the_end() {
    let bytes = small_file();
    let len_at = find(&bytes, b"general.architecture") - 8;
    for len in [bytes.len() as u64, u64::MAX, u64::MAX / 2] {
        let mut b = bytes.clone();
        put_u64(&mut b, len_at, len);
        let err = parse_err(b);
        assert!(
            matches!(&err, GgufError::Truncated { needed, offset, .. } if *needed == len && *offset == len_at as u64 + 8),
            "{err:?}"
        );
    }
    // A string value's length.
    let mut b = bytes.clone();
    let value_len_at = find(&bytes, b"general.architecture") + "general.architecture".len() + 4;
    put_u64(&mut b, value_len_at, 1 << 50);
    let err = parse_err(b);
    assert!(err.to_string().contains("general.architecture"), "{err}");
}

#[test]
fn bad_alignment_values() {
    let mut w = small_writer();
    w.set("general.alignment", Value::U32(32));
    let bytes = w.to_bytes().expect("writes");
    let value_at = find(&bytes, b"general.alignment") + "general.alignment".len() + 4;
    for bad in [0u32, 3, 48, u32::MAX] {
        let mut b = bytes.clone();
        put_u32(&mut b, value_at, bad);
        let err = parse_err(b);
        assert!(
            matches!(&err, GgufError::BadAlignment { value } if value.contains(&bad.to_string())),
            "{bad}: {err:?}"
        );
    }
    // The right number with the wrong type: written under another key, then renamed.
    let mut w = small_writer();
    w.set("general.alignmenX", Value::U64(32));
    let mut b = w.to_bytes().expect("writes");
    let x = find(&b, b"general.alignmenX") + "general.alignmen".len();
    b[x] = b't';
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::BadAlignment { value } if value.contains("u64")),
        "{err:?}"
    );
}

#[test]
fn a_larger_alignment_moves_the_data_section() {
    let mut w = small_writer();
    w.set("general.alignment", Value::U32(256));
    let file = GgufFile::from_bytes(w.to_bytes().expect("writes")).expect("valid");
    assert_eq!(file.alignment(), 256);
    assert_eq!(file.data_offset() % 256, 0);
    assert!(file.tensors().iter().all(|t| t.offset % 256 == 0));
}

#[test]
fn invalid_utf8_names_the_string() {
    let bytes = small_file();
    // In a key.
    let mut b = bytes.clone();
    let key_at = find(&b, b"test.count");
    b[key_at + 2] = 0xff;
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::InvalidUtf8 { what, offset, .. } if what.contains("key") && *offset == key_at as u64),
        "{err:?}"
    );
    // In a string value: the message names the key.
    let mut b = bytes.clone();
    b[find(&bytes, b"alpha")] = 0xc3;
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::InvalidUtf8 { what, .. } if what.contains("test.words")),
        "{err:?}"
    );
    // In a tensor name.
    let mut b = bytes.clone();
    b[find(&bytes, b"weight.q8")] = 0x80;
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::InvalidUtf8 { what, .. } if what.contains("tensor")),
        "{err:?}"
    );
}

#[test]
fn unknown_value_types_and_bad_bools() {
    let bytes = small_file();
    let count_type = find(&bytes, b"test.count") + "test.count".len();
    for id in [13u32, 100, u32::MAX] {
        let mut b = bytes.clone();
        put_u32(&mut b, count_type, id);
        let err = parse_err(b);
        assert!(
            matches!(&err, GgufError::UnknownValueType { key, type_id, offset }
                if key == "test.count" && *type_id == id && *offset == count_type as u64),
            "{err:?}"
        );
    }
    let mut b = bytes.clone();
    let elem_type = find(&bytes, b"test.words") + "test.words".len() + 4;
    put_u32(&mut b, elem_type, 99);
    assert!(matches!(
        parse_err(b),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));

    let flag = find(&bytes, b"test.flag") + "test.flag".len() + 4;
    assert_eq!(bytes[flag], 1);
    let mut b = bytes;
    b[flag] = 2;
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::InvalidBool { key, byte: 2, offset } if key == "test.flag" && *offset == flag as u64),
        "{err:?}"
    );
}

/// A file with no tensors and one key holding `levels` nested arrays around one u8.
fn nested_file(levels: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 1..levels {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(0xab);
    b
}

#[test]
fn array_nesting_is_bounded() {
    let file = GgufFile::from_bytes(nested_file(MAX_ARRAY_DEPTH)).expect("16 levels are fine");
    let mut v = file.get("deep").expect("key");
    for _ in 0..MAX_ARRAY_DEPTH {
        v = &v.as_array().expect("array level")[0];
    }
    assert_eq!(v, &Value::U8(0xab));
    for levels in [MAX_ARRAY_DEPTH + 1, 100_000] {
        let err = parse_err(nested_file(levels));
        assert!(
            matches!(&err, GgufError::ArrayTooDeep { key, .. } if key == "deep"),
            "{err:?}"
        );
    }
    // The writer refuses to produce what the reader refuses.
    let mut deep = Value::U8(1);
    for _ in 0..=MAX_ARRAY_DEPTH {
        deep = Value::Array(vec![deep]);
    }
    let mut w = GgufWriter::new();
    w.set("deep", deep);
    assert!(matches!(w.to_bytes(), Err(GgufError::InvalidValue { .. })));
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut w = small_writer();
    w.set("dup.a", Value::U8(1));
    w.set("dup.b", Value::U8(2));
    let mut b = w.to_bytes().expect("writes");
    let second = find(&b, b"dup.b");
    b[second + 4] = b'a';
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::DuplicateKey { key, offset } if key == "dup.a" && *offset == second as u64 - 8),
        "{err:?}"
    );

    let mut w = small_writer();
    w.add_tensor("dup.1", [8u64], DType::F32, vec![7; 32])
        .expect("valid");
    w.add_tensor("dup.2", [8u64], DType::F32, vec![9; 32])
        .expect("valid");
    let mut b = w.to_bytes().expect("writes");
    let second = find(&b, b"dup.2");
    b[second + 4] = b'1';
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::DuplicateTensor { tensor, offset } if tensor == "dup.1" && *offset == second as u64 - 8),
        "{err:?}"
    );
}

#[test]
fn bad_shapes() {
    let bytes = small_file();
    let f = fields_of(&bytes, "weight.f32");
    let q = fields_of(&bytes, "weight.q8");

    let mut b = bytes.clone();
    put_u32(&mut b, f.n_dims, 9);
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::TooManyDims { n_dims: 9, tensor, .. } if tensor == "weight.f32"),
        "{err:?}"
    );
    let mut b = bytes.clone();
    put_u32(&mut b, f.n_dims, u32::MAX);
    assert!(matches!(parse_err(b), GgufError::TooManyDims { .. }));

    let mut b = bytes.clone();
    put_u64(&mut b, f.dim1, 0);
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::ZeroDim { axis: 1, .. }),
        "{err:?}"
    );

    let mut b = bytes.clone();
    put_u64(&mut b, q.dim0, 33);
    let err = parse_err(b);
    assert!(
        matches!(&err, GgufError::TensorShape { tensor, source: DTypeError::RaggedRow { .. }, .. } if tensor == "weight.q8"),
        "{err:?}"
    );

    let mut b = bytes.clone();
    put_u64(&mut b, f.dim0, 1 << 62);
    put_u64(&mut b, f.dim1, 8);
    assert!(matches!(parse_err(b), GgufError::ShapeOverflow { .. }));

    let mut b = bytes;
    put_u64(&mut b, f.dim0, 1 << 62);
    put_u64(&mut b, f.dim1, 1);
    let err = parse_err(b);
    assert!(
        matches!(
            &err,
            GgufError::TensorShape {
                source: DTypeError::Overflow { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn tensor_data_of_a_foreign_tensor_info_does_not_panic() {
    let file = GgufFile::from_bytes(small_file()).expect("valid");
    let mut foreign = file.tensors()[0].clone();
    foreign.offset = u64::MAX - 2;
    assert!(file.tensor_data(&foreign).is_empty());
    foreign.offset = 0;
    foreign.n_bytes = u64::MAX;
    assert!(file.tensor_data(&foreign).is_empty());
}

#[test]
fn writer_rejects_bad_tensors_and_values() {
    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("t", [4u64, 2], DType::F32, vec![1; 31])
        .expect_err("short data");
    assert!(
        matches!(
            &err,
            GgufError::TensorDataSize {
                expected: 32,
                actual: 31,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("`t`"), "{err}");
    w.add_tensor("t", [4u64, 2], DType::F32, vec![1; 32])
        .expect("valid");
    assert!(matches!(
        w.add_tensor("t", [4u64], DType::F32, vec![1; 16]),
        Err(GgufError::TensorAlreadyAdded { .. })
    ));
    assert!(matches!(
        w.add_tensor("z", [4u64, 0], DType::F32, vec![]),
        Err(GgufError::ZeroDim { .. })
    ));
    assert!(matches!(
        w.add_tensor("r", [33u64], DType::Q8_0, vec![1; 34]),
        Err(GgufError::TensorShape { .. })
    ));
    assert!(matches!(
        w.add_tensor("d", vec![1u64; 9], DType::F32, vec![1; 4]),
        Err(GgufError::TooManyDims { .. })
    ));
    assert_eq!(w.tensor_count(), 1);

    let mut mixed = GgufWriter::new();
    mixed.set("m", Value::Array(vec![Value::U8(1), Value::I8(1)]));
    let err = mixed.to_bytes().expect_err("mixed array");
    assert!(
        matches!(&err, GgufError::InvalidValue { key, .. } if key == "m"),
        "{err:?}"
    );

    for bad in [
        Value::U32(0),
        Value::U32(12),
        Value::U64(32),
        Value::String("32".into()),
    ] {
        let mut a = GgufWriter::new();
        a.set("general.alignment", bad.clone());
        assert!(
            matches!(a.to_bytes(), Err(GgufError::BadAlignment { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn setting_a_key_again_replaces_it_in_place() {
    let mut w = GgufWriter::new();
    w.set("a", Value::U8(1));
    w.set("b", Value::U8(2));
    w.set("a", Value::String("x".into()));
    let file = GgufFile::from_bytes(w.to_bytes().expect("writes")).expect("valid");
    let keys: Vec<&str> = file.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(file.get_str("a"), Some("x"));
}

#[test]
fn empty_and_tiny_inputs() {
    for bytes in [&b""[..], b"G", b"GGU", b"GGUF", b"GGUF\x03\0\0"] {
        assert!(
            matches!(parse_err(bytes.to_vec()), GgufError::Truncated { .. }),
            "{bytes:?}"
        );
    }
    // A header with no keys and no tensors is a valid (empty) file.
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let file = GgufFile::from_bytes(b).expect("empty file");
    assert!(file.metadata().is_empty() && file.tensors().is_empty());
}
