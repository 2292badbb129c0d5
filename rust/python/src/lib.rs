//! `turnpack._core`: the thin PyO3 binding over `turnpack-core`.

use pyo3::prelude::*;

mod pack;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    pack::register(m)?;
    Ok(())
}
