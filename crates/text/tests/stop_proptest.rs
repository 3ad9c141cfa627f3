//! StopMatcher: for any split of the text into pieces, the printed text is the text truncated
//! at the first stop string to complete (ties: the longest), and nothing after a stop is printed.

use proptest::prelude::*;
use smelt_text::stop::StopMatcher;

/// The reference: scan end positions left to right; at the first position where some stop string
/// ends, cut before the longest one ending there.
fn truncate_at_first_stop<'a>(text: &'a str, stops: &[String]) -> (&'a str, bool) {
    for end in 0..=text.len() {
        let Some(head) = text.get(..end) else {
            continue;
        };
        let hit = stops
            .iter()
            .filter(|s| !s.is_empty() && head.ends_with(s.as_str()))
            .map(String::len)
            .max();
        if let Some(len) = hit {
            return (&text[..end - len], true);
        }
    }
    (text, false)
}

/// Splits `text` at char boundaries near the given cut points.
fn chop<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut p = c % (text.len() + 1);
            while !text.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn run(stops: &[String], pieces: &[&str]) -> (String, bool) {
    let mut matcher = StopMatcher::new(stops.iter().cloned());
    let mut printed = String::new();
    let mut stopped = false;
    for piece in pieces {
        let step = matcher.push(piece);
        printed.push_str(step.text);
        if stopped {
            assert!(step.stopped && step.text.is_empty(), "text after the stop");
        }
        stopped = step.stopped;
    }
    let tail = matcher.finish();
    if stopped {
        assert!(tail.is_empty(), "finish released text after a stop");
    }
    printed.push_str(tail);
    (printed, stopped)
}

/// Text over a small alphabet (with a multi-byte character) so stop strings actually occur.
fn small_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('b'),
            Just('<'),
            Just('|'),
            Just('é'),
            Just('🎉')
        ],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn output_is_input_truncated_at_first_stop(
        text in small_text(40),
        stops in proptest::collection::vec(small_text(5), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..25),
    ) {
        let (want, want_stopped) = truncate_at_first_stop(&text, &stops);
        let (got, stopped) = run(&stops, &chop(&text, &cuts));
        prop_assert_eq!(got.as_str(), want);
        prop_assert_eq!(stopped, want_stopped);
    }

    #[test]
    fn held_text_is_only_a_possible_stop_prefix(
        text in small_text(30),
        stop in small_text(6),
        cuts in proptest::collection::vec(any::<usize>(), 0..25),
    ) {
        // After every push, what was printed plus a proper prefix of the stop string is all that was received.
        let mut matcher = StopMatcher::new([stop.clone()]);
        let mut printed = String::new();
        let mut received = String::new();
        for piece in chop(&text, &cuts) {
            received.push_str(piece);
            let step = matcher.push(piece);
            printed.push_str(step.text);
            if step.stopped {
                break;
            }
            let held = &received[printed.len()..];
            prop_assert!(received.starts_with(printed.as_str()));
            prop_assert!(held.is_empty() || (stop.starts_with(held) && held.len() < stop.len()));
        }
    }
}

#[test]
fn stop_split_over_tokens() {
    let mut m = StopMatcher::new(["<|im_end|>"]);
    let step = m.push("Hello<|");
    assert_eq!((step.text, step.stopped), ("Hello", false));
    let step = m.push("im_");
    assert_eq!((step.text, step.stopped), ("", false));
    let step = m.push("end|>junk");
    assert_eq!((step.text, step.stopped), ("", true));
    assert!(m.is_stopped());
    assert_eq!(m.finish(), "");
}

#[test]
fn false_alarm_is_released() {
    let mut m = StopMatcher::new(["<|im_end|>", "\n\nUser:"]);
    let step = m.push("a <|im");
    assert_eq!((step.text, step.stopped), ("a ", false));
    let step = m.push("_start|>\n");
    assert_eq!((step.text, step.stopped), ("<|im_start|>", false));
    let step = m.push("\nUs");
    assert_eq!((step.text, step.stopped), ("", false));
    assert_eq!(m.finish(), "\n\nUs");
}

#[test]
fn earliest_completion_wins() {
    // "bc" completes before "abcd" could, so generation stops there.
    let mut m = StopMatcher::new(["abcd", "bc"]);
    let step = m.push("xabcd");
    assert_eq!((step.text, step.stopped), ("xa", true));
    // On a tie in end position the longer stop (earlier start) wins.
    let mut m = StopMatcher::new(["c", "abc"]);
    let step = m.push("xabcd");
    assert_eq!((step.text, step.stopped), ("x", true));
}

#[test]
fn no_stops_passes_everything_through() {
    let mut m = StopMatcher::new(Vec::<String>::new());
    assert_eq!(m.push("<|im").text, "<|im");
    let mut m = StopMatcher::new([""]);
    assert!(m.stops().is_empty());
    assert_eq!(m.push("abc").text, "abc");
}
