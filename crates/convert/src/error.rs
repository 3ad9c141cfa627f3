//! [`ConvertError`]: everything that can stop a conversion, naming the file,
//! tensor or row involved.

use std::ops::Range;
use std::path::PathBuf;

use smelt_gguf::GgufError;
use smelt_tensor::{DType, QuantizeError};

/// Why a conversion failed. Nothing is left at the output path when it does.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: GgufError },
    #[error("{}: {source}", dir.display())]
    HfModel {
        dir: PathBuf,
        source: smelt_model::ModelError,
    },
    #[error("{0}")]
    HfText(smelt_text::hf::HfError),
    #[error("the output {} is the input file; write to another path", .0.display())]
    OutputIsInput(PathBuf),
    #[error("tensor index {0} does not exist in the source")]
    NoSuchTensor(usize),
    #[error("tensor {tensor}: rows {rows:?} are outside its {n_rows} rows")]
    RowRange {
        tensor: String,
        rows: Range<u64>,
        n_rows: u64,
    },
    #[error("tensor {tensor}: {n_rows} rows of {row_len} values do not fit in memory")]
    TooLarge {
        tensor: String,
        n_rows: u64,
        row_len: u64,
    },
    #[error("tensor {tensor} (converting to {target}): {source}")]
    Quantize {
        tensor: String,
        target: DType,
        source: QuantizeError,
    },
    #[error("cannot build the output: {0}")]
    Build(GgufError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cancelled; nothing was written")]
    Cancelled,
}
