//! A transformer described as data, and its forward pass.
//!
//! [`ModelConfig`] reads an architecture's hyper-parameters and switches out
//! of GGUF metadata or an HF `config.json`: Llama (and Mistral), Qwen2,
//! Qwen3, Gemma 3 and Phi-3 are settings of one transformer. [`Weights`]
//! binds (and shape-checks) every tensor the config needs from a GGUF file
//! or an HF safetensors directory and places it on a backend; [`Model::forward`] runs one
//! batched step over rows of `(token, position, sequence)`: prefill is many
//! rows of one sequence, decode one row each of many sequences.

mod config;
mod decode;
mod forward;
mod gguf_meta;
mod hf;
mod hf_config;
mod safetensors;
mod source;
pub mod synthetic;
mod teacher;
mod weights;

pub use config::{
    Arch, FfnActivation, Llama3Rope, ModelConfig, SUPPORTED_ARCHS, SUPPORTED_HF_MODEL_TYPES,
};
pub use forward::{Batch, KV_BLOCK_SIZE, Model};
pub use hf::HfSource;
pub use smelt_backend::{KvType, RopeStyle};
pub use source::{GgufSource, TensorSource};
pub use teacher::teacher_forced_logits;
pub use weights::{LayerWeights, Weights};

/// Errors loading or running a model; each names the key, tensor or limit.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "unsupported architecture '{0}': Smelt runs GGUF architectures {archs} (Mistral as llama) and HF model types {hf}",
        archs = SUPPORTED_ARCHS.join(", "),
        hf = SUPPORTED_HF_MODEL_TYPES.join(", ")
    )]
    UnsupportedArch(String),
    #[error("the {backend} backend cannot run this {arch} model: it has no {feature} yet")]
    Unsupported {
        backend: &'static str,
        arch: &'static str,
        feature: &'static str,
    },
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
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
