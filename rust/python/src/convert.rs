//! Python objects (dicts, lists, str, numbers, None) to JSON values, so the core never touches Python.

use crate::errors::ConversationError as PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value as Json};

/// Converts `obj`; `path` names where it sits for the error message (e.g. `messages[2].content`).
pub fn to_json(obj: &Bound<'_, PyAny>, path: &mut String) -> PyResult<Json> {
    if obj.is_none() {
        return Ok(Json::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Json::String(s.to_str()?.to_owned()));
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Json::Number(v.into()));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Json::Number(v.into()));
        }
        let f: f64 = i.extract()?;
        return Ok(Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v).map(Json::Number).ok_or_else(|| {
            PyTypeError::new_err(format!("{path}: non-finite float {v} is not supported"))
        });
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| {
                    PyTypeError::new_err(format!(
                        "{path}: dict keys must be str, got {}",
                        type_name(&k)
                    ))
                })?
                .to_str()?
                .to_owned();
            let len = path.len();
            path.push('.');
            path.push_str(&key);
            let value = to_json(&v, path)?;
            path.truncate(len);
            map.insert(key, value);
        }
        return Ok(Json::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::with_capacity(obj.len()?);
        for (i, item) in obj.try_iter()?.enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            items.push(to_json(&item?, path)?);
            path.truncate(len);
        }
        return Ok(Json::Array(items));
    }
    // numpy scalars and similar expose `.item()` giving a plain Python value.
    if let Ok(item) = obj.call_method0("item") {
        if !item.is(obj) {
            return to_json(&item, path);
        }
    }
    Err(PyTypeError::new_err(format!(
        "{path}: unsupported value of type {}",
        type_name(obj)
    )))
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}
