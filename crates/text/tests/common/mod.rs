//! Where the text crate's tests find the real models and tokenizer files.

use std::path::PathBuf;

/// The assets folder: `SMELT_ASSETS`, else `~/.cache/smelt/assets`.
pub fn assets() -> PathBuf {
    std::env::var_os("SMELT_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/smelt/assets")))
        .expect("neither SMELT_ASSETS nor HOME is set")
}

/// A model file of the assets folder; a test fails naming it (and the
/// script that fetches it) when it is missing.
#[allow(dead_code)] // not every test file opens a model
pub fn asset(name: &str) -> PathBuf {
    let path = assets().join(name);
    assert!(
        path.is_file(),
        "model {} not found: run scripts/fetch-assets.sh (or set SMELT_ASSETS)",
        path.display()
    );
    path
}
