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
    pub file: Arc<GgufFile>,
    pub model: Model<CpuBackend>,
    pub tokenizer: Tokenizer,
    pub ctx: usize,
}

/// Opens `model` (a path or a known name) and prepares it to generate.
pub fn load(model: &str, args: &ModelArgs) -> Result<Loaded, String> {
    let path = fetch::resolve(model)?;
    let file = GgufFile::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = Arc::new(file);
    let backend = CpuBackend::new(args.threads).map_err(|e| e.to_string())?;
    let model =
        Model::load(file.clone(), backend).map_err(|e| format!("{}: {e}", path.display()))?;
    let tokenizer =
        Tokenizer::from_gguf(&file).map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
    let ctx = if args.ctx == 0 {
        model.config.context_length.min(DEFAULT_CTX_CAP)
    } else {
        args.ctx
    };
    Ok(Loaded {
        file,
        model,
        tokenizer,
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
