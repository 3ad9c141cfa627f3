//! safetensors files: an 8-byte little-endian header length, a JSON header
//! `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": ...}`,
//! then the tensor bytes (offsets relative to the end of the header).
//! Files are memory-mapped; every offset and size is checked against the
//! file before a tensor view is handed out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use serde::Deserialize;
use smelt_backend::{HostTensor, SharedBytes};
use smelt_tensor::DType;

use crate::ModelError;

/// Largest JSON header accepted (real headers are well under 10 MB).
const MAX_HEADER: u64 = 100 << 20;

/// One tensor's entry in the header, checked.
#[derive(Clone, Debug)]
pub struct StEntry {
    pub dtype: DType,
    /// Shape as safetensors gives it: row-major, last dimension contiguous.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// A memory-mapped safetensors file and its parsed header.
pub struct StFile {
    path: String,
    bytes: SharedBytes,
    pub entries: HashMap<String, StEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

struct MappedFile(Mmap);

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl StFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<StFile, ModelError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| ModelError::BadFile {
            path: name.clone(),
            reason: format!("cannot open: {e}"),
        })?;
        // SAFETY: the map is read-only and model files are not modified
        // while open; if another process truncated the file anyway, reads
        // would fault (SIGBUS), the accepted caveat of every mmap loader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::BadFile {
            path: name.clone(),
            reason: format!("cannot map: {e}"),
        })?;
        Self::parse(name, Arc::new(MappedFile(map)))
    }

    /// Parses safetensors bytes (`path` names them in messages).
    pub fn parse(path: String, bytes: SharedBytes) -> Result<StFile, ModelError> {
        let bad = |reason: String| ModelError::BadFile {
            path: path.clone(),
            reason,
        };
        let data: &[u8] = (*bytes).as_ref();
        let Some(len_bytes) = data.get(..8) else {
            return Err(bad(format!(
                "{} bytes is too short for a safetensors header",
                data.len()
            )));
        };
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(len_bytes);
        let header_len = u64::from_le_bytes(len8);
        if header_len > MAX_HEADER || header_len > data.len() as u64 - 8 {
            return Err(bad(format!(
                "header length {header_len} at offset 0 is past the end of the {}-byte file",
                data.len()
            )));
        }
        let body = 8 + header_len as usize;
        let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&data[8..body])
            .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let mut entries = HashMap::with_capacity(header.len());
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let raw: RawEntry = serde_json::from_value(value)
                .map_err(|e| bad(format!("tensor '{name}': bad header entry: {e}")))?;
            let dtype = match raw.dtype.as_str() {
                "F32" => DType::F32,
                "F16" => DType::F16,
                "BF16" => DType::BF16,
                other => {
                    return Err(bad(format!(
                        "tensor '{name}' has dtype {other}; Smelt reads F32, F16 and BF16 safetensors"
                    )));
                }
            };
            let shape = raw
                .shape
                .iter()
                .map(|&d| usize::try_from(d).ok().filter(|&d| d as u64 <= 1 << 32))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| bad(format!("tensor '{name}': shape {:?} too large", raw.shape)))?;
            let n_elems = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor '{name}': shape {shape:?} overflows")))?;
            let [begin, end] = raw.data_offsets;
            let need = (n_elems as u64).checked_mul(dtype.block_bytes() as u64);
            let start = (body as u64).checked_add(begin);
            let stop = (body as u64).checked_add(end);
            match (need, start, stop) {
                (Some(need), Some(start), Some(stop))
                    if begin <= end && end - begin == need && stop <= data.len() as u64 =>
                {
                    entries.insert(
                        name,
                        StEntry {
                            dtype,
                            shape,
                            range: start as usize..stop as usize,
                        },
                    );
                }
                _ => {
                    return Err(bad(format!(
                        "tensor '{name}': data_offsets [{begin}, {end}] do not hold {dtype} {shape:?} inside the {}-byte file (data starts at {body})",
                        data.len()
                    )));
                }
            }
        }
        Ok(StFile {
            path,
            bytes,
            entries,
        })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tensor `name` as a view with ggml dims (the safetensors shape
    /// reversed: `[out, in]` becomes `[in, out]`).
    pub fn tensor(&self, name: &str) -> Result<Option<HostTensor>, ModelError> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let dims: Vec<usize> = if e.shape.is_empty() {
            vec![1]
        } else {
            e.shape.iter().rev().copied().collect()
        };
        Ok(Some(HostTensor::new(
            name,
            self.bytes.clone(),
            e.range.clone(),
            e.dtype,
            dims,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn parse(bytes: Vec<u8>) -> Result<StFile, ModelError> {
        StFile::parse("test.safetensors".into(), Arc::new(bytes))
    }

    #[test]
    fn reads_a_tensor_in_ggml_dims_without_copying() {
        let data: Vec<u8> = (0..6u16)
            .flat_map(|i| half::bf16::from_f32(i as f32 - 2.5).to_le_bytes())
            .collect();
        let st = parse(file(
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}}"#,
            &data,
        ))
        .expect("parse");
        let t = st.tensor("w").expect("ok").expect("present");
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(t.dtype(), DType::BF16);
        assert_eq!(t.row(1), &data[6..12]);
        assert!(st.tensor("missing").expect("ok").is_none());
    }

    #[test]
    fn rejects_bad_headers_with_the_reason() {
        let cases: [(Vec<u8>, &str); 5] = [
            (vec![1, 2, 3], "too short"),
            (
                file("{}", &[]).into_iter().take(9).collect(),
                "past the end",
            ),
            (file("[1,2]", &[]), "not a JSON object"),
            (
                file(
                    r#"{"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#,
                    &[0, 0],
                ),
                "dtype I8",
            ),
            (
                file(
                    r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0; 4],
                ),
                "data_offsets",
            ),
        ];
        for (bytes, want) in cases {
            match parse(bytes) {
                Err(e) => assert!(e.to_string().contains(want), "{e} lacks '{want}'"),
                Ok(_) => panic!("accepted a file that should fail with '{want}'"),
            }
        }
    }
}
