//! A transformer described as data, and its forward pass.
//!
//! [`ModelConfig`] reads an architecture's hyper-parameters and switches out
//! of GGUF metadata; [`Weights`] binds (and shape-checks) every tensor the
//! config needs and places it on a backend; [`Model::forward`] runs one
//! batched step over rows of `(token, position, sequence)`: prefill is many
//! rows of one sequence, decode one row each of many sequences.

mod config;
mod forward;
pub mod synthetic;
mod weights;

pub use config::{Arch, ModelConfig, SUPPORTED_ARCHS};
pub use forward::{Batch, KV_BLOCK_SIZE, Model};
pub use smelt_backend::KvType;
pub use weights::{LayerWeights, Weights};

/// Errors loading or running a model; each names the key, tensor or limit.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unsupported architecture '{0}': Smelt runs {archs}", archs = SUPPORTED_ARCHS.join(", "))]
    UnsupportedArch(String),
    #[error("model metadata is missing '{0}'")]
    MissingKey(String),
    #[error("model metadata '{key}' = {value}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("model file has no tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    BadShape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error(transparent)]
    Backend(#[from] smelt_backend::BackendError),
    #[error("batch: {0}")]
    BadBatch(String),
}
