//! `Encoding`: one encoded conversation for Python. Offsets and spans are character offsets into
//! `text`.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use turnpack_core::{Encoded, TreeBranch};

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
    /// How many renderings checking the history took (apart from `renders`).
    #[pyo3(get)]
    history_renders: usize,
    /// Per-token loss weights, or None when every trained message weighs 1.
    #[pyo3(get)]
    loss_weights: Option<Py<PyArray1<f32>>>,
    pub(crate) weights: Vec<f32>,
    /// Supervised turns the rendering rewrites, as dicts (see `_core.pyi`).
    #[pyo3(get)]
    rewrites: Py<PyList>,
    /// With `history="expand"`: the rewritten turns' branches, as dicts (see `_core.pyi`).
    #[pyo3(get)]
    branches: Py<PyList>,
    /// The branches as the packer takes them.
    pub(crate) tree: Vec<TreeBranch>,
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
    rewrite_spans: Vec<(usize, usize)>,
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
            rewrite_spans: enc
                .rewrites
                .iter()
                .map(|r| {
                    (
                        chars.char_of(r.rendered.start),
                        chars.char_of(r.rendered.end),
                    )
                })
                .collect(),
            num_trained,
            enc,
        }
    }
}

impl PyEncoding {
    pub fn new(py: Python<'_>, p: ForPython) -> PyResult<Self> {
        let len = p.ids.len();
        let rewrites = PyList::empty(py);
        for (r, span) in p.enc.rewrites.iter().zip(&p.rewrite_spans) {
            let d = PyDict::new(py);
            d.set_item("message", r.message)?;
            d.set_item("rendered", *span)?;
            d.set_item("context", &r.context)?;
            d.set_item("target", &r.target)?;
            d.set_item("training", r.training.name())?;
            rewrites.append(d)?;
        }
        let branches = PyList::empty(py);
        let mut tree = Vec::with_capacity(p.enc.branches.len());
        for b in p.enc.branches {
            let d = PyDict::new(py);
            d.set_item("message", b.message)?;
            d.set_item("prefix_len", b.prefix_len)?;
            let ids: Vec<i32> = b.input_ids.iter().map(|&i| i as i32).collect();
            d.set_item("input_ids", ids.into_pyarray(py))?;
            d.set_item("mask", b.mask.clone().into_pyarray(py))?;
            let w = (!b.loss_weights.is_empty()).then(|| b.loss_weights.clone().into_pyarray(py));
            d.set_item("loss_weights", w)?;
            branches.append(d)?;
            tree.push(TreeBranch {
                prefix_len: b.prefix_len,
                input_ids: b.input_ids,
                mask: b.mask,
                loss_weights: b.loss_weights,
            });
        }
        let weights = p.enc.loss_weights;
        Ok(PyEncoding {
            loss_weights: (!weights.is_empty()).then(|| weights.clone().into_pyarray(py).unbind()),
            weights,
            rewrites: rewrites.unbind(),
            branches: branches.unbind(),
            tree,
            input_ids: p.ids.into_pyarray(py).unbind(),
            mask: p.mask.into_pyarray(py).unbind(),
            offsets: p.offsets.into_pyarray(py).unbind(),
            spans: p.spans,
            span_messages: p.enc.span_messages,
            skipped: p.enc.skipped,
            text: p.enc.text,
            num_trained: p.num_trained,
            renders: p.enc.renders,
            history_renders: p.enc.history_renders,
            len,
        })
    }
}

#[pymethods]
impl PyEncoding {
    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let mut extra = String::new();
        let rewrites = self.rewrites.bind(py).len();
        if rewrites > 0 {
            extra.push_str(&format!(", rewritten={rewrites}"));
        }
        if !self.tree.is_empty() {
            extra.push_str(&format!(", branches={}", self.tree.len()));
        }
        format!(
            "Encoding(tokens={}, trained={}, spans={}, skipped={:?}{extra})",
            self.len,
            self.num_trained,
            self.spans.len(),
            self.skipped
        )
    }

    /// Message indices of the supervised turns the rendering rewrites.
    #[getter]
    fn rewritten(&self, py: Python<'_>) -> PyResult<Vec<usize>> {
        self.rewrites
            .bind(py)
            .iter()
            .map(|d| d.get_item("message")?.extract())
            .collect()
    }
}
