//! Streaming detokenization: token byte strings in, printable UTF-8 text out.
//!
//! A byte-level BPE token can end in the middle of a multi-byte character (an emoji is often two
//! or three tokens), so decoding each token on its own would print U+FFFD for every split
//! character. [`Utf8Stream`] holds back an incomplete sequence until the bytes that finish it
//! arrive. Bytes that can never become a character are replaced by U+FFFD as soon as that is
//! certain, one replacement per maximal invalid subpart (the WHATWG / Unicode "substitution of
//! maximal subparts" rule that `String::from_utf8_lossy` and Python's
//! `bytes.decode("utf-8", "replace")` follow), so the streamed text is exactly the lossy decoding
//! of all the bytes at once, however they were split.

/// Decodes a stream of byte pieces into text without splitting characters.
///
/// The returned `&str` points into a buffer the stream reuses, so pushing a token allocates
/// nothing once that buffer has grown to the largest output seen.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    /// The start of a character whose remaining bytes have not arrived yet (at most 3 bytes).
    pending: [u8; 4],
    pending_len: usize,
    /// The text returned by the latest call.
    out: String,
}

impl Utf8Stream {
    /// An empty stream.
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Feeds the bytes of one token and returns the text they complete: everything decodable so
    /// far that was not returned before, minus a trailing incomplete character.
    pub fn push(&mut self, bytes: &[u8]) -> &str {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.push_to(bytes, &mut out);
        self.out = out;
        &self.out
    }

    /// Like [`push`](Self::push), but appends the text to `out` instead of returning it.
    pub fn push_to(&mut self, bytes: &[u8], out: &mut String) {
        let mut input = bytes;
        if self.pending_len > 0 {
            input = self.complete_pending(input, out);
            if self.pending_len > 0 {
                return; // the whole input went into the still-incomplete character
            }
        }
        loop {
            match std::str::from_utf8(input) {
                Ok(text) => {
                    out.push_str(text);
                    return;
                }
                Err(e) => {
                    let (valid, rest) = input.split_at(e.valid_up_to());
                    // `valid` was just validated, so this cannot fail.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            input = rest.get(bad..).unwrap_or_default();
                        }
                        None => {
                            // An incomplete character at the end (1 to 3 bytes): keep it.
                            self.pending[..rest.len()].copy_from_slice(rest);
                            self.pending_len = rest.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Moves bytes from `input` into the pending character until it is complete (written to
    /// `out`), proven invalid (one U+FFFD written for the maximal invalid subpart; the byte that
    /// proved it stays in the input), or the input runs out (still pending). Returns the unused
    /// rest of `input`.
    fn complete_pending<'a>(&mut self, input: &'a [u8], out: &mut String) -> &'a [u8] {
        let have = self.pending_len;
        let take = input.len().min(4 - have);
        let mut buf = self.pending;
        buf[have..have + take].copy_from_slice(&input[..take]);
        let candidate = &buf[..have + take];
        let (replacement, used) = match std::str::from_utf8(candidate) {
            Ok(text) => (text.chars().next(), None),
            Err(e) if e.valid_up_to() > 0 => (
                std::str::from_utf8(&candidate[..e.valid_up_to()])
                    .ok()
                    .and_then(|t| t.chars().next()),
                None,
            ),
            Err(e) => match e.error_len() {
                None => {
                    // Still a valid but incomplete prefix: all of the input is part of it.
                    self.pending = buf;
                    self.pending_len = have + take;
                    return &input[take..];
                }
                // The maximal invalid subpart: the pending bytes and maybe some of the input
                // (E0 A0 then 41: E0 A0 is one subpart); the byte that broke it is decoded afresh.
                Some(bad) => (None, Some(bad.saturating_sub(have))),
            },
        };
        self.pending_len = 0;
        match (replacement, used) {
            (Some(c), _) => {
                out.push(c);
                // The pending bytes were an incomplete prefix, so the character reaches into the input.
                input
                    .get(c.len_utf8().saturating_sub(have)..)
                    .unwrap_or_default()
            }
            (None, used) => {
                out.push(char::REPLACEMENT_CHARACTER);
                input.get(used.unwrap_or(0)..).unwrap_or_default()
            }
        }
    }

    /// Ends the stream: an incomplete trailing character becomes U+FFFD. The stream can be reused.
    pub fn finish(&mut self) -> &str {
        self.out.clear();
        if self.pending_len > 0 {
            self.pending_len = 0;
            self.out.push(char::REPLACEMENT_CHARACTER);
        }
        &self.out
    }

    /// Whether bytes of an incomplete character are being held back.
    pub fn has_pending(&self) -> bool {
        self.pending_len > 0
    }
}
