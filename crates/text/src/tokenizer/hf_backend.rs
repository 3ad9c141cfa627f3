//! A tokenizer whose algorithm is a Hugging Face `tokenizer.json`, run by the
//! `tokenizers` crate. The vocabulary tables around it (token texts, types,
//! printed bytes, special ids) are the same as for GGUF vocabularies, so
//! streaming and end-of-generation checks do not care where a tokenizer came
//! from.

use std::sync::OnceLock;

/// How a vocabulary's token texts map to the bytes they print as, read from
/// the `tokenizer.json` decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceStyle {
    /// GPT-2's byte alphabet: each character stands for one byte (`Ġ` = space).
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xXX>` tokens are single bytes.
    Metaspace,
    /// The text itself.
    Plain,
}

/// The `tokenizers` pipeline of a `tokenizer.json`.
pub(crate) struct HfModel {
    /// Splits every added token out of the text, special ones included.
    tokenizer: tokenizers::Tokenizer,
    /// A copy that leaves special added tokens as text (made on first use:
    /// `tokenizers` keeps that switch in the tokenizer, not per call).
    literal: OnceLock<tokenizers::Tokenizer>,
    pub(crate) pieces: PieceStyle,
    /// The normalizer or pre-tokenizer puts `▁` in front of the text.
    pub(crate) add_space_prefix: bool,
}

impl HfModel {
    pub(crate) fn new(
        tokenizer: tokenizers::Tokenizer,
        pieces: PieceStyle,
        add_space_prefix: bool,
    ) -> HfModel {
        HfModel {
            tokenizer,
            literal: OnceLock::new(),
            pieces,
            add_space_prefix,
        }
    }

    /// Appends the ids of `text` (no BOS/EOS: the caller adds those). With
    /// `parse_special` off, special added tokens are tokenized as plain text
    /// (HF's `split_special_tokens=True`); non-special added tokens are
    /// matched either way, as for GGUF user-defined tokens.
    pub(crate) fn encode(
        &self,
        text: &str,
        parse_special: bool,
        unknown: Option<u32>,
        out: &mut Vec<u32>,
    ) {
        if text.is_empty() {
            return;
        }
        let tokenizer = if parse_special {
            &self.tokenizer
        } else {
            self.literal.get_or_init(|| {
                let mut t = self.tokenizer.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        match tokenizer.encode_fast(text, false) {
            Ok(encoding) => out.extend_from_slice(encoding.get_ids()),
            // `tokenizers` fails only where a model cannot cover a character
            // and has no unknown token; the text then maps to the unknown id
            // (if any) rather than vanishing silently in the middle.
            Err(_) => out.extend(unknown),
        }
    }
}
