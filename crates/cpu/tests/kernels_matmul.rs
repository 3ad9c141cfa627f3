//! The matrix kernels against the scalar reference, for every weight type
//! and odd shapes, on every instruction set this machine has:
//!
//! * every output is bit-identical to the canonical reduction as the module
//!   docs define it (written out again here: reference dequantization, eight
//!   FMA lanes, zero padding, the fixed lane tree), whatever the batch size,
//!   the row's place in the batch, the split of weight rows, or the path;
//! * it agrees with `smelt_tensor::dot_row` up to f32 rounding;
//! * the AVX-512, AVX2 and portable paths agree bit for bit.

#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use smelt_backend::testing::{TestRng, random_weight};
use smelt_cpu::kernels::{
    Isa, Scratch, canonical_dot, detected_isa, matmul, matmul_to_ptr, matmul_with_isa,
    with_thread_scratch,
};
use smelt_tensor::{DType, dequantize_row, dot_row};

/// The canonical value of one output, from its definition.
fn spec_dot(dtype: DType, row: &[u8], x: &[f32]) -> f32 {
    let mut w = vec![0.0f32; x.len()];
    dequantize_row(dtype, row, &mut w);
    let padded = x.len().div_ceil(8) * 8;
    w.resize(padded, 0.0);
    let mut xp = x.to_vec();
    xp.resize(padded, 0.0);
    let mut lane = [0.0f32; 8];
    for (k, (a, b)) in w.iter().zip(&xp).enumerate() {
        lane[k % 8] = a.mul_add(*b, lane[k % 8]);
    }
    ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))
}

/// Instruction sets to test: always the portable one, plus every SIMD one
/// this machine has (AVX2 and AVX-512 where both are there).
fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    v.extend(
        [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.available()),
    );
    if detected_isa() == Isa::Portable {
        eprintln!(
            "note: no SIMD instruction set on this machine; testing the portable kernels only"
        );
    }
    v
}

/// Row lengths to test: 1, 3 and 7 blocks; the plain float types (blocks of
/// one) also get lengths around and across their 32-value SIMD blocks.
fn lengths(dtype: DType) -> Vec<usize> {
    let blk = dtype.block_elems();
    let mut v = vec![blk, 3 * blk, 7 * blk];
    if blk == 1 {
        v.extend([8, 32, 45, 64, 333]);
    }
    v
}

struct Case {
    dtype: DType,
    n_in: usize,
    n_out: usize,
    n_x: usize,
    w: Vec<u8>,
    x: Vec<f32>,
}

impl Case {
    fn new(rng: &mut TestRng, dtype: DType, n_in: usize, n_out: usize, n_x: usize) -> Case {
        let w = random_weight(rng, dtype, n_in, n_out).bytes().to_vec();
        let x = rng.buf(n_x, n_in).data;
        Case {
            dtype,
            n_in,
            n_out,
            n_x,
            w,
            x,
        }
    }

    fn row(&self, o: usize) -> &[u8] {
        let rb = self.w.len() / self.n_out;
        &self.w[o * rb..(o + 1) * rb]
    }

    fn name(&self) -> String {
        format!(
            "{} {}x{} -> {}",
            self.dtype, self.n_x, self.n_in, self.n_out
        )
    }

    /// The full `n_x × n_out` output computed in column ranges `splits`
    /// (one call each, like threads), on `isa`.
    fn run(&self, isa: Isa, splits: &[Range<usize>], scratch: &mut Scratch) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.n_x * self.n_out];
        for rows in splits {
            let mut tile = vec![f32::NAN; self.n_x * rows.len()];
            matmul_with_isa(
                isa,
                self.dtype,
                &self.w,
                self.n_in,
                rows.clone(),
                &self.x,
                self.n_x,
                &mut tile,
                rows.len(),
                scratch,
            );
            for r in 0..self.n_x {
                out[r * self.n_out + rows.start..r * self.n_out + rows.end]
                    .copy_from_slice(&tile[r * rows.len()..(r + 1) * rows.len()]);
            }
        }
        out
    }
}

fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: output {i} is {g:e} ({:#010x}), canonical {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn every_type_and_odd_shape_is_canonical_batch_invariant_and_close_to_dot_row() {
    let mut rng = TestRng::new(0x5EED);
    let mut scratch = Scratch::new();
    let mut checked = 0usize;
    for dtype in DType::ALL {
        for n_in in lengths(dtype) {
            for n_out in [1, 5, 33] {
                for n_x in [1, 2, 5, 17] {
                    let case = Case::new(&mut rng, dtype, n_in, n_out, n_x);
                    let name = case.name();
                    // The definition, and the reference dot within rounding.
                    let mut want = vec![0.0f32; n_x * n_out];
                    for r in 0..n_x {
                        let xr = &case.x[r * n_in..(r + 1) * n_in];
                        for o in 0..n_out {
                            let v = spec_dot(dtype, case.row(o), xr);
                            let reference = dot_row(dtype, case.row(o), xr);
                            let mut w = vec![0.0f32; n_in];
                            dequantize_row(dtype, case.row(o), &mut w);
                            let mass: f32 = w.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
                            assert!(
                                (v - reference).abs() <= 1e-5 * mass + f32::MIN_POSITIVE,
                                "{name} ({o}, {r}): canonical {v} vs dot_row {reference} (mass {mass})"
                            );
                            want[r * n_out + o] = v;
                        }
                    }
                    assert!(want.iter().any(|v| *v != 0.0), "{name}: all zeros");
                    let mid = n_out / 2 + 1;
                    let splits: [&[Range<usize>]; 2] =
                        [&[0..n_out], &[0..mid.min(n_out), mid.min(n_out)..n_out]];
                    for isa in isas() {
                        for split in splits {
                            let got = case.run(isa, split, &mut scratch);
                            assert_bits_eq(&format!("{name} {isa:?} split {split:?}"), &got, &want);
                        }
                        // Each activation row alone (decode) equals its row in the batch.
                        for r in 0..n_x {
                            let mut one = vec![f32::NAN; n_out];
                            matmul_with_isa(
                                isa,
                                dtype,
                                &case.w,
                                n_in,
                                0..n_out,
                                &case.x[r * n_in..(r + 1) * n_in],
                                1,
                                &mut one,
                                n_out,
                                &mut scratch,
                            );
                            assert_bits_eq(
                                &format!("{name} {isa:?} row {r} alone"),
                                &one,
                                &want[r * n_out..(r + 1) * n_out],
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= DType::ALL.len() * 3 * 3 * 4);
}

#[test]
fn big_shapes_cross_panels_and_tiles_on_every_path() {
    // More weight rows than one panel holds, activation counts around the
    // fused/panel switch, and sub-ranges starting at odd rows.
    let mut rng = TestRng::new(7);
    let mut scratch = Scratch::new();
    for dtype in [
        DType::Q4_1,
        DType::Q4K,
        DType::Q6K,
        DType::Q8_0,
        DType::F16,
        DType::Q3K,
    ] {
        let n_in = 2 * 256;
        let n_out = 157;
        let n_x_max = 11;
        let case = Case::new(&mut rng, dtype, n_in, n_out, n_x_max);
        for n_x in 1..=n_x_max {
            let mut want = vec![0.0f32; n_x * n_out];
            for r in 0..n_x {
                for o in 0..n_out {
                    want[r * n_out + o] =
                        spec_dot(dtype, case.row(o), &case.x[r * n_in..(r + 1) * n_in]);
                }
            }
            let sub = Case {
                dtype,
                n_in,
                n_out,
                n_x,
                w: case.w.clone(),
                x: case.x[..n_x * n_in].to_vec(),
            };
            for isa in isas() {
                let got = sub.run(isa, &[0..3, 3..90, 90..n_out], &mut scratch);
                assert_bits_eq(&format!("{} {isa:?}", sub.name()), &got, &want);
            }
        }
    }
}

#[test]
fn in_place_column_writes_fill_exactly_their_columns() {
    let mut rng = TestRng::new(11);
    let (dtype, n_in, n_out, n_x) = (DType::Q5_0, 96, 37, 6);
    let case = Case::new(&mut rng, dtype, n_in, n_out, n_x);
    let want = case.run(Isa::Portable, &[0..n_out], &mut Scratch::new());
    let mut out = vec![f32::NAN; n_x * n_out];
    for rows in [0..10, 10..11, 11..37] {
        // SAFETY: `out` holds `n_x × n_out` values; this thread alone writes.
        unsafe {
            matmul_to_ptr(
                dtype,
                &case.w,
                n_in,
                rows,
                &case.x,
                n_x,
                out.as_mut_ptr(),
                n_out,
                &mut Scratch::new(),
            )
        };
    }
    assert_bits_eq("matmul_to_ptr", &out, &want);
    // The plain entry point with a thread's scratch, writing one output row.
    let mut row = vec![f32::NAN; n_out];
    with_thread_scratch(|s| {
        matmul(
            dtype,
            &case.w,
            n_in,
            0..n_out,
            &case.x[..n_in],
            1,
            &mut row,
            n_out,
            s,
        )
    });
    assert_bits_eq("matmul one row", &row, &want[..n_out]);
}

#[test]
fn canonical_dot_is_the_documented_lane_order() {
    // Values chosen so that any other association gives a different f32.
    let w: Vec<f32> = (0..11).map(|i| 1.0 + (i as f32) * 1e-7).collect();
    let mut x = vec![1.0f32; 11];
    x[0] = 1e8;
    x[8] = -1e8;
    let got = canonical_dot(&w, &x);
    assert_eq!(
        got.to_bits(),
        spec_dot(DType::F32, &f32_bytes(&w), &x).to_bits()
    );
    // Lane 0 holds 1e8 * w0 - 1e8 * w8 (cancels to a small value), the other
    // lanes small sums: a naive left-to-right sum loses them to 1e8.
    let naive: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
    assert_ne!(got.to_bits(), naive.to_bits());
}

#[test]
#[should_panic(expected = "cannot hold")]
fn a_short_output_is_a_clear_panic() {
    let mut rng = TestRng::new(3);
    let case = Case::new(&mut rng, DType::Q8_0, 64, 4, 2);
    let mut out = vec![0.0f32; 7];
    matmul(
        DType::Q8_0,
        &case.w,
        64,
        0..4,
        &case.x,
        2,
        &mut out,
        4,
        &mut Scratch::new(),
    );
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}
