//! `PackedBatch`: packed rows for Python, as `[rows, seq_len]` numpy arrays (see `_core.pyi`).

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use turnpack_core::{PackStats, PackedRows};

/// A packer's running totals as a dict (the keys `stats.json` and the Python API use).
pub fn stats_dict<'py>(py: Python<'py>, s: &PackStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("samples_in", s.samples_in)?;
    d.set_item("packed", s.packed)?;
    d.set_item("pending", s.pending)?;
    d.set_item("dropped_too_long", s.dropped_too_long)?;
    d.set_item("dropped_nothing_to_train", s.dropped_nothing_to_train)?;
    d.set_item("dropped_empty", s.dropped_empty)?;
    d.set_item("dropped", s.dropped())?;
    d.set_item("truncated", s.truncated)?;
    d.set_item("tokens", s.tokens)?;
    d.set_item("trained_tokens", s.trained_tokens)?;
    d.set_item("padding_tokens", s.padding_tokens)?;
    d.set_item("rows", s.rows)?;
    d.set_item("branches_in", s.branches_in)?;
    d.set_item("branches_packed", s.branches_packed)?;
    d.set_item("branches_truncated", s.branches_truncated)?;
    d.set_item("branches_dropped", s.branches_dropped)?;
    d.set_item("tree_splits", s.tree_splits)?;
    d.set_item("efficiency", s.efficiency())?;
    Ok(d)
}

/// Packed rows. Per-token arrays are `[rows, seq_len]`; see the attribute docs in `_core.pyi`.
#[pyclass(module = "turnpack._core", name = "PackedBatch", frozen)]
pub struct PyPackedBatch {
    #[pyo3(get)]
    seq_len: usize,
    #[pyo3(get)]
    input_ids: Py<PyArray2<i32>>,
    #[pyo3(get)]
    labels: Py<PyArray2<i64>>,
    #[pyo3(get)]
    position_ids: Py<PyArray2<i32>>,
    #[pyo3(get)]
    document_ids: Py<PyArray2<i32>>,
    /// `[rows, max_segments + 1]` int32 per-row boundaries, tail filled with `seq_len`.
    #[pyo3(get)]
    cu_seqlens: Py<PyArray2<i32>>,
    /// `[rows, max_segments]` int64 sample id of each document, -1 for padding and fill.
    #[pyo3(get)]
    sample_ids: Py<PyArray2<i64>>,
    /// Flat per-document lengths and the `rows + 1` offsets delimiting each row's documents.
    #[pyo3(get)]
    doc_lens: Py<PyArray1<u32>>,
    #[pyo3(get)]
    row_doc_offsets: Py<PyArray1<u64>>,
    /// Prefix-tree rows only (else `None`): `[rows, seq_len]` int32 ranges each token also
    /// attends to, and each document's role (0 sample, 1 branch, 2 context copy).
    #[pyo3(get)]
    prefix_starts: Option<Py<PyArray2<i32>>>,
    #[pyo3(get)]
    prefix_ends: Option<Py<PyArray2<i32>>>,
    #[pyo3(get)]
    doc_roles: Option<Py<PyArray1<u8>>>,
    /// `[rows, seq_len]` float32 weight of each label, when a packed sample had loss weights.
    #[pyo3(get)]
    loss_weights: Option<Py<PyArray2<f32>>>,
    /// Totals of the run that produced this batch (for a `Packer`: cumulative at that moment).
    #[pyo3(get)]
    stats: Py<PyDict>,
    /// Non-padding positions / all positions of these rows.
    #[pyo3(get)]
    efficiency: f64,
    rows: usize,
}

fn rect<T: numpy::Element>(
    py: Python<'_>,
    v: Vec<T>,
    rows: usize,
    width: usize,
) -> Py<PyArray2<T>> {
    Array2::from_shape_vec((rows, width), v)
        .expect("packed arrays are rectangular")
        .into_pyarray(py)
        .unbind()
}

impl PyPackedBatch {
    pub fn new(py: Python<'_>, rows: PackedRows, stats: &PackStats) -> PyResult<Self> {
        let n = rows.rows();
        let seq_len = rows.seq_len;
        let (cu, cu_w) = rows.cu_seqlens();
        let (sids, sid_w) = rows.sample_ids_padded();
        let tree = rows.has_tree();
        let efficiency = rows.efficiency();
        let mut rows = rows;
        let (prefix_starts, prefix_ends, doc_roles) = if tree {
            (
                Some(rect(
                    py,
                    std::mem::take(&mut rows.prefix_starts),
                    n,
                    seq_len,
                )),
                Some(rect(py, std::mem::take(&mut rows.prefix_ends), n, seq_len)),
                Some(
                    std::mem::take(&mut rows.doc_roles)
                        .into_pyarray(py)
                        .unbind(),
                ),
            )
        } else {
            (None, None, None)
        };
        let loss_weights = rows
            .has_loss_weights()
            .then(|| rect(py, std::mem::take(&mut rows.loss_weights), n, seq_len));
        Ok(PyPackedBatch {
            loss_weights,
            prefix_starts,
            prefix_ends,
            doc_roles,
            efficiency,
            seq_len,
            cu_seqlens: rect(py, cu, n, if n == 0 { 1 } else { cu_w }),
            sample_ids: rect(py, sids, n, sid_w),
            input_ids: rect(
                py,
                rows.input_ids.iter().map(|&i| i as i32).collect(),
                n,
                seq_len,
            ),
            labels: rect(
                py,
                rows.labels.iter().map(|&l| l as i64).collect(),
                n,
                seq_len,
            ),
            position_ids: rect(py, rows.position_ids, n, seq_len),
            document_ids: rect(py, rows.document_ids, n, seq_len),
            doc_lens: rows.doc_lens.into_pyarray(py).unbind(),
            row_doc_offsets: rows
                .row_doc_offsets
                .iter()
                .map(|&o| o as u64)
                .collect::<Vec<_>>()
                .into_pyarray(py)
                .unbind(),
            stats: stats_dict(py, stats)?.unbind(),
            rows: n,
        })
    }
}

#[pymethods]
impl PyPackedBatch {
    /// Number of rows.
    fn __len__(&self) -> usize {
        self.rows
    }

    fn __repr__(&self) -> String {
        format!("PackedBatch(rows={}, seq_len={})", self.rows, self.seq_len)
    }
}
