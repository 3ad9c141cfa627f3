//! [`GgufWriter`]: builds a GGUF version 3 file from metadata and tensors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use smelt_tensor::DType;

use crate::error::GgufError;
use crate::parse::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, ShapeProblem, align_up,
    tensor_n_bytes,
};
use crate::value::{Value, ValueType};

/// The version this writer produces.
const WRITE_VERSION: u32 = 3;

/// A tensor queued for writing, already validated.
#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes them as one GGUF v3 file.
///
/// Metadata is written in the order keys were first set; tensors in the order
/// added, each at an offset aligned to `general.alignment` (default 32) and
/// padded with zeros to it.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty writer.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets a metadata value; setting a key again replaces the value in place.
    /// Values are checked when written (arrays must hold one type).
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// The metadata set so far, in the order it will be written.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Number of tensors queued so far.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Queues a tensor. `dims` is in ggml order (`dims[0]` is the row length);
    /// `data` must be exactly the bytes the shape and type need.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: impl Into<Vec<u64>>,
        dtype: DType,
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let dims = dims.into();
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::TensorAlreadyAdded { tensor: name });
        }
        let n_dims = u32::try_from(dims.len()).unwrap_or(u32::MAX);
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                offset: 0,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let expected = match tensor_n_bytes(&dims, dtype) {
            Ok(n) => n,
            Err(ShapeProblem::ZeroDim(axis)) => {
                return Err(GgufError::ZeroDim {
                    tensor: name,
                    dims,
                    axis,
                });
            }
            Err(ShapeProblem::Overflow) => {
                return Err(GgufError::ShapeOverflow { tensor: name, dims });
            }
            Err(ShapeProblem::DType(source)) => {
                return Err(GgufError::TensorShape {
                    tensor: name,
                    dims,
                    source,
                });
            }
        };
        let actual = data.len() as u64;
        if actual != expected {
            return Err(GgufError::TensorDataSize {
                tensor: name,
                dims,
                dtype,
                expected,
                actual,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            dims,
            dtype,
            data,
        });
        Ok(())
    }

    /// Writes the file to `path` (created or truncated).
    pub fn write(&self, path: &Path) -> Result<(), GgufError> {
        let file = File::create(path).map_err(|source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut out = BufWriter::new(file);
        self.write_to(&mut out)?;
        out.flush().map_err(GgufError::Write)
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the file to `out`. Everything is validated before the first byte is written.
    pub fn write_to(&self, mut out: impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        put_u32(&mut header, WRITE_VERSION);
        put_u64(&mut header, self.tensors.len() as u64);
        put_u64(&mut header, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut header, key);
            put_u32(&mut header, value.value_type().id());
            encode_value(&mut header, value, key, 0)?;
        }
        let mut next_offset: u64 = 0;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_str(&mut header, &t.name);
            put_u32(&mut header, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut header, d);
            }
            put_u32(&mut header, t.dtype.ggml_id());
            put_u64(&mut header, next_offset);
            offsets.push(next_offset);
            next_offset = padded(next_offset, t.data.len() as u64, alignment, &t.name)?;
        }
        let header_len = header.len() as u64;
        let data_start = align_up(header_len, alignment).unwrap_or(header_len);
        header.resize(data_start as usize, 0);
        out.write_all(&header).map_err(GgufError::Write)?;

        let mut written: u64 = 0;
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            write_zeros(&mut out, offset - written)?;
            out.write_all(&t.data).map_err(GgufError::Write)?;
            written = offset + t.data.len() as u64;
        }
        // Pad after the last tensor too, as gguf-py does.
        let end = padded(written, 0, alignment, "")?;
        write_zeros(&mut out, end - written)
    }

    /// The alignment `general.alignment` asks for, or the default.
    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some((_, other)) => Err(GgufError::BadAlignment {
                value: format!("{other:?} (type {})", other.type_name()),
            }),
        }
    }
}

/// `offset + len` rounded up to the alignment, or an error naming the tensor.
fn padded(offset: u64, len: u64, alignment: u64, tensor: &str) -> Result<u64, GgufError> {
    offset
        .checked_add(len)
        .and_then(|end| align_up(end, alignment))
        .ok_or_else(|| GgufError::TensorOutOfBounds {
            tensor: tensor.to_owned(),
            start: offset,
            end: u64::MAX,
            file_len: u64::MAX,
        })
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> Result<(), GgufError> {
    const ZEROS: [u8; 256] = [0; 256];
    while n > 0 {
        let chunk = n.min(ZEROS.len() as u64);
        out.write_all(&ZEROS[..chunk as usize])
            .map_err(GgufError::Write)?;
        n -= chunk;
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `value` (without its type id) to `out`.
fn encode_value(
    out: &mut Vec<u8>,
    value: &Value,
    key: &str,
    depth: usize,
) -> Result<(), GgufError> {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::InvalidValue {
                    key: key.to_owned(),
                    reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
                });
            }
            // An empty array still needs an element type; any will do.
            let elem_type = items.first().map_or(ValueType::U8, Value::value_type);
            if let Some(odd) = items.iter().find(|v| v.value_type() != elem_type) {
                return Err(GgufError::InvalidValue {
                    key: key.to_owned(),
                    reason: format!(
                        "array mixes {} and {} elements; GGUF arrays hold one type",
                        elem_type.name(),
                        odd.type_name()
                    ),
                });
            }
            put_u32(out, elem_type.id());
            put_u64(out, items.len() as u64);
            for item in items {
                encode_value(out, item, key, depth + 1)?;
            }
        }
    }
    Ok(())
}
