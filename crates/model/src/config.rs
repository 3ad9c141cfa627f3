//! Architecture as data: the hyper-parameters and switches of one transformer.
//!
//! Every supported family is a setting of the same [`ModelConfig`]; the
//! forward pass reads the switches, never the family name. GGUF metadata
//! (`<arch>.block_count`, ...) is read by [`ModelConfig::from_gguf`] here,
//! an HF `config.json` by `ModelConfig::from_hf_json` (hf_config.rs).

use smelt_backend::{Feature, RopeStyle};
use smelt_gguf::GgufFile;

use crate::ModelError;

/// The architecture families Smelt runs, as GGUF's `general.architecture`
/// names them (Mistral GGUFs say `llama`).
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "qwen2", "qwen3", "gemma3", "phi3"];

/// The HF `config.json` `model_type`s Smelt loads.
pub const SUPPORTED_HF_MODEL_TYPES: &[&str] =
    &["llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3"];

/// A supported architecture family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama, SmolLM, Mistral: RMSNorm, SwiGLU, RoPE.
    Llama,
    /// Qwen2 / Qwen2.5: Llama plus Q/K/V biases and NeoX RoPE.
    Qwen2,
    /// Qwen3: Qwen2 without biases, with per-head Q/K RMSNorm.
    Qwen3,
    /// Gemma 3: sandwich norms, GeGLU, scaled embeddings, Q/K norm,
    /// interleaved sliding-window and global layers.
    Gemma3,
    /// Phi-3: fused Q/K/V and gate/up projections.
    Phi3,
}

impl Arch {
    /// The `general.architecture` string, also the metadata key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }

    /// The family of a GGUF `general.architecture` name.
    pub fn from_gguf_name(name: &str) -> Result<Arch, ModelError> {
        Ok(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        })
    }
}

/// The feed-forward gate's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// `silu(gate) * up` (SwiGLU).
    Silu,
    /// `gelu_tanh(gate) * up` (Gemma's GeGLU).
    GeluTanh,
}

/// Llama 3's RoPE frequency scaling (HF `rope_type: "llama3"`). GGUF files
/// carry its result instead, as per-pair divisors in `rope_freqs.weight`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: f32,
}

impl Llama3Rope {
    /// The scaled inverse frequencies of the `n_rot / 2` pairs: long
    /// wavelengths are divided by `factor`, short ones kept, the band
    /// between interpolated smoothly (Llama 3.1's published rule).
    pub fn inv_freq(&self, base: f32, n_rot: usize) -> Vec<f32> {
        let low_wavelen = self.original_context as f64 / self.low_freq_factor as f64;
        let high_wavelen = self.original_context as f64 / self.high_freq_factor as f64;
        let factor = self.factor as f64;
        (0..n_rot / 2)
            .map(|i| {
                // The unscaled frequency as the reference rounds it (f32).
                let f = (1.0 / (base as f64).powf((2 * i) as f64 / n_rot as f64)) as f32 as f64;
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let scaled = if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth = (self.original_context as f64 / wavelen
                        - self.low_freq_factor as f64)
                        / (self.high_freq_factor as f64 - self.low_freq_factor as f64);
                    (1.0 - smooth) * f / factor + smooth * f
                };
                scaled as f32
            })
            .collect()
    }
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Hidden width of the feed-forward block.
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    pub rms_eps: f32,
    /// Pairing of RoPE: how the file stores Q/K rows (GGUF llama permutes
    /// to interleaved; HF checkpoints and other families are NeoX).
    pub rope_style: RopeStyle,
    /// RoPE base of the global (or all) layers.
    pub rope_base: f32,
    /// Leading values of each head that RoPE rotates (partial rotary).
    pub rope_dims: usize,
    /// Linear position scaling (1 / factor), 1.0 when unscaled.
    pub rope_freq_scale: f32,
    /// Llama 3 frequency scaling from an HF config.
    pub rope_llama3: Option<Llama3Rope>,
    /// RoPE base of the sliding-window layers when it differs from the
    /// global one (Gemma 3: 10000, unscaled).
    pub rope_local_base: Option<f32>,
    /// The attention window of each layer (None: global attention).
    pub layer_windows: Vec<Option<usize>>,
    /// Per-head RMSNorm of Q and K before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm of the attention and feed-forward outputs before they are
    /// added to the residual (Gemma's "sandwich" norms).
    pub post_norms: bool,
    pub ffn_activation: FfnActivation,
    /// Multiplier of the token embeddings (Gemma: sqrt(d_model)).
    pub embed_scale: f32,
    /// Multiplier of q·k (usually 1/sqrt(head_dim)).
    pub attn_scale: f32,
    /// `cap · tanh(logit / cap)` on the output logits, if set.
    pub final_logit_softcap: Option<f32>,
}

/// Upper bounds that keep sizes computed from a file sane.
pub(crate) const MAX_DIM: u64 = 1 << 20;
pub(crate) const MAX_LAYERS: u64 = 4096;

/// Gemma 3's default: every 6th layer global, the others sliding-window.
pub(crate) const GEMMA3_SLIDING_PATTERN: usize = 6;
/// RoPE base of Gemma 3's sliding-window layers.
pub(crate) const GEMMA3_LOCAL_ROPE_BASE: f32 = 10_000.0;

/// Which layers of `n_layers` are sliding-window when every `pattern`-th
/// one is global (HF `sliding_window_pattern`, llama.cpp's swa pattern).
pub(crate) fn sliding_by_pattern(n_layers: usize, pattern: usize) -> Vec<bool> {
    (0..n_layers)
        .map(|i| pattern != 0 && (i + 1) % pattern != 0)
        .collect()
}

impl ModelConfig {
    /// Reads and validates the config of a GGUF model.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch_name = file
            .get_str("general.architecture")
            .ok_or_else(|| ModelError::MissingKey("general.architecture".into()))?;
        let arch = Arch::from_gguf_name(arch_name)?;
        let a = arch.name();
        let key = |k: &str| format!("{a}.{k}");
        let req = |k: &str, max: u64| -> Result<usize, ModelError> {
            let name = key(k);
            let v = match file.get(&name) {
                None => return Err(ModelError::MissingKey(name)),
                Some(v) => v,
            };
            let n = v.as_u64().ok_or_else(|| ModelError::BadValue {
                key: name.clone(),
                value: format!("{v:?}"),
                reason: "expected a non-negative integer".into(),
            })?;
            if n == 0 || n > max {
                return Err(ModelError::BadValue {
                    key: name,
                    value: n.to_string(),
                    reason: format!("must be between 1 and {max}"),
                });
            }
            Ok(n as usize)
        };
        let opt = |k: &str, max: u64| -> Result<Option<usize>, ModelError> {
            if file.get(&key(k)).is_none() {
                Ok(None)
            } else {
                req(k, max).map(Some)
            }
        };
        let bad = |k: &str, v: String, reason: &str| ModelError::BadValue {
            key: key(k),
            value: v,
            reason: reason.to_string(),
        };
        let n_layers = req("block_count", MAX_LAYERS)?;
        // Weights of a block past the count mean the count is wrong (an
        // edited or mixed-up file): running fewer blocks than the file
        // holds would answer, wrongly, without a word.
        let block_of = |name: &str| -> Option<usize> {
            name.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
        };
        if let Some(last) = file
            .tensors()
            .iter()
            .filter_map(|t| block_of(&t.name))
            .max()
            && last >= n_layers
        {
            return Err(bad(
                "block_count",
                n_layers.to_string(),
                &format!("the file holds weights of block {last}"),
            ));
        }
        let d_model = req("embedding_length", MAX_DIM)?;
        let d_ff = req("feed_forward_length", MAX_DIM)?;
        let n_heads = req("attention.head_count", MAX_DIM)?;
        let n_kv_heads = opt("attention.head_count_kv", MAX_DIM)?.unwrap_or(n_heads);
        let head_dim = opt("attention.key_length", MAX_DIM)?.unwrap_or(d_model / n_heads);
        if let Some(v) = opt("attention.value_length", MAX_DIM)?
            && v != head_dim
        {
            return Err(bad(
                "attention.value_length",
                v.to_string(),
                "a value head width different from the key head width is not supported",
            ));
        }
        let rope_dims = opt("rope.dimension_count", MAX_DIM)?.unwrap_or(head_dim);
        let context_length = opt("context_length", 1 << 24)?.unwrap_or(2048);
        let float_opt = |k: &str| -> Result<Option<f32>, ModelError> {
            match file.get(&key(k)) {
                None => Ok(None),
                Some(v) => match v.as_f32() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
                    _ => Err(bad(
                        k,
                        format!("{v:?}"),
                        "expected a positive finite number",
                    )),
                },
            }
        };
        let float = |k: &str, default: f32| Ok::<f32, ModelError>(float_opt(k)?.unwrap_or(default));
        let rms_eps = float("attention.layer_norm_rms_epsilon", 1e-5)?;
        let rope_base = float("rope.freq_base", 10_000.0)?;
        let rope_freq_scale = match file.get_str(&key("rope.scaling.type")) {
            None | Some("none") => 1.0 / float("rope.scale_linear", 1.0)?,
            Some("linear") => 1.0 / float("rope.scaling.factor", 1.0)?,
            Some(other) => {
                return Err(bad(
                    "rope.scaling.type",
                    other.to_string(),
                    "only 'none' and 'linear' RoPE scaling are supported (Llama 3 scaling comes as rope_freqs.weight)",
                ));
            }
        };
        let vocab_size = match file.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 && t.dims[1] <= MAX_DIM * 4 => t.dims[1] as usize,
            Some(t) => {
                return Err(ModelError::BadShape {
                    name: "token_embd.weight".into(),
                    found: t.dims.clone(),
                    expected: vec![d_model as u64, 0],
                });
            }
            None => return Err(ModelError::MissingTensor("token_embd.weight".into())),
        };
        if arch == Arch::Phi3
            && ["rope_factors_long.weight", "rope_factors_short.weight"]
                .iter()
                .any(|t| file.tensor(t).is_some())
        {
            return Err(ModelError::BadValue {
                key: "rope_factors_long.weight".into(),
                value: "present".into(),
                reason: "Phi-3 LongRoPE ('su'/'longrope') scaling is not supported".into(),
            });
        }
        if let Some(cap) = float_opt("attn_logit_softcapping")? {
            return Err(bad(
                "attn_logit_softcapping",
                cap.to_string(),
                "attention logit soft-capping (Gemma 2) is not supported",
            ));
        }

        let window = opt("attention.sliding_window", 1 << 24)?;
        let sliding = match (arch, window) {
            (_, None) => vec![false; n_layers],
            (Arch::Gemma3, Some(_)) => {
                let pattern = opt("attention.sliding_window_pattern", MAX_LAYERS)?
                    .unwrap_or(GEMMA3_SLIDING_PATTERN);
                sliding_by_pattern(n_layers, pattern)
            }
            (_, Some(_)) => vec![true; n_layers],
        };
        let layer_windows = sliding
            .iter()
            .map(|&s| if s { window } else { None })
            .collect();
        let gemma = arch == Arch::Gemma3;
        let config = ModelConfig {
            arch,
            n_layers,
            d_model,
            d_ff,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length,
            rms_eps,
            // llama.cpp's converter permutes llama Q/K rows to interleaved
            // pairs; the other families keep HF's rotate-half order.
            rope_style: match arch {
                Arch::Llama => RopeStyle::Interleaved,
                _ => RopeStyle::Neox,
            },
            rope_base,
            rope_dims,
            rope_freq_scale,
            rope_llama3: None,
            rope_local_base: gemma.then_some(GEMMA3_LOCAL_ROPE_BASE),
            layer_windows,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            post_norms: gemma,
            ffn_activation: if gemma {
                FfnActivation::GeluTanh
            } else {
                FfnActivation::Silu
            },
            embed_scale: if gemma { (d_model as f32).sqrt() } else { 1.0 },
            attn_scale: float_opt("attention.scale")?
                .unwrap_or((1.0 / (head_dim as f64).sqrt()) as f32),
            final_logit_softcap: float_opt("final_logit_softcapping")?,
        };
        config.validate(&|k| key(k))?;
        Ok(config)
    }

    /// Checks the relations between the values (`key` names a value's key
    /// in the source, for messages).
    pub(crate) fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ModelError> {
        let bad = |k: &str, v: String, reason: String| ModelError::BadValue {
            key: key(k),
            value: v,
            reason,
        };
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(bad(
                "attention.head_count_kv",
                self.n_kv_heads.to_string(),
                format!("must divide the head count {}", self.n_heads),
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(bad(
                "attention.key_length",
                self.head_dim.to_string(),
                "must be even and nonzero".into(),
            ));
        }
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return Err(bad(
                "rope.dimension_count",
                self.rope_dims.to_string(),
                format!("must be even and at most the head width {}", self.head_dim),
            ));
        }
        if self.layer_windows.len() != self.n_layers {
            return Err(bad(
                "attention.sliding_window",
                format!("{} layer kinds", self.layer_windows.len()),
                format!("must name each of the {} layers", self.n_layers),
            ));
        }
        if self.layer_windows.contains(&Some(0)) {
            return Err(bad(
                "attention.sliding_window",
                "0".into(),
                "a window must hold at least one position".into(),
            ));
        }
        Ok(())
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Whether layer `i` uses the local (sliding-window) RoPE parameters.
    pub fn uses_local_rope(&self, layer: usize) -> bool {
        self.rope_local_base.is_some() && matches!(self.layer_windows.get(layer), Some(Some(_)))
    }

    /// The backend capabilities this model needs beyond the basic ops.
    pub fn required_features(&self) -> Vec<Feature> {
        let mut f = Vec::new();
        if self.qk_norm {
            f.push(Feature::QkNorm);
        }
        if self.ffn_activation == FfnActivation::GeluTanh {
            f.push(Feature::GeluTanhGate);
        }
        if self.layer_windows.iter().any(Option::is_some) {
            f.push(Feature::SlidingWindow);
        }
        if self.final_logit_softcap.is_some() {
            f.push(Feature::LogitSoftcap);
        }
        if (0..self.n_layers).any(|l| self.uses_local_rope(l)) {
            f.push(Feature::PerLayerRope);
        }
        f
    }
}
