//! `CpuBackend` with 8-bit activations ([`Activations::Q8`]): every output
//! is the Q8 contract's value (`kernels::q8::dot_reference`), rows are
//! batch-invariant bit for bit (alone, in any batch, at any place, fused
//! with other products or not), types without an integer path and the
//! logits' product keep the f32 values, and the result stays close to the
//! scalar reference backend.

use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{Backend, HostBuf, ReferenceBackend};
use smelt_cpu::kernels::q8::{self, ActQ8};
use smelt_cpu::{Activations, CpuBackend};
use smelt_tensor::DType;

const Q8_TYPES: [DType; 6] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q8_0,
    DType::Q4K,
    DType::Q6K,
];

fn backend(a: Activations) -> CpuBackend {
    match CpuBackend::new(2) {
        Ok(b) => b.with_activations(a),
        Err(e) => panic!("thread pool: {e}"),
    }
}

fn place(b: &CpuBackend, name: &str, t: &smelt_backend::HostTensor) -> smelt_cpu::CpuWeight {
    match b.place(name, t) {
        Ok(w) => w,
        Err(e) => panic!("place: {e}"),
    }
}

fn matmul(b: &CpuBackend, x: &HostBuf, w: &smelt_cpu::CpuWeight) -> HostBuf {
    let mut out = HostBuf::zeros(x.rows, w.tensor.n_rows());
    b.matmul(x, w, &mut out);
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn every_output_is_the_contract_value_and_rows_are_batch_invariant() {
    let cpu = backend(Activations::Q8);
    assert_eq!(cpu.activations(), Activations::Q8);
    let mut rng = TestRng::new(0x0b8);
    for dtype in Q8_TYPES {
        let n_in = 2 * 256;
        // 43 outputs: row groups of 8 split across two threads with a tail.
        let w = random_weight(&mut rng, dtype, n_in, 43);
        let wc = place(&cpu, "blk.0.ffn_up.weight", &w);
        // 70 rows: the threads share one quantization (prompt chunks);
        // fewer: each thread quantizes every row itself.
        for n in [1, 3, 16, 21, 37, 70] {
            let x = rng.buf(n, n_in);
            let all = matmul(&cpu, &x, &wc);
            let mut act = ActQ8::new();
            act.quantize(&x.data, n, n_in);
            let rb = w.bytes().len() / 43;
            for r in 0..n {
                let want: Vec<f32> = (0..43)
                    .map(|o| q8::dot_reference(dtype, &w.bytes()[o * rb..(o + 1) * rb], &act, r))
                    .collect();
                assert_eq!(
                    bits(all.row(r)),
                    bits(&want),
                    "{dtype} n={n} row {r}: not the contract value"
                );
                let alone = matmul(&cpu, &cpu.gather_rows(&x, &[r]), &wc);
                assert_eq!(
                    bits(alone.row(0)),
                    bits(all.row(r)),
                    "{dtype} n={n}: row {r} alone differs"
                );
            }
            if n > 2 {
                // The same rows, reversed: each keeps its value.
                let order: Vec<usize> = (0..n).rev().collect();
                let rev = matmul(&cpu, &cpu.gather_rows(&x, &order), &wc);
                for (i, &r) in order.iter().enumerate() {
                    assert_eq!(
                        bits(rev.row(i)),
                        bits(all.row(r)),
                        "{dtype} n={n}: row {r} moved"
                    );
                }
            }
        }
    }
}

#[test]
fn q8_products_stay_close_to_the_reference_backend() {
    let (cpu, reference) = (backend(Activations::Q8), ReferenceBackend);
    let mut rng = TestRng::new(0x0b9);
    for dtype in Q8_TYPES {
        let n_in = 4 * 256;
        let w = random_weight(&mut rng, dtype, n_in, 24);
        let x = rng.buf(5, n_in);
        let got = matmul(&cpu, &x, &place(&cpu, "w", &w));
        let mut want = HostBuf::zeros(5, 24);
        reference.matmul(&x, &w, &mut want);
        let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .data
            .iter()
            .zip(&want.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // Per-32 int8 activations: a relative error of about 1 % of the
        // largest output on random data (the f32 path is at 1e-6).
        assert!(
            err <= 0.02 * scale,
            "{dtype}: max |Δ| {err} vs scale {scale}"
        );
        assert!(
            err > 0.0,
            "{dtype}: Q8 gave the f32 values: not the integer path?"
        );
    }
}

#[test]
fn other_types_and_the_logits_keep_f32_values() {
    let (f32s, q8, q8_all) = (
        backend(Activations::F32),
        backend(Activations::Q8),
        backend(Activations::Q8All),
    );
    let mut rng = TestRng::new(0x0ba);
    let x = rng.buf(6, 256);
    for dtype in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q5_1,
        DType::Q3K,
        DType::Q5K,
    ] {
        let w = random_weight(&mut rng, dtype, 256, 19);
        let a = matmul(&f32s, &x, &place(&f32s, "w", &w));
        let b = matmul(&q8_all, &x, &place(&q8_all, "w", &w));
        assert_eq!(
            bits(&a.data),
            bits(&b.data),
            "{dtype}: no integer path, f32 values"
        );
    }
    let w = random_weight(&mut rng, DType::Q8_0, 256, 19);
    for name in ["output.weight", "token_embd.weight"] {
        let a = matmul(&f32s, &x, &place(&f32s, name, &w));
        let b = matmul(&q8, &x, &place(&q8, name, &w));
        let c = matmul(&q8_all, &x, &place(&q8_all, name, &w));
        assert_eq!(
            bits(&a.data),
            bits(&b.data),
            "{name}: Q8 keeps the logits on f32"
        );
        assert_ne!(bits(&a.data), bits(&c.data), "{name}: Q8All quantizes them");
    }
}

#[test]
fn fused_products_match_separate_ones_in_q8() {
    let cpu = backend(Activations::Q8);
    let mut rng = TestRng::new(0x0bb);
    let x = rng.buf(18, 256);
    let ws: Vec<_> = [
        (DType::Q4_1, 40),
        (DType::Q6K, 9),
        (DType::F16, 12),
        (DType::Q8_0, 77),
    ]
    .iter()
    .map(|&(t, n)| place(&cpu, "w", &random_weight(&mut rng, t, 256, n)))
    .collect();
    let mut outs: Vec<HostBuf> = ws
        .iter()
        .map(|w| HostBuf::zeros(18, w.tensor.n_rows()))
        .collect();
    {
        let mut jobs: Vec<_> = ws.iter().zip(outs.iter_mut()).collect();
        cpu.matmuls(&x, &mut jobs);
    }
    for (w, fused) in ws.iter().zip(&outs) {
        let alone = matmul(&cpu, &x, w);
        assert_eq!(bits(&alone.data), bits(&fused.data));
    }
}

#[test]
fn activation_names() {
    assert_eq!(Activations::default(), Activations::F32);
    let names: Vec<_> = [Activations::F32, Activations::Q8, Activations::Q8All]
        .iter()
        .map(|a| a.name())
        .collect();
    assert_eq!(names, ["f32", "q8", "q8-all"]);
}

#[test]
fn a_nan_activation_gives_nan_outputs_as_in_f32() {
    let mut rng = TestRng::new(0x0bc);
    for dtype in Q8_TYPES {
        let w = random_weight(&mut rng, dtype, 256, 9);
        let mut x = rng.buf(3, 256);
        x.data[256 + 77] = f32::NAN;
        for a in [Activations::F32, Activations::Q8] {
            let cpu = backend(a);
            let out = matmul(&cpu, &x, &place(&cpu, "w", &w));
            assert!(
                out.row(1).iter().all(|v| v.is_nan()),
                "{dtype} {a:?}: row 1"
            );
            assert!(
                out.row(0).iter().all(|v| v.is_finite()),
                "{dtype} {a:?}: row 0"
            );
        }
    }
}
