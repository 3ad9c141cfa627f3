//! Reading and writing GGUF, the single-file model format of llama.cpp.
//!
//! # The format (little-endian throughout)
//!
//! ```text
//! magic "GGUF" | version u32 (2 or 3) | tensor_count u64 | kv_count u64
//! kv_count x  { key: string | value type u32 | value }
//! tensor_count x { name: string | n_dims u32 | dims u64 x n_dims | ggml type u32 | offset u64 }
//! padding to the alignment
//! tensor data section: each tensor at its offset (relative to the section start)
//! ```
//!
//! A string is a u64 byte length followed by UTF-8 bytes. Value types are
//! `u8 i8 u16 i16 u32 i32 f32 bool string array u64 i64 f64` (ids 0..=12); an
//! array is an element type u32, a u64 count and the elements, which may be
//! arrays again. The alignment is the u32 metadata value `general.alignment`
//! (default 32); the data section starts at the end of the tensor infos
//! rounded up to it, and every tensor offset is a multiple of it. Dimensions
//! are in ggml order: `dims[0]` is the contiguous row length.
//!
//! # This crate
//!
//! [`GgufFile::open`] memory-maps a file and validates the whole header
//! against the file size (every count, length and offset, with checked
//! arithmetic, before allocating for it), so tensor data is handed out as
//! zero-copy slices of the map and no accessor can fail or panic afterwards.
//! [`GgufWriter`] writes version 3 files that this reader and gguf-py read.

mod error;
mod file;
mod parse;
mod value;
mod writer;

pub use error::GgufError;
pub use file::{GgufFile, TensorInfo};
pub use parse::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
pub use value::{Value, ValueType};
pub use writer::GgufWriter;
