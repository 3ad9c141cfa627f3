//! A Hugging Face model directory as a [`TensorSource`]: `smelt convert
//! HF_DIR OUT.gguf`. Weights are read through smelt-model's safetensors
//! reader and GGUF name map ([`smelt_model::HfSource`]); the result is laid
//! out as llama.cpp's converter lays it out (facts of the format, not its
//! code):
//!
//! - `general.architecture` and the `<arch>.*` keys from
//!   [`ModelConfig::gguf_metadata`] (Mistral is written as `llama`);
//! - tensors under their GGUF names, in the checkpoint's order (shards by
//!   name, names sorted), Phi-3's fused `qkv_proj`/`gate_up_proj` kept fused
//!   as `attn_qkv`/`ffn_up`, a tied output matrix left out;
//! - llama-architecture Q/K rows permuted from HF's rotate-half order to
//!   interleaved RoPE pairs: per head, GGUF row `2i` is HF row `i` and row
//!   `2i + 1` is HF row `i + head_dim / 2`;
//! - Gemma norm weights stored as `w + 1` (its RMSNorm scales by `1 + w`);
//! - Llama 3 RoPE scaling as per-pair divisors in `rope_freqs.weight`;
//! - the tokenizer and chat template as `tokenizer.ggml.*` keys
//!   ([`gguf_tokenizer_metadata`]), so the file runs stand-alone.

use std::ops::Range;
use std::path::Path;

use smelt_backend::HostTensor;
use smelt_gguf::Value;
use smelt_model::{Arch, HfSource, ModelConfig, TensorSource as _};
use smelt_tensor::{DType, dequantize_row};
use smelt_text::hf::{HfTextConfig, TOKENIZER_JSON, gguf_tokenizer_metadata};

use crate::ConvertError;
use crate::source::{SourceTensor, TensorSource};

/// One output tensor: its bytes as the checkpoint stores them, and how its
/// rows are reordered.
struct Entry {
    data: HostTensor,
    /// `Some(head_dim)`: rows are permuted per head of this width.
    permute: Option<usize>,
}

/// An HF model directory, ready to convert.
pub struct HfDirSource {
    config: ModelConfig,
    metadata: Vec<(String, Value)>,
    tensors: Vec<SourceTensor>,
    entries: Vec<Entry>,
    notes: Vec<String>,
}

/// The HF row that GGUF row `row` of a permuted Q/K matrix comes from.
fn interleaved_source_row(row: usize, head_dim: usize) -> usize {
    let (head, j) = (row / head_dim, row % head_dim);
    head * head_dim + (j % 2) * (head_dim / 2) + j / 2
}

impl HfDirSource {
    /// Reads `dir`: `config.json`, the safetensors weights, and (if there)
    /// `tokenizer.json` with its companions.
    pub fn open(dir: &Path) -> Result<HfDirSource, ConvertError> {
        let model_err = |source| ConvertError::HfModel {
            dir: dir.to_path_buf(),
            source,
        };
        let (config, source) = HfSource::open_dir(dir).map_err(model_err)?;
        let mut metadata = config.gguf_metadata().map_err(model_err)?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        metadata.insert(1, ("general.name".into(), Value::String(name)));

        let mut notes = Vec::new();
        if dir.join(TOKENIZER_JSON).is_file() {
            let text = HfTextConfig::from_dir(dir).map_err(ConvertError::HfText)?;
            metadata.extend(gguf_tokenizer_metadata(&text).map_err(ConvertError::HfText)?);
            let n_tokens = text.tokenizer.vocab_size();
            if n_tokens > config.vocab_size {
                notes.push(format!(
                    "tokenizer.json has {n_tokens} tokens but the model only {}: \
                     the extra tokens have no embedding",
                    config.vocab_size
                ));
            }
        } else {
            notes.push(format!(
                "{} has no {TOKENIZER_JSON}: the GGUF gets no tokenizer and cannot run on its own",
                dir.display()
            ));
        }

        let mut tensors = Vec::new();
        let mut entries = Vec::new();
        if let Some(l3) = &config.rope_llama3 {
            let divisors = l3.freq_divisors(config.rope_base, config.rope_dims);
            let data = HostTensor::from_f32("rope_freqs.weight", &divisors, vec![divisors.len()])
                .map_err(|e| model_err(e.into()))?;
            push(&mut tensors, &mut entries, "rope_freqs.weight", data, None);
        }
        for name in source
            .gguf_tensor_names(config.n_layers)
            .map_err(model_err)?
        {
            let data = source
                .tensor(&name)
                .map_err(model_err)?
                .ok_or_else(|| model_err(smelt_model::ModelError::MissingTensor(name.clone())))?;
            let permute = (config.arch == Arch::Llama
                && (name.ends_with(".attn_q.weight") || name.ends_with(".attn_k.weight")))
            .then_some(config.head_dim);
            if let Some(hd) = permute
                && (data.dims().len() != 2 || !data.n_rows().is_multiple_of(hd))
            {
                return Err(model_err(smelt_model::ModelError::BadShape {
                    name: source.describe(&name),
                    found: data.dims().iter().map(|&d| d as u64).collect(),
                    expected: vec![config.d_model as u64, config.q_dim() as u64],
                }));
            }
            push(&mut tensors, &mut entries, &name, data, permute);
        }
        Ok(HfDirSource {
            config,
            metadata,
            tensors,
            entries,
            notes,
        })
    }

    /// The model's config as read from `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Things the user should know about the conversion (no tokenizer, ...).
    /// Whether the directory had a `tokenizer.json` (the output then carries
    /// the tokenizer and chat template as GGUF metadata).
    pub fn has_tokenizer(&self) -> bool {
        self.metadata
            .iter()
            .any(|(k, _)| k == "tokenizer.ggml.model")
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

fn push(
    tensors: &mut Vec<SourceTensor>,
    entries: &mut Vec<Entry>,
    name: &str,
    data: HostTensor,
    permute: Option<usize>,
) {
    tensors.push(SourceTensor {
        name: name.to_string(),
        dims: data.dims().iter().map(|&d| d as u64).collect(),
        dtype: data.dtype(),
    });
    entries.push(Entry { data, permute });
}

impl TensorSource for HfDirSource {
    fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn read_rows(
        &self,
        index: usize,
        rows: Range<u64>,
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError> {
        let entry = self
            .entries
            .get(index)
            .ok_or(ConvertError::NoSuchTensor(index))?;
        let t = &entry.data;
        let bad_range = || ConvertError::RowRange {
            tensor: self.tensors[index].name.clone(),
            rows: rows.clone(),
            n_rows: t.n_rows() as u64,
        };
        let start = usize::try_from(rows.start).map_err(|_| bad_range())?;
        let end = usize::try_from(rows.end).map_err(|_| bad_range())?;
        if start > end || end > t.n_rows() {
            return Err(bad_range());
        }
        let row_len = t.row_len();
        let first = out.len();
        out.resize(first + (end - start) * row_len, 0.0);
        for (r, dst) in (start..end).zip(out[first..].chunks_exact_mut(row_len.max(1))) {
            let src = match entry.permute {
                Some(hd) => interleaved_source_row(r, hd),
                None => r,
            };
            dequantize_row(t.dtype(), t.row(src), dst);
        }
        Ok(())
    }

    fn raw_bytes(&self, index: usize, dtype: DType) -> Option<&[u8]> {
        let entry = self.entries.get(index)?;
        (entry.permute.is_none() && entry.data.dtype() == dtype).then(|| entry.data.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::interleaved_source_row;

    #[test]
    fn permutation_pairs_each_half_of_a_head() {
        // Two heads of 6: GGUF rows take HF rows 0,3,1,4,2,5 then 6,9,7,10,8,11.
        let rows: Vec<usize> = (0..12).map(|r| interleaved_source_row(r, 6)).collect();
        assert_eq!(rows, [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]);
    }
}
