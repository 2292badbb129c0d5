//! serde_json values to minijinja values, keeping key order (Jinja2 iterates dicts in insertion order).

use minijinja::value::Value;

/// A JSON value as the template value transformers' Jinja2 would see (objects keep key order).
pub fn from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(from_json).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), from_json(v))))
        }
    }
}

/// Python's `None` where Jinja2 and minijinja disagree about it: minijinja iterates `none` as an
/// empty list, Jinja2 raises (`'NoneType' object is not iterable`), and `none is iterable` is false
/// in Jinja2. Template variables that are `None` (`tools`, `documents`, keywords) take this value,
/// so `{% for t in tools %}` with no tools raises as it does under transformers.
#[derive(Debug)]
pub struct PyNone;

impl minijinja::value::Object for PyNone {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }

    fn is_true(self: &std::sync::Arc<Self>) -> bool {
        false
    }

    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("None")
    }
}

/// A template variable's value: `None` becomes [`PyNone`].
pub fn variable(value: Value) -> Value {
    if value.is_none() {
        Value::from_object(PyNone)
    } else {
        value
    }
}

/// `x is none`, for both kinds of none.
pub fn is_none(value: &Value) -> bool {
    value.is_none() || value.downcast_object_ref::<PyNone>().is_some()
}
