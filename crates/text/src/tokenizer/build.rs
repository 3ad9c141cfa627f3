//! Helpers of [`Tokenizer::from_spec`](super::Tokenizer::from_spec): checking the per-token
//! arrays and ids, building the BPE and SentencePiece tables, and what each token prints as.

use std::collections::HashMap;

use super::bpe::{BpeModel, NO_TOKEN};
use super::byte_level::ByteLevel;
use super::hf_backend::PieceStyle;
use super::spm::SpmModel;
use super::{Model, TokenType, TokenizerError};

pub(super) fn check_len(key: &str, len: usize, expected: usize) -> Result<(), TokenizerError> {
    if len == expected {
        Ok(())
    } else {
        Err(TokenizerError::LengthMismatch {
            key: key.to_string(),
            len,
            expected,
        })
    }
}

/// Checks a special-token id against the vocabulary. `u32::MAX` (-1 as
/// written by some converters) means "none".
pub(super) fn check_id(
    key: &str,
    id: Option<u32>,
    n: usize,
) -> Result<Option<u32>, TokenizerError> {
    match id {
        None | Some(u32::MAX) => Ok(None),
        Some(id) if (id as usize) < n => Ok(Some(id)),
        Some(id) => Err(TokenizerError::IdOutOfRange {
            key: key.to_string(),
            id: u64::from(id),
            vocab_size: n,
        }),
    }
}

pub(super) fn build_bpe(
    merges: &[String],
    text_to_id: &HashMap<String, u32>,
    byte_level: &ByteLevel,
) -> Result<BpeModel, TokenizerError> {
    let mut table = HashMap::with_capacity(merges.len());
    let mut merged = String::new();
    for (rank, merge) in merges.iter().enumerate() {
        // The separator is the first space after the first character (a
        // token may itself be a space in some vocabularies).
        let first_len = merge.chars().next().map_or(0, char::len_utf8);
        let Some(sep) = merge.get(first_len..).and_then(|r| r.find(' ')) else {
            return Err(TokenizerError::BadMerge {
                index: rank,
                text: merge.clone(),
            });
        };
        let (left, right) = (&merge[..first_len + sep], &merge[first_len + sep + 1..]);
        merged.clear();
        merged.push_str(left);
        merged.push_str(right);
        // Merges whose parts or result are not tokens can never apply.
        if let (Some(&l), Some(&r), Some(&m)) = (
            text_to_id.get(left),
            text_to_id.get(right),
            text_to_id.get(merged.as_str()),
        ) {
            table.entry((l, r)).or_insert((rank as u32, m));
        }
    }
    let mut byte_token = [NO_TOKEN; 256];
    let mut buf = [0u8; 4];
    for b in 0..=255u8 {
        let c = byte_level.char_of(b).encode_utf8(&mut buf);
        if let Some(&id) = text_to_id.get(&*c) {
            byte_token[usize::from(b)] = id;
        }
    }
    Ok(BpeModel::new(table, byte_token))
}

pub(super) fn build_spm(texts: &[String], types: &[TokenType], scores: &[f32]) -> SpmModel {
    let mut pieces = HashMap::with_capacity(texts.len());
    for (id, text) in texts.iter().enumerate() {
        if matches!(types[id], TokenType::Normal | TokenType::UserDefined) {
            pieces
                .entry(text.clone())
                .or_insert((id as u32, scores[id]));
        }
    }
    SpmModel::new(pieces, byte_tokens(texts, types))
}

/// The byte tokens `<0xXX>` of a vocabulary, by byte.
pub(super) fn byte_tokens(texts: &[String], types: &[TokenType]) -> [Option<u32>; 256] {
    let mut byte_token = [None; 256];
    for (id, text) in texts.iter().enumerate() {
        if types[id] == TokenType::Byte
            && let Some(b) = parse_byte_token(text)
        {
            byte_token[usize::from(b)].get_or_insert(id as u32);
        }
    }
    byte_token
}

/// The byte of a SentencePiece byte token `<0xXX>`.
pub(super) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// What a token prints as (for hidden types: their text).
pub(super) fn printed_bytes(
    model: &Model,
    text: &str,
    ty: TokenType,
    byte_level: &ByteLevel,
) -> Vec<u8> {
    let style = match model {
        Model::Bpe { .. } => PieceStyle::ByteLevel,
        Model::Spm { .. } | Model::CharBpe { .. } => PieceStyle::Metaspace,
        Model::Hf(hf) => hf.pieces,
    };
    match (style, ty) {
        (
            _,
            TokenType::Control | TokenType::Unknown | TokenType::Unused | TokenType::UserDefined,
        )
        | (PieceStyle::Plain, _) => text.as_bytes().to_vec(),
        (PieceStyle::ByteLevel, TokenType::Normal | TokenType::Byte) => byte_level.decode(text),
        (PieceStyle::Metaspace, TokenType::Byte) => match parse_byte_token(text) {
            Some(b) => vec![b],
            None => text.as_bytes().to_vec(),
        },
        (PieceStyle::Metaspace, TokenType::Normal) => text.replace('\u{2581}', " ").into_bytes(),
    }
}
