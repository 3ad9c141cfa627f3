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
    ReferenceBackend, attend_head, attend_row, dequantize_all, gelu_tanh, inv_rms, rope_row, silu,
    softcap,
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
    /// Sliding-window attention: a row at position `p` sees only the last
    /// `window` positions `p + 1 - window ..= p` (None: all of `0..=p`).
    pub window: Option<u32>,
}

impl AttnGeometry {
    /// The first position a row at `pos` attends to.
    pub fn first_visible(&self, pos: u32) -> u32 {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }
}

/// Capabilities that not every backend has yet. [`Backend::supports`] is
/// asked for each one a model needs before loading it, so a backend that
/// lacks one refuses the model instead of computing something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// [`Backend::rms_norm_heads`]: RMSNorm of each Q/K head (Qwen3, Gemma 3).
    QkNorm,
    /// [`Backend::gelu_tanh_gate`] (Gemma's GeGLU feed-forward).
    GeluTanhGate,
    /// [`AttnGeometry::window`] (Mistral, Gemma 3, Phi-3).
    SlidingWindow,
    /// [`Backend::softcap`] on the logits.
    LogitSoftcap,
    /// Different [`RopeParams`] in different layers (Gemma 3's local and
    /// global layers) within one step.
    PerLayerRope,
}

impl Feature {
    /// What the feature is, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Feature::QkNorm => "per-head Q/K RMSNorm",
            Feature::GeluTanhGate => "GELU-tanh gated feed-forward",
            Feature::SlidingWindow => "sliding-window attention",
            Feature::LogitSoftcap => "logit soft-capping",
            Feature::PerLayerRope => "per-layer RoPE parameters",
        }
    }
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

/// The weights of a layer's attention input: the RMSNorm before it and the
/// Q/K/V projections with their optional biases.
pub struct QkvWeights<'a, W> {
    pub norm: &'a W,
    pub q: &'a W,
    pub k: &'a W,
    pub v: &'a W,
    pub q_bias: Option<&'a W>,
    pub k_bias: Option<&'a W>,
    pub v_bias: Option<&'a W>,
}

/// Where a step's rows go in the KV cache: each row's position (for RoPE)
/// and cache slot (`block * block_size + offset`), in `layer`.
#[derive(Clone, Copy, Debug)]
pub struct KvWrite<'a> {
    pub layer: usize,
    pub positions: &'a [u32],
    pub slots: &'a [u32],
}

/// Index of the largest value; the lowest index wins ties (a NaN is never
/// larger than anything, so a NaN at index 0 wins). The greedy choice.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The operations of a transformer forward pass over a batch of rows.
///
/// Activations are `Self::Buf` matrices of `rows × cols`; weights are placed
/// once with [`Backend::place`]. Every operation is row-independent and
/// computes each row with the same arithmetic whatever the batch holds
/// (batch invariance), except `attention`, which reads the cache.
/// The `k` largest of `values` (all of them when `k` is larger) as (index,
/// value), ordered by value descending in `f32::total_cmp`'s order, ties by
/// index ascending: the engine's top-k rule.
pub fn top_k_sorted(values: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let by_value = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && k < c.len() {
        c.select_nth_unstable_by(k - 1, by_value);
        c.truncate(k);
    }
    c.sort_unstable_by(by_value);
    c
}

pub trait Backend: Send + Sync {
    /// Activation storage.
    type Buf: Send;
    /// A weight tensor placed on this backend.
    type Weight: Send + Sync;
    /// K/V storage for every layer.
    type Kv: Send;

    /// A short name for messages (`"cpu"`, `"reference"`).
    fn name(&self) -> &'static str;

    /// Whether this backend implements `feature` (see [`Feature`]).
    fn supports(&self, feature: Feature) -> bool;

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
    /// `rope` of a layer's queries and keys (`n_heads` and `n_kv_heads`
    /// heads a row), which a backend may rotate together (one parallel
    /// region on the CPU); the values are those of `rope` on each.
    fn rope_qk(
        &self,
        q: &mut Self::Buf,
        n_heads: usize,
        k: &mut Self::Buf,
        n_kv_heads: usize,
        positions: &[u32],
        params: &RopeParams,
    ) {
        self.rope(q, n_heads, positions, params);
        self.rope(k, n_kv_heads, positions, params);
    }
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
    /// `gate = gelu_tanh(gate) * up` ([`gelu_tanh`]; [`Feature::GeluTanhGate`]).
    fn gelu_tanh_gate(&self, gate: &mut Self::Buf, up: &Self::Buf);
    /// RMSNorm of each of the `n_heads` heads of every row of `x`, in place,
    /// by a weight of one head's width ([`Feature::QkNorm`]).
    fn rms_norm_heads(&self, x: &mut Self::Buf, n_heads: usize, weight: &Self::Weight, eps: f32);
    /// `x = cap * tanh(x / cap)` elementwise ([`softcap`]; [`Feature::LogitSoftcap`]).
    fn softcap(&self, x: &mut Self::Buf, cap: f32);
    /// `x += y`.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf);
    /// Copies the listed rows of `x` into a new buffer, in order.
    fn gather_rows(&self, x: &Self::Buf, rows: &[usize]) -> Self::Buf;

    /// Fused operations. Each has a default in terms of the operations
    /// above; a device backend overrides them to run fewer, larger kernels.
    /// Buffers named scratch hold unspecified values afterwards.
    ///
    /// `out = W · rms_norm(x)` for every job (`h`: scratch). The model calls
    /// it for its final norm and output projection, so its results are the
    /// logits: a device backend may keep it at higher precision than the
    /// layers' products.
    fn rms_norm_matmuls(
        &self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        h: &mut Self::Buf,
        jobs: &mut [(&Self::Weight, &mut Self::Buf)],
    ) {
        self.rms_norm(x, norm, eps, h);
        self.matmuls(h, jobs);
    }

    /// The attention input of a layer: `h = rms_norm(x)`, `q = Wq·h + bq`,
    /// `k`, `v` likewise, RoPE on `q` and `k`, and `k`, `v` stored into the
    /// cache at `at`. Afterwards `q` holds the rotated queries; `h`, `k` and
    /// `v` are scratch.
    #[allow(clippy::too_many_arguments)]
    fn norm_qkv_rope_store(
        &self,
        x: &Self::Buf,
        w: &QkvWeights<'_, Self::Weight>,
        eps: f32,
        geom: &AttnGeometry,
        rope: &RopeParams,
        kv: &mut Self::Kv,
        at: &KvWrite<'_>,
        [h, q, k, v]: [&mut Self::Buf; 4],
    ) {
        self.rms_norm(x, w.norm, eps, h);
        self.matmuls(h, &mut [(w.q, &mut *q), (w.k, &mut *k), (w.v, &mut *v)]);
        for (buf, bias) in [
            (&mut *q, w.q_bias),
            (&mut *k, w.k_bias),
            (&mut *v, w.v_bias),
        ] {
            if let Some(b) = bias {
                self.add_bias(buf, b);
            }
        }
        self.rope_qk(q, geom.n_heads, k, geom.n_kv_heads, at.positions, rope);
        self.kv_store(kv, at.layer, k, v, at.slots);
    }

    /// `acc += W · x` (a projection added to the residual; `t`: scratch of
    /// `acc`'s shape).
    fn matmul_add(&self, x: &Self::Buf, w: &Self::Weight, t: &mut Self::Buf, acc: &mut Self::Buf) {
        self.matmul(x, w, t);
        self.add(acc, t);
    }

    /// `gate = silu(W_gate · h) * (W_up · h)` with `h = rms_norm(x)` (`h`
    /// and `up`: scratch).
    #[allow(clippy::too_many_arguments)]
    fn norm_gate_up_swiglu(
        &self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        w_gate: &Self::Weight,
        w_up: &Self::Weight,
        h: &mut Self::Buf,
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
    ) {
        self.rms_norm(x, norm, eps, h);
        self.matmuls(h, &mut [(w_gate, &mut *gate), (w_up, &mut *up)]);
        self.swiglu(gate, up);
    }

    /// The index of the largest value of each row ([`argmax`]'s rule): the
    /// greedy token of each logits row. A device backend picks on the device
    /// and copies back only the indices.
    fn argmax_rows(&self, x: &Self::Buf) -> Vec<u32> {
        let host = self.download(x);
        (0..host.rows).map(|r| argmax(host.row(r))).collect()
    }

    /// Whether this backend chains greedy steps where the logits are
    /// ([`Backend::argmax_rows_chained`], [`Backend::embed_chained`],
    /// [`Backend::chained_ids`]), so that `Model::decode_greedy` can queue a
    /// step before the host has read the previous step's token. The other
    /// three methods are only called when this is true.
    fn chains_greedy(&self) -> bool {
        false
    }

    /// As [`Backend::argmax_rows`], but the ids stay where the logits are,
    /// as the input of the next [`Backend::embed_chained`], and their copy
    /// to the host is only started: [`Backend::chained_ids`] with the
    /// returned ticket waits for them.
    fn argmax_rows_chained(&self, _x: &Self::Buf) -> u64 {
        0
    }

    /// As [`Backend::embed`], for the tokens the last
    /// [`Backend::argmax_rows_chained`] picked (one per row of `out`).
    fn embed_chained(&self, _table: &Self::Weight, _scale: f32, _out: &mut Self::Buf) {}

    /// The ids of [`Backend::argmax_rows_chained`]'s `ticket`, once they are
    /// known (only the two latest tickets are kept).
    fn chained_ids(&self, _ticket: u64) -> Result<Vec<u32>, BackendError> {
        Err(BackendError::Device {
            backend: "this",
            reason: "greedy steps are not chained on this backend".into(),
        })
    }

    /// The `k` largest values of each row with their indices, largest
    /// first (ties: lower index first; the order is `f32::total_cmp`'s):
    /// [`top_k_sorted`] of each row. What top-k sampling needs from the
    /// logits, so a device backend selects them on the device and copies
    /// back `k` pairs a row instead of the whole vocabulary.
    fn top_k_rows(&self, x: &Self::Buf, k: usize) -> Vec<Vec<(u32, f32)>> {
        let host = self.download(x);
        (0..host.rows)
            .map(|r| top_k_sorted(host.row(r), k))
            .collect()
    }

    /// Called by the model at the start of every step of `n_rows` rows with
    /// the rows whose logits the step wants (`Batch::logits_rows`). Until
    /// the next call, the step's operations on buffers of `n_rows` rows may
    /// compute the other rows ("bulk rows": prompt tokens whose logits
    /// nobody reads) on a faster path whose results differ from the
    /// logits rows' in the last bits, as long as each row's path and
    /// arithmetic depend only on that row (batch invariance). The CUDA
    /// backend runs bulk rows on tensor cores and logits rows on its
    /// matrix-vector kernels. Exact backends ignore it (the default).
    fn begin_step(&self, logits_rows: &[usize], n_rows: usize) {
        let _ = (logits_rows, n_rows);
    }

    /// A hint that the weights in `groups` are read next, group after group
    /// (the weights of one group together, row by row): a device backend
    /// may start moving them into a cache while earlier work runs. It never
    /// changes a result; host backends ignore it (the default).
    fn prefetch(&self, groups: &[&[&Self::Weight]]) {
        let _ = groups;
    }

    /// Waits for the queued work of a step and reports the first error an
    /// operation met. The operations above return nothing: a device backend
    /// runs them asynchronously and keeps its first failure (a launch error,
    /// a fault, a failed allocation) until this call. Host backends have none.
    fn finish(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_largest_and_a_nan_only_at_index_0() {
        assert_eq!(argmax(&[0.5, -1.0, 3.0, 2.0]), 2);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 4]), 0);
        assert_eq!(argmax(&[1.0, f32::NAN, 0.5]), 0);
        assert_eq!(argmax(&[f32::NAN, 7.0, f32::INFINITY]), 0);
        assert_eq!(argmax(&[-2.0, f32::NAN, -1.0]), 2);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn top_k_sorted_is_the_head_of_a_full_sort() {
        let mut rng = crate::testing::TestRng::new(5);
        for len in [1usize, 7, 300] {
            // Few distinct values: many ties.
            let v: Vec<f32> = (0..len)
                .map(|_| (rng.uniform(-3.0, 3.0) * 2.0).round())
                .collect();
            let mut all: Vec<(u32, f32)> =
                v.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for k in [1, 2, 5, len, len + 3] {
                let want = &all[..k.min(len)];
                assert_eq!(top_k_sorted(&v, k), want, "len {len}, k {k}");
            }
        }
    }

    #[test]
    fn argmax_rows_picks_each_row() {
        let x = HostBuf {
            data: vec![0.1, 0.9, 0.3, 5.0, -1.0, 5.0],
            rows: 2,
            cols: 3,
        };
        assert_eq!(ReferenceBackend.argmax_rows(&x), vec![1, 0]);
    }
}
