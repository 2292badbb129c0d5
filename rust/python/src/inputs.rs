//! Reading a method's Python inputs (conversations, tools, template keywords, batch samples) into
//! the core's JSON and template values. Errors name where the bad value sits.

use crate::convert::{to_json, type_name};
use crate::errors::{to_py, ConversationError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Arc;
use turnpack_core::{
    from_json, BatchEncoder, BatchSample, ChatTokenizer, Conversation, EncodeOptions, Encoded, Vars,
};

/// A conversation (a list of message dicts), checked and prepared by the core.
pub fn conversation(messages: &Bound<'_, PyAny>) -> PyResult<Conversation> {
    let json = to_json(messages, &mut "messages".to_string())?;
    Conversation::from_json(&json).map_err(to_py)
}

/// The `tools` argument as a template value (`None` when absent).
pub fn tools_value(tools: Option<&Bound<'_, PyAny>>) -> PyResult<minijinja::Value> {
    match tools {
        None => Ok(minijinja::Value::from(())),
        Some(t) => Ok(from_json(&to_json(t, &mut "tools".to_string())?)),
    }
}

/// Template keywords (`**template_kwargs`) as template variables.
pub fn vars_from_dict(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Vars> {
    let mut vars = Vars::new();
    if let Some(dict) = dict {
        for (k, v) in dict.iter() {
            let key: String = k.extract()?;
            let mut path = key.clone();
            vars.push((key, from_json(&to_json(&v, &mut path)?)));
        }
    }
    Ok(vars)
}

/// A `{str: str}` dict (special tokens) as pairs.
pub fn str_pairs(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    dict.map(|d| {
        d.iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect()
    })
    .unwrap_or(Ok(Vec::new()))
}

/// Names a sample's `chat_template_kwargs` may not set: what the template context gets from
/// turnpack itself, and the encoding methods' own arguments (options, not template variables).
const NOT_TEMPLATE_VARIABLES: &[&str] = &[
    "messages",
    "tools",
    "add_generation_prompt",
    "chat_template_kwargs",
    "conversations",
    "tokenizer",
    "sample_ids",
    "supervise",
    "eot",
    "start",
    "spans",
    "boundary",
    "method",
    "history",
    "num_threads",
    "on_error",
];

/// One batch item: a conversation (list of messages) or a dict with "messages" and optional
/// "tools" and "chat_template_kwargs". Checking the messages is left to the thread that encodes
/// them.
fn batch_sample(item: &Bound<'_, PyAny>) -> PyResult<BatchSample> {
    if let Ok(d) = item.cast::<PyDict>() {
        let messages = d
            .get_item("messages")?
            .ok_or_else(|| ConversationError::new_err("a sample dict needs a 'messages' key"))?;
        let tools = d.get_item("tools")?.filter(|t| !t.is_none());
        let kwargs = d.get_item("chat_template_kwargs")?.filter(|k| !k.is_none());
        Ok(BatchSample {
            messages: to_json(&messages, &mut "messages".to_string())?,
            tools: tools
                .map(|t| to_json(&t, &mut "tools".to_string()))
                .transpose()?,
            vars: kwargs
                .map(|k| sample_vars(&k))
                .transpose()?
                .unwrap_or_default(),
        })
    } else {
        Ok(BatchSample {
            messages: to_json(item, &mut "messages".to_string())?,
            ..BatchSample::default()
        })
    }
}

/// A sample's `chat_template_kwargs`: a dict of template variables with str keys.
fn sample_vars(kwargs: &Bound<'_, PyAny>) -> PyResult<Vars> {
    const FIELD: &str = "chat_template_kwargs";
    let dict = kwargs.cast::<PyDict>().map_err(|_| {
        ConversationError::new_err(format!(
            "{FIELD} must be a dict of template variables, got {}",
            type_name(kwargs)
        ))
    })?;
    let mut vars = Vars::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let key = k
            .cast::<PyString>()
            .map_err(|_| {
                ConversationError::new_err(format!(
                    "{FIELD}: keys must be str, got {}",
                    type_name(&k)
                ))
            })?
            .to_str()?
            .to_owned();
        if NOT_TEMPLATE_VARIABLES.contains(&key.as_str()) {
            return Err(ConversationError::new_err(format!(
                "{FIELD}: '{key}' is not a template variable but turnpack's own (an encoding \
                 option or a field of the sample): give it as such"
            )));
        }
        let mut path = format!("{FIELD}.{key}");
        vars.push((key, from_json(&to_json(&v, &mut path)?)));
    }
    Ok(vars)
}

/// A batch whose items were all read: the encoder (still encoding them), per item the error that
/// kept it from being read (prefixed with its index), and the error that stopped the iteration
/// itself. The batch has to be finished either way.
pub struct ReadBatch<T> {
    pub batch: BatchEncoder<T>,
    pub unread: Vec<Option<PyErr>>,
    pub read: PyResult<()>,
}

/// Starts a batch with the call's tools and template keywords and reads `items` into it (`finish`
/// converts each result on the thread that encoded it).
#[allow(clippy::too_many_arguments)]
pub fn start_batch<T: Send + 'static>(
    py: Python<'_>,
    tok: &Arc<ChatTokenizer>,
    items: &Bound<'_, PyAny>,
    tools: Option<&Bound<'_, PyAny>>,
    template_kwargs: Option<&Bound<'_, PyDict>>,
    opts: EncodeOptions,
    num_threads: Option<usize>,
    finish: impl Fn(Encoded) -> T + Send + Sync + 'static,
) -> PyResult<ReadBatch<T>> {
    let tools = tools_value(tools)?;
    let vars = vars_from_dict(template_kwargs)?;
    let mut batch = BatchEncoder::new(tok.clone(), tools, vars, opts, num_threads, finish);
    // this thread reads the samples (it holds the GIL) while workers encode them
    let (unread, read) = read_batch(py, items, &mut batch)?;
    Ok(ReadBatch {
        batch,
        unread,
        read,
    })
}

/// Reads every item of `items` into `batch` (which starts encoding them as they come). Returns
/// per item the error that kept it from being read (prefixed with its index), and the error that
/// stopped the iteration itself, if any: the batch still has to be finished either way.
fn read_batch<T: Send + 'static>(
    py: Python<'_>,
    items: &Bound<'_, PyAny>,
    batch: &mut BatchEncoder<T>,
) -> PyResult<(Vec<Option<PyErr>>, PyResult<()>)> {
    let mut unread = Vec::new();
    for (i, item) in items.try_iter()?.enumerate() {
        let item = match item {
            Ok(item) => item,
            Err(e) => return Ok((unread, Err(e))),
        };
        match batch_sample(&item) {
            Ok(sample) => {
                batch.push(sample);
                unread.push(None);
            }
            Err(e) => {
                batch.skip();
                unread.push(Some(with_sample(py, e, i)));
            }
        }
    }
    Ok((unread, Ok(())))
}

/// Prefixes a Python exception's message with the sample index, keeping its type.
fn with_sample(py: Python<'_>, err: PyErr, index: usize) -> PyErr {
    let message = format!("sample {index}: {}", err.value(py));
    match err.get_type(py).call1((message,)) {
        Ok(value) => PyErr::from_value(value),
        Err(_) => err,
    }
}
