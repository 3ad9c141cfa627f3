//! Bulk rows (rows of a step that want no logits) on the tensor-core path
//! (src/bulk.rs, kernels/gemm.cu): every bulk operation against the
//! reference backend on random data, per weight type and for odd row counts;
//! a bulk row's result is bit-identical whatever the other rows, the row
//! count and its place; and in a step that mixes both kinds, the logits
//! rows get exactly the matrix-vector result.

mod common;

use common::{assert_close, backend, finish, place, vector};
use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{
    AttnGeometry, Backend, HostBuf, HostTensor, KvLayout, KvType, KvWrite, QkvWeights,
    ReferenceBackend, RopeParams, RopeStyle,
};
use smelt_cuda::{CudaBackend, CudaBuf, CudaKv, CudaWeight};
use smelt_tensor::DType;

/// For each (row, output): `sum_i |w[o][i] * h[r][i]|`, the size of the
/// terms the dot product adds.
fn dot_scales(w: &HostTensor, h: &HostBuf) -> Vec<f32> {
    let wd = smelt_backend::dequantize_all(w);
    let n_in = w.row_len();
    let mut out = Vec::with_capacity(h.rows * w.n_rows());
    for r in 0..h.rows {
        for row in wd.chunks_exact(n_in) {
            out.push(row.iter().zip(h.row(r)).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    out
}

/// The largest of `dot_scales`.
fn dot_scale(w: &HostTensor, h: &HostBuf) -> f32 {
    dot_scales(w, h).into_iter().fold(0.0, f32::max)
}

/// Row counts: one row, a partial tile, several tiles with a partial last.
const ROWS: [usize; 4] = [1, 7, 33, 130];

/// (type, inputs, outputs): every type the issue benchmarks, odd lengths
/// for the float types, more outputs than one 128-wide tile.
const MATMUL_CASES: [(DType, usize, usize); 10] = [
    (DType::F32, 250, 9),
    (DType::F16, 13, 131),
    (DType::BF16, 1000, 45),
    (DType::Q4_1, 576, 200),
    (DType::Q8_0, 96, 33),
    (DType::Q4K, 512, 130),
    (DType::Q6K, 256, 7),
    (DType::Q4_0, 128, 20),
    (DType::Q5K, 256, 17),
    (DType::Q4K, 4096, 9),
];

/// Every matmul case with gemm.cu's product and with gemm_codes.cu's.
const CODE_CASES: [(bool, (DType, usize, usize)); 20] = {
    let mut all = [(false, MATMUL_CASES[0]); 20];
    let mut i = 0;
    while i < 10 {
        all[i] = (false, MATMUL_CASES[i]);
        all[i + 10] = (true, MATMUL_CASES[i]);
        i += 1;
    }
    all
};

/// Starts a step of `n` rows in which only `logits` want logits.
fn step(cuda: &CudaBackend, logits: &[usize], n: usize) {
    cuda.begin_step(logits, n);
}

#[test]
fn bulk_matmul_and_matmul_add_match_the_reference() {
    let Some(mut cuda) = backend("bulk_matmul_and_matmul_add_match_the_reference") else {
        return;
    };
    let mut rng = TestRng::new(91);
    for (codes, (dtype, n_in, n_out)) in CODE_CASES {
        cuda.set_gemm_codes(codes);
        let w = random_weight(&mut rng, dtype, n_in, n_out);
        let wc = place(&cuda, &w);
        for n in ROWS {
            let what = format!("{dtype} {n_in}→{n_out}, {n} bulk rows, codes {codes}");
            let x = rng.buf(n, n_in);
            let xc = cuda.upload(&x);
            let mut want = HostBuf::zeros(n, n_out);
            ReferenceBackend.matmul(&x, &w, &mut want);
            let mut oc = cuda.alloc(n, n_out);
            step(&cuda, &[], n);
            cuda.matmul(&xc, &wc, &mut oc);
            let got = cuda.download(&oc);
            finish(&cuda, &what);
            let scale = dot_scales(&w, &x);
            assert_close(
                &format!("matmul {what}"),
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
            step(&cuda, &[], n);
            cuda.matmul_add(&xc, &wc, &mut tc, &mut got);
            let got = cuda.download(&got);
            finish(&cuda, &what);
            let scale: Vec<f32> = scale
                .iter()
                .zip(&acc0.data)
                .map(|(s, a)| s + a.abs())
                .collect();
            assert_close(
                &format!("matmul_add {what}"),
                &got.data,
                &want.data,
                &scale,
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

const QKV_CASES: [QkvCase; 4] = [
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
    // Partial rotation, float weights.
    QkvCase {
        types: [DType::BF16, DType::F32, DType::F16],
        d_model: 128,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 128,
        n_rot: 64,
        style: RopeStyle::Neox,
        bias: true,
        kv: KvType::F32,
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
        kv: KvType::F16,
    },
];

/// A Q/K/V case's weights on the host and on the GPU.
struct QkvSetup {
    ws: Vec<HostTensor>,
    biases: Vec<HostTensor>,
    norm: HostTensor,
    wcs: Vec<CudaWeight>,
    bcs: Vec<CudaWeight>,
    ncu: CudaWeight,
    geom: AttnGeometry,
    rope: RopeParams,
    layout: KvLayout,
}

impl QkvSetup {
    fn new(cuda: &CudaBackend, rng: &mut TestRng, c: &QkvCase, n_blocks: usize) -> Self {
        let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let ws: Vec<HostTensor> = c
            .types
            .iter()
            .zip([q_dim, kv_dim, kv_dim])
            .map(|(&t, n_out)| random_weight(rng, t, c.d_model, n_out))
            .collect();
        let biases: Vec<HostTensor> = [q_dim, kv_dim, kv_dim]
            .iter()
            .map(|&len| vector(rng, len, -0.5, 0.5))
            .collect();
        let norm = vector(rng, c.d_model, -1.5, 1.5);
        let wcs = ws.iter().map(|w| place(cuda, w)).collect();
        let bcs = biases.iter().map(|b| place(cuda, b)).collect();
        let ncu = place(cuda, &norm);
        QkvSetup {
            ws,
            biases,
            norm,
            wcs,
            bcs,
            ncu,
            geom: AttnGeometry {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                scale: 1.0 / (c.head_dim as f32).sqrt(),
                window: None,
            },
            rope: RopeParams::new(c.style, c.head_dim, c.n_rot, 10_000.0, 1.0, None),
            layout: KvLayout {
                n_layers: 2,
                n_blocks,
                block_size: 16,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                dtype: c.kv,
            },
        }
    }

    fn host(&self, bias: bool) -> QkvWeights<'_, HostTensor> {
        QkvWeights {
            norm: &self.norm,
            q: &self.ws[0],
            k: &self.ws[1],
            v: &self.ws[2],
            q_bias: bias.then_some(&self.biases[0]),
            k_bias: bias.then_some(&self.biases[1]),
            v_bias: bias.then_some(&self.biases[2]),
        }
    }

    fn gpu(&self, bias: bool) -> QkvWeights<'_, CudaWeight> {
        QkvWeights {
            norm: &self.ncu,
            q: &self.wcs[0],
            k: &self.wcs[1],
            v: &self.wcs[2],
            q_bias: bias.then_some(&self.bcs[0]),
            k_bias: bias.then_some(&self.bcs[1]),
            v_bias: bias.then_some(&self.bcs[2]),
        }
    }

    /// Runs `norm_qkv_rope_store` on the GPU for `x` at `positions` into
    /// `slots` of layer 1 with the given logits rows; returns q.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        cuda: &CudaBackend,
        kv: &mut CudaKv,
        bias: bool,
        x: &HostBuf,
        positions: &[u32],
        slots: &[u32],
        logits: Option<&[usize]>,
    ) -> HostBuf {
        let n = x.rows;
        let (q_dim, kv_dim) = (self.ws[0].n_rows(), self.ws[1].n_rows());
        let at = KvWrite {
            layer: 1,
            positions,
            slots,
        };
        let mut cb: [CudaBuf; 4] = [
            cuda.alloc(n, x.cols),
            cuda.alloc(n, q_dim),
            cuda.alloc(n, kv_dim),
            cuda.alloc(n, kv_dim),
        ];
        let [h, q, k, v] = &mut cb;
        if let Some(l) = logits {
            step(cuda, l, n);
        }
        let wc = self.gpu(bias);
        let xc = cuda.upload(x);
        cuda.norm_qkv_rope_store(
            &xc,
            &wc,
            1e-5,
            &self.geom,
            &self.rope,
            kv,
            &at,
            [h, q, k, v],
        );
        let q = cuda.download(&cb[1]);
        finish(cuda, "norm_qkv_rope_store");
        q
    }
}

#[test]
fn bulk_norm_qkv_rope_store_matches_the_reference() {
    let Some(cuda) = backend("bulk_norm_qkv_rope_store_matches_the_reference") else {
        return;
    };
    let mut rng = TestRng::new(92);
    for c in &QKV_CASES {
        let s = QkvSetup::new(&cuda, &mut rng, c, 12);
        let kv_dim = c.n_kv_heads * c.head_dim;
        for n in ROWS {
            let what = format!(
                "bulk qkv {:?} heads {}/{} of {} rot {} {:?} bias {} kv {:?}, {n} rows",
                c.types, c.n_heads, c.n_kv_heads, c.head_dim, c.n_rot, c.style, c.bias, c.kv
            );
            let x = rng.buf(n, c.d_model);
            let positions: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % 200).collect();
            // Distinct slots, scattered.
            let slots: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 1) % 192).collect();
            let at = KvWrite {
                layer: 1,
                positions: &positions,
                slots: &slots,
            };
            let mut kv_ref = ReferenceBackend.alloc_kv(s.layout).expect("kv");
            let mut kv_gpu = cuda.alloc_kv(s.layout).expect("kv");
            let mut hb = [
                HostBuf::zeros(n, c.d_model),
                HostBuf::zeros(n, s.ws[0].n_rows()),
                HostBuf::zeros(n, kv_dim),
                HostBuf::zeros(n, kv_dim),
            ];
            let [h, q, k, v] = &mut hb;
            ReferenceBackend.norm_qkv_rope_store(
                &x,
                &s.host(c.bias),
                1e-5,
                &s.geom,
                &s.rope,
                &mut kv_ref,
                &at,
                [h, q, k, v],
            );
            let got_q = s.run(
                &cuda,
                &mut kv_gpu,
                c.bias,
                &x,
                &positions,
                &slots,
                Some(&[]),
            );
            // A rotated value mixes two dot products (and a bias).
            let q_scale = 2.0 * dot_scale(&s.ws[0], &hb[0]) + 1.0;
            let k_scale = 2.0 * dot_scale(&s.ws[1], &hb[0]) + 1.0;
            let v_scale = dot_scale(&s.ws[2], &hb[0]) + 1.0;
            assert_close(
                &format!("{what}: q"),
                &got_q.data,
                &hb[1].data,
                &vec![q_scale; hb[1].data.len()],
                1e-5,
            );
            let tol = if c.kv == KvType::F16 { 1e-3 } else { 1e-5 };
            let table: Vec<u32> = (0..12).collect();
            for &slot in &slots {
                let (gk, gv) = cuda.read_kv(&kv_gpu, 1, slot as usize).expect("read kv");
                let p = slot as usize;
                let wk: Vec<f32> = (0..kv_dim)
                    .map(|i| kv_ref.k_row(1, &table, p).get(i))
                    .collect();
                let wv: Vec<f32> = (0..kv_dim)
                    .map(|i| kv_ref.v_row(1, &table, p).get(i))
                    .collect();
                let big = |w: &[f32]| vec![w.iter().fold(0.0f32, |m, v| m.max(v.abs())); w.len()];
                let (sk, sv) = if c.kv == KvType::F16 {
                    (big(&wk), big(&wv))
                } else {
                    (vec![k_scale; kv_dim], vec![v_scale; kv_dim])
                };
                assert_close(&format!("{what}: k slot {slot}"), &gk, &wk, &sk, tol);
                assert_close(&format!("{what}: v slot {slot}"), &gv, &wv, &sv, tol);
            }
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

/// Runs `norm_gate_up_swiglu` on the GPU with the given logits rows.
fn swiglu_on(
    cuda: &CudaBackend,
    x: &HostBuf,
    [norm, wg, wu]: [&CudaWeight; 3],
    logits: Option<&[usize]>,
) -> HostBuf {
    let (n, ff) = (x.rows, wg.n_rows());
    let (mut h, mut g, mut u) = (cuda.alloc(n, x.cols), cuda.alloc(n, ff), cuda.alloc(n, ff));
    if let Some(l) = logits {
        step(cuda, l, n);
    }
    let xc = cuda.upload(x);
    cuda.norm_gate_up_swiglu(&xc, norm, 1e-5, wg, wu, &mut h, &mut g, &mut u);
    let out = cuda.download(&g);
    finish(cuda, "norm_gate_up_swiglu");
    out
}

#[test]
fn bulk_norm_gate_up_swiglu_matches_the_reference() {
    let Some(cuda) = backend("bulk_norm_gate_up_swiglu_matches_the_reference") else {
        return;
    };
    let mut rng = TestRng::new(93);
    for (tg, tu, n_in, n_out) in [
        (DType::Q4_1, DType::Q4_1, 576, 150),
        (DType::Q4K, DType::Q6K, 512, 24),
        (DType::Q8_0, DType::Q8_0, 64, 3),
        (DType::BF16, DType::F16, 250, 17),
    ] {
        let wg = random_weight(&mut rng, tg, n_in, n_out);
        let wu = random_weight(&mut rng, tu, n_in, n_out);
        let norm = vector(&mut rng, n_in, -1.5, 1.5);
        let (wgc, wuc, nc) = (place(&cuda, &wg), place(&cuda, &wu), place(&cuda, &norm));
        for n in ROWS {
            let what = format!("bulk swiglu {tg}/{tu} {n_in}→{n_out}, {n} rows");
            let x = rng.buf(n, n_in);
            let mut h = HostBuf::zeros(n, n_in);
            let mut want = HostBuf::zeros(n, n_out);
            let mut up = HostBuf::zeros(n, n_out);
            ReferenceBackend
                .norm_gate_up_swiglu(&x, &norm, 1e-5, &wg, &wu, &mut h, &mut want, &mut up);
            let got = swiglu_on(&cuda, &x, [&nc, &wgc, &wuc], Some(&[]));
            // silu(g) * u moves by about |u| dg + |g| du.
            let (sg, su) = (dot_scale(&wg, &h), dot_scale(&wu, &h));
            let scale = vec![2.0 * sg * su + sg + su; want.data.len()];
            assert_close(&what, &got.data, &want.data, &scale, 1e-5);
        }
    }
}

/// `x`'s rows `picks` placed at `at` among `n` random rows.
fn embed_rows(rng: &mut TestRng, x: &HostBuf, picks: &[usize], at: &[usize], n: usize) -> HostBuf {
    let mut out = rng.buf(n, x.cols);
    for (&p, &a) in picks.iter().zip(at) {
        out.row_mut(a).copy_from_slice(x.row(p));
    }
    out
}

/// A bulk row's outputs (matmul, matmul_add, q and its K/V cache rows,
/// SwiGLU) are bit-identical alone, in a batch of 130, and at another
/// place among other rows in a batch of 41; and in a step that mixes both
/// kinds, each logits row gets exactly the all-matrix-vector result and
/// each bulk row exactly the all-bulk result.
#[test]
fn bulk_rows_do_not_depend_on_the_batch_and_logits_rows_stay_matvec() {
    let Some(mut cuda) =
        backend("bulk_rows_do_not_depend_on_the_batch_and_logits_rows_stay_matvec")
    else {
        return;
    };
    let mut rng = TestRng::new(94);
    let n = 130;
    let picks = [0usize, 63, 64, 129];
    let places = [40usize, 1, 17, 0];

    // Plain products, every benchmarked type, both bulk products.
    for (codes, (dtype, n_in, n_out)) in CODE_CASES {
        cuda.set_gemm_codes(codes);
        let wc = place(&cuda, &random_weight(&mut rng, dtype, n_in, n_out));
        let x = rng.buf(n, n_in);
        let acc0 = rng.buf(n, n_out);
        let run = |x: &HostBuf, acc: &HostBuf, logits: Option<&[usize]>| -> [HostBuf; 2] {
            let m = x.rows;
            let xc = cuda.upload(x);
            let mut o = cuda.alloc(m, n_out);
            if let Some(l) = logits {
                step(&cuda, l, m);
            }
            cuda.matmul(&xc, &wc, &mut o);
            let mut a = cuda.upload(acc);
            let mut t = cuda.alloc(m, n_out);
            cuda.matmul_add(&xc, &wc, &mut t, &mut a);
            let out = [cuda.download(&o), cuda.download(&a)];
            finish(&cuda, "invariance");
            out
        };
        let all_bulk = run(&x, &acc0, Some(&[]));
        for (&p, name) in picks.iter().zip(["first", "mid", "mid", "last"]) {
            let alone = run(&x.gather(&[p]), &acc0.gather(&[p]), Some(&[]));
            for (i, op) in ["matmul", "matmul_add"].iter().enumerate() {
                assert_eq!(
                    alone[i].data,
                    all_bulk[i].row(p),
                    "{dtype} {n_in}→{n_out} {op} (codes {codes}): {name} row {p} alone differs from in 130"
                );
            }
        }
        let other = embed_rows(&mut rng, &x, &picks, &places, 41);
        let other_acc = embed_rows(&mut rng, &acc0, &picks, &places, 41);
        let moved = run(&other, &other_acc, Some(&[]));
        for (&p, &a) in picks.iter().zip(&places) {
            for (i, op) in ["matmul", "matmul_add"].iter().enumerate() {
                assert_eq!(
                    moved[i].row(a),
                    all_bulk[i].row(p),
                    "{dtype} {n_in}→{n_out} {op}: row {p} at place {a} of 41 differs"
                );
            }
        }
        // Mixed: logits rows at the ends and in the middle.
        let logits = [0usize, 5, 6, 64, 129];
        let all_mv = run(&x, &acc0, None);
        let mixed = run(&x, &acc0, Some(&logits));
        for r in 0..n {
            let want = if logits.contains(&r) {
                &all_mv
            } else {
                &all_bulk
            };
            for (i, op) in ["matmul", "matmul_add"].iter().enumerate() {
                assert_eq!(
                    mixed[i].row(r),
                    want[i].row(r),
                    "{dtype} {n_in}→{n_out} {op}: row {r} of a mixed step (logits {})",
                    logits.contains(&r)
                );
            }
        }
        // The two paths really differ somewhere (else this test proves
        // nothing about which one a row took).
        if dtype != DType::F16 || n_in > 16 {
            assert_ne!(
                all_mv[0].data, all_bulk[0].data,
                "{dtype}: the bulk path gave the matrix-vector result bit for bit"
            );
        }
    }

    // Q/K/V with RoPE and the cache write, and SwiGLU.
    let c = &QKV_CASES[1];
    let s = QkvSetup::new(&cuda, &mut rng, c, 24);
    let kv_dim = c.n_kv_heads * c.head_dim;
    let x = rng.buf(n, c.d_model);
    let positions: Vec<u32> = (0..n as u32).map(|i| 300 - i).collect();
    let slots: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % 384).collect();
    let mut kv = cuda.alloc_kv(s.layout).expect("kv");
    let read = |kv: &CudaKv, slot: u32| cuda.read_kv(kv, 1, slot as usize).expect("read kv");
    let q_all = s.run(&cuda, &mut kv, true, &x, &positions, &slots, Some(&[]));
    let kv_all: Vec<_> = picks.iter().map(|&p| read(&kv, slots[p])).collect();
    let mut kv2 = cuda.alloc_kv(s.layout).expect("kv");
    let other = embed_rows(&mut rng, &x, &picks, &places, 41);
    let mut pos2: Vec<u32> = (0..41).map(|i| 7 * i).collect();
    let mut slots2: Vec<u32> = (0..41).map(|i| 300 + i).collect();
    for (&p, &a) in picks.iter().zip(&places) {
        pos2[a] = positions[p];
        slots2[a] = 100 + a as u32;
    }
    slots2.iter_mut().for_each(|sl| *sl %= 384);
    let q_moved = s.run(&cuda, &mut kv2, true, &other, &pos2, &slots2, Some(&[]));
    for (i, (&p, &a)) in picks.iter().zip(&places).enumerate() {
        assert_eq!(q_moved.row(a), q_all.row(p), "q: row {p} at place {a}");
        assert_eq!(
            read(&kv2, slots2[a]),
            kv_all[i],
            "K/V: row {p} at place {a}"
        );
        let mut kv1 = cuda.alloc_kv(s.layout).expect("kv");
        let q_one = s.run(
            &cuda,
            &mut kv1,
            true,
            &x.gather(&[p]),
            &positions[p..p + 1],
            &slots[p..p + 1],
            Some(&[]),
        );
        assert_eq!(q_one.data, q_all.row(p), "q: row {p} alone");
        assert_eq!(read(&kv1, slots[p]), kv_all[i], "K/V: row {p} alone");
    }
    let logits = [3usize, 4, 129];
    let mut kv_mv = cuda.alloc_kv(s.layout).expect("kv");
    let q_mv = s.run(&cuda, &mut kv_mv, true, &x, &positions, &slots, None);
    let mut kv_mixed = cuda.alloc_kv(s.layout).expect("kv");
    let q_mixed = s.run(
        &cuda,
        &mut kv_mixed,
        true,
        &x,
        &positions,
        &slots,
        Some(&logits),
    );
    for (r, &slot) in slots.iter().enumerate() {
        let (want_q, want_kv) = if logits.contains(&r) {
            (q_mv.row(r), read(&kv_mv, slot))
        } else {
            (q_all.row(r), read(&kv, slot))
        };
        assert_eq!(q_mixed.row(r), want_q, "q: row {r} of a mixed step");
        assert_eq!(
            read(&kv_mixed, slot),
            want_kv,
            "K/V: row {r} of a mixed step"
        );
    }
    assert_ne!(q_mv.data, q_all.data, "q: the two paths agree bit for bit");
    let _ = kv_dim;

    let (d, ff) = (576, 150);
    let wg = place(&cuda, &random_weight(&mut rng, DType::Q4_1, d, ff));
    let wu = place(&cuda, &random_weight(&mut rng, DType::Q4_1, d, ff));
    let norm = place(&cuda, &vector(&mut rng, d, -1.5, 1.5));
    let ws = [&norm, &wg, &wu];
    let x = rng.buf(n, d);
    let all = swiglu_on(&cuda, &x, ws, Some(&[]));
    for &p in &picks {
        let one = swiglu_on(&cuda, &x.gather(&[p]), ws, Some(&[]));
        assert_eq!(one.data, all.row(p), "swiglu: row {p} alone");
    }
    let moved = swiglu_on(
        &cuda,
        &embed_rows(&mut rng, &x, &picks, &places, 41),
        ws,
        Some(&[]),
    );
    for (&p, &a) in picks.iter().zip(&places) {
        assert_eq!(moved.row(a), all.row(p), "swiglu: row {p} at place {a}");
    }
    let mv = swiglu_on(&cuda, &x, ws, None);
    let mixed = swiglu_on(&cuda, &x, ws, Some(&logits));
    for r in 0..n {
        let want = if logits.contains(&r) {
            mv.row(r)
        } else {
            all.row(r)
        };
        assert_eq!(mixed.row(r), want, "swiglu: row {r} of a mixed step");
    }
}

/// Wide steps take 128-wide output tiles, narrow ones 64-wide (bulk.rs),
/// and a row alone has so few output tiles that its product is split over
/// k (each k tile's sum kept, then added in order): the tile and the split
/// decide only which block computes what, so a row gives the same bits
/// either way, and both match the reference.
#[test]
fn bulk_rows_are_the_same_with_wide_and_narrow_tiles() {
    let Some(mut cuda) = backend("bulk_rows_are_the_same_with_wide_and_narrow_tiles") else {
        return;
    };
    let mut rng = TestRng::new(96);
    // 8 x 33 blocks of 64 x 128: wide on a GPU of up to 264 SMs.
    let (n, n_in, n_out) = (512, 256, 4224);
    for (codes, dtype) in [
        (false, DType::Q4K),
        (false, DType::BF16),
        (true, DType::Q4K),
        (true, DType::Q6K),
        (true, DType::BF16),
    ] {
        cuda.set_gemm_codes(codes);
        let w = random_weight(&mut rng, dtype, n_in, n_out);
        let wc = place(&cuda, &w);
        let x = rng.buf(n, n_in);
        let run = |x: &HostBuf| {
            let xc = cuda.upload(x);
            let mut o = cuda.alloc(x.rows, n_out);
            step(&cuda, &[], x.rows);
            cuda.matmul(&xc, &wc, &mut o);
            let out = cuda.download(&o);
            finish(&cuda, "wide tiles");
            out
        };
        let all = run(&x);
        let mut want = HostBuf::zeros(n, n_out);
        ReferenceBackend.matmul(&x, &w, &mut want);
        assert_close(
            &format!("{dtype} wide tiles, codes {codes}"),
            &all.data,
            &want.data,
            &dot_scales(&w, &x),
            1e-5,
        );
        for r in [0, 200, 511] {
            let one = run(&x.gather(&[r]));
            assert_eq!(
                one.data,
                all.row(r),
                "{dtype}: row {r} alone (narrow tiles, split over k), codes {codes}"
            );
        }
    }
}

/// Outside a step (or in a step of another row count, or with bulk off)
/// every row takes the matrix-vector path.
#[test]
fn without_a_matching_step_every_row_takes_the_matvec_path() {
    let Some(mut cuda) = backend("without_a_matching_step_every_row_takes_the_matvec_path") else {
        return;
    };
    let mut rng = TestRng::new(95);
    let w = random_weight(&mut rng, DType::Q4K, 256, 40);
    let wc = place(&cuda, &w);
    let x = rng.buf(9, 256);
    let run = |cuda: &CudaBackend, step_rows: Option<usize>| {
        let xc = cuda.upload(&x);
        let mut o = cuda.alloc(9, 40);
        if let Some(n) = step_rows {
            cuda.begin_step(&[], n);
        }
        cuda.matmul(&xc, &wc, &mut o);
        let out = cuda.download(&o);
        finish(cuda, "matvec");
        out
    };
    let plain = run(&cuda, None);
    assert_eq!(run(&cuda, Some(10)).data, plain.data);
    assert_ne!(run(&cuda, Some(9)).data, plain.data);
    cuda.set_bulk(false);
    assert_eq!(run(&cuda, Some(9)).data, plain.data);
}
