//! Utf8Stream: text chopped into arbitrary byte pieces streams back exactly; arbitrary bytes stream
//! back as their lossy decoding (the same U+FFFD placement as `String::from_utf8_lossy`, which
//! follows the maximal-subpart rule Python's `bytes.decode(errors="replace")` uses).

use proptest::prelude::*;
use smelt_text::stream::Utf8Stream;

/// Splits `bytes` at the given cut points (taken modulo the length, sorted, deduplicated).
fn chop(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

fn stream_all(pieces: &[Vec<u8>]) -> (String, Vec<String>) {
    let mut stream = Utf8Stream::new();
    let mut text = String::new();
    let mut per_piece = Vec::new();
    for piece in pieces {
        let out = stream.push(piece);
        per_piece.push(out.to_owned());
        text.push_str(out);
    }
    text.push_str(stream.finish());
    assert!(!stream.has_pending());
    (text, per_piece)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn valid_text_streams_back_exactly(
        text in "\\PC{0,40}",
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let pieces = chop(text.as_bytes(), &cuts);
        let (streamed, per_piece) = stream_all(&pieces);
        prop_assert_eq!(&streamed, &text);
        // Valid input never produces a replacement character along the way.
        let replacement = char::REPLACEMENT_CHARACTER;
        let replaced = per_piece.iter().any(|p| p.contains(replacement));
        prop_assert!(!replaced || text.contains(replacement));
    }

    #[test]
    fn arbitrary_bytes_stream_as_lossy_decoding(
        bytes in proptest::collection::vec(
            prop_oneof![any::<u8>(), 0x80u8..0xC0, 0xC0u8..0xF8], 0..48),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let pieces = chop(&bytes, &cuts);
        let (streamed, _) = stream_all(&pieces);
        prop_assert_eq!(streamed, String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn each_piece_emits_as_soon_as_possible(
        text in "\\PC{1,20}",
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        // After each piece, the emitted text is exactly the longest valid prefix received so far.
        let bytes = text.as_bytes();
        let pieces = chop(bytes, &cuts);
        let mut stream = Utf8Stream::new();
        let mut emitted = String::new();
        let mut received = 0;
        for piece in &pieces {
            emitted.push_str(stream.push(piece));
            received += piece.len();
            let mut boundary = received;
            while !text.is_char_boundary(boundary) {
                boundary -= 1;
            }
            prop_assert_eq!(emitted.as_str(), &text[..boundary]);
            prop_assert_eq!(stream.has_pending(), boundary != received);
        }
    }
}

#[test]
fn emoji_split_over_tokens_is_held_until_complete() {
    let mut stream = Utf8Stream::new();
    let bytes = "a🎉b".as_bytes(); // 61 F0 9F 8E 89 62
    assert_eq!(stream.push(&bytes[..2]), "a");
    assert_eq!(stream.push(&bytes[2..3]), "");
    assert_eq!(stream.push(&bytes[3..5]), "🎉");
    assert_eq!(stream.push(&bytes[5..]), "b");
    assert_eq!(stream.finish(), "");
}

#[test]
fn invalid_bytes_are_replaced_once_definitely_invalid() {
    let mut stream = Utf8Stream::new();
    // E2 82 starts a 3-byte character; 41 ('A') proves it will never complete.
    assert_eq!(stream.push(&[0xE2]), "");
    assert_eq!(stream.push(&[0x82]), "");
    assert_eq!(stream.push(b"A"), "\u{FFFD}A");
    // A lone continuation byte and a never-valid byte are replaced immediately.
    assert_eq!(stream.push(&[0x80, 0xFF, b'z']), "\u{FFFD}\u{FFFD}z");
    // E0 80 is an overlong start: E0 alone is one maximal subpart, 80 another.
    assert_eq!(stream.push(&[0xE0]), "");
    assert_eq!(stream.push(&[0x80]), "\u{FFFD}\u{FFFD}");
    // A truncated character at the end becomes one U+FFFD on finish.
    assert_eq!(stream.push(&[0xF0, 0x9F, 0x8E]), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    assert_eq!(stream.finish(), "");
}

#[test]
fn output_buffer_is_reused() {
    // After the first push sized it, pushes write into the same allocation.
    let mut stream = Utf8Stream::new();
    let first = stream
        .push("warm-up text, longer than what follows".as_bytes())
        .as_ptr();
    for piece in ["ab".as_bytes(), &[0xC3], &[0xA9], "日本".as_bytes()] {
        let out = stream.push(piece);
        assert!(out.is_empty() || out.as_ptr() == first);
    }
}
