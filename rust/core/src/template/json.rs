//! The `tojson` filter as transformers defines it: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, byte for byte
//! (`", "`/`": "` separators, Python float text, no HTML escaping).

use super::pyrepr::float_repr;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};
use std::fmt::Write;

struct Options {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// Filter entry point: `x | tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
/// Like Python, the options may also be passed positionally.
pub fn tojson(
    value: &Value,
    args: minijinja::value::Rest<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let positional = |i: usize| args.0.get(i).cloned();
    let ensure_ascii = kwargs
        .get::<Option<bool>>("ensure_ascii")?
        .or_else(|| positional(0).map(|v| v.is_true()));
    let indent = match kwargs
        .get::<Option<Value>>("indent")?
        .or_else(|| positional(1))
    {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or_default().to_string())
        }
        Some(v) => {
            let n = i64::try_from(v.clone()).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or str",
                )
            })?;
            Some(" ".repeat(n.max(0) as usize))
        }
    };
    let separators = kwargs
        .get::<Option<Value>>("separators")?
        .or_else(|| positional(2));
    let sort_keys = kwargs
        .get::<Option<bool>>("sort_keys")?
        .or_else(|| positional(3).map(|v| v.is_true()));
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators {
        Some(sep) if !sep.is_none() && !sep.is_undefined() => {
            let parts: Vec<Value> = sep.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => (a.to_string(), b.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let opts = Options {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_value(value, &opts, 0, &mut out)?;
    // Jinja2 marks the result of a filter as plain text; nothing escapes it in a chat template.
    Ok(Value::from(out))
}

fn write_value(value: &Value, opts: &Options, level: usize, out: &mut String) -> Result<(), Error> {
    if super::value::is_none(value) {
        out.push_str("null");
        return Ok(());
    }
    match value.kind() {
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(value, out),
        ValueKind::String => {
            write_string(value.as_str().unwrap_or_default(), opts.ensure_ascii, out)
        }
        ValueKind::Seq => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(opts, level + 1, out);
                write_value(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(opts, level + 1, out);
                let key_text = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
                    ValueKind::Number => {
                        let mut s = String::new();
                        write_number(key, &mut s);
                        s
                    }
                    _ => return Err(not_serializable(key)),
                };
                write_string(&key_text, opts.ensure_ascii, out);
                out.push_str(&opts.key_sep);
                write_value(&value.get_item(key)?, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push('}');
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

fn not_serializable(value: &Value) -> Error {
    let kind = if value.is_undefined() {
        "Undefined".to_string()
    } else if value.kind() == ValueKind::Iterable {
        // What Jinja2's filters and `dict.items()` hand back in Python.
        "generator".to_string()
    } else {
        value.kind().to_string()
    };
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {kind} is not JSON serializable"),
    )
}

fn newline_indent(opts: &Options, level: usize, out: &mut String) {
    if let Some(indent) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn write_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return;
    }
    match f64::try_from(value.clone()) {
        Ok(f) if f.is_nan() => out.push_str("NaN"),
        Ok(f) if f.is_infinite() => out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" }),
        Ok(f) => out.push_str(&float_repr(f)),
        Err(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

/// A JSON string literal as Python's json module writes it.
pub fn write_string(s: &str, ensure_ascii: bool, out: &mut String) {
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
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(json: serde_json::Value, kwargs: Vec<(&str, Value)>) -> String {
        let kwargs = Kwargs::from_iter(kwargs.into_iter().map(|(k, v)| (k.to_string(), v)));
        tojson(
            &crate::template::from_json(&json),
            minijinja::value::Rest(vec![]),
            kwargs,
        )
        .unwrap()
        .to_string()
    }

    #[test]
    fn default_separators_and_unicode_kept() {
        let got = dumps(
            serde_json::json!({"b": 1, "a": [1.0, "é<>&", null, true]}),
            vec![],
        );
        assert_eq!(got, r#"{"b": 1, "a": [1.0, "é<>&", null, true]}"#);
    }

    #[test]
    fn ensure_ascii_indent_sort_keys() {
        let got = dumps(
            serde_json::json!({"b": "é😀", "a": []}),
            vec![
                ("ensure_ascii", Value::from(true)),
                ("indent", Value::from(2)),
                ("sort_keys", Value::from(true)),
            ],
        );
        assert_eq!(
            got,
            "{\n  \"a\": [],\n  \"b\": \"\\u00e9\\ud83d\\ude00\"\n}"
        );
    }
}
