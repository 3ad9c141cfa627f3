//! Where converted tensors come from: the [`TensorSource`] trait, and its
//! GGUF implementation. Another input format (a Hugging Face directory) is a
//! new implementation of the trait.

use std::ops::Range;
use std::path::Path;

use smelt_gguf::{GgufFile, Value};
use smelt_tensor::{DType, dequantize_row};

use crate::ConvertError;

/// One tensor a source holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// How the source stores it (only informative: data is read as f32).
    pub dtype: DType,
}

impl SourceTensor {
    /// Values per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of the other dims).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A model to convert: metadata, tensor list, and tensor data as f32 rows.
pub trait TensorSource {
    /// GGUF-style metadata (architecture, hyper-parameters, tokenizer, chat
    /// template), in the order it should be written.
    fn metadata(&self) -> &[(String, Value)];

    /// The tensors, in the order they should be written.
    fn tensors(&self) -> &[SourceTensor];

    /// Rows `rows` of tensor `index` (into [`TensorSource::tensors`]) as f32,
    /// appended to `out` (`row_len` values per row).
    fn read_rows(
        &self,
        index: usize,
        rows: Range<u64>,
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError>;

    /// The stored bytes of tensor `index` if it is stored as exactly
    /// `dtype`, so it can be copied instead of requantized (lossless).
    fn raw_bytes(&self, index: usize, dtype: DType) -> Option<&[u8]> {
        let _ = (index, dtype);
        None
    }
}

/// A GGUF file as a [`TensorSource`]: any tensor type Smelt dequantizes.
pub struct GgufSource {
    file: GgufFile,
    tensors: Vec<SourceTensor>,
}

impl GgufSource {
    /// Opens and validates a GGUF file.
    pub fn open(path: &Path) -> Result<GgufSource, ConvertError> {
        let file = GgufFile::open(path).map_err(|source| ConvertError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GgufSource::from_file(file))
    }

    /// Wraps an already opened file.
    pub fn from_file(file: GgufFile) -> GgufSource {
        let tensors = file
            .tensors()
            .iter()
            .map(|t| SourceTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                dtype: t.dtype,
            })
            .collect();
        GgufSource { file, tensors }
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufSource {
    fn metadata(&self) -> &[(String, Value)] {
        self.file.metadata()
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
        let info = self
            .file
            .tensors()
            .get(index)
            .ok_or(ConvertError::NoSuchTensor(index))?;
        let bad_range = || ConvertError::RowRange {
            tensor: info.name.clone(),
            rows: rows.clone(),
            n_rows: info.n_rows(),
        };
        if rows.start > rows.end || rows.end > info.n_rows() {
            return Err(bad_range());
        }
        let row_len = usize::try_from(info.row_len()).map_err(|_| bad_range())?;
        // Shapes were validated when the file was opened: whole blocks, in bounds.
        let row_bytes = info
            .dtype
            .row_bytes(info.row_len())
            .ok()
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad_range)?;
        let data = self.file.tensor_data(info);
        let start = usize::try_from(rows.start).map_err(|_| bad_range())?;
        let end = usize::try_from(rows.end).map_err(|_| bad_range())?;
        let bytes = data
            .get(start * row_bytes..end * row_bytes)
            .ok_or_else(bad_range)?;
        let first = out.len();
        out.resize(first + (end - start) * row_len, 0.0);
        for (src, dst) in bytes
            .chunks_exact(row_bytes.max(1))
            .zip(out[first..].chunks_exact_mut(row_len.max(1)))
        {
            dequantize_row(info.dtype, src, dst);
        }
        Ok(())
    }

    fn raw_bytes(&self, index: usize, dtype: DType) -> Option<&[u8]> {
        let info = self.file.tensors().get(index)?;
        (info.dtype == dtype).then(|| self.file.tensor_data(info))
    }
}
