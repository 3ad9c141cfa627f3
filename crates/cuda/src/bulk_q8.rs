//! Bulk products with reduced-precision activations (kernels/gemm_q8.cu,
//! kernels/gemm_bf16.cu).
//!
//! The decode path already multiplies the large matrices of 1B+ models with
//! x quantized to int8 per 32 values (`Q8Mode::Auto`, matvec_q8.cu). Bulk
//! rows of such weights do the same on the integer tensor cores: x is
//! quantized once per product (`bulk_quant_x`), and `gemmq_<type>` takes
//! each 32-value group's exact integer dot product with one `mma.sync`,
//! scaled in f32. BF16 weights take x rounded to bf16 instead
//! (`gemmq_bf16`: one bf16 product where the exact kernels take two or
//! three). Which weights take them depends on the weight alone (its type
//! and size), never on the batch, so batch invariance holds as for the
//! other bulk products. Off by default until measured on a GPU.

use cudarc::driver::CudaFunction;
use smelt_tensor::DType;

use crate::backend::CudaWeight;
use crate::bulk::{GemmInput, InputForm};
use crate::{CudaBackend, Q8Mode};

/// Values of one k tile of the int8 product (`GQ_KT` in gemm_q8.cu).
const GEMMQ_K: usize = 256;
/// Values of one k tile of the bf16 product (`GBF_KT` in gemm_bf16.cu).
const GEMMB_K: usize = 64;

/// The smallest weight (rows × inputs) whose bulk products take int8
/// activations under [`Q8Mode::Auto`]: 4 Mi values, the layer matrices of
/// 1B-class models (a 2048 × 2048 projection and up) and the FFNs of
/// Qwen2.5-0.5B; SmolLM2-135M's largest (1536 × 576) stays exact, as its
/// decode does.
const GEMMQ_MIN_VALUES: usize = 1 << 22;

/// Which bulk products take the int8 kernels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum GemmQ8Mode {
    /// Never: the default (`SMELT_CUDA_GEMM_Q8` unset or `0`) until the
    /// kernels have run on a GPU (written in session 12, when none was lent;
    /// docs/CUDA.md "Session 12").
    Off,
    /// As the decode path's [`Q8Mode`]: off when it is off, every weight of
    /// a type with a kernel when it is on, and under `Q8Mode::Auto` the
    /// weights of at least `GEMMQ_MIN_VALUES` values
    /// (`SMELT_CUDA_GEMM_Q8=auto`): the intended default.
    Auto,
    /// Every weight of a type with a kernel (`SMELT_CUDA_GEMM_Q8=1`).
    On,
}

impl GemmQ8Mode {
    pub(crate) fn from_env() -> Self {
        match std::env::var("SMELT_CUDA_GEMM_Q8").as_deref() {
            Ok("1") => GemmQ8Mode::On,
            Ok("auto") => GemmQ8Mode::Auto,
            _ => GemmQ8Mode::Off,
        }
    }
}

/// Per type with an int8 kernel: 16-byte chunks of raw weight bytes staged
/// per row and k tile, and scale groups per tile (`GqFmt` in gemm_q8.cu).
fn staging(dtype: DType) -> Option<(usize, usize)> {
    match dtype {
        DType::Q4_1 | DType::Q4K => Some((11, 8)),
        DType::Q8_0 => Some((19, 8)),
        DType::Q6K => Some((15, 16)),
        _ => None,
    }
}

/// Dynamic shared memory of a `gemmq_*` block `bn` outputs wide
/// (`GqSmem<T, BN>::BYTES` in gemm_q8.cu).
fn shared_bytes(chunks: usize, groups: usize, bn: usize) -> usize {
    let x = 2 * 64 * 272;
    let w = 2 * bn * chunks * 16;
    let scales = 2 * (2 * 8 * 64 * 4);
    x + w + scales + groups * bn * 4 + 8 * bn * 4 + 2 * bn * 4
}

/// Dynamic shared memory of a `gemmq_bf16` block `bn` outputs wide
/// (`GbfSmem<BN>::BYTES` in gemm_bf16.cu: 3 stages of 64 x rows and `bn`
/// weight rows, 144 bytes each).
fn shared_bytes_bf16(bn: usize) -> usize {
    3 * (64 + bn) * 144
}

/// A reduced-precision kernel's dynamic shared memory `bn` outputs wide.
fn shared_for(dtype: DType, bn: usize) -> Option<usize> {
    if dtype == DType::BF16 {
        return Some(shared_bytes_bf16(bn));
    }
    let (chunks, groups) = staging(dtype)?;
    Some(shared_bytes(chunks, groups, bn))
}

/// The names of the reduced-precision kernels' types.
pub(crate) fn kernel_suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::BF16 => Some("bf16"),
        DType::Q4_1 => Some("q4_1"),
        DType::Q8_0 => Some("q8_0"),
        DType::Q4K => Some("q4_k"),
        DType::Q6K => Some("q6_k"),
        _ => None,
    }
}

/// How a bulk product runs on the reduced-precision kernels: the kernel,
/// its dynamic shared memory, its k tile (the unit of a split over k) and
/// whether it reads x rounded to bf16 (`bulk_split_x`'s hi words) rather
/// than quantized to int8 (`bulk_quant_x`).
pub(crate) struct GemmQ8<'a> {
    pub f: &'a CudaFunction,
    pub shared: u32,
    pub k_tile: usize,
    pub bf16_x: bool,
}

impl CudaBackend {
    /// The int8 kernel for `w` with `tile` (0: 128 outputs wide, 1: 64),
    /// when the mode and the weight (type, size, shape) call for it and its
    /// shared memory fits.
    pub(crate) fn gemm_q8_for(
        &self,
        w: &CudaWeight,
        code: usize,
        tile: usize,
    ) -> Option<GemmQ8<'_>> {
        let wanted = match self.bulk_state.q8 {
            GemmQ8Mode::Off => false,
            GemmQ8Mode::On => true,
            GemmQ8Mode::Auto => match self.q8.mode {
                Q8Mode::Off => false,
                Q8Mode::On => true,
                Q8Mode::Auto => w.n_rows * w.row_len >= GEMMQ_MIN_VALUES,
            },
        };
        if !wanted || !w.row_len.is_multiple_of(32) {
            return None;
        }
        // The wide tile's shared memory decides for both widths, so the
        // choice never depends on the tile (that is, on the batch): on a
        // GPU with less shared memory a type takes the exact product for
        // every batch, not int8 only in narrow tiles.
        if shared_for(w.dtype, 128)? > self.q8.max_shared {
            return None;
        }
        let shared = shared_for(w.dtype, [128, 64][tile])?;
        let fs = self.k.gemm_q8.get(code)?.as_ref()?;
        let bf16_x = w.dtype == DType::BF16;
        Some(GemmQ8 {
            f: &fs[tile],
            shared: shared as u32,
            k_tile: if bf16_x { GEMMB_K } else { GEMMQ_K },
            bf16_x,
        })
    }

    /// Quantizes `m` rows of `k` inputs at `x` (`k` a multiple of 32) for
    /// the int8 product, unless an earlier product of the same input did:
    /// the addresses of the int8 codes, the scale of each 32 values and the
    /// scale times the codes' sum (`bulk_quant_x`).
    pub(crate) fn quant_input(
        &self,
        what: &'static str,
        x: &GemmInput,
        m: usize,
        k: usize,
    ) -> Option<[u64; 3]> {
        let groups = m * k / 32;
        // In u32 words: the codes (4 a word), then two floats a group.
        let form = InputForm {
            cache: &x.quantized,
            scratch: &self.bulk_state.quant_scratch,
            parts: [0, m * k / 4, m * k / 4 + groups],
            words: m * k / 4 + 2 * groups,
            kernel: &self.k.bulk_quant_x,
            // One warp a 32-value group: a thread a value.
            threads: m * k,
        };
        self.input_form(what, x.addr, m, k, form)
    }

    /// Bulk products of the weight types with reduced-precision kernels
    /// (int8 x for Q4_1, Q8_0, Q4_K, Q6_K; bf16 x for BF16) take them
    /// (on), never (off: the default), or as the decode path's [`Q8Mode`]
    /// says for the weight (`None`, `SMELT_CUDA_GEMM_Q8=auto`). Only
    /// precision and speed differ (docs/CUDA.md, "Session 12").
    pub fn set_gemm_q8(&mut self, on: Option<bool>) {
        self.bulk_state.q8 = match on {
            Some(true) => GemmQ8Mode::On,
            Some(false) => GemmQ8Mode::Off,
            None => GemmQ8Mode::Auto,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_matches_the_kernels_constants() {
        // `GqFmt<T>` in gemm_q8.cu must give the CH and G this file sizes
        // shared memory by (a mismatch would overrun a block's memory).
        let src = include_str!("kernels/gemm_q8.cu");
        for (dtype, w) in [
            (DType::Q4_1, "W_Q4_1"),
            (DType::Q8_0, "W_Q8_0"),
            (DType::Q4K, "W_Q4_K"),
            (DType::Q6K, "W_Q6_K"),
        ] {
            let line = src
                .lines()
                .find(|l| l.starts_with(&format!("template <> struct GqFmt<{w}>")))
                .unwrap_or_else(|| panic!("no GqFmt<{w}> in gemm_q8.cu"));
            let (ch, g) = staging(dtype).expect("a staged type");
            assert!(line.contains(&format!("CH = {ch};")), "{w}: {line}");
            assert!(line.contains(&format!("G = {g};")), "{w}: {line}");
            assert!(kernel_suffix(dtype).is_some(), "{w}: no kernel name");
        }
        assert!(staging(DType::BF16).is_none() && kernel_suffix(DType::F16).is_none());
    }

    #[test]
    fn shared_memory_matches_the_kernels_layout() {
        // GqSmem<W_Q4_K, 128>: 2*64*272 + 2*128*176 + 2*2*8*64*4 + 8*128*4
        // + 8*128*4 + 2*128*4.
        assert_eq!(
            shared_bytes(11, 8, 128),
            34816 + 45056 + 8192 + 4096 + 4096 + 1024
        );
        // Two Q4_K / Q4_1 blocks fit an H100 SM (228 KiB, 1 KiB reserved
        // a block): the kernels ask for two.
        assert!(2 * (shared_bytes(11, 8, 128) + 1024) <= 228 * 1024);
        assert!(shared_bytes(19, 8, 128) <= 227 * 1024);
        // GbfSmem<BN>, and the k tile, from gemm_bf16.cu's constants.
        let src = include_str!("kernels/gemm_bf16.cu");
        let define = |name: &str| -> usize {
            src.lines()
                .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no #define {name} in gemm_bf16.cu"))
        };
        let (stages, ld) = (define("GBF_STAGES"), define("GBF_LD"));
        assert_eq!(define("GBF_KT"), GEMMB_K);
        for bn in [64, 128] {
            assert_eq!(shared_bytes_bf16(bn), stages * (64 + bn) * ld);
        }
        assert!(2 * (shared_bytes_bf16(128) + 1024) <= 228 * 1024);
    }
}
