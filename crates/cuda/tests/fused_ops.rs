//! The CUDA backend's fused operations (one kernel each) against the
//! reference backend's defaults (the plain operations in sequence), on random
//! data: RMSNorm folded into matrix products, Q/K/V with bias, RoPE and the
//! K/V cache write, the residual add, SwiGLU, and the greedy argmax.

mod common;

use common::{assert_close, backend, finish, place, vector};
use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{
    AttnGeometry, Backend, HostBuf, HostTensor, KvLayout, KvType, KvWrite, QkvWeights,
    ReferenceBackend, RopeParams, RopeStyle, argmax,
};
use smelt_cuda::{CudaBackend, CudaWeight, StagedMode};
use smelt_tensor::DType;

/// Each element's allowance: the largest magnitude in the output (fused
/// kernels round in another order than the plain ops, e.g. the norm scale
/// applied after the dot product instead of before).
fn max_scale(want: &[f32]) -> Vec<f32> {
    vec![want.iter().fold(0.0f32, |m, v| m.max(v.abs())); want.len()]
}

/// The largest `sum_i |w[o][i] * h[r][i]|` over outputs and rows: the size
/// of the terms a dot product of `w` with the (normed) input adds.
fn dot_scale(w: &HostTensor, h: &HostBuf) -> f32 {
    let wd = smelt_backend::dequantize_all(w);
    let n_in = w.row_len();
    let mut big = 0.0f32;
    for r in 0..h.rows {
        for row in wd.chunks_exact(n_in) {
            big = big.max(row.iter().zip(h.row(r)).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    big
}

/// Batch sizes: one row (the decode kernels), and several with a partial
/// last group of eight (the prefill kernels).
const BATCHES: [usize; 3] = [1, 3, 9];

#[test]
fn rms_norm_matmuls_and_matmul_add() {
    let Some(cuda) = backend("rms_norm_matmuls_and_matmul_add") else {
        return;
    };
    let mut rng = TestRng::new(81);
    for (dtype, n_in, n_out) in [
        (DType::Q4_1, 576, 45),
        (DType::Q4K, 512, 64),
        (DType::Q6K, 256, 7),
        (DType::Q8_0, 96, 33),
        (DType::F32, 250, 9),
        (DType::F16, 13, 5),
        // Long rows, split over 2 or 4 warps per output pair.
        (DType::Q4K, 8192, 9),
        (DType::Q6K, 8192, 5),
        (DType::Q8_0, 4096, 3),
        (DType::F16, 2100, 4),
    ] {
        let w = random_weight(&mut rng, dtype, n_in, n_out);
        let wc = place(&cuda, &w);
        let norm = vector(&mut rng, n_in, -1.5, 1.5);
        let nc = place(&cuda, &norm);
        for n in BATCHES {
            let what = format!("{dtype} {n_in}→{n_out}, {n} rows");
            let x = rng.buf(n, n_in);
            let xc = cuda.upload(&x);

            let mut h = HostBuf::zeros(n, n_in);
            let mut want = HostBuf::zeros(n, n_out);
            ReferenceBackend.rms_norm_matmuls(&x, &norm, 1e-5, &mut h, &mut [(&w, &mut want)]);
            let mut hc = cuda.alloc(n, n_in);
            let mut oc = cuda.alloc(n, n_out);
            cuda.rms_norm_matmuls(&xc, &nc, 1e-5, &mut hc, &mut [(&wc, &mut oc)]);
            let got = cuda.download(&oc);
            finish(&cuda, &what);
            let scale = vec![dot_scale(&w, &h); want.data.len()];
            assert_close(
                &format!("rms_norm_matmuls {what}"),
                &got.data,
                &want.data,
                &scale,
                1e-5,
            );

            let acc0 = rng.buf(n, n_out);
            let mut want = acc0.clone();
            let mut t = HostBuf::zeros(n, n_out);
            ReferenceBackend.matmul_add(&x, &w, &mut t, &mut want);
            let mut got = cuda.upload(&acc0);
            let mut tc = cuda.alloc(n, n_out);
            cuda.matmul_add(&xc, &wc, &mut tc, &mut got);
            let got = cuda.download(&got);
            finish(&cuda, &what);
            let scale = dot_scale(&w, &x) + max_scale(&acc0.data)[0];
            assert_close(
                &format!("matmul_add {what}"),
                &got.data,
                &want.data,
                &vec![scale; want.data.len()],
                1e-5,
            );
        }
    }
}

struct QkvCase {
    types: [DType; 3],
    d_model: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    n_rot: usize,
    style: RopeStyle,
    bias: bool,
    kv: KvType,
}

#[test]
fn norm_qkv_rope_store_matches_the_plain_ops() {
    let Some(cuda) = backend("norm_qkv_rope_store_matches_the_plain_ops") else {
        return;
    };
    let mut rng = TestRng::new(82);
    let cases = [
        // SmolLM2-like: Q4_1, 9/3 heads of 64, interleaved.
        QkvCase {
            types: [DType::Q4_1; 3],
            d_model: 576,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            n_rot: 64,
            style: RopeStyle::Interleaved,
            bias: false,
            kv: KvType::F16,
        },
        // Qwen2-like: biases, neox, V of another type, f32 cache.
        QkvCase {
            types: [DType::Q4K, DType::Q4K, DType::Q6K],
            d_model: 256,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            n_rot: 64,
            style: RopeStyle::Neox,
            bias: true,
            kv: KvType::F32,
        },
        // Partial rotation, both styles, float weights.
        QkvCase {
            types: [DType::F16, DType::F32, DType::Q8_0],
            d_model: 128,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 128,
            n_rot: 64,
            style: RopeStyle::Neox,
            bias: true,
            kv: KvType::F16,
        },
        QkvCase {
            types: [DType::Q8_0; 3],
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 16,
            n_rot: 8,
            style: RopeStyle::Interleaved,
            bias: false,
            kv: KvType::F32,
        },
    ];
    for c in &cases {
        let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let ws: Vec<HostTensor> = c
            .types
            .iter()
            .zip([q_dim, kv_dim, kv_dim])
            .map(|(&t, n_out)| random_weight(&mut rng, t, c.d_model, n_out))
            .collect();
        let biases: Vec<HostTensor> = [q_dim, kv_dim, kv_dim]
            .iter()
            .map(|&len| vector(&mut rng, len, -0.5, 0.5))
            .collect();
        let norm = vector(&mut rng, c.d_model, -1.5, 1.5);
        let wcs: Vec<CudaWeight> = ws.iter().map(|w| place(&cuda, w)).collect();
        let bcs: Vec<CudaWeight> = biases.iter().map(|b| place(&cuda, b)).collect();
        let ncu = place(&cuda, &norm);
        let bias = |i: usize| c.bias.then_some(&biases[i]);
        let bias_c = |i: usize| c.bias.then_some(&bcs[i]);
        let wr = QkvWeights {
            norm: &norm,
            q: &ws[0],
            k: &ws[1],
            v: &ws[2],
            q_bias: bias(0),
            k_bias: bias(1),
            v_bias: bias(2),
        };
        let wc = QkvWeights {
            norm: &ncu,
            q: &wcs[0],
            k: &wcs[1],
            v: &wcs[2],
            q_bias: bias_c(0),
            k_bias: bias_c(1),
            v_bias: bias_c(2),
        };
        let geom = AttnGeometry {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: None,
        };
        let rope = RopeParams::new(c.style, c.head_dim, c.n_rot, 10_000.0, 1.0, None);
        let layout = KvLayout {
            n_layers: 2,
            n_blocks: 4,
            block_size: 16,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            dtype: c.kv,
        };
        for n in BATCHES {
            let what = format!(
                "qkv {:?} heads {}/{} of {} rot {} {:?} bias {} kv {:?}, {n} rows",
                c.types, c.n_heads, c.n_kv_heads, c.head_dim, c.n_rot, c.style, c.bias, c.kv
            );
            let x = rng.buf(n, c.d_model);
            let positions: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % 64).collect();
            let slots: Vec<u32> = (0..n as u32).map(|i| (i * 5 + 1) % 64).collect();
            let at = KvWrite {
                layer: 1,
                positions: &positions,
                slots: &slots,
            };
            let mut kv_ref = ReferenceBackend.alloc_kv(layout).expect("kv");
            let mut kv_gpu = cuda.alloc_kv(layout).expect("kv");
            let mut hb = [
                HostBuf::zeros(n, c.d_model),
                HostBuf::zeros(n, q_dim),
                HostBuf::zeros(n, kv_dim),
                HostBuf::zeros(n, kv_dim),
            ];
            let [h, q, k, v] = &mut hb;
            let bufs = [h, q, k, v];
            ReferenceBackend.norm_qkv_rope_store(
                &x,
                &wr,
                1e-5,
                &geom,
                &rope,
                &mut kv_ref,
                &at,
                bufs,
            );
            let want_q = hb[1].clone();
            // A rotated value mixes two dot products (and a bias).
            let q_scale = 2.0 * dot_scale(&ws[0], &hb[0]) + 1.0;
            let k_scale = 2.0 * dot_scale(&ws[1], &hb[0]) + 1.0;
            let v_scale = dot_scale(&ws[2], &hb[0]) + 1.0;
            let mut cb = [
                cuda.alloc(n, c.d_model),
                cuda.alloc(n, q_dim),
                cuda.alloc(n, kv_dim),
                cuda.alloc(n, kv_dim),
            ];
            let [h, q, k, v] = &mut cb;
            cuda.norm_qkv_rope_store(
                &cuda.upload(&x),
                &wc,
                1e-5,
                &geom,
                &rope,
                &mut kv_gpu,
                &at,
                [h, q, k, v],
            );
            let got_q = cuda.download(&cb[1]);
            finish(&cuda, &what);
            assert_close(
                &format!("{what}: q"),
                &got_q.data,
                &want_q.data,
                &vec![q_scale; want_q.data.len()],
                1e-5,
            );
            // f16 cache values may round to the neighbouring half.
            let tol = if c.kv == KvType::F16 { 1e-3 } else { 1e-5 };
            for &slot in &slots {
                let (gk, gv) = cuda.read_kv(&kv_gpu, 1, slot as usize).expect("read kv");
                let table: Vec<u32> = (0..4).collect();
                let p = slot as usize;
                let wk: Vec<f32> = (0..kv_dim)
                    .map(|i| kv_ref.k_row(1, &table, p).get(i))
                    .collect();
                let wv: Vec<f32> = (0..kv_dim)
                    .map(|i| kv_ref.v_row(1, &table, p).get(i))
                    .collect();
                let (sk, sv) = if c.kv == KvType::F16 {
                    (max_scale(&wk), max_scale(&wv))
                } else {
                    (vec![k_scale; kv_dim], vec![v_scale; kv_dim])
                };
                assert_close(&format!("{what}: k slot {slot}"), &gk, &wk, &sk, tol);
                assert_close(&format!("{what}: v slot {slot}"), &gv, &wv, &sv, tol);
            }
            // The other layer is untouched.
            let (k0, v0) = cuda
                .read_kv(&kv_gpu, 0, slots[0] as usize)
                .expect("read kv");
            assert!(
                k0.iter().chain(&v0).all(|&z| z == 0.0),
                "{what}: layer 0 written"
            );
        }
    }
}

#[test]
fn norm_gate_up_swiglu_matches_the_plain_ops() {
    let Some(cuda) = backend("norm_gate_up_swiglu_matches_the_plain_ops") else {
        return;
    };
    let mut rng = TestRng::new(83);
    for (tg, tu, n_in, n_out) in [
        (DType::Q4_1, DType::Q4_1, 576, 40),
        (DType::Q4K, DType::Q6K, 512, 24),
        (DType::Q5_0, DType::Q5_0, 64, 3),
        (DType::BF16, DType::F16, 250, 17),
    ] {
        let wg = random_weight(&mut rng, tg, n_in, n_out);
        let wu = random_weight(&mut rng, tu, n_in, n_out);
        let norm = vector(&mut rng, n_in, -1.5, 1.5);
        let (wgc, wuc, nc) = (place(&cuda, &wg), place(&cuda, &wu), place(&cuda, &norm));
        for n in BATCHES {
            let what = format!("swiglu {tg}/{tu} {n_in}→{n_out}, {n} rows");
            let x = rng.buf(n, n_in);
            let mut h = HostBuf::zeros(n, n_in);
            let mut want = HostBuf::zeros(n, n_out);
            let mut up = HostBuf::zeros(n, n_out);
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
            // silu(g) * u moves by about |u| dg + |g| du.
            let (sg, su) = (dot_scale(&wg, &h), dot_scale(&wu, &h));
            let scale = vec![2.0 * sg * su + sg + su; want.data.len()];
            assert_close(&what, &got.data, &want.data, &scale, 1e-5);
        }
    }
}

/// A row computed alone equals the same row in a batch of 11, bit for bit,
/// for every fused kernel.
#[test]
fn fused_rows_do_not_depend_on_the_batch() {
    // One row takes the staged-x kernels for the logits and quantized
    // weights (the default) or for every product: the same values as the
    // multi-row kernels either way.
    for mode in [StagedMode::Quantized, StagedMode::All] {
        let Some(mut cuda) = backend("fused_rows_do_not_depend_on_the_batch") else {
            return;
        };
        cuda.set_staged(mode);
        rows_do_not_depend_on_the_batch(&cuda);
        // Single rows took the staged kernels (else the comparison above
        // would only have checked the `_1` kernels again).
        assert!(
            cuda.staged_launches() > 0,
            "{mode:?}: no product ran on the staged-x kernels"
        );
    }
}

fn rows_do_not_depend_on_the_batch(cuda: &CudaBackend) {
    let mut rng = TestRng::new(84);
    let (d, hd, nh, nkv, ff) = (256, 32, 4, 2, 96);
    // A Q4_K_M-like layer (V in Q6_K), and layers of Q4_1 and of Q8_0 (whose
    // multi-row products keep x resident in shared memory).
    for (tq, tv) in [
        (DType::Q4K, DType::Q6K),
        (DType::Q4_1, DType::Q4_1),
        (DType::Q8_0, DType::Q8_0),
    ] {
        let wq = place(cuda, &random_weight(&mut rng, tq, d, nh * hd));
        let wk = place(cuda, &random_weight(&mut rng, tq, d, nkv * hd));
        let wv = place(cuda, &random_weight(&mut rng, tv, d, nkv * hd));
        let wg = place(cuda, &random_weight(&mut rng, tq, d, ff));
        let wu = place(cuda, &random_weight(&mut rng, tq, d, ff));
        let norm = place(cuda, &vector(&mut rng, d, -1.5, 1.5));
        let geom = AttnGeometry {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            scale: 0.2,
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
        // (q, gate, plain with norm) outputs of rows `x` at `positions`.
        let mut run = |x: &HostBuf, positions: &[u32]| -> [HostBuf; 3] {
            let n = x.rows;
            let xc = cuda.upload(x);
            let slots: Vec<u32> = positions.to_vec();
            let at = KvWrite {
                layer: 0,
                positions,
                slots: &slots,
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
            let mut o = cuda.alloc(n, ff);
            cuda.rms_norm_matmuls(&xc, &norm, 1e-5, &mut h, &mut [(&wg, &mut o)]);
            let out = [cuda.download(&b[1]), cuda.download(&g), cuda.download(&o)];
            finish(cuda, "batch invariance");
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
                    "{name} ({tq} layer): row {r} alone differs from row {r} of 11"
                );
            }
        }
    }
    // Every weight type with its own kernels, long rows (several warps per
    // output pair) and rows that fill part of a warp's 32 units (the
    // multi-row kernels stage x per warp), with the residual add and with
    // the norm folded in. Q4_1 / Q8_0 rows of 576–2048 take the resident-x
    // kernels for several rows (2048: two warps an item, as few items).
    let cases = [
        (DType::Q4K, 8192),
        (DType::Q6K, 8192),
        (DType::F32, 1000),
        (DType::Q4_1, 8192),
        (DType::Q4_1, 576),
        (DType::Q8_0, 8192),
        (DType::Q8_0, 1536),
        (DType::Q4_1, 2048),
        (DType::Q8_0, 2048),
        (DType::Q4K, 768),
        (DType::Q6K, 1280),
        (DType::BF16, 4104),
        (DType::F16, 576),
    ];
    for (dtype, n_in) in cases {
        let w = place(cuda, &random_weight(&mut rng, dtype, n_in, 7));
        let norm = place(cuda, &vector(&mut rng, n_in, -1.5, 1.5));
        let x = rng.buf(11, n_in);
        let acc0 = rng.buf(11, 7);
        let mut t = cuda.alloc(11, 7);
        let mut all = cuda.upload(&acc0);
        cuda.matmul_add(&cuda.upload(&x), &w, &mut t, &mut all);
        let all = cuda.download(&all);
        let (mut h, mut normed) = (cuda.alloc(11, n_in), cuda.alloc(11, 7));
        cuda.rms_norm_matmuls(
            &cuda.upload(&x),
            &norm,
            1e-5,
            &mut h,
            &mut [(&w, &mut normed)],
        );
        let normed = cuda.download(&normed);
        for r in [0, 7, 8, 10] {
            let mut one = cuda.upload(&acc0.gather(&[r]));
            let mut t = cuda.alloc(1, 7);
            let xr = cuda.upload(&x.gather(&[r]));
            cuda.matmul_add(&xr, &w, &mut t, &mut one);
            let one = cuda.download(&one);
            let (mut h, mut normed_one) = (cuda.alloc(1, n_in), cuda.alloc(1, 7));
            cuda.rms_norm_matmuls(&xr, &norm, 1e-5, &mut h, &mut [(&w, &mut normed_one)]);
            let normed_one = cuda.download(&normed_one);
            finish(cuda, "batch invariance, every type");
            assert_eq!(
                one.data,
                all.row(r),
                "{dtype} rows of {n_in}: row {r} alone differs"
            );
            assert_eq!(
                normed_one.data,
                normed.row(r),
                "{dtype} rows of {n_in} with the norm: row {r} alone differs"
            );
        }
    }
}

#[test]
fn argmax_rows_matches_the_host_rule() {
    let Some(cuda) = backend("argmax_rows_matches_the_host_rule") else {
        return;
    };
    let mut rng = TestRng::new(85);
    for cols in [1usize, 7, 1000, 49_152] {
        let mut x = rng.buf(4, cols);
        // Row 1: a tie for the maximum (the lower index wins).
        if cols > 3 {
            let row = x.row_mut(1);
            row[cols - 1] = 9.0;
            row[2] = 9.0;
        }
        // Row 2: a NaN at index 0 wins; row 3: NaNs elsewhere never do.
        x.row_mut(2)[0] = f32::NAN;
        if cols > 1 {
            x.row_mut(3)[cols / 2] = f32::NAN;
        }
        let got = cuda.argmax_rows(&cuda.upload(&x));
        finish(&cuda, "argmax_rows");
        let want: Vec<u32> = (0..4).map(|r| argmax(x.row(r))).collect();
        assert_eq!(got, want, "argmax_rows over {cols} columns");
    }
}

#[test]
fn top_k_rows_match_the_host_rule() {
    let Some(cuda) = backend("top_k_rows_match_the_host_rule") else {
        return;
    };
    let mut rng = TestRng::new(86);
    let mut checked = 0;
    for cols in [5usize, 1000, 49_152, 262_144] {
        for rows in [1usize, 3] {
            let mut x = rng.buf(rows, cols);
            // Coarse values (ties at the k-th place), some -inf and a NaN.
            for (i, v) in x.data.iter_mut().enumerate() {
                *v = (*v * 8.0).round() / 2.0;
                if i % 97 == 3 {
                    *v = f32::NEG_INFINITY;
                }
            }
            if cols > 100 {
                x.data[cols / 2] = f32::NAN;
            }
            let xc = cuda.upload(&x);
            for k in [1usize, 7, 40, 256, 300] {
                let got = cuda.top_k_rows(&xc, k);
                finish(&cuda, "top_k_rows");
                assert_eq!(got.len(), rows);
                for (r, g) in got.iter().enumerate() {
                    let want = smelt_backend::top_k_sorted(x.row(r), k);
                    let bits = |v: &[(u32, f32)]| -> Vec<(u32, u32)> {
                        v.iter().map(|&(i, f)| (i, f.to_bits())).collect()
                    };
                    assert_eq!(bits(g), bits(&want), "cols {cols}, k {k}, row {r}");
                    checked += 1;
                }
            }
        }
    }
    println!("top_k_rows: {checked} rows equal the host's top-k");
}
