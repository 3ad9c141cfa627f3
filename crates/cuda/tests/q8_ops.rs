//! The 8-bit-activation products (matvec_q8.cu) against the reference
//! backend on random data. Each result must lie within what rounding the
//! input to int8 can explain (`q8_allowance`: half an int8 step per input,
//! times |w|) plus f32 rounding; and a row's result must not depend on the
//! batch it is in.

mod common;

use common::{assert_close, backend_q8, finish, place, q8_allowance, vector};
use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{
    AttnGeometry, Backend, HostBuf, HostTensor, KvLayout, KvType, KvWrite, QkvWeights,
    ReferenceBackend, RopeParams, RopeStyle,
};
use smelt_tensor::DType;

/// The f32 rounding allowance, relative to `sum |w x|`.
const TOL: f32 = 1e-5;

/// Per output: `sum |w x|` plus the int8 allowance over TOL, so that
/// `assert_close(.., TOL)` allows `TOL * sum |w x| + allowance`.
fn scales(w: &HostTensor, h: &HostBuf) -> Vec<f32> {
    let wd = smelt_backend::dequantize_all(w);
    let n_in = w.row_len();
    let allow = q8_allowance(w, h);
    let mut out = Vec::with_capacity(allow.len());
    for r in 0..h.rows {
        for row in wd.chunks_exact(n_in) {
            out.push(row.iter().zip(h.row(r)).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    out.iter().zip(&allow).map(|(s, a)| s + a / TOL).collect()
}

const CASES: [(DType, usize); 8] = [
    (DType::Q4_1, 32),
    (DType::Q4_1, 576),
    (DType::Q8_0, 96),
    (DType::Q8_0, 4096),
    (DType::Q4K, 256),
    (DType::Q4K, 8192),
    (DType::Q6K, 512),
    (DType::Q6K, 8192),
];

#[test]
fn q8_products_match_the_reference_within_int8_rounding() {
    let Some(cuda) = backend_q8("q8_products_match_the_reference_within_int8_rounding") else {
        return;
    };
    let Some(mut exact) = common::backend("q8 (exact twin)") else {
        return;
    };
    exact.set_q8(false);
    let mut rng = TestRng::new(91);
    let mut differs = 0;
    for (dtype, n_in) in CASES {
        for n_out in [1, 7, 40] {
            let w = random_weight(&mut rng, dtype, n_in, n_out);
            let wc = place(&cuda, &w);
            let we = place(&exact, &w);
            let norm = vector(&mut rng, n_in, -1.5, 1.5);
            let nc = place(&cuda, &norm);
            for n in [1, 3, 9] {
                let what = format!("{dtype} {n_in}→{n_out}, {n} rows");
                let x = rng.buf(n, n_in);
                let xc = cuda.upload(&x);

                let mut want = HostBuf::zeros(n, n_out);
                ReferenceBackend.matmul(&x, &w, &mut want);
                let mut oc = cuda.alloc(n, n_out);
                cuda.matmul(&xc, &wc, &mut oc);
                let got = cuda.download(&oc);
                finish(&cuda, &what);
                assert_close(
                    &format!("matmul {what}"),
                    &got.data,
                    &want.data,
                    &scales(&w, &x),
                    TOL,
                );

                // The same product with f32 activations: not bit-equal, or
                // the q8 kernels did not run.
                let xe = exact.upload(&x);
                let mut oe = exact.alloc(n, n_out);
                exact.matmul(&xe, &we, &mut oe);
                let plain = exact.download(&oe);
                finish(&exact, &what);
                differs += usize::from(plain.data != got.data);

                let mut h = HostBuf::zeros(n, n_in);
                let mut want = HostBuf::zeros(n, n_out);
                ReferenceBackend.rms_norm_matmuls(&x, &norm, 1e-5, &mut h, &mut [(&w, &mut want)]);
                let mut hc = cuda.alloc(n, n_in);
                let mut oc = cuda.alloc(n, n_out);
                cuda.rms_norm_matmuls(&xc, &nc, 1e-5, &mut hc, &mut [(&wc, &mut oc)]);
                let got = cuda.download(&oc);
                finish(&cuda, &what);
                // The norm's scale is computed on the GPU in another order:
                // a relative 1e-6 more.
                let s: Vec<f32> = scales(&w, &h).iter().map(|v| v * 1.1).collect();
                assert_close(
                    &format!("rms_norm_matmuls {what}"),
                    &got.data,
                    &want.data,
                    &s,
                    TOL,
                );
            }
        }
    }
    assert!(
        differs > 0,
        "every q8 product equalled the f32 one: q8 kernels never ran"
    );
}

#[test]
fn q8_swiglu_matches_the_reference() {
    let Some(cuda) = backend_q8("q8_swiglu_matches_the_reference") else {
        return;
    };
    let mut rng = TestRng::new(92);
    for (dtype, n_in, n_out) in [
        (DType::Q4_1, 576, 40),
        (DType::Q4K, 512, 24),
        (DType::Q6K, 4096, 9),
    ] {
        let wg = random_weight(&mut rng, dtype, n_in, n_out);
        let wu = random_weight(&mut rng, dtype, n_in, n_out);
        let norm = vector(&mut rng, n_in, -1.5, 1.5);
        let (wgc, wuc, nc) = (place(&cuda, &wg), place(&cuda, &wu), place(&cuda, &norm));
        for n in [1, 3, 9] {
            let what = format!("swiglu {dtype} {n_in}→{n_out}, {n} rows");
            let x = rng.buf(n, n_in);
            let mut h = HostBuf::zeros(n, n_in);
            let (mut want, mut up) = (HostBuf::zeros(n, n_out), HostBuf::zeros(n, n_out));
            ReferenceBackend
                .norm_gate_up_swiglu(&x, &norm, 1e-5, &wg, &wu, &mut h, &mut want, &mut up);
            let (mut hc, mut gc, mut uc) = (
                cuda.alloc(n, n_in),
                cuda.alloc(n, n_out),
                cuda.alloc(n, n_out),
            );
            cuda.norm_gate_up_swiglu(
                &cuda.upload(&x),
                &nc,
                1e-5,
                &wgc,
                &wuc,
                &mut hc,
                &mut gc,
                &mut uc,
            );
            let got = cuda.download(&gc);
            finish(&cuda, &what);
            // silu(g) * u moves by about |u| dg + |g| du (each d within its scale).
            let big = |v: Vec<f32>| v.into_iter().fold(0.0f32, f32::max) * TOL * 1.1;
            let (sg, su) = (big(scales(&wg, &h)), big(scales(&wu, &h)));
            let scale = vec![(2.0 * sg * su + sg + su) / TOL; want.data.len()];
            assert_close(&what, &got.data, &want.data, &scale, TOL);
        }
    }
}

/// A row computed alone equals the same row in a batch of 11, bit for bit,
/// for every q8 kernel (decode `_1` and prefill `_8` kernels alike).
#[test]
fn q8_rows_do_not_depend_on_the_batch() {
    let Some(cuda) = backend_q8("q8_rows_do_not_depend_on_the_batch") else {
        return;
    };
    let mut rng = TestRng::new(93);
    let (d, hd, nh, nkv, ff) = (512, 64, 4, 2, 96);
    let wq = place(&cuda, &random_weight(&mut rng, DType::Q4K, d, nh * hd));
    let wk = place(&cuda, &random_weight(&mut rng, DType::Q4K, d, nkv * hd));
    let wv = place(&cuda, &random_weight(&mut rng, DType::Q4K, d, nkv * hd));
    let wg = place(&cuda, &random_weight(&mut rng, DType::Q6K, d, ff));
    let wu = place(&cuda, &random_weight(&mut rng, DType::Q6K, d, ff));
    let wo = place(&cuda, &random_weight(&mut rng, DType::Q8_0, d, 33));
    let norm = place(&cuda, &vector(&mut rng, d, -1.5, 1.5));
    let geom = AttnGeometry {
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        scale: 0.125,
        window: None,
    };
    let rope = RopeParams::new(RopeStyle::Neox, hd, hd, 10_000.0, 1.0, None);
    let layout = KvLayout {
        n_layers: 1,
        n_blocks: 2,
        block_size: 16,
        n_kv_heads: nkv,
        head_dim: hd,
        dtype: KvType::F16,
    };
    let mut kv = cuda.alloc_kv(layout).expect("kv");
    let w = QkvWeights {
        norm: &norm,
        q: &wq,
        k: &wk,
        v: &wv,
        q_bias: None,
        k_bias: None,
        v_bias: None,
    };
    let mut run = |x: &HostBuf, positions: &[u32]| -> [HostBuf; 3] {
        let n = x.rows;
        let xc = cuda.upload(x);
        let at = KvWrite {
            layer: 0,
            positions,
            slots: positions,
        };
        let mut b = [
            cuda.alloc(n, d),
            cuda.alloc(n, nh * hd),
            cuda.alloc(n, nkv * hd),
            cuda.alloc(n, nkv * hd),
        ];
        let [h, q, k, v] = &mut b;
        cuda.norm_qkv_rope_store(&xc, &w, 1e-5, &geom, &rope, &mut kv, &at, [h, q, k, v]);
        let (mut h, mut g, mut u) = (cuda.alloc(n, d), cuda.alloc(n, ff), cuda.alloc(n, ff));
        cuda.norm_gate_up_swiglu(&xc, &norm, 1e-5, &wg, &wu, &mut h, &mut g, &mut u);
        let mut o = cuda.alloc(n, 33);
        cuda.rms_norm_matmuls(&xc, &norm, 1e-5, &mut h, &mut [(&wo, &mut o)]);
        let out = [cuda.download(&b[1]), cuda.download(&g), cuda.download(&o)];
        finish(&cuda, "q8 batch invariance");
        out
    };
    let x = rng.buf(11, d);
    let positions: Vec<u32> = (0..11).collect();
    let all = run(&x, &positions);
    for r in [0, 6, 10] {
        let one = run(&x.gather(&[r]), &positions[r..r + 1]);
        for (name, (o, a)) in ["q", "swiglu", "rms_norm_matmuls"]
            .iter()
            .zip(one.iter().zip(&all))
        {
            assert_eq!(
                o.data,
                a.row(r),
                "q8 {name}: row {r} alone differs from row {r} of 11"
            );
        }
    }
}
