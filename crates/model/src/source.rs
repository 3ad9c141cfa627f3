//! Where weights come from. The weight binder asks for tensors by their GGUF
//! names (`blk.3.attn_q.weight`) and gets host views in ggml dims order;
//! a [`TensorSource`] per file format answers: a GGUF file directly, an HF
//! safetensors directory through a name map (hf.rs).

use std::sync::Arc;

use smelt_backend::{HostTensor, SharedBytes};
use smelt_gguf::GgufFile;

use crate::ModelError;

/// Tensors of one model, looked up by GGUF name.
pub trait TensorSource {
    /// The tensor GGUF calls `name`, as a view of its stored bytes with
    /// ggml dims (`dims[0]` the row length); None if the model has none.
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>, ModelError>;

    /// Whether the model must have its own `output.weight` (an HF config
    /// that does not tie embeddings); GGUF ties by leaving it out.
    fn output_required(&self) -> bool {
        false
    }

    /// How this source names the tensor GGUF calls `name`, for messages.
    fn describe(&self, name: &str) -> String {
        name.to_string()
    }
}

/// The model file's bytes, shared by every tensor view into them.
struct FileBytes(Arc<GgufFile>);

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// A GGUF file as a tensor source: views into its memory map.
pub struct GgufSource {
    file: Arc<GgufFile>,
    owner: SharedBytes,
}

impl GgufSource {
    pub fn new(file: Arc<GgufFile>) -> Self {
        GgufSource {
            owner: Arc::new(FileBytes(file.clone())),
            file,
        }
    }
}

impl TensorSource for GgufSource {
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>, ModelError> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let dims = info
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| ModelError::BadShape {
                name: name.to_string(),
                found: info.dims.clone(),
                expected: vec![],
            })?;
        let start = info.offset as usize;
        let t = HostTensor::new(
            name,
            self.owner.clone(),
            start..start + info.n_bytes as usize,
            info.dtype,
            dims,
        )?;
        Ok(Some(t))
    }
}
