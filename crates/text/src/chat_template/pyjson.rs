//! The `tojson` filter of HF's chat-template environment:
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
//!
//! minijinja's own `tojson` escapes `<`, `>`, `&` and `'` for HTML and knows no `separators` or
//! `ensure_ascii`, so tool schemas rendered through it would differ from what the model was
//! trained on. This reimplements Python's `json.dumps` output byte for byte for template values.

use super::pystr::write_float_repr;
use minijinja::value::{Kwargs, Rest, Value, ValueKind, from_args};
use minijinja::{Error, ErrorKind};
use std::fmt::Write;

/// The options of Python's `json.dumps` that HF's `tojson` exposes.
struct DumpOptions {
    ensure_ascii: bool,
    /// `None`: everything on one line. `Some(s)`: one item per line, `s` repeated per level.
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

/// The `tojson` filter. Positional arguments follow HF's signature
/// `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
pub(super) fn tojson_filter(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    let (positional, kwargs) = match args.split_last() {
        Some((last, positional)) if last.is_kwargs() => {
            let (kwargs,): (Kwargs,) = from_args(std::slice::from_ref(last))?;
            (positional, kwargs)
        }
        _ => (
            &args[..],
            Kwargs::from_iter(std::iter::empty::<(&str, Value)>()),
        ),
    };
    if positional.len() > 4 {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            format!(
                "tojson() takes at most 4 arguments after the value ({} given)",
                positional.len()
            ),
        ));
    }
    let arg = |i: usize| positional.get(i).cloned();
    let ensure_ascii = pick("ensure_ascii", arg(0), &kwargs)?;
    let indent = pick("indent", arg(1), &kwargs)?;
    let separators = pick("separators", arg(2), &kwargs)?;
    let sort_keys = pick("sort_keys", arg(3), &kwargs)?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(indent_string(&v)?),
    };
    let (item_separator, key_separator) = match separators {
        Some(v) if !v.is_none() => separator_pair(&v)?,
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let options = DumpOptions {
        ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        item_separator,
        key_separator,
        sort_keys: sort_keys.is_some_and(|v| v.is_true()),
    };
    let mut out = String::new();
    dump(&mut out, value, &options, 0)?;
    Ok(Value::from(out))
}

/// An argument given either by position or by keyword (not both, as in Python).
fn pick(name: &str, positional: Option<Value>, kwargs: &Kwargs) -> Result<Option<Value>, Error> {
    let keyword: Option<Value> = kwargs.get(name)?;
    match (positional, keyword) {
        (Some(_), Some(_)) => Err(Error::new(
            ErrorKind::TooManyArguments,
            format!("tojson() got multiple values for argument '{name}'"),
        )),
        (p, k) => Ok(p.or(k)),
    }
}

/// Python's `indent`: an int is that many spaces (none if negative), a string is used as is.
fn indent_string(v: &Value) -> Result<String, Error> {
    if let Some(s) = v.as_str().filter(|_| v.kind() == ValueKind::String) {
        return Ok(s.to_owned());
    }
    match v.kind() {
        ValueKind::Bool => Ok(if v.is_true() {
            " ".into()
        } else {
            String::new()
        }),
        ValueKind::Number if v.is_integer() => {
            let n = i64::try_from(v.clone()).unwrap_or(0).clamp(0, 4096);
            Ok(" ".repeat(n as usize))
        }
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "tojson(): indent must be an int or a string, not {}",
                v.kind()
            ),
        )),
    }
}

/// Python's `separators=(item_separator, key_separator)`.
fn separator_pair(v: &Value) -> Result<(String, String), Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidOperation,
            "tojson(): separators must be a pair of strings",
        )
    };
    let items: Vec<Value> = v.try_iter().map_err(|_| bad())?.collect();
    match items.as_slice() {
        [item, key] => match (item.as_str(), key.as_str()) {
            (Some(item), Some(key))
                if v.kind() != ValueKind::String && v.kind() != ValueKind::Map =>
            {
                Ok((item.to_owned(), key.to_owned()))
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn not_serializable(v: &Value) -> Error {
    let python_type = match v.kind() {
        ValueKind::Undefined => "Undefined".to_owned(),
        ValueKind::Bytes => "bytes".to_owned(),
        other => other.to_string(),
    };
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {python_type} is not JSON serializable"),
    )
}

fn dump(out: &mut String, v: &Value, o: &DumpOptions, level: usize) -> Result<(), Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_json_number(out, v),
        ValueKind::String => write_json_string(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_separator);
                }
                newline_indent(out, o, level + 1);
                dump(out, item, o, level + 1)?;
            }
            newline_indent(out, o, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in v.try_iter()? {
                let item = v.get_item(&key)?;
                entries.push((key, item));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                sort_entries(&mut entries)?;
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_separator);
                }
                newline_indent(out, o, level + 1);
                write_json_key(out, key, o.ensure_ascii)?;
                out.push_str(&o.key_separator);
                dump(out, item, o, level + 1)?;
            }
            newline_indent(out, o, level);
            out.push('}');
        }
        _ => return Err(not_serializable(v)),
    }
    Ok(())
}

fn newline_indent(out: &mut String, o: &DumpOptions, level: usize) {
    if let Some(indent) = &o.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

/// `sorted(d.items())`: strings sort by code point (= UTF-8 byte order), numbers numerically;
/// Python refuses to compare a mix.
fn sort_entries(entries: &mut [(Value, Value)]) -> Result<(), Error> {
    let all_strings = entries.iter().all(|(k, _)| k.kind() == ValueKind::String);
    let all_numbers = entries
        .iter()
        .all(|(k, _)| matches!(k.kind(), ValueKind::Number | ValueKind::Bool));
    if all_strings || all_numbers {
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson(sort_keys=True): '<' not supported between keys of different types",
        ))
    }
}

/// Python converts dict keys that are not strings: `1` → `"1"`, `True` → `"true"`, `None` → `"null"`.
fn write_json_key(out: &mut String, key: &Value, ensure_ascii: bool) -> Result<(), Error> {
    match key.kind() {
        ValueKind::String => write_json_string(out, key.as_str().unwrap_or_default(), ensure_ascii),
        ValueKind::Number | ValueKind::Bool | ValueKind::None => {
            let mut text = String::new();
            match key.kind() {
                ValueKind::None => text.push_str("null"),
                ValueKind::Bool => text.push_str(if key.is_true() { "true" } else { "false" }),
                _ => write_json_number(&mut text, key),
            }
            write_json_string(out, &text, ensure_ascii);
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("keys must be str, int, float, bool or None, not {other}"),
            ));
        }
    }
    Ok(())
}

fn write_json_number(out: &mut String, v: &Value) {
    if v.is_integer() {
        let _ = write!(out, "{v}");
    } else {
        match f64::try_from(v.clone()) {
            Ok(f) => write_float_repr(out, f, "NaN", "Infinity"),
            Err(_) => {
                let _ = write!(out, "{v}");
            }
        }
    }
}

/// Python's JSON string escaping: `"`, `\`, `\n`, `\r`, `\t`, `\b`, `\f` by name, other control
/// characters as `\u00XX` (lowercase hex); with `ensure_ascii`, everything outside space..`~` as
/// `\uXXXX`, characters beyond the BMP as a surrogate pair.
fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
