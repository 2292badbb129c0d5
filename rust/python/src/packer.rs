//! `Packer` for Python: a streaming packer fed `Encoding`s, `(input_ids, mask)` pairs, or
//! conversations encoded straight into it (`encode_extend`).

use crate::chat_tokenizer::PyChatTokenizer;
use crate::errors::{to_py, to_py_with_context};
use crate::inputs::{start_batch, ReadBatch};
use crate::options::{encode_options, pack_options, EotArg, SuperviseArg};
use crate::packed_batch::{stats_dict, PyPackedBatch};
use crate::samples::{self, sample_of};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use turnpack_core::Packer;

/// Streaming packer: push samples, pop finished rows; `flush()` at the end of the stream.
#[pyclass(module = "turnpack._core", name = "Packer")]
pub struct PyPacker {
    inner: Packer,
    next_id: u64,
}

#[pymethods]
impl PyPacker {
    #[new]
    #[pyo3(signature = (seq_len, *, buffer=1024, max_open_rows=16, overflow="drop", pad_id=0))]
    fn new(
        seq_len: usize,
        buffer: usize,
        max_open_rows: usize,
        overflow: &str,
        pad_id: u32,
    ) -> PyResult<Self> {
        let opts = pack_options(buffer, max_open_rows, overflow, pad_id)?;
        let inner = Packer::new(seq_len, opts).map_err(to_py)?;
        Ok(PyPacker { inner, next_id: 0 })
    }

    /// Adds one sample; returns "accepted", "truncated" or "dropped_<reason>".
    /// `sample_id` defaults to the count of samples pushed before it.
    #[pyo3(signature = (sample, sample_id=None))]
    fn push(
        &mut self,
        sample: &Bound<'_, PyAny>,
        sample_id: Option<u64>,
    ) -> PyResult<&'static str> {
        let id = sample_id.unwrap_or(self.next_id);
        let parsed = sample_of(sample, id, self.next_id as usize)?;
        let admission = self
            .inner
            .push(parsed)
            .map_err(|e| to_py_with_context(e, Some(self.next_id as usize)))?;
        self.next_id += 1;
        Ok(admission.name())
    }

    /// Pushes every sample of an iterable; returns how many were admitted.
    #[pyo3(signature = (samples, sample_ids=None))]
    fn extend(
        &mut self,
        samples: &Bound<'_, PyAny>,
        sample_ids: Option<Vec<u64>>,
    ) -> PyResult<usize> {
        let mut admitted = 0;
        for (k, item) in samples.try_iter()?.enumerate() {
            let id =
                match &sample_ids {
                    None => None,
                    Some(ids) => Some(*ids.get(k).ok_or_else(|| {
                        PyValueError::new_err("sample_ids is shorter than samples")
                    })?),
                };
            if !self.push(&item?, id)?.starts_with("dropped") {
                admitted += 1;
            }
        }
        Ok(admitted)
    }

    /// Encodes conversations (as `ChatTokenizer.encode_batch` takes them, on `num_threads` threads)
    /// and pushes each straight into this packer, in input order, without making `Encoding`s. When
    /// the iterable itself raises, nothing is pushed and the exception propagates.
    /// Returns per input `None` when it reached the packer (its stats count what it drops) or the
    /// exception that kept it out, as `encode_batch(on_error="skip")` gives it.
    /// `sample_ids` defaults to consecutive ids continuing the count of samples given so far.
    #[pyo3(signature = (tokenizer, conversations, tools=None, *, sample_ids=None, supervise=SuperviseArg::ASSISTANT, eot=EotArg::AUTO, start="prompt", spans="diff", boundary="merge", method="auto", history="rendered", num_threads=None, **template_kwargs))]
    #[pyo3(
        text_signature = "($self, tokenizer, conversations, tools=None, *, sample_ids=None, supervise='assistant', eot='auto', start='prompt', spans='diff', boundary='merge', method='auto', history='rendered', num_threads=None, **template_kwargs)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn encode_extend(
        &mut self,
        py: Python<'_>,
        tokenizer: &PyChatTokenizer,
        conversations: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        sample_ids: Option<Vec<u64>>,
        supervise: SuperviseArg,
        eot: EotArg,
        start: &str,
        spans: &str,
        boundary: &str,
        method: &str,
        history: &str,
        num_threads: Option<usize>,
        template_kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyList>> {
        let opts = encode_options(supervise, eot, start, spans, boundary, method, history)?;
        let ReadBatch {
            batch,
            unread,
            read,
        } = start_batch(
            py,
            &tokenizer.inner,
            conversations,
            tools,
            template_kwargs,
            opts,
            num_threads,
            |encoded| encoded,
        )?;
        let n = unread.len();
        let ids = match sample_ids {
            Some(ids) => ids,
            None => (self.next_id..self.next_id + n as u64).collect(),
        };
        let packer = &mut self.inner;
        let read_all = read.is_ok();
        let errors = py.detach(move || {
            // The batch is finished whatever happens, so that no worker is left busy; its samples
            // reach the packer only when every input was read and the ids fit (all or nothing).
            let checked = samples::sample_ids(Some(ids), n);
            match checked {
                Ok(ids) if read_all => batch.finish_into(packer, &ids).map_err(to_py),
                Ok(_) => {
                    batch.finish();
                    Ok(Vec::new())
                }
                Err(e) => {
                    batch.finish();
                    Err(e)
                }
            }
        })?;
        read?;
        self.next_id += n as u64;
        let out = PyList::empty(py);
        for (i, (unread, error)) in unread.into_iter().zip(errors).enumerate() {
            match (unread, error) {
                (Some(err), _) => out.append(err.value(py))?,
                (None, Some(e)) => out.append(to_py_with_context(e, Some(i)).value(py))?,
                (None, None) => out.append(py.None())?,
            }
        }
        Ok(out.unbind())
    }

    /// Rows finished and not yet popped.
    #[getter]
    fn ready_rows(&self) -> usize {
        self.inner.ready_rows()
    }

    /// The finished rows, or None when there are none yet.
    fn pop_ready(&mut self, py: Python<'_>) -> PyResult<Option<PyPackedBatch>> {
        match self.inner.pop_ready() {
            Some(rows) => Ok(Some(PyPackedBatch::new(py, rows, self.inner.stats())?)),
            None => Ok(None),
        }
    }

    /// Packs everything still buffered and returns all rows not yet popped (possibly zero rows).
    fn flush(&mut self, py: Python<'_>) -> PyResult<PyPackedBatch> {
        let rows = self.inner.flush();
        PyPackedBatch::new(py, rows, self.inner.stats())
    }

    /// Running totals: samples in, packed, pending, dropped by reason, tokens, rows, efficiency.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, self.inner.stats())
    }

    #[getter]
    fn seq_len(&self) -> usize {
        self.inner.seq_len()
    }
}
