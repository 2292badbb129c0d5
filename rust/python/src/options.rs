//! Keyword arguments shared by several methods, parsed into the core's option types (the names
//! and their error messages are the core's: `FromStr` on each option).

use crate::errors::to_py;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use turnpack_core::{EncodeOptions, Eot, Overflow, PackOptions, Supervise};

/// The `eot` argument: `"auto"` (the default), `None` (off), or a list of end-of-turn strings.
/// A type of its own so that an explicit `None` differs from the default.
pub struct EotArg(Eot);

impl EotArg {
    pub const AUTO: EotArg = EotArg(Eot::Auto);
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

/// The `supervise` argument: a name (`"assistant"`, `"last_assistant"`, `"all"`) or a list of
/// roles to train (axolotl's `roles_to_train`).
pub struct SuperviseArg(Supervise);

impl SuperviseArg {
    pub const ASSISTANT: SuperviseArg = SuperviseArg(Supervise::Assistant);
}

impl<'a, 'py> FromPyObject<'a, 'py> for SuperviseArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = obj.extract::<String>() {
            return s.parse().map(SuperviseArg).map_err(to_py);
        }
        match obj.extract::<Vec<String>>() {
            Ok(roles) => Supervise::roles(roles).map(SuperviseArg).map_err(to_py),
            Err(_) => {
                let got = obj.repr().map(|r| r.to_string()).unwrap_or_default();
                Err(PyValueError::new_err(format!(
                    "supervise must be 'assistant', 'last_assistant', 'all' or a list of roles, got {got}"
                )))
            }
        }
    }
}

/// `encode`'s options from its keyword arguments.
pub fn encode_options(
    supervise: SuperviseArg,
    eot: EotArg,
    start: &str,
    spans: &str,
    boundary: &str,
    method: &str,
    history: &str,
) -> PyResult<EncodeOptions> {
    Ok(EncodeOptions {
        supervise: supervise.0,
        start: start.parse().map_err(to_py)?,
        spans: spans.parse().map_err(to_py)?,
        eot: eot.0,
        boundary: boundary.parse().map_err(to_py)?,
        method: method.parse().map_err(to_py)?,
        history: history.parse().map_err(to_py)?,
    })
}

// The signatures of `pack` and `Packer` spell the core's defaults as literals, so that Python's
// `inspect.signature` (and the stub check) shows them.
const _: () = assert!(turnpack_core::DEFAULT_BUFFER == 1024);
const _: () = assert!(turnpack_core::DEFAULT_MAX_OPEN_ROWS == 16);

/// The packer's options from its keyword arguments.
pub fn pack_options(
    buffer: usize,
    max_open_rows: usize,
    overflow: &str,
    pad_id: u32,
) -> PyResult<PackOptions> {
    let overflow: Overflow = overflow.parse().map_err(to_py)?;
    Ok(PackOptions {
        buffer,
        max_open_rows,
        overflow,
        pad_id,
    })
}

/// `on_error`: whether a failed sample's exception is returned in its place (`"skip"`) or raised.
pub fn skip_errors(on_error: &str) -> PyResult<bool> {
    match on_error {
        "raise" => Ok(false),
        "skip" => Ok(true),
        other => Err(PyValueError::new_err(format!(
            "on_error must be 'raise' or 'skip', got {other:?}"
        ))),
    }
}
