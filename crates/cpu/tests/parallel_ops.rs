//! The per-row and element-wise ops run on the thread pool when a batch
//! is large enough, and the fused ops (`matmul_add`, `norm_gate_up_swiglu`,
//! `norm_qkv_rope_store`) do their element-wise work inside the products'
//! region: every value must still be the serial definition's, bit for bit,
//! for any batch size, on one thread or two, with f32 or Q8 activations.

use smelt_backend::testing::{TestRng, random_weight};
use smelt_backend::{
    AttnGeometry, Backend, HostBuf, KvLayout, KvType, KvWrite, QkvWeights, RopeParams, RopeStyle,
    inv_rms, rope_row, silu,
};
use smelt_cpu::{Activations, CpuBackend, CpuWeight};
use smelt_tensor::DType;

fn backend(threads: usize, a: Activations) -> CpuBackend {
    match CpuBackend::new(threads) {
        Ok(b) => b.with_activations(a),
        Err(e) => panic!("thread pool: {e}"),
    }
}

fn bits(b: &HostBuf) -> Vec<u32> {
    b.data.iter().map(|v| v.to_bits()).collect()
}

fn same(what: &str, got: &HostBuf, want: &HostBuf) {
    assert_eq!(
        (got.rows, got.cols),
        (want.rows, want.cols),
        "{what}: shape"
    );
    assert!(bits(got) == bits(want), "{what}: values differ");
}

const ROWS: [usize; 5] = [1, 2, 7, 16, 33];

#[test]
fn per_row_ops_equal_their_serial_definitions() {
    let mut rng = TestRng::new(11);
    for threads in [1, 2] {
        let be = backend(threads, Activations::F32);
        for &rows in &ROWS {
            for cols in [576usize, 1536, 97 * 9] {
                let at = format!("{rows}x{cols}, {threads} threads");
                let x = rng.buf(rows, cols);
                let y = rng.buf(rows, cols);
                let norm = random_weight(&mut rng, DType::F32, cols, 1);
                let norm_w = be.place("n", &norm).expect("place");
                let nw = smelt_backend::dequantize_all(&norm);

                let mut got = HostBuf::zeros(rows, cols);
                be.rms_norm(&x, &norm_w, 1e-5, &mut got);
                let mut want = x.clone();
                for row in want.data.chunks_exact_mut(cols) {
                    let s = inv_rms(row, 1e-5);
                    row.iter_mut().zip(&nw).for_each(|(v, w)| *v = *v * s * w);
                }
                same(&format!("rms_norm {at}"), &got, &want);

                let (mut got, mut want) = (x.clone(), x.clone());
                be.swiglu(&mut got, &y);
                want.data
                    .iter_mut()
                    .zip(&y.data)
                    .for_each(|(g, u)| *g = silu(*g) * u);
                same(&format!("swiglu {at}"), &got, &want);

                let (mut got, mut want) = (x.clone(), x.clone());
                be.add(&mut got, &y);
                want.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
                same(&format!("add {at}"), &got, &want);

                let (mut got, mut want) = (x.clone(), x.clone());
                be.add_bias(&mut got, &norm_w);
                for row in want.data.chunks_exact_mut(cols) {
                    row.iter_mut().zip(&nw).for_each(|(v, b)| *v += b);
                }
                same(&format!("add_bias {at}"), &got, &want);

                let (mut got, mut want) = (x.clone(), x.clone());
                be.softcap(&mut got, 7.5);
                want.data
                    .iter_mut()
                    .for_each(|v| *v = smelt_backend::softcap(*v, 7.5));
                same(&format!("softcap {at}"), &got, &want);

                let (mut got, mut want) = (x.clone(), x.clone());
                be.gelu_tanh_gate(&mut got, &y);
                want.data
                    .iter_mut()
                    .zip(&y.data)
                    .for_each(|(g, u)| *g = smelt_backend::gelu_tanh(*g) * u);
                same(&format!("gelu_tanh_gate {at}"), &got, &want);

                // Per-head norms and RoPE over heads of 64 (9 of them in 576).
                let head_dim = 64;
                let heads = cols / head_dim;
                let head_norm = random_weight(&mut rng, DType::F32, head_dim, 1);
                let hn = smelt_backend::dequantize_all(&head_norm);
                let (mut got, mut want) = (x.clone(), x.clone());
                be.rms_norm_heads(
                    &mut got,
                    heads,
                    &be.place("h", &head_norm).expect("place"),
                    1e-6,
                );
                for row in want.data.chunks_exact_mut(cols) {
                    for head in row[..heads * head_dim].chunks_exact_mut(head_dim) {
                        let s = inv_rms(head, 1e-6);
                        head.iter_mut().zip(&hn).for_each(|(v, w)| *v = *v * s * w);
                    }
                }
                same(&format!("rms_norm_heads {at}"), &got, &want);

                for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
                    let p = RopeParams::new(style, head_dim, 48, 10_000.0, 1.0, None);
                    let positions: Vec<u32> = (0..rows as u32).map(|r| r * 13 % 300).collect();
                    let (mut got, mut want) = (x.clone(), x.clone());
                    // Twice with the same positions: the second hits the table cache.
                    for _ in 0..2 {
                        got = x.clone();
                        be.rope(&mut got, heads, &positions, &p);
                    }
                    for (row, &pos) in want.data.chunks_exact_mut(cols).zip(&positions) {
                        rope_row(row, heads, pos, &p);
                    }
                    same(&format!("rope {style:?} {at}"), &got, &want);
                }
            }
        }
    }
}

struct Layer {
    norm: CpuWeight,
    q: CpuWeight,
    k: CpuWeight,
    v: CpuWeight,
    gate: CpuWeight,
    up: CpuWeight,
    down: CpuWeight,
    odd: CpuWeight,
    k_bias: CpuWeight,
}

fn layer(be: &CpuBackend, rng: &mut TestRng, d: usize, ff: usize) -> Layer {
    let mut w = |t: DType, n_in: usize, n_out: usize| {
        be.place("blk.0.w", &random_weight(rng, t, n_in, n_out))
            .expect("place")
    };
    Layer {
        norm: w(DType::F32, d, 1),
        q: w(DType::Q4_1, d, d),
        k: w(DType::Q4_1, d, d / 3),
        v: w(DType::Q8_0, d, d / 3),
        gate: w(DType::Q4_1, d, ff),
        up: w(DType::Q4_1, d, ff),
        down: w(DType::Q6K, ff, d),
        odd: w(DType::Q4_0, d, 77),
        k_bias: w(DType::F32, d / 3, 1),
    }
}

#[test]
fn fused_ops_equal_their_parts_bit_for_bit() {
    let (d, ff) = (576, 1536);
    for activations in [Activations::F32, Activations::Q8] {
        for threads in [1, 2] {
            let be = backend(threads, activations);
            let mut rng = TestRng::new(21);
            let l = layer(&be, &mut rng, d, ff);
            for &rows in &ROWS {
                let at = format!("{rows} rows, {threads} threads, {activations:?}");
                let x = rng.buf(rows, d);

                // matmul_add, of full and odd widths.
                for (w, n_out) in [(&l.q, d), (&l.odd, 77)] {
                    let x_in = rng.buf(rows, d);
                    let acc0 = rng.buf(rows, n_out);
                    let (mut t, mut acc) = (HostBuf::zeros(rows, n_out), acc0.clone());
                    be.matmul_add(&x_in, w, &mut t, &mut acc);
                    let (mut t2, mut acc2) = (HostBuf::zeros(rows, n_out), acc0.clone());
                    be.matmul(&x_in, w, &mut t2);
                    acc2.data
                        .iter_mut()
                        .zip(&t2.data)
                        .for_each(|(a, b)| *a += b);
                    same(&format!("matmul_add {n_out} {at}"), &acc, &acc2);
                }
                let x_ff = rng.buf(rows, ff);
                let acc0 = rng.buf(rows, d);
                let (mut t, mut acc) = (HostBuf::zeros(rows, d), acc0.clone());
                be.matmul_add(&x_ff, &l.down, &mut t, &mut acc);
                let mut t2 = HostBuf::zeros(rows, d);
                be.matmul(&x_ff, &l.down, &mut t2);
                let mut acc2 = acc0.clone();
                acc2.data
                    .iter_mut()
                    .zip(&t2.data)
                    .for_each(|(a, b)| *a += b);
                same(&format!("matmul_add down {at}"), &acc, &acc2);

                // norm_gate_up_swiglu.
                let (mut h, mut g, mut u) = (
                    HostBuf::zeros(rows, d),
                    HostBuf::zeros(rows, ff),
                    HostBuf::zeros(rows, ff),
                );
                be.norm_gate_up_swiglu(&x, &l.norm, 1e-5, &l.gate, &l.up, &mut h, &mut g, &mut u);
                let (mut h2, mut g2, mut u2) = (
                    HostBuf::zeros(rows, d),
                    HostBuf::zeros(rows, ff),
                    HostBuf::zeros(rows, ff),
                );
                be.rms_norm(&x, &l.norm, 1e-5, &mut h2);
                be.matmuls(&h2, &mut [(&l.gate, &mut g2), (&l.up, &mut u2)]);
                g2.data
                    .iter_mut()
                    .zip(&u2.data)
                    .for_each(|(g, u)| *g = silu(*g) * u);
                same(&format!("norm_gate_up_swiglu {at}"), &g, &g2);

                // norm_qkv_rope_store.
                let (n_heads, n_kv, head_dim) = (9, 3, 64);
                let geom = AttnGeometry {
                    n_heads,
                    n_kv_heads: n_kv,
                    head_dim,
                    scale: 0.125,
                    window: None,
                };
                let rope =
                    RopeParams::new(RopeStyle::Neox, head_dim, head_dim, 10_000.0, 1.0, None);
                let layout = KvLayout {
                    n_layers: 1,
                    n_blocks: rows.div_ceil(4) + 1,
                    block_size: 4,
                    n_kv_heads: n_kv,
                    head_dim,
                    dtype: KvType::F32,
                };
                let positions: Vec<u32> = (0..rows as u32).map(|r| r * 5 + 1).collect();
                let slots: Vec<u32> = (0..rows as u32).collect();
                let kw = KvWrite {
                    layer: 0,
                    positions: &positions,
                    slots: &slots,
                };
                let qkv = QkvWeights {
                    norm: &l.norm,
                    q: &l.q,
                    k: &l.k,
                    v: &l.v,
                    q_bias: None,
                    k_bias: Some(&l.k_bias),
                    v_bias: None,
                };
                let bufs = || {
                    [
                        HostBuf::zeros(rows, d),
                        HostBuf::zeros(rows, d),
                        HostBuf::zeros(rows, d / 3),
                        HostBuf::zeros(rows, d / 3),
                    ]
                };
                let mut kv = be.alloc_kv(layout).expect("kv");
                let [mut h, mut q, mut k, mut v] = bufs();
                be.norm_qkv_rope_store(
                    &x,
                    &qkv,
                    1e-5,
                    &geom,
                    &rope,
                    &mut kv,
                    &kw,
                    [&mut h, &mut q, &mut k, &mut v],
                );
                let mut kv2 = be.alloc_kv(layout).expect("kv");
                let [mut h2, mut q2, mut k2, mut v2] = bufs();
                be.rms_norm(&x, &l.norm, 1e-5, &mut h2);
                be.matmuls(
                    &h2,
                    &mut [(&l.q, &mut q2), (&l.k, &mut k2), (&l.v, &mut v2)],
                );
                let kb = smelt_backend::dequantize_all(&l.k_bias.tensor);
                for row in k2.data.chunks_exact_mut(d / 3) {
                    row.iter_mut().zip(&kb).for_each(|(v, b)| *v += b);
                }
                for (row, &pos) in q2.data.chunks_exact_mut(d).zip(&positions) {
                    rope_row(row, n_heads, pos, &rope);
                }
                for (row, &pos) in k2.data.chunks_exact_mut(d / 3).zip(&positions) {
                    rope_row(row, n_kv, pos, &rope);
                }
                be.kv_store(&mut kv2, 0, &k2, &v2, &slots);
                same(&format!("qkv q {at}"), &q, &q2);
                same(&format!("qkv k {at}"), &k, &k2);
                for (s, _) in slots.iter().enumerate() {
                    let table: Vec<u32> = (0..layout.n_blocks as u32).collect();
                    let (a, b) = (kv.k_row(0, &table, s), kv2.k_row(0, &table, s));
                    let (va, vb) = (kv.v_row(0, &table, s), kv2.v_row(0, &table, s));
                    for i in 0..n_kv * head_dim {
                        assert_eq!(a.get(i).to_bits(), b.get(i).to_bits(), "kv k {at}");
                        assert_eq!(va.get(i).to_bits(), vb.get(i).to_bits(), "kv v {at}");
                    }
                }
            }
        }
    }
}

#[test]
fn argmax_and_top_k_rows_equal_the_per_row_definitions() {
    let mut rng = TestRng::new(31);
    for threads in [1, 2] {
        let be = backend(threads, Activations::F32);
        for &rows in &ROWS {
            // Few distinct values: many ties; a NaN in one row.
            let mut x = rng.buf(rows, 5003);
            x.data.iter_mut().for_each(|v| *v = (*v * 4.0).round());
            x.data[rows * 5003 / 2] = f32::NAN;
            let want: Vec<u32> = (0..rows).map(|r| smelt_backend::argmax(x.row(r))).collect();
            assert_eq!(
                be.argmax_rows(&x),
                want,
                "argmax {rows} rows, {threads} threads"
            );
            for k in [1, 40] {
                let want: Vec<_> = (0..rows)
                    .map(|r| smelt_backend::top_k_sorted(x.row(r), k))
                    .collect();
                let got = be.top_k_rows(&x, k);
                let b = |v: &Vec<Vec<(u32, f32)>>| -> Vec<Vec<(u32, u32)>> {
                    v.iter()
                        .map(|r| r.iter().map(|&(i, f)| (i, f.to_bits())).collect())
                        .collect()
                };
                assert_eq!(
                    b(&got),
                    b(&want),
                    "top {k} of {rows} rows, {threads} threads"
                );
            }
        }
    }
}

#[test]
fn attention_of_a_batch_is_each_row_alone_bit_for_bit() {
    // SmolLM2's geometry (9 query heads over 3 KV heads of 64, f16 cache):
    // from 8 rows on two threads the heads of a KV head's group run as one
    // item (one pass over the cache for the group); a row alone runs head
    // by head. Also a group of 2 and one of 4 (head by head either way).
    let mut rng = TestRng::new(21);
    for (n_heads, n_kv) in [(9usize, 3usize), (6, 3), (8, 2)] {
        let d = 64;
        let geom = AttnGeometry {
            n_heads,
            n_kv_heads: n_kv,
            head_dim: d,
            scale: 0.125,
            window: None,
        };
        for dtype in [KvType::F16, KvType::F32] {
            let layout = KvLayout {
                n_layers: 1,
                n_blocks: 40,
                block_size: 16,
                n_kv_heads: n_kv,
                head_dim: d,
                dtype,
            };
            for threads in [1, 2] {
                let be = backend(threads, Activations::F32);
                let mut kv = be.alloc_kv(layout).expect("kv");
                let n = 13;
                let tables: Vec<Vec<u32>> = (0..n as u32)
                    .map(|s| vec![3 * s % 40, (3 * s + 1) % 40, (3 * s + 2) % 40])
                    .collect();
                let lens: Vec<usize> = (0..n).map(|s| 1 + (s * 7) % 48).collect();
                for (s, table) in tables.iter().enumerate() {
                    let k = rng.buf(lens[s], n_kv * d);
                    let v = rng.buf(lens[s], n_kv * d);
                    let slots: Vec<u32> = (0..lens[s])
                        .map(|p| table[p / 16] * 16 + (p % 16) as u32)
                        .collect();
                    be.kv_store(&mut kv, 0, &k, &v, &slots);
                }
                let rows: Vec<smelt_backend::AttnRow<'_>> = (0..n)
                    .map(|s| smelt_backend::AttnRow {
                        pos: lens[s] as u32 - 1,
                        block_table: &tables[s],
                    })
                    .collect();
                let q = rng.buf(n, n_heads * d);
                let mut all = HostBuf::zeros(n, n_heads * d);
                be.attention(&q, &kv, 0, &rows, &geom, &mut all);
                for s in 0..n {
                    let qs = HostBuf {
                        rows: 1,
                        cols: n_heads * d,
                        data: q.row(s).to_vec(),
                    };
                    let mut one = HostBuf::zeros(1, n_heads * d);
                    be.attention(&qs, &kv, 0, &rows[s..s + 1], &geom, &mut one);
                    let want = HostBuf {
                        rows: 1,
                        cols: n_heads * d,
                        data: all.row(s).to_vec(),
                    };
                    same(
                        &format!("attention {n_heads}/{n_kv} {dtype:?} {threads} threads row {s}"),
                        &one,
                        &want,
                    );
                }
            }
        }
    }
}
