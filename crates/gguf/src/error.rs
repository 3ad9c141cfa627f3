//! The one error type of this crate: every variant names what was wrong and
//! where (byte offset, metadata key or tensor name).

use std::io;
use std::path::PathBuf;
use std::str::Utf8Error;

use smelt_tensor::{DType, DTypeError};

/// Why a GGUF file could not be read, or a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, inspected or mapped.
    #[error("cannot open GGUF file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write GGUF output: {0}")]
    Write(#[source] io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: bytes 0..4 are {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic { found: [u8; 4] },
    /// The version field is a version this crate does not read (1, or newer than 3).
    #[error("unsupported GGUF version {version} at offset 4: Smelt reads versions 2 and 3")]
    UnsupportedVersion { version: u32 },
    /// The version field only makes sense byte-swapped: a big-endian file.
    #[error(
        "GGUF version field at offset 4 reads {version} little-endian but {} byte-swapped: \
         this is a big-endian GGUF file, which Smelt does not read",
        version.swap_bytes()
    )]
    BigEndian { version: u32 },
    /// The file ends before a field it announces.
    #[error(
        "file ends early: {what} at offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// A count read from the file cannot possibly fit in the rest of the file.
    #[error(
        "{what} at offset {offset} is {count}, but the {remaining} bytes left in the file \
         hold at most {max}"
    )]
    ImpossibleCount {
        what: String,
        offset: u64,
        count: u64,
        remaining: u64,
        max: u64,
    },
    /// A string (key, value or tensor name) is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8: {source}")]
    InvalidUtf8 {
        what: String,
        offset: u64,
        #[source]
        source: Utf8Error,
    },
    /// A metadata value type id outside 0..=12.
    #[error("metadata key `{key}`: unknown value type id {type_id} at offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    /// A bool stored as a byte other than 0 or 1.
    #[error("metadata key `{key}`: bool byte at offset {offset} is {byte}, must be 0 or 1")]
    InvalidBool { key: String, offset: u64, byte: u8 },
    /// Arrays of arrays nested past [`crate::MAX_ARRAY_DEPTH`].
    #[error("metadata key `{key}`: arrays nested deeper than {max} levels at offset {offset}")]
    ArrayTooDeep {
        key: String,
        offset: u64,
        max: usize,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{key}` at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },
    /// `general.alignment` is not a nonzero power-of-two u32.
    #[error("`general.alignment` is {value}: it must be a u32 that is a nonzero power of two")]
    BadAlignment { value: String },
    /// A tensor has more dimensions than [`crate::MAX_DIMS`].
    #[error("tensor `{tensor}` at offset {offset}: {n_dims} dimensions, at most {max} are allowed")]
    TooManyDims {
        tensor: String,
        offset: u64,
        n_dims: u32,
        max: u32,
    },
    /// A tensor dimension is zero.
    #[error(
        "tensor `{tensor}`: dimension {axis} of shape {dims:?} is 0, every dimension must be positive"
    )]
    ZeroDim {
        tensor: String,
        dims: Vec<u64>,
        axis: usize,
    },
    /// The element count of a tensor overflows u64.
    #[error("tensor `{tensor}`: shape {dims:?} has more than u64::MAX elements")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },
    /// A tensor's ggml type id is unknown or not supported.
    #[error("tensor `{tensor}` (info at offset {offset}): {source}")]
    TensorType {
        tensor: String,
        offset: u64,
        #[source]
        source: DTypeError,
    },
    /// A tensor's shape does not fit its type (row not whole blocks, or too many bytes).
    #[error("tensor `{tensor}` with shape {dims:?}: {source}")]
    TensorShape {
        tensor: String,
        dims: Vec<u64>,
        #[source]
        source: DTypeError,
    },
    /// The same tensor name appears twice in a file.
    #[error("duplicate tensor name `{tensor}` at offset {offset}")]
    DuplicateTensor { tensor: String, offset: u64 },
    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error(
        "tensor `{tensor}`: data offset {offset} (relative to the data section) is not a \
         multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    /// A tensor's data range is not inside the file.
    #[error(
        "tensor `{tensor}`: data bytes {start}..{end} (absolute) lie outside the file of \
         {file_len} bytes"
    )]
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        /// Saturated at u64::MAX when the end overflows.
        end: u64,
        file_len: u64,
    },
    /// Writer: the tensor data length does not match the shape and type.
    #[error(
        "tensor `{tensor}`: {actual} data bytes given, shape {dims:?} of {dtype} needs {expected}"
    )]
    TensorDataSize {
        tensor: String,
        dims: Vec<u64>,
        dtype: DType,
        expected: u64,
        actual: u64,
    },
    /// Writer: a tensor of this name was already added.
    #[error("tensor `{tensor}` was already added to this writer")]
    TensorAlreadyAdded { tensor: String },
    /// Writer: a metadata value GGUF cannot store (mixed-type array, nesting too deep).
    #[error("metadata key `{key}`: {reason}")]
    InvalidValue { key: String, reason: String },
}
