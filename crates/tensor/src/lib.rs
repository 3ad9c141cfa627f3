//! Element types of tensors as GGUF stores them, their block layouts, and the
//! plain scalar reference kernels every faster backend is tested against.

pub mod dtype;

pub use dtype::{DType, DTypeError};
pub mod reference;

pub use reference::{dequantize_row, dot_f32, dot_row};
pub mod quantize;

pub use quantize::{QuantizeError, can_quantize, quantize, quantize_row, quantize_row_minmax};
