//! Model conversion: `smelt quantize IN.gguf OUT.gguf --type q4_k_m`.
//!
//! A [`TensorSource`] (a GGUF file, or a Hugging Face directory:
//! [`HfDirSource`], `smelt convert HF_DIR OUT.gguf`) provides metadata and f32 rows; [`convert`] stores each
//! tensor as the type [`mix_type`] (via [`tensor_type`]) gives it, using
//! smelt-tensor's quantizers; [`convert_to_file`] writes the result
//! atomically (`OUT.tmp-<pid>`, fsync, rename; nothing left on failure).

mod convert;
mod error;
mod hf;
pub mod mix;
mod source;

pub use convert::{Options, Progress, Summary, convert, convert_to_file, quantize_file, temp_path};
pub use error::ConvertError;
pub use hf::HfDirSource;
pub use mix::{Mix, fit_row, mix_type, mix_type_at, tensor_type, use_more_bits};
pub use source::{GgufSource, SourceTensor, TensorSource};
