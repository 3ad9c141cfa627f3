//! `strftime` for the templates' `strftime_now(format)` (Llama 3.x templates print today's date).
//!
//! HF calls Python's `datetime.now().strftime(format)`: a naive local time (so `%z`/`%Z` print
//! nothing) formatted by glibc's `strftime` in the C locale. Smelt formats the current time in UTC (no time-zone database), so the date can differ
//! from a local-time render near midnight.

use std::fmt::Write;

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy)]
struct Tm {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 0-based day of the year
    yday: u32,
    unix_secs: i64,
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): the well-known
/// era-based conversion (400-year cycles of 146097 days, years starting in March).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn to_tm(unix_secs: i64) -> Tm {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap_day = u32::from(month > 2 && is_leap(year));
    let yday = cumulative[(month - 1) as usize] + day - 1 + leap_day;
    Tm {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        weekday: (days + 4).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
        yday,
        unix_secs,
    }
}

/// ISO 8601 week-numbering year and week (1..=53).
fn iso_week(tm: &Tm) -> (i64, u32) {
    fn weeks_in_year(year: i64) -> i64 {
        let p =
            |y: i64| (y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400)).rem_euclid(7);
        if p(year) == 4 || p(year - 1) == 3 {
            53
        } else {
            52
        }
    }
    let iso_weekday = i64::from((tm.weekday + 6) % 7 + 1);
    let week = (i64::from(tm.yday) + 1 - iso_weekday + 10).div_euclid(7);
    if week < 1 {
        (tm.year - 1, weeks_in_year(tm.year - 1) as u32)
    } else if week > weeks_in_year(tm.year) {
        (tm.year + 1, 1)
    } else {
        (tm.year, week as u32)
    }
}

/// How a numeric field is padded: glibc's default, or the `-` (none) / `_` (spaces) / `0` flags.
#[derive(Clone, Copy, PartialEq)]
enum Pad {
    Default,
    None,
    Space,
    Zero,
}

fn num(out: &mut String, value: i64, width: usize, default_pad: char, pad: Pad) {
    let fill = match pad {
        Pad::Default => Some(default_pad),
        Pad::None => None,
        Pad::Space => Some(' '),
        Pad::Zero => Some('0'),
    };
    let _ = match fill {
        None => write!(out, "{value}"),
        Some('0') => write!(out, "{value:0width$}"),
        Some(_) => write!(out, "{value:width$}"),
    };
}

/// Formats `unix_secs` (UTC) as Python's naive `datetime.strftime` does on Linux (glibc, C locale): `%a %A %b %B %c %C %d %D %e %F %g %G %h %H %I %j %k %l %m %M %n %p %P %r %R %s
/// %S %t %T %u %U %V %w %W %x %X %y %Y %z %Z %%`, the `-`, `_`, `0` padding flags and the
/// (ignored) `E`/`O` modifiers. Anything else is copied through unchanged, as glibc does.
pub fn strftime_utc(format: &str, unix_secs: i64) -> String {
    let tm = to_tm(unix_secs);
    let mut out = String::with_capacity(format.len() + 16);
    let mut rest = format;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let spec = &rest[pos + 1..];
        let mut chars = spec.char_indices();
        let mut pad = Pad::Default;
        let mut conversion = None;
        for (i, c) in chars.by_ref() {
            match c {
                '-' if pad == Pad::Default => pad = Pad::None,
                '_' if pad == Pad::Default => pad = Pad::Space,
                '0' if pad == Pad::Default => pad = Pad::Zero,
                'E' | 'O' => {}
                c => {
                    conversion = Some((i + c.len_utf8(), c));
                    break;
                }
            }
        }
        match conversion {
            Some((end, c)) if write_conversion(&mut out, &tm, c, pad) => rest = &spec[end..],
            Some((end, _)) => {
                out.push('%');
                out.push_str(&spec[..end]);
                rest = &spec[end..];
            }
            None => {
                out.push('%');
                out.push_str(spec);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Writes one conversion; false if `c` is not one.
fn write_conversion(out: &mut String, tm: &Tm, c: char, pad: Pad) -> bool {
    let weekday = WEEKDAYS[tm.weekday as usize % 7];
    let month = MONTHS[(tm.month as usize + 11) % 12];
    let hour12 = if tm.hour.is_multiple_of(12) {
        12
    } else {
        tm.hour % 12
    };
    match c {
        'a' => out.push_str(&weekday[..3]),
        'A' => out.push_str(weekday),
        'b' | 'h' => out.push_str(&month[..3]),
        'B' => out.push_str(month),
        'c' => out.push_str(&strftime_utc("%a %b %e %H:%M:%S %Y", tm.unix_secs)),
        'C' => num(out, tm.year.div_euclid(100), 2, '0', pad),
        'd' => num(out, tm.day.into(), 2, '0', pad),
        'D' | 'x' => out.push_str(&strftime_utc("%m/%d/%y", tm.unix_secs)),
        'e' => num(out, tm.day.into(), 2, ' ', pad),
        'F' => {
            num(out, tm.year, 4, '0', pad);
            out.push_str(&strftime_utc("-%m-%d", tm.unix_secs));
        }
        'g' => num(out, iso_week(tm).0.rem_euclid(100), 2, '0', pad),
        'G' => num(out, iso_week(tm).0, 1, '0', pad),
        'H' => num(out, tm.hour.into(), 2, '0', pad),
        'I' => num(out, hour12.into(), 2, '0', pad),
        'j' => num(out, i64::from(tm.yday) + 1, 3, '0', pad),
        'k' => num(out, tm.hour.into(), 2, ' ', pad),
        'l' => num(out, hour12.into(), 2, ' ', pad),
        'm' => num(out, tm.month.into(), 2, '0', pad),
        'M' => num(out, tm.minute.into(), 2, '0', pad),
        'n' => out.push('\n'),
        'p' => out.push_str(if tm.hour < 12 { "AM" } else { "PM" }),
        'P' => out.push_str(if tm.hour < 12 { "am" } else { "pm" }),
        'r' => out.push_str(&strftime_utc("%I:%M:%S %p", tm.unix_secs)),
        'R' => out.push_str(&strftime_utc("%H:%M", tm.unix_secs)),
        's' => {
            let _ = write!(out, "{}", tm.unix_secs);
        }
        'S' => num(out, tm.second.into(), 2, '0', pad),
        't' => out.push('\t'),
        'T' | 'X' => out.push_str(&strftime_utc("%H:%M:%S", tm.unix_secs)),
        'u' => num(out, i64::from((tm.weekday + 6) % 7 + 1), 1, '0', pad),
        'U' => num(out, i64::from((tm.yday + 7 - tm.weekday) / 7), 2, '0', pad),
        'V' => num(out, iso_week(tm).1.into(), 2, '0', pad),
        'w' => num(out, tm.weekday.into(), 1, '0', pad),
        'W' => num(
            out,
            i64::from((tm.yday + 7 - (tm.weekday + 6) % 7) / 7),
            2,
            '0',
            pad,
        ),
        'y' => num(out, tm.year.rem_euclid(100), 2, '0', pad),
        'Y' => num(out, tm.year, 1, '0', pad),
        // A naive `datetime` (what `datetime.now()` returns) has no offset or zone name.
        'z' | 'Z' => {}
        '%' => out.push('%'),
        _ => return false,
    }
    true
}

/// The current time in seconds since the Unix epoch (0 if the clock is before 1970).
pub(super) fn now_unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
