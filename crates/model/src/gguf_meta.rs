//! The inverse of [`ModelConfig::from_gguf`]: the `general.architecture` and
//! `<arch>.*` metadata a GGUF file needs so that reading it back gives the
//! same model, written with llama.cpp's keys (`smelt convert HF_DIR`).
//!
//! Two settings live outside the metadata, as llama.cpp's converter stores
//! them: Llama 3 RoPE scaling as per-pair divisors in `rope_freqs.weight`
//! ([`Llama3Rope::freq_divisors`]), and llama-architecture Q/K rows permuted
//! to interleaved RoPE pairs (the converter's job; GGUF `llama` files are
//! read with interleaved RoPE).

use smelt_gguf::Value;

use crate::config::{GEMMA3_LOCAL_ROPE_BASE, sliding_by_pattern};
use crate::{Arch, FfnActivation, Llama3Rope, ModelConfig, ModelError};

impl Llama3Rope {
    /// What each of the `n_rot / 2` RoPE frequencies is divided by, as
    /// `rope_freqs.weight` stores it: 1 for short wavelengths, `factor` for
    /// long ones, `1 / ((1 - s) / factor + s)` between (Llama 3.1's rule).
    pub fn freq_divisors(&self, base: f32, n_rot: usize) -> Vec<f32> {
        let orig = self.original_context as f64;
        let (low, high) = (self.low_freq_factor as f64, self.high_freq_factor as f64);
        let factor = self.factor as f64;
        (0..n_rot / 2)
            .map(|i| {
                let f = 1.0 / (base as f64).powf((2 * i) as f64 / n_rot as f64);
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let div = if wavelen < orig / high {
                    1.0
                } else if wavelen > orig / low {
                    factor
                } else {
                    let smooth = (orig / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                div as f32
            })
            .collect()
    }
}

impl ModelConfig {
    /// The GGUF metadata of this model: `general.architecture` and the
    /// `<arch>.*` keys [`ModelConfig::from_gguf`] reads, so that it reads
    /// them back as this config (with interleaved RoPE for `llama`, whose
    /// Q/K rows the writer must permute, and Llama 3 scaling moved to
    /// `rope_freqs.weight`). A setting GGUF cannot express is an error
    /// naming it rather than a file that runs differently.
    pub fn gguf_metadata(&self) -> Result<Vec<(String, Value)>, ModelError> {
        let a = self.arch.name();
        let unsupported = |key: &str, value: String, reason: &str| ModelError::BadValue {
            key: key.to_string(),
            value,
            reason: format!("{reason}; a {a} GGUF file cannot say so"),
        };
        let gemma = self.arch == Arch::Gemma3;
        // What the GGUF reader derives from the architecture must hold.
        let activation = if gemma {
            FfnActivation::GeluTanh
        } else {
            FfnActivation::Silu
        };
        if self.ffn_activation != activation {
            return Err(unsupported(
                "ffn activation",
                format!("{:?}", self.ffn_activation),
                "this family's GGUF files imply the other activation",
            ));
        }
        let qk_norm = matches!(self.arch, Arch::Qwen3 | Arch::Gemma3);
        let embed_scale = if gemma {
            (self.d_model as f32).sqrt()
        } else {
            1.0
        };
        if self.qk_norm != qk_norm || self.post_norms != gemma || self.embed_scale != embed_scale {
            return Err(unsupported(
                "norms",
                format!("qk_norm {}, post_norms {}", self.qk_norm, self.post_norms),
                "this family's GGUF files imply other norms",
            ));
        }
        if self.rope_local_base != gemma.then_some(GEMMA3_LOCAL_ROPE_BASE) {
            return Err(unsupported(
                "rope_local_base_freq",
                format!("{:?}", self.rope_local_base),
                "sliding-window layers use RoPE base 10000 in GGUF",
            ));
        }

        let mut meta: Vec<(String, Value)> = Vec::new();
        let mut set = |key: &str, value: Value| meta.push((format!("{a}.{key}"), value));
        let u32_of = |key: &str, n: usize| {
            u32::try_from(n)
                .map(Value::U32)
                .map_err(|_| unsupported(key, n.to_string(), "too large"))
        };
        set(
            "context_length",
            u32_of("context_length", self.context_length)?,
        );
        set(
            "embedding_length",
            u32_of("embedding_length", self.d_model)?,
        );
        set(
            "feed_forward_length",
            u32_of("feed_forward_length", self.d_ff)?,
        );
        set("block_count", u32_of("block_count", self.n_layers)?);
        set("attention.head_count", u32_of("head_count", self.n_heads)?);
        set(
            "attention.head_count_kv",
            u32_of("head_count_kv", self.n_kv_heads)?,
        );
        set("attention.key_length", u32_of("key_length", self.head_dim)?);
        set(
            "attention.value_length",
            u32_of("value_length", self.head_dim)?,
        );
        set("attention.layer_norm_rms_epsilon", Value::F32(self.rms_eps));
        set("rope.freq_base", Value::F32(self.rope_base));
        set(
            "rope.dimension_count",
            u32_of("rope.dimension_count", self.rope_dims)?,
        );
        if self.rope_freq_scale != 1.0 {
            set("rope.scaling.type", Value::String("linear".into()));
            set(
                "rope.scaling.factor",
                Value::F32(1.0 / self.rope_freq_scale),
            );
        }

        // Sliding windows: one window size; on every layer, or (Gemma 3)
        // on all but every `pattern`-th.
        let windows: Vec<usize> = self.layer_windows.iter().flatten().copied().collect();
        if let Some(&window) = windows.first() {
            if windows.iter().any(|&w| w != window) {
                return Err(unsupported(
                    "sliding_window",
                    format!("{windows:?}"),
                    "layers have different window sizes",
                ));
            }
            let sliding: Vec<bool> = self.layer_windows.iter().map(Option::is_some).collect();
            set(
                "attention.sliding_window",
                u32_of("sliding_window", window)?,
            );
            if gemma {
                let pattern = (1..=self.n_layers + 1)
                    .find(|&p| sliding_by_pattern(self.n_layers, p) == sliding)
                    .ok_or_else(|| {
                        unsupported(
                            "layer_types",
                            format!("{sliding:?}"),
                            "sliding layers do not follow a every-Nth-is-global pattern",
                        )
                    })?;
                set(
                    "attention.sliding_window_pattern",
                    u32_of("sliding_window_pattern", pattern)?,
                );
            } else if sliding.contains(&false) {
                return Err(unsupported(
                    "sliding_window",
                    format!("{sliding:?}"),
                    "only some layers use the sliding window (max_window_layers)",
                ));
            }
        }
        let default_scale = (1.0 / (self.head_dim as f64).sqrt()) as f32;
        if self.attn_scale != default_scale {
            set("attention.scale", Value::F32(self.attn_scale));
        }
        if let Some(cap) = self.final_logit_softcap {
            set("final_logit_softcapping", Value::F32(cap));
        }
        meta.insert(
            0,
            ("general.architecture".into(), Value::String(a.to_string())),
        );
        Ok(meta)
    }
}
