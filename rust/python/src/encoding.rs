//! `Encoding`: one encoded conversation for Python. Offsets and spans are character offsets into
//! `text`.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;
use turnpack_core::Encoded;

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
pub struct ForPython {
    ids: Vec<i32>,
    mask: Vec<bool>,
    offsets: Array2<i32>,
    spans: Vec<(usize, usize)>,
    enc: Encoded,
    num_trained: usize,
}

impl ForPython {
    pub fn new(mut enc: Encoded) -> Self {
        let chars = enc.char_index();
        let n = enc.ids.len();
        let num_trained = enc.num_trained();
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
    pub fn new(py: Python<'_>, p: ForPython) -> Self {
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
