//! Opening a model for generation: a GGUF file or a Hugging Face model
//! directory, the model placed on a device, tokenizer and chat template.

use std::path::Path;
use std::sync::Arc;

use smelt_backend::Backend;
use smelt_cpu::CpuBackend;
use smelt_cuda::CudaBackend;
use smelt_gguf::GgufFile;
use smelt_model::{Model, ModelError};
use smelt_text::chat_template::ChatTemplate;
use smelt_text::hf::HfTextConfig;
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

/// Where a model's weights are.
enum WeightFiles<'a> {
    Gguf(Arc<GgufFile>),
    /// A Hugging Face directory: config.json and safetensors.
    Hf(&'a Path),
}

impl WeightFiles<'_> {
    fn load<B: Backend>(&self, backend: B) -> Result<Model<B>, ModelError> {
        match self {
            WeightFiles::Gguf(file) => Model::load(file.clone(), backend),
            WeightFiles::Hf(dir) => Model::load_hf(dir, backend),
        }
    }
}

/// Opens `model` (a GGUF file, a Hugging Face model directory or a known
/// name) and prepares it to generate.
pub fn load(model: &str, args: &ModelArgs) -> Result<Loaded, String> {
    let path = fetch::resolve(model)?;
    if path.is_dir() {
        return load_hf_dir(&path, args);
    }
    let mut file = GgufFile::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tokenizer =
        Tokenizer::from_gguf(&file).map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
    let template = chat_template(&file);
    release_vocab(&mut file);
    let model = place(&WeightFiles::Gguf(Arc::new(file)), args)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(loaded(model, tokenizer, template, args))
}

/// A Hugging Face directory: weights through `Model::load_hf`, tokenizer,
/// chat template and end-of-generation ids from its JSON files.
fn load_hf_dir(dir: &Path, args: &ModelArgs) -> Result<Loaded, String> {
    // The weights first: config.json is what makes a directory a model.
    let model =
        place(&WeightFiles::Hf(dir), args).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = HfTextConfig::from_dir(dir).map_err(|e| e.to_string())?;
    let template = match text.compile_chat_template() {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Ok(ChatTemplate::fallback()),
        Err(e) => Err(format!("{}: chat template: {e}", dir.display())),
    };
    Ok(loaded(model, text.tokenizer, template, args))
}

fn loaded(
    model: AnyModel,
    tokenizer: Tokenizer,
    template: Result<ChatTemplate, String>,
    args: &ModelArgs,
) -> Loaded {
    let ctx = if args.ctx == 0 {
        model.context_length().min(DEFAULT_CTX_CAP)
    } else {
        args.ctx
    };
    Loaded {
        model,
        tokenizer,
        template,
        ctx,
    }
}

/// Loads the model on the device `--device` names. `auto` takes CUDA when its
/// libraries and a GPU are there and the model loads on it (the backend runs
/// its architecture), else the CPU, saying why.
fn place(files: &WeightFiles<'_>, args: &ModelArgs) -> Result<AnyModel, String> {
    let cpu = || -> Result<AnyModel, String> {
        let backend: CpuBackend = args.cpu_backend()?;
        let model = files.load(backend).map_err(|e| e.to_string())?;
        Ok(AnyModel::Cpu(Box::new(model)))
    };
    let cuda = || -> Result<AnyModel, String> {
        let backend = CudaBackend::new().map_err(|e| format!("--device cuda: {e}"))?;
        let model = files.load(backend).map_err(|e| format!("on CUDA: {e}"))?;
        Ok(AnyModel::Cuda(Box::new(model)))
    };
    match args.device {
        DeviceArg::Cpu => cpu(),
        DeviceArg::Cuda => cuda(),
        DeviceArg::Auto if !smelt_cuda::libraries_present() => cpu(),
        DeviceArg::Auto => cuda().or_else(|e| {
            eprintln!("smelt: not using CUDA ({e}); running on the CPU");
            cpu()
        }),
    }
}

/// The model's chat template, or the ChatML fallback (see
/// [`note_fallback`]: said where a chat is rendered, not at every load).
pub fn chat_template(file: &GgufFile) -> Result<ChatTemplate, String> {
    match ChatTemplate::from_gguf(file) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Ok(ChatTemplate::fallback()),
        Err(e) => Err(format!("chat template: {e}")),
    }
}

/// Tells the user on stderr when chats will be rendered with the ChatML
/// fallback because the model brings no template of its own.
pub fn note_fallback(template: &ChatTemplate) {
    if template.is_fallback() {
        eprintln!(
            "smelt: this model has no chat template (GGUF tokenizer.chat_template, or \
             chat_template.jinja / tokenizer_config.json); using plain ChatML, which the \
             model may not have been trained on"
        );
    }
}
