//! Opening a model for generation: file, model on the CPU backend,
//! tokenizer and chat template.

use std::sync::Arc;

use smelt_cpu::CpuBackend;
use smelt_cuda::CudaBackend;
use smelt_gguf::GgufFile;
use smelt_model::Model;
use smelt_text::chat_template::ChatTemplate;
use smelt_text::tokenizer::Tokenizer;

use crate::args::{DeviceArg, ModelArgs};
use crate::fetch;

/// Default context when the user gives none: the model's, capped so the KV
/// cache of a large-context model stays small.
const DEFAULT_CTX_CAP: usize = 4096;

/// A model on whichever backend it was placed.
pub enum AnyModel {
    Cpu(Box<Model<CpuBackend>>),
    Cuda(Box<Model<CudaBackend>>),
}

/// Runs `$body` with `$m` bound to the loaded `Model<B>`, whatever `B` is.
macro_rules! with_model {
    ($any:expr, |$m:ident| $body:expr) => {
        match $any {
            $crate::load::AnyModel::Cpu(boxed) => {
                let $m = &**boxed;
                $body
            }
            $crate::load::AnyModel::Cuda(boxed) => {
                let $m = &**boxed;
                $body
            }
        }
    };
}
pub(crate) use with_model;

impl AnyModel {
    /// The context the model was trained for.
    pub fn context_length(&self) -> usize {
        with_model!(self, |m| m.config.context_length)
    }
}

/// Everything needed to generate from one model file.
pub struct Loaded {
    pub model: AnyModel,
    pub tokenizer: Tokenizer,
    /// The chat template (read before the vocabulary was released).
    pub template: Result<ChatTemplate, String>,
    pub ctx: usize,
}

/// The vocabulary arrays of the metadata: once the tokenizer (and the chat
/// template's special tokens) are built from them they are dead weight, tens
/// of megabytes for a 150k vocabulary.
const VOCAB_KEYS: &[&str] = &[
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
];

/// Frees the vocabulary arrays of `file`'s parsed metadata.
pub fn release_vocab(file: &mut GgufFile) {
    for key in VOCAB_KEYS {
        file.take_metadata(key);
    }
}

/// Opens `model` (a path or a known name) and prepares it to generate.
pub fn load(model: &str, args: &ModelArgs) -> Result<Loaded, String> {
    let path = fetch::resolve(model)?;
    let mut file = GgufFile::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tokenizer =
        Tokenizer::from_gguf(&file).map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
    let template = chat_template(&file);
    release_vocab(&mut file);
    let model = place(Arc::new(file), args).map_err(|e| format!("{}: {e}", path.display()))?;
    let ctx = if args.ctx == 0 {
        model.context_length().min(DEFAULT_CTX_CAP)
    } else {
        args.ctx
    };
    Ok(Loaded {
        model,
        tokenizer,
        template,
        ctx,
    })
}

/// Loads the model on the device `--device` names. `auto` takes CUDA when its
/// libraries and a GPU are there and the model loads on it, else the CPU.
fn place(file: Arc<GgufFile>, args: &ModelArgs) -> Result<AnyModel, String> {
    let cpu = |file| -> Result<AnyModel, String> {
        let backend = CpuBackend::new(args.threads).map_err(|e| e.to_string())?;
        let model = Model::load(file, backend).map_err(|e| e.to_string())?;
        Ok(AnyModel::Cpu(Box::new(model)))
    };
    let cuda = |file| -> Result<AnyModel, String> {
        let backend = CudaBackend::new().map_err(|e| format!("--device cuda: {e}"))?;
        let model = Model::load(file, backend).map_err(|e| format!("on CUDA: {e}"))?;
        Ok(AnyModel::Cuda(Box::new(model)))
    };
    match args.device {
        DeviceArg::Cpu => cpu(file),
        DeviceArg::Cuda => cuda(file),
        DeviceArg::Auto if !smelt_cuda::libraries_present() => cpu(file),
        DeviceArg::Auto => cuda(file.clone()).or_else(|e| {
            eprintln!("smelt: not using CUDA ({e}); running on the CPU");
            cpu(file)
        }),
    }
}

/// The model's chat template, or the ChatML fallback with a note on stderr.
pub fn chat_template(file: &GgufFile) -> Result<ChatTemplate, String> {
    match ChatTemplate::from_gguf(file) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => {
            eprintln!(
                "smelt: this model has no chat template (tokenizer.chat_template); \
                 using plain ChatML, which the model may not have been trained on"
            );
            Ok(ChatTemplate::fallback())
        }
        Err(e) => Err(format!("chat template: {e}")),
    }
}
