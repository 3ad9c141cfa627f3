//! A weight tensor as it lies in host memory: bytes in their stored format,
//! shared with whoever owns them (usually the model file's mmap).

use std::ops::Range;
use std::sync::Arc;

use smelt_tensor::DType;

use crate::BackendError;

/// Bytes that stay alive as long as any tensor points into them.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A tensor's stored bytes (not copied) plus its type and shape.
///
/// `dims` use ggml order: `dims[0]` is the length of a contiguous row, the
/// product of the rest is the number of rows.
#[derive(Clone)]
pub struct HostTensor {
    owner: SharedBytes,
    range: Range<usize>,
    dtype: DType,
    dims: Vec<usize>,
    row_bytes: usize,
    n_rows: usize,
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTensor")
            .field("dtype", &self.dtype)
            .field("dims", &self.dims)
            .field("range", &self.range)
            .finish()
    }
}

impl HostTensor {
    /// Wraps `owner[range]` as a tensor, checking that the bytes are exactly
    /// what `dtype` and `dims` need.
    pub fn new(
        name: &str,
        owner: SharedBytes,
        range: Range<usize>,
        dtype: DType,
        dims: Vec<usize>,
    ) -> Result<Self, BackendError> {
        let bad = |reason: String| BackendError::BadTensor {
            name: name.to_string(),
            reason,
        };
        let Some((&row_len, rest)) = dims.split_first() else {
            return Err(bad("has no dimensions".into()));
        };
        let n_rows = rest
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        let row_bytes = dtype
            .row_bytes(row_len as u64)
            .map_err(|e| bad(e.to_string()))? as usize;
        let need = row_bytes
            .checked_mul(n_rows)
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        let have = range.end.saturating_sub(range.start);
        if range.start > range.end || range.end > (*owner).as_ref().len() || have != need {
            return Err(bad(format!(
                "{dtype} {dims:?} needs {need} bytes, has range {range:?} of a {}-byte buffer",
                (*owner).as_ref().len()
            )));
        }
        Ok(HostTensor {
            owner,
            range,
            dtype,
            dims,
            row_bytes,
            n_rows,
        })
    }

    /// An F32 tensor owning `data` (tests, small computed tensors).
    pub fn from_f32(name: &str, data: &[f32], dims: Vec<usize>) -> Result<Self, BackendError> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_bytes(name, bytes, DType::F32, dims)
    }

    /// A tensor owning already-encoded bytes of `dtype`.
    pub fn from_bytes(
        name: &str,
        bytes: Vec<u8>,
        dtype: DType,
        dims: Vec<usize>,
    ) -> Result<Self, BackendError> {
        let len = bytes.len();
        Self::new(name, Arc::new(bytes), 0..len, dtype, dims)
    }

    /// Rows `rows` of a 2-D tensor as a tensor of their own, sharing the
    /// same bytes (no copy): the parts of a fused weight such as Phi-3's
    /// Q/K/V or gate/up projections.
    pub fn slice_rows(&self, name: &str, rows: Range<usize>) -> Result<HostTensor, BackendError> {
        if self.dims.len() != 2 || rows.start > rows.end || rows.end > self.n_rows {
            return Err(BackendError::BadTensor {
                name: name.to_string(),
                reason: format!("rows {rows:?} of a tensor of shape {:?}", self.dims),
            });
        }
        let start = self.range.start + rows.start * self.row_bytes;
        let end = self.range.start + rows.end * self.row_bytes;
        HostTensor::new(
            name,
            self.owner.clone(),
            start..end,
            self.dtype,
            vec![self.dims[0], rows.len()],
        )
    }

    /// All stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }

    /// Stored bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Elements in one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims[0]
    }

    /// Number of rows (product of `dims[1..]`).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }
}
