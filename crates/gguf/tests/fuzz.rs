//! Property test: random byte edits, insertions, deletions and truncations of
//! real and written files never make the reader panic, and whatever it
//! accepts has every tensor's bytes inside the file.
//!
//! Most edits land in the header (metadata and tensor infos), where the
//! parser looks; a few land anywhere.

mod common;

use std::cell::Cell;
use std::sync::OnceLock;

use common::{STORIES, asset, sample_writer};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use smelt_gguf::GgufFile;

/// A valid file and the length of its header (the data section offset).
struct Base {
    bytes: Vec<u8>,
    header_len: usize,
}

fn base(bytes: Vec<u8>) -> Base {
    let header_len = GgufFile::from_bytes(bytes.clone())
        .map(|f| f.data_offset() as usize)
        .unwrap_or_else(|e| panic!("fuzz base file does not parse: {e}"));
    Base { bytes, header_len }
}

fn stories() -> &'static Base {
    static STORIES_BASE: OnceLock<Base> = OnceLock::new();
    STORIES_BASE.get_or_init(|| base(std::fs::read(asset(STORIES)).expect("stories260K reads")))
}

fn small() -> &'static Base {
    static SMALL_BASE: OnceLock<Base> = OnceLock::new();
    SMALL_BASE.get_or_init(|| {
        base(
            sample_writer(3, Some(64))
                .to_bytes()
                .expect("sample writes"),
        )
    })
}

#[derive(Clone, Debug)]
enum Edit {
    Byte(Index, u8),
    U32(Index, u32),
    U64(Index, u64),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
}

/// Values that make counts, lengths and offsets interesting.
fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 31),
        Just(u64::from(u32::MAX)),
        Just(1 << 32),
        Just(1 << 63),
        0..64u64,
        0..1_000_000u64,
        any::<u64>(),
    ]
}

fn edit() -> impl Strategy<Value = (Edit, bool)> {
    let edit = prop_oneof![
        6 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        2 => (any::<Index>(), interesting_u64()).prop_map(|(i, v)| Edit::U32(i, v as u32)),
        3 => (any::<Index>(), interesting_u64()).prop_map(|(i, v)| Edit::U64(i, v)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => (any::<Index>(), 1..12usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ];
    // true: aim at the header.
    (edit, prop::bool::weighted(0.9))
}

fn apply(bytes: &mut Vec<u8>, header_len: usize, (edit, in_header): &(Edit, bool)) {
    let region = if *in_header {
        header_len.min(bytes.len())
    } else {
        bytes.len()
    };
    let region = region.max(1);
    let at = |i: &Index| i.index(region);
    match edit {
        Edit::Byte(i, b) => {
            if let Some(x) = bytes.get_mut(at(i)) {
                *x = *b;
            }
        }
        Edit::U32(i, v) => overwrite(bytes, at(i), &v.to_le_bytes()),
        Edit::U64(i, v) => overwrite(bytes, at(i), &v.to_le_bytes()),
        Edit::Insert(i, v) => {
            let p = at(i).min(bytes.len());
            bytes.splice(p..p, v.iter().copied());
        }
        Edit::Delete(i, n) => {
            let p = at(i).min(bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Edit::Truncate(i) => bytes.truncate(at(i)),
    }
}

fn overwrite(bytes: &mut [u8], at: usize, v: &[u8]) {
    for (k, b) in v.iter().enumerate() {
        if let Some(x) = bytes.get_mut(at + k) {
            *x = *b;
        }
    }
}

/// Parses `bytes`; on success checks every tensor's data is in the file and
/// readable. Returns whether the file was accepted.
fn parse_and_touch(bytes: Vec<u8>) -> Result<bool, TestCaseError> {
    let len = bytes.len() as u64;
    match GgufFile::from_bytes(bytes) {
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(file) => {
            prop_assert!(file.alignment().is_power_of_two());
            prop_assert_eq!(file.data_offset() % file.alignment(), 0);
            for (k, _) in file.metadata() {
                prop_assert!(file.get(k).is_some());
            }
            for t in file.tensors() {
                let data = file.tensor_data(t);
                prop_assert_eq!(data.len() as u64, t.n_bytes);
                prop_assert!(t.offset + t.n_bytes <= len);
                prop_assert_eq!((t.offset - file.data_offset()) % file.alignment(), 0);
                prop_assert!(file.tensor(&t.name).is_some());
                // Read every byte.
                let sum = data
                    .iter()
                    .fold(0u64, |acc, &b| acc.wrapping_add(u64::from(b)));
                prop_assert!(sum <= 255 * t.n_bytes);
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs `cases` random edit lists against `base`; returns how many edited
/// files were accepted and how many rejected.
fn run_edits(base: &Base, cases: u32) -> (u32, u32) {
    let accepted = Cell::new(0u32);
    let rejected = Cell::new(0u32);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(edit(), 1..6), |edits| {
        let mut bytes = base.bytes.clone();
        for e in &edits {
            apply(&mut bytes, base.header_len, e);
        }
        let ok = parse_and_touch(bytes)?;
        let counter = if ok { &accepted } else { &rejected };
        counter.set(counter.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    (accepted.get(), rejected.get())
}

#[test]
fn mutated_stories260k_never_panics() {
    let (accepted, rejected) = run_edits(stories(), 4000);
    eprintln!("stories260K: {accepted} edited files accepted, {rejected} rejected");
    // Both outcomes occur, so the properties checked on each are exercised.
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn mutated_written_file_never_panics() {
    let (accepted, rejected) = run_edits(small(), 40_000);
    eprintln!("written sample: {accepted} edited files accepted, {rejected} rejected");
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
}

/// The bases parse unedited, and an edit at the start breaks them, so the
/// properties above see both accepted and rejected files.
#[test]
fn bases_parse_and_edits_matter() {
    for base in [stories(), small()] {
        parse_and_touch(base.bytes.clone()).expect("base is fine");
        let mut broken = base.bytes.clone();
        overwrite(&mut broken, 0, &0u64.to_le_bytes());
        assert!(
            GgufFile::from_bytes(broken).is_err(),
            "zeroed magic must fail"
        );
    }
}
