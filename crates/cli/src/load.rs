//! Opening a model for generation: file, model on the CPU backend,
//! tokenizer and chat template.

use std::sync::Arc;

use smelt_cpu::CpuBackend;
use smelt_gguf::GgufFile;
use smelt_model::Model;
use smelt_text::chat_template::ChatTemplate;
use smelt_text::tokenizer::Tokenizer;

use crate::args::ModelArgs;
use crate::fetch;

/// Default context when the user gives none: the model's, capped so the KV
/// cache of a large-context model stays small.
const DEFAULT_CTX_CAP: usize = 4096;

/// Everything needed to generate from one model file.
pub struct Loaded {
    pub model: Model<CpuBackend>,
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
    let backend = CpuBackend::new(args.threads).map_err(|e| e.to_string())?;
    let model =
        Model::load(Arc::new(file), backend).map_err(|e| format!("{}: {e}", path.display()))?;
    let ctx = if args.ctx == 0 {
        model.config.context_length.min(DEFAULT_CTX_CAP)
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
