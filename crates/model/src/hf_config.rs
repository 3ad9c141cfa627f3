//! [`ModelConfig`] from an HF `config.json`, in both the transformers 4
//! spelling (`rope_theta`, `rope_scaling`, `rope_local_base_freq`,
//! `sliding_window_pattern`) and the transformers 5 one (`rope_parameters`,
//! possibly per layer type, and `layer_types`).

use serde_json::{Map, Value};
use smelt_backend::RopeStyle;

use crate::config::{
    GEMMA3_LOCAL_ROPE_BASE, GEMMA3_SLIDING_PATTERN, MAX_DIM, MAX_LAYERS, sliding_by_pattern,
};
use crate::{Arch, FfnActivation, Llama3Rope, ModelConfig, ModelError};

/// Reads typed values of one JSON object, with errors naming the key.
struct Keys<'a>(&'a Map<String, Value>);

fn bad(key: &str, value: &Value, reason: impl Into<String>) -> ModelError {
    ModelError::BadValue {
        key: format!("config.json {key}"),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Keys<'_> {
    /// A present, non-null value.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str, max: u64) -> Result<Option<usize>, ModelError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(n) if n >= 1 && n <= max => Ok(Some(n as usize)),
            _ => Err(bad(key, v, format!("expected an integer from 1 to {max}"))),
        }
    }

    fn usize(&self, key: &str, max: u64) -> Result<usize, ModelError> {
        self.usize_opt(key, max)?
            .ok_or_else(|| ModelError::MissingKey(format!("config.json {key}")))
    }

    fn f32_opt(&self, key: &str) -> Result<Option<f32>, ModelError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
            _ => Err(bad(key, v, "expected a positive finite number")),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(key, v, "expected true or false")),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&str>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| bad(key, v, "expected a string")),
        }
    }

    fn object(&self, key: &str) -> Result<Option<Keys<'_>>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_object()
                .map(|o| Some(Keys(o)))
                .ok_or_else(|| bad(key, v, "expected an object")),
        }
    }
}

/// The RoPE settings of one kind of layer.
struct Rope {
    theta: Option<f32>,
    freq_scale: f32,
    llama3: Option<Llama3Rope>,
    partial: Option<f32>,
}

/// Reads a rope parameter object (`rope_parameters[...]` or the legacy
/// `rope_scaling`, whose theta lives at the top level). `what` names it.
fn rope_of(p: &Keys<'_>, what: &str) -> Result<Rope, ModelError> {
    let kind = match p.str_opt("rope_type")? {
        Some(t) => Some(t),
        None => p.str_opt("type")?,
    };
    let key = |k: &str| format!("{what}.{k}");
    let factor = |p: &Keys<'_>| -> Result<f32, ModelError> {
        p.f32_opt("factor")?
            .ok_or_else(|| ModelError::MissingKey(format!("config.json {}", key("factor"))))
    };
    let mut rope = Rope {
        theta: p.f32_opt("rope_theta")?,
        freq_scale: 1.0,
        llama3: None,
        partial: p.f32_opt("partial_rotary_factor")?,
    };
    match kind {
        None | Some("default") => {}
        Some("linear") => rope.freq_scale = 1.0 / factor(p)?,
        Some("llama3") => {
            let need = |k: &str| -> Result<f32, ModelError> {
                p.f32_opt(k)?
                    .ok_or_else(|| ModelError::MissingKey(format!("config.json {}", key(k))))
            };
            let l3 = Llama3Rope {
                factor: factor(p)?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_context: need("original_max_position_embeddings")?,
            };
            if l3.high_freq_factor <= l3.low_freq_factor {
                return Err(ModelError::BadValue {
                    key: format!("config.json {}", key("high_freq_factor")),
                    value: l3.high_freq_factor.to_string(),
                    reason: "must exceed low_freq_factor".into(),
                });
            }
            rope.llama3 = Some(l3);
        }
        Some(other) => {
            let hint = match other {
                "longrope" | "su" => " (Phi-3 LongRoPE is not supported)",
                _ => "",
            };
            return Err(ModelError::BadValue {
                key: format!("config.json {}", key("rope_type")),
                value: other.to_string(),
                reason: format!("supported RoPE types are default, linear and llama3{hint}"),
            });
        }
    }
    Ok(rope)
}

impl ModelConfig {
    /// Reads an HF `config.json`; also returns whether the output matrix
    /// is tied to the embeddings (`tie_word_embeddings`).
    pub fn from_hf_json(json: &Value) -> Result<(ModelConfig, bool), ModelError> {
        let root = json.as_object().ok_or_else(|| ModelError::BadValue {
            key: "config.json".into(),
            value: "(not an object)".into(),
            reason: "expected a JSON object".into(),
        })?;
        let k = Keys(root);
        let model_type = k
            .str_opt("model_type")?
            .ok_or_else(|| ModelError::MissingKey("config.json model_type".into()))?;
        let arch = match model_type {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3_text" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            "gemma3" => {
                return Err(ModelError::BadValue {
                    key: "config.json model_type".into(),
                    value: "gemma3".into(),
                    reason: "the multimodal Gemma 3 checkpoint is not supported; use a text-only (gemma3_text) one".into(),
                });
            }
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        };
        let gemma = arch == Arch::Gemma3;

        let n_layers = k.usize("num_hidden_layers", MAX_LAYERS)?;
        let d_model = k.usize("hidden_size", MAX_DIM)?;
        let d_ff = k.usize("intermediate_size", MAX_DIM)?;
        let n_heads = k.usize("num_attention_heads", MAX_DIM)?;
        let n_kv_heads = k
            .usize_opt("num_key_value_heads", MAX_DIM)?
            .unwrap_or(n_heads);
        let head_dim = k
            .usize_opt("head_dim", MAX_DIM)?
            .unwrap_or(d_model / n_heads);
        let vocab_size = k.usize("vocab_size", MAX_DIM * 4)?;
        let context_length = k
            .usize_opt("max_position_embeddings", 1 << 24)?
            .unwrap_or(2048);
        let rms_eps = k.f32_opt("rms_norm_eps")?.unwrap_or(1e-6);
        let tied = k.bool_or("tie_word_embeddings", gemma)?;

        // Projections Smelt has no slot for are refused, not ignored.
        for key in ["attention_bias", "mlp_bias"] {
            if arch != Arch::Qwen2 && k.bool_or(key, false)? {
                return Err(bad(
                    key,
                    &Value::Bool(true),
                    "biases here are not supported",
                ));
            }
        }
        let act_key = if gemma && k.get("hidden_activation").is_some() {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let ffn_activation = match k.str_opt(act_key)? {
            None if gemma => FfnActivation::GeluTanh,
            None => FfnActivation::Silu,
            Some("silu" | "swish") => FfnActivation::Silu,
            Some("gelu_pytorch_tanh" | "gelu_tanh") => FfnActivation::GeluTanh,
            Some(other) => {
                return Err(bad(
                    act_key,
                    &Value::String(other.into()),
                    "supported activations are silu and gelu_pytorch_tanh",
                ));
            }
        };
        if let Some(v) = k.get("attn_logit_softcapping") {
            return Err(bad(
                "attn_logit_softcapping",
                v,
                "attention logit soft-capping (Gemma 2) is not supported",
            ));
        }

        // RoPE: transformers 5 `rope_parameters` (flat, or per layer type),
        // else transformers 4 `rope_theta` + `rope_scaling`.
        let params = k.object("rope_parameters")?;
        let per_type = params.as_ref().is_some_and(|p| {
            p.get("full_attention").is_some() || p.get("sliding_attention").is_some()
        });
        let (global, local_theta) = match &params {
            Some(p) if per_type => {
                let global = match p.object("full_attention")? {
                    Some(g) => rope_of(&g, "rope_parameters.full_attention")?,
                    None => rope_of(&Keys(&Map::new()), "rope_parameters.full_attention")?,
                };
                let local = match p.object("sliding_attention")? {
                    Some(l) => {
                        let r = rope_of(&l, "rope_parameters.sliding_attention")?;
                        if r.freq_scale != 1.0 || r.llama3.is_some() {
                            return Err(ModelError::BadValue {
                                key: "config.json rope_parameters.sliding_attention".into(),
                                value: "scaled".into(),
                                reason: "scaled RoPE in sliding-window layers is not supported"
                                    .into(),
                            });
                        }
                        r.theta
                    }
                    None => None,
                };
                (global, local)
            }
            Some(p) => (rope_of(p, "rope_parameters")?, None),
            None => {
                let mut r = match k.object("rope_scaling")? {
                    Some(s) => rope_of(&s, "rope_scaling")?,
                    None => rope_of(&Keys(&Map::new()), "rope_scaling")?,
                };
                r.theta = k.f32_opt("rope_theta")?;
                (r, None)
            }
        };
        let rope_base = global
            .theta
            .or(k.f32_opt("rope_theta")?)
            .unwrap_or(if gemma { 1_000_000.0 } else { 10_000.0 });
        let partial = global
            .partial
            .or(k.f32_opt("partial_rotary_factor")?)
            .unwrap_or(1.0);
        if partial > 1.0 {
            return Err(bad(
                "partial_rotary_factor",
                &Value::from(partial as f64),
                "must be at most 1",
            ));
        }
        let rope_dims = (head_dim as f64 * partial as f64) as usize;
        let rope_local_base = gemma.then(|| {
            local_theta
                .or(k.f32_opt("rope_local_base_freq").ok().flatten())
                .unwrap_or(GEMMA3_LOCAL_ROPE_BASE)
        });

        // Sliding windows: `layer_types` when given, else each family's rule.
        let window = k.usize_opt("sliding_window", 1 << 24)?;
        let sliding: Vec<bool> = match k.get("layer_types") {
            Some(types) => {
                let list = types
                    .as_array()
                    .filter(|l| l.len() == n_layers)
                    .ok_or_else(|| {
                        bad(
                            "layer_types",
                            types,
                            format!("expected {n_layers} layer types"),
                        )
                    })?;
                list.iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => Ok(false),
                        Some("sliding_attention") => Ok(true),
                        _ => Err(bad(
                            "layer_types",
                            t,
                            "expected full_attention or sliding_attention",
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            None => match (model_type, window) {
                (_, None) => vec![false; n_layers],
                ("gemma3_text", _) => {
                    let pattern = match k.usize_opt("sliding_window_pattern", MAX_LAYERS)? {
                        Some(p) => p,
                        None => k
                            .usize_opt("_sliding_window_pattern", MAX_LAYERS)?
                            .unwrap_or(GEMMA3_SLIDING_PATTERN),
                    };
                    sliding_by_pattern(n_layers, pattern)
                }
                ("mistral" | "phi3", _) => vec![true; n_layers],
                ("qwen2" | "qwen3", _) if k.bool_or("use_sliding_window", false)? => {
                    let from = k.usize_opt("max_window_layers", MAX_LAYERS)?.unwrap_or(0);
                    (0..n_layers).map(|i| i >= from).collect()
                }
                _ => vec![false; n_layers],
            },
        };
        if sliding.iter().any(|&s| s) && window.is_none() {
            return Err(ModelError::MissingKey("config.json sliding_window".into()));
        }
        let layer_windows = sliding
            .iter()
            .map(|&s| if s { window } else { None })
            .collect();

        // `x ** -0.5` in f64, as transformers computes its scaling.
        let attn_scale = match k.f32_opt("query_pre_attn_scalar")? {
            Some(s) if gemma => (1.0 / (s as f64).sqrt()) as f32,
            _ => (1.0 / (head_dim as f64).sqrt()) as f32,
        };
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
            // HF checkpoints keep rotate-half Q/K rows for every family.
            rope_style: RopeStyle::Neox,
            rope_base,
            rope_dims,
            rope_freq_scale: global.freq_scale,
            rope_llama3: global.llama3,
            rope_local_base,
            layer_windows,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            post_norms: gemma,
            ffn_activation,
            embed_scale: if gemma { (d_model as f32).sqrt() } else { 1.0 },
            attn_scale,
            final_logit_softcap: if gemma {
                k.f32_opt("final_logit_softcapping")?
            } else {
                None
            },
        };
        config.validate(&|key| {
            let hf = match key {
                "attention.head_count_kv" => "num_key_value_heads",
                "attention.key_length" => "head_dim",
                "rope.dimension_count" => "partial_rotary_factor",
                "attention.sliding_window" => "sliding_window",
                other => other,
            };
            format!("config.json {hf}")
        })?;
        Ok((config, tied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(ModelConfig, bool), ModelError> {
        ModelConfig::from_hf_json(&serde_json::from_str(s).expect("json"))
    }

    const BASE: &str = r#""hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100"#;

    #[test]
    fn gemma3_legacy_and_v5_spellings_agree() {
        let legacy = parse(&format!(
            r#"{{"model_type": "gemma3_text", {BASE}, "head_dim": 16, "query_pre_attn_scalar": 64,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 8,
            "sliding_window_pattern": 2, "rope_scaling": {{"rope_type": "linear", "factor": 8.0}}}}"#
        ))
        .expect("legacy");
        let v5 = parse(&format!(
            r#"{{"model_type": "gemma3_text", {BASE}, "head_dim": 16, "query_pre_attn_scalar": 64,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            "rope_parameters": {{"full_attention": {{"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}},
                                 "sliding_attention": {{"rope_type": "default", "rope_theta": 10000.0}}}}}}"#
        ))
        .expect("v5");
        assert_eq!(legacy, v5);
        let (c, tied) = v5;
        assert!(tied, "Gemma ties its embeddings by default");
        assert_eq!(c.layer_windows, vec![Some(8), None, Some(8), None]);
        assert_eq!(c.rope_freq_scale, 0.125);
        assert_eq!(c.rope_local_base, Some(10_000.0));
        assert_eq!(c.attn_scale, 0.125);
        assert_eq!(c.embed_scale, 8.0);
        assert!(c.qk_norm && c.post_norms);
        assert!(c.uses_local_rope(0) && !c.uses_local_rope(1));
    }

    #[test]
    fn llama3_scaling_and_partial_rotary_are_read() {
        let (c, tied) = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": 500000.0,
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .expect("llama3");
        assert!(!tied);
        assert_eq!(c.rope_base, 500_000.0);
        assert_eq!(c.rope_style, RopeStyle::Neox);
        assert!(c.rope_llama3.is_some());
        let (c, _) = parse(&format!(
            r#"{{"model_type": "phi3", {BASE},
            "rope_parameters": {{"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}}}}"#
        ))
        .expect("phi3");
        assert_eq!(c.rope_dims, 12);
    }

    #[test]
    fn unsupported_settings_are_refused_by_name() {
        for (json, want) in [
            (r#""model_type": "gpt2""#, "gpt2"),
            (
                r#""model_type": "phi3", "rope_scaling": {"type": "longrope", "factor": 2.0}"#,
                "LongRoPE",
            ),
            (
                r#""model_type": "llama", "hidden_act": "gelu""#,
                "hidden_act",
            ),
            (
                r#""model_type": "llama", "attention_bias": true"#,
                "attention_bias",
            ),
            (
                r#""model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#,
                "yarn",
            ),
            (
                r#""model_type": "mistral", "layer_types": ["full_attention"]"#,
                "layer_types",
            ),
        ] {
            match parse(&format!("{{{json}, {BASE}}}")) {
                Err(e) => assert!(e.to_string().contains(want), "{e} lacks {want}"),
                Ok(_) => panic!("accepted {json}"),
            }
        }
    }
}
