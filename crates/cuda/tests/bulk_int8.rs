//! Bulk products with reduced-precision activations (kernels/gemm_q8.cu,
//! kernels/gemm_bf16.cu, src/bulk_q8.rs) against a host model of the same
//! arithmetic: x quantized to int8 per 32 values (amax / 127, nearest even,
//! in f32 as the kernel does), or for BF16 weights rounded to bf16, dotted
//! with the dequantized weights in f64. Per weight type with a kernel, for
//! odd row counts, partial k tiles and products split over k; a bulk row's
//! bits do not depend on the other rows, its place, the tile or the split;
//! and the default mode picks the reduced-precision product by the weight's
//! size.

mod common;

use common::model::{load, prefill_then_decode, synthetic};
use common::{argmax_agreement, assert_close, backend, finish, place, rel_err};
use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{Backend, HostBuf, HostTensor, ReferenceBackend};
use smelt_cuda::{CudaBackend, Q8Mode};
use smelt_model::KvType;
use smelt_model::synthetic::SyntheticSpec;
use smelt_tensor::DType;

/// x rounded as bulk_quant_x rounds it: per 32 values, q = rne(v * (127 /
/// amax)) (f32), value q * (amax / 127).
fn quantized(x: &HostBuf) -> HostBuf {
    let mut out = x.clone();
    for g in out.data.chunks_mut(32) {
        let amax = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let dx = amax / 127.0;
        for v in g.iter_mut() {
            *v = (*v * id).round_ties_even() * dx;
        }
    }
    out
}

/// x as the product for `dtype` reads it: rounded to bf16 (nearest even)
/// for BF16 weights, else quantized to int8 ([`quantized`]).
fn rounded(dtype: DType, x: &HostBuf) -> HostBuf {
    if dtype != DType::BF16 {
        return quantized(x);
    }
    let mut out = x.clone();
    for v in out.data.iter_mut() {
        *v = half::bf16::from_f32(*v).to_f32();
    }
    out
}

/// `x · Wᵀ` in f64 over the dequantized weights, and per output the sum of
/// the terms' sizes.
fn product(w: &HostTensor, x: &HostBuf) -> (Vec<f32>, Vec<f32>) {
    let wd = smelt_backend::dequantize_all(w);
    let n_in = w.row_len();
    let (mut out, mut scale) = (Vec::new(), Vec::new());
    for r in 0..x.rows {
        for row in wd.chunks_exact(n_in) {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for (wv, xv) in row.iter().zip(x.row(r)) {
                let t = f64::from(*wv) * f64::from(*xv);
                s += t;
                a += t.abs();
            }
            out.push(s as f32);
            scale.push(a as f32);
        }
    }
    (out, scale)
}

/// Starts a step of `n` bulk rows (none wants logits).
fn bulk_step(cuda: &CudaBackend, n: usize) {
    cuda.begin_step(&[], n);
}

/// (type, inputs, outputs): every type with an int8 kernel; a partial last
/// k tile (320 = 256 + 64); long rows a short prompt splits over k (4096),
/// also with a partial last tile (4128, 1056). BF16 (64-value k tiles): a
/// partial last tile (96, 4128) and splits over k (4096, 4128).
const CASES: [(DType, usize, usize); 15] = [
    (DType::Q4_1, 576, 200),
    (DType::Q8_0, 96, 33),
    (DType::Q8_0, 320, 70),
    (DType::Q4K, 512, 130),
    (DType::Q6K, 256, 7),
    (DType::Q6K, 512, 140),
    (DType::Q4K, 4096, 9),
    (DType::Q6K, 4096, 20),
    (DType::Q8_0, 4096, 9),
    // Split over k with a partial last tile (17 and 5 tiles).
    (DType::Q4_1, 4128, 9),
    (DType::Q8_0, 1056, 9),
    (DType::BF16, 96, 33),
    (DType::BF16, 512, 130),
    (DType::BF16, 4096, 9),
    (DType::BF16, 4128, 20),
];

#[test]
fn int8_bulk_products_match_the_host_model() {
    let Some(mut cuda) = backend("int8_bulk_products_match_the_host_model") else {
        return;
    };
    let mut rng = TestRng::new(121);
    for (dtype, n_in, n_out) in CASES {
        let w = random_weight(&mut rng, dtype, n_in, n_out);
        let wc = place(&cuda, &w);
        for n in [1, 7, 33, 130] {
            let what = format!("{dtype} {n_in}→{n_out}, {n} bulk rows");
            let x = rng.buf(n, n_in);
            let xc = cuda.upload(&x);
            let (want, scale) = product(&w, &rounded(dtype, &x));
            let run = |cuda: &CudaBackend| {
                let mut oc = cuda.alloc(n, n_out);
                bulk_step(cuda, n);
                cuda.matmul(&xc, &wc, &mut oc);
                let got = cuda.download(&oc);
                finish(cuda, &what);
                got
            };
            cuda.set_gemm_q8(Some(true));
            let got = run(&cuda);
            assert_close(&format!("matmul {what}"), &got.data, &want, &scale, 1e-5);
            // The exact bulk product differs: the int8 kernel ran.
            cuda.set_gemm_q8(Some(false));
            let exact = run(&cuda);
            assert_ne!(
                exact.data, got.data,
                "{what}: int8 and exact products are equal"
            );
            cuda.set_gemm_q8(Some(true));

            let acc0 = rng.buf(n, n_out);
            let mut got = cuda.upload(&acc0);
            let mut tc = cuda.alloc(n, n_out);
            bulk_step(&cuda, n);
            cuda.matmul_add(&xc, &wc, &mut tc, &mut got);
            let got = cuda.download(&got);
            finish(&cuda, &what);
            let want: Vec<f32> = want.iter().zip(&acc0.data).map(|(p, a)| p + a).collect();
            let scale: Vec<f32> = scale
                .iter()
                .zip(&acc0.data)
                .map(|(s, a)| s + a.abs())
                .collect();
            assert_close(
                &format!("matmul_add {what}"),
                &got.data,
                &want,
                &scale,
                1e-5,
            );
        }
    }
}

#[test]
fn int8_bulk_rows_do_not_depend_on_the_batch_the_tile_or_the_split() {
    let Some(mut cuda) = backend("int8_bulk_rows_do_not_depend_on_the_batch_the_tile_or_the_split")
    else {
        return;
    };
    cuda.set_gemm_q8(Some(true));
    let mut rng = TestRng::new(122);
    // 130 rows: three block rows, every case's outputs in wide or narrow
    // tiles; one row alone: a narrow tile, split over k where K allows.
    // 512 x 4224 (256 inputs): 8 x 33 wide blocks.
    let mut cases: Vec<(DType, usize, usize, usize)> =
        CASES.iter().map(|&(d, i, o)| (d, i, o, 130)).collect();
    for dtype in [
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4K,
        DType::Q6K,
        DType::BF16,
    ] {
        cases.push((dtype, 256, 4224, 512));
    }
    for (dtype, n_in, n_out, n) in cases {
        let wc = place(&cuda, &random_weight(&mut rng, dtype, n_in, n_out));
        let x = rng.buf(n, n_in);
        let run = |x: &HostBuf| {
            let xc = cuda.upload(x);
            let mut o = cuda.alloc(x.rows, n_out);
            bulk_step(&cuda, x.rows);
            cuda.matmul(&xc, &wc, &mut o);
            let out = cuda.download(&o);
            finish(&cuda, "int8 invariance");
            out
        };
        let all = run(&x);
        for r in [0, 63, 64, n - 1] {
            let one = run(&x.gather(&[r]));
            assert_eq!(
                one.data,
                all.row(r),
                "{dtype} {n_in}→{n_out}: row {r} alone differs from in {n}"
            );
        }
        // Row 1 of x at row 40 of 41 other rows.
        let mut rows: Vec<usize> = (0..41).map(|i| (i * 7 + 3) % n).collect();
        rows[40] = 1;
        let other = run(&x.gather(&rows));
        assert_eq!(
            other.row(40),
            all.row(1),
            "{dtype} {n_in}→{n_out}: row 1 at row 40 of 41"
        );
    }
}

#[test]
fn int8_bulk_products_follow_the_decode_q8_mode_by_weight_size() {
    let Some(mut cuda) = backend("int8_bulk_products_follow_the_decode_q8_mode_by_weight_size")
    else {
        return;
    };
    let mut rng = TestRng::new(123);
    // 2048 x 2048 (4 Mi values) takes int8 under Q8Mode::Auto; 1536 x 576
    // (SmolLM2's largest layer matrix) does not.
    for (dtype, n_in, n_out, int8) in [
        (DType::Q4K, 2048, 2048, true),
        (DType::BF16, 2048, 2048, true),
        (DType::Q4_1, 576, 1536, false),
    ] {
        let wc = place(&cuda, &random_weight(&mut rng, dtype, n_in, n_out));
        let x = rng.buf(9, n_in);
        let xc = cuda.upload(&x);
        let run = |cuda: &mut CudaBackend, q8: Option<bool>, auto: bool| {
            cuda.set_gemm_q8(q8);
            cuda.set_q8_mode(if auto { Q8Mode::Auto } else { Q8Mode::Off });
            let mut o = cuda.alloc(9, n_out);
            bulk_step(cuda, 9);
            cuda.matmul(&xc, &wc, &mut o);
            let out = cuda.download(&o);
            finish(cuda, "int8 mode");
            out.data
        };
        let default = run(&mut cuda, None, true);
        let forced = run(&mut cuda, Some(true), true);
        let exact = run(&mut cuda, Some(false), true);
        let q8_off = run(&mut cuda, None, false);
        assert_ne!(forced, exact, "{n_out}x{n_in}: int8 and exact are equal");
        assert_eq!(
            q8_off, exact,
            "{n_out}x{n_in}: Q8Mode::Off must keep bulk rows exact"
        );
        if int8 {
            assert_eq!(
                default, forced,
                "{n_out}x{n_in} should take int8 by default"
            );
        } else {
            assert_eq!(
                default, exact,
                "{n_out}x{n_in} should stay exact by default"
            );
        }
    }
}

/// A synthetic model's prompt on int8 bulk products: in one chunk or in
/// chunks of 33, the same logits bit for bit (batch invariance), and near
/// the reference (the decode steps stay exact: q8 off).
#[test]
fn int8_prefill_is_chunk_invariant_and_near_the_reference() {
    let Some(_probe) = backend("int8_prefill_is_chunk_invariant_and_near_the_reference") else {
        return;
    };
    drop(_probe);
    for (i, (wt, et)) in [
        (DType::Q4K, DType::Q6K),
        (DType::Q8_0, DType::Q4_1),
        (DType::BF16, DType::BF16),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = SyntheticSpec {
            arch: "llama".into(),
            n_layers: 2,
            d_model: 256,
            d_ff: 512,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 96,
            weight_type: wt,
            embd_type: et,
            tied_output: false,
            seed: 300 + i as u64,
            ..SyntheticSpec::default()
        };
        let file = synthetic(&spec);
        let tokens: Vec<u32> = (0..100u32).map(|t| (t * 29 + 3) % 96).collect();
        let prompt = 90;
        let want = prefill_then_decode(
            &load(&file, ReferenceBackend),
            &tokens,
            prompt,
            90,
            KvType::F32,
        );
        let run = |chunk: usize| {
            let mut be = CudaBackend::new().expect("cuda");
            be.set_q8(false);
            be.set_gemm_q8(Some(true));
            prefill_then_decode(&load(&file, be), &tokens, prompt, chunk, KvType::F32)
        };
        let whole = run(90);
        let chunked = run(33);
        assert_eq!(
            whole, chunked,
            "{wt}/{et}: int8 prefill differs between chunkings"
        );
        let err = rel_err(&whole, &want);
        let agree = argmax_agreement(&whole, &want, 96);
        println!(
            "synthetic llama {wt}/{et}, int8 bulk products: relative logit error {err:.2e}, \
             same argmax at {:.0}% of positions",
            agree * 100.0
        );
        // model_e2e's bound for int8 activations on random-weight models
        // (their heavy-tailed activations move logits by up to ~20 %); a
        // wrong kernel scrambles the argmax.
        assert!(
            err < 0.3 && agree >= 0.8,
            "{wt}/{et}: relative logit error {err:.3e}, argmax agreement {agree:.2}"
        );
    }
}
