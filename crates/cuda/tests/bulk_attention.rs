//! Bulk rows' attention on the GPU (kernels/attention_tile.cu): against the
//! reference, and a bulk row's bits do not depend on the rows beside it.

mod common;

use common::{assert_close, backend, finish, store_random_kv};
use smelt_backend::testing::TestRng;
use smelt_backend::{AttnGeometry, AttnRow, Backend, HostBuf, KvLayout, KvType, ReferenceBackend};
use smelt_cuda::CudaBackend;

/// Starts a step of `n` rows in which only `logits` want logits.
fn step(cuda: &CudaBackend, logits: &[usize], n: usize) {
    cuda.begin_step(logits, n);
}

/// Bulk rows' attention (tensor-core tiles for an f16 cache and heads of 64
/// or 128) against the reference, a logits row among them on the
/// matrix-vector kernel; and a bulk row gives the same bits alone, in a
/// short run, or in tiles of 64.
#[test]
fn bulk_attention_matches_the_reference_and_the_batch() {
    let Some(cuda) = backend("bulk_attention_matches_the_reference_and_the_batch") else {
        return;
    };
    let mut rng = TestRng::new(97);
    for (n_heads, n_kv_heads, head_dim, window) in
        [(9, 3, 64, None), (4, 2, 128, None), (4, 1, 64, Some(20u32))]
    {
        let layout = KvLayout {
            n_layers: 2,
            n_blocks: 16,
            block_size: 16,
            n_kv_heads,
            head_dim,
            dtype: KvType::F16,
        };
        let width = n_kv_heads * head_dim;
        let mut kv_ref = ReferenceBackend.alloc_kv(layout).expect("kv");
        let mut kv_gpu = cuda.alloc_kv(layout).expect("kv");
        let tables: [&[u32]; 2] = [&[5, 0, 9, 3, 12], &[2, 11]];
        let lens = [70usize, 30];
        let layer = 1;
        for (table, &len) in tables.iter().zip(&lens) {
            store_random_kv(
                &mut rng,
                &cuda,
                &mut kv_ref,
                &mut kv_gpu,
                layer,
                table,
                0..len,
                width,
            );
        }
        let geom = AttnGeometry {
            n_heads,
            n_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
        };
        // Sequence A's 70 positions (two tiles), then B's 30, the last of
        // which wants logits.
        let picks: Vec<(usize, u32)> = (0..70)
            .map(|p| (0, p))
            .chain((0..30).map(|p| (1, p)))
            .collect();
        let rows_of = |sel: &[(usize, u32)]| -> Vec<AttnRow<'_>> {
            sel.iter()
                .map(|&(s, pos)| AttnRow {
                    pos,
                    block_table: tables[s],
                })
                .collect()
        };
        let q = rng.buf(picks.len(), n_heads * head_dim);
        let run = |sel: &[usize], logits: &[usize]| -> HostBuf {
            let chosen: Vec<(usize, u32)> = sel.iter().map(|&i| picks[i]).collect();
            let rows = rows_of(&chosen);
            let qs = q.gather(sel);
            let mut got = cuda.alloc(rows.len(), n_heads * head_dim);
            step(&cuda, logits, rows.len());
            cuda.attention(&cuda.upload(&qs), &kv_gpu, layer, &rows, &geom, &mut got);
            let got = cuda.download(&got);
            finish(&cuda, "bulk attention");
            got
        };
        let all: Vec<usize> = (0..picks.len()).collect();
        let got = run(&all, &[picks.len() - 1]);
        let mut want = HostBuf::zeros(picks.len(), n_heads * head_dim);
        ReferenceBackend.attention(&q, &kv_ref, layer, &rows_of(&picks), &geom, &mut want);
        let what =
            format!("bulk attention {n_heads}/{n_kv_heads} heads of {head_dim}, window {window:?}");
        let ones = vec![1.0f32; want.data.len()];
        assert_close(&what, &got.data, &want.data, &ones, 5e-5);
        for sel in [vec![66usize], vec![3, 4, 5, 69, 71], vec![40, 41, 42, 43]] {
            let part = run(&sel, &[]);
            for (i, &r) in sel.iter().enumerate() {
                assert_eq!(part.row(i), got.row(r), "{what}: row {r} among {sel:?}");
            }
        }
    }
}
