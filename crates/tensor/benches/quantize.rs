//! Quantizer throughput: `cargo bench -p smelt-tensor --bench quantize`.
//! Input is 64 rows of 4096 f32 values (1 MiB); divan reports bytes/s of
//! f32 input consumed (all rayon threads).

use divan::{Bencher, counter::BytesCount};
use smelt_tensor::{DType, quantize};

fn main() {
    divan::main();
}

const ROWS: usize = 64;
const ROW_LEN: usize = 4096;

fn input() -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..ROWS * ROW_LEN)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[divan::bench(args = [
    DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
    DType::Q5_1, DType::Q4K, DType::Q5K, DType::Q6K,
])]
fn quantize_1mib(bencher: Bencher, dtype: DType) {
    let data = input();
    bencher
        .counter(BytesCount::of_slice(&data))
        .bench(|| quantize(dtype, divan::black_box(&data), ROW_LEN));
}
