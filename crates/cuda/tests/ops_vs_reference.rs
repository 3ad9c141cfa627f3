//! Every CUDA op against the scalar reference backend on random data: each
//! weight type, odd shapes, batches of one and many rows.

mod common;

use common::{assert_close, backend, finish, place, store_random_kv};
use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{
    AttnGeometry, AttnRow, Backend, HostBuf, HostTensor, KvLayout, KvType, ReferenceBackend,
    RopeParams, RopeStyle, dequantize_all,
};
use smelt_tensor::DType;

const WEIGHT_TYPES: [DType; 13] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

/// Row lengths to test for a type: one block, several, and (for the float
/// types, whose blocks are one value) lengths that are not a multiple of 8.
fn row_lens(dtype: DType) -> Vec<usize> {
    match dtype.block_elems() {
        1 => vec![5, 13, 64, 250],
        32 => vec![32, 96, 576],
        _ => vec![256, 768],
    }
}

/// `sum_i |w[o][i] * x[r][i]|` for every output: the size of what a dot adds.
fn dot_scales(w: &HostTensor, x: &HostBuf) -> Vec<f32> {
    let wd = dequantize_all(w);
    let n_in = w.row_len();
    let mut out = Vec::with_capacity(x.rows * w.n_rows());
    for r in 0..x.rows {
        for o in 0..w.n_rows() {
            let row = &wd[o * n_in..(o + 1) * n_in];
            out.push(row.iter().zip(x.row(r)).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    out
}

#[test]
fn matmul_every_type_and_shape() {
    let Some(cuda) = backend("matmul_every_type_and_shape") else {
        return;
    };
    let mut rng = TestRng::new(11);
    let mut checked = 0;
    for dtype in WEIGHT_TYPES {
        for n_in in row_lens(dtype) {
            for n_out in [1, 7, 40] {
                let w = random_weight(&mut rng, dtype, n_in, n_out);
                let wc = place(&cuda, &w);
                for n in [1, 3, 8, 19] {
                    let x = rng.buf(n, n_in);
                    let mut want = HostBuf::zeros(n, n_out);
                    ReferenceBackend.matmul(&x, &w, &mut want);
                    let xc = cuda.upload(&x);
                    let mut oc = cuda.alloc(n, n_out);
                    cuda.matmul(&xc, &wc, &mut oc);
                    let got = cuda.download(&oc);
                    let what = format!("matmul {dtype} {n_in}→{n_out}, {n} rows");
                    finish(&cuda, &what);
                    assert_close(&what, &got.data, &want.data, &dot_scales(&w, &x), 1e-5);
                    checked += 1;
                }
            }
        }
    }
    println!("matmul: {checked} type/shape/batch cases match the reference");
}

#[test]
fn matmul_rows_do_not_depend_on_the_batch() {
    let Some(cuda) = backend("matmul_rows_do_not_depend_on_the_batch") else {
        return;
    };
    let mut rng = TestRng::new(12);
    for dtype in [DType::Q4_1, DType::Q4K, DType::Q6K, DType::F16] {
        let n_in = row_lens(dtype)[1];
        let w = random_weight(&mut rng, dtype, n_in, 33);
        let wc = place(&cuda, &w);
        let x = rng.buf(13, n_in);
        let mut all = cuda.alloc(13, 33);
        cuda.matmul(&cuda.upload(&x), &wc, &mut all);
        let all = cuda.download(&all);
        for r in [0, 5, 12] {
            let one = x.gather(&[r]);
            let mut o = cuda.alloc(1, 33);
            cuda.matmul(&cuda.upload(&one), &wc, &mut o);
            let o = cuda.download(&o);
            finish(&cuda, "batch invariance");
            assert_eq!(
                o.data,
                all.row(r),
                "{dtype}: row {r} alone differs from row {r} of 13"
            );
        }
    }
}

#[test]
fn matmuls_fill_every_output() {
    let Some(cuda) = backend("matmuls_fill_every_output") else {
        return;
    };
    let mut rng = TestRng::new(13);
    let (n_in, n) = (64, 4);
    let ws: Vec<HostTensor> = [DType::Q8_0, DType::Q4_0, DType::F32]
        .iter()
        .zip([24, 8, 8])
        .map(|(&d, n_out)| random_weight(&mut rng, d, n_in, n_out))
        .collect();
    let wcs: Vec<_> = ws.iter().map(|w| place(&cuda, w)).collect();
    let x = rng.buf(n, n_in);
    let xc = cuda.upload(&x);
    let mut outs: Vec<_> = ws.iter().map(|w| cuda.alloc(n, w.n_rows())).collect();
    {
        let mut jobs: Vec<_> = wcs.iter().zip(outs.iter_mut()).collect();
        cuda.matmuls(&xc, &mut jobs);
    }
    for (w, oc) in ws.iter().zip(&outs) {
        let mut want = HostBuf::zeros(n, w.n_rows());
        ReferenceBackend.matmul(&x, w, &mut want);
        let got = cuda.download(oc);
        finish(&cuda, "matmuls");
        assert_close("matmuls", &got.data, &want.data, &dot_scales(w, &x), 1e-5);
    }
}

#[test]
fn embed_every_type() {
    let Some(cuda) = backend("embed_every_type") else {
        return;
    };
    let mut rng = TestRng::new(21);
    for dtype in WEIGHT_TYPES {
        for n_in in row_lens(dtype) {
            let table = random_weight(&mut rng, dtype, n_in, 50);
            let tc = place(&cuda, &table);
            let tokens = [3u32, 49, 0, 3, 17];
            for scale in [1.0f32, 0.37] {
                let mut want = HostBuf::zeros(tokens.len(), n_in);
                ReferenceBackend.embed(&table, &tokens, scale, &mut want);
                let mut oc = cuda.alloc(tokens.len(), n_in);
                cuda.embed(&tc, &tokens, scale, &mut oc);
                let got = cuda.download(&oc);
                let what = format!("embed {dtype} rows of {n_in}, scale {scale}");
                finish(&cuda, &what);
                let ones =
                    vec![want.data.iter().fold(0.0f32, |m, v| m.max(v.abs())); want.data.len()];
                assert_close(&what, &got.data, &want.data, &ones, 1e-6);
            }
        }
    }
}

#[test]
fn rms_norm_add_bias_swiglu_add_gather() {
    let Some(cuda) = backend("rms_norm_add_bias_swiglu_add_gather") else {
        return;
    };
    let mut rng = TestRng::new(31);
    for (rows, cols) in [(1, 64), (5, 576), (3, 1000), (2, 7)] {
        let x = rng.buf(rows, cols);
        let y = rng.buf(rows, cols);
        let wv: Vec<f32> = (0..cols).map(|_| rng.uniform(-1.5, 1.5)).collect();
        let w = HostTensor::from_f32("norm", &wv, vec![cols]).expect("tensor");
        let wc = place(&cuda, &w);
        let (xc, yc) = (cuda.upload(&x), cuda.upload(&y));
        let ones = vec![1.0f32; rows * cols];

        let mut want = HostBuf::zeros(rows, cols);
        ReferenceBackend.rms_norm(&x, &w, 1e-5, &mut want);
        let mut oc = cuda.alloc(rows, cols);
        cuda.rms_norm(&xc, &wc, 1e-5, &mut oc);
        let got = cuda.download(&oc);
        finish(&cuda, "rms_norm");
        assert_close("rms_norm", &got.data, &want.data, &ones, 2e-6 * 8.0);

        let mut want = x.clone();
        ReferenceBackend.add_bias(&mut want, &w);
        let mut got = cuda.upload(&x);
        cuda.add_bias(&mut got, &wc);
        let got = cuda.download(&got);
        finish(&cuda, "add_bias");
        assert_eq!(got.data, want.data, "add_bias {rows}×{cols}");

        let mut want = x.clone();
        ReferenceBackend.swiglu(&mut want, &y);
        let mut got = cuda.upload(&x);
        cuda.swiglu(&mut got, &yc);
        let got = cuda.download(&got);
        finish(&cuda, "swiglu");
        assert_close("swiglu", &got.data, &want.data, &ones, 1e-6);

        let mut want = x.clone();
        ReferenceBackend.add(&mut want, &y);
        let mut got = cuda.upload(&x);
        cuda.add(&mut got, &yc);
        let got = cuda.download(&got);
        finish(&cuda, "add");
        assert_eq!(got.data, want.data, "add {rows}×{cols}");

        let pick: Vec<usize> = (0..rows).rev().chain([0]).collect();
        let want = x.gather(&pick);
        let got = cuda.download(&cuda.gather_rows(&xc, &pick));
        finish(&cuda, "gather_rows");
        assert_eq!((got.rows, got.cols), (want.rows, want.cols));
        assert_eq!(got.data, want.data, "gather_rows");
    }
}

#[test]
fn rope_both_styles() {
    let Some(cuda) = backend("rope_both_styles") else {
        return;
    };
    let mut rng = TestRng::new(41);
    for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
        for (head_dim, n_rot, n_heads) in [(64, 64, 9), (128, 64, 2), (16, 16, 4)] {
            let params = RopeParams::new(style, head_dim, n_rot, 10_000.0, 1.0, None);
            let rows = 6;
            let positions = [0u32, 1, 7, 300, 4095, 31_000];
            let x = rng.buf(rows, n_heads * head_dim);
            let mut want = x.clone();
            ReferenceBackend.rope(&mut want, n_heads, &positions, &params);
            let mut got = cuda.upload(&x);
            cuda.rope(&mut got, n_heads, &positions, &params);
            let got = cuda.download(&got);
            let what = format!("rope {style:?} head {head_dim} rot {n_rot}");
            finish(&cuda, &what);
            let ones = vec![1.0f32; want.data.len()];
            assert_close(&what, &got.data, &want.data, &ones, 1e-6);
        }
    }
}

/// Fills a cache on both backends with random K/V for every position of two
/// sequences with scattered block tables, then compares attention.
#[test]
fn kv_store_and_attention() {
    let Some(cuda) = backend("kv_store_and_attention") else {
        return;
    };
    let mut rng = TestRng::new(51);
    for dtype in [KvType::F16, KvType::F32] {
        for (n_heads, n_kv_heads, head_dim) in [(9, 3, 64), (4, 4, 16), (2, 1, 128), (8, 2, 256)] {
            let layout = KvLayout {
                n_layers: 2,
                n_blocks: 12,
                block_size: 16,
                n_kv_heads,
                head_dim,
                dtype,
            };
            let width = n_kv_heads * head_dim;
            let mut kv_ref = ReferenceBackend.alloc_kv(layout).expect("kv");
            let mut kv_gpu = cuda.alloc_kv(layout).expect("kv");
            // Sequence A: blocks 5, 0, 9 (up to 48 positions); B: 2, 11.
            let tables: [&[u32]; 2] = [&[5, 0, 9], &[2, 11]];
            let lens = [41usize, 20];
            let layer = 1;
            for (table, &len) in tables.iter().zip(&lens) {
                // Stored in two steps (a prefill then single rows), as the model does.
                for range in [0..len - 3, len - 3..len - 2, len - 2..len] {
                    store_random_kv(
                        &mut rng,
                        &cuda,
                        &mut kv_ref,
                        &mut kv_gpu,
                        layer,
                        table,
                        range,
                        width,
                    );
                }
            }
            let geom = AttnGeometry {
                n_heads,
                n_kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                window: None,
            };
            // Rows: a decode row of each sequence, and a prefill-like run of A.
            let rows: Vec<AttnRow<'_>> = [(0, 40), (1, 19), (0, 0), (0, 15), (0, 16), (0, 33)]
                .iter()
                .map(|&(s, pos)| AttnRow {
                    pos,
                    block_table: tables[s],
                })
                .collect();
            let q = rng.buf(rows.len(), n_heads * head_dim);
            let mut want = HostBuf::zeros(rows.len(), n_heads * head_dim);
            ReferenceBackend.attention(&q, &kv_ref, layer, &rows, &geom, &mut want);
            let mut got = cuda.alloc(rows.len(), n_heads * head_dim);
            cuda.attention(&cuda.upload(&q), &kv_gpu, layer, &rows, &geom, &mut got);
            let got = cuda.download(&got);
            let what = format!("attention {dtype:?} {n_heads}/{n_kv_heads} heads of {head_dim}");
            finish(&cuda, &what);
            let ones = vec![1.0f32; want.data.len()];
            assert_close(&what, &got.data, &want.data, &ones, 2e-5);
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let Some(cuda) = backend("bad_shapes_are_errors_not_panics") else {
        return;
    };
    let mut rng = TestRng::new(61);
    let w = random_weight(&mut rng, DType::Q8_0, 64, 8);
    let wc = place(&cuda, &w);
    let x = cuda.upload(&rng.buf(2, 32));
    let mut out = cuda.alloc(2, 8);
    cuda.matmul(&x, &wc, &mut out);
    let e = cuda
        .finish()
        .expect_err("a 32-wide input against 64-wide weights");
    assert!(e.to_string().contains("matmul"), "{e}");
    // The error was reported once; the backend works again afterwards.
    let x = rng.buf(2, 64);
    cuda.matmul(&cuda.upload(&x), &wc, &mut out);
    finish(&cuda, "after an error");
    let mut tokens_out = cuda.alloc(1, 64);
    cuda.embed(&wc, &[8], 1.0, &mut tokens_out);
    let e = cuda.finish().expect_err("token 8 of an 8-row table");
    assert!(e.to_string().contains("token 8"), "{e}");
}

#[test]
fn backend_reports_its_device() {
    let Some(cuda) = backend("backend_reports_its_device") else {
        return;
    };
    let info = cuda.info();
    println!(
        "GPU {}: {} (sm_{}{}), {:.1} GiB, NVRTC {}.{}, kernels: {:?}",
        info.ordinal,
        info.name,
        info.capability.0,
        info.capability.1,
        info.total_memory as f64 / (1u64 << 30) as f64,
        info.nvrtc.0,
        info.nvrtc.1,
        info.kernels
    );
    assert!(info.capability.0 >= 5);
}

/// Contexts longer than one attention span (1024 keys): split, then merged.
#[test]
fn attention_over_long_contexts_splits_and_merges() {
    let Some(cuda) = backend("attention_over_long_contexts_splits_and_merges") else {
        return;
    };
    let mut rng = TestRng::new(71);
    for dtype in [KvType::F16, KvType::F32] {
        let (n_heads, n_kv_heads, head_dim) = (6, 2, 64);
        let layout = KvLayout {
            n_layers: 1,
            n_blocks: 160,
            block_size: 16,
            n_kv_heads,
            head_dim,
            dtype,
        };
        let width = n_kv_heads * head_dim;
        let mut kv_ref = ReferenceBackend.alloc_kv(layout).expect("kv");
        let mut kv_gpu = cuda.alloc_kv(layout).expect("kv");
        // 150 of the 160 blocks, in a scattered order: 2400 positions.
        let table: Vec<u32> = (0..150u32).map(|i| (i * 17 + 3) % 160).collect();
        let len = 2300;
        store_random_kv(
            &mut rng,
            &cuda,
            &mut kv_ref,
            &mut kv_gpu,
            0,
            &table,
            0..len,
            width,
        );
        let geom = AttnGeometry {
            n_heads,
            n_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
        };
        let rows: Vec<AttnRow<'_>> = [2299u32, 1023, 1024, 2047, 2048, 3, 767, 1500]
            .iter()
            .map(|&pos| AttnRow {
                pos,
                block_table: &table,
            })
            .collect();
        let q = rng.buf(rows.len(), n_heads * head_dim);
        let mut want = HostBuf::zeros(rows.len(), n_heads * head_dim);
        ReferenceBackend.attention(&q, &kv_ref, 0, &rows, &geom, &mut want);
        let mut got = cuda.alloc(rows.len(), n_heads * head_dim);
        cuda.attention(&cuda.upload(&q), &kv_gpu, 0, &rows, &geom, &mut got);
        let got = cuda.download(&got);
        let what = format!("long attention {dtype:?}");
        finish(&cuda, &what);
        let ones = vec![1.0f32; want.data.len()];
        assert_close(&what, &got.data, &want.data, &ones, 2e-5);
        // Each row alone gives the same values as in the batch.
        for (r, row) in rows.iter().enumerate() {
            let mut one = cuda.alloc(1, n_heads * head_dim);
            cuda.attention(
                &cuda.upload(&q.gather(&[r])),
                &kv_gpu,
                0,
                std::slice::from_ref(row),
                &geom,
                &mut one,
            );
            let one = cuda.download(&one);
            finish(&cuda, &what);
            assert_eq!(one.data, got.row(r), "{what}: row {r} alone differs");
        }
    }
}
