//! `dynacache.HttpCache`: the Rust HTTP cache engine (RFC 9111, private or shared) under any
//! Python HTTP client.
//!
//! A front-end (`dynacache.requests.CacheAdapter`, `dynacache.httpx.CacheTransport`) hands
//! [`HttpCache::send`] a request and a `fetch` callable that sends a request to the origin with
//! the client's own transport. The engine looks the request up, decides, calls `fetch` when it
//! needs the origin (from a worker thread, with the GIL taken for the call), stores what comes
//! back and answers with a [`Reply`]. The entries are the engine's own: a Rust
//! `dynacache::http::CachedClient` or `dynacache serve` on the same table and namespace, in the
//! same mode, reads them, and the reverse.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::{Body, Frame, SizeHint};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use dynacache::http::{
    CacheBody, CacheFacts, CachedEntry, ExpireAfter, HttpCacheBuilder, MatchHeaders,
    RequestOptions, SetCookie, StaleWindow,
};
use dynacache::{Expiry, FleetSingleFlight, InProcessTier, TableBuilder};

use crate::cache::{TableOptions, duration, env, epoch_seconds, expiry_of, table_builder};
use crate::errors::{self, Failure};
use crate::runtime::{PerProcess, run, run_dc};

/// requests-cache's `DO_NOT_CACHE` sentinel, accepted as `expire_after` so settings carry over.
const REQUESTS_CACHE_DO_NOT_CACHE: i64 = 0x000D_0E02_0002_0704;

/// An expiry setting: `None` (the engine's default), seconds or a `timedelta`, a `datetime`,
/// `math.inf` or `-1` (never), `0` (store, but revalidate before every use), or one of the
/// strings `"never"`, `"do-not-cache"`, `"immediately"`, `"headers"`.
fn expire_after(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<ExpireAfter>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if let Ok(s) = obj.cast::<PyString>() {
        return match s.to_cow()?.to_ascii_lowercase().replace('_', "-").as_str() {
            "never" => Ok(Some(ExpireAfter::Never)),
            "do-not-cache" => Ok(Some(ExpireAfter::DoNotCache)),
            "immediately" => Ok(Some(ExpireAfter::Immediately)),
            "headers" => Ok(Some(ExpireAfter::Headers)),
            other => Err(PyValueError::new_err(format!(
                "expire_after is a number of seconds, a timedelta, a datetime, or one of \
                 'never', 'do-not-cache', 'immediately', 'headers'; not {other:?}"
            ))),
        };
    }
    if !obj.hasattr("total_seconds")?
        && let Ok(i) = obj.extract::<i64>()
    {
        match i {
            -1 => return Ok(Some(ExpireAfter::Never)),
            0 => return Ok(Some(ExpireAfter::Immediately)),
            REQUESTS_CACHE_DO_NOT_CACHE => return Ok(Some(ExpireAfter::DoNotCache)),
            _ => {}
        }
    }
    // Seconds, a timedelta, a datetime or math.inf: as a key/value expiry.
    Ok(match expiry_of(Some(obj), "expire_after")? {
        Expiry::Never => Some(ExpireAfter::Never),
        Expiry::At(at) => Some(ExpireAfter::At(at)),
        Expiry::After(d) if d.is_zero() => Some(ExpireAfter::Immediately),
        Expiry::After(d) => Some(ExpireAfter::After(d)),
        _ => None,
    })
}

/// A stale window: `None`/`False` (off), `True` (any staleness), or seconds / a `timedelta`.
fn stale_window(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<StaleWindow> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(StaleWindow::Off);
    };
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(if obj.extract::<bool>()? {
            StaleWindow::Always
        } else {
            StaleWindow::Off
        });
    }
    Ok(StaleWindow::Max(duration(obj, what)?))
}

/// `None`/`False` (no request header in the key), `True` (all of them), or a list of names.
fn match_headers(obj: Option<&Bound<'_, PyAny>>) -> PyResult<MatchHeaders> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(MatchHeaders::None);
    };
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(if obj.extract::<bool>()? {
            MatchHeaders::All
        } else {
            MatchHeaders::None
        });
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "match_headers is True, False or a list of header names, not one string",
        ));
    }
    let mut names = Vec::new();
    for name in obj.try_iter()? {
        let name: String = name?.extract()?;
        names.push(
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("{name:?} is not a header name")))?,
        );
    }
    Ok(MatchHeaders::Only(names))
}

/// A header name or value from Python: `str` (Latin-1, as http.client reads them) or `bytes`.
fn header_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        let text = s.to_cow()?;
        return text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "header text {text:?} is not Latin-1: encode it to bytes first"
                ))
            });
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(
        "header names and values are str or bytes",
    ))
}

/// Headers from an iterable of `(name, value)` pairs. Strict for a request (a bad one is the
/// caller's error); lenient for an origin's response (a field no `http` type can hold is left
/// out, as a browser would).
fn headers_from(obj: &Bound<'_, PyAny>, strict: bool) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    for pair in obj.try_iter()? {
        let pair = pair?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair
            .extract()
            .map_err(|_| PyTypeError::new_err("headers are an iterable of (name, value) pairs"))?;
        let name = header_bytes(&name)?;
        let value = header_bytes(&value)?;
        match (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ if strict => {
                return Err(PyValueError::new_err(format!(
                    "invalid header {:?}: {:?}",
                    String::from_utf8_lossy(&name),
                    String::from_utf8_lossy(&value)
                )));
            }
            _ => {}
        }
    }
    Ok(map)
}

/// Headers as `(name, value)` pairs of `str`, values read as Latin-1 (as http.client does).
fn headers_to(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.as_bytes().iter().map(|&b| char::from(b)).collect(),
            )
        })
        .collect()
}

type Pull = tokio::task::JoinHandle<(Py<PyAny>, PyResult<Option<Bytes>>)>;

/// The body of an origin response from Python: bytes given whole, or an iterator of bytes,
/// each chunk pulled on a worker thread (with the GIL) when the engine asks for it.
pub(crate) enum OriginBody {
    Whole(Option<Bytes>),
    Chunks {
        iter: Option<Py<PyAny>>,
        pulling: Option<Pull>,
    },
    Ended,
}

/// The next chunk of a Python iterator of bytes (`None` at its end).
fn next_chunk(py: Python<'_>, iter: &Py<PyAny>) -> PyResult<Option<Bytes>> {
    match iter.bind(py).call_method0("__next__") {
        Ok(chunk) => {
            if let Ok(b) = chunk.cast::<PyBytes>() {
                Ok(Some(Bytes::copy_from_slice(b.as_bytes())))
            } else {
                let v: Vec<u8> = chunk
                    .extract()
                    .map_err(|_| PyTypeError::new_err("an origin body iterator yields bytes"))?;
                Ok(Some(Bytes::from(v)))
            }
        }
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            match this {
                OriginBody::Whole(bytes) => {
                    return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
                }
                OriginBody::Ended => return Poll::Ready(None),
                OriginBody::Chunks { iter, pulling } => {
                    if let Some(pull) = pulling {
                        let done = match Pin::new(pull).poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(done) => done,
                        };
                        *pulling = None;
                        match done {
                            Ok((it, Ok(Some(chunk)))) => {
                                *iter = Some(it);
                                if !chunk.is_empty() {
                                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                                }
                            }
                            Ok((_, Ok(None))) => {
                                *this = OriginBody::Ended;
                                return Poll::Ready(None);
                            }
                            Ok((_, Err(e))) => {
                                *this = OriginBody::Ended;
                                return Poll::Ready(Some(Err(std::io::Error::other(e))));
                            }
                            Err(join) => {
                                *this = OriginBody::Ended;
                                return Poll::Ready(Some(Err(std::io::Error::other(join))));
                            }
                        }
                        continue;
                    }
                    let Some(it) = iter.take() else {
                        *this = OriginBody::Ended;
                        return Poll::Ready(None);
                    };
                    *pulling = Some(tokio::task::spawn_blocking(move || {
                        Python::attach(|py| {
                            let chunk = next_chunk(py, &it);
                            (it, chunk)
                        })
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, OriginBody::Whole(None) | OriginBody::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            OriginBody::Ended => SizeHint::with_exact(0),
            OriginBody::Chunks { .. } => SizeHint::default(),
        }
    }
}

/// Calls the front-end's `fetch(method, url, headers, body)` for a request of the engine's,
/// and reads its answer `(status, headers, body)`, the body bytes or an iterator of bytes.
fn call_fetch(
    py: Python<'_>,
    fetch: &Py<PyAny>,
    req: http::Request<Bytes>,
) -> PyResult<http::Response<OriginBody>> {
    let (parts, body) = req.into_parts();
    let headers = headers_to(&parts.headers);
    let answer = fetch.bind(py).call1((
        parts.method.as_str(),
        parts.uri.to_string(),
        headers,
        PyBytes::new(py, &body),
    ))?;
    let (status, headers, body): (u16, Bound<'_, PyAny>, Bound<'_, PyAny>) = answer
        .extract()
        .map_err(|_| PyTypeError::new_err("fetch returns (status, headers, body)"))?;
    let status = http::StatusCode::from_u16(status)
        .map_err(|_| PyValueError::new_err(format!("{status} is not an HTTP status")))?;
    let headers = headers_from(&headers, false)?;
    let body = if body.is_none() {
        OriginBody::Whole(None)
    } else if let Ok(b) = body.cast::<PyBytes>() {
        OriginBody::Whole(Some(Bytes::copy_from_slice(b.as_bytes())))
    } else {
        OriginBody::Chunks {
            iter: Some(body.try_iter()?.into_any().unbind()),
            pulling: None,
        }
    };
    let mut res = http::Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Ok(res)
}

/// The engine's answer to one request: status, headers, what the cache did, and the body,
/// whole (`body`) or to be read chunk by chunk (`read_chunk`).
#[pyclass(module = "dynacache._native", frozen)]
pub(crate) struct Reply {
    /// The status code.
    #[pyo3(get)]
    status: u16,
    /// The response headers, `(name, value)` pairs (values read as Latin-1).
    #[pyo3(get)]
    headers: Vec<(String, String)>,
    /// Served from the cache (fresh, revalidated or stale).
    #[pyo3(get)]
    from_cache: bool,
    /// Revalidated with the origin (a 304) before being served.
    #[pyo3(get)]
    revalidated: bool,
    /// Served although stale.
    #[pyo3(get)]
    stale: bool,
    /// Written to the cache.
    #[pyo3(get)]
    stored: bool,
    /// The RFC 9211 `Cache-Status` entry of this cache for the response.
    #[pyo3(get)]
    cache_status: String,
    /// When the stored response stops being fresh (seconds since the epoch), if stored.
    #[pyo3(get)]
    expires: Option<f64>,
    /// When the stored response was received (seconds since the epoch), if stored.
    #[pyo3(get)]
    created_at: Option<f64>,
    /// The cache key, when the response was read from or written to the cache.
    #[pyo3(get)]
    cache_key: Option<String>,
    /// The whole body when it is in memory, else `None` (read it with `read_chunk`).
    #[pyo3(get)]
    body: Option<Py<PyBytes>>,
    streaming: Mutex<Option<CacheBody<OriginBody>>>,
}

/// A body read failure as an exception: the Python exception the origin's iterator raised,
/// else `OSError` with the cause.
fn body_error(e: &(dyn std::error::Error + 'static)) -> PyErr {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(py_err) = c.downcast_ref::<PyErr>() {
            return Python::attach(|py| py_err.clone_ref(py));
        }
        cause = c.source();
    }
    PyOSError::new_err(format!("reading the response body failed: {e}"))
}

#[pymethods]
impl Reply {
    /// The next chunk of a streaming body, `b""` at its end (and always, for a whole body,
    /// which is in `body`). The GIL is released while it waits.
    fn read_chunk(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let taken = self
            .streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut body) = taken else {
            return Ok(PyBytes::new(py, b"").unbind());
        };
        let read = run(py, async move {
            use http_body_util::BodyExt;
            loop {
                match body.frame().await {
                    None => return Ok((None, Ok(Bytes::new()))),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            return Ok((Some(body), Ok(data)));
                        }
                    }
                    Some(Err(e)) => return Ok((None, Err(body_error(&*e)))),
                }
            }
        })?;
        let (rest, chunk) = read;
        *self.streaming.lock().unwrap_or_else(|p| p.into_inner()) = rest;
        Ok(PyBytes::new(py, &chunk?).unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "Reply(status={}, cache_status={:?})",
            self.status, self.cache_status
        )
    }
}

fn reply_from(py: Python<'_>, res: http::Response<CacheBody<OriginBody>>) -> Reply {
    let facts = res
        .extensions()
        .get::<CacheFacts>()
        .cloned()
        .unwrap_or_default();
    let status = res.status().as_u16();
    let headers = headers_to(res.headers());
    let body = res.into_body();
    let (whole, streaming) = match body.as_full() {
        Some(bytes) => (Some(PyBytes::new(py, &bytes).unbind()), None),
        None => (None, Some(body)),
    };
    Reply {
        status,
        headers,
        from_cache: facts.from_cache,
        revalidated: facts.revalidated,
        stale: facts.stale,
        stored: facts.stored(),
        cache_status: facts.cache_status("dynacache", status, SystemTime::now()),
        expires: facts.expires.map(epoch_seconds),
        created_at: facts.created_at.map(epoch_seconds),
        cache_key: facts.cache_key.clone(),
        body: whole,
        streaming: Mutex::new(streaming),
    }
}

/// An HTTP response cache on a DynamoDB table: the Rust engine, its entries shared with Rust
/// clients and `dynacache serve` on the same table and namespace.
#[pyclass(module = "dynacache._native", frozen, subclass)]
pub(crate) struct HttpCache {
    table: TableBuilder,
    builder: HttpCacheBuilder,
    objects: Option<dynacache::ObjectStoreBuilder>,
    engine: String,
    shared: bool,
    state: PerProcess<dynacache::http::HttpCache>,
}

fn open(
    py: Python<'_>,
    table: TableBuilder,
    builder: HttpCacheBuilder,
    objects: Option<dynacache::ObjectStoreBuilder>,
) -> PyResult<dynacache::http::HttpCache> {
    run_dc(py, async move {
        let builder = match objects {
            Some(objects) => builder.object_store(objects.open().await?),
            None => builder,
        };
        builder.build(table.open().await?)
    })
}

fn entry_dict<'py>(py: Python<'py>, e: &CachedEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &e.key)?;
    d.set_item("method", &e.method)?;
    d.set_item("url", &e.url)?;
    d.set_item("status", e.status)?;
    d.set_item("size", e.size)?;
    d.set_item("created_at", epoch_seconds(e.created_at))?;
    d.set_item("expires", e.expires.map(epoch_seconds))?;
    d.set_item("is_expired", e.is_expired)?;
    Ok(d)
}

impl HttpCache {
    fn handle(&self, py: Python<'_>) -> PyResult<dynacache::http::HttpCache> {
        self.state.get(py, |py| {
            open(
                py,
                self.table.clone(),
                self.builder.clone(),
                self.objects.clone(),
            )
        })
    }
}

/// The request in the engine's form; `InvalidArgumentError` when it cannot be keyed (the
/// front-ends then send it to the origin uncached).
fn request_from(
    py: Python<'_>,
    method: &str,
    url: &str,
    headers: &Bound<'_, PyAny>,
    body: &[u8],
) -> PyResult<http::Request<Bytes>> {
    let bad = |m: String| errors::raise(py, "InvalidArgumentError", &m);
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| bad(format!("{method:?} is not an HTTP method")))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| bad(format!("{url:?} is not a URL the cache can key: {e}")))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(bad(format!("{url:?} is not an absolute URL")));
    }
    let headers = headers_from(headers, true).map_err(|e| bad(e.to_string()))?;
    let mut req = http::Request::new(Bytes::copy_from_slice(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

#[pymethods]
impl HttpCache {
    #[new]
    #[pyo3(signature = (
        table = None,
        namespace = None,
        *,
        endpoint_url = None,
        region = None,
        profile = None,
        aws = None,
        credentials = None,
        embedded_file = None,
        in_memory = false,
        create_table = true,
        key_attribute = "key",
        ttl_attribute = "ttl",
        consistent_reads = false,
        connect_timeout = None,
        operation_timeout = None,
        shared = false,
        expire_after = None,
        urls_expire_after = None,
        allowed_codes = None,
        allowed_methods = None,
        match_headers = None,
        ignored_parameters = None,
        cache_control = true,
        always_revalidate = false,
        stale_if_error = None,
        stale_while_revalidate = None,
        heuristic_freshness = None,
        set_cookie = None,
        tag_fields = None,
        targeted_cache_control = None,
        secret_keys = None,
        in_process_bytes = None,
        in_process_ttl = None,
        fleet_lease = None,
        max_body_size = None,
        lookup_timeout = None,
        write_wait = None,
        read_only = false,
        object_store = None,
        object_store_endpoint_url = None,
        object_threshold = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        table: Option<String>,
        namespace: Option<String>,
        endpoint_url: Option<String>,
        region: Option<String>,
        profile: Option<String>,
        aws: Option<bool>,
        credentials: Option<(String, String, Option<String>)>,
        embedded_file: Option<std::path::PathBuf>,
        in_memory: bool,
        create_table: bool,
        key_attribute: &str,
        ttl_attribute: &str,
        consistent_reads: bool,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        operation_timeout: Option<&Bound<'_, PyAny>>,
        shared: bool,
        expire_after: Option<&Bound<'_, PyAny>>,
        urls_expire_after: Option<&Bound<'_, PyAny>>,
        allowed_codes: Option<Vec<u16>>,
        allowed_methods: Option<Vec<String>>,
        match_headers: Option<&Bound<'_, PyAny>>,
        ignored_parameters: Option<Vec<String>>,
        cache_control: bool,
        always_revalidate: bool,
        stale_if_error: Option<&Bound<'_, PyAny>>,
        stale_while_revalidate: Option<&Bound<'_, PyAny>>,
        heuristic_freshness: Option<(f64, Bound<'_, PyAny>)>,
        set_cookie: Option<String>,
        tag_fields: Option<Vec<String>>,
        targeted_cache_control: Option<Vec<String>>,
        secret_keys: Option<Vec<Vec<u8>>>,
        in_process_bytes: Option<u64>,
        in_process_ttl: Option<&Bound<'_, PyAny>>,
        fleet_lease: Option<&Bound<'_, PyAny>>,
        max_body_size: Option<usize>,
        lookup_timeout: Option<&Bound<'_, PyAny>>,
        write_wait: Option<&Bound<'_, PyAny>>,
        read_only: bool,
        object_store: Option<String>,
        object_store_endpoint_url: Option<String>,
        object_threshold: Option<usize>,
    ) -> PyResult<Self> {
        let name = table
            .or_else(|| env("DYNACACHE_TABLE"))
            .unwrap_or_else(|| dynacache::DEFAULT_TABLE.to_owned());
        let namespace = namespace
            .or_else(|| env("DYNACACHE_NAMESPACE"))
            .unwrap_or_else(|| "http".to_owned());
        let (tb, engine, objects) = table_builder(TableOptions {
            name,
            endpoint_url,
            region,
            profile,
            aws,
            credentials,
            embedded_file,
            in_memory,
            create_table,
            key_attribute,
            ttl_attribute,
            consistent_reads,
            connect_timeout,
            operation_timeout,
            object_store,
            object_store_endpoint_url,
            object_threshold,
        })?;
        let invalid = |e: dynacache::Error| errors::from_dynacache(py, &e);
        let mut b = dynacache::http::HttpCache::builder()
            .namespace(namespace)
            .shared(shared)
            .cache_control(cache_control)
            .always_revalidate(always_revalidate)
            .read_only(read_only)
            .match_headers(self::match_headers(match_headers)?)
            .stale_if_error(stale_window(stale_if_error, "stale_if_error")?)
            .stale_while_revalidate(stale_window(
                stale_while_revalidate,
                "stale_while_revalidate",
            )?);
        if let Some(e) = self::expire_after(expire_after)? {
            b = b.expire_after(e);
        }
        if let Some(patterns) = urls_expire_after.filter(|o| !o.is_none()) {
            // A dict (in its order) or a list of (glob, expiry) pairs; the first match wins.
            let pairs: Vec<(String, Bound<'_, PyAny>)> = if let Ok(d) = patterns.cast::<PyDict>() {
                d.iter()
                    .map(|(k, v)| Ok((k.extract::<String>()?, v)))
                    .collect::<PyResult<_>>()?
            } else {
                patterns.extract()?
            };
            for (pattern, e) in pairs {
                let e = self::expire_after(Some(&e))?.unwrap_or(ExpireAfter::Headers);
                b = b.url_expire_after(&pattern, e).map_err(invalid)?;
            }
        }
        if let Some(codes) = allowed_codes {
            b = b.allowed_codes(codes);
        }
        if let Some(methods) = allowed_methods {
            let methods = methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| PyValueError::new_err(format!("{m:?} is not an HTTP method")))
                })
                .collect::<PyResult<Vec<_>>>()?;
            b = b.allowed_methods(methods);
        }
        if let Some(params) = ignored_parameters {
            b = b.ignored_parameters(params);
        }
        if let Some((fraction, max)) = heuristic_freshness {
            b = b.heuristic_freshness(fraction, duration(&max, "heuristic_freshness")?);
        }
        if let Some(policy) = set_cookie {
            b = b.set_cookie(
                match policy.to_ascii_lowercase().replace('_', "-").as_str() {
                    "store" => SetCookie::Store,
                    "strip" => SetCookie::Strip,
                    "do-not-store" => SetCookie::DoNotStore,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "set_cookie is 'store', 'strip' or 'do-not-store', not {other:?}"
                        )));
                    }
                },
            );
        }
        if let Some(fields) = tag_fields {
            b = b.tag_fields(fields).map_err(invalid)?;
        }
        if let Some(fields) = targeted_cache_control {
            b = b.targeted_cache_control(fields).map_err(invalid)?;
        }
        if let Some(keys) = secret_keys {
            b = b.secret_keys(keys);
        }
        if let Some(bytes) = in_process_bytes {
            let mut tier = InProcessTier::new(bytes);
            if let Some(ttl) = in_process_ttl {
                tier = tier.l1_ttl(duration(ttl, "in_process_ttl")?);
            }
            b = b.in_process(tier);
        }
        if let Some(lease) = fleet_lease {
            b = b.fleet_single_flight(FleetSingleFlight::new(duration(lease, "fleet_lease")?));
        }
        if let Some(max) = max_body_size {
            b = b.max_body_size(max);
        }
        if let Some(t) = lookup_timeout {
            b = b.lookup_timeout(duration(t, "lookup_timeout")?);
        }
        if let Some(t) = write_wait {
            b = b.write_wait(duration(t, "write_wait")?);
        }
        let cache = open(py, tb.clone(), b.clone(), objects.clone())?;
        Ok(HttpCache {
            table: tb,
            builder: b,
            objects,
            engine,
            shared,
            state: PerProcess::new(cache),
        })
    }

    /// The table's name.
    #[getter]
    fn table_name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.handle(py)?.table().name().to_owned())
    }

    /// The namespace responses are stored under.
    #[getter]
    fn namespace(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.handle(py)?.namespace().to_owned())
    }

    /// Where the table lives, in words.
    #[getter]
    fn engine(&self) -> String {
        self.engine.clone()
    }

    /// Whether this is a shared cache (RFC 9111's: `private` and `Authorization` honoured).
    #[getter]
    fn shared(&self) -> bool {
        self.shared
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.state.is_closed()
    }

    /// Sends one request through the cache; `fetch(method, url, headers, body)` sends a request
    /// to the origin and returns `(status, headers, body)`, the body as bytes or an iterator of
    /// bytes. An exception `fetch` raises reaches the caller (unless a stale response may be
    /// served instead); storage failures never do.
    #[pyo3(signature = (method, url, headers, body, fetch, *, refresh = false, force_refresh = false, only_if_cached = false, disable_cache = false, expire_after = None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        headers: &Bound<'_, PyAny>,
        body: &[u8],
        fetch: Py<PyAny>,
        refresh: bool,
        force_refresh: bool,
        only_if_cached: bool,
        disable_cache: bool,
        expire_after: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Reply> {
        let req = request_from(py, method, url, headers, body)?;
        let options = RequestOptions {
            expire_after: self::expire_after(expire_after)?,
            refresh,
            force_refresh,
            only_if_cached,
            disable_cache,
        };
        let cache = self.handle(py)?;
        let fetch = Arc::new(fetch);
        let res = run(py, async move {
            let fetch = &fetch;
            cache
                .send_with(req, options, |req| {
                    let fetch = fetch.clone();
                    async move {
                        tokio::task::spawn_blocking(move || {
                            Python::attach(|py| call_fetch(py, &fetch, req))
                        })
                        .await
                        .map_err(|e| {
                            Failure::Python(PyOSError::new_err(format!(
                                "the origin request did not finish: {e}"
                            )))
                        })?
                        .map_err(Failure::Python)
                    }
                })
                .await
        })?;
        Ok(reply_from(py, res))
    }

    /// Removes what a response to a request that did not go through the cache invalidates (a
    /// successful POST, PUT, DELETE or PATCH: the stored responses of its URL and its
    /// `Location`/`Content-Location`).
    fn invalidate(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        headers: &Bound<'_, PyAny>,
        status: u16,
        response_headers: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (parts, _) = request_from(py, method, url, headers, b"")?.into_parts();
        let status = http::StatusCode::from_u16(status)
            .map_err(|_| PyValueError::new_err(format!("{status} is not an HTTP status")))?;
        let response_headers = headers_from(response_headers, false)?;
        let cache = self.handle(py)?;
        run(py, async move {
            cache.invalidate_for(parts, status, &response_headers).await;
            Ok(())
        })
    }

    /// Waits for the storage writes under way in the background.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let cache = self.handle(py)?;
        run(py, async move {
            cache.flush().await;
            Ok(())
        })
    }

    /// The cache key of a GET of `url` (before `Vary`), or `None` if it cannot be keyed.
    fn key_for_url(&self, py: Python<'_>, url: &str) -> PyResult<Option<String>> {
        Ok(self.handle(py)?.key_for_url(url))
    }

    /// Every stored response's metadata: a list of dicts with `key`, `method`, `url`,
    /// `status`, `size`, `created_at`, `expires` and `is_expired`.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let cache = self.handle(py)?;
        let entries: Vec<CachedEntry> =
            run_dc(py, async move { cache.entries().try_collect().await })?;
        entries.iter().map(|e| entry_dict(py, e)).collect()
    }

    /// One stored response by URL (a GET's) or key: a dict of its metadata plus `headers`,
    /// `request_headers` and `body`, or `None`.
    fn show<'py>(&self, py: Python<'py>, url_or_key: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let cache = self.handle(py)?;
        let key = if url_or_key.contains("://") {
            match cache.key_for_url(url_or_key) {
                Some(k) => k,
                None => return Ok(None),
            }
        } else {
            url_or_key.to_owned()
        };
        let stored = run_dc(py, async move { cache.stored_response(&key).await })?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let d = entry_dict(py, &stored.entry)?;
        d.set_item("headers", headers_to(&stored.headers))?;
        d.set_item("request_headers", headers_to(&stored.request_headers))?;
        d.set_item("body", PyBytes::new(py, &stored.body))?;
        Ok(Some(d))
    }

    /// The keys of every stored response.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.keys().await })
    }

    /// The URLs of every stored response.
    fn urls(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.urls().await })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let cache = self.handle(py)?;
        let n = run_dc(py, async move { cache.response_count().await })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Whether a response to a GET of `url` is stored.
    fn contains_url(&self, py: Python<'_>, url: String) -> PyResult<bool> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.contains_url(&url).await })
    }

    /// Whether a response of this key is stored.
    fn contains_key(&self, py: Python<'_>, key: String) -> PyResult<bool> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.contains_key(&key).await })
    }

    /// Deletes the stored responses of these keys; returns how many were deleted.
    fn delete_keys(&self, py: Python<'_>, keys: Vec<String>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.delete_keys(keys).await })
    }

    /// Deletes the stored responses of GETs of these URLs (every `Vary` variant); returns how
    /// many were deleted.
    fn delete_urls(&self, py: Python<'_>, urls: Vec<String>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.delete_urls(urls).await })
    }

    /// Deletes the expired responses; returns how many.
    fn delete_expired(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.delete_expired().await })
    }

    /// Deletes the responses received longer ago than `age` (seconds or a `timedelta`).
    fn delete_older_than(&self, py: Python<'_>, age: &Bound<'_, PyAny>) -> PyResult<u64> {
        let age = duration(age, "age")?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.delete_older_than(age).await })
    }

    /// Deletes every response tagged `tag` (by any process on this table and namespace);
    /// returns how many.
    fn purge_tag(&self, py: Python<'_>, tag: String) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.purge_tag(&tag).await })
    }

    /// Deletes every stored response of the namespace; returns how many.
    fn clear(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.clear().await })
    }

    /// Deletes chunk items and objects no response names any more (older than 15 minutes);
    /// how many.
    fn vacuum(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.vacuum().await })
    }

    /// This process's counters: hits, misses, revalidated, stale_served, stored, coalesced,
    /// invalidated, storage_errors, writes_dropped, verification_failures.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.handle(py)?.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("revalidated", s.revalidated)?;
        d.set_item("stale_served", s.stale_served)?;
        d.set_item("stored", s.stored)?;
        d.set_item("coalesced", s.coalesced)?;
        d.set_item("invalidated", s.invalidated)?;
        d.set_item("storage_errors", s.storage_errors)?;
        d.set_item("writes_dropped", s.writes_dropped)?;
        d.set_item("verification_failures", s.verification_failures)?;
        Ok(d)
    }

    /// What the namespace holds in the table (a scan): `entries`, `expired`, `chunk_items`,
    /// `chunked_entries`, `object_entries`, `object_bytes`, `stored_bytes`, `largest` (key, bytes) and `monthly_cost` (US dollars
    /// at DynamoDB Standard's $0.25 per GB-month).
    fn storage_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cache = self.handle(py)?;
        let s = run_dc(py, async move { cache.storage_stats().await })?;
        let d = PyDict::new(py);
        d.set_item("entries", s.entries)?;
        d.set_item("expired", s.expired)?;
        d.set_item("chunk_items", s.chunk_items)?;
        d.set_item("chunked_entries", s.chunked_entries)?;
        d.set_item("object_entries", s.object_entries)?;
        d.set_item("object_bytes", s.object_bytes)?;
        d.set_item("stored_bytes", s.stored_bytes)?;
        d.set_item("largest", s.largest.clone())?;
        d.set_item("monthly_cost", s.monthly_cost(0.25))?;
        Ok(d)
    }

    /// Deletes the whole table (every namespace in it) and closes the cache.
    fn delete_table(&self, py: Python<'_>) -> PyResult<()> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.table().delete_table().await })?;
        self.close(py);
        Ok(())
    }

    /// Closes the cache (waiting for its background writes): later calls raise `ClosedError`.
    fn close(&self, py: Python<'_>) {
        if let Some(cache) = self.state.close() {
            let _ = run(py, async move {
                cache.flush().await;
                drop(cache);
                Ok(())
            });
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.handle(py) {
            Ok(c) => format!(
                "HttpCache(table={:?}, namespace={:?}, shared={}, engine={:?})",
                c.table().name(),
                c.namespace(),
                self.shared,
                self.engine
            ),
            Err(_) => "HttpCache(closed)".to_owned(),
        }
    }
}
