//! Filters whose Jinja2 behaviour differs from minijinja's builtins in ways chat templates show.

use super::value::is_none;
use minijinja::value::{Kwargs, Rest, Value, ValueOrKwargs};
use minijinja::{Environment, Error, State};
use std::borrow::Cow;

/// Jinja2's `select`/`reject`/`selectattr`/`rejectattr`/`map` treat a falsy input (`None`) as
/// empty, while a `for` loop over `None` raises; give the filters an empty list for it.
fn none_as_empty(value: Value) -> Value {
    if is_none(&value) {
        Value::from(Vec::<Value>::new())
    } else {
        value
    }
}

/// Jinja2's filters return generators: always truthy, iterable once, without a length, and not
/// JSON-serializable. A template that relies on any of that (`tojson` of a `map`) must behave as
/// it does under transformers, so the results are handed back as one-shot iterators.
fn generator(items: Vec<Value>) -> Value {
    Value::make_one_shot_iterator(items.into_iter())
}

pub fn register(env: &mut Environment<'static>) {
    use minijinja::filters as builtin;
    env.add_filter(
        "select",
        |state: &mut State<'_, '_>,
         v: Value,
         test: Option<Cow<'_, str>>,
         args: Rest<ValueOrKwargs>| {
            builtin::select(state, none_as_empty(v), test, args).map(generator)
        },
    );
    env.add_filter(
        "reject",
        |state: &mut State<'_, '_>,
         v: Value,
         test: Option<Cow<'_, str>>,
         args: Rest<ValueOrKwargs>| {
            builtin::reject(state, none_as_empty(v), test, args).map(generator)
        },
    );
    env.add_filter(
        "selectattr",
        |state: &mut State<'_, '_>,
         v: Value,
         attr: Cow<'_, str>,
         test: Option<Cow<'_, str>>,
         args: Rest<ValueOrKwargs>| {
            builtin::selectattr(state, none_as_empty(v), attr, test, args).map(generator)
        },
    );
    env.add_filter(
        "rejectattr",
        |state: &mut State<'_, '_>,
         v: Value,
         attr: Cow<'_, str>,
         test: Option<Cow<'_, str>>,
         args: Rest<ValueOrKwargs>| {
            builtin::rejectattr(state, none_as_empty(v), attr, test, args).map(generator)
        },
    );
    env.add_filter(
        "map",
        |state: &mut State<'_, '_>, v: Value, args: Rest<ValueOrKwargs>| {
            builtin::map(state, none_as_empty(v), args).map(generator)
        },
    );
    env.add_filter("indent", indent);
}

/// Jinja2's `indent(width=4, first=False, blank=False)`, including its quirk of keeping a trailing
/// newline, with Python's `str.splitlines` line breaks.
fn indent(
    s: String,
    width: Option<Value>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let width = kwargs.get::<Option<Value>>("width")?.or(width);
    let first = kwargs
        .get::<Option<bool>>("first")?
        .or(first)
        .unwrap_or(false);
    let blank = kwargs
        .get::<Option<bool>>("blank")?
        .or(blank)
        .unwrap_or(false);
    kwargs.assert_all_used()?;
    let indention = match width {
        None => "    ".to_string(),
        Some(w) => match w.as_str() {
            Some(text) => text.to_string(),
            None => " ".repeat(i64::try_from(w).unwrap_or(4).max(0) as usize),
        },
    };
    let text = format!("{s}\n");
    let lines = splitlines(&text);
    let mut rv = if blank {
        lines.join(&format!("\n{indention}"))
    } else {
        let mut iter = lines.iter();
        let mut rv = iter.next().map(|l| l.to_string()).unwrap_or_default();
        let rest: Vec<String> = iter
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{indention}{l}")
                }
            })
            .collect();
        if !rest.is_empty() {
            rv.push('\n');
            rv.push_str(&rest.join("\n"));
        }
        rv
    };
    if first {
        rv = format!("{indention}{rv}");
    }
    Ok(rv)
}

/// Python's `str.splitlines()` (no line ends kept).
pub fn splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{b}'
                | '\u{c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break {
            out.push(&s[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = chars.peek() {
                    chars.next();
                    end = j + 1;
                }
            }
            start = end;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indent_matches_jinja2() {
        let none = || Kwargs::from_iter(Vec::<(String, Value)>::new());
        assert_eq!(
            indent("{\n".into(), Some(Value::from(4)), Some(true), None, none()).unwrap(),
            "    {\n"
        );
        assert_eq!(
            indent("a\n\nb".into(), Some(Value::from(2)), None, None, none()).unwrap(),
            "a\n\n  b"
        );
        assert_eq!(
            indent("a\nb".into(), None, None, Some(true), none()).unwrap(),
            "a\n    b"
        );
    }

    #[test]
    fn splitlines_like_python() {
        assert_eq!(splitlines("a\r\nb\rc\n\nd\n"), ["a", "b", "c", "", "d"]);
    }
}
