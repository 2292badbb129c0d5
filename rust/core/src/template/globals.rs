//! Globals and methods transformers gives chat templates beyond Jinja2's own:
//! `raise_exception`, `strftime_now`, and the Python string/dict/list methods templates call.

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind, State};
use std::time::{SystemTime, UNIX_EPOCH};

/// Marks errors raised by the template itself, so their message is passed on unchanged.
pub const RAISED_PREFIX: &str = "\u{0}raise_exception\u{0}";

pub fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED_PREFIX}{message}"),
    ))
}

/// `strftime_now(format)`: the current time (UTC) formatted with Python's `strftime` codes.
pub fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Value::from(strftime(secs, &format)))
}

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
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Python `strftime` for a UTC timestamp; codes outside the common set are kept literally.
pub fn strftime(secs: i64, format: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let is_leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[month as usize - 1] + day + u32::from(is_leap && month > 2);
    let month_name = MONTHS[month as usize - 1];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut code = chars.next();
        // glibc's `%-d` style: the same field without zero padding.
        let unpadded = code == Some('-');
        if unpadded {
            code = chars.next();
        }
        let start = out.len();
        match code {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!(
                "{:02}",
                if hour % 12 == 0 { 12 } else { hour % 12 }
            )),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
        if unpadded {
            let field = out.split_off(start);
            let trimmed = field.trim_start_matches(['0', ' ']);
            out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
        }
    }
    out
}

/// Python methods that minijinja-contrib's `pycompat` lacks, then `pycompat` itself. List
/// mutation (`append`, `pop`, ...) is refused, as transformers' sandbox refuses it.
pub fn unknown_method(
    state: &mut State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if value.kind() == ValueKind::String {
        let s = value.as_str().unwrap_or_default();
        let simple = |f: fn(&str) -> bool| Ok(Value::from(!s.is_empty() && f(s)));
        match (method, args) {
            ("isdigit" | "isnumeric" | "isdecimal", []) => {
                return simple(|s| s.chars().all(|c| c.is_numeric()))
            }
            ("removeprefix", [p]) => {
                let p = p.as_str().unwrap_or_default();
                return Ok(Value::from(s.strip_prefix(p).unwrap_or(s)));
            }
            ("removesuffix", [p]) => {
                let p = p.as_str().unwrap_or_default();
                return Ok(Value::from(s.strip_suffix(p).unwrap_or(s)));
            }
            ("index", [sub]) => {
                let sub = sub.as_str().unwrap_or_default();
                return match s.find(sub) {
                    Some(byte) => Ok(Value::from(s[..byte].chars().count())),
                    None => Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "substring not found",
                    )),
                };
            }
            _ => {}
        }
    }
    if value.kind() == ValueKind::Seq
        && matches!(
            method,
            "append" | "pop" | "extend" | "insert" | "remove" | "clear" | "sort" | "reverse"
        )
    {
        let what = format!("access to attribute '{method}' of 'list' object is unsafe.");
        return Err(Error::new(ErrorKind::InvalidOperation, what));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday
        assert_eq!(strftime(1_722_000_309, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            strftime(1_722_000_309, "%A %B %-d %H:%M:%S %j"),
            "Friday July 26 13:25:09 208"
        );
        assert_eq!(strftime(951_782_400, "%Y-%m-%d %-m/%-d"), "2000-02-29 2/29");
    }
}
