//! Binds the tensors a [`ModelConfig`] needs, by GGUF name, checks their
//! shapes, and places them on a backend. On the CPU nothing is copied: each
//! weight is a view into the file's memory map.

use std::sync::Arc;

use smelt_backend::{Backend, HostTensor, dequantize_all};
use smelt_gguf::GgufFile;

use crate::{ModelConfig, ModelError};

/// The weights of one transformer block.
pub struct LayerWeights<W> {
    pub attn_norm: W,
    pub wq: W,
    pub wk: W,
    pub wv: W,
    pub bq: Option<W>,
    pub bk: Option<W>,
    pub bv: Option<W>,
    pub wo: W,
    pub ffn_norm: W,
    pub w_gate: W,
    pub w_up: W,
    pub w_down: W,
}

/// All weights of a model, placed on a backend.
pub struct Weights<W> {
    pub token_embd: W,
    pub output_norm: W,
    /// The unembedding; `None` when tied to `token_embd`.
    pub output: Option<W>,
    /// Per-pair RoPE frequency divisors (`rope_freqs.weight`), if the file has them.
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights<W>>,
}

/// The model file's bytes, shared by every tensor view into them.
struct FileBytes(Arc<GgufFile>);

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Looks up tensors in one file and wraps them as host tensors.
struct Binder {
    file: Arc<GgufFile>,
    owner: Arc<FileBytes>,
}

impl Binder {
    /// The tensor `name`, whose ggml dims must equal `expected`.
    fn get(&self, name: &str, expected: &[usize]) -> Result<HostTensor, ModelError> {
        self.opt(name, expected)?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn opt(&self, name: &str, expected: &[usize]) -> Result<Option<HostTensor>, ModelError> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let expected_u64: Vec<u64> = expected.iter().map(|&d| d as u64).collect();
        if info.dims != expected_u64 {
            return Err(ModelError::BadShape {
                name: name.to_string(),
                found: info.dims.clone(),
                expected: expected_u64,
            });
        }
        let start = info.offset as usize;
        let owner: smelt_backend::SharedBytes = self.owner.clone();
        let t = HostTensor::new(
            name,
            owner,
            start..start + info.n_bytes as usize,
            info.dtype,
            expected.to_vec(),
        )?;
        Ok(Some(t))
    }
}

impl<W> Weights<W> {
    /// Binds every tensor of `config` in `file` and places it on `backend`.
    pub fn load<B: Backend<Weight = W>>(
        file: Arc<GgufFile>,
        config: &ModelConfig,
        backend: &B,
    ) -> Result<Self, ModelError> {
        let c = config;
        let binder = Binder {
            owner: Arc::new(FileBytes(file.clone())),
            file,
        };
        let place = |name: &str, dims: &[usize]| -> Result<W, ModelError> {
            Ok(backend.place(name, &binder.get(name, dims)?)?)
        };
        let place_opt = |name: &str, dims: &[usize]| -> Result<Option<W>, ModelError> {
            match binder.opt(name, dims)? {
                Some(t) => Ok(Some(backend.place(name, &t)?)),
                None => Ok(None),
            }
        };
        let (d, q, kv, ff) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |t: &str| format!("blk.{i}.{t}");
            layers.push(LayerWeights {
                attn_norm: place(&n("attn_norm.weight"), &[d])?,
                wq: place(&n("attn_q.weight"), &[d, q])?,
                wk: place(&n("attn_k.weight"), &[d, kv])?,
                wv: place(&n("attn_v.weight"), &[d, kv])?,
                bq: place_opt(&n("attn_q.bias"), &[q])?,
                bk: place_opt(&n("attn_k.bias"), &[kv])?,
                bv: place_opt(&n("attn_v.bias"), &[kv])?,
                wo: place(&n("attn_output.weight"), &[q, d])?,
                ffn_norm: place(&n("ffn_norm.weight"), &[d])?,
                w_gate: place(&n("ffn_gate.weight"), &[d, ff])?,
                w_up: place(&n("ffn_up.weight"), &[d, ff])?,
                w_down: place(&n("ffn_down.weight"), &[ff, d])?,
            });
        }
        let rope_freqs = binder
            .opt("rope_freqs.weight", &[c.rope_dims / 2])?
            .map(|t| dequantize_all(&t));
        Ok(Weights {
            token_embd: place("token_embd.weight", &[d, c.vocab_size])?,
            output_norm: place("output_norm.weight", &[d])?,
            output: place_opt("output.weight", &[d, c.vocab_size])?,
            rope_freqs,
            layers,
        })
    }
}
