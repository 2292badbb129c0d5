//! Typed Python exceptions for core errors.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use turnpack_core::Error;

create_exception!(
    turnpack._core,
    TurnpackError,
    PyValueError,
    "Base class of turnpack's errors."
);
create_exception!(
    turnpack._core,
    TemplateError,
    TurnpackError,
    "A chat template failed to compile or raised."
);
create_exception!(
    turnpack._core,
    ConversationError,
    TurnpackError,
    "A conversation is malformed."
);
create_exception!(
    turnpack._core,
    TokenizerError,
    TurnpackError,
    "A tokenizer could not be loaded or used."
);

pub fn to_py(err: Error) -> PyErr {
    to_py_with_context(err, None)
}

/// Maps a core error, prefixing the sample index when the error is about one sample of a batch.
pub fn to_py_with_context(err: Error, sample: Option<usize>) -> PyErr {
    let prefix = sample.map(|i| format!("sample {i}: ")).unwrap_or_default();
    match err {
        Error::Template(m) => TemplateError::new_err(format!("{prefix}{m}")),
        Error::Conversation(m) => ConversationError::new_err(format!("{prefix}{m}")),
        Error::Tokenizer(m) => TokenizerError::new_err(format!("{prefix}{m}")),
        Error::Io(m) => PyOSError::new_err(format!("{prefix}{m}")),
        Error::InvalidArgument(m) => PyValueError::new_err(format!("{prefix}{m}")),
        e @ Error::Internal(_) => PyRuntimeError::new_err(format!("{prefix}{e}")),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TurnpackError", py.get_type::<TurnpackError>())?;
    m.add("TemplateError", py.get_type::<TemplateError>())?;
    m.add("ConversationError", py.get_type::<ConversationError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    Ok(())
}
