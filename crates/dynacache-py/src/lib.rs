//! The native core of the `dynacache` Python package: the Rust [`dynacache::Cache`] on one tokio
//! runtime per process, with the GIL released around every storage call.
//!
//! The Python face (`python/dynacache`) re-exports these classes and adds the asyncio wrapper and
//! the drop-in backends. Values cross the boundary as MessagePack (see [`value`]), exactly as a
//! Rust `Cache` stores them, so both languages read each other's entries.
#![forbid(unsafe_code)]

mod cache;
mod errors;
mod http;
mod runtime;
mod value;

use pyo3::prelude::*;

/// The `dynacache._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::Cache>()?;
    m.add_class::<cache::Lease>()?;
    m.add_class::<http::HttpCache>()?;
    m.add_class::<http::Reply>()?;
    m.add("PYTHON_PICKLE_EXT", dynacache::PYTHON_PICKLE_EXT)?;
    m.add("DEFAULT_TABLE", dynacache::DEFAULT_TABLE)?;
    m.add("MAX_KEY_LEN", dynacache::MAX_KEY_LEN)?;
    m.add_function(wrap_pyfunction!(cache::default_embedded_file, m)?)?;
    Ok(())
}
