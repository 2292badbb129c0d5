//! `ChatTokenizer` and `Encoding` for Python: argument parsing and array conversion only; the
//! work happens in `turnpack_core`.

use crate::convert::to_json;
use crate::errors::{to_py, to_py_with_context};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::IntoPyObjectExt;
use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use turnpack_core::conversation::Conversation;
use turnpack_core::encode::{
    self, Boundary, EncodeOptions, Encoded, Eot, Method, SpanSource, Start, Supervise, Vars,
};
use turnpack_core::model_dir;
use turnpack_core::template::{value::from_json, ChatTemplate};
use turnpack_core::tokenizer::{Backend, TextTokenizer};
use turnpack_core::workers;
use turnpack_core::Error;

#[pyclass(module = "turnpack._core", name = "ChatTokenizer", frozen)]
pub struct PyChatTokenizer {
    /// Shared with `encode_batch`'s worker threads, which outlive a call.
    inner: Arc<encode::ChatTokenizer>,
}

fn vars_from_dict(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Vars> {
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

fn str_dict(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    dict.map(|d| {
        d.iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect()
    })
    .unwrap_or(Ok(Vec::new()))
}

fn template(source: Option<&str>) -> PyResult<Option<ChatTemplate>> {
    source.map(ChatTemplate::new).transpose().map_err(to_py)
}

/// The `eot` argument: `"auto"` (the default), `None` (off), or a list of end-of-turn strings.
/// A type of its own so that an explicit `None` differs from the default.
pub struct EotArg(Eot);

impl EotArg {
    const AUTO: EotArg = EotArg(Eot::Auto);
}

impl<'a, 'py> FromPyObject<'a, 'py> for EotArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let bad = || {
            let got = obj.repr().map(|r| r.to_string()).unwrap_or_default();
            PyValueError::new_err(format!(
                "eot must be 'auto', None, or a list of strings, got {got}"
            ))
        };
        if obj.is_none() {
            return Ok(EotArg(Eot::Off));
        }
        if let Ok(s) = obj.extract::<String>() {
            return if s == "auto" {
                Ok(EotArg::AUTO)
            } else {
                Err(bad())
            };
        }
        obj.extract::<Vec<String>>()
            .map(|l| EotArg(Eot::Tokens(l)))
            .map_err(|_| bad())
    }
}

fn parse_options(
    supervise: &str,
    eot: EotArg,
    start: &str,
    spans: &str,
    boundary: &str,
    method: &str,
) -> PyResult<EncodeOptions> {
    let bad = |what: &str, got: &str, choices: &str| {
        PyValueError::new_err(format!("{what} must be one of {choices}, got {got:?}"))
    };
    let supervise = match supervise {
        "assistant" => Supervise::Assistant,
        "last_assistant" => Supervise::LastAssistant,
        "all" => Supervise::All,
        other => {
            return Err(bad(
                "supervise",
                other,
                "'assistant', 'last_assistant', 'all'",
            ))
        }
    };
    let start = match start {
        "prompt" => Start::Prompt,
        "content" => Start::Content,
        other => return Err(bad("start", other, "'prompt', 'content'")),
    };
    let spans = match spans {
        "diff" => SpanSource::Diff,
        "generation" => SpanSource::Generation,
        other => return Err(bad("spans", other, "'diff', 'generation'")),
    };
    let boundary = match boundary {
        "merge" => Boundary::Merge,
        "split" => Boundary::Split,
        other => return Err(bad("boundary", other, "'merge', 'split'")),
    };
    let method = match method {
        "auto" => Method::Auto,
        "per_message" => Method::PerMessage,
        other => return Err(bad("method", other, "'auto', 'per_message'")),
    };
    Ok(EncodeOptions {
        supervise,
        start,
        spans,
        eot: eot.0,
        boundary,
        method,
    })
}

fn conversation(messages: &Bound<'_, PyAny>) -> PyResult<Conversation> {
    let json = to_json(messages, &mut "messages".to_string())?;
    Conversation::from_json(&json).map_err(to_py)
}

fn tools_value(tools: Option<&Bound<'_, PyAny>>) -> PyResult<minijinja::Value> {
    match tools {
        None => Ok(minijinja::Value::from(())),
        Some(t) => Ok(from_json(&to_json(t, &mut "tools".to_string())?)),
    }
}

#[pymethods]
impl PyChatTokenizer {
    #[new]
    #[pyo3(signature = (tokenizer, chat_template=None, special_tokens=None))]
    fn new(
        tokenizer: PathBuf,
        chat_template: Option<&str>,
        special_tokens: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let tok = TextTokenizer::from_file(&tokenizer).map_err(to_py)?;
        let vars = model_dir::vars_from(&str_dict(special_tokens)?);
        Ok(PyChatTokenizer {
            inner: Arc::new(encode::ChatTokenizer::new(
                tok,
                template(chat_template)?,
                vars,
            )),
        })
    }

    /// Loads a Hugging Face model folder (tokenizer.json, tokenizer_config.json, chat_template.jinja).
    #[staticmethod]
    #[pyo3(signature = (path, chat_template=None))]
    fn from_dir(path: PathBuf, chat_template: Option<&str>) -> PyResult<Self> {
        let mut inner = model_dir::load(&path).map_err(to_py)?;
        if chat_template.is_some() {
            inner.template = template(chat_template)?;
        }
        Ok(PyChatTokenizer {
            inner: Arc::new(inner),
        })
    }

    /// Builds from the text of a tokenizer.json.
    #[staticmethod]
    #[pyo3(signature = (json, chat_template=None, special_tokens=None, bpe_backend=None))]
    fn from_tokenizer_json(
        json: &str,
        chat_template: Option<&str>,
        special_tokens: Option<&Bound<'_, PyDict>>,
        bpe_backend: Option<&str>,
    ) -> PyResult<Self> {
        let mut tok = TextTokenizer::from_json_str(json).map_err(to_py)?;
        if let Some(name) = bpe_backend {
            tok.set_backend(parse_backend(name)?).map_err(to_py)?;
        }
        let vars = model_dir::vars_from(&str_dict(special_tokens)?);
        Ok(PyChatTokenizer {
            inner: Arc::new(encode::ChatTokenizer::new(
                tok,
                template(chat_template)?,
                vars,
            )),
        })
    }

    /// Builds from a tiktoken rank file, its pre-tokenizer pattern and its special tokens.
    #[staticmethod]
    #[pyo3(signature = (ranks_path, pattern, special_tokens=None, chat_template=None, template_vars=None))]
    fn from_tiktoken(
        ranks_path: PathBuf,
        pattern: &str,
        special_tokens: Option<&Bound<'_, PyDict>>,
        chat_template: Option<&str>,
        template_vars: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let specials: Vec<(String, u32)> = special_tokens
            .map(|d| {
                d.iter()
                    .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
                    .collect::<PyResult<_>>()
            })
            .transpose()?
            .unwrap_or_default();
        let tok = turnpack_core::tiktoken::load(&ranks_path, pattern, &specials).map_err(to_py)?;
        let vars = model_dir::vars_from(&str_dict(template_vars)?);
        Ok(PyChatTokenizer {
            inner: Arc::new(encode::ChatTokenizer::new(
                TextTokenizer::new(tok),
                template(chat_template)?,
                vars,
            )),
        })
    }

    /// Renders a conversation to text, as `apply_chat_template(tokenize=False)` does.
    #[pyo3(signature = (messages, tools=None, add_generation_prompt=false, **template_kwargs))]
    fn render(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        add_generation_prompt: bool,
        template_kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let conv = conversation(messages)?;
        let tools = tools_value(tools)?;
        let vars = vars_from_dict(template_kwargs)?;
        py.detach(|| {
            self.inner
                .render(&conv, &tools, add_generation_prompt, &vars)
        })
        .map_err(to_py)
    }

    /// Encodes a conversation: token ids and the mask of trained tokens.
    #[pyo3(signature = (messages, tools=None, *, supervise="assistant", eot=EotArg::AUTO, start="prompt", spans="diff", boundary="merge", method="auto", **template_kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        supervise: &str,
        eot: EotArg,
        start: &str,
        spans: &str,
        boundary: &str,
        method: &str,
        template_kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyEncoding> {
        let opts = parse_options(supervise, eot, start, spans, boundary, method)?;
        let conv = conversation(messages)?;
        let tools = tools_value(tools)?;
        let vars = vars_from_dict(template_kwargs)?;
        let encoded = py
            .detach(|| {
                turnpack_core::error::guarded(|| {
                    self.inner
                        .encode(&conv, &tools, &vars, &opts)
                        .map(ForPython::new)
                })
            })
            .map_err(to_py)?;
        Ok(PyEncoding::new(py, encoded))
    }

    /// Encodes many conversations in parallel (GIL released), with the same results as `encode`.
    /// `on_error="skip"` puts the exception in place of a failed sample instead of raising.
    #[pyo3(signature = (conversations, tools=None, *, supervise="assistant", eot=EotArg::AUTO, start="prompt", spans="diff", boundary="merge", method="auto", num_threads=None, on_error="raise", **template_kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn encode_batch(
        &self,
        py: Python<'_>,
        conversations: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        supervise: &str,
        eot: EotArg,
        start: &str,
        spans: &str,
        boundary: &str,
        method: &str,
        num_threads: Option<usize>,
        on_error: &str,
        template_kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyList>> {
        let skip = match on_error {
            "raise" => false,
            "skip" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "on_error must be 'raise' or 'skip', got {other:?}"
                )))
            }
        };
        let opts = parse_options(supervise, eot, start, spans, boundary, method)?;
        let tools = tools_value(tools)?;
        let vars = vars_from_dict(template_kwargs)?;
        let threads = num_threads.unwrap_or_else(workers::default_threads).max(1);
        // `threads` threads in all: this one (it holds the GIL) reads the samples from Python while
        // up to `threads - 1` workers encode them, then encodes what is left alongside them. Reading
        // is a tenth of the work; done first, alone, it would not be parallel.
        let helpers = threads - 1;
        type Job = (usize, Json, Option<Json>);
        type Done = (usize, Result<ForPython, Error>);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        // What a worker needs, owned: workers are threads kept between calls (warm caches).
        let shared = Arc::new(BatchWork {
            tok: self.inner.clone(),
            tools,
            vars,
            opts,
            jobs: Mutex::new(job_rx),
        });
        let mut slots: Vec<Option<PyResult<ForPython>>> = Vec::new();
        let mut idle_again = Vec::new();
        let mut queued = 0;
        let mut read = Ok(());
        for (i, item) in conversations.try_iter()?.enumerate() {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            };
            slots.push(None);
            match sample(&item) {
                Ok((messages, row_tools)) => {
                    // the receiver lives in `shared` until every worker is done: sending cannot fail
                    let _ = job_tx.send((i, messages, row_tools));
                    queued += 1;
                    // one worker per sample beyond the first: a batch of one needs none
                    if idle_again.len() < helpers.min(queued - 1) {
                        let (work, done) = (shared.clone(), done_tx.clone());
                        // a worker that cannot start leaves its share to the others
                        if let Ok(idle) = workers::run(Box::new(move || work.drain(&done))) {
                            idle_again.push(idle);
                        }
                    }
                }
                Err(e) => slots[i] = Some(Err(with_sample(py, e, i))),
            }
        }
        drop(job_tx);
        let done: Vec<Done> = py.detach(move || {
            shared.drain(&done_tx);
            drop(done_tx);
            // a worker that somehow stopped without sending drops its sender: no hang
            let done = done_rx.iter().take(queued).collect();
            // back only once the workers are idle again (see `workers::run`)
            for idle in idle_again {
                let _ = idle.recv();
            }
            done
        });
        for (i, result) in done {
            slots[i] = Some(result.map_err(|e| to_py_with_context(e, Some(i))));
        }
        read?;
        let out = PyList::empty(py);
        for (i, slot) in slots.into_iter().enumerate() {
            let err = match slot {
                Some(Ok(done)) => {
                    out.append(Py::new(py, PyEncoding::new(py, done))?)?;
                    continue;
                }
                Some(Err(err)) => err,
                None => pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "sample {i}: its worker thread stopped without a result"
                )),
            };
            if skip {
                out.append(err.value(py))?;
            } else {
                return Err(err);
            }
        }
        Ok(out.unbind())
    }

    /// Plain tokenization of `text` (no template; special tokens recognised; no BOS/EOS added).
    /// With `with_offsets`, also each token's (start, end) character offsets in `text`.
    #[pyo3(signature = (text, *, with_offsets=false))]
    fn tokenize<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        with_offsets: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let tokens = py
            .detach(|| self.inner.tokenizer.encode(text))
            .map_err(to_py)?;
        if with_offsets {
            let offsets = tokens.char_offsets(text);
            (tokens.ids, offsets).into_bound_py_any(py)
        } else {
            tokens.ids.into_bound_py_any(py)
        }
    }

    /// The underlying tokenizer as tokenizer.json text (loadable with `tokenizers.Tokenizer.from_str`).
    fn to_tokenizer_json(&self) -> PyResult<String> {
        self.inner.tokenizer.to_json().map_err(to_py)
    }

    /// Which encoder turns text into ids: "turnpack" (turnpack's byte-level BPE, the default when
    /// the tokenizer qualifies) or "tokenizers". Both give the same ids and offsets.
    #[getter]
    fn bpe_backend(&self) -> &'static str {
        backend_name(self.inner.tokenizer.backend())
    }

    /// A copy that encodes with the given backend ("turnpack" or "tokenizers").
    fn with_bpe_backend(&self, backend: &str) -> PyResult<Self> {
        let mut inner = (*self.inner).clone();
        inner
            .tokenizer
            .set_backend(parse_backend(backend)?)
            .map_err(to_py)?;
        Ok(PyChatTokenizer {
            inner: Arc::new(inner),
        })
    }

    /// Why turnpack's BPE encoder cannot be used for this tokenizer (None when it can).
    #[getter]
    fn bpe_backend_unavailable(&self) -> Option<String> {
        self.inner
            .tokenizer
            .native_unavailable()
            .map(str::to_string)
    }

    /// Pickle support (DataLoader workers started with "spawn"): rebuilt from the tokenizer's JSON,
    /// the template's source and the template variables; the BPE backend is kept.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let this = slf.borrow();
        let json = this.inner.tokenizer.to_json().map_err(to_py)?;
        let source = this.inner.template.as_ref().map(|t| t.source().to_string());
        let vars = PyDict::new(py);
        for (k, v) in &this.inner.vars {
            if let Some(s) = v.as_str() {
                vars.set_item(k, s)?;
            }
        }
        let ctor = slf.get_type().getattr("from_tokenizer_json")?;
        let args = PyTuple::new(
            py,
            [
                json.into_pyobject(py)?.into_any(),
                source.into_pyobject(py)?.into_any(),
                vars.into_any(),
                backend_name(this.inner.tokenizer.backend())
                    .into_pyobject(py)?
                    .into_any(),
            ],
        )?;
        Ok((ctor, args))
    }

    #[getter]
    fn special_tokens(&self) -> Vec<String> {
        self.inner.tokenizer.special_tokens().to_vec()
    }

    #[getter]
    fn has_chat_template(&self) -> bool {
        self.inner.template.is_some()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.tokenizer.token_to_id(token)
    }
}

fn parse_backend(name: &str) -> PyResult<Backend> {
    match name {
        "turnpack" => Ok(Backend::Native),
        "tokenizers" => Ok(Backend::Tokenizers),
        other => Err(PyValueError::new_err(format!(
            "bpe_backend must be \"turnpack\" or \"tokenizers\", not {other:?}"
        ))),
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Native => "turnpack",
        Backend::Tokenizers => "tokenizers",
    }
}

/// One `encode_batch` call's work, shared by the threads that encode its samples.
struct BatchWork {
    tok: Arc<encode::ChatTokenizer>,
    tools: minijinja::Value,
    vars: Vars,
    opts: EncodeOptions,
    /// Samples read so far (index, messages, tools); closed when all are read.
    jobs: Mutex<mpsc::Receiver<(usize, Json, Option<Json>)>>,
}

impl BatchWork {
    /// Encodes queued samples until the queue is closed and empty.
    fn drain(&self, done: &mpsc::Sender<(usize, Result<ForPython, Error>)>) {
        loop {
            let job = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok((i, messages, row_tools)) = job else {
                return;
            };
            let encoded = turnpack_core::error::guarded(|| {
                let conv = Conversation::from_json(&messages)?;
                let row_tools = row_tools.as_ref().map(from_json);
                let tools = row_tools.as_ref().unwrap_or(&self.tools);
                self.tok
                    .encode(&conv, tools, &self.vars, &self.opts)
                    .map(ForPython::new)
            });
            // the caller waits for every result (if it is gone, so is the need)
            let _ = done.send((i, encoded));
        }
    }
}

/// One `encode_batch` item, read from Python: a conversation (list of messages) or a dict with
/// "messages" and optional "tools". Checking it is left to the worker that encodes it.
fn sample(item: &Bound<'_, PyAny>) -> PyResult<(Json, Option<Json>)> {
    if let Ok(d) = item.cast::<PyDict>() {
        let messages = d.get_item("messages")?.ok_or_else(|| {
            crate::errors::ConversationError::new_err("a sample dict needs a 'messages' key")
        })?;
        let row_tools = d.get_item("tools")?.filter(|t| !t.is_none());
        Ok((
            to_json(&messages, &mut "messages".to_string())?,
            row_tools
                .map(|t| to_json(&t, &mut "tools".to_string()))
                .transpose()?,
        ))
    } else {
        Ok((to_json(item, &mut "messages".to_string())?, None))
    }
}

/// Prefixes a Python exception's message with the sample index, keeping its type.
fn with_sample(py: Python<'_>, err: PyErr, index: usize) -> PyErr {
    let message = format!("sample {index}: {}", err.value(py));
    match err.get_type(py).call1((message,)) {
        Ok(value) => PyErr::from_value(value),
        Err(_) => err,
    }
}

/// Render a chat template without a tokenizer.
#[pyfunction]
#[pyo3(signature = (chat_template, messages, tools=None, add_generation_prompt=false, **template_vars))]
pub fn render_template(
    py: Python<'_>,
    chat_template: &str,
    messages: &Bound<'_, PyAny>,
    tools: Option<&Bound<'_, PyAny>>,
    add_generation_prompt: bool,
    template_vars: Option<&Bound<'_, PyDict>>,
) -> PyResult<String> {
    let template = ChatTemplate::new(chat_template).map_err(to_py)?;
    let conv = conversation(messages)?;
    let tools = tools_value(tools)?;
    let vars = vars_from_dict(template_vars)?;
    py.detach(|| {
        let ctx = turnpack_core::template::context(
            minijinja::Value::from(conv.values()),
            tools,
            add_generation_prompt,
            vars.iter().map(|(k, v)| (k.as_str(), v)),
        );
        template.render(&ctx).map(|r| r.text)
    })
    .map_err(to_py)
}

/// One encoded conversation. Offsets and spans are character offsets into `text`.
#[pyclass(module = "turnpack._core", name = "Encoding", frozen)]
pub struct PyEncoding {
    #[pyo3(get)]
    pub(crate) input_ids: Py<PyArray1<i32>>,
    #[pyo3(get)]
    pub(crate) mask: Py<PyArray1<bool>>,
    #[pyo3(get)]
    offsets: Py<PyArray2<i32>>,
    #[pyo3(get)]
    spans: Vec<(usize, usize)>,
    #[pyo3(get)]
    span_messages: Vec<Option<usize>>,
    #[pyo3(get)]
    skipped: Vec<usize>,
    #[pyo3(get)]
    text: String,
    /// Number of trained tokens.
    #[pyo3(get)]
    num_trained: usize,
    /// How many times the template was rendered to encode this conversation.
    #[pyo3(get)]
    renders: usize,
    len: usize,
}

/// An encoding converted for Python (character offsets, `i32` ids) without the GIL, so that
/// `encode_batch`'s workers do it in parallel; only wrapping the buffers needs the GIL.
pub(crate) struct ForPython {
    ids: Vec<i32>,
    mask: Vec<bool>,
    offsets: Array2<i32>,
    spans: Vec<(usize, usize)>,
    enc: Encoded,
    num_trained: usize,
}

impl ForPython {
    pub(crate) fn new(mut enc: Encoded) -> Self {
        let chars = turnpack_core::spans::CharIndex::new(&enc.text);
        let n = enc.ids.len();
        let num_trained = enc.mask.iter().filter(|&&m| m).count();
        // taken, not borrowed: a batch's results wait together, in their Python form only
        let flat: Vec<i32> = std::mem::take(&mut enc.offsets)
            .into_iter()
            .flat_map(|(a, b)| [chars.char_of(a) as i32, chars.char_of(b) as i32])
            .collect();
        ForPython {
            ids: std::mem::take(&mut enc.ids)
                .into_iter()
                .map(|i| i as i32)
                .collect(),
            mask: std::mem::take(&mut enc.mask),
            offsets: Array2::from_shape_vec((n, 2), flat).expect("two offsets per token"),
            spans: enc
                .spans
                .iter()
                .map(|s| (chars.char_of(s.start), chars.char_of(s.end)))
                .collect(),
            num_trained,
            enc,
        }
    }
}

impl PyEncoding {
    fn new(py: Python<'_>, p: ForPython) -> Self {
        let len = p.ids.len();
        PyEncoding {
            input_ids: p.ids.into_pyarray(py).unbind(),
            mask: p.mask.into_pyarray(py).unbind(),
            offsets: p.offsets.into_pyarray(py).unbind(),
            spans: p.spans,
            span_messages: p.enc.span_messages,
            skipped: p.enc.skipped,
            text: p.enc.text,
            num_trained: p.num_trained,
            renders: p.enc.renders,
            len,
        }
    }
}

#[pymethods]
impl PyEncoding {
    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        format!(
            "Encoding(tokens={}, trained={}, spans={}, skipped={:?})",
            self.len,
            self.num_trained,
            self.spans.len(),
            self.skipped
        )
    }
}
