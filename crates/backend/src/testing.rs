//! Random test data: activations and weight rows of every type, with sane
//! scales (finite, varied magnitudes) so kernels see realistic blocks. Used by
//! the backend tests of every backend; deterministic per seed.

use half::f16;
use smelt_tensor::DType;

use crate::{HostBuf, HostTensor};

/// A tiny deterministic generator (splitmix64), enough for test data.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// A random activation matrix with values in `[-2, 2)`.
    pub fn buf(&mut self, rows: usize, cols: usize) -> HostBuf {
        HostBuf {
            data: (0..rows * cols).map(|_| self.uniform(-2.0, 2.0)).collect(),
            rows,
            cols,
        }
    }
}

/// Byte offsets of the f16 scale fields in one block of `dtype`, which must
/// hold finite values (random bits elsewhere are always valid quants).
fn f16_scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::Q4_1 | DType::Q5_1 => &[0, 2],
        DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q2K => &[80, 82],
        DType::Q3K => &[108],
        DType::Q6K => &[208],
        DType::F32 | DType::F16 | DType::BF16 | DType::Q8K => &[],
    }
}

/// One random block of `dtype` with finite scales of magnitude ~1e-3..0.1.
fn random_block(rng: &mut TestRng, dtype: DType, out: &mut Vec<u8>) {
    let start = out.len();
    match dtype {
        DType::F32 => out.extend_from_slice(&rng.uniform(-1.0, 1.0).to_le_bytes()),
        DType::F16 => out.extend_from_slice(&f16::from_f32(rng.uniform(-1.0, 1.0)).to_le_bytes()),
        DType::BF16 => {
            let bits = rng.uniform(-1.0, 1.0).to_bits();
            out.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
        }
        _ => {
            for _ in 0..dtype.block_bytes() {
                out.push(rng.next_u64() as u8);
            }
        }
    }
    let block = &mut out[start..];
    let scale = |rng: &mut TestRng| {
        let mag = 10f32.powf(rng.uniform(-3.0, -1.0));
        if rng.next_u64() & 1 == 0 { mag } else { -mag }
    };
    if dtype == DType::Q8K {
        block[..4].copy_from_slice(&scale(rng).to_le_bytes());
    }
    // Legacy types with one scale (Q4_0, Q5_0, Q8_0) use offset 2 for quants:
    // only overwrite the scale fields they have.
    let n_scales = match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => 1,
        _ => f16_scale_offsets(dtype).len(),
    };
    for &at in &f16_scale_offsets(dtype)[..n_scales] {
        block[at..at + 2].copy_from_slice(&f16::from_f32(scale(rng)).to_le_bytes());
    }
}

/// A random `n_out × n_in` weight of `dtype` (`n_in` a multiple of its block).
pub fn random_weight(rng: &mut TestRng, dtype: DType, n_in: usize, n_out: usize) -> HostTensor {
    let n_blocks = n_in / dtype.block_elems() * n_out;
    let mut bytes = Vec::with_capacity(n_blocks * dtype.block_bytes());
    for _ in 0..n_blocks {
        random_block(rng, dtype, &mut bytes);
    }
    match HostTensor::from_bytes("random", bytes, dtype, vec![n_in, n_out]) {
        Ok(t) => t,
        Err(e) => panic!("random_weight({dtype}, {n_in}, {n_out}): {e}"),
    }
}
