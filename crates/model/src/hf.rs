//! HF model directories: `config.json` plus `model.safetensors`, or
//! `model.safetensors.index.json` and the shards its `weight_map` names.
//!
//! Tensors are found by their GGUF names through a fixed name map
//! (`blk.3.attn_q.weight` ↔ `model.layers.3.self_attn.q_proj.weight`) and
//! used in place: safetensors' row-major `[out, in]` is ggml's `[in, out]`.
//!
//! Two conventions differ from llama.cpp's GGUF files and are handled in
//! the config, not by rewriting weights:
//! - llama.cpp's converter permutes the Q/K rows of Llama-family models to
//!   interleaved RoPE pairs; HF checkpoints keep rotate-half order, so an HF
//!   Llama/Mistral is run with NeoX-style RoPE on the rows as stored.
//! - Gemma's RMSNorm multiplies by `1 + w`; llama.cpp stores `w + 1`, HF
//!   stores `w`. Here the (tiny, 1-D) Gemma norm weights are materialized
//!   as f32 `w + 1`; every matrix stays a view into the map.

use std::collections::HashMap;
use std::path::Path;

use smelt_backend::{HostTensor, dequantize_all};

use crate::safetensors::StFile;
use crate::source::TensorSource;
use crate::{Arch, ModelConfig, ModelError};

/// An HF safetensors directory as a tensor source.
pub struct HfSource {
    files: Vec<StFile>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
    arch: Arch,
    tied: bool,
}

/// The GGUF names of a layer's tensors, every family together ([`HfSource::hf_name`]
/// says which of them a family has, and under which HF name).
const LAYER_PARTS: &[&str] = &[
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_q.bias",
    "attn_k.bias",
    "attn_v.bias",
    "attn_qkv.weight",
    "attn_q_norm.weight",
    "attn_k_norm.weight",
    "attn_output.weight",
    "post_attention_norm.weight",
    "ffn_norm.weight",
    "post_ffw_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

/// The GGUF names of the tensors outside the layers.
const GLOBAL_TENSORS: &[&str] = &["token_embd.weight", "output_norm.weight", "output.weight"];

/// Reads `dir/config.json` and maps the weights.
pub(crate) fn open(dir: &Path) -> Result<(ModelConfig, HfSource), ModelError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| ModelError::BadFile {
        path: config_path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
        path: config_path.display().to_string(),
        reason: format!("not JSON: {e}"),
    })?;
    let (config, tied) = ModelConfig::from_hf_json(&json)?;
    let source = HfSource::open(dir, config.arch, tied)?;
    Ok((config, source))
}

impl HfSource {
    /// Reads `dir/config.json` into a [`ModelConfig`] and maps the weights
    /// of the directory.
    pub fn open_dir(dir: &Path) -> Result<(ModelConfig, HfSource), ModelError> {
        open(dir)
    }

    /// Maps the safetensors file(s) of `dir`.
    pub fn open(dir: &Path, arch: Arch, tied: bool) -> Result<HfSource, ModelError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut index = HashMap::new();
        if index_path.exists() {
            let bad = |reason: String| ModelError::BadFile {
                path: index_path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| bad(format!("cannot read: {e}")))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| bad("has no 'weight_map' object".into()))?;
            let mut shard_ids: HashMap<String, usize> = HashMap::new();
            for (tensor, shard) in map {
                let shard = shard
                    .as_str()
                    .ok_or_else(|| bad(format!("weight_map['{tensor}'] is not a file name")))?;
                // Shards live in the directory itself: no paths.
                if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                    return Err(bad(format!(
                        "shard name '{shard}' is not a plain file name"
                    )));
                }
                let id = match shard_ids.get(shard) {
                    Some(&id) => id,
                    None => {
                        files.push(StFile::open(&dir.join(shard))?);
                        shard_ids.insert(shard.to_string(), files.len() - 1);
                        files.len() - 1
                    }
                };
                if !files[id].entries.contains_key(tensor) {
                    return Err(bad(format!(
                        "weight_map puts '{tensor}' in {shard}, which has no such tensor"
                    )));
                }
                index.insert(tensor.clone(), id);
            }
        } else if single.exists() {
            let f = StFile::open(&single)?;
            index = f.entries.keys().map(|k| (k.clone(), 0)).collect();
            files.push(f);
        } else {
            return Err(ModelError::BadFile {
                path: dir.display().to_string(),
                reason: "has neither model.safetensors nor model.safetensors.index.json".into(),
            });
        }
        Ok(HfSource {
            files,
            index,
            arch,
            tied,
        })
    }

    /// The HF name of the tensor GGUF calls `name` (None: no counterpart,
    /// e.g. the output matrix of a model with tied embeddings).
    pub fn hf_name(&self, name: &str) -> Option<String> {
        let gemma = self.arch == Arch::Gemma3;
        match name {
            "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
            "output_norm.weight" => return Some("model.norm.weight".into()),
            "output.weight" => return (!self.tied).then(|| "lm_head.weight".into()),
            _ => {}
        }
        let rest = name.strip_prefix("blk.")?;
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let hf = match part {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_q.bias" => "self_attn.q_proj.bias",
            "attn_k.bias" => "self_attn.k_proj.bias",
            "attn_v.bias" => "self_attn.v_proj.bias",
            "attn_qkv.weight" => "self_attn.qkv_proj.weight",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "post_attention_norm.weight" if gemma => "post_attention_layernorm.weight",
            "ffn_norm.weight" if gemma => "pre_feedforward_layernorm.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "post_ffw_norm.weight" if gemma => "post_feedforward_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" if self.arch == Arch::Phi3 => "mlp.gate_up_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            _ => return None,
        };
        Some(format!("model.layers.{layer}.{hf}"))
    }
}

impl HfSource {
    /// Every tensor of the checkpoint as `(HF name, dtype, safetensors shape)`,
    /// sorted by name.
    pub fn hf_tensors(&self) -> Vec<(String, smelt_tensor::DType, Vec<usize>)> {
        let mut out: Vec<_> = self
            .files
            .iter()
            .flat_map(|f| f.entries.iter())
            .filter(|(name, _)| self.index.contains_key(*name))
            .map(|(name, e)| (name.clone(), e.dtype, e.shape.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// The GGUF names of the checkpoint's tensors, in the order llama.cpp's
    /// converter writes them: shard files by name, tensors by name within
    /// each. A tensor with no GGUF counterpart is an error naming it (a
    /// converter that dropped it would write a different model), except
    /// RoPE tables (`rotary_emb.inv_freq`) and a tied `lm_head.weight`.
    pub fn gguf_tensor_names(&self, n_layers: usize) -> Result<Vec<String>, ModelError> {
        let mut to_gguf: HashMap<String, String> = HashMap::new();
        let layer_names =
            (0..n_layers).flat_map(|i| LAYER_PARTS.iter().map(move |p| format!("blk.{i}.{p}")));
        for gguf in GLOBAL_TENSORS
            .iter()
            .map(|s| s.to_string())
            .chain(layer_names)
        {
            if let Some(hf) = self.hf_name(&gguf) {
                to_gguf.insert(hf, gguf);
            }
        }
        let mut order: Vec<(&str, &str)> = self
            .index
            .iter()
            .map(|(name, &f)| (self.files[f].path(), name.as_str()))
            .collect();
        order.sort_unstable();
        let mut out = Vec::with_capacity(order.len());
        for (path, hf) in order {
            match to_gguf.get(hf) {
                Some(gguf) => out.push(gguf.clone()),
                None if hf.ends_with("rotary_emb.inv_freq") => {}
                None if hf == "lm_head.weight" && self.tied => {}
                None => {
                    return Err(ModelError::BadFile {
                        path: path.to_string(),
                        reason: format!(
                            "tensor '{hf}' has no GGUF counterpart in a {} model \
                             (converting without it would change the model)",
                            self.arch.name()
                        ),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl TensorSource for HfSource {
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>, ModelError> {
        let Some(hf) = self.hf_name(name) else {
            return Ok(None);
        };
        let Some(&file) = self.index.get(&hf) else {
            return Ok(None);
        };
        let Some(t) = self.files[file].tensor(&hf)? else {
            return Ok(None);
        };
        if self.arch == Arch::Gemma3 && name.ends_with("norm.weight") && t.dims().len() == 1 {
            // Gemma's RMSNorm scales by (1 + w): store it as GGUF does.
            let plus_one: Vec<f32> = dequantize_all(&t).iter().map(|w| 1.0 + w).collect();
            return Ok(Some(HostTensor::from_f32(
                name,
                &plus_one,
                t.dims().to_vec(),
            )?));
        }
        Ok(Some(t))
    }

    fn output_required(&self) -> bool {
        !self.tied
    }

    fn describe(&self, name: &str) -> String {
        match self.hf_name(name) {
            Some(hf) => match self.index.get(&hf) {
                Some(&f) => format!("{hf} (in {})", self.files[f].path()),
                None => hf,
            },
            None => name.to_string(),
        }
    }
}
