//! Splitting text on the literal strings of special tokens before the model's
//! own algorithm runs. Tokens are tried longest first; each one cuts every
//! plain-text fragment left by the longer ones at each of its (non-overlapping,
//! left to right) occurrences, and the occurrences become that token's id.

/// A piece of the input: plain text to tokenize, or a token already known.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// A special token as matched in text.
pub(crate) struct SpecialToken {
    pub(crate) text: String,
    pub(crate) id: u32,
    /// Matched even when the caller does not ask for special tokens
    /// (user-defined tokens are plain text that the vocabulary keeps whole).
    pub(crate) always: bool,
}

/// Splits `text` on the `specials` (already sorted longest first). Control and
/// unknown tokens only count when `parse_special` is set.
pub(crate) fn partition<'t>(
    text: &'t str,
    specials: &[SpecialToken],
    parse_special: bool,
) -> Vec<Fragment<'t>> {
    let mut frags = vec![Fragment::Text(text)];
    for special in specials {
        if !(special.always || parse_special) || special.text.is_empty() {
            continue;
        }
        // Cheap pre-check: most special strings never occur.
        let occurs = frags
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(special.text.as_str())));
        if !occurs {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for frag in frags {
            match frag {
                Fragment::Text(t) => {
                    let mut rest = t;
                    while let Some(at) = rest.find(special.text.as_str()) {
                        if at > 0 {
                            next.push(Fragment::Text(&rest[..at]));
                        }
                        next.push(Fragment::Token(special.id));
                        rest = &rest[at + special.text.len()..];
                    }
                    if !rest.is_empty() {
                        next.push(Fragment::Text(rest));
                    }
                }
                token => next.push(token),
            }
        }
        frags = next;
    }
    frags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> Vec<SpecialToken> {
        vec![
            SpecialToken {
                text: "<|im_start|>".into(),
                id: 1,
                always: false,
            },
            SpecialToken {
                text: "<|im|>".into(),
                id: 2,
                always: false,
            },
            SpecialToken {
                text: "  ".into(),
                id: 3,
                always: true,
            },
        ]
    }

    #[test]
    fn splits_longest_first() {
        use Fragment::*;
        assert_eq!(
            partition("a<|im_start|>b<|im|>", &specials(), true),
            [Text("a"), Token(1), Text("b"), Token(2)]
        );
        assert_eq!(
            partition("<|im|><|im|>", &specials(), true),
            [Token(2), Token(2)]
        );
    }

    #[test]
    fn control_tokens_only_when_asked_user_defined_always() {
        use Fragment::*;
        assert_eq!(
            partition("a<|im|>  b", &specials(), false),
            [Text("a<|im|>"), Token(3), Text("b")]
        );
        assert_eq!(partition("", &specials(), true), [Text("")]);
    }
}
