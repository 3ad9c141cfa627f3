//! The forward pass: one batched step of the transformer, read top to bottom.

use std::path::Path;
use std::sync::{Arc, Mutex};

use smelt_backend::{
    AttnGeometry, AttnRow, Backend, HostBuf, KvLayout, KvType, KvWrite, QkvWeights, RopeParams,
};
use smelt_gguf::GgufFile;

use crate::source::{GgufSource, TensorSource};
use crate::{FfnActivation, ModelConfig, ModelError, Weights};

/// Positions per KV cache block.
pub const KV_BLOCK_SIZE: usize = 16;

/// One step's rows: row `r` is token `tokens[r]` at `positions[r]` of the
/// sequence whose KV blocks are `block_tables[r]`.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [u32],
    pub block_tables: &'a [&'a [u32]],
    /// Rows whose logits the caller wants, in the order they are returned.
    pub logits_rows: &'a [usize],
}

/// A loaded model on a backend.
pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub backend: B,
    weights: Weights<B::Weight>,
    /// RoPE of the global layers, and of the sliding-window layers when
    /// they differ (Gemma 3).
    rope_global: RopeParams,
    rope_local: Option<RopeParams>,
    /// The attention shape of each layer (the window differs per layer).
    geoms: Vec<AttnGeometry>,
    /// The activations of the last step, reused by the next step of the same
    /// batch size (every decode step): no allocation per token.
    scratch: Mutex<Option<Activations<B::Buf>>>,
}

/// The activation buffers of one step of `n` rows.
struct Activations<Buf> {
    n: usize,
    x: Buf,
    h: Buf,
    /// A second `d_model` scratch for the post-norms.
    h2: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    att: Buf,
    gate: Buf,
    up: Buf,
}

impl<Buf> Activations<Buf> {
    fn new<B: Backend<Buf = Buf>>(be: &B, c: &ModelConfig, n: usize) -> Self {
        Activations {
            n,
            x: be.alloc(n, c.d_model),
            h: be.alloc(n, c.d_model),
            h2: be.alloc(if c.post_norms { n } else { 0 }, c.d_model),
            q: be.alloc(n, c.q_dim()),
            k: be.alloc(n, c.kv_dim()),
            v: be.alloc(n, c.kv_dim()),
            att: be.alloc(n, c.q_dim()),
            gate: be.alloc(n, c.d_ff),
            up: be.alloc(n, c.d_ff),
        }
    }
}

impl<B: Backend> Model<B> {
    /// Reads the config of a GGUF file, binds and places every weight.
    pub fn load(file: Arc<GgufFile>, backend: B) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(&file)?;
        Self::from_source(config, &GgufSource::new(file), backend)
    }

    /// Loads an HF model directory: `config.json` and `model.safetensors`
    /// (or `model.safetensors.index.json` and its shards), memory-mapped;
    /// F32/F16/BF16 weights are used in place.
    pub fn load_hf(dir: &Path, backend: B) -> Result<Self, ModelError> {
        let (config, source) = crate::hf::open(dir)?;
        Self::from_source(config, &source, backend)
    }

    /// Checks that `backend` can run `config`, then binds and places the
    /// weights from `source`.
    pub fn from_source(
        config: ModelConfig,
        source: &dyn TensorSource,
        backend: B,
    ) -> Result<Self, ModelError> {
        if let Some(f) = config
            .required_features()
            .into_iter()
            .find(|&f| !backend.supports(f))
        {
            return Err(ModelError::Unsupported {
                backend: backend.name(),
                arch: config.arch.name(),
                feature: f.describe(),
            });
        }
        let weights = Weights::load(source, &config, &backend)?;
        let c = &config;
        let rope_global = match &c.rope_llama3 {
            Some(l3) => RopeParams::from_inv_freq(
                c.rope_style,
                c.head_dim,
                c.rope_dims,
                l3.inv_freq(c.rope_base, c.rope_dims),
            ),
            None => RopeParams::new(
                c.rope_style,
                c.head_dim,
                c.rope_dims,
                c.rope_base,
                c.rope_freq_scale,
                weights.rope_freqs.as_deref(),
            ),
        };
        let rope_local = c
            .rope_local_base
            .map(|base| RopeParams::new(c.rope_style, c.head_dim, c.rope_dims, base, 1.0, None));
        let geoms = c
            .layer_windows
            .iter()
            .map(|w| AttnGeometry {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                scale: c.attn_scale,
                window: w.map(|w| w.min(u32::MAX as usize) as u32),
            })
            .collect();
        Ok(Model {
            config,
            backend,
            weights,
            rope_global,
            rope_local,
            geoms,
            scratch: Mutex::new(None),
        })
    }

    /// The RoPE parameters of `layer`.
    fn rope(&self, layer: usize) -> &RopeParams {
        match &self.rope_local {
            Some(local) if self.config.uses_local_rope(layer) => local,
            _ => &self.rope_global,
        }
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Positions per KV block.
    pub fn kv_block_size(&self) -> usize {
        KV_BLOCK_SIZE
    }

    /// The layout of a KV pool of `n_blocks` blocks for every layer.
    pub fn kv_layout(&self, n_blocks: usize, dtype: KvType) -> KvLayout {
        KvLayout {
            n_layers: self.config.n_layers,
            n_blocks,
            block_size: KV_BLOCK_SIZE,
            n_kv_heads: self.config.n_kv_heads,
            head_dim: self.config.head_dim,
            dtype,
        }
    }

    /// A KV pool of `n_blocks` blocks for every layer.
    pub fn new_kv(&self, n_blocks: usize, dtype: KvType) -> Result<B::Kv, ModelError> {
        Ok(self.backend.alloc_kv(self.kv_layout(n_blocks, dtype))?)
    }

    fn check(&self, batch: &Batch<'_>) -> Result<(), ModelError> {
        let n = batch.tokens.len();
        let bad = |m: String| Err(ModelError::BadBatch(m));
        if n == 0 {
            return bad("no rows".into());
        }
        if batch.positions.len() != n || batch.block_tables.len() != n {
            return bad(format!(
                "{n} tokens but {} positions and {} block tables",
                batch.positions.len(),
                batch.block_tables.len()
            ));
        }
        if let Some(t) = batch
            .tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return bad(format!(
                "token id {t} is outside the vocabulary of {}",
                self.config.vocab_size
            ));
        }
        for (p, table) in batch.positions.iter().zip(batch.block_tables) {
            if *p as usize >= table.len() * KV_BLOCK_SIZE {
                return bad(format!(
                    "position {p} is past the sequence's {} KV blocks",
                    table.len()
                ));
            }
        }
        if let Some(r) = batch.logits_rows.iter().find(|&&r| r >= n) {
            return bad(format!("logits asked for row {r} of a {n}-row batch"));
        }
        Ok(())
    }

    /// Runs every row through the model, writing each row's K/V into `kv`,
    /// and returns the logits of `batch.logits_rows` (`len × vocab`).
    pub fn forward(&self, kv: &mut B::Kv, batch: &Batch<'_>) -> Result<HostBuf, ModelError> {
        let logits = self.run(kv, batch)?;
        let logits = match &logits {
            Some(l) => self.backend.download(l),
            None => HostBuf::zeros(0, self.config.vocab_size),
        };
        self.backend.finish()?;
        Ok(logits)
    }

    /// As [`Model::forward`], but returns only the greedy token (the argmax)
    /// of each of `batch.logits_rows`, picked where the logits are.
    pub fn forward_greedy(
        &self,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
    ) -> Result<Vec<u32>, ModelError> {
        let logits = self.run(kv, batch)?;
        let tokens = logits.map_or_else(Vec::new, |l| self.backend.argmax_rows(&l));
        self.backend.finish()?;
        Ok(tokens)
    }

    /// As [`Model::forward`], but returns only the `k` largest logits of
    /// each of `batch.logits_rows` with their token ids, largest first
    /// (`smelt_backend::top_k_sorted`), selected where the logits are:
    /// what top-k sampling needs, without copying the vocabulary.
    pub fn forward_top_k(
        &self,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, ModelError> {
        let logits = self.run(kv, batch)?;
        let top = logits.map_or_else(Vec::new, |l| self.backend.top_k_rows(&l, k));
        self.backend.finish()?;
        Ok(top)
    }

    /// The step itself; the logits stay on the backend (None if no row
    /// wants them).
    fn run(&self, kv: &mut B::Kv, batch: &Batch<'_>) -> Result<Option<B::Buf>, ModelError> {
        self.run_step(kv, batch, StepInput::Host)
    }

    /// [`Model::run`] with the step's input tokens from `input`.
    pub(crate) fn run_step(
        &self,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
        input: StepInput,
    ) -> Result<Option<B::Buf>, ModelError> {
        self.check(batch)?;
        let (c, w, be) = (&self.config, &self.weights, &self.backend);
        let n = batch.tokens.len();
        let slots: Vec<u32> = batch
            .positions
            .iter()
            .zip(batch.block_tables)
            .map(|(&p, t)| {
                let p = p as usize;
                (t[p / KV_BLOCK_SIZE] as usize * KV_BLOCK_SIZE + p % KV_BLOCK_SIZE) as u32
            })
            .collect();
        let rows: Vec<AttnRow<'_>> = batch
            .positions
            .iter()
            .zip(batch.block_tables)
            .map(|(&pos, &block_table)| AttnRow { pos, block_table })
            .collect();

        let reused = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut acts = reused
            .filter(|a| a.n == n)
            .unwrap_or_else(|| Activations::new(be, c, n));
        let a = &mut acts;

        be.begin_step(batch.logits_rows, n);
        match input {
            StepInput::Host => be.embed(&w.token_embd, batch.tokens, c.embed_scale, &mut a.x),
            StepInput::Chained => be.embed_chained(&w.token_embd, c.embed_scale, &mut a.x),
        }
        for (layer, l) in w.layers.iter().enumerate() {
            let (geom, rope) = (&self.geoms[layer], self.rope(layer));
            // Attention block: RMSNorm, Q/K/V (+ bias), (Q/K norm), RoPE and
            // K/V into the cache, attention, then the output projection
            // (post-normed where configured) added to x.
            let at = KvWrite {
                layer,
                positions: batch.positions,
                slots: &slots,
            };
            match (&l.q_norm, &l.k_norm) {
                (Some(q_norm), Some(k_norm)) => {
                    be.rms_norm(&a.x, &l.attn_norm, c.rms_eps, &mut a.h);
                    be.matmuls(
                        &a.h,
                        &mut [(&l.wq, &mut a.q), (&l.wk, &mut a.k), (&l.wv, &mut a.v)],
                    );
                    for (buf, bias) in [(&mut a.q, &l.bq), (&mut a.k, &l.bk), (&mut a.v, &l.bv)] {
                        if let Some(b) = bias {
                            be.add_bias(buf, b);
                        }
                    }
                    be.rms_norm_heads(&mut a.q, c.n_heads, q_norm, c.rms_eps);
                    be.rms_norm_heads(&mut a.k, c.n_kv_heads, k_norm, c.rms_eps);
                    be.rope(&mut a.q, c.n_heads, batch.positions, rope);
                    be.rope(&mut a.k, c.n_kv_heads, batch.positions, rope);
                    be.kv_store(kv, layer, &a.k, &a.v, &slots);
                }
                _ => {
                    let qkv = QkvWeights {
                        norm: &l.attn_norm,
                        q: &l.wq,
                        k: &l.wk,
                        v: &l.wv,
                        q_bias: l.bq.as_ref(),
                        k_bias: l.bk.as_ref(),
                        v_bias: l.bv.as_ref(),
                    };
                    let bufs = [&mut a.h, &mut a.q, &mut a.k, &mut a.v];
                    be.norm_qkv_rope_store(&a.x, &qkv, c.rms_eps, geom, rope, kv, &at, bufs);
                }
            }
            // The layer's remaining weights, in the order they are read:
            // a device may fetch them while attention (short, latency-bound
            // at decode) leaves its memory bandwidth idle.
            be.prefetch(&[&[&l.wo], &[&l.w_gate, &l.w_up], &[&l.w_down]]);
            be.attention(&a.q, kv, layer, &rows, geom, &mut a.att);
            match &l.post_attn_norm {
                Some(post) => {
                    be.matmul(&a.att, &l.wo, &mut a.h);
                    be.rms_norm(&a.h, post, c.rms_eps, &mut a.h2);
                    be.add(&mut a.x, &a.h2);
                }
                None => be.matmul_add(&a.att, &l.wo, &mut a.h, &mut a.x),
            }

            // Feed-forward block: RMSNorm, gated activation, down projection
            // (post-normed where configured) added to x.
            match c.ffn_activation {
                FfnActivation::Silu => be.norm_gate_up_swiglu(
                    &a.x,
                    &l.ffn_norm,
                    c.rms_eps,
                    &l.w_gate,
                    &l.w_up,
                    &mut a.h,
                    &mut a.gate,
                    &mut a.up,
                ),
                FfnActivation::GeluTanh => {
                    be.rms_norm(&a.x, &l.ffn_norm, c.rms_eps, &mut a.h);
                    be.matmuls(&a.h, &mut [(&l.w_gate, &mut a.gate), (&l.w_up, &mut a.up)]);
                    be.gelu_tanh_gate(&mut a.gate, &a.up);
                }
            }
            match &l.post_ffn_norm {
                Some(post) => {
                    be.matmul(&a.gate, &l.w_down, &mut a.h);
                    be.rms_norm(&a.h, post, c.rms_eps, &mut a.h2);
                    be.add(&mut a.x, &a.h2);
                }
                None => be.matmul_add(&a.gate, &l.w_down, &mut a.h, &mut a.x),
            }
        }

        let logits = if batch.logits_rows.is_empty() {
            None
        } else {
            // Every row in order (a decode step) needs no copy.
            let every_row = batch.logits_rows.iter().copied().eq(0..n);
            let gathered = (!every_row).then(|| be.gather_rows(&a.x, batch.logits_rows));
            let last = gathered.as_ref().unwrap_or(&a.x);
            let m = batch.logits_rows.len();
            let mut normed = be.alloc(m, c.d_model);
            let mut logits = be.alloc(m, c.vocab_size);
            let output = w.output.as_ref().unwrap_or(&w.token_embd);
            be.rms_norm_matmuls(
                last,
                &w.output_norm,
                c.rms_eps,
                &mut normed,
                &mut [(output, &mut logits)],
            );
            if let Some(cap) = c.final_logit_softcap {
                be.softcap(&mut logits, cap);
            }
            Some(logits)
        };
        *self.scratch.lock().unwrap_or_else(|e| e.into_inner()) = Some(acts);
        Ok(logits)
    }
}

/// Where a step's input tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepInput {
    /// `Batch::tokens`, from the host.
    Host,
    /// The previous step's greedy picks, where the logits were
    /// (`Backend::embed_chained`); `Batch::tokens` only sizes the step.
    Chained,
}
