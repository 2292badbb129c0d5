//! Packer inputs read from Python: an `Encoding`, an `(input_ids, mask)` pair, or a dict with
//! those keys, with any integer / boolean array-like.

use crate::encoding::PyEncoding;
use numpy::{PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use turnpack_core::{Sample, TreeBranch};

/// Token ids of any integer array-like, checked to be non-negative.
fn ids_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u32>> {
    let to_u32 = |v: i64| {
        u32::try_from(v)
            .map_err(|_| PyValueError::new_err(format!("{what}: token id {v} is out of range")))
    };
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, i32>>() {
        return a.as_slice()?.iter().map(|&v| to_u32(v as i64)).collect();
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, i64>>() {
        return a.as_slice()?.iter().map(|&v| to_u32(v)).collect();
    }
    let v: Vec<i64> = obj
        .extract()
        .map_err(|_| PyValueError::new_err(format!("{what}: input_ids must be integers")))?;
    v.into_iter().map(to_u32).collect()
}

fn mask_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<bool>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, bool>>() {
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
pub fn sample_of(item: &Bound<'_, PyAny>, id: u64, index: usize) -> PyResult<Sample> {
    let what = format!("sample {index}");
    if let Ok(enc) = item.cast::<PyEncoding>() {
        let enc = enc.get();
        let py = item.py();
        // An Encoding's ids come from a tokenizer and are never negative.
        let ids = enc.input_ids.bind(py).readonly();
        let ids = ids.as_slice()?.iter().map(|&v| v as u32).collect();
        let mask = enc.mask.bind(py).readonly().as_slice()?.to_vec();
        return Ok(Sample::new(id, ids, mask)
            .with_loss_weights(enc.weights.clone())
            .with_branches(enc.tree.clone()));
    }
    let (ids, mask) = if let Ok(d) = item.cast::<PyDict>() {
        let get = |k: &str| {
            d.get_item(k)?
                .ok_or_else(|| PyValueError::new_err(format!("{what}: a dict sample needs {k:?}")))
        };
        let branches = match d.get_item("branches")? {
            Some(b) if !b.is_none() => branches_of(&b, &what)?,
            _ => Vec::new(),
        };
        let weights = match d.get_item("loss_weights")? {
            Some(w) if !w.is_none() => weights_of(&w, &what)?,
            _ => Vec::new(),
        };
        return Ok(Sample::new(
            id,
            ids_of(&get("input_ids")?, &what)?,
            mask_of(&get("mask")?, &what)?,
        )
        .with_loss_weights(weights)
        .with_branches(branches));
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

/// Loss weights of any float array-like (checked by the packer).
fn weights_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, f32>>() {
        return Ok(a.as_array().to_vec());
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, f64>>() {
        return Ok(a.as_array().iter().map(|&x| x as f32).collect());
    }
    obj.extract::<Vec<f32>>()
        .map_err(|_| PyValueError::new_err(format!("{what}: loss_weights must be numbers")))
}

/// A dict sample's `branches`: dicts with `prefix_len`, `input_ids` and `mask` (as an
/// `Encoding`'s branches are).
fn branches_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<TreeBranch>> {
    let list = obj
        .try_iter()
        .map_err(|_| PyValueError::new_err(format!("{what}: branches must be a list of dicts")))?;
    let mut out = Vec::new();
    for (k, b) in list.enumerate() {
        let b = b?;
        let what = format!("{what}: branch {k}");
        let d = b
            .cast::<PyDict>()
            .map_err(|_| PyValueError::new_err(format!("{what}: a branch must be a dict")))?;
        let get = |key: &str| {
            d.get_item(key)?
                .ok_or_else(|| PyValueError::new_err(format!("{what}: a branch needs {key:?}")))
        };
        let prefix_len: usize = get("prefix_len")?.extract().map_err(|_| {
            PyValueError::new_err(format!("{what}: prefix_len must be a non-negative integer"))
        })?;
        let loss_weights = match d.get_item("loss_weights")? {
            Some(w) if !w.is_none() => weights_of(&w, &what)?,
            _ => Vec::new(),
        };
        out.push(TreeBranch {
            prefix_len,
            input_ids: ids_of(&get("input_ids")?, &what)?,
            mask: mask_of(&get("mask")?, &what)?,
            loss_weights,
        });
    }
    Ok(out)
}

/// Sample ids: the caller's, or the position in the input.
pub fn sample_ids(py_ids: Option<Vec<u64>>, n: usize) -> PyResult<Vec<u64>> {
    match py_ids {
        None => Ok((0..n as u64).collect()),
        Some(ids) if ids.len() == n => Ok(ids),
        Some(ids) => Err(PyValueError::new_err(format!(
            "sample_ids has {} entries for {n} samples",
            ids.len()
        ))),
    }
}
