//! Python binding for packing: `pack(...)`, the streaming `Packer`, and the `PackedBatch` result.

use crate::chat_tokenizer::PyEncoding;
use crate::errors::to_py_with_context;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use turnpack_core::pack::{
    self, Admission, DropReason, Overflow, PackOptions, PackStats, PackedRows, Sample,
};

fn options(
    buffer: usize,
    max_open_rows: usize,
    overflow: &str,
    pad_id: u32,
) -> PyResult<PackOptions> {
    let overflow: Overflow = overflow.parse().map_err(|e| to_py_with_context(e, None))?;
    Ok(PackOptions {
        buffer,
        max_open_rows,
        overflow,
        pad_id,
    })
}

/// Token ids of any integer array-like, checked to be non-negative.
fn ids_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u32>> {
    let to_u32 = |v: i64| {
        u32::try_from(v)
            .map_err(|_| PyValueError::new_err(format!("{what}: token id {v} is out of range")))
    };
    if let Ok(a) = obj.extract::<PyReadonlyArray1<i32>>() {
        return a.as_slice()?.iter().map(|&v| to_u32(v as i64)).collect();
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<i64>>() {
        return a.as_slice()?.iter().map(|&v| to_u32(v)).collect();
    }
    let v: Vec<i64> = obj
        .extract()
        .map_err(|_| PyValueError::new_err(format!("{what}: input_ids must be integers")))?;
    v.into_iter().map(to_u32).collect()
}

fn mask_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<bool>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<bool>>() {
        return Ok(a.as_slice()?.to_vec());
    }
    if let Ok(v) = obj.extract::<Vec<bool>>() {
        return Ok(v);
    }
    // 0/1 integers, as in `attention_mask`-style lists
    let v: Vec<i64> = obj
        .extract()
        .map_err(|_| PyValueError::new_err(format!("{what}: mask must be booleans or 0/1")))?;
    v.into_iter()
        .map(|x| match x {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(PyValueError::new_err(format!(
                "{what}: mask value {other} is not 0 or 1"
            ))),
        })
        .collect()
}

/// One sample from an `Encoding`, an `(input_ids, mask)` pair or a dict with those keys.
fn sample_of(item: &Bound<'_, PyAny>, id: u64, index: usize) -> PyResult<Sample> {
    let what = format!("sample {index}");
    if let Ok(enc) = item.cast::<PyEncoding>() {
        let enc = enc.get();
        let py = item.py();
        // An Encoding's ids come from a tokenizer and are never negative.
        let ids = enc.input_ids.bind(py).readonly();
        let ids = ids.as_slice()?.iter().map(|&v| v as u32).collect();
        let mask = enc.mask.bind(py).readonly().as_slice()?.to_vec();
        return Ok(Sample::new(id, ids, mask));
    }
    let (ids, mask) = if let Ok(d) = item.cast::<PyDict>() {
        let get = |k: &str| {
            d.get_item(k)?
                .ok_or_else(|| PyValueError::new_err(format!("{what}: a dict sample needs {k:?}")))
        };
        (get("input_ids")?, get("mask")?)
    } else if let Ok(t) = item.cast::<PyTuple>() {
        if t.len() != 2 {
            return Err(PyValueError::new_err(format!(
                "{what}: a tuple sample must be (input_ids, mask)"
            )));
        }
        (t.get_item(0)?, t.get_item(1)?)
    } else {
        return Err(PyValueError::new_err(format!(
            "{what}: expected an Encoding, an (input_ids, mask) pair or a dict, got {}",
            item.get_type().name()?
        )));
    };
    Ok(Sample::new(
        id,
        ids_of(&ids, &what)?,
        mask_of(&mask, &what)?,
    ))
}

/// Sample ids: the caller's, or the position in the input.
fn sample_ids(py_ids: Option<Vec<u64>>, n: usize) -> PyResult<Vec<u64>> {
    match py_ids {
        None => Ok((0..n as u64).collect()),
        Some(ids) if ids.len() == n => Ok(ids),
        Some(ids) => Err(PyValueError::new_err(format!(
            "sample_ids has {} entries for {n} samples",
            ids.len()
        ))),
    }
}

fn stats_dict<'py>(py: Python<'py>, s: &PackStats) -> PyResult<Bound<'py, PyDict>> {
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
    d.set_item("efficiency", s.efficiency())?;
    Ok(d)
}

fn admission_str(a: Admission) -> &'static str {
    match a {
        Admission::Accepted => "accepted",
        Admission::Truncated => "truncated",
        Admission::Dropped(DropReason::Empty) => "dropped_empty",
        Admission::Dropped(DropReason::TooLong) => "dropped_too_long",
        Admission::Dropped(DropReason::NothingToTrain) => "dropped_nothing_to_train",
    }
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
    /// Totals of the run that produced this batch (for a `Packer`: cumulative at that moment).
    #[pyo3(get)]
    stats: Py<PyDict>,
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
    fn new(py: Python<'_>, rows: PackedRows, stats: &PackStats) -> PyResult<Self> {
        let n = rows.rows();
        let seq_len = rows.seq_len;
        let (cu, cu_w) = rows.cu_seqlens();
        let (sids, sid_w) = rows.sample_ids_padded();
        Ok(PyPackedBatch {
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

    /// Non-padding positions / all positions of these rows.
    #[getter]
    fn efficiency(&self, py: Python<'_>) -> PyResult<f64> {
        let lens = self.doc_lens.bind(py).readonly();
        let used: u64 = lens.as_slice()?.iter().map(|&l| l as u64).sum();
        let all = (self.rows * self.seq_len) as u64;
        Ok(if all == 0 {
            0.0
        } else {
            used as f64 / all as f64
        })
    }

    fn __repr__(&self) -> String {
        format!("PackedBatch(rows={}, seq_len={})", self.rows, self.seq_len)
    }
}

/// Packs samples into rows of `seq_len` tokens by best-fit decreasing over a bounded buffer.
#[pyfunction]
#[pyo3(name = "pack")]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (samples, seq_len, *, buffer=pack::DEFAULT_BUFFER, max_open_rows=pack::DEFAULT_MAX_OPEN_ROWS, overflow="drop", pad_id=0, sample_ids=None))]
pub fn pack_samples(
    py: Python<'_>,
    samples: &Bound<'_, PyAny>,
    seq_len: usize,
    buffer: usize,
    max_open_rows: usize,
    overflow: &str,
    pad_id: u32,
    sample_ids: Option<Vec<u64>>,
) -> PyResult<PyPackedBatch> {
    let opts = options(buffer, max_open_rows, overflow, pad_id)?;
    let items: Vec<Bound<'_, PyAny>> = samples.try_iter()?.collect::<PyResult<_>>()?;
    let ids = self::sample_ids(sample_ids, items.len())?;
    let parsed: Vec<Sample> = items
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (item, &id))| sample_of(item, id, i))
        .collect::<PyResult<_>>()?;
    let packed = py
        .detach(|| pack::pack(&parsed, seq_len, &opts))
        .map_err(|e| to_py_with_context(e, None))?;
    PyPackedBatch::new(py, packed.rows, &packed.stats)
}

/// Streaming packer: push samples, pop finished rows; `flush()` at the end of the stream.
#[pyclass(module = "turnpack._core", name = "Packer")]
pub struct PyPacker {
    inner: pack::Packer,
    next_id: u64,
}

#[pymethods]
impl PyPacker {
    #[new]
    #[pyo3(signature = (seq_len, *, buffer=pack::DEFAULT_BUFFER, max_open_rows=pack::DEFAULT_MAX_OPEN_ROWS, overflow="drop", pad_id=0))]
    fn new(
        seq_len: usize,
        buffer: usize,
        max_open_rows: usize,
        overflow: &str,
        pad_id: u32,
    ) -> PyResult<Self> {
        let opts = options(buffer, max_open_rows, overflow, pad_id)?;
        let inner = pack::Packer::new(seq_len, opts).map_err(|e| to_py_with_context(e, None))?;
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
        Ok(admission_str(admission))
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPackedBatch>()?;
    m.add_class::<PyPacker>()?;
    m.add_function(wrap_pyfunction!(pack_samples, m)?)?;
    Ok(())
}
