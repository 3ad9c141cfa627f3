//! Pre-tokenizers of byte-level BPE vocabularies, chosen by the GGUF key
//! `tokenizer.ggml.pre`. Each is a sequence of regexes applied in order: every
//! regex splits every piece left by the previous ones into its matches and the
//! (non-empty) gaps between them, so no text is ever dropped. The regex texts
//! are those of each model family's published tokenizer configuration (the
//! `Split` / `ByteLevel` / `Digits` / `Punctuation` steps written as regexes).

use fancy_regex::Regex;

use super::TokenizerError;

/// GPT-2's word split (HF `ByteLevel` with `use_regex`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's split (tiktoken cl100k style; the contractions spelled
/// case-insensitively without a Unicode case-folding flag).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's split: Qwen2's with combining marks kept inside words.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's split (tiktoken o200k).
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken split.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Each digit on its own (HF `Digits(individual_digits=true)`).
const SINGLE_DIGITS: &str = r"\p{N}";

/// BLOOM-family split: runs of anything but whitespace and sentence punctuation.
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// CJK ideographs, Hangul and friends as one piece (DeepSeek).
const DEEPSEEK_CJK: &str = r"[一-龥ࠀ-一가-퟿]+";

/// A DeepSeek-LLM word: an optional space and letters of the cased scripts.
/// Written with escapes: several of these characters have canonical
/// equivalents that text tools silently substitute.
const DEEPSEEK_LLM_LETTERS: &str = concat!(
    r"\s?[",
    r"A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}",
    r"-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}",
    r"\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}",
    r"\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}",
    r"-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}",
    r"\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}",
    r"-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}",
    r"-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}",
    r"-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}",
    r"\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}",
    r"\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}",
    r"-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}",
    r"-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}",
    r"\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}",
    r"-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}",
    r"-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}",
    r"-\x{118DF}\x{1E900}-\x{1E943}",
    r"]+"
);

/// One family of pre-tokenizers: the `tokenizer.ggml.pre` names that select
/// it, its regexes, and the defaults it implies.
struct Family {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    /// A word that is itself a vocabulary token is emitted whole, without
    /// running the merges (HF BPE `ignore_merges`).
    ignore_merges: bool,
    /// Default of `tokenizer.ggml.add_bos_token` when the key is absent.
    add_bos: bool,
}

const FAMILIES: &[Family] = &[
    Family {
        names: &["default"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["gpt-2", "phi-2", "mpt", "olmo"],
        regexes: &[GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["llama-bpe", "llama3", "llama-v3", "falcon3"],
        regexes: &[LLAMA3],
        ignore_merges: true,
        add_bos: true,
    },
    Family {
        names: &["dbrx", "smaug-bpe"],
        regexes: &[LLAMA3],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["qwen2", "stablelm2", "deepseek-r1-qwen", "megrez"],
        regexes: &[QWEN2],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["qwen35"],
        regexes: &[QWEN35],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        regexes: &[SINGLE_DIGITS, GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["falcon"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["deepseek-llm"],
        regexes: &[
            r"[\r\n]",
            DEEPSEEK_LLM_LETTERS,
            r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
            r"\s+$",
            DEEPSEEK_CJK,
            r"\p{N}+",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["deepseek-coder"],
        regexes: &[
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            DEEPSEEK_CJK,
            r"\p{N}",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["deepseek-v3"],
        regexes: &[
            r"\p{N}{1,3}",
            r"[一-龥぀-ゟ゠-ヿ]+",
            r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["gpt-4o", "llama4"],
        regexes: &[GPT4O],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["tekken"],
        regexes: &[TEKKEN],
        ignore_merges: true,
        add_bos: false,
    },
    Family {
        names: &["bloom", "poro-chat", "gpt3-finnish"],
        regexes: &[BLOOM],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["viking"],
        regexes: &[BLOOM, SINGLE_DIGITS],
        ignore_merges: false,
        add_bos: false,
    },
];

/// Every supported `tokenizer.ggml.pre` value, comma-separated, for messages.
pub(crate) fn supported_names() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A compiled pre-tokenizer.
pub(crate) struct PreTokenizer {
    name: String,
    regexes: Vec<Regex>,
    pub(crate) ignore_merges: bool,
    pub(crate) add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer named `name` (a `tokenizer.ggml.pre` value).
    pub(crate) fn by_name(name: &str) -> Result<PreTokenizer, TokenizerError> {
        let family = FAMILIES
            .iter()
            .find(|f| f.names.contains(&name))
            .ok_or_else(|| TokenizerError::UnknownPreTokenizer {
                pre: name.to_string(),
                supported: supported_names(),
            })?;
        let regexes = family
            .regexes
            .iter()
            .map(|r| {
                Regex::new(r).map_err(|e| TokenizerError::Regex {
                    pre: name.to_string(),
                    regex: (*r).to_string(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreTokenizer {
            name: name.to_string(),
            regexes,
            ignore_merges: family.ignore_merges,
            add_bos: family.add_bos,
        })
    }

    /// The `tokenizer.ggml.pre` name this was built from.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Splits `text` into words; the words concatenate back to `text`.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces: Vec<&'t str> = if text.is_empty() {
            Vec::new()
        } else {
            vec![text]
        };
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                split_one(re, piece, &mut next);
            }
            pieces = next;
        }
        pieces
    }
}

/// Splits `piece` into matches of `re` and the gaps between them.
fn split_one<'t>(re: &Regex, piece: &'t str, out: &mut Vec<&'t str>) {
    let mut last = 0;
    for m in re.find_iter(piece) {
        // A regex engine error (backtrack limit) leaves the rest unsplit.
        let Ok(m) = m else { break };
        if m.start() == m.end() {
            continue;
        }
        if m.start() > last {
            out.push(&piece[last..m.start()]);
        }
        out.push(m.as_str());
        last = m.end();
    }
    if last < piece.len() {
        out.push(&piece[last..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::by_name(pre).expect("known pre-tokenizer");
        p.split(text).into_iter().map(str::to_string).collect()
    }

    #[test]
    fn every_family_compiles() {
        for f in FAMILIES {
            for name in f.names {
                assert!(PreTokenizer::by_name(name).is_ok(), "{name}");
            }
        }
    }

    #[test]
    fn unknown_name_lists_the_supported_ones() {
        let Err(e) = PreTokenizer::by_name("nonesuch") else {
            panic!("nonesuch accepted")
        };
        let msg = e.to_string();
        assert!(msg.contains("nonesuch") && msg.contains("llama-bpe") && msg.contains("qwen2"));
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("gpt-2", "Hello world  it's 42!\n"),
            ["Hello", " world", " ", " it", "'s", " 42", "!", "\n"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_qwen2_singly() {
        assert_eq!(words("llama-bpe", "12345"), ["123", "45"]);
        assert_eq!(words("qwen2", "123"), ["1", "2", "3"]);
        assert_eq!(
            words("llama-bpe", "I'M  ok\n\n"),
            ["I", "'M", " ", " ok", "\n\n"]
        );
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(words("smollm", "a 12"), ["a", " ", "1", "2"]);
    }

    #[test]
    fn pieces_concatenate_to_the_input() {
        let text = "  Héllo,\tWörld!! 123 4567 ---\n\n \u{1F680}中文 it's";
        for f in FAMILIES {
            for name in f.names {
                assert_eq!(words(name, text).concat(), text, "{name}");
            }
        }
    }
}
