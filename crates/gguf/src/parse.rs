//! Parsing and validating the GGUF header (everything before the tensor data).
//!
//! Every count, length and offset comes from the file, so each is checked
//! against the bytes that remain before anything is allocated for it, and all
//! arithmetic on them is checked. The parser only ever reads through
//! [`Cursor`], which cannot read past the end of the buffer.

use std::collections::{HashMap, HashSet};

use smelt_tensor::{DType, DTypeError};

use crate::error::GgufError;
use crate::file::TensorInfo;
use crate::value::{Value, ValueType};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The most tensor dimensions accepted (ggml itself uses at most 4).
pub const MAX_DIMS: u32 = 8;
/// The deepest nesting of arrays of arrays accepted.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// Fewest bytes a metadata entry takes: empty key (u64 length), type id, one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info takes: empty name, n_dims = 0, type id, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 4 + 8;
/// Most entries reserved up front for any list whose length the file states;
/// longer lists grow as entries are actually read, so a lying count cannot
/// make us allocate much more than the bytes it is backed by.
const PREALLOC_CAP: usize = 4096;

/// Everything the header says, validated against the file.
#[derive(Debug)]
pub(crate) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

/// A read that ran past the end of the buffer; the caller says what it was reading.
#[derive(Clone, Copy)]
struct Short {
    offset: u64,
    needed: u64,
    available: u64,
}

impl Short {
    fn ctx(self, what: impl Into<String>) -> GgufError {
        GgufError::Truncated {
            what: what.into(),
            offset: self.offset,
            needed: self.needed,
            available: self.available,
        }
    }
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Short> {
        let short = Short {
            offset: self.offset(),
            needed: n,
            available: self.remaining(),
        };
        let n = usize::try_from(n).map_err(|_| short)?;
        let end = self.pos.checked_add(n).ok_or(short)?;
        let slice = self.bytes.get(self.pos..end).ok_or(short)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let slice = self.take(N as u64)?;
        let mut out = [0u8; N];
        for (dst, src) in out.iter_mut().zip(slice) {
            *dst = *src;
        }
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Short> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, Short> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, Short> {
        self.array().map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes.
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self
            .u64()
            .map_err(|e| e.ctx(format!("length of {}", what())))?;
        let start = self.offset();
        let bytes = self.take(len).map_err(|e| e.ctx(what()))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(source) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset: start,
                source,
            }),
        }
    }

    /// Checks that `count` items of at least `min_len` bytes each fit in the
    /// remaining bytes, so the count can size a loop or a reservation.
    fn bound_count(
        &self,
        count: u64,
        min_len: u64,
        count_offset: u64,
        what: impl Fn() -> String,
    ) -> Result<usize, GgufError> {
        let remaining = self.remaining();
        let max = remaining / min_len.max(1);
        if count > max {
            return Err(GgufError::ImpossibleCount {
                what: what(),
                offset: count_offset,
                count,
                remaining,
                max,
            });
        }
        // count <= remaining <= buffer length, which is a usize.
        usize::try_from(count).map_err(|_| GgufError::ImpossibleCount {
            what: what(),
            offset: count_offset,
            count,
            remaining,
            max,
        })
    }
}

/// Parses and validates the header of a whole GGUF file held in `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.array::<4>().map_err(|e| e.ctx("magic"))?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32().map_err(|e| e.ctx("version"))?;
    check_version(version)?;
    let tensor_count_offset = c.offset();
    let tensor_count = c.u64().map_err(|e| e.ctx("tensor count"))?;
    let kv_count_offset = c.offset();
    let kv_count = c.u64().map_err(|e| e.ctx("metadata key/value count"))?;
    // Cheap early rejection of absurd counts before parsing anything.
    c.bound_count(
        tensor_count,
        MIN_TENSOR_INFO_LEN,
        tensor_count_offset,
        || "tensor count".to_owned(),
    )?;
    let kv_count = c.bound_count(kv_count, MIN_KV_LEN, kv_count_offset, || {
        "metadata key/value count".to_owned()
    })?;

    let (metadata, key_index) = read_metadata(&mut c, kv_count)?;
    let alignment = alignment_of(&metadata, &key_index)?;

    let tensor_count = c.bound_count(
        tensor_count,
        MIN_TENSOR_INFO_LEN,
        tensor_count_offset,
        || "tensor count (after metadata)".to_owned(),
    )?;
    let raw = read_tensor_infos(&mut c, tensor_count)?;

    let header_end = c.offset();
    let data_offset = align_up(header_end, alignment).ok_or_else(|| GgufError::BadAlignment {
        value: format!("{alignment} (the data section start overflows)"),
    })?;
    let file_len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    let mut tensor_index = HashMap::with_capacity(raw.len());
    for info in raw {
        let tensor = validate_tensor(info, alignment, data_offset, file_len)?;
        tensor_index.insert(tensor.name.clone(), tensors.len());
        tensors.push(tensor);
    }
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

fn check_version(version: u32) -> Result<(), GgufError> {
    match version {
        2 | 3 => Ok(()),
        // A big-endian writer stores a small version with its bytes reversed.
        v if v > 0xffff && v.swap_bytes() <= 0xffff => Err(GgufError::BigEndian { version: v }),
        v => Err(GgufError::UnsupportedVersion { version: v }),
    }
}

type Metadata = (Vec<(String, Value)>, HashMap<String, usize>);

fn read_metadata(c: &mut Cursor<'_>, kv_count: usize) -> Result<Metadata, GgufError> {
    let mut metadata = Vec::with_capacity(kv_count.min(PREALLOC_CAP));
    let mut key_index = HashMap::with_capacity(kv_count.min(PREALLOC_CAP));
    for i in 0..kv_count {
        let entry_offset = c.offset();
        let key = c.string(|| format!("key of metadata entry {i}"))?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: entry_offset,
            });
        }
        let type_offset = c.offset();
        let type_id = c
            .u32()
            .map_err(|e| e.ctx(format!("value type of key `{key}`")))?;
        let value_type =
            ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                type_id,
                offset: type_offset,
            })?;
        let value = read_value(c, value_type, &key, 0)?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, key_index))
}

fn read_value(
    c: &mut Cursor<'_>,
    value_type: ValueType,
    key: &str,
    depth: usize,
) -> Result<Value, GgufError> {
    let value_offset = c.offset();
    let short = |e: Short| e.ctx(format!("{} value of key `{key}`", value_type.name()));
    Ok(match value_type {
        ValueType::U8 => Value::U8(c.u8().map_err(short)?),
        ValueType::I8 => Value::I8(c.u8().map_err(short)? as i8),
        ValueType::U16 => Value::U16(c.u16().map_err(short)?),
        ValueType::I16 => Value::I16(c.u16().map_err(short)? as i16),
        ValueType::U32 => Value::U32(c.u32().map_err(short)?),
        ValueType::I32 => Value::I32(c.u32().map_err(short)? as i32),
        ValueType::U64 => Value::U64(c.u64().map_err(short)?),
        ValueType::I64 => Value::I64(c.u64().map_err(short)? as i64),
        ValueType::F32 => Value::F32(f32::from_bits(c.u32().map_err(short)?)),
        ValueType::F64 => Value::F64(f64::from_bits(c.u64().map_err(short)?)),
        ValueType::Bool => match c.u8().map_err(short)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            byte => {
                return Err(GgufError::InvalidBool {
                    key: key.to_owned(),
                    offset: value_offset,
                    byte,
                });
            }
        },
        ValueType::String => Value::String(c.string(|| format!("string value of key `{key}`"))?),
        ValueType::Array => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::ArrayTooDeep {
                    key: key.to_owned(),
                    offset: value_offset,
                    max: MAX_ARRAY_DEPTH,
                });
            }
            let type_id = c
                .u32()
                .map_err(|e| e.ctx(format!("array element type of key `{key}`")))?;
            let elem_type =
                ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                    key: key.to_owned(),
                    type_id,
                    offset: value_offset,
                })?;
            let count_offset = c.offset();
            let count = c
                .u64()
                .map_err(|e| e.ctx(format!("array length of key `{key}`")))?;
            let count = c.bound_count(count, elem_type.min_encoded_len(), count_offset, || {
                format!("array length of key `{key}`")
            })?;
            let mut items = Vec::with_capacity(count.min(PREALLOC_CAP));
            for _ in 0..count {
                items.push(read_value(c, elem_type, key, depth + 1)?);
            }
            Value::Array(items)
        }
    })
}

fn alignment_of(
    metadata: &[(String, Value)],
    key_index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let Some(value) = key_index
        .get(ALIGNMENT_KEY)
        .and_then(|&i| metadata.get(i))
        .map(|kv| &kv.1)
    else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value {
        Value::U32(a) if a.is_power_of_two() => Ok(u64::from(*a)),
        other => Err(GgufError::BadAlignment {
            value: format!("{other:?} (type {})", other.type_name()),
        }),
    }
}

/// A tensor info as stored, before it is checked against the file.
struct RawTensorInfo {
    name: String,
    info_offset: u64,
    dims: Vec<u64>,
    type_id: u32,
    rel_offset: u64,
}

fn read_tensor_infos(c: &mut Cursor<'_>, count: usize) -> Result<Vec<RawTensorInfo>, GgufError> {
    let mut infos = Vec::with_capacity(count.min(PREALLOC_CAP));
    let mut seen = HashSet::with_capacity(count.min(PREALLOC_CAP));
    for i in 0..count {
        let info_offset = c.offset();
        let name = c.string(|| format!("name of tensor info {i}"))?;
        if seen.contains(&name) {
            return Err(GgufError::DuplicateTensor {
                tensor: name,
                offset: info_offset,
            });
        }
        let field = |what: &str| format!("{what} of tensor `{name}`");
        let dims_offset = c.offset();
        let n_dims = c.u32().map_err(|e| e.ctx(field("dimension count")))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                offset: dims_offset,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64().map_err(|e| e.ctx(field("dimension")))?);
        }
        let type_id = c.u32().map_err(|e| e.ctx(field("type id")))?;
        let rel_offset = c.u64().map_err(|e| e.ctx(field("data offset")))?;
        seen.insert(name.clone());
        infos.push(RawTensorInfo {
            name,
            info_offset,
            dims,
            type_id,
            rel_offset,
        });
    }
    Ok(infos)
}

fn validate_tensor(
    raw: RawTensorInfo,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufError> {
    let RawTensorInfo {
        name,
        info_offset,
        dims,
        type_id,
        rel_offset,
    } = raw;
    let dtype = DType::from_ggml_id(type_id).map_err(|source| GgufError::TensorType {
        tensor: name.clone(),
        offset: info_offset,
        source,
    })?;
    let n_bytes = match tensor_n_bytes(&dims, dtype) {
        Ok(n) => n,
        Err(ShapeProblem::ZeroDim(axis)) => {
            return Err(GgufError::ZeroDim {
                tensor: name,
                dims,
                axis,
            });
        }
        Err(ShapeProblem::Overflow) => return Err(GgufError::ShapeOverflow { tensor: name, dims }),
        Err(ShapeProblem::DType(source)) => {
            return Err(GgufError::TensorShape {
                tensor: name,
                dims,
                source,
            });
        }
    };
    if rel_offset % alignment != 0 {
        return Err(GgufError::MisalignedTensor {
            tensor: name,
            offset: rel_offset,
            alignment,
        });
    }
    let start = data_offset.checked_add(rel_offset);
    let end = start.and_then(|s| s.checked_add(n_bytes));
    match (start, end) {
        (Some(offset), Some(end)) if end <= file_len => Ok(TensorInfo {
            name,
            dims,
            dtype,
            offset,
            n_bytes,
        }),
        _ => Err(GgufError::TensorOutOfBounds {
            tensor: name,
            start: start.unwrap_or(u64::MAX),
            end: end.unwrap_or(u64::MAX),
            file_len,
        }),
    }
}

/// Why a shape does not describe a storable tensor of a type.
pub(crate) enum ShapeProblem {
    ZeroDim(usize),
    Overflow,
    DType(DTypeError),
}

/// Bytes a tensor of `dims` (ggml order) and `dtype` takes, fully checked.
pub(crate) fn tensor_n_bytes(dims: &[u64], dtype: DType) -> Result<u64, ShapeProblem> {
    if let Some(axis) = dims.iter().position(|&d| d == 0) {
        return Err(ShapeProblem::ZeroDim(axis));
    }
    let mut n_elements: u64 = 1;
    for &d in dims {
        n_elements = n_elements.checked_mul(d).ok_or(ShapeProblem::Overflow)?;
    }
    let (row_len, rest) = match dims.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (1, &[][..]),
    };
    let row_bytes = dtype.row_bytes(row_len).map_err(ShapeProblem::DType)?;
    // The product of the other dims fits: it divides n_elements.
    let n_rows: u64 = rest.iter().product();
    row_bytes
        .checked_mul(n_rows)
        .ok_or(ShapeProblem::DType(DTypeError::Overflow {
            dtype,
            elems: n_elements,
        }))
}

/// `value` rounded up to a multiple of `alignment` (a power of two); `None` on overflow.
pub(crate) fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    value.checked_add(mask).map(|v| v & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(65, 64), Some(128));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }

    #[test]
    fn n_bytes_checks_zero_ragged_and_overflow() {
        assert!(matches!(tensor_n_bytes(&[32, 3], DType::Q8_0), Ok(102)));
        assert!(matches!(tensor_n_bytes(&[], DType::F32), Ok(4)));
        assert!(matches!(
            tensor_n_bytes(&[4, 0], DType::F32),
            Err(ShapeProblem::ZeroDim(1))
        ));
        assert!(matches!(
            tensor_n_bytes(&[33], DType::Q4_0),
            Err(ShapeProblem::DType(_))
        ));
        assert!(matches!(
            tensor_n_bytes(&[1 << 40, 1 << 30], DType::F32),
            Err(ShapeProblem::Overflow)
        ));
        assert!(matches!(
            tensor_n_bytes(&[1 << 62, 2], DType::F32),
            Err(ShapeProblem::DType(_))
        ));
    }

    #[test]
    fn versions_are_classified() {
        assert!(check_version(2).is_ok());
        assert!(check_version(3).is_ok());
        assert!(matches!(
            check_version(1),
            Err(GgufError::UnsupportedVersion { version: 1 })
        ));
        assert!(matches!(
            check_version(4),
            Err(GgufError::UnsupportedVersion { version: 4 })
        ));
        assert!(matches!(
            check_version(3u32.swap_bytes()),
            Err(GgufError::BigEndian { .. })
        ));
    }
}
