//! `ChatTokenizer` for Python: each method converts its arguments, releases the GIL, calls the
//! core (`turnpack_core::ChatTokenizer`, `BatchEncoder`) and wraps the result.

use crate::encoding::{ForPython, PyEncoding};
use crate::errors::{to_py, to_py_with_context};
use crate::inputs::{conversation, start_batch, str_pairs, tools_value, vars_from_dict, ReadBatch};
use crate::options::{encode_options, skip_errors, EotArg, SuperviseArg};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::IntoPyObjectExt;
use std::path::PathBuf;
use std::sync::Arc;
use turnpack_core::{guarded, tiktoken, ChatTemplate, ChatTokenizer, TextTokenizer};

#[pyclass(module = "turnpack._core", name = "ChatTokenizer", frozen)]
pub struct PyChatTokenizer {
    /// Shared with batch worker threads, which outlive a call.
    pub(crate) inner: Arc<ChatTokenizer>,
}

impl PyChatTokenizer {
    fn wrap(
        tokenizer: TextTokenizer,
        chat_template: Option<&str>,
        special_tokens: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let inner =
            ChatTokenizer::from_parts(tokenizer, chat_template, &str_pairs(special_tokens)?)
                .map_err(to_py)?;
        Ok(PyChatTokenizer {
            inner: Arc::new(inner),
        })
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
        Self::wrap(tok, chat_template, special_tokens)
    }

    /// Loads a Hugging Face model folder (tokenizer.json, tokenizer_config.json, chat_template.jinja).
    #[staticmethod]
    #[pyo3(signature = (path, chat_template=None))]
    fn from_dir(path: PathBuf, chat_template: Option<&str>) -> PyResult<Self> {
        let mut inner = ChatTokenizer::from_dir(&path).map_err(to_py)?;
        if let Some(source) = chat_template {
            inner.template = Some(ChatTemplate::new(source).map_err(to_py)?);
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
            tok.set_backend(name.parse().map_err(to_py)?)
                .map_err(to_py)?;
        }
        Self::wrap(tok, chat_template, special_tokens)
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
        let tok = tiktoken::load(&ranks_path, pattern, &specials).map_err(to_py)?;
        Self::wrap(TextTokenizer::new(tok), chat_template, template_vars)
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
    #[pyo3(signature = (messages, tools=None, *, supervise=SuperviseArg::ASSISTANT, eot=EotArg::AUTO, start="prompt", spans="diff", boundary="merge", method="auto", history="rendered", **template_kwargs))]
    #[pyo3(
        text_signature = "($self, messages, tools=None, *, supervise='assistant', eot='auto', start='prompt', spans='diff', boundary='merge', method='auto', history='rendered', **template_kwargs)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        supervise: SuperviseArg,
        eot: EotArg,
        start: &str,
        spans: &str,
        boundary: &str,
        method: &str,
        history: &str,
        template_kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyEncoding> {
        let opts = encode_options(supervise, eot, start, spans, boundary, method, history)?;
        let conv = conversation(messages)?;
        let tools = tools_value(tools)?;
        let vars = vars_from_dict(template_kwargs)?;
        let encoded = py
            .detach(|| {
                guarded(|| {
                    self.inner
                        .encode(&conv, &tools, &vars, &opts)
                        .map(ForPython::new)
                })
            })
            .map_err(to_py)?;
        PyEncoding::new(py, encoded)
    }

    /// Encodes many conversations in parallel (GIL released), with the same results as `encode`.
    /// `on_error="skip"` puts the exception in place of a failed sample instead of raising.
    #[pyo3(signature = (conversations, tools=None, *, supervise=SuperviseArg::ASSISTANT, eot=EotArg::AUTO, start="prompt", spans="diff", boundary="merge", method="auto", history="rendered", num_threads=None, on_error="raise", **template_kwargs))]
    #[pyo3(
        text_signature = "($self, conversations, tools=None, *, supervise='assistant', eot='auto', start='prompt', spans='diff', boundary='merge', method='auto', history='rendered', num_threads=None, on_error='raise', **template_kwargs)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn encode_batch(
        &self,
        py: Python<'_>,
        conversations: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        supervise: SuperviseArg,
        eot: EotArg,
        start: &str,
        spans: &str,
        boundary: &str,
        method: &str,
        history: &str,
        num_threads: Option<usize>,
        on_error: &str,
        template_kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyList>> {
        let skip = skip_errors(on_error)?;
        let opts = encode_options(supervise, eot, start, spans, boundary, method, history)?;
        let ReadBatch {
            batch,
            unread,
            read,
        } = start_batch(
            py,
            &self.inner,
            conversations,
            tools,
            template_kwargs,
            opts,
            num_threads,
            ForPython::new,
        )?;
        let done = py.detach(move || batch.finish());
        read?;
        let out = PyList::empty(py);
        for (i, (unread, result)) in unread.into_iter().zip(done).enumerate() {
            let err = match (unread, result) {
                (Some(err), _) => err,
                (None, Some(Ok(encoded))) => {
                    out.append(Py::new(py, PyEncoding::new(py, encoded)?)?)?;
                    continue;
                }
                (None, Some(Err(e))) => to_py_with_context(e, Some(i)),
                (None, None) => PyRuntimeError::new_err(format!(
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

    /// Text of token ids, through the tokenizer's decoder.
    #[pyo3(signature = (ids, *, skip_special_tokens=false))]
    fn decode(&self, py: Python<'_>, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        py.detach(|| self.inner.tokenizer.decode(&ids, skip_special_tokens))
            .map_err(to_py)
    }

    /// The highest token id (vocabulary or added token) plus one: a model's embedding size.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.tokenizer.vocab_size()
    }

    /// The underlying tokenizer as tokenizer.json text (loadable with `tokenizers.Tokenizer.from_str`).
    fn to_tokenizer_json(&self) -> PyResult<String> {
        self.inner.tokenizer.to_json().map_err(to_py)
    }

    /// Which encoder turns text into ids: "turnpack" (turnpack's byte-level BPE, the default when
    /// the tokenizer qualifies) or "tokenizers". Both give the same ids and offsets.
    #[getter]
    fn bpe_backend(&self) -> &'static str {
        self.inner.tokenizer.backend().name()
    }

    /// A copy that encodes with the given backend ("turnpack" or "tokenizers").
    fn with_bpe_backend(&self, backend: &str) -> PyResult<Self> {
        let mut inner = (*self.inner).clone();
        inner
            .tokenizer
            .set_backend(backend.parse().map_err(to_py)?)
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
                this.inner
                    .tokenizer
                    .backend()
                    .name()
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
