//! Why a Hugging Face model directory's text files could not be read.

use std::path::PathBuf;

use crate::tokenizer::TokenizerError;

/// Why the tokenizer, chat template or special tokens of a Hugging Face
/// directory could not be read. Each variant names the file, and the key
/// where one is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    /// A required file is not in the directory.
    #[error("{}: file not found (a Hugging Face model directory needs it)", path.display())]
    MissingFile { path: PathBuf },
    /// The file exists but could not be read.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The file is not valid JSON, or not the JSON shape expected.
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key holds a value Smelt cannot use.
    #[error("{}: `{key}`: {message}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A special token named by its text is not in the vocabulary.
    #[error("{}: `{key}` is {token:?}, which is not a token of tokenizer.json", path.display())]
    UnknownToken {
        path: PathBuf,
        key: String,
        token: String,
    },
    /// The `tokenizers` library rejected tokenizer.json.
    #[error("{}: {message}", path.display())]
    Tokenizers { path: PathBuf, message: String },
    /// The vocabulary tables could not be built.
    #[error("{}: {source}", path.display())]
    Vocab {
        path: PathBuf,
        #[source]
        source: TokenizerError,
    },
    /// The tokenizer has no GGUF equivalent Smelt can write.
    #[error("{}: cannot export to GGUF: {message}", path.display())]
    Export { path: PathBuf, message: String },
}
