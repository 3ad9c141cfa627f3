//! Every CPU-backend op against the scalar reference backend on random data,
//! for every weight type and odd shapes (ggml test-backend-ops style).

use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{
    AttnGeometry, AttnRow, Backend, HostBuf, KvLayout, KvType, ReferenceBackend, RopeParams,
    RopeStyle,
};
use smelt_cpu::CpuBackend;
use smelt_tensor::DType;

fn assert_close(what: &str, got: &HostBuf, want: &HostBuf, tol: f32) {
    assert_eq!(
        (got.rows, got.cols),
        (want.rows, want.cols),
        "{what}: shape"
    );
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let max_err = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        max_err <= tol * scale,
        "{what}: max |Δ| {max_err} > {tol} × {scale}"
    );
    assert!(got.data.iter().any(|v| *v != 0.0), "{what}: all zeros");
}

fn cpu() -> CpuBackend {
    CpuBackend::new(2).expect("thread pool")
}

#[test]
fn matmul_matches_reference_for_every_type_and_odd_shapes() {
    let (cpu, reference) = (cpu(), ReferenceBackend);
    let mut rng = TestRng::new(1);
    for dtype in DType::ALL {
        let blk = dtype.block_elems();
        for &(n_rows, in_blocks, n_out) in &[(1, 1, 1), (1, 3, 17), (5, 2, 33), (13, 1, 70)] {
            let n_in = in_blocks * blk.max(if blk == 1 { 45 } else { 1 });
            let w = random_weight(&mut rng, dtype, n_in, n_out);
            let x = rng.buf(n_rows, n_in);
            let (mut a, mut b) = (HostBuf::zeros(n_rows, n_out), HostBuf::zeros(n_rows, n_out));
            cpu.matmul(&x, &cpu.place("w", &w).expect("place"), &mut a);
            reference.matmul(&x, &w, &mut b);
            assert_close(
                &format!("matmul {dtype} {n_rows}x{n_in}->{n_out}"),
                &a,
                &b,
                1e-4,
            );
        }
    }
}

#[test]
fn matmul_rows_are_batch_invariant() {
    let cpu = cpu();
    let mut rng = TestRng::new(2);
    let w = random_weight(&mut rng, DType::Q4K, 512, 40);
    let x = rng.buf(7, 512);
    let mut all = HostBuf::zeros(7, 40);
    let wc = cpu.place("w", &w).expect("place");
    cpu.matmul(&x, &wc, &mut all);
    for r in 0..7 {
        let one = cpu.gather_rows(&x, &[r]);
        let mut out = HostBuf::zeros(1, 40);
        cpu.matmul(&one, &wc, &mut out);
        assert_eq!(
            out.row(0),
            all.row(r),
            "row {r} differs alone vs in a batch"
        );
    }
}

#[test]
fn elementwise_ops_match_reference() {
    let (cpu, reference) = (cpu(), ReferenceBackend);
    let mut rng = TestRng::new(3);
    let (rows, cols) = (6, 96);
    let x = rng.buf(rows, cols);
    let norm_w = random_weight(&mut rng, DType::F32, cols, 1);
    let (mut a, mut b) = (HostBuf::zeros(rows, cols), HostBuf::zeros(rows, cols));
    cpu.rms_norm(&x, &cpu.place("n", &norm_w).expect("place"), 1e-5, &mut a);
    reference.rms_norm(&x, &norm_w, 1e-5, &mut b);
    assert_close("rms_norm", &a, &b, 1e-6);

    let table = random_weight(&mut rng, DType::Q8_0, cols, 50);
    let tokens = [3, 49, 0, 17, 17, 8];
    cpu.embed(
        &cpu.place("e", &table).expect("place"),
        &tokens,
        1.5,
        &mut a,
    );
    reference.embed(&table, &tokens, 1.5, &mut b);
    assert_close("embed", &a, &b, 0.0);

    for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
        let p = RopeParams::new(style, 32, 24, 10_000.0, 1.0, None);
        let positions = [0, 1, 7, 100, 2047, 5];
        let (mut a, mut b) = (x.clone(), x.clone());
        cpu.rope(&mut a, 3, &positions, &p);
        reference.rope(&mut b, 3, &positions, &p);
        assert_close(&format!("rope {style:?}"), &a, &b, 0.0);
        assert_eq!(a.row(0), x.row(0), "position 0 is the identity");
        assert_ne!(a.row(1), x.row(1));
    }

    let up = rng.buf(rows, cols);
    let (mut a, mut b) = (x.clone(), x.clone());
    cpu.swiglu(&mut a, &up);
    reference.swiglu(&mut b, &up);
    assert_close("swiglu", &a, &b, 0.0);

    let bias = random_weight(&mut rng, DType::F32, cols, 1);
    let (mut a, mut b) = (x.clone(), x.clone());
    cpu.add_bias(&mut a, &cpu.place("b", &bias).expect("place"));
    reference.add_bias(&mut b, &bias);
    assert_close("add_bias", &a, &b, 0.0);
}

#[test]
fn attention_over_paged_cache_matches_reference() {
    for dtype in [KvType::F32, KvType::F16] {
        for window in [None, Some(3), Some(5)] {
            attention_case(dtype, window);
        }
    }
}

fn attention_case(dtype: KvType, window: Option<u32>) {
    let (cpu, reference) = (cpu(), ReferenceBackend);
    let mut rng = TestRng::new(4);
    let geom = AttnGeometry {
        n_heads: 6,
        n_kv_heads: 2,
        head_dim: 16,
        scale: 0.25,
        window,
    };
    let layout = KvLayout {
        n_layers: 2,
        n_blocks: 12,
        block_size: 4,
        n_kv_heads: 2,
        head_dim: 16,
        dtype,
    };
    let mut kv_a = cpu.alloc_kv(layout).expect("kv");
    let mut kv_b = reference.alloc_kv(layout).expect("kv");
    // Two sequences with scattered blocks: seq 0 holds 11 positions, seq 1 holds 7.
    let tables: [&[u32]; 2] = [&[5, 1, 9], &[0, 7]];
    let lens = [11usize, 7];
    for layer in 0..2 {
        for (s, table) in tables.iter().enumerate() {
            let k = rng.buf(lens[s], 32);
            let v = rng.buf(lens[s], 32);
            let slots: Vec<u32> = (0..lens[s])
                .map(|p| table[p / 4] * 4 + (p % 4) as u32)
                .collect();
            cpu.kv_store(&mut kv_a, layer, &k, &v, &slots);
            reference.kv_store(&mut kv_b, layer, &k, &v, &slots);
        }
    }
    let rows = [
        AttnRow {
            pos: 10,
            block_table: tables[0],
        },
        AttnRow {
            pos: 0,
            block_table: tables[1],
        },
        AttnRow {
            pos: 6,
            block_table: tables[1],
        },
        AttnRow {
            pos: 4,
            block_table: tables[0],
        },
    ];
    let q = rng.buf(4, 96);
    let (mut a, mut b) = (HostBuf::zeros(4, 96), HostBuf::zeros(4, 96));
    cpu.attention(&q, &kv_a, 1, &rows, &geom, &mut a);
    reference.attention(&q, &kv_b, 1, &rows, &geom, &mut b);
    assert_close(
        &format!("attention {dtype:?} window {window:?}"),
        &a,
        &b,
        1e-5,
    );
    // A row at position 0 sees only its first value row: output = V[0].
    let v0 = kv_b.v_row(1, tables[1], 0);
    for h in 0..6 {
        let kvh = h / 3;
        for i in 0..16 {
            assert_eq!(
                b.row(1)[h * 16 + i],
                v0.get(kvh * 16 + i),
                "{dtype:?} head {h}"
            );
        }
    }
}

#[test]
fn fused_matmuls_match_separate_products() {
    let cpu = cpu();
    let mut rng = TestRng::new(5);
    let x = rng.buf(3, 256);
    let ws: Vec<_> = [(DType::Q4_1, 40), (DType::Q6K, 9), (DType::Q8_0, 77)]
        .iter()
        .map(|&(t, n)| {
            cpu.place("w", &random_weight(&mut rng, t, 256, n))
                .expect("place")
        })
        .collect();
    let mut outs: Vec<HostBuf> = ws
        .iter()
        .map(|w| HostBuf::zeros(3, w.tensor.n_rows()))
        .collect();
    {
        let mut jobs: Vec<_> = ws.iter().zip(outs.iter_mut()).collect();
        cpu.matmuls(&x, &mut jobs);
    }
    for (w, fused) in ws.iter().zip(&outs) {
        let mut alone = HostBuf::zeros(3, w.tensor.n_rows());
        cpu.matmul(&x, w, &mut alone);
        assert_eq!(&alone, fused);
        assert!(alone.data.iter().all(|v| *v != 0.0));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// The ops Gemma 3 and Qwen3 added: GELU-tanh gate, per-head RMSNorm and
    /// soft-capping, on random shapes and values.
    #[test]
    fn new_elementwise_ops_match_reference(
        seed in 0u64..1_000_000,
        rows in 1usize..6,
        n_heads in 1usize..5,
        head_dim in 1usize..40,
        cap in 0.5f32..50.0,
    ) {
        let (cpu, reference) = (cpu(), ReferenceBackend);
        let mut rng = TestRng::new(seed);
        let cols = n_heads * head_dim;
        let (gate, up) = (rng.buf(rows, cols), rng.buf(rows, cols));
        let (mut a, mut b) = (gate.clone(), gate.clone());
        cpu.gelu_tanh_gate(&mut a, &up);
        reference.gelu_tanh_gate(&mut b, &up);
        assert_close("gelu_tanh_gate", &a, &b, 0.0);

        let w = random_weight(&mut rng, DType::F32, head_dim, 1);
        let (mut a, mut b) = (gate.clone(), gate.clone());
        cpu.rms_norm_heads(&mut a, n_heads, &cpu.place("n", &w).expect("place"), 1e-6);
        reference.rms_norm_heads(&mut b, n_heads, &w, 1e-6);
        assert_close("rms_norm_heads", &a, &b, 0.0);

        let mut logits = rng.buf(rows, cols);
        logits.data.iter_mut().for_each(|v| *v *= 40.0);
        let (mut a, mut b) = (logits.clone(), logits.clone());
        cpu.softcap(&mut a, cap);
        reference.softcap(&mut b, cap);
        assert_close("softcap", &a, &b, 0.0);
        proptest::prop_assert!(a.data.iter().all(|v| v.abs() <= cap));
    }
}
