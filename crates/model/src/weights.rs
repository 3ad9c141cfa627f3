//! Binds the tensors a [`ModelConfig`] needs, by GGUF name, from a
//! [`TensorSource`], checks their shapes, and places them on a backend. On
//! the CPU nothing is copied: each weight is a view into the file's memory
//! map (fused projections are split into views of their row ranges).

use smelt_backend::{Backend, HostTensor, dequantize_all};

use crate::source::TensorSource;
use crate::{Arch, ModelConfig, ModelError};

/// The weights of one transformer block.
pub struct LayerWeights<W> {
    pub attn_norm: W,
    pub wq: W,
    pub wk: W,
    pub wv: W,
    pub bq: Option<W>,
    pub bk: Option<W>,
    pub bv: Option<W>,
    /// Per-head RMSNorm weights of Q and K (one head wide), when the
    /// config has `qk_norm`.
    pub q_norm: Option<W>,
    pub k_norm: Option<W>,
    pub wo: W,
    /// RMSNorm of the attention output (config `post_norms`).
    pub post_attn_norm: Option<W>,
    pub ffn_norm: W,
    pub w_gate: W,
    pub w_up: W,
    pub w_down: W,
    /// RMSNorm of the feed-forward output (config `post_norms`).
    pub post_ffn_norm: Option<W>,
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

/// Looks up tensors in a source and checks their shapes.
struct Binder<'a> {
    source: &'a dyn TensorSource,
}

impl Binder<'_> {
    /// The tensor `name`, whose ggml dims must equal `expected`.
    fn get(&self, name: &str, expected: &[usize]) -> Result<HostTensor, ModelError> {
        self.opt(name, expected)?
            .ok_or_else(|| ModelError::MissingTensor(self.source.describe(name)))
    }

    fn opt(&self, name: &str, expected: &[usize]) -> Result<Option<HostTensor>, ModelError> {
        let Some(t) = self.source.tensor(name)? else {
            return Ok(None);
        };
        if t.dims() != expected {
            return Err(ModelError::BadShape {
                name: self.source.describe(name),
                found: t.dims().iter().map(|&d| d as u64).collect(),
                expected: expected.iter().map(|&d| d as u64).collect(),
            });
        }
        Ok(Some(t))
    }

    /// Splits a fused weight of `n_in`-wide rows into consecutive parts of
    /// `parts` rows each (views, no copy).
    fn split(
        &self,
        name: &str,
        n_in: usize,
        parts: &[usize],
    ) -> Result<Option<Vec<HostTensor>>, ModelError> {
        let total = parts.iter().sum();
        let Some(t) = self.opt(name, &[n_in, total])? else {
            return Ok(None);
        };
        let mut start = 0;
        let mut out = Vec::with_capacity(parts.len());
        for &n in parts {
            out.push(t.slice_rows(name, start..start + n)?);
            start += n;
        }
        Ok(Some(out))
    }
}

impl<W> Weights<W> {
    /// Binds every tensor of `config` in `source` and places it on `backend`.
    pub fn load<B: Backend<Weight = W>>(
        source: &dyn TensorSource,
        config: &ModelConfig,
        backend: &B,
    ) -> Result<Self, ModelError> {
        let c = config;
        let binder = Binder { source };
        let put =
            |name: &str, t: &HostTensor| -> Result<W, ModelError> { Ok(backend.place(name, t)?) };
        let place = |name: &str, dims: &[usize]| -> Result<W, ModelError> {
            put(name, &binder.get(name, dims)?)
        };
        let place_opt = |name: &str, dims: &[usize]| -> Result<Option<W>, ModelError> {
            match binder.opt(name, dims)? {
                Some(t) => Ok(Some(put(name, &t)?)),
                None => Ok(None),
            }
        };
        // A weight the config requires when `needed`, else absent.
        let place_if =
            |needed: bool, name: &str, dims: &[usize]| -> Result<Option<W>, ModelError> {
                if needed {
                    place(name, dims).map(Some)
                } else {
                    Ok(None)
                }
            };
        let (d, q, kv, ff, hd) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff, c.head_dim);
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |t: &str| format!("blk.{i}.{t}");
            let attn_norm = place(&n("attn_norm.weight"), &[d])?;
            // Phi-3 stores Q/K/V as one fused matrix and gate/up as one
            // `ffn_up` of 2 × d_ff rows (gate first).
            let fused_qkv = match c.arch {
                Arch::Phi3 => binder.split(&n("attn_qkv.weight"), d, &[q, kv, kv])?,
                _ => None,
            };
            let (wq, wk, wv) = match fused_qkv {
                Some(parts) => {
                    let name = n("attn_qkv.weight");
                    (
                        put(&name, &parts[0])?,
                        put(&name, &parts[1])?,
                        put(&name, &parts[2])?,
                    )
                }
                None => (
                    place(&n("attn_q.weight"), &[d, q])?,
                    place(&n("attn_k.weight"), &[d, kv])?,
                    place(&n("attn_v.weight"), &[d, kv])?,
                ),
            };
            let fused_gate_up = match c.arch {
                Arch::Phi3 if source.tensor(&n("ffn_gate.weight"))?.is_none() => {
                    binder.split(&n("ffn_up.weight"), d, &[ff, ff])?
                }
                _ => None,
            };
            let (w_gate, w_up) = match fused_gate_up {
                Some(parts) => {
                    let name = n("ffn_up.weight");
                    (put(&name, &parts[0])?, put(&name, &parts[1])?)
                }
                None => (
                    place(&n("ffn_gate.weight"), &[d, ff])?,
                    place(&n("ffn_up.weight"), &[d, ff])?,
                ),
            };
            layers.push(LayerWeights {
                attn_norm,
                wq,
                wk,
                wv,
                bq: place_opt(&n("attn_q.bias"), &[q])?,
                bk: place_opt(&n("attn_k.bias"), &[kv])?,
                bv: place_opt(&n("attn_v.bias"), &[kv])?,
                q_norm: place_if(c.qk_norm, &n("attn_q_norm.weight"), &[hd])?,
                k_norm: place_if(c.qk_norm, &n("attn_k_norm.weight"), &[hd])?,
                wo: place(&n("attn_output.weight"), &[q, d])?,
                post_attn_norm: place_if(c.post_norms, &n("post_attention_norm.weight"), &[d])?,
                ffn_norm: place(&n("ffn_norm.weight"), &[d])?,
                w_gate,
                w_up,
                w_down: place(&n("ffn_down.weight"), &[ff, d])?,
                post_ffn_norm: place_if(c.post_norms, &n("post_ffw_norm.weight"), &[d])?,
            });
        }
        let rope_freqs = binder
            .opt("rope_freqs.weight", &[c.rope_dims / 2])?
            .map(|t| dequantize_all(&t));
        Ok(Weights {
            token_embd: place("token_embd.weight", &[d, c.vocab_size])?,
            output_norm: place("output_norm.weight", &[d])?,
            output: if source.output_required() {
                Some(place("output.weight", &[d, c.vocab_size])?)
            } else {
                place_opt("output.weight", &[d, c.vocab_size])?
            },
            rope_freqs,
            layers,
        })
    }
}
