//! Rust errors as the Python exception hierarchy of `dynacache.errors` (`dynacache.Error` and
//! its subclasses), each with the Rust error's message and causes.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Why a call made without the GIL failed; made into an exception once the GIL is held again.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The cache's own error.
    Cache(dynacache::Error),
    /// An exception raised by Python code the call ran (a read-through factory).
    Python(PyErr),
}

impl Failure {
    pub(crate) fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Cache(e) => from_dynacache(py, &e),
            Failure::Python(e) => e,
        }
    }
}

/// The exception of class `name` in `dynacache.errors`, with `message`.
pub(crate) fn raise(py: Python<'_>, name: &str, message: &str) -> PyErr {
    let made = py
        .import("dynacache.errors")
        .and_then(|m| m.getattr(name))
        .and_then(|class| class.call1((message,)));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        // Only when the package is broken (the module missing): still an exception, never a crash.
        Err(_) => PyRuntimeError::new_err(message.to_owned()),
    }
}

/// The exception class for a Rust error, by meaning.
fn class_of(e: &dynacache::Error) -> &'static str {
    use dynacache::Error as E;
    match e {
        E::InvalidKey { .. } => "InvalidKeyError",
        E::InvalidArgument { .. } => "InvalidArgumentError",
        E::InvalidConfig { .. } | E::Embedded { .. } => "ConfigurationError",
        E::SchemaMismatch { .. } => "SchemaMismatchError",
        E::TableNotFound { .. } => "TableNotFoundError",
        E::ItemTooLarge { .. } => "ValueTooLargeError",
        E::Serialize(_) => "EncodeError",
        E::Deserialize { .. } | E::NotACounter { .. } => "DecodeError",
        E::Corrupt { .. } => "IntegrityError",
        E::Contention { .. } => "ContentionError",
        E::Throttled { .. } => "ThrottledError",
        E::AccessDenied { .. } | E::Credentials { .. } => "AccessDeniedError",
        _ if e.is_timeout() => "TimeoutError",
        _ if e.is_unreachable() || e.is_unavailable() => "UnavailableError",
        _ => "Error",
    }
}

/// A Rust error as its Python exception; the message carries the causes too.
pub(crate) fn from_dynacache(py: Python<'_>, e: &dynacache::Error) -> PyErr {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    raise(py, class_of(e), &message)
}
