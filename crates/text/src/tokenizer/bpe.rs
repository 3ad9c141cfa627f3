//! Byte-level BPE: a word's bytes start as one symbol each (the token of the
//! byte's alphabet character); then, repeatedly, the adjacent pair with the
//! lowest merge rank is merged (leftmost first when the same rank appears
//! twice), until no adjacent pair has a merge.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Marks a byte whose alphabet character is not in the vocabulary.
pub(crate) const NO_TOKEN: u32 = u32::MAX;

/// The merge table and the byte → token table of a byte-level BPE vocabulary.
pub(crate) struct BpeModel {
    /// `(left, right)` → `(rank, merged token)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token of each byte's alphabet character, or [`NO_TOKEN`].
    byte_token: Box<[u32; 256]>,
}

/// One symbol of a word being merged: a linked list over the word's bytes.
#[derive(Clone, Copy)]
struct Symbol {
    token: u32,
    prev: usize,
    next: usize,
    alive: bool,
}

/// A candidate merge, ordered by rank then by position (both ascending).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: usize,
    right: usize,
    left_token: u32,
    right_token: u32,
    merged: u32,
}

const NONE: usize = usize::MAX;

impl BpeModel {
    pub(crate) fn new(merges: HashMap<(u32, u32), (u32, u32)>, byte_token: [u32; 256]) -> Self {
        BpeModel {
            merges,
            byte_token: Box::new(byte_token),
        }
    }

    /// Appends the tokens of one pre-tokenized word (raw bytes) to `out`.
    /// A byte with no token becomes `unknown` when there is one, else nothing.
    pub(crate) fn encode_word(&self, word: &[u8], unknown: Option<u32>, out: &mut Vec<u32>) {
        if let [b] = word {
            push_token(self.byte_token[usize::from(*b)], unknown, out);
            return;
        }
        let initial: Vec<u32> = word
            .iter()
            .map(|&b| self.byte_token[usize::from(b)])
            .collect();
        self.merge(&initial, unknown, out);
    }

    /// Merges the symbols `initial` (tokens, or [`NO_TOKEN`] for symbols that
    /// never merge) and appends the result to `out`.
    pub(crate) fn merge(&self, initial: &[u32], unknown: Option<u32>, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = initial
            .iter()
            .enumerate()
            .map(|(i, &token)| Symbol {
                token,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == initial.len() { NONE } else { i + 1 },
                alive: true,
            })
            .collect();
        if symbols.is_empty() {
            return;
        }
        let mut heap = BinaryHeap::with_capacity(symbols.len());
        for i in 1..symbols.len() {
            self.push_candidate(&symbols, i - 1, i, &mut heap);
        }
        while let Some(Reverse(c)) = heap.pop() {
            let (l, r) = (symbols[c.left], symbols[c.right]);
            // Skip candidates made stale by an earlier merge.
            if !l.alive || !r.alive || l.next != c.right || l.token != c.left_token {
                continue;
            }
            if r.token != c.right_token {
                continue;
            }
            symbols[c.left].token = c.merged;
            symbols[c.left].next = r.next;
            symbols[c.right].alive = false;
            if r.next != NONE {
                symbols[r.next].prev = c.left;
                self.push_candidate(&symbols, c.left, r.next, &mut heap);
            }
            if l.prev != NONE {
                self.push_candidate(&symbols, l.prev, c.left, &mut heap);
            }
        }
        let mut i = 0;
        while i != NONE {
            push_token(symbols[i].token, unknown, out);
            i = symbols[i].next;
        }
    }

    fn push_candidate(
        &self,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        heap: &mut BinaryHeap<Reverse<Candidate>>,
    ) {
        let (lt, rt) = (symbols[left].token, symbols[right].token);
        if lt == NO_TOKEN || rt == NO_TOKEN {
            return;
        }
        if let Some(&(rank, merged)) = self.merges.get(&(lt, rt)) {
            heap.push(Reverse(Candidate {
                rank,
                left,
                right,
                left_token: lt,
                right_token: rt,
                merged,
            }));
        }
    }
}

fn push_token(token: u32, unknown: Option<u32>, out: &mut Vec<u32>) {
    if token != NO_TOKEN {
        out.push(token);
    } else if let Some(u) = unknown {
        out.push(u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary over bytes a=0, b=1, c=2 with merges
    /// (a b)→ab=3 rank 0, (ab c)→abc=4 rank 1, (b c)→bc=5 rank 2, (a a)→aa=6 rank 3.
    fn toy() -> BpeModel {
        let mut byte_token = [NO_TOKEN; 256];
        byte_token[usize::from(b'a')] = 0;
        byte_token[usize::from(b'b')] = 1;
        byte_token[usize::from(b'c')] = 2;
        let merges = HashMap::from([
            ((0, 1), (0, 3)),
            ((3, 2), (1, 4)),
            ((1, 2), (2, 5)),
            ((0, 0), (3, 6)),
        ]);
        BpeModel::new(merges, byte_token)
    }

    fn enc(word: &str) -> Vec<u32> {
        let mut out = Vec::new();
        toy().encode_word(word.as_bytes(), Some(99), &mut out);
        out
    }

    #[test]
    fn lowest_rank_first() {
        assert_eq!(enc("abc"), [4]);
        assert_eq!(enc("bc"), [5]);
        assert_eq!(enc("babc"), [1, 4]);
    }

    #[test]
    fn leftmost_first_on_equal_rank() {
        assert_eq!(enc("aaa"), [6, 0]);
        assert_eq!(enc("aaaa"), [6, 6]);
    }

    #[test]
    fn unknown_bytes() {
        assert_eq!(enc("axb"), [0, 99, 1]);
        assert_eq!(enc("x"), [99]);
    }
}
