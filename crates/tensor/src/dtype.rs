//! The tensor element types GGUF files use (ggml's `ggml_type` ids) and their
//! block geometry. Quantized types store `block_elems` values in `block_bytes`
//! bytes; plain types are blocks of one element.

use std::fmt;

/// A tensor element type Smelt can compute with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

/// Why a raw type id or a shape does not describe usable tensor data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DTypeError {
    #[error("tensor type {name} (ggml type id {id}) is not supported by Smelt")]
    Unsupported { id: u32, name: &'static str },
    #[error("unknown tensor type id {0}")]
    Unknown(u32),
    #[error("row of {elems} elements is not a multiple of the {dtype} block size {block}")]
    RaggedRow {
        dtype: DType,
        elems: u64,
        block: u64,
    },
    #[error("tensor size overflows: {elems} elements of {dtype}")]
    Overflow { dtype: DType, elems: u64 },
}

impl DType {
    /// Every supported type, in ggml id order.
    pub const ALL: [DType; 14] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2K,
        DType::Q3K,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
        DType::Q8K,
        DType::BF16,
    ];

    /// The `ggml_type` id GGUF stores for this type.
    pub const fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q2K => 10,
            DType::Q3K => 11,
            DType::Q4K => 12,
            DType::Q5K => 13,
            DType::Q6K => 14,
            DType::Q8K => 15,
            DType::BF16 => 30,
        }
    }

    /// Maps a `ggml_type` id to a supported type, naming known-but-unsupported ones.
    pub fn from_ggml_id(id: u32) -> Result<DType, DTypeError> {
        if let Some(t) = DType::ALL.iter().find(|t| t.ggml_id() == id) {
            return Ok(*t);
        }
        let name = match id {
            4 => "Q4_2 (removed)",
            5 => "Q4_3 (removed)",
            9 => "Q8_1",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            31..=33 => "Q4_0 interleaved (removed)",
            34 => "TQ1_0",
            35 => "TQ2_0",
            36..=38 => "IQ4_NL interleaved (removed)",
            39 => "MXFP4",
            _ => return Err(DTypeError::Unknown(id)),
        };
        Err(DTypeError::Unsupported { id, name })
    }

    /// The name llama.cpp and gguf-py use (`Q4_K`, `BF16`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q2K => "Q2_K",
            DType::Q3K => "Q3_K",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
            DType::Q8K => "Q8_K",
        }
    }

    /// Number of elements in one block.
    pub const fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K | DType::Q8K => 256,
        }
    }

    /// Number of bytes one block occupies.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q2K => 84,
            DType::Q3K => 110,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
            DType::Q8K => 292,
        }
    }

    /// Whether values are stored in quantized blocks rather than one by one.
    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes taken by a row of `elems` elements; errors if the row is not whole blocks.
    pub fn row_bytes(self, elems: u64) -> Result<u64, DTypeError> {
        let block = self.block_elems() as u64;
        if !elems.is_multiple_of(block) {
            return Err(DTypeError::RaggedRow {
                dtype: self,
                elems,
                block,
            });
        }
        (elems / block)
            .checked_mul(self.block_bytes() as u64)
            .ok_or(DTypeError::Overflow { dtype: self, elems })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_named() {
        for t in DType::ALL {
            assert_eq!(DType::from_ggml_id(t.ggml_id()), Ok(t));
        }
        assert!(matches!(
            DType::from_ggml_id(16),
            Err(DTypeError::Unsupported {
                name: "IQ2_XXS",
                ..
            })
        ));
        assert_eq!(DType::from_ggml_id(1000), Err(DTypeError::Unknown(1000)));
    }

    #[test]
    fn row_bytes_checks_blocks_and_overflow() {
        assert_eq!(DType::Q4K.row_bytes(512), Ok(288));
        assert_eq!(DType::F16.row_bytes(3), Ok(6));
        assert!(DType::Q4_0.row_bytes(33).is_err());
        assert!(DType::Q8_0.row_bytes(u64::MAX - 31).is_err());
    }
}
