//! Stop strings across token boundaries.
//!
//! Generation ends when the text contains one of the caller's stop strings, but a stop string
//! usually arrives split over several tokens ("<|im" + "_end|>"). [`StopMatcher`] prints text as
//! soon as it cannot be the start of a stop string, holds back a tail that still could be, and
//! when a stop string completes, prints the text before it and nothing from the stop string on.
//!
//! "The first stop" is the one that completes first, i.e. ends earliest in the text, because that
//! is where a streaming generator notices it and stops; when several end at the same place, the one
//! starting earliest (the longest) wins. The printed text is therefore independent of how the
//! text was split into pieces.

/// What one [`StopMatcher::push`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopStep<'a> {
    /// Text that is now safe to print.
    pub text: &'a str,
    /// A stop string was hit: `text` ends right before it and generation should end.
    pub stopped: bool,
}

/// Finds stop strings in streamed text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Received text not printed yet: a suffix that is a proper prefix of some stop string.
    held: String,
    /// The text returned by the latest call (reused so pushes allocate nothing once it has grown).
    out: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for the given stop strings. Empty strings are ignored (they would match
    /// before any text); with no stop strings every piece is printed at once.
    pub fn new<I, S>(stops: I) -> StopMatcher
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopMatcher {
            stops: stops
                .into_iter()
                .map(Into::into)
                .filter(|s| !s.is_empty())
                .collect(),
            ..StopMatcher::default()
        }
    }

    /// The stop strings being matched.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Feeds the next piece of generated text. After a stop was hit, further pieces are ignored
    /// and every call returns empty text with `stopped` set.
    pub fn push(&mut self, piece: &str) -> StopStep<'_> {
        self.out.clear();
        if self.stopped {
            return StopStep {
                text: &self.out,
                stopped: true,
            };
        }
        self.held.push_str(piece);
        if let Some(start) = self.first_stop() {
            self.out.push_str(&self.held[..start]);
            self.held.clear();
            self.stopped = true;
        } else {
            let keep = self.longest_partial_suffix();
            let emit = self.held.len() - keep;
            self.out.push_str(&self.held[..emit]);
            self.held.drain(..emit);
        }
        StopStep {
            text: &self.out,
            stopped: self.stopped,
        }
    }

    /// Ends the stream: returns the held-back text (it can no longer become a stop string),
    /// or nothing if a stop was hit. The matcher can then be reused.
    pub fn finish(&mut self) -> &str {
        self.out.clear();
        if !self.stopped {
            self.out.push_str(&self.held);
        }
        self.held.clear();
        self.stopped = false;
        &self.out
    }

    /// Whether a stop string has been hit.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The start of the stop string that ends earliest in `held` (the longest one on a tie).
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| {
                self.held
                    .find(stop.as_str())
                    .map(|start| (start + stop.len(), start))
            })
            .min()
            .map(|(_end, start)| start)
    }

    /// The length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn longest_partial_suffix(&self) -> usize {
        let held = self.held.as_str();
        self.stops
            .iter()
            .filter_map(|stop| {
                (1..stop.len().min(held.len() + 1))
                    .rev()
                    .find(|&k| stop.is_char_boundary(k) && held.ends_with(&stop[..k]))
            })
            .max()
            .unwrap_or(0)
    }
}
