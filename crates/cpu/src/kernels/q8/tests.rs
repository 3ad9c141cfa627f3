//! The Q8 activation layout and quantization against serial references.

use smelt_backend::testing::TestRng;

use super::{ActQ8, BLOCK, Isa, LANE_ROWS_MIN, LANES, quantize_rows, quantize_rows_body};

/// The layout [`ActQ8::quantize`] must produce, written out serially:
/// every row quantized whole, then copied into the row-lane groups.
fn reference_layout(x: &[f32], n_rows: usize, n_in: usize) -> ActQ8 {
    let nb = n_in / BLOCK;
    let mut a = ActQ8::new();
    a.n_rows = n_rows;
    a.n_in = n_in;
    a.xs = vec![0; n_rows * n_in];
    a.s4 = vec![0; n_rows * n_in / 4];
    a.d = vec![0.0; n_rows * nb];
    a.ds = vec![0.0; n_rows * nb];
    quantize_rows_body(x, &mut a.xs, &mut a.s4, &mut a.d, &mut a.ds);
    a.lane_groups = n_rows / LANES + usize::from(n_rows % LANES >= LANE_ROWS_MIN);
    let g_n = a.lane_groups;
    a.xt = vec![0; g_n * nb * BLOCK * LANES];
    a.st = vec![0; g_n * nb * 2 * LANES];
    a.dt = vec![0.0; g_n * nb * LANES];
    a.dst = vec![0.0; g_n * nb * LANES];
    for r in 0..(g_n * LANES).min(n_rows) {
        let (g, lane) = (r / LANES, r % LANES);
        for b in 0..nb {
            let gb = g * nb + b;
            for k in 0..BLOCK {
                a.xt[((gb * (BLOCK / 4) + k / 4) * LANES + lane) * 4 + k % 4] =
                    a.xs[r * n_in + b * BLOCK + k];
            }
            for h in 0..2 {
                a.st[(gb * 2 + h) * LANES + lane] =
                    a.s4[r * n_in / 4 + 8 * b + 4 * h..][..4].iter().sum();
            }
            a.dt[gb * LANES + lane] = a.d[r * nb + b];
            a.dst[gb * LANES + lane] = a.ds[r * nb + b];
        }
    }
    a
}

/// Quantizing in parts on several threads gives the serial layout's
/// values, bit for bit, whatever the number of parts, for any shape
/// (partial row-lane groups, more parts than blocks), also when the
/// buffers are reused from a larger call.
#[test]
fn quantizing_in_parts_on_threads_equals_the_serial_layout() {
    let mut rng = TestRng::new(7);
    let mut act = ActQ8::new();
    for (n_rows, n_in) in [
        (40, 576),
        (1, 32),
        (11, 96),
        (12, 96),
        (16, 576),
        (17, 64),
        (29, 1536),
        (33, 160),
    ] {
        let mut x: Vec<f32> = (0..n_rows * n_in).map(|_| rng.uniform(-3.0, 3.0)).collect();
        let first = BLOCK.min(x.len());
        x[..first].fill(0.0);
        if x.len() > 2 * BLOCK {
            x[BLOCK + 5] = f32::NAN;
        }
        let want = reference_layout(&x, n_rows, n_in);
        for parts in [1usize, 2, 3, 5, 64] {
            act.quantize_in_parts(&x, n_rows, n_in, parts, &|f: &(dyn Fn(usize) + Sync)| {
                std::thread::scope(|s| {
                    for i in 0..parts {
                        s.spawn(move || f(i));
                    }
                })
            });
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let at = format!("{n_rows}x{n_in}, {parts} parts");
            assert_eq!(act.n_rows, n_rows, "{at}");
            assert_eq!(act.xs[..n_rows * n_in], want.xs[..], "{at}");
            assert_eq!(act.s4[..want.s4.len()], want.s4[..], "{at}");
            assert_eq!(bits(&act.d[..want.d.len()]), bits(&want.d), "{at}");
            assert_eq!(bits(&act.ds[..want.ds.len()]), bits(&want.ds), "{at}");
            assert_eq!(act.lane_groups, want.lane_groups, "{at}");
            assert_eq!(act.xt, want.xt, "{at}");
            assert_eq!(act.st, want.st, "{at}");
            assert_eq!(bits(&act.dt), bits(&want.dt), "{at}");
            assert_eq!(bits(&act.dst), bits(&want.dst), "{at}");
        }
    }
}

/// The SIMD quantizer gives the scalar definition's bytes, sums and
/// scales, ties, zeros, huge values and NaNs included.
#[test]
fn simd_quantization_equals_the_scalar_one() {
    if !Isa::Avx2.available() {
        eprintln!("note: no AVX2; only the scalar quantizer exists here");
    }
    let mut rng = TestRng::new(31);
    let n = 64;
    let mut x: Vec<f32> = (0..n * BLOCK).map(|_| rng.uniform(-4.0, 4.0)).collect();
    x[..BLOCK].fill(0.0);
    x[BLOCK] = 127.0;
    x[BLOCK + 1] = 0.5;
    x[BLOCK + 2] = -1.5;
    x[2 * BLOCK + 3] = f32::NAN;
    x[3 * BLOCK + 4] = 1e30;
    x[4 * BLOCK + 7] = -3e-39;
    type Quantizer<'a> = &'a dyn Fn(&[f32], &mut [i8], &mut [i32], &mut [f32], &mut [f32]);
    let run = |f: Quantizer<'_>| {
        let (mut q, mut s, mut d, mut ds) = (
            vec![0i8; n * BLOCK],
            vec![0i32; n * 8],
            vec![0f32; n],
            vec![0f32; n],
        );
        f(&x, &mut q, &mut s, &mut d, &mut ds);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        (q, s, bits(&d), bits(&ds))
    };
    let simd = run(&|x, q, s, d, ds| quantize_rows(x, q, s, d, ds));
    let scalar = run(&|x, q, s, d, ds| quantize_rows_body(x, q, s, d, ds));
    assert_eq!(simd.0, scalar.0, "bytes");
    assert_eq!(simd.1, scalar.1, "sums of four");
    assert_eq!(simd.2, scalar.2, "dx");
    assert_eq!(simd.3, scalar.3, "ds");
}
