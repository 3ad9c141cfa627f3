//! The scalar reference kernels against gguf-py: golden blocks and their
//! dequantized values made by scripts/make_dequant_goldens.py (see its header
//! for versions; rerun it to regenerate).

use std::path::PathBuf;

use smelt_tensor::{DType, dequantize_row, dot_f32, dot_row};

/// One type's golden data: stored blocks and gguf-py's dequantized values.
struct Golden {
    dtype: DType,
    blocks: Vec<u8>,
    values: Vec<f32>,
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

fn read(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); regenerate with scripts/make_dequant_goldens.py",
            path.display()
        )
    })
}

fn load(dtype: DType) -> Golden {
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("manifest.json")).expect("golden manifest.json is not JSON");
    let entry = &manifest["types"][dtype.name()];
    let field = |k: &str| {
        entry[k]
            .as_u64()
            .unwrap_or_else(|| panic!("manifest: {dtype} has no {k}")) as usize
    };
    assert_eq!(
        field("block_elems"),
        dtype.block_elems(),
        "{dtype}: block_elems"
    );
    assert_eq!(
        field("block_bytes"),
        dtype.block_bytes(),
        "{dtype}: block_bytes"
    );

    let blocks = read(&format!("{}.blocks.bin", dtype.name()));
    let values: Vec<f32> = read(&format!("{}.f32.bin", dtype.name()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n_blocks = field("n_blocks");
    assert!(n_blocks >= 8, "{dtype}: too few golden blocks ({n_blocks})");
    assert_eq!(
        blocks.len(),
        n_blocks * dtype.block_bytes(),
        "{dtype}: blocks file size"
    );
    assert_eq!(
        values.len(),
        n_blocks * dtype.block_elems(),
        "{dtype}: values file size"
    );
    Golden {
        dtype,
        blocks,
        values,
    }
}

/// Deterministic xorshift64* numbers in [-1, 1): test inputs without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40; // 24 random bits
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

fn assert_bits_equal(dtype: DType, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{dtype} {what}: element {i} is {g:e} ({:#010x}), gguf-py says {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Checks `dot_row` on one row against an f64 dot of the golden values.
fn check_dot(dtype: DType, what: &str, row: &[u8], golden: &[f32], x: &[f32]) {
    let got = dot_row(dtype, row, x);
    let exact: f64 = golden
        .iter()
        .zip(x)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    // Rounding error scales with the magnitude of the terms, not of the
    // (possibly cancelling) result.
    let scale: f64 = golden
        .iter()
        .zip(x)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum();
    let err = (f64::from(got) - exact).abs();
    assert!(
        err <= 1e-5 * scale,
        "{dtype} {what}: dot_row = {got:e}, exact = {exact:e} (error {err:e}, term scale {scale:e})"
    );
}

#[test]
fn goldens_are_not_degenerate() {
    for dtype in DType::ALL {
        let g = load(dtype);
        let nonzero = g.values.iter().filter(|v| **v != 0.0).count();
        assert!(
            nonzero * 4 > g.values.len() * 3,
            "{dtype}: golden values are mostly zero"
        );
        let mut distinct: Vec<u32> = g.values.iter().map(|v| v.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 16, "{dtype}: golden values barely vary");
        assert!(
            g.values.iter().all(|v| v.is_finite()),
            "{dtype}: non-finite golden value"
        );
    }
}

#[test]
fn dequantize_row_matches_gguf_py_bit_exactly() {
    for dtype in DType::ALL {
        let g = load(dtype);
        let mut out = vec![f32::NAN; g.values.len()];
        dequantize_row(dtype, &g.blocks, &mut out);
        assert_bits_equal(g.dtype, "whole golden row", &out, &g.values);
    }
}

#[test]
fn rows_of_1_3_7_blocks_dequantize_and_dot_correctly() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for dtype in DType::ALL {
        let g = load(dtype);
        for blocks_per_row in [1, 3, 7] {
            let rows = g.blocks.chunks(blocks_per_row * dtype.block_bytes());
            let wants = g.values.chunks(blocks_per_row * dtype.block_elems());
            for (r, (row, want)) in rows.zip(wants).enumerate() {
                let what = format!("row {r} of {blocks_per_row}-block rows");
                let mut out = vec![f32::NAN; want.len()];
                dequantize_row(dtype, row, &mut out);
                assert_bits_equal(dtype, &what, &out, want);
                check_dot(dtype, &what, row, want, &rng.vec(want.len()));
            }
        }
    }
}

#[test]
fn dot_row_over_the_whole_golden_row() {
    let mut rng = Rng(0x5EED_1234_ABCD_0002);
    for dtype in DType::ALL {
        let g = load(dtype);
        let x = rng.vec(g.values.len());
        check_dot(dtype, "whole golden row", &g.blocks, &g.values, &x);
    }
}

#[test]
fn blocks_at_odd_byte_offsets_decode_the_same() {
    let mut rng = Rng(0x5EED_1234_ABCD_0003);
    for dtype in DType::ALL {
        let g = load(dtype);
        let mut shifted = vec![0xA5u8; g.blocks.len() + 1];
        shifted[1..].copy_from_slice(&g.blocks);
        let row = &shifted[1..];
        let mut out = vec![f32::NAN; g.values.len()];
        dequantize_row(dtype, row, &mut out);
        assert_bits_equal(dtype, "row at offset 1", &out, &g.values);
        let x = rng.vec(g.values.len());
        assert_eq!(
            dot_row(dtype, row, &x).to_bits(),
            dot_row(dtype, &g.blocks, &x).to_bits(),
            "{dtype}"
        );
    }
}

#[test]
fn empty_rows_are_empty() {
    for dtype in DType::ALL {
        dequantize_row(dtype, &[], &mut []);
        assert_eq!(dot_row(dtype, &[], &[]), 0.0, "{dtype}");
    }
}

#[test]
fn dot_f32_matches_f64_for_all_tail_lengths() {
    let mut rng = Rng(0x5EED_1234_ABCD_0004);
    for n in 0..70 {
        let (a, b) = (rng.vec(n), rng.vec(n));
        let exact: f64 = a
            .iter()
            .zip(&b)
            .map(|(&p, &q)| f64::from(p) * f64::from(q))
            .sum();
        let scale: f64 = a
            .iter()
            .zip(&b)
            .map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs())
            .sum();
        let got = f64::from(dot_f32(&a, &b));
        assert!(
            (got - exact).abs() <= 1e-6 * scale,
            "n = {n}: {got} vs {exact}"
        );
    }
}

#[test]
#[should_panic(expected = "dequantize_row: a Q4_K row of 256 elements takes 144 bytes, got 143")]
fn dequantize_row_rejects_a_short_source() {
    let g = load(DType::Q4K);
    let mut out = vec![0.0; 256];
    dequantize_row(DType::Q4K, &g.blocks[..143], &mut out);
}

#[test]
#[should_panic(
    expected = "dot_row: row of 33 elements is not a multiple of the Q8_0 block size 32"
)]
fn dot_row_rejects_a_ragged_row() {
    let g = load(DType::Q8_0);
    dot_row(DType::Q8_0, &g.blocks[..34], &[0.5; 33]);
}

#[test]
#[should_panic(expected = "dot_f32: lengths differ (3 vs 2)")]
fn dot_f32_rejects_mismatched_lengths() {
    dot_f32(&[1.0, 2.0, 3.0], &[1.0, 2.0]);
}
