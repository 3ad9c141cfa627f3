//! The backend boundary.
//!
//! A transformer forward pass needs only a handful of operations: embedding
//! lookup, RMS norm, a matrix product against a (usually quantized) weight,
//! bias add, RoPE, writing K/V into the cache, attention over the cache,
//! SwiGLU and a residual add. [`Backend`] names exactly those, over a batch of
//! rows (tokens from one or many sequences), so the model code is written once
//! and a CPU, CUDA or Metal backend slots in underneath it.
//!
//! [`ReferenceBackend`] is the plain scalar implementation: single-threaded,
//! obvious loops, no tricks. Every other backend is tested against it op by op
//! on random data.

mod kv;
mod reference;
mod rope;
mod tensor;
pub mod testing;

pub use kv::{HostKv, KvRow};
pub use reference::{
    ReferenceBackend, attend_head, attend_row, dequantize_all, inv_rms, rope_row, silu,
};
pub use rope::{RopeParams, RopeStyle};
pub use tensor::{HostTensor, SharedBytes};

/// Shape of the attention of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnGeometry {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplier of q·k (usually `1/sqrt(head_dim)`).
    pub scale: f32,
}

/// What one row of the batch attends to: its own position and its sequence's
/// KV block table. The row sees positions `0..=pos` of its sequence.
#[derive(Clone, Copy, Debug)]
pub struct AttnRow<'a> {
    /// Position of this row's token in its sequence.
    pub pos: u32,
    /// Block ids holding the sequence's K/V, in position order.
    pub block_table: &'a [u32],
}

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half precision: half the memory and bandwidth of f32 (the default).
    #[default]
    F16,
    F32,
}

impl KvType {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// Geometry of a KV cache: a pool of `n_blocks` blocks of `block_size`
/// positions, for every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub n_layers: usize,
    pub n_blocks: usize,
    pub block_size: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvType,
}

impl KvLayout {
    /// Values stored per position per layer for K (and again for V).
    pub fn row_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Bytes of K and V storage together, or None on overflow.
    pub fn bytes(&self) -> Option<usize> {
        self.n_layers
            .checked_mul(self.n_blocks)?
            .checked_mul(self.block_size)?
            .checked_mul(self.row_width())?
            .checked_mul(2 * self.dtype.bytes())
    }
}

/// Errors a backend reports when placing weights or allocating.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("tensor {name}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("cannot allocate {what}: {bytes} bytes")]
    OutOfMemory { what: &'static str, bytes: usize },
    /// A device (GPU) backend failed while running queued work.
    #[error("{backend} backend: {reason}")]
    Device {
        backend: &'static str,
        reason: String,
    },
}

/// A dense activation matrix on the host: `rows × cols`, row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBuf {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl HostBuf {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        HostBuf {
            data: vec![0.0; rows * cols],
            rows,
            cols,
        }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// A new buffer of the listed rows, in order.
    pub fn gather(&self, rows: &[usize]) -> HostBuf {
        let mut out = HostBuf::zeros(rows.len(), self.cols);
        for (i, &r) in rows.iter().enumerate() {
            out.row_mut(i).copy_from_slice(self.row(r));
        }
        out
    }
}

/// The operations of a transformer forward pass over a batch of rows.
///
/// Activations are `Self::Buf` matrices of `rows × cols`; weights are placed
/// once with [`Backend::place`]. Every operation is row-independent and
/// computes each row with the same arithmetic whatever the batch holds
/// (batch invariance), except `attention`, which reads the cache.
pub trait Backend: Send + Sync {
    /// Activation storage.
    type Buf: Send;
    /// A weight tensor placed on this backend.
    type Weight: Send + Sync;
    /// K/V storage for every layer.
    type Kv: Send;

    /// A short name for messages (`"cpu"`, `"reference"`).
    fn name(&self) -> &'static str;

    /// Places a weight tensor (the CPU keeps the mmap in place; a GPU uploads).
    fn place(&self, name: &str, tensor: &HostTensor) -> Result<Self::Weight, BackendError>;

    /// A `rows × cols` buffer (contents unspecified).
    fn alloc(&self, rows: usize, cols: usize) -> Self::Buf;
    /// Copies host data into a new buffer.
    fn upload(&self, data: &HostBuf) -> Self::Buf;
    /// Copies a buffer back to the host.
    fn download(&self, buf: &Self::Buf) -> HostBuf;
    /// Rows and columns of a buffer.
    fn shape(&self, buf: &Self::Buf) -> (usize, usize);

    /// Allocates the K/V pool.
    fn alloc_kv(&self, layout: KvLayout) -> Result<Self::Kv, BackendError>;

    /// `out[r] = table[tokens[r]] * scale`, dequantized.
    fn embed(&self, table: &Self::Weight, tokens: &[u32], scale: f32, out: &mut Self::Buf);
    /// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight`.
    fn rms_norm(&self, x: &Self::Buf, weight: &Self::Weight, eps: f32, out: &mut Self::Buf);
    /// `out[r] = W · x[r]` for a weight of `n_out` rows of `n_in` values.
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight, out: &mut Self::Buf);
    /// Several products of the same input (Q/K/V, gate/up) in one step; a
    /// backend may run them as one parallel region.
    fn matmuls(&self, x: &Self::Buf, jobs: &mut [(&Self::Weight, &mut Self::Buf)]) {
        for (w, out) in jobs.iter_mut() {
            self.matmul(x, w, out);
        }
    }
    /// `x[r] += bias`.
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Weight);
    /// Rotates each of the `n_heads` heads of every row by its position.
    fn rope(&self, x: &mut Self::Buf, n_heads: usize, positions: &[u32], params: &RopeParams);
    /// Stores row `r` of `k` and `v` at cache slot `slots[r]` (block * block_size + offset) of `layer`.
    fn kv_store(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        k: &Self::Buf,
        v: &Self::Buf,
        slots: &[u32],
    );
    /// Causal attention of every row of `q` over its sequence's cached K/V.
    fn attention(
        &self,
        q: &Self::Buf,
        kv: &Self::Kv,
        layer: usize,
        rows: &[AttnRow<'_>],
        geom: &AttnGeometry,
        out: &mut Self::Buf,
    );
    /// `gate = silu(gate) * up`.
    fn swiglu(&self, gate: &mut Self::Buf, up: &Self::Buf);
    /// `x += y`.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf);
    /// Copies the listed rows of `x` into a new buffer, in order.
    fn gather_rows(&self, x: &Self::Buf, rows: &[usize]) -> Self::Buf;

    /// Waits for the queued work of a step and reports the first error an
    /// operation met. The operations above return nothing: a device backend
    /// runs them asynchronously and keeps its first failure (a launch error,
    /// a fault, a failed allocation) until this call. Host backends have none.
    fn finish(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
