//! Writer -> reader round trips: every value type (nested arrays included),
//! every dtype, several alignments; the committed writer fixture and what
//! gguf-py reads from it; a real model rewritten byte for byte.

mod common;

use common::{Rng, STORIES, asset, check_against_facts, random_scalars, sample_writer, test_data};
use smelt_gguf::{GgufFile, GgufWriter, Value};
use smelt_tensor::DType;

const FIXTURE: &str = "fixtures/writer_sample.gguf";
const FIXTURE_SEED: u64 = 0x005e_ed0f_9a1f;

/// Rebuilds a writer holding everything `file` holds, in the same order.
fn copy_into_writer(file: &GgufFile) -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.set(k.clone(), v.clone());
    }
    for t in file.tensors() {
        w.add_tensor(
            t.name.clone(),
            t.dims.clone(),
            t.dtype,
            file.tensor_data(t).to_vec(),
        )
        .unwrap_or_else(|e| panic!("re-adding `{}` failed: {e}", t.name));
    }
    w
}

#[test]
fn writer_output_matches_the_committed_fixture() {
    let bytes = sample_writer(FIXTURE_SEED, Some(64))
        .to_bytes()
        .expect("sample writes");
    let path = test_data(FIXTURE);
    if std::env::var_os("SMELT_REGEN_FIXTURES").is_some() {
        std::fs::write(&path, &bytes).expect("fixture written");
    }
    let committed = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; regenerate with SMELT_REGEN_FIXTURES=1 cargo test -p smelt-gguf \
             --test round_trip, then run scripts/gguf_facts.py",
            path.display()
        )
    });
    assert!(
        committed == bytes,
        "writer output differs from {}",
        path.display()
    );
}

#[test]
fn gguf_py_reads_the_writer_fixture_the_same_way() {
    let file = GgufFile::open(&test_data(FIXTURE)).expect("fixture opens");
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.tensors().len(), DType::ALL.len());
    check_against_facts(&file, &test_data("golden/writer_sample.facts.json"), true);
}

#[test]
fn every_value_type_round_trips_at_each_alignment() {
    for (seed, alignment) in [
        (1, None),
        (2, Some(32)),
        (3, Some(64)),
        (4, Some(1)),
        (5, Some(256)),
    ] {
        let w = sample_writer(seed, alignment);
        let bytes = w.to_bytes().expect("writes");
        let file = GgufFile::from_bytes(bytes.clone()).expect("reads back");
        let want_alignment = u64::from(alignment.unwrap_or(32));
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), want_alignment);
        assert_eq!(file.metadata(), w.metadata(), "seed {seed}");
        for (k, v) in w.metadata() {
            assert_eq!(file.get(k), Some(v), "lookup of `{k}`");
        }
        // Every value type is present, and arrays of arrays are.
        let types: std::collections::HashSet<_> =
            file.metadata().iter().map(|(_, v)| v.type_name()).collect();
        assert_eq!(types.len(), 13, "all 13 value types present: {types:?}");
        assert!(matches!(
            file.get_array("test.nested.deep").and_then(|a| a.first()),
            Some(Value::Array(inner)) if matches!(inner.first(), Some(Value::Array(_)))
        ));
        // Layout: data section and tensors aligned, file padded to the alignment.
        assert_eq!(file.data_offset() % want_alignment, 0);
        assert_eq!(bytes.len() as u64 % want_alignment, 0);
        for t in file.tensors() {
            assert_eq!(
                (t.offset - file.data_offset()) % want_alignment,
                0,
                "`{}` aligned",
                t.name
            );
        }
        // Reading and writing again is lossless.
        assert!(
            copy_into_writer(&file).to_bytes().expect("rewrites") == bytes,
            "seed {seed}"
        );
    }
}

#[test]
fn scalar_accessors_read_what_was_written() {
    let mut rng = Rng(77);
    let mut w = GgufWriter::new();
    let scalars = random_scalars(&mut rng);
    for v in &scalars {
        w.set(format!("k.{}", v.type_name()), v.clone());
    }
    w.set("k.neg", Value::I32(-5));
    w.set("k.big", Value::U64(u64::MAX));
    let file = GgufFile::from_bytes(w.to_bytes().expect("writes")).expect("reads");
    for v in &scalars {
        let key = format!("k.{}", v.type_name());
        assert_eq!(file.get(&key), Some(v));
        assert_eq!(file.get_u64(&key), v.as_u64());
        assert_eq!(file.get_i64(&key), v.as_i64());
        assert_eq!(file.get_f32(&key), v.as_f32());
        assert_eq!(file.get_bool(&key), v.as_bool());
        assert_eq!(file.get_str(&key), v.as_str());
    }
    assert_eq!(file.get_u64("k.neg"), None);
    assert_eq!(file.get_i64("k.neg"), Some(-5));
    assert_eq!(file.get_f32("k.neg"), Some(-5.0));
    assert_eq!(file.get_u64("k.big"), Some(u64::MAX));
    assert_eq!(file.get_i64("k.big"), None);
    assert_eq!(file.get("missing"), None);
}

#[test]
fn every_dtype_round_trips_with_its_data() {
    for alignment in [32u32, 64] {
        let mut rng = Rng(u64::from(alignment));
        let mut w = GgufWriter::new();
        w.set("general.alignment", Value::U32(alignment));
        let mut expected = Vec::new();
        for dtype in DType::ALL {
            for (i, rows) in [1u64, 3].into_iter().enumerate() {
                let row = dtype.block_elems() as u64 * (1 + rng.below(4));
                let dims = vec![row, rows, 1 + rng.below(2)];
                let n = dtype.row_bytes(row).expect("whole blocks") * rows * dims[2];
                let data = rng.bytes(n as usize);
                let name = format!("{}.{i}", dtype.name());
                w.add_tensor(name.clone(), dims.clone(), dtype, data.clone())
                    .expect("valid tensor");
                expected.push((name, dims, dtype, data));
            }
        }
        assert_eq!(w.tensor_count(), expected.len());
        let file = GgufFile::from_bytes(w.to_bytes().expect("writes")).expect("reads");
        assert_eq!(file.tensors().len(), expected.len());
        for (t, (name, dims, dtype, data)) in file.tensors().iter().zip(&expected) {
            assert_eq!(&t.name, name);
            assert_eq!(&t.dims, dims);
            assert_eq!(t.dtype, *dtype);
            assert_eq!(t.n_bytes, data.len() as u64);
            assert_eq!(t.row_len(), dims[0]);
            assert_eq!(t.n_rows(), dims[1] * dims[2]);
            assert_eq!(t.n_elements(), dims.iter().product::<u64>());
            assert_eq!(
                t.offset % u64::from(alignment),
                0,
                "{name} aligned in the file"
            );
            assert!(file.tensor_data(t) == data.as_slice(), "{name} data");
            assert_eq!(file.tensor(name), Some(t));
        }
        assert_eq!(file.tensor("absent"), None);
    }
}

#[test]
fn stories260k_rewrites_byte_for_byte() {
    let path = asset(STORIES);
    let original = std::fs::read(&path).expect("reads");
    let file = GgufFile::open(&path).expect("opens");
    let rewritten = copy_into_writer(&file).to_bytes().expect("rewrites");
    assert_eq!(rewritten.len(), original.len());
    assert!(
        rewritten == original,
        "rewritten stories260K differs from the original"
    );
}

#[test]
fn write_to_a_path_and_open_it() {
    let dir = std::env::temp_dir().join(format!("smelt-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sample.gguf");
    let w = sample_writer(9, None);
    w.write(&path).expect("writes file");
    let file = GgufFile::open(&path).expect("opens");
    assert!(file.bytes() == w.to_bytes().expect("writes").as_slice());
    assert_eq!(file.metadata(), w.metadata());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn taken_metadata_is_gone_and_the_rest_stays_reachable() {
    let mut w = smelt_gguf::GgufWriter::new();
    w.set("a", smelt_gguf::Value::U32(1));
    w.set(
        "big",
        smelt_gguf::Value::Array(vec![smelt_gguf::Value::U8(7); 1000]),
    );
    w.set("c", smelt_gguf::Value::String("x".into()));
    let mut f = smelt_gguf::GgufFile::from_bytes(w.to_bytes().expect("write")).expect("read");
    let big = f.take_metadata("big").expect("present");
    assert_eq!(big.as_array().map(<[smelt_gguf::Value]>::len), Some(1000));
    assert!(f.get("big").is_none());
    assert!(f.take_metadata("big").is_none());
    assert_eq!(f.get_u64("a"), Some(1));
    assert_eq!(f.get_str("c"), Some("x"));
    assert_eq!(f.metadata().len(), 2);
}
