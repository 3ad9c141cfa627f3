//! Why a tokenizer could not be built from a model file.

/// Why a tokenizer could not be built. Each variant names the metadata key or
/// token index at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required metadata key is absent.
    #[error("tokenizer metadata key `{key}` is missing")]
    MissingKey { key: String },
    /// A metadata key holds a value of the wrong type.
    #[error("tokenizer metadata key `{key}` should be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer Smelt does not implement.
    #[error(
        "tokenizer model `{model}` (tokenizer.ggml.model) is not supported: \
         Smelt reads \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece) and \"gemma4\""
    )]
    UnsupportedModel { model: String },
    /// `tokenizer.ggml.pre` names a pre-tokenizer Smelt does not know.
    #[error("unknown pre-tokenizer `{pre}` (tokenizer.ggml.pre); supported: {supported}")]
    UnknownPreTokenizer { pre: String, supported: String },
    /// A pre-tokenizer regex failed to compile (a bug in Smelt's table).
    #[error("pre-tokenizer `{pre}`: regex {regex:?} does not compile: {message}")]
    Regex {
        pre: String,
        regex: String,
        message: String,
    },
    /// The vocabulary has no tokens.
    #[error("tokenizer.ggml.tokens is empty")]
    EmptyVocab,
    /// The vocabulary has more tokens than a u32 id can name.
    #[error("tokenizer.ggml.tokens has {count} entries, more than u32 ids can name")]
    VocabTooLarge { count: usize },
    /// A per-token array does not have one entry per token.
    #[error("`{key}` has {len} entries but tokenizer.ggml.tokens has {expected}")]
    LengthMismatch {
        key: String,
        len: usize,
        expected: usize,
    },
    /// An entry of `tokenizer.ggml.token_type` is not a known type.
    #[error(
        "tokenizer.ggml.token_type[{index}] is {value}: token types are 0..=6 \
         (undefined, normal, unknown, control, user-defined, unused, byte)"
    )]
    BadTokenType { index: usize, value: i64 },
    /// An entry of `tokenizer.ggml.merges` is not two tokens separated by a space.
    #[error("tokenizer.ggml.merges[{index}] = {text:?} is not \"LEFT RIGHT\"")]
    BadMerge { index: usize, text: String },
    /// A special-token id key names a token outside the vocabulary.
    #[error("`{key}` = {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange {
        key: String,
        id: u64,
        vocab_size: usize,
    },
}
