//! What the engine's model-reading tests share.

use std::path::PathBuf;
use std::sync::Arc;

use smelt_gguf::GgufFile;
use smelt_text::tokenizer::Tokenizer;

/// A model of the assets (scripts/fetch-assets.sh; `SMELT_ASSETS` overrides
/// the directory) and its tokenizer.
pub fn open_file(name: &str) -> (Arc<GgufFile>, Tokenizer) {
    let dir = std::env::var_os("SMELT_ASSETS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/smelt/assets"),
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets.sh",
        path.display()
    );
    let file = Arc::new(GgufFile::open(&path).expect("open"));
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    (file, tokenizer)
}
