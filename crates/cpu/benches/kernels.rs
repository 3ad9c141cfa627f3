//! Single-thread microbenchmarks of the matrix kernels on SmolLM2-135M and
//! Qwen2.5-0.5B shapes.
//!
//! * `matvec` (one activation row, decode): throughput in bytes of weights
//!   streamed. Each iteration uses the next of several copies of the weight
//!   (64 MiB in all), so the weights come from memory, as in a real decode
//!   step, not from a cache.
//! * `gemm` (many activation rows, prefill / batched decode): throughput in
//!   items, one item = one floating-point operation (2 per multiply-add).
//!
//! `SMELT_BENCH_STREAM_MB=0` benchmarks one copy (weights from cache).
//!
//! Run: `cargo bench -p smelt-cpu --bench kernels` (add `-- matvec` or
//! `-- gemm` to filter). Every instruction set this machine has is measured
//! (const 2: AVX-512, 1: AVX2, 0: portable). `matvec_two_threads` runs the
//! detected one (`SMELT_CPU_ISA=avx2` caps it).

use std::cell::Cell;

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use smelt_backend::testing::{TestRng, random_weight};
use smelt_cpu::kernels::{Isa, Scratch, matmul_to_ptr, matmul_with_isa, with_thread_scratch};
use smelt_cpu::pool::{Pool, split};
use smelt_tensor::DType;

fn main() {
    divan::main();
}

/// Total weight bytes cycled through by the matvec benchmarks.
const STREAM_BYTES: usize = 64 << 20;

/// A weight matrix (as stored bytes) and its shape.
struct Weights {
    dtype: DType,
    n_in: usize,
    n_out: usize,
    copies: Vec<Vec<u8>>,
}

impl Weights {
    fn new(dtype: DType, n_in: usize, n_out: usize, total_bytes: usize) -> Weights {
        let mut rng = TestRng::new(42);
        let one = random_weight(&mut rng, dtype, n_in, n_out).bytes().to_vec();
        let n = total_bytes.div_ceil(one.len()).max(1);
        Weights {
            dtype,
            n_in,
            n_out,
            copies: vec![one; n],
        }
    }

    fn bytes(&self) -> usize {
        self.copies[0].len()
    }
}

/// The instruction set of a benchmark's `ISA` constant: 0 portable, 1 AVX2,
/// 2 AVX-512 (`None` where this machine lacks it: the benchmark is skipped).
fn isa(n: u8) -> Option<Isa> {
    let isa = match n {
        0 => Isa::Portable,
        1 => Isa::Avx2,
        _ => Isa::Avx512,
    };
    isa.available().then_some(isa)
}

/// (type, n_in, n_out): SmolLM2 projections (576 ↔ 1536) for the legacy and
/// float types, Qwen2.5-0.5B-like K-quant shapes (rows of whole 256-blocks).
const MATVEC: &[(DType, usize, usize)] = &[
    (DType::Q4_0, 576, 1536),
    (DType::Q4_1, 576, 1536),
    (DType::Q4_1, 1536, 576),
    (DType::Q5_0, 896, 4864),
    (DType::Q8_0, 576, 1536),
    (DType::Q8_0, 576, 49152),
    (DType::Q4K, 1536, 576),
    (DType::Q4K, 4864, 896),
    (DType::Q5K, 4864, 896),
    (DType::Q6K, 4864, 896),
    (DType::F16, 576, 1536),
    (DType::BF16, 576, 1536),
    (DType::F32, 576, 1536),
    (DType::Q5_1, 576, 1536),
    (DType::Q3K, 1536, 576),
];

fn shape_name(&(dtype, n_in, n_out): &(DType, usize, usize)) -> String {
    format!("{dtype} {n_in}->{n_out}")
}

#[divan::bench(args = MATVEC.iter().map(shape_name), consts = [2, 1, 0])]
fn matvec<const ISA: u8>(bencher: Bencher, shape: &str) {
    let Some(isa) = isa(ISA) else {
        return;
    };
    let Some(&(dtype, n_in, n_out)) = MATVEC.iter().find(|s| shape_name(s) == shape) else {
        panic!("unknown shape {shape}");
    };
    let stream = std::env::var("SMELT_BENCH_STREAM_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(STREAM_BYTES, |mb| mb << 20);
    let w = Weights::new(dtype, n_in, n_out, stream);
    let x = TestRng::new(1).buf(1, n_in).data;
    let mut out = vec![0.0f32; n_out];
    let mut scratch = Scratch::new();
    let next = Cell::new(0usize);
    bencher.counter(BytesCount::new(w.bytes())).bench_local(|| {
        let i = next.get();
        next.set((i + 1) % w.copies.len());
        matmul_with_isa(
            isa,
            w.dtype,
            &w.copies[i],
            w.n_in,
            0..w.n_out,
            &x,
            1,
            &mut out,
            w.n_out,
            &mut scratch,
        );
    });
}

/// (type, n_in, n_out, activation rows).
const GEMM: &[(DType, usize, usize, usize)] = &[
    (DType::Q4_1, 576, 1536, 512),
    (DType::Q4_1, 1536, 576, 512),
    (DType::Q8_0, 576, 4096, 512),
    (DType::Q5_0, 896, 4864, 256),
    (DType::Q4K, 4864, 896, 256),
    (DType::Q6K, 4864, 896, 256),
    (DType::F32, 576, 1536, 512),
    (DType::Q4_1, 576, 1536, 8),
    (DType::Q4_1, 576, 1536, 4),
    (DType::Q4_1, 576, 1536, 3),
    (DType::Q4_1, 576, 1536, 2),
    (DType::Q4K, 1536, 576, 8),
    (DType::Q4K, 1536, 576, 3),
    (DType::Q4K, 1536, 576, 2),
];

fn gemm_name(&(dtype, n_in, n_out, n_x): &(DType, usize, usize, usize)) -> String {
    format!("{dtype} {n_x}x{n_in}->{n_out}")
}

#[divan::bench(args = GEMM.iter().map(gemm_name), consts = [2, 1])]
fn gemm<const ISA: u8>(bencher: Bencher, shape: &str) {
    let Some(isa) = isa(ISA) else {
        return;
    };
    let Some(&(dtype, n_in, n_out, n_x)) = GEMM.iter().find(|s| gemm_name(s) == shape) else {
        panic!("unknown shape {shape}");
    };
    // Prefill reads each weight once per call: one copy (it is not the bottleneck).
    let w = Weights::new(dtype, n_in, n_out, 0);
    let x = TestRng::new(1).buf(n_x, n_in).data;
    let mut out = vec![0.0f32; n_x * n_out];
    let mut scratch = Scratch::new();
    let flops = 2 * n_x * n_in * n_out;
    bencher.counter(ItemsCount::new(flops)).bench_local(|| {
        matmul_with_isa(
            isa,
            w.dtype,
            &w.copies[0],
            w.n_in,
            0..w.n_out,
            &x,
            n_x,
            &mut out,
            w.n_out,
            &mut scratch,
        );
    });
}

/// (type, n_in, n_out) decoded on two threads, weight rows split in halves,
/// each thread writing its columns in place (as the backend does).
const MATVEC_2T: &[(DType, usize, usize)] = &[
    (DType::Q4_1, 576, 1536),
    (DType::Q5_0, 896, 4864),
    (DType::Q8_0, 896, 151936),
];

#[divan::bench(args = MATVEC_2T.iter().map(shape_name))]
fn matvec_two_threads(bencher: Bencher, shape: &str) {
    let Some(&(dtype, n_in, n_out)) = MATVEC_2T.iter().find(|s| shape_name(s) == shape) else {
        panic!("unknown shape {shape}");
    };
    let w = Weights::new(dtype, n_in, n_out, STREAM_BYTES);
    let x = TestRng::new(1).buf(1, n_in).data;
    let mut out = vec![0.0f32; n_out];
    let pool = match Pool::new(2) {
        Ok(p) => p,
        Err(e) => panic!("thread pool: {e}"),
    };
    let next = Cell::new(0usize);
    bencher.counter(BytesCount::new(w.bytes())).bench_local(|| {
        let i = next.get();
        next.set((i + 1) % w.copies.len());
        let dst = OutPtr(out.as_mut_ptr());
        let weights = &w.copies[i];
        pool.run(&|t| {
            let rows = split(n_out, 2, t);
            let dst = &dst;
            with_thread_scratch(|s| {
                // SAFETY: each thread writes only its own `rows` of `out`,
                // which outlives the parallel region.
                unsafe { matmul_to_ptr(dtype, weights, n_in, rows, &x, 1, dst.0, n_out, s) }
            })
        });
    });
}

/// The output pointer, shared by the threads of one region.
struct OutPtr(*mut f32);
// SAFETY: the threads write disjoint elements through it (see the bench).
unsafe impl Sync for OutPtr {}

/// Attention of 16 decode rows in each of SmolLM2's 30 layers (9 query heads
/// over 3 KV heads of 64, f16 cache, 143 earlier positions each: 53 MB of
/// K and V, so mostly not in cache, as in a real step) on one thread: `batched`
/// attends the 16 rows in one call (a KV head's 3 query heads share one
/// pass over the cache where the CPU has AVX-512VL), `one_by_one` one row
/// per call (head by head). Same values; items = rows × layers.
const LAYERS: usize = 30;

#[divan::bench(args = ["batched", "one_by_one"])]
fn attention_16_rows(bencher: Bencher, how: &str) {
    use smelt_backend::{AttnGeometry, AttnRow, Backend, HostBuf, KvLayout, KvType};
    let be = match smelt_cpu::CpuBackend::new(1) {
        Ok(b) => b,
        Err(e) => panic!("backend: {e}"),
    };
    let (n, d, heads, kv_heads, len) = (16usize, 64usize, 9usize, 3usize, 144usize);
    let geom = AttnGeometry {
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: d,
        scale: 0.125,
        window: None,
    };
    let per_seq = len.div_ceil(16);
    let layout = KvLayout {
        n_layers: LAYERS,
        n_blocks: n * per_seq,
        block_size: 16,
        n_kv_heads: kv_heads,
        head_dim: d,
        dtype: KvType::F16,
    };
    let mut kv = match be.alloc_kv(layout) {
        Ok(kv) => kv,
        Err(e) => panic!("kv: {e}"),
    };
    let mut rng = TestRng::new(3);
    let tables: Vec<Vec<u32>> = (0..n)
        .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
        .collect();
    for table in &tables {
        let k = rng.buf(len, kv_heads * d);
        let v = rng.buf(len, kv_heads * d);
        let slots: Vec<u32> = (0..len)
            .map(|p| table[p / 16] * 16 + (p % 16) as u32)
            .collect();
        be.kv_store(&mut kv, 0, &k, &v, &slots);
    }
    let rows: Vec<AttnRow<'_>> = tables
        .iter()
        .map(|t| AttnRow {
            pos: len as u32 - 1,
            block_table: t,
        })
        .collect();
    let q = rng.buf(n, heads * d);
    let q1: Vec<HostBuf> = (0..n)
        .map(|r| HostBuf {
            rows: 1,
            cols: heads * d,
            data: q.row(r).to_vec(),
        })
        .collect();
    let mut out = HostBuf::zeros(n, heads * d);
    let mut out1 = HostBuf::zeros(1, heads * d);
    let batched = how == "batched";
    bencher
        .counter(ItemsCount::new(n * LAYERS))
        .bench_local(|| {
            for layer in 0..LAYERS {
                if batched {
                    be.attention(&q, &kv, layer, &rows, &geom, &mut out);
                } else {
                    for r in 0..n {
                        be.attention(&q1[r], &kv, layer, &rows[r..r + 1], &geom, &mut out1);
                    }
                }
            }
        });
}

/// (type, n_in, n_out, activation rows) of the 8-bit-activation products
/// (`--q8-activations`): the server's batched decode rows on SmolLM2's
/// shapes (16 rows: one row-lane group; 4: the small-batch kernel), and
/// its logits' product with `=all`.
const GEMM_Q8: &[(DType, usize, usize, usize)] = &[
    (DType::Q4_1, 576, 1536, 16),
    (DType::Q4_1, 1536, 576, 16),
    (DType::Q4_1, 576, 1536, 4),
    (DType::Q8_0, 576, 8192, 16),
    (DType::Q4K, 1024, 2048, 16),
    (DType::Q6K, 2048, 1024, 16),
];

/// One thread, weights from cache (one copy), activations quantized once
/// outside the timed loop; items = floating-point operations (2 a
/// multiply-add), as `gemm`.
#[divan::bench(args = GEMM_Q8.iter().map(gemm_name))]
fn gemm_q8(bencher: Bencher, shape: &str) {
    use smelt_cpu::kernels::q8;
    let Some(&(dtype, n_in, n_out, n_x)) = GEMM_Q8.iter().find(|s| gemm_name(s) == shape) else {
        panic!("unknown shape {shape}");
    };
    let w = Weights::new(dtype, n_in, n_out, 0);
    let x = TestRng::new(1).buf(n_x, n_in).data;
    let mut act = q8::ActQ8::new();
    act.quantize(&x, n_x, n_in);
    let mut out = vec![0.0f32; n_x * n_out];
    let mut scratch = Scratch::new();
    let flops = 2 * n_x * n_in * n_out;
    bencher.counter(ItemsCount::new(flops)).bench_local(|| {
        q8::matmul(
            dtype,
            &w.copies[0],
            0..n_out,
            &act,
            &mut out,
            n_out,
            &mut scratch,
        );
    });
}

/// Quantizing activation rows for the 8-bit products (`ActQ8::quantize`:
/// the rows' int8 values and, for 12+ rows, the row-lane layout), one
/// thread, rows in cache; items = values.
#[divan::bench(args = [(16, 576), (16, 1536), (1, 576)])]
fn quantize_q8(bencher: Bencher, (n_x, n_in): (usize, usize)) {
    let x = TestRng::new(3).buf(n_x, n_in).data;
    let mut act = smelt_cpu::kernels::q8::ActQ8::new();
    bencher
        .counter(ItemsCount::new(n_x * n_in))
        .bench_local(|| act.quantize(&x, n_x, n_in));
}
