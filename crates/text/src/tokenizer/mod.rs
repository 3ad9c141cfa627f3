//! The tokenizer stored in a GGUF file, as llama.cpp reads it.
//!
//! Two models are supported, chosen by `tokenizer.ggml.model`:
//! - `"gpt2"`: byte-level BPE. Text is cut into words by the pre-tokenizer
//!   named in `tokenizer.ggml.pre` (a sequence of regexes), each word's bytes
//!   are mapped to GPT-2's byte alphabet and merged by `tokenizer.ggml.merges`
//!   rank.
//! - `"llama"`: SentencePiece BPE. Spaces become U+2581 (`▁`), a `▁` is put in
//!   front of the text (`tokenizer.ggml.add_space_prefix`, default true), and
//!   characters are merged by `tokenizer.ggml.scores`, with byte tokens
//!   `<0xXX>` for what no piece covers.
//!
//! Before either runs, the text is cut at the strings of user-defined tokens
//! (always) and control/unknown tokens (when asked to parse special tokens),
//! longest first; those become their ids directly.
//!
//! A third kind is built from a Hugging Face `tokenizer.json`
//! ([`crate::hf::HfTextConfig`]): the `tokenizers` crate runs its pipeline,
//! while token texts, types, printed bytes and special ids live in the same
//! tables as for GGUF vocabularies.
//!
//! Decoding works per token on bytes ([`Tokenizer::token_bytes`]), since one
//! token may hold part of a UTF-8 character.

mod bpe;
mod build;
mod byte_level;
mod error;
mod gguf;
pub(crate) mod hf_backend;
mod pre;
mod special;
mod spm;

use std::collections::HashMap;

pub use error::TokenizerError;

use bpe::{BpeModel, NO_TOKEN};
use build::{build_bpe, build_spm, byte_tokens, check_id, check_len, printed_bytes};
use byte_level::ByteLevel;
use hf_backend::HfModel;
use pre::PreTokenizer;
use special::{Fragment, SpecialToken};
use spm::SpmModel;

/// What kind of token an id is (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// Ordinary text (also type 0, "undefined").
    Normal,
    /// The unknown token.
    Unknown,
    /// Control tokens: BOS, EOS, chat markers. Print as nothing by default.
    Control,
    /// Added tokens that are plain text kept whole (matched before the model runs).
    UserDefined,
    /// Reserved, never produced.
    Unused,
    /// A SentencePiece byte token `<0xXX>`.
    Byte,
}

impl TokenType {
    /// The type for a `tokenizer.ggml.token_type` value.
    pub fn from_gguf(value: i64) -> Option<TokenType> {
        Some(match value {
            0 | 1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// Which algorithm a vocabulary uses (`tokenizer.ggml.model`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// `"gpt2"`: byte-level BPE with the pre-tokenizer named by
    /// `tokenizer.ggml.pre` (`None`: `"default"`, as llama.cpp does).
    Bpe { pre: Option<String> },
    /// `"llama"`: SentencePiece BPE.
    Spm,
    /// `"gemma4"`: BPE by merge rank over characters, spaces written `▁`,
    /// byte tokens `<0xXX>` for characters outside the vocabulary.
    CharBpe,
}

/// Everything a tokenizer is built from: the GGUF `tokenizer.ggml.*` keys as
/// plain data. [`Tokenizer::from_gguf`] fills one from a file; tests may build
/// one by hand.
#[derive(Clone, Debug)]
pub struct VocabSpec {
    pub kind: VocabKind,
    /// `tokenizer.ggml.tokens`: token texts, index = id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`; empty means all normal.
    pub token_types: Vec<TokenType>,
    /// `tokenizer.ggml.scores` (SentencePiece); empty means all 0.
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges` ("LEFT RIGHT", best first; BPE).
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub eom_id: Option<u32>,
    pub unknown_id: Option<u32>,
    pub padding_id: Option<u32>,
    /// FIM pad/repo/separator ids: llama.cpp also ends generation on these.
    pub fim_ids: Vec<u32>,
    /// `tokenizer.ggml.add_bos_token` (None: the model's default).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` (None: false).
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (None: true for SentencePiece).
    pub add_space_prefix: Option<bool>,
}

/// Token texts that end generation wherever they appear (llama.cpp's list);
/// such tokens are treated as control tokens.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Token texts taken as the end-of-turn token when `eot_token_id` is absent.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// FIM control tokens that llama.cpp also treats as end of generation.
const FIM_END_TEXTS: &[&str] = &[
    "<|fim_pad|>",
    "<fim_pad>",
    "<fim-pad>",
    "<|repo_name|>",
    "<reponame>",
    "<fim-repo>",
    "<|file_sep|>",
    "<file_sep>",
    "<fim-sep>",
];

enum Model {
    Bpe {
        bpe: BpeModel,
        pre: PreTokenizer,
        /// Raw bytes of normal tokens → id, for `ignore_merges` families.
        whole_words: HashMap<Vec<u8>, u32>,
    },
    Spm {
        spm: SpmModel,
        add_space_prefix: bool,
    },
    CharBpe {
        bpe: BpeModel,
        /// Token `<0xXX>` of each byte.
        byte_tokens: Box<[Option<u32>; 256]>,
        add_space_prefix: bool,
    },
    /// A Hugging Face `tokenizer.json`.
    Hf(Box<HfModel>),
}

/// A tokenizer read from a model's vocabulary. Cheap to share (`&self` only).
pub struct Tokenizer {
    model: Model,
    texts: Vec<String>,
    types: Vec<TokenType>,
    text_to_id: HashMap<String, u32>,
    /// What each token prints as, concatenated; token `i` is
    /// `piece_bytes[piece_ends[i-1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
    specials: Vec<SpecialToken>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unknown: Option<u32>,
    padding: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    end_of_generation: Vec<u32>,
}

impl Tokenizer {
    /// Builds the tokenizer described by `spec`.
    pub fn from_spec(spec: VocabSpec) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::build(spec, None, &[])
    }

    /// Builds a tokenizer whose algorithm is `hf` (`spec.kind`, `scores` and
    /// `merges` are then unused) and which also ends generation on
    /// `extra_end_of_generation`.
    pub(crate) fn from_hf_model(
        spec: VocabSpec,
        hf: HfModel,
        extra_end_of_generation: &[u32],
    ) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::build(spec, Some(Box::new(hf)), extra_end_of_generation)
    }

    fn build(
        spec: VocabSpec,
        hf: Option<Box<HfModel>>,
        extra_end_of_generation: &[u32],
    ) -> Result<Tokenizer, TokenizerError> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n).is_err() || n == u32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge { count: n });
        }
        let mut types = if spec.token_types.is_empty() {
            vec![TokenType::Normal; n]
        } else {
            check_len("tokenizer.ggml.token_type", spec.token_types.len(), n)?;
            spec.token_types
        };
        let scores = if spec.scores.is_empty() {
            vec![0.0; n]
        } else {
            check_len("tokenizer.ggml.scores", spec.scores.len(), n)?;
            spec.scores
        };
        let texts = spec.tokens;

        // Text → id. Several tokens may share a text (an added token equal to
        // a byte-level character); a normal token wins, else the first.
        let mut text_to_id: HashMap<String, u32> = HashMap::with_capacity(n);
        for (id, text) in texts.iter().enumerate() {
            let id = id as u32;
            match text_to_id.get(text) {
                Some(&old) if types[old as usize] == TokenType::Normal => {}
                Some(_) if types[id as usize] != TokenType::Normal => {}
                _ => {
                    text_to_id.insert(text.clone(), id);
                }
            }
        }

        let is_spm = hf.is_none() && spec.kind == VocabKind::Spm;
        let bos = check_id(
            "tokenizer.ggml.bos_token_id",
            spec.bos_id.or(is_spm.then_some(1)),
            n,
        )?;
        let eos = check_id(
            "tokenizer.ggml.eos_token_id",
            spec.eos_id.or(is_spm.then_some(2)),
            n,
        )?;
        let unknown = check_id(
            "tokenizer.ggml.unknown_token_id",
            spec.unknown_id.or(is_spm.then_some(0)),
            n,
        )?;
        let padding = check_id("tokenizer.ggml.padding_token_id", spec.padding_id, n)?;
        let eom = check_id("tokenizer.ggml.eom_token_id", spec.eom_id, n)?;
        let eot = check_id("tokenizer.ggml.eot_token_id", spec.eot_id, n)?.or_else(|| {
            END_OF_TURN_TEXTS
                .iter()
                .find_map(|t| text_to_id.get(*t).copied())
        });

        // End of generation: eos/eot/eom, the well-known end texts (forced to
        // control, as llama.cpp does), and FIM control tokens.
        let mut end_of_generation: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(&id) = text_to_id.get(*text) {
                types[id as usize] = TokenType::Control;
                end_of_generation.push(id);
            }
        }
        for text in FIM_END_TEXTS {
            if let Some(&id) = text_to_id.get(*text)
                && types[id as usize] == TokenType::Control
            {
                end_of_generation.push(id);
            }
        }
        for &id in spec.fim_ids.iter().chain(extra_end_of_generation) {
            if (id as usize) < n {
                end_of_generation.push(id);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        // Special strings, longest first (ties: lower id first).
        let mut specials: Vec<SpecialToken> = types
            .iter()
            .enumerate()
            .filter(|(id, t)| {
                matches!(
                    t,
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                ) && !texts[*id].is_empty()
            })
            .map(|(id, t)| SpecialToken {
                text: texts[id].clone(),
                id: id as u32,
                always: *t == TokenType::UserDefined,
            })
            .collect();
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));

        let byte_level = ByteLevel::new();
        let (model, add_bos_default) = match (hf, spec.kind) {
            (Some(hf), _) => (Model::Hf(hf), false),
            (None, VocabKind::Bpe { pre }) => {
                let pre = PreTokenizer::by_name(pre.as_deref().unwrap_or("default"))?;
                let bpe = build_bpe(&spec.merges, &text_to_id, &byte_level)?;
                let mut whole_words = HashMap::new();
                if pre.ignore_merges {
                    for (id, text) in texts.iter().enumerate() {
                        if types[id] == TokenType::Normal {
                            whole_words
                                .entry(byte_level.decode(text))
                                .or_insert(id as u32);
                        }
                    }
                }
                let add_bos = pre.add_bos;
                (
                    Model::Bpe {
                        bpe,
                        pre,
                        whole_words,
                    },
                    add_bos,
                )
            }
            (None, VocabKind::Spm) => (
                Model::Spm {
                    spm: build_spm(&texts, &types, &scores),
                    add_space_prefix: spec.add_space_prefix.unwrap_or(true),
                },
                true,
            ),
            (None, VocabKind::CharBpe) => (
                Model::CharBpe {
                    bpe: build_bpe(&spec.merges, &text_to_id, &byte_level)?,
                    byte_tokens: Box::new(byte_tokens(&texts, &types)),
                    add_space_prefix: spec.add_space_prefix.unwrap_or(false),
                },
                true,
            ),
        };

        let mut piece_bytes = Vec::new();
        let mut piece_ends = Vec::with_capacity(n);
        for (id, text) in texts.iter().enumerate() {
            piece_bytes.extend_from_slice(&printed_bytes(&model, text, types[id], &byte_level));
            piece_ends.push(piece_bytes.len());
        }

        Ok(Tokenizer {
            model,
            texts,
            types,
            text_to_id,
            piece_bytes,
            piece_ends,
            specials,
            bos,
            eos,
            eot,
            eom,
            unknown,
            padding,
            add_bos: spec.add_bos.unwrap_or(add_bos_default),
            add_eos: spec.add_eos.unwrap_or(false),
            end_of_generation,
        })
    }

    /// Tokenizes `text`. With `add_special`, BOS/EOS are added as the
    /// vocabulary's `add_bos_token`/`add_eos_token` flags say. With
    /// `parse_special`, control-token strings in the text (`<|im_start|>`)
    /// become their ids; without it they are tokenized as plain text.
    /// User-defined tokens are matched either way.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        if let Model::Hf(hf) = &self.model {
            hf.encode(text, parse_special, self.unknown, &mut out);
            if add_special && self.add_eos {
                out.extend(self.eos);
            }
            return out;
        }
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            special::partition(text, &self.specials, parse_special)
        };
        match &self.model {
            Model::Bpe {
                bpe,
                pre,
                whole_words,
            } => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            for word in pre.split(t) {
                                if let Some(&id) = whole_words.get(word.as_bytes()) {
                                    out.push(id);
                                } else {
                                    bpe.encode_word(word.as_bytes(), self.unknown, &mut out);
                                }
                            }
                        }
                    }
                }
            }
            Model::Hf(_) => {}
            Model::Spm {
                add_space_prefix, ..
            }
            | Model::CharBpe {
                add_space_prefix, ..
            } => {
                // A space is put before the text and after each special token.
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut escaped = String::with_capacity(t.len() + 3);
                            if *add_space_prefix && after_special {
                                escaped.push('\u{2581}');
                            }
                            for c in t.chars() {
                                escaped.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            self.encode_escaped(&escaped, &mut out);
                            after_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Tokenizes text whose spaces are already `▁` (SentencePiece-style models).
    fn encode_escaped(&self, escaped: &str, out: &mut Vec<u32>) {
        match &self.model {
            Model::Spm { spm, .. } => spm.encode(escaped, self.unknown, out),
            Model::CharBpe {
                bpe, byte_tokens, ..
            } => {
                let mut initial = Vec::with_capacity(escaped.len());
                let mut buf = [0u8; 4];
                for c in escaped.chars() {
                    let piece = c.encode_utf8(&mut buf);
                    match self.text_to_id.get(&*piece) {
                        Some(&id) if self.types[id as usize] == TokenType::Normal => {
                            initial.push(id)
                        }
                        _ => {
                            for &b in piece.as_bytes() {
                                initial.push(
                                    byte_tokens[usize::from(b)]
                                        .or(self.unknown)
                                        .unwrap_or(NO_TOKEN),
                                );
                            }
                        }
                    }
                }
                bpe.merge(&initial, self.unknown, out);
            }
            Model::Bpe { .. } | Model::Hf(_) => {}
        }
    }

    /// The bytes token `id` prints as: control, unknown and unused tokens
    /// print as nothing; ids outside the vocabulary too. May be part of a
    /// UTF-8 character.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        match self.types.get(id as usize) {
            Some(TokenType::Control | TokenType::Unknown | TokenType::Unused) | None => &[],
            Some(_) => self.token_bytes_special(id),
        }
    }

    /// Like [`Tokenizer::token_bytes`], but control, unknown and unused tokens
    /// print as their text (`<|im_end|>`).
    pub fn token_bytes_special(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let Some(&end) = self.piece_ends.get(i) else {
            return &[];
        };
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        &self.piece_bytes[start..end]
    }

    /// The text of `ids`, as a whole (lossy UTF-8; control tokens omitted).
    /// For SentencePiece vocabularies with a space prefix, the first space of
    /// the text is dropped (it is the prefix the encoder added).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        if self.add_space_prefix() && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (`tokenizer.ggml.eot_token_id`, or a well-known
    /// end-of-turn text such as `<|im_end|>`).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// End-of-message token (`tokenizer.ggml.eom_token_id`).
    pub fn eom_id(&self) -> Option<u32> {
        self.eom
    }

    /// The unknown token.
    pub fn unknown_id(&self) -> Option<u32> {
        self.unknown
    }

    /// The padding token.
    pub fn padding_id(&self) -> Option<u32> {
        self.padding
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// Whether the encoder puts a space before the text (SentencePiece), so
    /// that the first printed token of a whole text starts with a space that
    /// is not part of the text.
    pub fn add_space_prefix(&self) -> bool {
        match &self.model {
            Model::Spm {
                add_space_prefix, ..
            }
            | Model::CharBpe {
                add_space_prefix, ..
            } => *add_space_prefix,
            Model::Hf(hf) => hf.add_space_prefix,
            Model::Bpe { .. } => false,
        }
    }

    /// Whether generating `id` ends generation.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending: EOS, EOT, EOM and the tokens
    /// llama.cpp recognises by text (`<|im_end|>`, `<|endoftext|>`,
    /// `<|eot_id|>`, `<end_of_turn>`, `<|end|>`, ...).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The id of the token whose text is exactly `text` (GGUF spelling: byte
    /// alphabet for BPE, `▁` for SentencePiece; special tokens as written).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    /// The text of token `id` as stored in the GGUF file.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The type of token `id`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The `tokenizer.ggml.pre` pre-tokenizer in use (GGUF BPE only).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        match &self.model {
            Model::Bpe { pre, .. } => Some(pre.name()),
            Model::Spm { .. } | Model::CharBpe { .. } | Model::Hf(_) => None,
        }
    }

    /// Whether the tokenizer runs a Hugging Face `tokenizer.json`.
    pub fn is_hf(&self) -> bool {
        matches!(self.model, Model::Hf(_))
    }
}

#[cfg(test)]
mod tests;
