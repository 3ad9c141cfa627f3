//! Python's `str()` and `repr()` of template values.
//!
//! HF renders chat templates with Python's jinja2, so `{{ value }}` prints `str(value)`: `None`,
//! `True`, `1e+20`, `['a', "it's"]`. minijinja's own formatting (`none`, `true`, `["a", "it's"]`)
//! would change the prompt bytes, so the template environment formats values through here.

use minijinja::value::{Value, ValueKind};
use std::fmt::Write;

/// Appends Python's `str(value)` to `out`. Strings are printed as they are, everything else as
/// [`write_repr`] does. Undefined values print nothing (jinja2's default `Undefined`).
pub(super) fn write_str(out: &mut String, value: &Value) {
    match value.as_str() {
        Some(s) if value.kind() == ValueKind::String => out.push_str(s),
        _ if value.is_undefined() => {}
        _ => write_repr(out, value),
    }
}

/// Appends Python's `repr(value)` to `out` for the JSON-like values templates hold (None, bools,
/// numbers, strings, lists, dicts). Other objects (namespaces, macros) print as minijinja shows them.
pub(super) fn write_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => write_number(out, value),
        ValueKind::String => write_str_repr(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &item);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &key);
                    out.push_str(": ");
                    write_repr(out, &value.get_item(&key).unwrap_or_default());
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Integers print in decimal, floats as Python's `repr(float)`.
fn write_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
    } else {
        match f64::try_from(value.clone()) {
            Ok(f) => write_float_repr(out, f, "nan", "inf"),
            Err(_) => {
                let _ = write!(out, "{value}");
            }
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation when the
/// decimal exponent is in -4..16 (always with a fractional part, `2.0`), otherwise as `1e+20`,
/// `2.5e-300`. `nan`/`inf` are passed in because `str()` and `json.dumps` spell them differently.
pub(super) fn write_float_repr(out: &mut String, f: f64, nan: &str, inf: &str) {
    if f.is_nan() {
        out.push_str(nan);
        return;
    }
    if f.is_infinite() {
        if f < 0.0 {
            out.push('-');
        }
        out.push_str(inf);
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.2345e-5", "1e20", "0e0".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if f.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                let (int_part, frac_part) = digits.split_at(int_len);
                out.push_str(int_part);
                out.push('.');
                out.push_str(frac_part);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`; backslash escapes
/// for the quote, `\\`, `\t`, `\n`, `\r`, and `\xNN`/`\uNNNN`/`\UNNNNNNNN` for characters Python
/// does not consider printable.
pub(super) fn write_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => {
                let cp = c as u32;
                let _ = if cp <= 0xff {
                    write!(out, "\\x{cp:02x}")
                } else if cp <= 0xffff {
                    write!(out, "\\u{cp:04x}")
                } else {
                    write!(out, "\\U{cp:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for one character: false for control (Cc), format (Cf),
/// private-use (Co), line/paragraph separators (Zl, Zp) and spaces other than ' ' (Zs).
/// Unassigned code points (Cn), which Python also escapes, would need Unicode tables: they are
/// treated as printable.
fn is_printable(c: char) -> bool {
    let cp = c as u32;
    !matches!(cp,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2
        | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_repr(f: f64) -> String {
        let mut s = String::new();
        write_float_repr(&mut s, f, "nan", "inf");
        s
    }

    #[test]
    fn float_repr_matches_python() {
        // Values and expectations from CPython 3.11's repr().
        let cases = [
            (1e20, "1e+20"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456.789e3, "123456789.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (2.5e-300, "2.5e-300"),
            (-1.5e300, "-1.5e+300"),
            (0.30000000000000004, "0.30000000000000004"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (5e-324, "5e-324"),
            (1234.5678, "1234.5678"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "repr({f:e})");
        }
    }

    #[test]
    fn str_repr_matches_python() {
        let cases = [
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' and \"", "'both \\' and \"'"),
            (
                "a\u{1}b\u{7f}c\u{a0}d\u{2028}e",
                "'a\\x01b\\x7fc\\xa0d\\u2028e'",
            ),
            ("日本 🎉", "'日本 🎉'"),
            ("\u{f0000}", "'\\U000f0000'"),
        ];
        for (s, want) in cases {
            let mut out = String::new();
            write_str_repr(&mut out, s);
            assert_eq!(out, want);
        }
    }
}
