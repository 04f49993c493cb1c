//! The table layer: the only code that calls DynamoDB.
//!
//! A [`Table`] is a cheap handle (clone it freely) on one DynamoDB table with a string partition
//! key and a TTL attribute, on any engine: the embedded one, DynamoDB Local, or AWS.

mod breaker;
mod builder;
#[cfg(feature = "embedded")]
mod embedded;
pub(crate) mod index;
pub(crate) mod item;
mod ops;
mod scan;
mod schema;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ConsumedCapacity as SdkCapacity;

pub(crate) use breaker::{Admission, Breaker};
pub use breaker::{BreakerState, CircuitBreaker, StorageHealth};
pub use builder::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, Engine,
    TableBuilder,
};
pub(crate) use builder::{aws_loader, is_loopback};
pub use index::{META_ATTRIBUTE, META_INDEX, META_PROJECTED, META_SHARDS, Reindexed};
pub(crate) use ops::{Expr, Put, Write};
pub(crate) use scan::ScanSpec;
pub use schema::{TableDescription, TablePolicy};

/// The default table name.
pub const DEFAULT_TABLE: &str = "dynacache";

/// DynamoDB's maximum item size: 400 KB, attribute names included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// DynamoDB's maximum partition key size.
pub const MAX_KEY_BYTES: usize = 2048;

/// A handle on one DynamoDB table (cheap to clone).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use dynacache::Table;
///
/// let table = Table::builder().open().await?; // embedded engine, in memory
/// let description = table.describe().await?;
/// assert_eq!(description.key_attribute.as_deref(), Some("key"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Table {
    inner: Arc<TableInner>,
}

struct TableInner {
    client: Client,
    name: String,
    key_attr: String,
    ttl_attr: String,
    consistent_reads: bool,
    scan_segments: u32,
    /// Whether CreateTable adds the metadata index.
    meta_index: bool,
    /// What this process knows of each namespace's metadata index.
    meta: std::sync::Mutex<std::collections::HashMap<String, index::MetaState>>,
    engine: Engine,
    capacity: CapacityCounter,
    breaker: breaker::Breaker,
    // Keeps the embedded engine running while any handle is alive.
    #[cfg(feature = "embedded")]
    _embedded: Option<embedded::EmbeddedEngine>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.inner.name)
            .field("engine", &self.inner.engine)
            .field("key_attribute", &self.inner.key_attr)
            .field("ttl_attribute", &self.inner.ttl_attr)
            .finish()
    }
}

impl Table {
    /// Starts building a table handle. See [`TableBuilder`].
    pub fn builder() -> TableBuilder {
        TableBuilder::default()
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The partition key attribute.
    pub fn key_attribute(&self) -> &str {
        &self.inner.key_attr
    }

    /// The TTL attribute.
    pub fn ttl_attribute(&self) -> &str {
        &self.inner.ttl_attr
    }

    /// Which engine this table is on.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Whether reads are strongly consistent.
    pub fn consistent_reads(&self) -> bool {
        self.inner.consistent_reads
    }

    /// The underlying AWS SDK client, for operations dynacache does not cover.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// For the embedded engine: the loopback endpoint it listens on, so that other processes on
    /// this machine can share it (`TableBuilder::endpoint_url`) while this handle lives.
    /// `None` for other engines.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::Table;
    ///
    /// let table = Table::builder().name("shared").open().await?;
    /// let endpoint = table.local_endpoint().expect("embedded");
    /// let other = Table::builder().name("shared").endpoint_url(endpoint).open().await?;
    /// # Ok(()) }
    /// ```
    pub fn local_endpoint(&self) -> Option<&str> {
        #[cfg(feature = "embedded")]
        if let Some(engine) = &self.inner._embedded {
            return Some(engine.endpoint());
        }
        None
    }

    /// Opens the connection now, with one cheap data-plane call (a GetItem of a key no cache
    /// uses), so that the first real request does not pay for DNS, TCP and TLS. No
    /// control-plane call: with [`TablePolicy::AssumeExists`] a cold start makes no other
    /// request. Call it during start-up (a Lambda's init phase, a server before it listens).
    /// Fails when the table cannot be reached or does not exist.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, TablePolicy};
    /// let table = Table::builder().open().await?;
    /// table.warm().await?;
    /// # Ok(()) }
    /// ```
    pub async fn warm(&self) -> crate::Result<()> {
        // `~` cannot appear in a namespace: no cache ever stores this key.
        self.get_item("~warm", Some(&[]), false).await.map(|_| ())
    }

    /// The storage's health as the circuit breaker sees it (see [`CircuitBreaker`]).
    pub fn health(&self) -> StorageHealth {
        self.inner.breaker.health()
    }

    /// Tells the circuit breaker that a caller gave up waiting for this table (its own deadline
    /// passed): it counts as a failed call.
    pub(crate) fn gave_up(&self) {
        self.inner.breaker.gave_up(&self.inner.name);
    }

    /// Runs one DynamoDB call through the circuit breaker: refused at once while it is open.
    pub(crate) async fn guarded<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = crate::Result<T>>,
    ) -> crate::Result<T> {
        let admission = self.inner.breaker.admit(&self.inner.name)?;
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("dynacache.storage", op, table = %self.inner.name);
        let outcome = tracing::Instrument::instrument(call, span).await;
        crate::metrics::storage_call(op, started.elapsed());
        self.inner.breaker.record(admission, &outcome);
        outcome
    }

    /// Capacity units consumed through this handle (and its clones) so far, as DynamoDB reported
    /// them. Local engines may report none.
    pub fn consumed_capacity(&self) -> ConsumedCapacity {
        self.inner.capacity.snapshot()
    }
}

/// Capacity units consumed, as reported by DynamoDB.
///
/// ```
/// use dynacache::ConsumedCapacity;
/// let c = ConsumedCapacity::default();
/// assert_eq!(c.read_units + c.write_units, 0.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConsumedCapacity {
    /// Read capacity units (or read request units, on demand).
    pub read_units: f64,
    /// Write capacity units (or write request units, on demand).
    pub write_units: f64,
}

#[derive(Debug, Default)]
struct CapacityCounter {
    // Milli-units, so that half units of eventually consistent reads add up exactly.
    read: AtomicU64,
    write: AtomicU64,
}

impl CapacityCounter {
    fn record_read(&self, c: Option<&SdkCapacity>) {
        if let Some(c) = c {
            let units = c
                .read_capacity_units()
                .or(c.capacity_units())
                .unwrap_or(0.0);
            crate::metrics::capacity(units, 0.0);
            self.read
                .fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    fn record_write(&self, c: Option<&SdkCapacity>) {
        if let Some(c) = c {
            let units = c
                .write_capacity_units()
                .or(c.capacity_units())
                .unwrap_or(0.0);
            crate::metrics::capacity(0.0, units);
            self.write
                .fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> ConsumedCapacity {
        ConsumedCapacity {
            read_units: self.read.load(Ordering::Relaxed) as f64 / 1000.0,
            write_units: self.write.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}
