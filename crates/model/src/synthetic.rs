//! Random-weight models of any shape, written as GGUF: for tests (tiny
//! models that exercise every code path in milliseconds) and for benchmarks
//! of shapes we have no real file for. Speed does not depend on the values;
//! correctness tests compare backends and paths on the same random model.

use smelt_backend::testing::{TestRng, random_weight};
use smelt_gguf::{GgufWriter, Value};
use smelt_tensor::DType;

/// The shape and types of a synthetic model.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    /// `general.architecture`: "llama" or "qwen2" (which adds Q/K/V biases).
    pub arch: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    /// Type of the big matrices.
    pub weight_type: DType,
    /// Type of the token embedding (and output, when untied).
    pub embd_type: DType,
    pub tied_output: bool,
    /// Per-tensor type rule on top of `weight_type` / `embd_type`.
    pub mix: WeightMix,
    pub seed: u64,
}

/// How tensor types vary across a synthetic model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightMix {
    /// Every big matrix is `weight_type`; embedding and output `embd_type`.
    #[default]
    Uniform,
    /// llama.cpp's Q4_K_M habit: Q4_K matrices and embedding, Q6_K output,
    /// and Q6_K `attn_v` / `ffn_down` in the layers where
    /// [`more_bits_layer`] says so (about half of them).
    Q4KM,
}

/// The layers llama.cpp's Q4_K_M gives more bits (`attn_v`, `ffn_down`):
/// the first and last eighth, and every third layer in between.
pub fn more_bits_layer(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

/// Known benchmark shapes (random weights): `smollm2` (SmolLM2-135M,
/// Q4_1), `1b-q4_k_m` (Llama-3.2-1B, tied), `8b-q4_k_m` and `8b-bf16`
/// (Llama-3.1-8B, untied). The Q4_K_M ones use [`WeightMix::Q4KM`].
pub const PRESETS: &[&str] = &["smollm2", "1b-q4_k_m", "8b-q4_k_m", "8b-bf16"];

impl SyntheticSpec {
    /// One of [`PRESETS`] (also accepted: `1b`, `8b` for the Q4_K_M ones).
    pub fn preset(name: &str) -> Option<SyntheticSpec> {
        let base = SyntheticSpec {
            arch: "llama".into(),
            context_length: 4096,
            seed: 7,
            ..SyntheticSpec::default()
        };
        let llama_1b = SyntheticSpec {
            n_layers: 16,
            d_model: 2048,
            d_ff: 8192,
            n_heads: 32,
            n_kv_heads: 8,
            vocab_size: 128_256,
            tied_output: true,
            ..base.clone()
        };
        let llama_8b = SyntheticSpec {
            n_layers: 32,
            d_model: 4096,
            d_ff: 14_336,
            n_heads: 32,
            n_kv_heads: 8,
            vocab_size: 128_256,
            tied_output: false,
            ..base.clone()
        };
        let q4km = |s: SyntheticSpec| SyntheticSpec {
            weight_type: DType::Q4K,
            embd_type: DType::Q4K,
            mix: WeightMix::Q4KM,
            ..s
        };
        match name {
            "smollm2" => Some(SyntheticSpec {
                n_layers: 30,
                d_model: 576,
                d_ff: 1536,
                n_heads: 9,
                n_kv_heads: 3,
                vocab_size: 49_152,
                weight_type: DType::Q4_1,
                embd_type: DType::Q8_0,
                tied_output: true,
                ..base
            }),
            "1b" | "1b-q4_k_m" => Some(q4km(llama_1b)),
            "8b" | "8b-q4_k_m" => Some(q4km(llama_8b)),
            "8b-bf16" => Some(SyntheticSpec {
                weight_type: DType::BF16,
                embd_type: DType::BF16,
                ..llama_8b
            }),
            _ => None,
        }
    }

    /// The type of the matrix `name` ("attn_v", "ffn_down", ...) of `layer`.
    fn layer_type(&self, name: &str, layer: usize) -> DType {
        let more_bits =
            matches!(name, "attn_v" | "ffn_down") && more_bits_layer(layer, self.n_layers);
        match self.mix {
            WeightMix::Q4KM if more_bits => DType::Q6K,
            _ => self.weight_type,
        }
    }

    /// The type of the untied output matrix.
    fn output_type(&self) -> DType {
        match self.mix {
            WeightMix::Q4KM => DType::Q6K,
            WeightMix::Uniform => self.embd_type,
        }
    }
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            arch: "llama".into(),
            n_layers: 2,
            d_model: 64,
            d_ff: 96,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 80,
            context_length: 256,
            weight_type: DType::Q8_0,
            embd_type: DType::Q8_0,
            tied_output: true,
            mix: WeightMix::Uniform,
            seed: 1,
        }
    }
}

impl SyntheticSpec {
    /// A GGUF writer holding the model's metadata and random tensors.
    pub fn writer(&self) -> GgufWriter {
        let mut rng = TestRng::new(self.seed);
        let mut w = GgufWriter::new();
        let a = &self.arch;
        let u32v = |v: usize| Value::U32(v as u32);
        w.set("general.architecture", Value::String(a.clone()));
        w.set("general.name", Value::String(format!("synthetic {a}")));
        w.set(format!("{a}.block_count"), u32v(self.n_layers));
        w.set(format!("{a}.context_length"), u32v(self.context_length));
        w.set(format!("{a}.embedding_length"), u32v(self.d_model));
        w.set(format!("{a}.feed_forward_length"), u32v(self.d_ff));
        w.set(format!("{a}.attention.head_count"), u32v(self.n_heads));
        w.set(
            format!("{a}.attention.head_count_kv"),
            u32v(self.n_kv_heads),
        );
        w.set(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        );
        w.set(format!("{a}.rope.freq_base"), Value::F32(10_000.0));
        let head_dim = self.d_model / self.n_heads;
        let (d, q, kv, ff) = (
            self.d_model,
            self.n_heads * head_dim,
            self.n_kv_heads * head_dim,
            self.d_ff,
        );
        let mut add = |name: String, dtype: DType, n_in: usize, n_out: usize, rng: &mut TestRng| {
            let t = random_weight(rng, dtype, n_in, n_out);
            let dims: Vec<u64> = if n_out == 1 {
                vec![n_in as u64]
            } else {
                vec![n_in as u64, n_out as u64]
            };
            if let Err(e) = w.add_tensor(name.clone(), dims, dtype, t.bytes().to_vec()) {
                panic!("synthetic tensor {name}: {e}");
            }
        };
        add(
            "token_embd.weight".into(),
            self.embd_type,
            d,
            self.vocab_size,
            &mut rng,
        );
        add("output_norm.weight".into(), DType::F32, d, 1, &mut rng);
        if !self.tied_output {
            add(
                "output.weight".into(),
                self.output_type(),
                d,
                self.vocab_size,
                &mut rng,
            );
        }
        for i in 0..self.n_layers {
            let n = |t: &str| format!("blk.{i}.{t}");
            let wt = |t: &str| self.layer_type(t, i);
            add(n("attn_norm.weight"), DType::F32, d, 1, &mut rng);
            add(n("attn_q.weight"), wt("attn_q"), d, q, &mut rng);
            add(n("attn_k.weight"), wt("attn_k"), d, kv, &mut rng);
            add(n("attn_v.weight"), wt("attn_v"), d, kv, &mut rng);
            if self.arch == "qwen2" {
                add(n("attn_q.bias"), DType::F32, q, 1, &mut rng);
                add(n("attn_k.bias"), DType::F32, kv, 1, &mut rng);
                add(n("attn_v.bias"), DType::F32, kv, 1, &mut rng);
            }
            add(n("attn_output.weight"), wt("attn_output"), q, d, &mut rng);
            add(n("ffn_norm.weight"), DType::F32, d, 1, &mut rng);
            add(n("ffn_gate.weight"), wt("ffn_gate"), d, ff, &mut rng);
            add(n("ffn_up.weight"), wt("ffn_up"), d, ff, &mut rng);
            add(n("ffn_down.weight"), wt("ffn_down"), ff, d, &mut rng);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_mix_gives_more_bits_to_about_half_the_layers() {
        let spec = SyntheticSpec {
            n_layers: 32,
            weight_type: DType::Q4K,
            embd_type: DType::Q4K,
            mix: WeightMix::Q4KM,
            ..SyntheticSpec::default()
        };
        let more: Vec<usize> = (0..32).filter(|&i| more_bits_layer(i, 32)).collect();
        // First and last eighth, then every third layer from the 4th.
        assert_eq!(
            more,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        assert_eq!(spec.layer_type("attn_v", 0), DType::Q6K);
        assert_eq!(spec.layer_type("ffn_down", 6), DType::Q6K);
        assert_eq!(spec.layer_type("ffn_down", 7), DType::Q4K);
        assert_eq!(spec.layer_type("attn_q", 0), DType::Q4K);
        assert_eq!(spec.output_type(), DType::Q6K);
        let uniform = SyntheticSpec::default();
        assert_eq!(uniform.layer_type("attn_v", 0), uniform.weight_type);
    }

    #[test]
    fn presets_are_known_shapes() {
        for name in PRESETS {
            let spec = SyntheticSpec::preset(name).unwrap();
            assert_eq!(spec.d_model % spec.n_heads, 0, "{name}");
        }
        assert!(SyntheticSpec::preset("70b").is_none());
        let bf16 = SyntheticSpec::preset("8b-bf16").unwrap();
        assert_eq!((bf16.weight_type, bf16.tied_output), (DType::BF16, false));
    }
}
