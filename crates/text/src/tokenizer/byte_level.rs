//! GPT-2's byte-level alphabet: every byte 0..=255 is given a printable
//! Unicode character so that byte-level BPE vocabularies can be stored as
//! text. Bytes that are already printable Latin-1 (`!`..=`~`, `¡`..=`¬`,
//! `®`..=`ÿ`) stand for themselves; the remaining 68 bytes, in increasing
//! order, take the code points U+0100, U+0101, ... (so a space is `Ġ`,
//! U+0120, and a newline is `Ċ`, U+010A).

/// The byte ↔ character tables of the byte-level alphabet.
pub(crate) struct ByteLevel {
    byte_to_char: [char; 256],
    /// Indexed by code point; every alphabet character is below U+0144.
    char_to_byte: [Option<u8>; ALPHABET_END],
}

/// One past the highest code point of the alphabet (U+0100 + 68 extras).
const ALPHABET_END: usize = 0x144;

/// Whether `b` is one of the printable bytes that stand for themselves.
fn is_self_mapped(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

impl ByteLevel {
    /// Builds the table.
    pub(crate) fn new() -> ByteLevel {
        let mut byte_to_char = ['\0'; 256];
        let mut char_to_byte = [None; ALPHABET_END];
        let mut next_extra = 256u32;
        for b in 0..=255u8 {
            let code = if is_self_mapped(b) {
                u32::from(b)
            } else {
                let c = next_extra;
                next_extra += 1;
                c
            };
            // All code points here are below U+0144: valid scalar values.
            byte_to_char[usize::from(b)] = char::from_u32(code).unwrap_or('\u{FFFD}');
            if let Some(slot) = char_to_byte.get_mut(code as usize) {
                *slot = Some(b);
            }
        }
        ByteLevel {
            byte_to_char,
            char_to_byte,
        }
    }

    /// The character standing for byte `b`.
    pub(crate) fn char_of(&self, b: u8) -> char {
        self.byte_to_char[usize::from(b)]
    }

    /// The byte a character of the alphabet stands for, or `None` for a
    /// character outside the alphabet.
    pub(crate) fn byte_of(&self, c: char) -> Option<u8> {
        self.char_to_byte.get(c as usize).copied().flatten()
    }

    /// Encodes raw bytes as alphabet text.
    #[cfg(test)]
    pub(crate) fn encode(&self, bytes: &[u8]) -> String {
        bytes.iter().map(|&b| self.char_of(b)).collect()
    }

    /// Decodes alphabet text back to raw bytes. Characters outside the
    /// alphabet are kept as their own UTF-8 bytes (vocabularies sometimes hold
    /// such tokens; printing them as written is the useful choice).
    pub(crate) fn decode(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match self.byte_of(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        let bl = ByteLevel::new();
        assert_eq!(bl.char_of(b' '), 'Ġ');
        assert_eq!(bl.char_of(b'\n'), 'Ċ');
        assert_eq!(bl.char_of(b'\t'), 'ĉ');
        assert_eq!(bl.char_of(0), 'Ā');
        assert_eq!(bl.char_of(b'a'), 'a');
        assert_eq!(bl.char_of(0xAD), 'Ń');
        assert_eq!(bl.char_of(0xA0), 'ł');
        assert_eq!(bl.char_of(0x7F), 'ġ');
    }

    #[test]
    fn every_byte_round_trips_and_characters_are_distinct() {
        let bl = ByteLevel::new();
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = bl.char_of(b);
            assert!(seen.insert(c), "byte {b} maps to a repeated char {c:?}");
            assert_eq!(bl.byte_of(c), Some(b));
        }
        assert_eq!(bl.byte_of('€'), None);
        assert_eq!(bl.byte_of(' '), None);
        assert_eq!(bl.byte_of('ń'), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(bl.decode(&bl.encode(&all)), all);
    }
}
