//! The quantizers against gguf-py byte for byte: inputs and gguf-py's
//! `gguf.quants.quantize` output made by scripts/make_quant_goldens.py (see
//! its header for versions and the rounding rules; rerun it to regenerate).

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use smelt_tensor::{DType, QuantizeError, quantize, quantize_row};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/quantize")
}

fn read(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); regenerate with scripts/make_quant_goldens.py",
            path.display()
        )
    })
}

fn dtype_named(name: &str) -> DType {
    DType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("manifest names unknown type {name}"))
}

/// One golden case: an input tensor and gguf-py's output per type.
struct Case {
    name: String,
    n_rows: usize,
    row_len: usize,
    input: Vec<f32>,
    /// (type, expected bytes or their sha256, expected length)
    expected: Vec<(DType, Expected, usize)>,
}

enum Expected {
    Bytes(Vec<u8>),
    Sha256(String),
}

fn cases() -> Vec<Case> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("manifest.json")).expect("manifest.json is not JSON");
    let cases = manifest["cases"]
        .as_object()
        .expect("manifest has no cases object");
    let mut out = Vec::new();
    for (name, entry) in cases {
        let field = |k: &str| {
            entry[k]
                .as_u64()
                .unwrap_or_else(|| panic!("case {name}: no {k}")) as usize
        };
        let (n_rows, row_len) = (field("n_rows"), field("row_len"));
        let input: Vec<f32> = read(&format!("{name}.in.f32"))
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(input.len(), n_rows * row_len, "case {name}: input size");
        let mut expected = Vec::new();
        let types = entry["types"].as_object().expect("case types");
        for (tname, t) in types {
            let dtype = dtype_named(tname);
            let n_bytes = t["n_bytes"].as_u64().expect("n_bytes") as usize;
            let e = if let Some(file) = t["file"].as_str() {
                Expected::Bytes(read(file))
            } else {
                Expected::Sha256(t["sha256"].as_str().expect("file or sha256").to_string())
            };
            expected.push((dtype, e, n_bytes));
        }
        out.push(Case {
            name: name.clone(),
            n_rows,
            row_len,
            input,
            expected,
        });
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn goldens_cover_every_gguf_py_type_and_odd_shapes() {
    let cases = cases();
    assert!(cases.len() >= 10, "too few golden cases");
    for t in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"] {
        let n = cases
            .iter()
            .filter(|c| c.expected.iter().any(|(d, ..)| d.name() == t))
            .count();
        assert!(n >= 8, "{t}: only {n} golden cases");
    }
    assert!(cases.iter().any(|c| c.n_rows % 2 == 1 && c.n_rows > 1));
    assert!(cases.iter().any(|c| c.n_rows == 1));
    assert!(cases.iter().any(|c| {
        c.expected
            .iter()
            .any(|(_, e, _)| matches!(e, Expected::Sha256(_)))
    }));
}

#[test]
fn quantize_matches_gguf_py_byte_for_byte() {
    for case in cases() {
        for (dtype, expected, n_bytes) in &case.expected {
            let got = quantize(*dtype, &case.input, case.row_len)
                .unwrap_or_else(|e| panic!("case {} {dtype}: {e}", case.name));
            assert_eq!(got.len(), *n_bytes, "case {} {dtype}: size", case.name);
            match expected {
                Expected::Bytes(want) => {
                    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
                        let row_bytes = n_bytes / case.n_rows;
                        let block = i % row_bytes / dtype.block_bytes();
                        panic!(
                            "case {} {dtype}: first difference at byte {i} (row {}, block {block}): \
                             got {:#04x}, gguf-py {:#04x}",
                            case.name,
                            i / row_bytes,
                            got[i],
                            want[i]
                        );
                    }
                }
                Expected::Sha256(want) => {
                    let digest = hex(&Sha256::digest(&got));
                    assert_eq!(&digest, want, "case {} {dtype}: sha256", case.name);
                }
            }
        }
    }
}

#[test]
fn quantize_row_agrees_with_quantize_row_by_row() {
    for case in cases() {
        for (dtype, ..) in &case.expected {
            let whole = quantize(*dtype, &case.input, case.row_len).expect("golden input");
            let row_bytes = whole.len() / case.n_rows;
            for (r, (src, want)) in case
                .input
                .chunks(case.row_len)
                .zip(whole.chunks(row_bytes))
                .enumerate()
            {
                let mut dst = vec![0xEEu8; row_bytes];
                quantize_row(*dtype, src, &mut dst).expect("golden row");
                assert_eq!(dst, want, "case {} {dtype} row {r}", case.name);
            }
        }
    }
}

#[test]
fn non_finite_values_are_refused_naming_row_and_column() {
    let mut data: Vec<f32> = (0..4 * 64)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    data[2 * 64 + 5] = f32::NAN;
    data[3 * 64 + 9] = f32::INFINITY;
    for dtype in [DType::F16, DType::Q8_0, DType::Q4K, DType::F32] {
        let row_len = if dtype == DType::Q4K { 256 } else { 64 };
        let err = quantize(dtype, &data, row_len).expect_err("NaN accepted");
        let (row, col) = if dtype == DType::Q4K {
            (0, 133)
        } else {
            (2, 5)
        };
        assert!(
            matches!(err, QuantizeError::NonFinite { row: r, col: c, .. } if r == row && c == col),
            "{dtype}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("row {row}")) && msg.contains("NaN"),
            "{msg}"
        );
    }
}

#[test]
fn values_beyond_f16_are_refused() {
    let mut data: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 8.0).collect();
    data[40] = 70_000.0;
    let err = quantize(DType::F16, &data, 32).expect_err("overflow accepted");
    assert_eq!(
        err.to_string(),
        "row 1, column 8: value 70000 is too large for F16 (the stored value would overflow)"
    );
    // Q8_0's scale d = max / 127 overflows f16 only past 127 * 65520 (8.32e6).
    data[40] = 8.0e6;
    assert!(quantize(DType::Q8_0, &data, 32).is_ok());
    data[40] = 8.4e6;
    let err = quantize(DType::Q8_0, &data, 32).expect_err("scale overflow accepted");
    assert!(
        matches!(err, QuantizeError::OutOfRange { row: 1, col: 8, .. }),
        "{err}"
    );
    // BF16 reaches f32's range: only a value rounding past its largest fails.
    assert!(quantize(DType::BF16, &[3.0e38, -1.0], 2).is_ok());
    assert!(quantize(DType::BF16, &[f32::MAX, -1.0], 2).is_err());
}

#[test]
fn shape_and_type_errors_name_the_problem() {
    let data: Vec<f32> = (0..96).map(|i| (i as f32).sin()).collect();
    assert_eq!(
        quantize(DType::Q4_0, &data, 48)
            .expect_err("ragged")
            .to_string(),
        "row of 48 elements is not a multiple of the Q4_0 block size 32"
    );
    assert_eq!(
        quantize(DType::Q8_0, &data, 64)
            .expect_err("partial")
            .to_string(),
        "96 values are not a whole number of rows of 64"
    );
    assert!(matches!(
        quantize(DType::Q2K, &data, 96),
        Err(QuantizeError::Unsupported(DType::Q2K))
    ));
    assert!(matches!(
        quantize(DType::Q8_0, &data, 0),
        Err(QuantizeError::EmptyRow)
    ));
    let mut short = vec![0u8; 33];
    assert_eq!(
        quantize_row(DType::Q8_0, &data[..32], &mut short)
            .expect_err("short output")
            .to_string(),
        "a Q8_0 row of 32 elements takes 34 bytes, the output has 33"
    );
    assert_eq!(quantize(DType::Q6K, &[], 256), Ok(Vec::new()));
}
