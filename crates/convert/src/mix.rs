//! Which type each tensor gets: the quantization "mixes" (`--type`), as
//! llama.cpp's quantize assigns them.
//!
//! Rules (docs/QUANTIZATION.md has the table):
//!
//! * 1-D tensors (norms, biases) stay F32 whatever the mix.
//! * A plain type (`f16`, `q8_0`, `q4_k`, ...) is used for every matrix.
//! * `q4_k_m` / `q5_k_m`: Q4_K / Q5_K for every matrix, except
//!   `output.weight` → Q6_K, and `attn_v.weight` / `ffn_down.weight` → Q6_K
//!   in the layers where [`use_more_bits`] holds (the first and last eighth
//!   of the layers and every third one between them).
//! * A row length that is not a multiple of the chosen type's block falls
//!   back: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 (32-element blocks of
//!   about the same bits, what llama.cpp does); if the row is not a multiple
//!   of 32 either, F16.
//!
//! Read off the Qwen2.5-Coder-0.5B-Instruct Q4_K_M file made by llama.cpp:
//! its rows of 896 are not whole 256-blocks, so its Q4_K tensors are stored
//! as Q5_0 and its Q6_K ones as Q8_0; `ffn_down` (rows of 4864 = 19 x 256)
//! keeps real Q4_K/Q6_K. llama.cpp counts the `attn_v`/`ffn_down` tensors
//! in the order the file stores them, and that file (like files converted
//! from Hugging Face checkpoints, whose tensor names sort as strings) stores
//! layers in string order: 0, 1, 10, 11, ..., 19, 2, 20, ...; the
//! "layer index" of the rule is that position. [`mix_type`] takes the layer
//! number as the position (files written in numeric order);
//! [`mix_type_at`] takes the position, and the converter passes the
//! position in the source file, reproducing llama.cpp.

use std::fmt;

use smelt_tensor::DType;

/// A `--type` choice: one type for all matrices, or a K-quant mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mix {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
    /// Q4_K, with Q6_K for the output and half the `attn_v`/`ffn_down`.
    Q4KM,
    /// Q5_K, with Q6_K for the output and half the `attn_v`/`ffn_down`.
    Q5KM,
}

impl Mix {
    /// Every mix, in the order `--help` lists them.
    pub const ALL: [Mix; 13] = [
        Mix::F32,
        Mix::F16,
        Mix::BF16,
        Mix::Q8_0,
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::Q4K,
        Mix::Q5K,
        Mix::Q6K,
        Mix::Q4KM,
        Mix::Q5KM,
    ];

    /// The lowercase name used on the command line (`q4_k_m`).
    pub const fn name(self) -> &'static str {
        match self {
            Mix::F32 => "f32",
            Mix::F16 => "f16",
            Mix::BF16 => "bf16",
            Mix::Q8_0 => "q8_0",
            Mix::Q4_0 => "q4_0",
            Mix::Q4_1 => "q4_1",
            Mix::Q5_0 => "q5_0",
            Mix::Q5_1 => "q5_1",
            Mix::Q4K => "q4_k",
            Mix::Q5K => "q5_k",
            Mix::Q6K => "q6_k",
            Mix::Q4KM => "q4_k_m",
            Mix::Q5KM => "q5_k_m",
        }
    }

    /// Parses a command-line name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Mix> {
        let lower = name.to_ascii_lowercase();
        Mix::ALL.into_iter().find(|m| m.name() == lower)
    }

    /// The type of most matrices.
    pub const fn base(self) -> DType {
        match self {
            Mix::F32 => DType::F32,
            Mix::F16 => DType::F16,
            Mix::BF16 => DType::BF16,
            Mix::Q8_0 => DType::Q8_0,
            Mix::Q4_0 => DType::Q4_0,
            Mix::Q4_1 => DType::Q4_1,
            Mix::Q5_0 => DType::Q5_0,
            Mix::Q5_1 => DType::Q5_1,
            Mix::Q4K | Mix::Q4KM => DType::Q4K,
            Mix::Q5K | Mix::Q5KM => DType::Q5K,
            Mix::Q6K => DType::Q6K,
        }
    }

    /// The `general.file_type` value (llama.cpp's `llama_ftype`) for a file of this mix.
    /// A plain K type is llama.cpp's `_S` ("small") variant.
    pub const fn file_type(self) -> u32 {
        match self {
            Mix::F32 => 0,
            Mix::F16 => 1,
            Mix::Q4_0 => 2,
            Mix::Q4_1 => 3,
            Mix::Q8_0 => 7,
            Mix::Q5_0 => 8,
            Mix::Q5_1 => 9,
            Mix::Q4K => 14,
            Mix::Q4KM => 15,
            Mix::Q5K => 16,
            Mix::Q5KM => 17,
            Mix::Q6K => 18,
            Mix::BF16 => 32,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which tensors the `_M` mixes give more bits in some layers.
fn is_layer_sensitive(tensor_name: &str) -> bool {
    tensor_name.ends_with(".attn_v.weight") || tensor_name.ends_with(".ffn_down.weight")
}

/// llama.cpp's choice of layers that get more bits: the first and last
/// eighth (integer division) and every third layer between them.
pub fn use_more_bits(position: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    position < eighth || position >= 7 * n_layers / 8 || (position - eighth) % 3 == 2
}

/// The layer number of a `blk.N.` tensor name.
pub fn layer_of(tensor_name: &str) -> Option<usize> {
    let rest = tensor_name.strip_prefix("blk.")?;
    rest.split('.').next()?.parse().ok()
}

/// The type a matrix (2 or more dims) of rows of `row_len` values gets in
/// `mix`, taking its layer number as its position among the tensors of its
/// kind (see the module docs). 1-D tensors are F32: see [`tensor_type`].
pub fn mix_type(mix: Mix, tensor_name: &str, n_layers: usize, row_len: usize) -> DType {
    let position = layer_of(tensor_name).unwrap_or(0);
    mix_type_at(mix, tensor_name, position, n_layers, row_len)
}

/// [`mix_type`] with the position of the tensor among the `attn_v` (or
/// `ffn_down`) tensors of the file given explicitly, as llama.cpp counts.
pub fn mix_type_at(
    mix: Mix,
    tensor_name: &str,
    position: usize,
    n_layers: usize,
    row_len: usize,
) -> DType {
    let wanted = match mix {
        Mix::Q4KM | Mix::Q5KM => {
            if tensor_name == "output.weight"
                || (is_layer_sensitive(tensor_name) && use_more_bits(position, n_layers))
            {
                DType::Q6K
            } else {
                mix.base()
            }
        }
        _ => mix.base(),
    };
    fit_row(wanted, row_len)
}

/// `wanted`, or its fallback when rows of `row_len` are not whole blocks of it.
pub fn fit_row(wanted: DType, row_len: usize) -> DType {
    if row_len.is_multiple_of(wanted.block_elems()) {
        return wanted;
    }
    let fallback = match wanted {
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        _ => DType::F16,
    };
    if row_len.is_multiple_of(fallback.block_elems()) {
        fallback
    } else {
        DType::F16
    }
}

/// The type of any tensor: F32 for 1-D ones, else [`mix_type_at`].
pub fn tensor_type(
    mix: Mix,
    tensor_name: &str,
    dims: &[u64],
    position: usize,
    n_layers: usize,
) -> DType {
    // ggml's dimension count ignores trailing 1s: [896, 1] is 1-D.
    let n_dims = dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    if n_dims <= 1 {
        return DType::F32;
    }
    let row_len = dims.first().copied().unwrap_or(0);
    let row_len = usize::try_from(row_len).unwrap_or(usize::MAX);
    mix_type_at(mix, tensor_name, position, n_layers, row_len)
}

/// Assigns each sensitive tensor its position among those of its kind, in
/// the order they are seen (the source file's order).
#[derive(Debug, Default)]
pub struct PositionCounter {
    attn_v: usize,
    ffn_down: usize,
}

impl PositionCounter {
    /// The position of `tensor_name` (0 for tensors the mixes don't count).
    pub fn next(&mut self, tensor_name: &str) -> usize {
        let counter = if tensor_name.ends_with(".attn_v.weight") {
            &mut self.attn_v
        } else if tensor_name.ends_with(".ffn_down.weight") {
            &mut self.ffn_down
        } else {
            return 0;
        };
        let position = *counter;
        *counter += 1;
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_of_24() {
        let layers: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(layers, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fit_row(DType::Q4K, 896), DType::Q5_0);
        assert_eq!(fit_row(DType::Q5K, 896), DType::Q5_1);
        assert_eq!(fit_row(DType::Q6K, 896), DType::Q8_0);
        assert_eq!(fit_row(DType::Q6K, 4864), DType::Q6K);
        assert_eq!(fit_row(DType::Q4K, 172), DType::F16);
        assert_eq!(fit_row(DType::Q8_0, 172), DType::F16);
        assert_eq!(fit_row(DType::BF16, 3), DType::BF16);
    }

    #[test]
    fn names_round_trip() {
        for m in Mix::ALL {
            assert_eq!(Mix::from_name(m.name()), Some(m));
        }
        assert_eq!(Mix::from_name("Q4_K_M"), Some(Mix::Q4KM));
        assert_eq!(Mix::from_name("q3_k"), None);
    }

    #[test]
    fn one_d_tensors_stay_f32() {
        assert_eq!(
            tensor_type(Mix::Q4KM, "blk.0.attn_norm.weight", &[896], 0, 24),
            DType::F32
        );
        assert_eq!(
            tensor_type(Mix::Q8_0, "blk.0.ffn_up.weight", &[896, 4864], 0, 24),
            DType::Q8_0
        );
    }
}
