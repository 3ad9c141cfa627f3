//! jinja2 filters whose minijinja versions print or round differently.

use super::pystr;
use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// jinja2's `string`: Python's `str(value)` (`[1, 'a']`, `None`), not minijinja's `[1, "a"]`.
pub(super) fn string(value: &Value) -> Value {
    if value.kind() == ValueKind::String {
        return value.clone();
    }
    let mut out = String::new();
    pystr::write_str(&mut out, value);
    Value::from(out)
}

/// jinja2's `round(value, precision=0, method='common')`. `common` is Python's `round()`, which
/// rounds the exact binary value half-to-even (`2.5` → `2.0`, `2.675` → `2.67`); `ceil` and
/// `floor` scale by `10**precision`. Integers come back unchanged for `common`, as floats otherwise.
pub(super) fn round(
    value: &Value,
    precision: Option<i32>,
    method: Option<&str>,
) -> Result<Value, Error> {
    let precision = precision.unwrap_or(0);
    let method = method.unwrap_or("common");
    if value.kind() != ValueKind::Number {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot round a {}", value.kind()),
        ));
    }
    if value.is_integer() && method == "common" {
        return Ok(value.clone());
    }
    let x = f64::try_from(value.clone())?;
    let scale = 10f64.powi(precision);
    let rounded = match method {
        "common" if (0..=300).contains(&precision) => {
            // Rust's fixed-precision formatting rounds the exact binary value half-to-even, as
            // Python's round() does.
            format!("{x:.prec$}", prec = precision as usize)
                .parse()
                .unwrap_or(x)
        }
        "common" => (x * scale).round_ties_even() / scale,
        "ceil" => (x * scale).ceil() / scale,
        "floor" => (x * scale).floor() / scale,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("round(): method must be 'common', 'ceil' or 'floor', not {other:?}"),
            ));
        }
    };
    Ok(Value::from(rounded))
}
