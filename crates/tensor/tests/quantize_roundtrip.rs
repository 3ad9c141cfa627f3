//! Round trips through the bit-exact reference dequantizer: the error of every
//! quantizer stays under the bound documented in `smelt_tensor::quantize`
//! (and docs/QUANTIZATION.md), and the K-quants' scale search beats plain
//! min/max scales on the same data.

use smelt_tensor::{DType, dequantize_row, quantize, quantize_row, quantize_row_minmax};

/// Deterministic xorshift64* numbers: test inputs without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

const ROWS: usize = 256;
const ROW_LEN: usize = 4096;

fn gaussian(seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..ROWS * ROW_LEN).map(|_| rng.normal()).collect()
}

/// Laplace-like weights with a few large outliers and a per-row scale, closer
/// to real checkpoints than a plain Gaussian.
fn weight_like(seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(ROWS * ROW_LEN);
    for _ in 0..ROWS {
        let row_scale = 0.01 * (4.0 * rng.uniform()).exp() as f32;
        for _ in 0..ROW_LEN {
            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            let mut v = sign * -(rng.uniform().ln()) as f32;
            if rng.uniform() < 0.001 {
                v *= 20.0;
            }
            out.push(v * row_scale);
        }
    }
    out
}

fn dequantize(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    let row_bytes = bytes.len() / (n / ROW_LEN);
    for (src, dst) in bytes.chunks(row_bytes).zip(out.chunks_mut(ROW_LEN)) {
        dequantize_row(dtype, src, dst);
    }
    out
}

/// RMS of the error over the RMS of the data.
fn relative_rmse(data: &[f32], got: &[f32]) -> f64 {
    let err: f64 = data
        .iter()
        .zip(got)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let sig: f64 = data.iter().map(|&a| f64::from(a).powi(2)).sum();
    (err / sig).sqrt()
}

fn roundtrip(dtype: DType, data: &[f32]) -> f64 {
    let bytes = quantize(dtype, data, ROW_LEN).unwrap_or_else(|e| panic!("{dtype}: {e}"));
    assert_eq!(
        bytes.len() as u64,
        dtype.row_bytes(ROW_LEN as u64).expect("row bytes") * ROWS as u64
    );
    relative_rmse(data, &dequantize(dtype, &bytes, data.len()))
}

/// The documented bounds on Gaussian data (measured values in the module docs).
const GAUSSIAN_BOUNDS: [(DType, f64); 11] = [
    (DType::F32, 0.0),
    (DType::F16, 0.00023),
    (DType::BF16, 0.0018),
    (DType::Q8_0, 0.0059),
    (DType::Q5_0, 0.047),
    (DType::Q5_1, 0.042),
    (DType::Q4_0, 0.095),
    (DType::Q4_1, 0.086),
    (DType::Q6K, 0.0185),
    (DType::Q5K, 0.038),
    (DType::Q4K, 0.077),
];

#[test]
fn gaussian_round_trip_error_is_within_the_documented_bounds() {
    let data = gaussian(0xC0FF_EE00_1234_5678);
    let mut report = String::new();
    let mut failures = Vec::new();
    for (dtype, bound) in GAUSSIAN_BOUNDS {
        let rel = roundtrip(dtype, &data);
        report += &format!("{dtype}: {rel:.5} (bound {bound})\n");
        if rel > bound {
            failures.push(format!("{dtype}: relative RMSE {rel:.5} > {bound}"));
        }
    }
    eprintln!("{report}");
    assert!(failures.is_empty(), "{failures:?}\n{report}");
}

#[test]
fn weight_like_round_trip_error_is_bounded_and_ordered() {
    // Heavier tails than a Gaussian: 4-bit types lose more, the order of the
    // types by bits per weight must hold.
    let data = weight_like(0x5EED_0000_0000_0042);
    let order = [DType::Q8_0, DType::Q6K, DType::Q5K, DType::Q4K];
    let errs: Vec<f64> = order.iter().map(|&t| roundtrip(t, &data)).collect();
    eprintln!("weight-like: {order:?} -> {errs:?}");
    for w in errs.windows(2) {
        assert!(w[0] < w[1], "{order:?}: {errs:?} not increasing");
    }
    assert!(errs[3] < 0.12, "Q4_K on weight-like data: {}", errs[3]);
}

#[test]
fn k_quant_search_beats_min_max_scales() {
    for (seed, data) in [
        ("gaussian", gaussian(0xABCD_0000_0000_0001)),
        ("weight-like", weight_like(0xABCD_0000_0000_0002)),
    ] {
        for dtype in [DType::Q4K, DType::Q5K, DType::Q6K] {
            let searched = roundtrip(dtype, &data);
            let row_bytes = dtype.row_bytes(ROW_LEN as u64).expect("row bytes") as usize;
            let mut naive = vec![0u8; row_bytes * ROWS];
            for (src, dst) in data.chunks(ROW_LEN).zip(naive.chunks_mut(row_bytes)) {
                quantize_row_minmax(dtype, src, dst).expect("finite data");
            }
            let naive = relative_rmse(&data, &dequantize(dtype, &naive, data.len()));
            eprintln!("{seed} {dtype}: search {searched:.5}, min/max {naive:.5}");
            assert!(
                searched < 0.96 * naive,
                "{seed} {dtype}: search {searched:.5} is not clearly better than min/max {naive:.5}"
            );
        }
    }
}

#[test]
fn k_quants_reproduce_exactly_representable_blocks() {
    // Values that are an exact K-quant encoding decode back with an error far
    // below a quantization step: the search finds (or comes very near) them.
    let mut rng = Rng(0x1111_2222_3333_4444);
    for dtype in [DType::Q4K, DType::Q5K, DType::Q6K] {
        let row_bytes = dtype.row_bytes(1024).expect("row bytes") as usize;
        let data: Vec<f32> = (0..1024).map(|_| rng.normal()).collect();
        let mut once = vec![0u8; row_bytes];
        quantize_row(dtype, &data, &mut once).expect("finite");
        let mut decoded = vec![0.0f32; 1024];
        dequantize_row(dtype, &once, &mut decoded);
        let mut twice = vec![0u8; row_bytes];
        quantize_row(dtype, &decoded, &mut twice).expect("finite");
        let mut again = vec![0.0f32; 1024];
        dequantize_row(dtype, &twice, &mut again);
        let rel = relative_rmse(&decoded, &again);
        assert!(
            rel < 0.01,
            "{dtype}: re-quantizing decoded values loses {rel}"
        );
    }
}

#[test]
fn constant_zero_and_tiny_blocks_round_trip() {
    for dtype in [DType::Q4K, DType::Q5K, DType::Q6K, DType::Q4_0, DType::Q8_0] {
        for (what, data) in [
            ("zeros", vec![0.0f32; 512]),
            ("constant", vec![0.75f32; 512]),
            ("negative constant", vec![-0.75f32; 512]),
        ] {
            let bytes = quantize(dtype, &data, 512).expect("finite");
            let mut out = vec![f32::NAN; 512];
            dequantize_row(dtype, &bytes, &mut out);
            let err = data
                .iter()
                .zip(&out)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 2e-3, "{dtype} {what}: max error {err}");
        }
    }
}
