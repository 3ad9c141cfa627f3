//! A minimal JSON document builder for `smelt bench --json` (the CLI carries
//! no serde dependency; the report is a small fixed tree).

use std::fmt::Write;

/// A JSON value. Objects keep their keys in insertion order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    /// Non-finite numbers are written as `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    /// `Num` of an integer count (exact up to 2^53).
    pub fn int(v: impl Into<u64>) -> Json {
        Json::Num(v.into() as f64)
    }

    /// `Str` of anything printable.
    pub fn str(v: impl std::fmt::Display) -> Json {
        Json::Str(v.to_string())
    }

    /// `v` or `null`.
    pub fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Json) -> Json {
        v.map_or(Json::Null, f)
    }

    /// The document, indented by two spaces per level, ending in a newline.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, d: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n("  ", d));
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Num(v) if v.is_finite() => {
                let _ = write!(out, "{v}");
            }
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => write_string(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                // Arrays of plain numbers stay on one line.
                let flat = items.iter().all(|i| matches!(i, Json::Num(_) | Json::Null));
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        if flat {
                            out.push(' ');
                        }
                    }
                    if !flat {
                        pad(out, depth + 1);
                    }
                    item.write(out, depth + 1);
                }
                if !flat {
                    pad(out, depth);
                }
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                }
                pad(out, depth);
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string literal (RFC 8259 escapes).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_documents_with_escapes() {
        let doc = Json::Obj(vec![
            ("name", Json::str("a \"q\"\\ b\n\u{1}é")),
            ("n", Json::int(98_362_432u64)),
            ("x", Json::Num(1.5)),
            ("bad", Json::Num(f64::NAN)),
            ("xs", Json::Arr(vec![Json::Num(1.0), Json::Num(-2.25)])),
            (
                "objs",
                Json::Arr(vec![Json::Obj(vec![("ok", Json::str("yes"))])]),
            ),
            ("none", Json::opt(None::<u64>, Json::int)),
            ("empty", Json::Obj(vec![])),
        ]);
        let want = r#"{
  "name": "a \"q\"\\ b\n\u0001é",
  "n": 98362432,
  "x": 1.5,
  "bad": null,
  "xs": [1, -2.25],
  "objs": [
    {
      "ok": "yes"
    }
  ],
  "none": null,
  "empty": {}
}
"#;
        assert_eq!(doc.pretty(), want);
    }
}
