//! Python values as the MessagePack a Rust `Cache` stores, and back.
//!
//! | Python                    | MessagePack           | Rust (serde)                     |
//! |---------------------------|-----------------------|----------------------------------|
//! | `None`, `bool`            | nil, bool             | `()`/`Option`, `bool`            |
//! | `int` (64 bits)           | int (a counter)       | integers                         |
//! | `float`                   | float 64              | `f64`                            |
//! | `str`                     | str                   | `String`                         |
//! | `bytes`, `bytearray`      | bin                   | `serde_bytes::ByteBuf`           |
//! | `list`, `tuple`           | array                 | `Vec`, tuples                    |
//! | `dict`                    | map                   | structs (named fields), `HashMap`|
//! | anything, `pickle=True`   | ext 80 (pickle bytes) | an error that says so            |
//!
//! Tuples read back as lists. Other objects are refused (`TypeError`) unless the cache was opened
//! with `pickle=True`; pickled values are read only by a cache opened that way, since unpickling
//! runs code named by the data.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rmpv::Value;

use crate::errors;

/// Nesting deeper than this is refused rather than followed (a cyclic list would never end).
const MAX_DEPTH: usize = 512;

/// A Python value as MessagePack, pickled as a whole when `pickle` allows and it is not plain data.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, pickle: bool) -> PyResult<Value> {
    match plain(obj, 0) {
        Ok(v) => Ok(v),
        Err(e) if pickle && e.is_instance_of::<PyTypeError>(obj.py()) => {
            let py = obj.py();
            let dumped = py
                .import("pickle")?
                .call_method1("dumps", (obj, 5))
                .map_err(|e| {
                    errors::raise(
                        py,
                        "EncodeError",
                        &format!("the value cannot be pickled: {e}"),
                    )
                })?;
            let bytes = dumped.cast::<PyBytes>()?.as_bytes().to_vec();
            Ok(Value::Ext(dynacache::PYTHON_PICKLE_EXT, bytes))
        }
        Err(e) => Err(e),
    }
}

fn plain(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "the value nests deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Nil);
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Ok(Value::Boolean(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(PyTypeError::new_err(
            "integers beyond 64 bits are stored only with pickle=True",
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::F64(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::from(s.to_cow()?.as_ref()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Binary(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Binary(b.to_vec()));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list
            .iter()
            .map(|v| plain(&v, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|v| plain(&v, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return dict
            .iter()
            .map(|(k, v)| Ok((plain(&k, depth + 1)?, plain(&v, depth + 1)?)))
            .collect::<PyResult<_>>()
            .map(Value::Map);
    }
    let type_name = obj
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string());
    Err(PyTypeError::new_err(format!(
        "a {type_name} is not plain data (None, bool, int, float, str, bytes, list, tuple, dict): \
         open the cache with pickle=True to store other objects"
    )))
}

/// MessagePack as a Python value.
pub(crate) fn from_value(py: Python<'_>, value: Value, pickle: bool) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Nil => py.None(),
        Value::Boolean(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Integer(i) => match i.as_i64() {
            Some(n) => n.into_pyobject(py)?.into_any().unbind(),
            None => i
                .as_u64()
                .unwrap_or(0)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
        },
        Value::F32(f) => (f as f64).into_pyobject(py)?.into_any().unbind(),
        Value::F64(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::String(s) => match s.into_str() {
            Some(s) => PyString::new(py, &s).into_any().unbind(),
            None => {
                return Err(errors::raise(
                    py,
                    "DecodeError",
                    "the stored string is not valid UTF-8",
                ));
            }
        },
        Value::Binary(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::Array(items) => {
            let items = items
                .into_iter()
                .map(|v| from_value(py, v, pickle))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Map(pairs) => {
            let dict = PyDict::new(py);
            for (k, v) in pairs {
                let mut key = from_value(py, k, pickle)?.into_bound(py);
                // Arrays as keys (tuples, written by Python) come back as lists: make them
                // hashable again.
                if let Ok(list) = key.cast::<PyList>() {
                    key = PyTuple::new(py, list.iter())?.into_any();
                }
                dict.set_item(key, from_value(py, v, pickle)?)
                    .map_err(|e| {
                        errors::raise(
                            py,
                            "DecodeError",
                            &format!("a stored map key is unusable: {e}"),
                        )
                    })?;
            }
            dict.into_any().unbind()
        }
        Value::Ext(kind, data) if kind == dynacache::PYTHON_PICKLE_EXT => {
            if !pickle {
                return Err(errors::raise(
                    py,
                    "DecodeError",
                    "the value was stored with pickle=True: open the cache with pickle=True to read it",
                ));
            }
            let bytes = PyBytes::new(py, &data);
            py.import("pickle")?
                .call_method1("loads", (bytes,))
                .map_err(|e| {
                    errors::raise(
                        py,
                        "DecodeError",
                        &format!("the pickled value does not load: {e}"),
                    )
                })?
                .unbind()
        }
        Value::Ext(kind, _) => {
            return Err(errors::raise(
                py,
                "DecodeError",
                &format!("the value holds a MessagePack extension of type {kind}, unknown here"),
            ));
        }
    })
}
