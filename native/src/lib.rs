//! `mystic_native._native`: the native core of mysticchallenge's Python
//! side, built into the same wheel as the gateway (the package
//! `mystic_native` re-exports it). This file only registers what the module
//! exports; each export lives in a file of its own.

use pyo3::prelude::*;

/// The module's contents.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
