//! Helpers shared by the CLI's integration tests.

use std::path::PathBuf;

/// The pinned stories260K model (`scripts/fetch-assets.sh`; `SMELT_ASSETS`
/// overrides the folder).
pub fn stories() -> PathBuf {
    let dir = std::env::var_os("SMELT_ASSETS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/smelt/assets"),
        PathBuf::from,
    );
    let path = dir.join("stories260K.gguf");
    assert!(
        path.is_file(),
        "missing {}: run scripts/fetch-assets.sh (or set SMELT_ASSETS)",
        path.display()
    );
    path
}
