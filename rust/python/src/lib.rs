//! `turnpack._core`: the thin PyO3 binding over `turnpack-core`. One file per exposed type; each
//! method converts its arguments, releases the GIL, calls the core and wraps the result.

// Python classes show themselves through `__repr__`; a Rust `Debug` would never be used.
#![allow(missing_debug_implementations)]

use pyo3::prelude::*;

mod chat_tokenizer;
mod convert;
mod encoding;
mod errors;
mod functions;
mod inputs;
mod options;
mod packed_batch;
mod packer;
mod samples;

/// The extension's own allocations (tokenization, rendering) go through mimalloc: glibc malloc
/// costs about half of tokenization time on Python's main thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // the label the packer writes where nothing is trained: Python takes it from here
    m.add("IGNORE_INDEX", turnpack_core::IGNORE_INDEX)?;
    // the packer's defaults, for Python code that states them (PackingOptions, turnpack prepare)
    m.add("DEFAULT_BUFFER", turnpack_core::DEFAULT_BUFFER)?;
    m.add(
        "DEFAULT_MAX_OPEN_ROWS",
        turnpack_core::DEFAULT_MAX_OPEN_ROWS,
    )?;
    errors::register(m)?;
    m.add_class::<chat_tokenizer::PyChatTokenizer>()?;
    m.add_class::<encoding::PyEncoding>()?;
    m.add_class::<packer::PyPacker>()?;
    m.add_class::<packed_batch::PyPackedBatch>()?;
    m.add_function(wrap_pyfunction!(functions::render_template, m)?)?;
    m.add_function(wrap_pyfunction!(functions::pack_samples, m)?)?;
    Ok(())
}
