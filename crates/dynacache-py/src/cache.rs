//! `dynacache.Cache`: the Rust key/value cache, opened the way the `dynacache` CLI opens it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use dynacache::{
    CacheBuilder, Expiry, FleetSingleFlight, InProcessTier, Table, TableBuilder, TablePolicy,
};

use crate::errors::Failure;
use crate::runtime::{PerProcess, run, run_dc};
use crate::value::{from_value, to_value};

/// The embedded engine's file the `dynacache` CLI uses by default:
/// `$XDG_DATA_HOME/dynacache/cache.db`, else `~/.local/share/dynacache/cache.db`.
#[pyfunction]
pub(crate) fn default_embedded_file() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dynacache").join("cache.db")
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "y"
    )
}

/// A key/value cache on a DynamoDB table, shared with every Rust and Python process that opens
/// the same table and namespace.
#[pyclass(module = "dynacache._native", frozen)]
pub(crate) struct Cache {
    table: TableBuilder,
    builder: CacheBuilder,
    objects: Option<dynacache::ObjectStoreBuilder>,
    pickle: bool,
    engine: String,
    state: PerProcess<dynacache::Cache>,
}

/// A seconds count (int or float) or a `datetime.timedelta`.
pub(crate) fn duration(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    let seconds: f64 = if obj.hasattr("total_seconds")? {
        obj.call_method0("total_seconds")?.extract()?
    } else {
        obj.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what} is a number of seconds or a datetime.timedelta"
            ))
        })?
    };
    if seconds.is_nan() || !(0.0..=1e12).contains(&seconds) {
        return Err(PyValueError::new_err(format!(
            "{what} must be between 0 and 1e12 seconds, not {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `None` (the cache's default), seconds or a `timedelta` from now, a `datetime`, or
/// `math.inf` (never).
pub(crate) fn expiry(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Expiry> {
    expiry_of(obj, "ttl")
}

/// As [`expiry`], `what` naming the argument in errors.
pub(crate) fn expiry_of(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Expiry> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Expiry::Default);
    };
    if obj.hasattr("timestamp")? && !obj.hasattr("total_seconds")? {
        let at: f64 = obj.call_method0("timestamp")?.extract()?;
        if !at.is_finite() {
            return Err(PyValueError::new_err("an expiry time must be finite"));
        }
        let at = UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0));
        return Ok(Expiry::At(at));
    }
    if let Ok(f) = obj.extract::<f64>()
        && f == f64::INFINITY
    {
        return Ok(Expiry::Never);
    }
    Ok(Expiry::After(duration(obj, what)?))
}

/// A key as bytes: `str` (UTF-8) or `bytes`.
fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let type_name = key
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string());
    Err(PyTypeError::new_err(format!(
        "keys are str or bytes, not {type_name}"
    )))
}

fn keys_bytes(keys: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    if keys.is_instance_of::<PyString>() || keys.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "expected an iterable of keys, not one key",
        ));
    }
    keys.try_iter()?.map(|k| key_bytes(&k?)).collect()
}

/// A stored key as Python sees it: `str` when it is UTF-8, else `bytes`.
pub(crate) fn key_object(py: Python<'_>, key: &[u8]) -> Py<PyAny> {
    match std::str::from_utf8(key) {
        Ok(s) => PyString::new(py, s).into_any().unbind(),
        Err(_) => PyBytes::new(py, key).into_any().unbind(),
    }
}

pub(crate) fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How a table is reached: the engine options every class of the package takes.
pub(crate) struct TableOptions<'a, 'py> {
    pub(crate) name: String,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) aws: Option<bool>,
    pub(crate) credentials: Option<(String, String, Option<String>)>,
    pub(crate) embedded_file: Option<PathBuf>,
    pub(crate) in_memory: bool,
    pub(crate) create_table: bool,
    pub(crate) key_attribute: &'a str,
    pub(crate) ttl_attribute: &'a str,
    pub(crate) consistent_reads: bool,
    pub(crate) connect_timeout: Option<&'a Bound<'py, PyAny>>,
    pub(crate) operation_timeout: Option<&'a Bound<'py, PyAny>>,
    /// `s3://bucket/prefix`, a directory, or `embedded` (beside the embedded file).
    pub(crate) object_store: Option<String>,
    pub(crate) object_store_endpoint_url: Option<String>,
    pub(crate) object_threshold: Option<usize>,
}

/// The table builder for these options, and where the table lives, in words: an endpoint, else
/// AWS when asked for (or implied by a region, profile or credentials), else the embedded engine
/// in the CLI's file.
pub(crate) fn table_builder(
    o: TableOptions<'_, '_>,
) -> PyResult<(TableBuilder, String, Option<dynacache::ObjectStoreBuilder>)> {
    let mut tb = Table::builder()
        .name(&o.name)
        .key_attribute(o.key_attribute)
        .ttl_attribute(o.ttl_attribute)
        .consistent_reads(o.consistent_reads)
        .policy(if o.create_table {
            TablePolicy::CreateIfMissing
        } else {
            TablePolicy::AssumeExists
        });
    // The engine: an endpoint, else AWS when asked for (or implied by a region, profile
    // or credentials), else the embedded engine in the CLI's file.
    let wants_aws = o.aws.unwrap_or_else(|| {
        o.region.is_some()
            || o.profile.is_some()
            || o.credentials.is_some()
            || env("DYNACACHE_AWS").is_some_and(|v| truthy(&v))
    });
    let endpoint_url = o.endpoint_url.clone().or_else(|| {
        if o.aws == Some(true) {
            None
        } else {
            env("AWS_ENDPOINT_URL_DYNAMODB")
        }
    });
    let engine;
    let mut file_used = None;
    tb = if let Some(url) = &endpoint_url {
        engine = format!("the engine at {url}");
        tb.endpoint_url(url)
    } else if wants_aws {
        engine = "AWS DynamoDB".to_owned();
        tb.aws()
    } else if o.in_memory {
        engine = "the embedded engine, in memory".to_owned();
        tb.embedded()
    } else {
        let file = o
            .embedded_file
            .clone()
            .or_else(|| env("DYNACACHE_EMBEDDED_FILE").map(PathBuf::from))
            .unwrap_or_else(default_embedded_file);
        engine = format!("the embedded engine's file {}", file.display());
        file_used = Some(file.clone());
        tb.embedded_file(file)
    };
    let objects = object_store_builder(&o, file_used.as_deref())?;
    if let Some(r) = o.region {
        tb = tb.region(r);
    }
    if let Some(p) = o.profile {
        tb = tb.profile(p);
    }
    if let Some((id, secret, token)) = o.credentials {
        tb = tb.credentials(id, secret, token);
    }
    if let Some(t) = o.connect_timeout {
        tb = tb.connect_timeout(duration(t, "connect_timeout")?);
    }
    if let Some(t) = o.operation_timeout {
        tb = tb.operation_timeout(duration(t, "operation_timeout")?);
    }
    Ok((tb, engine, objects))
}

/// The object store `object_store=` (or `DYNACACHE_OBJECT_STORE`) names, with the table's
/// region, profile, credentials and timeouts: `embedded` is a directory beside the embedded
/// engine's file.
fn object_store_builder(
    o: &TableOptions<'_, '_>,
    embedded_file: Option<&std::path::Path>,
) -> PyResult<Option<dynacache::ObjectStoreBuilder>> {
    let Some(url) = o
        .object_store
        .clone()
        .or_else(|| env("DYNACACHE_OBJECT_STORE"))
    else {
        return Ok(None);
    };
    let mut b = if url == "embedded" {
        let Some(file) = embedded_file else {
            return Err(PyValueError::new_err(
                "object_store='embedded' needs the embedded engine in a file: give \
                 's3://bucket/prefix' or a directory",
            ));
        };
        let mut dir = file.as_os_str().to_owned();
        dir.push(".objects");
        dynacache::ObjectStore::builder().local(PathBuf::from(dir))
    } else {
        dynacache::ObjectStore::builder()
            .url(&url)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
    };
    if let Some(url) = o
        .object_store_endpoint_url
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
    {
        b = b.endpoint_url(url);
    }
    if let Some(r) = &o.region {
        b = b.region(r);
    }
    if let Some(p) = &o.profile {
        b = b.profile(p);
    }
    if let Some((id, secret, token)) = &o.credentials {
        b = b.credentials(id, secret, token.clone());
    }
    if let Some(t) = o.connect_timeout {
        b = b.connect_timeout(duration(t, "connect_timeout")?);
    }
    if let Some(t) = o.operation_timeout {
        b = b.operation_timeout(duration(t, "operation_timeout")?);
    }
    if let Some(t) = o.object_threshold {
        b = b.threshold(t);
    }
    Ok(Some(b.assume_exists(!o.create_table)))
}

impl Cache {
    /// The Rust cache of this process: opened again in a child after `os.fork()`, since the
    /// parent's connections and engine threads do not exist there.
    fn handle(&self, py: Python<'_>) -> PyResult<dynacache::Cache> {
        self.state.get(py, |py| {
            open(
                py,
                self.table.clone(),
                self.builder.clone(),
                self.objects.clone(),
            )
        })
    }

    fn value(&self, py: Python<'_>, v: Option<rmpv::Value>) -> PyResult<Option<Py<PyAny>>> {
        v.map(|v| from_value(py, v, self.pickle)).transpose()
    }
}

fn open(
    py: Python<'_>,
    table: TableBuilder,
    builder: CacheBuilder,
    objects: Option<dynacache::ObjectStoreBuilder>,
) -> PyResult<dynacache::Cache> {
    // The object store is opened with the cache, in each process (its connections are this
    // process's, as the table's are).
    run_dc(py, async move {
        let builder = match objects {
            Some(objects) => builder.object_store(objects.open().await?),
            None => builder,
        };
        builder.build(table.open().await?)
    })
}

#[pymethods]
impl Cache {
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
        default_ttl = None,
        compress_from = Some(1024),
        max_value_size = None,
        secret_keys = None,
        in_process_bytes = None,
        in_process_ttl = None,
        fleet_lease = None,
        pickle = false,
        consistent_reads = false,
        connect_timeout = None,
        operation_timeout = None,
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
        embedded_file: Option<PathBuf>,
        in_memory: bool,
        create_table: bool,
        key_attribute: &str,
        ttl_attribute: &str,
        default_ttl: Option<&Bound<'_, PyAny>>,
        compress_from: Option<usize>,
        max_value_size: Option<usize>,
        secret_keys: Option<Vec<Vec<u8>>>,
        in_process_bytes: Option<u64>,
        in_process_ttl: Option<&Bound<'_, PyAny>>,
        fleet_lease: Option<&Bound<'_, PyAny>>,
        pickle: bool,
        consistent_reads: bool,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        operation_timeout: Option<&Bound<'_, PyAny>>,
        object_store: Option<String>,
        object_store_endpoint_url: Option<String>,
        object_threshold: Option<usize>,
    ) -> PyResult<Self> {
        let name = table
            .or_else(|| env("DYNACACHE_TABLE"))
            .unwrap_or_else(|| dynacache::DEFAULT_TABLE.to_owned());
        let namespace = namespace
            .or_else(|| env("DYNACACHE_KV_NAMESPACE"))
            .unwrap_or_else(|| "kv".to_owned());
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

        let mut cb = dynacache::Cache::builder()
            .namespace(namespace)
            .compress_from(compress_from);
        match expiry(default_ttl)? {
            Expiry::Default => {}
            e => cb = cb.default_expiry(e),
        }
        if let Some(max) = max_value_size {
            cb = cb.max_value_size(max);
        }
        if let Some(keys) = secret_keys {
            cb = cb.secret_keys(keys);
        }
        if let Some(bytes) = in_process_bytes {
            let mut tier = InProcessTier::new(bytes);
            if let Some(ttl) = in_process_ttl {
                tier = tier.l1_ttl(duration(ttl, "in_process_ttl")?);
            }
            cb = cb.in_process(tier);
        }
        if let Some(lease) = fleet_lease {
            cb = cb.fleet_single_flight(FleetSingleFlight::new(duration(lease, "fleet_lease")?));
        }
        let cache = open(py, tb.clone(), cb.clone(), objects.clone())?;
        Ok(Cache {
            table: tb,
            builder: cb,
            objects,
            pickle,
            engine,
            state: PerProcess::new(cache),
        })
    }

    /// The table's name.
    #[getter]
    fn table_name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.handle(py)?.table().name().to_owned())
    }

    /// The namespace every key of this cache is stored under.
    #[getter]
    fn namespace(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.handle(py)?.namespace().to_owned())
    }

    /// Where the table lives, in words.
    #[getter]
    fn engine(&self) -> String {
        self.engine.clone()
    }

    /// Whether objects other than plain data are stored (and read) with pickle.
    #[getter]
    fn pickle(&self) -> bool {
        self.pickle
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.state.is_closed()
    }

    #[pyo3(signature = (key, default = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let key = key_bytes(key)?;
        let cache = self.handle(py)?;
        let v = run_dc(py, async move { cache.get::<rmpv::Value>(key).await })?;
        Ok(self.value(py, v)?.or(default))
    }

    #[pyo3(signature = (key, value, ttl = None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let key = key_bytes(key)?;
        let value = to_value(value, self.pickle)?;
        let expiry = expiry(ttl)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.set_with(key, &value, expiry).await })
    }

    #[pyo3(signature = (key, value, ttl = None))]
    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = key_bytes(key)?;
        let value = to_value(value, self.pickle)?;
        let expiry = expiry(ttl)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.add_with(key, &value, expiry).await })
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_bytes(key)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.delete(key).await })
    }

    fn has(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_bytes(key)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.has(key).await })
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.has(py, key)
    }

    fn get_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Option<Py<PyAny>>>> {
        let keys = keys_bytes(keys)?;
        let cache = self.handle(py)?;
        let values = run_dc(
            py,
            async move { cache.get_many::<rmpv::Value, _>(keys).await },
        )?;
        values.into_iter().map(|v| self.value(py, v)).collect()
    }

    #[pyo3(signature = (mapping, ttl = None))]
    fn set_many(
        &self,
        py: Python<'_>,
        mapping: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let pairs = if mapping.hasattr("items")? {
            mapping.call_method0("items")?
        } else {
            mapping.clone()
        };
        let mut entries = Vec::new();
        for pair in pairs.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
            entries.push((key_bytes(&k)?, to_value(&v, self.pickle)?));
        }
        let expiry = expiry(ttl)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.set_many(entries, expiry).await })
    }

    fn delete_many(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<()> {
        let keys = keys_bytes(keys)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.delete_many(keys).await })
    }

    #[pyo3(signature = (key, delta = 1, ttl = None))]
    fn inc(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let key = key_bytes(key)?;
        let expiry = expiry(ttl)?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.inc_with(key, delta, expiry).await })
    }

    #[pyo3(signature = (key, delta = 1, ttl = None))]
    fn dec(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i64,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let delta = delta
            .checked_neg()
            .ok_or_else(|| PyValueError::new_err("delta is out of range"))?;
        self.inc(py, key, delta, ttl)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.clear().await })
    }

    /// Deletes chunk items and objects no entry names any more (older than 15 minutes); how
    /// many.
    fn vacuum(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.vacuum().await })
    }

    fn keys(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let cache = self.handle(py)?;
        let keys = run_dc(
            py,
            async move { cache.keys().try_collect::<Vec<_>>().await },
        )?;
        Ok(keys.iter().map(|k| key_object(py, k.as_bytes())).collect())
    }

    fn len(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.len().await })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.len(py)? as usize)
    }

    fn ttl(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        let key = key_bytes(key)?;
        let cache = self.handle(py)?;
        let left = run_dc(py, async move { cache.ttl(key).await })?;
        Ok(left.map(|d| d.map_or(f64::INFINITY, |d| d.as_secs_f64())))
    }

    fn touch(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        ttl: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let key = key_bytes(key)?;
        let ttl = duration(ttl, "ttl")?;
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.touch(key, ttl).await })
    }

    #[pyo3(signature = (key, factory, ttl = None))]
    fn get_or_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        factory: Py<PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let key = key_bytes(key)?;
        let expiry = expiry(ttl)?;
        let pickle = self.pickle;
        let cache = self.handle(py)?;
        let value = run(py, async move {
            cache
                .try_get_or_insert_with(key, expiry, || async move {
                    let computed = tokio::task::spawn_blocking(move || {
                        Python::attach(|py| {
                            let made = factory.call0(py)?;
                            to_value(made.bind(py), pickle)
                        })
                    })
                    .await;
                    match computed {
                        Ok(v) => v.map_err(Failure::Python),
                        Err(e) => Err(Failure::Python(PyValueError::new_err(format!(
                            "the factory did not finish: {e}"
                        )))),
                    }
                })
                .await
        })?;
        from_value(py, value, pickle)
    }

    /// Takes the lease `name` for `ttl` if no one holds it: a `Lease`, or `None` when it is held.
    fn lease(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        ttl: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Lease>> {
        let name = key_bytes(name)?;
        let ttl = duration(ttl, "ttl")?;
        let cache = self.handle(py)?;
        let got = run_dc(py, async move { cache.lease(name, ttl).await })?;
        Ok(got.map(|l| Lease {
            inner: Mutex::new(Some(l)),
        }))
    }

    /// Extends a lease this process holds; `False` when it was lost.
    fn renew(&self, py: Python<'_>, lease: &Lease, ttl: &Bound<'_, PyAny>) -> PyResult<bool> {
        let ttl = duration(ttl, "ttl")?;
        let Some(mut held) = lease.current() else {
            return Ok(false);
        };
        let cache = self.handle(py)?;
        let (renewed, held) = run_dc(py, async move {
            let ok = cache.renew(&mut held, ttl).await?;
            Ok((ok, held))
        })?;
        *lease.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(held);
        Ok(renewed)
    }

    /// Gives a lease up; `False` when it had already been lost.
    fn release(&self, py: Python<'_>, lease: &Lease) -> PyResult<bool> {
        let Some(held) = lease.inner.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(false);
        };
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.release(held).await })
    }

    /// Deletes the whole table (every namespace in it) and closes the cache.
    fn delete_table(&self, py: Python<'_>) -> PyResult<()> {
        let cache = self.handle(py)?;
        run_dc(py, async move { cache.table().delete_table().await })?;
        self.close(py);
        Ok(())
    }

    /// Closes the cache: later calls raise `ClosedError`. Closing twice is allowed.
    fn close(&self, py: Python<'_>) {
        if let Some(cache) = self.state.close() {
            py.detach(move || drop(cache));
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
                "Cache(table={:?}, namespace={:?}, engine={:?})",
                c.table().name(),
                c.namespace(),
                self.engine
            ),
            Err(_) => format!("Cache(closed, engine={:?})", self.engine),
        }
    }
}

/// A lease taken with `Cache.lease`: a name held by one process at a time, with a fencing
/// token that grows with every new holder.
#[pyclass(module = "dynacache._native", frozen)]
pub(crate) struct Lease {
    inner: Mutex<Option<dynacache::Lease>>,
}

impl Lease {
    fn current(&self) -> Option<dynacache::Lease> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[pymethods]
impl Lease {
    /// The lease's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current().map(|l| key_object(py, l.name()))
    }

    /// The fencing token: larger for every new holder of the name.
    #[getter]
    fn token(&self) -> Option<u64> {
        self.current().map(|l| l.token())
    }

    /// When the lease ends unless renewed, in seconds since the epoch.
    #[getter]
    fn expires(&self) -> Option<f64> {
        self.current().map(|l| epoch_seconds(l.expires()))
    }

    /// Whether it is still held by this handle (not released).
    #[getter]
    fn held(&self) -> bool {
        self.current().is_some()
    }

    fn __repr__(&self) -> String {
        match self.current() {
            Some(l) => format!(
                "Lease(name={:?}, token={})",
                String::from_utf8_lossy(l.name()),
                l.token()
            ),
            None => "Lease(released)".into(),
        }
    }
}
