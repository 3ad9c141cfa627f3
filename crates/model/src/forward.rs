//! The forward pass: one batched step of the transformer, read top to bottom.

use std::sync::{Arc, Mutex};

use smelt_backend::{
    AttnGeometry, AttnRow, Backend, HostBuf, KvLayout, KvType, KvWrite, QkvWeights, RopeParams,
};
use smelt_gguf::GgufFile;

use crate::{ModelConfig, ModelError, Weights};

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
    rope: RopeParams,
    geom: AttnGeometry,
    /// The activations of the last step, reused by the next step of the same
    /// batch size (every decode step): no allocation per token.
    scratch: Mutex<Option<Activations<B::Buf>>>,
}

/// The activation buffers of one step of `n` rows.
struct Activations<Buf> {
    n: usize,
    x: Buf,
    h: Buf,
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
    /// Reads the config, binds and places every weight.
    pub fn load(file: Arc<GgufFile>, backend: B) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(file, &config, &backend)?;
        let rope = RopeParams::new(
            config.rope_style,
            config.head_dim,
            config.rope_dims,
            config.rope_base,
            config.rope_freq_scale,
            weights.rope_freqs.as_deref(),
        );
        let geom = AttnGeometry {
            n_heads: config.n_heads,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
            scale: 1.0 / (config.head_dim as f32).sqrt(),
        };
        Ok(Model {
            config,
            backend,
            weights,
            rope,
            geom,
            scratch: Mutex::new(None),
        })
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

    /// The step itself; the logits stay on the backend (None if no row
    /// wants them).
    fn run(&self, kv: &mut B::Kv, batch: &Batch<'_>) -> Result<Option<B::Buf>, ModelError> {
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

        be.embed(&w.token_embd, batch.tokens, 1.0, &mut a.x);
        for (layer, l) in w.layers.iter().enumerate() {
            // Attention block: RMSNorm, Q/K/V (+ bias), RoPE and K/V into the
            // cache, attention, then the output projection added to x.
            let qkv = QkvWeights {
                norm: &l.attn_norm,
                q: &l.wq,
                k: &l.wk,
                v: &l.wv,
                q_bias: l.bq.as_ref(),
                k_bias: l.bk.as_ref(),
                v_bias: l.bv.as_ref(),
            };
            let at = KvWrite {
                layer,
                positions: batch.positions,
                slots: &slots,
            };
            let bufs = [&mut a.h, &mut a.q, &mut a.k, &mut a.v];
            be.norm_qkv_rope_store(&a.x, &qkv, c.rms_eps, &self.geom, &self.rope, kv, &at, bufs);
            be.attention(&a.q, kv, layer, &rows, &self.geom, &mut a.att);
            be.matmul_add(&a.att, &l.wo, &mut a.h, &mut a.x);

            // Feed-forward block: RMSNorm, SwiGLU, down projection added to x.
            be.norm_gate_up_swiglu(
                &a.x,
                &l.ffn_norm,
                c.rms_eps,
                &l.w_gate,
                &l.w_up,
                &mut a.h,
                &mut a.gate,
                &mut a.up,
            );
            be.matmul_add(&a.gate, &l.w_down, &mut a.h, &mut a.x);
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
            Some(logits)
        };
        *self.scratch.lock().unwrap_or_else(|e| e.into_inner()) = Some(acts);
        Ok(logits)
    }
}
