//! Python `str` methods whose minijinja-contrib pycompat versions differ from Python.
//!
//! pycompat returns byte offsets from `find`/`rfind` (Python counts characters), never ends
//! `count('')`, and strips/splits on Rust's whitespace set (Python's `str.isspace` also counts
//! U+001C..U+001F). These few are done here; every other method goes to pycompat.

use minijinja::value::{Value, ValueKind, from_args};
use minijinja::{Error, ErrorKind, State};

/// The template environment's unknown-method callback: the Python string methods below, then pycompat.
pub(super) fn python_methods(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if value.kind() == ValueKind::String
        && let Some(s) = value.as_str()
        && let Some(result) = string_method(s, method, args)
    {
        return result;
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Python's `str.isspace()` for one character.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn string_method(s: &str, method: &str, args: &[Value]) -> Option<Result<Value, Error>> {
    Some(match method {
        "find" | "index" | "rfind" | "rindex" => find(s, method, args),
        "count" => count(s, args),
        "strip" | "lstrip" | "rstrip" => strip(s, method, args),
        "split" => split(s, args),
        "title" => from_args::<()>(args).map(|()| Value::from(title(s))),
        _ => return None,
    })
}

/// Python's slice bounds `[start:end]` (character indices, negative from the end, clamped),
/// as byte offsets into `s`; `None` if the range is empty and start is past the end.
fn char_range(s: &str, start: Option<i64>, end: Option<i64>) -> Option<(usize, usize)> {
    let len = s.chars().count() as i64;
    let clamp = |i: i64| if i < 0 { (i + len).max(0) } else { i.min(len) };
    let start = start.map_or(0, clamp);
    let end = end.map_or(len, clamp);
    if start > end {
        return None;
    }
    let byte_at = |ci: i64| {
        s.char_indices()
            .nth(ci as usize)
            .map_or(s.len(), |(b, _)| b)
    };
    Some((byte_at(start), byte_at(end)))
}

fn char_index(s: &str, byte: usize) -> i64 {
    s[..byte].chars().count() as i64
}

fn find(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let (sub, start, end): (&str, Option<i64>, Option<i64>) = from_args(args)?;
    let found = char_range(s, start, end).and_then(|(lo, hi)| {
        let hay = &s[lo..hi];
        let at = if method.starts_with('r') {
            hay.rfind(sub)
        } else {
            hay.find(sub)
        };
        at.map(|b| char_index(s, lo + b))
    });
    match (found, method) {
        (Some(i), _) => Ok(Value::from(i)),
        (None, "find" | "rfind") => Ok(Value::from(-1)),
        (None, _) => Err(Error::new(
            ErrorKind::InvalidOperation,
            "substring not found",
        )),
    }
}

fn count(s: &str, args: &[Value]) -> Result<Value, Error> {
    let (sub, start, end): (&str, Option<i64>, Option<i64>) = from_args(args)?;
    let n = match char_range(s, start, end) {
        None => 0,
        Some((lo, hi)) if sub.is_empty() => s[lo..hi].chars().count() + 1,
        Some((lo, hi)) => s[lo..hi].matches(sub).count(),
    };
    Ok(Value::from(n))
}

fn strip(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let (chars,): (Option<&str>,) = from_args(args)?;
    let strip_char = |c: char| match chars {
        Some(set) => set.contains(c),
        None => is_python_space(c),
    };
    let out = match method {
        "lstrip" => s.trim_start_matches(strip_char),
        "rstrip" => s.trim_end_matches(strip_char),
        _ => s.trim_matches(strip_char),
    };
    Ok(Value::from(out))
}

/// Python's `str.split(sep=None, maxsplit=-1)`.
fn split(s: &str, args: &[Value]) -> Result<Value, Error> {
    let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
    let limit = maxsplit.filter(|&m| m >= 0).map(|m| m as usize);
    let parts: Vec<Value> = match sep {
        Some("") => {
            return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"));
        }
        Some(sep) => match limit {
            Some(m) => s.splitn(m + 1, sep).map(Value::from).collect(),
            None => s.split(sep).map(Value::from).collect(),
        },
        None => {
            // Runs of whitespace separate; leading/trailing whitespace yields no empty parts, and
            // after `maxsplit` splits the rest is kept whole (minus its leading whitespace).
            let mut parts = Vec::new();
            let mut rest = s.trim_start_matches(is_python_space);
            while !rest.is_empty() {
                if limit.is_some_and(|m| parts.len() == m) {
                    parts.push(Value::from(rest));
                    break;
                }
                let end = rest.find(is_python_space).unwrap_or(rest.len());
                parts.push(Value::from(&rest[..end]));
                rest = rest[end..].trim_start_matches(is_python_space);
            }
            parts
        }
    };
    Ok(Value::from(parts))
}

/// Python's `str.title()`: a cased character after a cased one is lowercased, others uppercased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = cased;
    }
    out
}
