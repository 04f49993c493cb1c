//! The key/value cache for programs without an async runtime.
//!
//! [`Cache`] owns a small Tokio runtime and runs each call of the async
//! [`crate::Cache`] on it. Do not call it from inside an async runtime (Tokio refuses to block
//! there); use the async API in async code.
//!
//! ```
//! use dynacache::blocking::Cache;
//! use dynacache::{CacheBuilder, Table};
//!
//! let cache = Cache::open(Table::builder(), CacheBuilder::default().namespace("app"))?;
//! cache.set("k", &"v")?;
//! assert_eq!(cache.get::<String>("k")?, Some("v".to_owned()));
//! assert_eq!(cache.len()?, 1);
//! # Ok::<(), dynacache::Error>(())
//! ```

use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::{CacheBuilder, Expiry, Key, Table, TableBuilder};

/// A blocking [`crate::Cache`]. Cheap to clone; clones share the runtime and the table.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: crate::Cache,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Cache {
    /// Opens the table and builds the cache on it.
    pub fn open(table: TableBuilder, cache: CacheBuilder) -> Result<Cache> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dynacache-blocking")
            .enable_all()
            .build()
            .map_err(|e| Error::config(format!("cannot start a runtime: {e}")))?;
        let table = runtime.block_on(table.open())?;
        Ok(Cache {
            inner: cache.build(table)?,
            runtime: Arc::new(runtime),
        })
    }

    /// The async cache this wraps, to use from async code.
    pub fn as_async(&self) -> &crate::Cache {
        &self.inner
    }

    /// The table.
    pub fn table(&self) -> &Table {
        self.inner.table()
    }

    /// See [`crate::Cache::get`].
    pub fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        self.runtime.block_on(self.inner.get(key))
    }

    /// See [`crate::Cache::has`].
    pub fn has(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.runtime.block_on(self.inner.has(key))
    }

    /// See [`crate::Cache::get_many`].
    pub fn get_many<T: DeserializeOwned, K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<T>>> {
        self.runtime.block_on(self.inner.get_many(keys))
    }

    /// See [`crate::Cache::set`].
    pub fn set<T: Serialize + ?Sized>(&self, key: impl AsRef<[u8]>, value: &T) -> Result<()> {
        self.runtime.block_on(self.inner.set(key, value))
    }

    /// See [`crate::Cache::set_with`].
    pub fn set_with<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        expiry: Expiry,
    ) -> Result<()> {
        self.runtime
            .block_on(self.inner.set_with(key, value, expiry))
    }

    /// See [`crate::Cache::add`].
    pub fn add<T: Serialize + ?Sized>(&self, key: impl AsRef<[u8]>, value: &T) -> Result<bool> {
        self.runtime.block_on(self.inner.add(key, value))
    }

    /// See [`crate::Cache::add_with`].
    pub fn add_with<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        self.runtime
            .block_on(self.inner.add_with(key, value, expiry))
    }

    /// See [`crate::Cache::set_many`].
    pub fn set_many<K: AsRef<[u8]>, T: Serialize>(
        &self,
        entries: impl IntoIterator<Item = (K, T)>,
        expiry: Expiry,
    ) -> Result<()> {
        self.runtime.block_on(self.inner.set_many(entries, expiry))
    }

    /// See [`crate::Cache::delete`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.runtime.block_on(self.inner.delete(key))
    }

    /// See [`crate::Cache::delete_many`].
    pub fn delete_many<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) -> Result<()> {
        self.runtime.block_on(self.inner.delete_many(keys))
    }

    /// See [`crate::Cache::inc`].
    pub fn inc(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        self.runtime.block_on(self.inner.inc(key, delta))
    }

    /// See [`crate::Cache::dec`].
    pub fn dec(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        self.runtime.block_on(self.inner.dec(key, delta))
    }

    /// See [`crate::Cache::inc_with`].
    pub fn inc_with(&self, key: impl AsRef<[u8]>, delta: i64, expiry: Expiry) -> Result<i64> {
        self.runtime
            .block_on(self.inner.inc_with(key, delta, expiry))
    }

    /// See [`crate::Cache::len`].
    pub fn len(&self) -> Result<u64> {
        self.runtime.block_on(self.inner.len())
    }

    /// See [`crate::Cache::is_empty`].
    pub fn is_empty(&self) -> Result<bool> {
        self.runtime.block_on(self.inner.is_empty())
    }

    /// See [`crate::Cache::clear`].
    pub fn clear(&self) -> Result<u64> {
        self.runtime.block_on(self.inner.clear())
    }

    /// See [`crate::Cache::vacuum`].
    pub fn vacuum(&self) -> Result<u64> {
        self.runtime.block_on(self.inner.vacuum())
    }

    /// See [`crate::Cache::keys`]: an iterator that reads the table page by page.
    pub fn keys(&self) -> impl Iterator<Item = Result<Key>> + '_ {
        let mut stream = self.inner.keys();
        std::iter::from_fn(move || self.runtime.block_on(stream.next()))
    }
}
