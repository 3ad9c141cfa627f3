//! The Q8 (8-bit activation) kernels against their scalar reference, for
//! every weight type with an integer path, odd shapes and batch sizes, on
//! every instruction set this machine has:
//!
//! * every output is bit-identical to `q8::dot_reference` (the contract
//!   written out element by element), whatever the batch size, the row's
//!   place in it, the split of weight rows, or the kernel (row lanes or
//!   small batches) and instruction set;
//! * the activation quantization follows its definition;
//! * the result is close to the f32 product (`smelt_tensor::dot_row`).

#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use proptest::prelude::*;
use smelt_backend::testing::{TestRng, random_weight};
use smelt_cpu::kernels::q8::{self, ActQ8};
use smelt_cpu::kernels::{Isa, Scratch, detected_isa};
use smelt_tensor::{DType, dot_row};

const TYPES: [DType; 6] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q8_0,
    DType::Q4K,
    DType::Q6K,
];

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

/// Row lengths: odd and even block counts.
fn lengths(dtype: DType) -> Vec<usize> {
    let blk = dtype.block_elems();
    if blk == 256 {
        vec![256, 3 * 256]
    } else {
        vec![32, 3 * 32, 8 * 32, 19 * 32]
    }
}

struct Case {
    dtype: DType,
    n_in: usize,
    n_out: usize,
    w: Vec<u8>,
    x: Vec<f32>,
}

impl Case {
    fn new(rng: &mut TestRng, dtype: DType, n_in: usize, n_out: usize, n_x: usize) -> Case {
        let w = random_weight(rng, dtype, n_in, n_out).bytes().to_vec();
        let mut x = rng.buf(n_x, n_in).data;
        // Some blocks of zeros and some with one large value: the quantizer's
        // edge cases.
        if n_x > 1 {
            x[..32.min(n_in)].fill(0.0);
        }
        if let Some(v) = x.get_mut(n_in + 5) {
            *v = 40.0;
        }
        Case {
            dtype,
            n_in,
            n_out,
            w,
            x,
        }
    }

    fn row(&self, o: usize) -> &[u8] {
        let rb = self.w.len() / self.n_out;
        &self.w[o * rb..(o + 1) * rb]
    }

    /// All outputs of activation rows `x_rows`, weight rows split in `splits`.
    fn run(
        &self,
        isa: Isa,
        x_rows: Range<usize>,
        splits: &[Range<usize>],
        s: &mut Scratch,
    ) -> Vec<f32> {
        let n_x = x_rows.len();
        let mut act = ActQ8::new();
        act.quantize(
            &self.x[x_rows.start * self.n_in..x_rows.end * self.n_in],
            n_x,
            self.n_in,
        );
        let mut out = vec![f32::NAN; n_x * self.n_out];
        for rows in splits {
            let mut tile = vec![f32::NAN; n_x * rows.len()];
            q8::matmul_with_isa(
                isa,
                self.dtype,
                &self.w,
                rows.clone(),
                &act,
                &mut tile,
                rows.len(),
                s,
            );
            for r in 0..n_x {
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
            "{what}: output {i} is {g:e} ({:#010x}), reference {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn every_type_shape_batch_and_isa_matches_the_reference_bit_for_bit() {
    let mut rng = TestRng::new(0x5eed_0008);
    let mut scratch = Scratch::new();
    for dtype in TYPES {
        for n_in in lengths(dtype) {
            // Batch sizes across the small-batch / row-lane switch and the
            // sixteen-row groups.
            for n_x in [1, 2, 5, 6, 7, 11, 12, 15, 16, 17, 21, 28, 33] {
                let n_out = 19;
                let case = Case::new(&mut rng, dtype, n_in, n_out, n_x);
                let mut act = ActQ8::new();
                act.quantize(&case.x, n_x, n_in);
                let want: Vec<f32> = (0..n_x)
                    .flat_map(|r| (0..n_out).map(move |o| (r, o)))
                    .map(|(r, o)| q8::dot_reference(dtype, case.row(o), &act, r))
                    .collect();
                for isa in isas() {
                    let name = format!("{dtype} {n_x}x{n_in} -> {n_out} on {isa:?}");
                    let whole = case.run(isa, 0..n_x, &[0..n_out], &mut scratch);
                    assert_bits_eq(&name, &whole, &want);
                    let split = case.run(isa, 0..n_x, &[0..3, 3..8, 8..16, 16..19], &mut scratch);
                    assert_bits_eq(&format!("{name}, split"), &split, &want);
                    // Each row alone, and a window of rows: the same values.
                    for r in [0, n_x / 2, n_x - 1] {
                        let alone = case.run(isa, r..r + 1, &[0..n_out], &mut scratch);
                        assert_bits_eq(
                            &format!("{name}, row {r} alone"),
                            &alone,
                            &want[r * n_out..(r + 1) * n_out],
                        );
                    }
                    if n_x > 3 {
                        let window = case.run(isa, 1..n_x - 1, &[0..n_out], &mut scratch);
                        assert_bits_eq(
                            &format!("{name}, rows 1.."),
                            &window,
                            &want[n_out..(n_x - 1) * n_out],
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn q8_products_are_close_to_the_f32_product() {
    let mut rng = TestRng::new(0x0c10_5e08);
    for dtype in TYPES {
        let n_in = 8 * 256;
        let case = Case::new(&mut rng, dtype, n_in, 16, 3);
        let mut act = ActQ8::new();
        act.quantize(&case.x, 3, n_in);
        for r in 0..3 {
            let xr = &case.x[r * n_in..(r + 1) * n_in];
            for o in 0..16 {
                let exact = dot_row(dtype, case.row(o), xr);
                let got = q8::dot_reference(dtype, case.row(o), &act, r);
                // Bound: Σ_b |w|·|x error| with |x error| ≤ dx / 2 per value,
                // by Cauchy-Schwarz-free worst case: the sum of |w_k| dx_b / 2.
                let mut w = vec![0.0f32; n_in];
                smelt_tensor::dequantize_row(dtype, case.row(o), &mut w);
                let bound: f32 = w
                    .chunks_exact(32)
                    .zip(act.row_d(r))
                    .map(|(wb, &dx)| wb.iter().map(|v| v.abs()).sum::<f32>() * dx * 0.5)
                    .sum();
                assert!(
                    (got - exact).abs() <= bound * 1.01 + 1e-3 * exact.abs() + 1e-4,
                    "{dtype} row {o}, x {r}: q8 {got} vs f32 {exact} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn quantization_follows_its_definition() {
    let mut rng = TestRng::new(0x9a47);
    let n_in = 5 * 32;
    let mut x = rng.buf(4, n_in).data;
    x[32..64].fill(0.0);
    x[64] = -3.0;
    x[65] = 3.0;
    x[70] = 1.5;
    let mut act = ActQ8::new();
    act.quantize(&x, 4, n_in);
    for r in 0..4 {
        let q = act.row_q(r);
        for b in 0..n_in / 32 {
            let xb = &x[r * n_in + b * 32..r * n_in + b * 32 + 32];
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let dx = amax / 127.0;
            assert_eq!(
                act.row_d(r)[b].to_bits(),
                dx.to_bits(),
                "row {r} block {b}: dx"
            );
            let mut sum = 0i32;
            for (k, &v) in xb.iter().enumerate() {
                let want = if dx == 0.0 {
                    0
                } else {
                    (v / dx).round_ties_even() as i32
                };
                assert_eq!(
                    i32::from(q[b * 32 + k]),
                    want,
                    "row {r} block {b} value {k}"
                );
                assert!(want.abs() <= 127);
                sum += want;
            }
            assert_eq!(act.row_ds(r)[b].to_bits(), (dx * sum as f32).to_bits());
        }
    }
    // Ties go to even: 1.5 / (3 / 127) = 63.5 → 64, and -3 → -127.
    assert_eq!(act.row_q(0)[70], 64);
    assert_eq!(act.row_q(0)[64], -127);
    assert!(act.row_q(0)[32..64].iter().all(|&v| v == 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random types, shapes, batch sizes and splits: every ISA equals the
    /// reference bit for bit.
    #[test]
    fn random_shapes_match_the_reference(
        t in 0usize..6,
        blocks in 1usize..12,
        n_out in 1usize..24,
        n_x in 1usize..40,
        cut in 0usize..24,
        seed in any::<u64>(),
    ) {
        let dtype = TYPES[t];
        let n_in = blocks * dtype.block_elems();
        let mut rng = TestRng::new(seed);
        let case = Case::new(&mut rng, dtype, n_in, n_out, n_x);
        let mut act = ActQ8::new();
        act.quantize(&case.x, n_x, n_in);
        let want: Vec<f32> = (0..n_x)
            .flat_map(|r| (0..n_out).map(move |o| (r, o)))
            .map(|(r, o)| q8::dot_reference(dtype, case.row(o), &act, r))
            .collect();
        let cut = cut.min(n_out);
        let mut scratch = Scratch::new();
        for isa in isas() {
            let got = case.run(isa, 0..n_x, &[0..cut, cut..n_out], &mut scratch);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert_eq!(g.to_bits(), w.to_bits(), "{} {:?} output {}", dtype, isa, i);
            }
        }
    }
}
