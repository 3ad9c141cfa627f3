//! Architecture as data: the hyper-parameters and switches of one transformer,
//! read from GGUF metadata (`<arch>.block_count`, `<arch>.rope.freq_base`, ...).

use smelt_backend::RopeStyle;
use smelt_gguf::GgufFile;

use crate::ModelError;

/// The architecture families Smelt runs, as `general.architecture` names them.
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "qwen2"];

/// A supported architecture family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama, SmolLM, Mistral-as-llama: RMSNorm, SwiGLU, interleaved RoPE.
    Llama,
    /// Qwen2 / Qwen2.5: Llama plus Q/K/V biases and NeoX RoPE.
    Qwen2,
}

impl Arch {
    /// The `general.architecture` string, also the metadata key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
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
    pub rope_style: RopeStyle,
    pub rope_base: f32,
    /// Leading values of each head that RoPE rotates.
    pub rope_dims: usize,
    /// Linear position scaling (1 / factor), 1.0 when unscaled.
    pub rope_freq_scale: f32,
}

/// Upper bounds that keep sizes computed from a file sane.
const MAX_DIM: u64 = 1 << 20;
const MAX_LAYERS: u64 = 4096;

impl ModelConfig {
    /// Reads and validates the config of a GGUF model.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch_name = file
            .get_str("general.architecture")
            .ok_or_else(|| ModelError::MissingKey("general.architecture".into()))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        };
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
        let n_layers = req("block_count", MAX_LAYERS)?;
        let d_model = req("embedding_length", MAX_DIM)?;
        let d_ff = req("feed_forward_length", MAX_DIM)?;
        let n_heads = req("attention.head_count", MAX_DIM)?;
        let n_kv_heads = opt("attention.head_count_kv", MAX_DIM)?.unwrap_or(n_heads);
        let head_dim = opt("attention.key_length", MAX_DIM)?.unwrap_or(d_model / n_heads);
        let bad = |k: &str, v: String, reason: &str| ModelError::BadValue {
            key: key(k),
            value: v,
            reason: reason.to_string(),
        };
        if n_heads % n_kv_heads != 0 {
            return Err(bad(
                "attention.head_count_kv",
                n_kv_heads.to_string(),
                &format!("must divide the head count {n_heads}"),
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(
                "attention.key_length",
                head_dim.to_string(),
                "must be even and nonzero",
            ));
        }
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
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(bad(
                "rope.dimension_count",
                rope_dims.to_string(),
                &format!("must be even and at most the head width {head_dim}"),
            ));
        }
        let context_length = opt("context_length", 1 << 24)?.unwrap_or(2048);
        let float = |k: &str, default: f32| -> Result<f32, ModelError> {
            match file.get(&key(k)) {
                None => Ok(default),
                Some(v) => match v.as_f32() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                    _ => Err(bad(
                        k,
                        format!("{v:?}"),
                        "expected a positive finite number",
                    )),
                },
            }
        };
        let rms_eps = float("attention.layer_norm_rms_epsilon", 1e-5)?;
        let rope_base = float("rope.freq_base", 10_000.0)?;
        let rope_freq_scale = match file.get_str(&key("rope.scaling.type")) {
            None | Some("none") => 1.0 / float("rope.scale_linear", 1.0)?,
            Some("linear") => 1.0 / float("rope.scaling.factor", 1.0)?,
            Some(other) => {
                return Err(bad(
                    "rope.scaling.type",
                    other.to_string(),
                    "only 'none' and 'linear' RoPE scaling are supported",
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
        let rope_style = match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 => RopeStyle::Neox,
        };
        Ok(ModelConfig {
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
            rope_style,
            rope_base,
            rope_dims,
            rope_freq_scale,
        })
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
