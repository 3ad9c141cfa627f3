//! SentencePiece (BPE model, as in Llama 1/2): the text, spaces already
//! written as U+2581, starts as one symbol per UTF-8 character; then,
//! repeatedly, the adjacent pair whose concatenation is a vocabulary piece
//! with the highest score is merged (leftmost first on equal scores). Symbols
//! that end up not being pieces fall back to byte tokens `<0xXX>`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The piece table of a SentencePiece vocabulary.
pub(crate) struct SpmModel {
    /// Text → (token, score) of the pieces that merges may produce.
    pieces: HashMap<String, (u32, f32)>,
    /// Token `<0xXX>` of each byte, if the vocabulary has it.
    byte_token: Box<[Option<u32>; 256]>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge: highest score first, then leftmost.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

const NONE: usize = usize::MAX;

impl SpmModel {
    pub(crate) fn new(pieces: HashMap<String, (u32, f32)>, byte_token: [Option<u32>; 256]) -> Self {
        SpmModel {
            pieces,
            byte_token: Box::new(byte_token),
        }
    }

    /// Appends the tokens of `text` (spaces already escaped) to `out`. Bytes
    /// with neither a piece nor a byte token become `unknown` when there is one.
    pub(crate) fn encode(&self, text: &str, unknown: Option<u32>, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: if i == 0 { NONE } else { i - 1 },
                next: i + 1,
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = NONE;
        }
        let mut heap = BinaryHeap::with_capacity(symbols.len());
        for i in 1..symbols.len() {
            self.push_candidate(text, &symbols, i - 1, i, &mut heap);
        }
        while let Some(c) = heap.pop() {
            let (l, r) = (symbols[c.left], symbols[c.right]);
            // A merged-away symbol has len 0; a grown one no longer matches.
            if l.len == 0 || r.len == 0 || l.next != c.right || l.len + r.len != c.len {
                continue;
            }
            symbols[c.left].len = c.len;
            symbols[c.left].next = r.next;
            symbols[c.right].len = 0;
            if r.next != NONE {
                symbols[r.next].prev = c.left;
                self.push_candidate(text, &symbols, c.left, r.next, &mut heap);
            }
            if l.prev != NONE {
                self.push_candidate(text, &symbols, l.prev, c.left, &mut heap);
            }
        }
        let mut i = 0;
        while i != NONE {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.pieces.get(piece) {
                Some(&(id, _)) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        if let Some(id) = self.byte_token[usize::from(b)].or(unknown) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    fn push_candidate(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        heap: &mut BinaryHeap<Candidate>,
    ) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        let Some(merged) = text.get(start..start + len) else {
            return;
        };
        if let Some(&(_, score)) = self.pieces.get(merged) {
            heap.push(Candidate {
                score,
                left,
                right,
                len,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> SpmModel {
        let pieces = HashMap::from([
            ("a".to_string(), (3, -1.0)),
            ("b".to_string(), (4, -1.0)),
            ("ab".to_string(), (5, -3.0)),
            ("bb".to_string(), (6, -2.0)),
            ("abb".to_string(), (7, -4.0)),
            ("aa".to_string(), (8, -5.0)),
        ]);
        let mut byte_token = [None; 256];
        for b in 0..=255u8 {
            byte_token[usize::from(b)] = Some(100 + u32::from(b));
        }
        byte_token[0xFF] = None;
        SpmModel::new(pieces, byte_token)
    }

    fn enc(text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        toy().encode(text, Some(0), &mut out);
        out
    }

    #[test]
    fn highest_score_first() {
        // "bb" (-2) beats "ab" (-3), then a + bb → "abb".
        assert_eq!(enc("abb"), [7]);
        // The leftmost "bb" wins, then "abb"; "bbb" is not a piece.
        assert_eq!(enc("abbb"), [7, 4]);
        assert_eq!(enc("ab"), [5]);
    }

    #[test]
    fn leftmost_on_ties() {
        assert_eq!(enc("aaa"), [8, 3]);
    }

    #[test]
    fn byte_fallback() {
        assert_eq!(enc("é"), [100 + 0xC3, 100 + 0xA9]);
        assert_eq!(enc("ac"), [3, 100 + u32::from(b'c')]);
    }
}
