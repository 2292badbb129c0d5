//! `turnpack._core`: the thin PyO3 binding over `turnpack-core`.

use pyo3::prelude::*;

mod chat_tokenizer;
mod convert;
mod errors;
mod pack;

/// The extension's own allocations (tokenization, rendering) go through mimalloc: glibc malloc
/// costs about half of tokenization time on Python's main thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<chat_tokenizer::PyChatTokenizer>()?;
    m.add_class::<chat_tokenizer::PyEncoding>()?;
    m.add_function(wrap_pyfunction!(chat_tokenizer::render_template, m)?)?;
    pack::register(m)?;
    Ok(())
}
