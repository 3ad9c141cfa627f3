//! [`GgufFile`]: an open, fully validated GGUF file and its zero-copy tensor data.

use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use smelt_tensor::DType;

use crate::error::GgufError;
use crate::parse::{Header, parse};
use crate::value::Value;

/// Where the file bytes live.
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// One tensor's description from the header, checked against the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor name, unique within its file.
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Absolute byte offset of the data in the file (data section start + stored offset).
    pub offset: u64,
    /// Bytes of data: `dtype.row_bytes(dims[0]) * n_rows()`.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Total number of elements (1 for a tensor without dimensions).
    pub fn n_elements(&self) -> u64 {
        // Validated at open (or by the writer) not to overflow; saturate regardless.
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Length of one row, `dims[0]` (1 for a tensor without dimensions).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of every dimension but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// An open GGUF file (version 2 or 3, little-endian). Everything in the
/// header is validated when it is opened, so the accessors cannot fail.
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

impl GgufFile {
    /// Memory-maps the file at `path`, then parses and validates it.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let open_err = |source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes fails on some systems; an empty file is simply too short.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and lives as long as `GgufFile`. Model
            // files are not modified while open; if another process truncated the
            // file anyway, reads would fault (SIGBUS), which is the accepted
            // caveat of every memory-mapped model loader.
            let map = unsafe { Mmap::map(&file) }.map_err(open_err)?;
            Storage::Mapped(map)
        };
        Self::from_storage(storage)
    }

    /// Parses and validates a GGUF file held in memory (same checks as [`GgufFile::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let header = parse(storage.bytes())?;
        Ok(GgufFile { storage, header })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Alignment of the data section and of every tensor (from `general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute byte offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    /// Removes a metadata entry and returns its value: frees what the file's
    /// parse holds once a caller has no more use for it (a 150k-entry
    /// vocabulary is tens of megabytes as values; the tokenizer keeps its
    /// own copy). Later `get`s of the key return `None`.
    pub fn take_metadata(&mut self, key: &str) -> Option<Value> {
        let index = self.header.key_index.remove(key)?;
        let (_, value) = self.header.metadata.remove(index);
        for i in self.header.key_index.values_mut() {
            if *i > index {
                *i -= 1;
            }
        }
        Some(value)
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let index = *self.header.key_index.get(key)?;
        self.header.metadata.get(index).map(|(_, v)| v)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any integer value that is non-negative.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer value that fits in i64.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// An F32, F64 or integer value, as f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// An array value's elements.
    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key)?.as_array()
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The tensor of this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let index = *self.header.tensor_index.get(name)?;
        self.header.tensors.get(index)
    }

    /// The tensor's bytes, borrowed from the file (no copy). Ranges were
    /// validated at open; a `TensorInfo` from another file whose range does
    /// not fit this one yields an empty slice rather than a panic.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = usize::try_from(t.offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(usize::try_from(t.n_bytes).ok()?)?));
        range.and_then(|r| self.bytes().get(r)).unwrap_or(&[])
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("alignment", &self.header.alignment)
            .field("len", &self.bytes().len())
            .field("metadata_entries", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .field("mapped", &matches!(self.storage, Storage::Mapped(_)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn gguf_file_can_be_shared_across_threads() {
        assert_send_sync::<GgufFile>();
        assert_send_sync::<TensorInfo>();
    }
}
