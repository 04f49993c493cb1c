//! The key/value cache: typed values over the [entry store](crate::store), encoded by
//! [`codec`](crate::codec).

mod lease;
mod lifetime;
mod namespace;
pub(crate) mod read_through;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use lease::Lease;
pub use read_through::FleetSingleFlight;

use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::{Clock, SystemClock};
use crate::codec::{self, Encoded};
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::store::{
    Entry, Increment, Key, Payload, Stamp, StorageStats, Store, StoreConfig, StoredKey,
};
use crate::table::item::Item;
use crate::table::{Expr, Table};
use crate::tier::{InProcessTier, ReadStart, Tier};

/// Builds a [`Cache`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use std::time::Duration;
/// use dynacache::{Cache, Table};
///
/// let table = Table::builder().open().await?;
/// let sessions = Cache::builder()
///     .namespace("sessions")
///     .default_ttl(Duration::from_secs(3600))
///     .build(table)?;
/// sessions.set("alice", &vec![1, 2, 3]).await?;
/// assert_eq!(sessions.get::<Vec<i32>>("alice").await?, Some(vec![1, 2, 3]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheBuilder {
    namespace: String,
    default_expiry: Expiry,
    ttl_grace: Duration,
    compress_from: Option<usize>,
    max_value_size: usize,
    chunk_size: usize,
    clock: Arc<dyn Clock>,
    objects: Option<crate::ObjectStore>,
    secret_keys: codec::SecretKeys,
    tier: Option<InProcessTier>,
    fleet: Option<FleetSingleFlight>,
    fail_safe: Option<Duration>,
    refresh_ahead: Option<f64>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            namespace: "kv".into(),
            default_expiry: Expiry::Never,
            ttl_grace: Duration::from_secs(3600),
            compress_from: Some(1024),
            max_value_size: 256 * 1024 * 1024,
            chunk_size: 350 * 1024,
            clock: Arc::new(SystemClock),
            objects: None,
            secret_keys: codec::SecretKeys::default(),
            tier: None,
            fleet: None,
            fail_safe: None,
            refresh_ahead: None,
        }
    }
}

impl CacheBuilder {
    /// The namespace: every key of this cache is stored under it, and [`Cache::clear`],
    /// [`Cache::keys`] and [`Cache::len`] see only it. 1 to 64 characters of letters, digits,
    /// `_ - . /`. Default `kv`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Expiry of values set without one (default: never).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_expiry = Expiry::After(ttl);
        self
    }

    /// Expiry of values set without one, as an [`Expiry`].
    pub fn default_expiry(mut self, expiry: Expiry) -> Self {
        self.default_expiry = match expiry {
            Expiry::Default => Expiry::Never,
            other => other,
        };
        self
    }

    /// How long after a value's expiry DynamoDB's TTL may delete it (default one hour). Reads
    /// never serve an expired value, whatever this is.
    pub fn ttl_grace(mut self, grace: Duration) -> Self {
        self.ttl_grace = grace;
        self
    }

    /// Compress encoded values of at least this many bytes with zstd, when that saves space
    /// (default 1024). `None` turns compression off.
    pub fn compress_from(mut self, bytes: Option<usize>) -> Self {
        self.compress_from = bytes;
        self
    }

    /// The largest encoded value accepted, in bytes (default 256 MiB). Larger values fail with
    /// [`Error::ItemTooLarge`]; this also bounds what a read will decompress.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// The clock expiry is measured against (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Signs every stored value with HMAC-SHA256, bound to its key and expiry, and reads only
    /// values whose signature verifies: others fail with [`Error::Corrupt`]. The first key
    /// signs; every key verifies, so keys can be rotated. Counters are not signed (they change
    /// atomically inside DynamoDB). See `docs/security.md` for what this protects against.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, Table};
    ///
    /// let cache = Cache::builder()
    ///     .secret_keys(["new secret", "old secret"])
    ///     .build(Table::builder().open().await?)?;
    /// cache.set("k", &"signed").await?;
    /// assert_eq!(cache.get::<String>("k").await?.as_deref(), Some("signed"));
    /// # Ok(()) }
    /// ```
    pub fn secret_keys<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.secret_keys =
            codec::SecretKeys(keys.into_iter().map(|k| k.as_ref().to_vec()).collect());
        self
    }

    /// Keeps values in memory too, in front of the table (default: off, every read goes to
    /// the table). A value read from the tier costs no DynamoDB call; one another process
    /// changed is seen within the tier's staleness bound; this cache's own writes and deletes
    /// are seen at once; no value is kept past its expiry. See [`InProcessTier`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Cache, InProcessTier, Table};
    ///
    /// let cache = Cache::builder()
    ///     .in_process(InProcessTier::new(64 << 20).l1_ttl(Duration::from_secs(1)))
    ///     .build(Table::builder().open().await?)?;
    /// cache.set("k", &"v").await?;
    /// assert_eq!(cache.get::<String>("k").await?.as_deref(), Some("v")); // from the table
    /// assert_eq!(cache.get::<String>("k").await?.as_deref(), Some("v")); // from memory
    /// # Ok(()) }
    /// ```
    pub fn in_process(mut self, tier: InProcessTier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Shares read-through misses across processes too (default: within this process only):
    /// see [`get_or_insert_with`](Cache::get_or_insert_with) and [`FleetSingleFlight`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::{Cache, FleetSingleFlight};
    /// let builder = Cache::builder().fleet_single_flight(FleetSingleFlight::new(Duration::from_secs(10)));
    /// ```
    pub fn fleet_single_flight(mut self, flight: FleetSingleFlight) -> Self {
        self.fleet = Some(flight);
        self
    }

    /// When a read-through factory fails, return the value it would have replaced if that
    /// expired at most `window` ago (default: off, the error is returned).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = dynacache::Cache::builder().fail_safe(Duration::from_secs(3600));
    /// ```
    pub fn fail_safe(mut self, window: Duration) -> Self {
        self.fail_safe = Some(window);
        self
    }

    /// Recomputes read-through values before they expire, with XFetch's probability
    /// `exp(-(expiry - now) / (cost × beta))`-like rule: the closer to expiry and the longer
    /// the value took to compute, the likelier one caller recomputes it early (one at a time
    /// per process; no storage call when not refreshing). `beta` 1.0 is the usual choice;
    /// larger refreshes earlier. Default off.
    ///
    /// ```
    /// let builder = dynacache::Cache::builder().refresh_ahead(1.0);
    /// ```
    pub fn refresh_ahead(mut self, beta: f64) -> Self {
        self.refresh_ahead = (beta.is_finite() && beta > 0.0).then_some(beta);
        self
    }

    /// Keeps values too large for one item (or from the store's
    /// [threshold](crate::ObjectStoreBuilder::threshold) up) in an object store instead of in
    /// chunk items: the table keeps the entry, the object store the bytes (see
    /// [`crate::objects`]). Every process sharing the table must be given the same object
    /// store; one without it reads such entries as an `InvalidConfig` error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, ObjectStore, Table};
    ///
    /// let dir = std::env::temp_dir().join(format!("dynacache-kv-doc-{}", std::process::id()));
    /// let objects = ObjectStore::builder().local(&dir).open().await?;
    /// let cache = Cache::builder()
    ///     .object_store(objects)
    ///     .compress_from(None)
    ///     .build(Table::builder().open().await?)?;
    /// let big = vec![7u8; 1 << 20];
    /// cache.set("report", &serde_bytes::ByteBuf::from(big.clone())).await?;
    /// let back: Option<serde_bytes::ByteBuf> = cache.get("report").await?;
    /// assert_eq!(back.map(|b| b.into_vec()), Some(big));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(()) }
    /// ```
    pub fn object_store(mut self, objects: crate::ObjectStore) -> Self {
        self.objects = Some(objects);
        self
    }

    /// Chunk size for values over the item limit (for tests of chunking with small values).
    #[doc(hidden)]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Builds the cache on a table.
    pub fn build(self, table: Table) -> Result<Cache> {
        if self.secret_keys.0.iter().any(Vec::is_empty) {
            return Err(Error::config("a secret key must not be empty"));
        }
        let store = Store::new(
            table,
            StoreConfig {
                namespace: self.namespace,
                ttl_grace: self.ttl_grace,
                max_value_size: self.max_value_size,
                chunk_size: self.chunk_size,
                clock: self.clock.clone(),
                objects: self.objects.clone(),
            },
        )?;
        Ok(Cache {
            inner: Arc::new(CacheInner {
                store,
                default_expiry: self.default_expiry,
                compress_from: self.compress_from,
                secret_keys: self.secret_keys,
                tier: self.tier.map(|t| Tier::new(t, self.clock, "kv")),
                flights: crate::coalesce::Coalescer::default(),
                reads: Mutex::default(),
                refreshing: Mutex::new(HashSet::new()),
                fleet: self.fleet,
                fail_safe: self.fail_safe,
                refresh_ahead: self.refresh_ahead,
            }),
        })
    }
}

/// A key/value cache on a DynamoDB table: any serde value, per-item expiry, atomic `add` and
/// counters, batches, values of any size.
///
/// Cheap to clone; clones share the table connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use std::time::Duration;
/// use dynacache::{Cache, Expiry, Table};
///
/// let cache = Cache::new(Table::builder().open().await?)?;
/// cache.set("answer", &42).await?;
/// cache.set_with("greeting", &"hello", Expiry::After(Duration::from_secs(60))).await?;
/// assert_eq!(cache.get::<u32>("answer").await?, Some(42));
/// assert_eq!(cache.inc("answer", 1).await?, 43);
/// assert!(!cache.add("greeting", &"other").await?); // already there
/// assert!(cache.delete("greeting").await?);
/// assert_eq!(cache.get::<String>("greeting").await?, None);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    store: Store,
    default_expiry: Expiry,
    compress_from: Option<usize>,
    secret_keys: codec::SecretKeys,
    tier: Option<Tier<String, Kept>>,
    /// Read-through computations under way in this process.
    flights: crate::coalesce::Coalescer<Kept>,
    /// Table reads under way in this process, with the in-process tier on: concurrent misses
    /// of the tier for one key share one GetItem.
    reads: Mutex<HashMap<String, Reading>>,
    /// Keys being refreshed ahead of expiry in this process.
    refreshing: Mutex<HashSet<String>>,
    fleet: Option<FleetSingleFlight>,
    fail_safe: Option<Duration>,
    refresh_ahead: Option<f64>,
}

/// A table read under way (see `Cache::lookup`): when it started, and where its result goes
/// (`None` until it is in; a dropped sender means it failed or was cancelled).
#[derive(Debug)]
struct Reading {
    start: ReadStart,
    id: u64,
    done: tokio::sync::watch::Receiver<Option<Option<Arc<Kept>>>>,
}

/// Drops keys from the tier when a write ends, however it ends.
struct InvalidateAfter<'a> {
    tier: &'a Tier<String, Kept>,
    pks: Vec<String>,
}

impl Drop for InvalidateAfter<'_> {
    fn drop(&mut self) {
        for pk in &self.pks {
            self.tier.invalidate(pk);
        }
    }
}

/// Ends a read's registration when the read ends, however it ends.
struct EndReading<'a> {
    cache: &'a Cache,
    pk: &'a str,
    id: u64,
}

impl Drop for EndReading<'_> {
    fn drop(&mut self) {
        let mut reads = self
            .cache
            .inner
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if reads.get(self.pk).is_some_and(|r| r.id == self.id) {
            reads.remove(self.pk);
        }
    }
}

/// A value as the in-process tier keeps it (and read-through shares it): decoded as far as it
/// can be without knowing the type it will be read as, with what refresh-ahead needs.
#[derive(Debug)]
struct Kept {
    value: KeptValue,
    /// Logical expiry, epoch ms (`None`: never).
    expires: Option<i64>,
    /// How long computing it took (read-through values), ms.
    cost_ms: Option<i64>,
    /// The value decoded by [`Cache::get_shared`], as the first type asked for: later hits of
    /// that type share it instead of decoding again.
    decoded: std::sync::OnceLock<(std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>)>,
}

#[derive(Debug)]
enum KeptValue {
    Counter(i64),
    /// MessagePack, decompressed.
    Plain(Vec<u8>),
}

impl Kept {
    fn bytes(&self) -> usize {
        match &self.value {
            KeptValue::Counter(_) => 8,
            KeptValue::Plain(data) => data.len(),
        }
    }
}

/// The attribute holding a value's signature.
pub(super) const SIGNATURE: &str = "sig";

impl Cache {
    /// A cache with default settings (namespace `kv`, values never expire).
    pub fn new(table: Table) -> Result<Cache> {
        CacheBuilder::default().build(table)
    }

    /// Starts building a cache. See [`CacheBuilder`].
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// The table this cache stores in.
    pub fn table(&self) -> &Table {
        self.inner.store.table()
    }

    /// What the in-process tier holds now (`None` when there is none).
    pub fn in_process_usage(&self) -> Option<crate::InProcessUsage> {
        self.inner.tier.as_ref().map(Tier::usage)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.inner.store.namespace()
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn key(&self, key: &[u8]) -> Result<StoredKey> {
        self.store().key(key)
    }

    fn stamp(&self, expiry: Expiry) -> Stamp {
        self.store().stamp(expiry, self.inner.default_expiry)
    }

    // ----- reads -------------------------------------------------------------------------

    /// The value under `key`, or `None` when it is missing or expired.
    ///
    /// Fails with [`Error::Deserialize`] when the stored value is not a `T`, and
    /// [`Error::Corrupt`] when the item is damaged.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.get", skip_all)]
    pub async fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let key = self.key(key.as_ref())?;
        match self.lookup(&key).await? {
            Some(kept) => self.read_kept(&key, &kept).map(Some),
            None => Ok(None),
        }
    }

    /// The kept value under `key`: from the in-process tier, else read from the table (and
    /// kept), counting the hit or miss. With the tier on, callers that miss it for one key while
    /// a read of that key is under way, with no write by this process since that read started,
    /// share its result instead of reading again (so a hot key's expiry from the tier costs one
    /// GetItem, not one per concurrent caller). If that read fails, each reads for itself.
    async fn lookup(&self, key: &StoredKey) -> Result<Option<Arc<Kept>>> {
        if let Some(kept) = self.kept(key) {
            crate::metrics::hit("kv", "memory");
            return Ok(Some(kept));
        }
        let Some(read) = self.read_start() else {
            return self.read_table(key, None).await;
        };
        let joined = {
            let mut reads = self.inner.reads.lock().unwrap_or_else(|p| p.into_inner());
            match reads.get(&key.pk) {
                Some(r) if r.start == read => Err(r.done.clone()),
                _ => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    let id = fastrand::u64(..);
                    reads.insert(
                        key.pk.clone(),
                        Reading {
                            start: read,
                            id,
                            done: rx,
                        },
                    );
                    Ok((tx, id))
                }
            }
        };
        match joined {
            Err(mut done) => {
                if let Ok(shared) = done.wait_for(Option::is_some).await
                    && let Some(found) = shared.clone()
                {
                    crate::metrics::coalesced("kv", "local");
                    match &found {
                        Some(_) => crate::metrics::hit("kv", "table"),
                        None => crate::metrics::miss("kv"),
                    }
                    return Ok(found);
                }
                self.read_table(key, Some(read)).await
            }
            Ok((tx, id)) => {
                let _end = EndReading {
                    cache: self,
                    pk: &key.pk,
                    id,
                };
                let out = self.read_table(key, Some(read)).await;
                if let Ok(found) = &out {
                    let _ = tx.send(Some(found.clone()));
                }
                out
            }
        }
    }

    /// Reads `key` from the table and keeps what it finds.
    async fn read_table(
        &self,
        key: &StoredKey,
        read: Option<ReadStart>,
    ) -> Result<Option<Arc<Kept>>> {
        match self.store().get(key, false).await? {
            Some(entry) => {
                crate::metrics::hit("kv", "table");
                self.keep(key, entry, read).map(Some)
            }
            None => {
                crate::metrics::miss("kv");
                Ok(None)
            }
        }
    }

    /// The value under `key`, shared: as [`get`](Cache::get), but an `Arc<T>`, so that hits
    /// from the in-process tier decode a value once and then only clone a pointer (a `get` of
    /// a tier hit decodes the stored MessagePack every time). The fastest read of a hot key.
    /// The decoded value lives as long as the kept entry; the tier's byte bound counts the
    /// stored form only.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::sync::Arc;
    /// use dynacache::{Cache, InProcessTier, Table};
    ///
    /// let cache = Cache::builder()
    ///     .in_process(InProcessTier::new(64 << 20))
    ///     .build(Table::builder().open().await?)?;
    /// cache.set("config", &vec!["a".to_owned(), "b".to_owned()]).await?;
    /// let first: Arc<Vec<String>> = cache.get_shared("config").await?.unwrap();
    /// let again: Arc<Vec<String>> = cache.get_shared("config").await?.unwrap();
    /// assert!(Arc::ptr_eq(&first, &again)); // decoded once, shared after
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.get_shared", skip_all)]
    pub async fn get_shared<T>(&self, key: impl AsRef<[u8]>) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let key = self.key(key.as_ref())?;
        match self.lookup(&key).await? {
            Some(kept) => self.read_kept_shared(&key, &kept).map(Some),
            None => Ok(None),
        }
    }

    /// A kept value as an `Arc<T>`, decoded at most once per kept value for the first type
    /// asked for.
    fn read_kept_shared<T>(&self, key: &StoredKey, kept: &Kept) -> Result<Arc<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let wanted = std::any::TypeId::of::<T>();
        if let Some((ty, value)) = kept.decoded.get()
            && *ty == wanted
            && let Ok(value) = value.clone().downcast::<T>()
        {
            return Ok(value);
        }
        let value: Arc<T> = Arc::new(self.read_kept(key, kept)?);
        let _ = kept.decoded.set((wanted, value.clone()));
        Ok(value)
    }

    /// Whether `key` holds a live (unexpired) value. Reads only the key and expiry attributes,
    /// which saves bandwidth; note that DynamoDB bills a GetItem on the whole item's size.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.has", skip_all)]
    pub async fn has(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = self.key(key.as_ref())?;
        if self.kept(&key).is_some() {
            return Ok(true);
        }
        self.store().has(&key).await
    }

    /// The value the in-process tier keeps for `key`, if any.
    fn kept(&self, key: &StoredKey) -> Option<Arc<Kept>> {
        self.inner.tier.as_ref()?.get(&key.pk)
    }

    fn read_start(&self) -> Option<ReadStart> {
        self.inner.tier.as_ref().map(Tier::read_start)
    }

    /// Checks and decodes a stored entry (read from the table since `read`) as far as it goes
    /// without a type, and keeps it in the in-process tier.
    fn keep(&self, key: &StoredKey, entry: Entry, read: Option<ReadStart>) -> Result<Arc<Kept>> {
        let get = |name| crate::table::item::get_i64(&entry.item, name).and_then(|e| e.ok());
        let (expires, cost_ms) = (
            get(crate::table::item::EXPIRES),
            get(crate::table::item::COST),
        );
        let value = if let Some(counter) = Store::counter_of(key, &entry.item)? {
            KeptValue::Counter(counter)
        } else {
            if !self.inner.secret_keys.0.is_empty() {
                self.verify(key, &entry)?;
            }
            match entry.payload {
                Some(p) => KeptValue::Plain(codec::plain(
                    &key.pk,
                    &p.format,
                    p.data,
                    self.store().max_value_size(),
                )?),
                None => return Err(Error::corrupt(&key.pk, "the item has no value")),
            }
        };
        let kept = Arc::new(Kept {
            value,
            expires,
            cost_ms,
            decoded: Default::default(),
        });
        if let (Some(tier), Some(read)) = (&self.inner.tier, read) {
            tier.insert_read(read, key.pk.clone(), kept.clone(), kept.bytes(), expires);
        }
        Ok(kept)
    }

    fn read_kept<T: DeserializeOwned>(&self, key: &StoredKey, kept: &Kept) -> Result<T> {
        match &kept.value {
            KeptValue::Counter(n) => codec::decode_counter(&key.pk, *n),
            KeptValue::Plain(data) => codec::decode(&key.pk, codec::FORMAT_PLAIN, data, data.len()),
        }
    }

    /// Runs a write of `keys`, dropping what the in-process tier keeps for them before and
    /// after it: a read that overlapped the write cannot keep what it read (see
    /// [`Tier::insert_read`]).
    async fn changing<'k, T>(
        &self,
        keys: impl IntoIterator<Item = &'k StoredKey> + Clone,
        write: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(tier) = &self.inner.tier else {
            return write.await;
        };
        let pks: Vec<String> = keys.into_iter().map(|k| k.pk.clone()).collect();
        for pk in &pks {
            tier.invalidate(pk);
        }
        // Again when the write ends, also if it is cancelled midway (it may have landed).
        let _after = InvalidateAfter { tier, pks };
        write.await
    }

    /// The values under several keys, in the order of the keys (`None` for missing or expired),
    /// read with BatchGetItem, 100 keys a call.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.get_many", skip_all)]
    pub async fn get_many<T, K>(&self, keys: impl IntoIterator<Item = K>) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned,
        K: AsRef<[u8]>,
    {
        let keys: Vec<StoredKey> = keys
            .into_iter()
            .map(|k| self.key(k.as_ref()))
            .collect::<Result<_>>()?;
        let kept: Vec<Option<Arc<Kept>>> = keys.iter().map(|k| self.kept(k)).collect();
        let missing: Vec<StoredKey> = keys
            .iter()
            .zip(&kept)
            .filter(|(_, k)| k.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let started = self.read_start();
        let mut read = self.store().get_many(&missing).await?.into_iter();
        keys.iter()
            .zip(kept)
            .map(|(key, kept)| {
                let kept = match kept {
                    Some(kept) => kept,
                    None => match read.next().flatten() {
                        Some(entry) => self.keep(key, entry, started)?,
                        None => return Ok(None),
                    },
                };
                self.read_kept(key, &kept).map(Some)
            })
            .collect()
    }

    // ----- writes ------------------------------------------------------------------------

    /// Stores a value with the default expiry, replacing any value under `key`.
    pub async fn set<T: Serialize + ?Sized>(&self, key: impl AsRef<[u8]>, value: &T) -> Result<()> {
        self.set_with(key, value, Expiry::Default).await
    }

    /// Stores a value with the given expiry, replacing any value under `key`.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.set_with", skip_all)]
    pub async fn set_with<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        expiry: Expiry,
    ) -> Result<()> {
        let key = self.key(key.as_ref())?;
        let (attrs, payload) = self.encode(value)?;
        let stamp = self.stamp(expiry);
        let attrs = self.sign(&key, attrs, &payload, stamp);
        self.changing([&key], self.store().put(&key, attrs, payload, stamp, None))
            .await
            .map(|_| ())
    }

    /// Stores a value only if `key` has no live value (it is missing or expired), atomically
    /// across every process sharing the table. Returns whether it was stored.
    pub async fn add<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<bool> {
        self.add_with(key, value, Expiry::Default).await
    }

    /// [`add`](Cache::add) with an expiry.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.add_with", skip_all)]
    pub async fn add_with<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        let key = self.key(key.as_ref())?;
        let (attrs, payload) = self.encode(value)?;
        let stamp = self.stamp(expiry);
        let attrs = self.sign(&key, attrs, &payload, stamp);
        let condition = Expr::new("attribute_not_exists(#k) OR #e <= :now")
            .name("#k", self.table().key_attribute())
            .name("#e", crate::table::item::EXPIRES)
            .value(":now", crate::table::item::n(stamp.now));
        let write = self
            .store()
            .put(&key, attrs, payload, stamp, Some(condition));
        self.changing([&key], write).await
    }

    /// The bytes a value's signature covers: its key, how it is stored, the SHA-256 of the
    /// stored bytes, and its expiry (so a signed value cannot be moved to another key, nor kept
    /// alive longer).
    fn signing_input(pk: &str, format: &str, sum: &[u8], expires: Option<i64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + pk.len());
        for part in [
            b"dynacache-kv-signature-v1".as_slice(),
            pk.as_bytes(),
            format.as_bytes(),
            sum,
            &expires.unwrap_or(i64::MIN).to_be_bytes(),
        ] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// The bytes a stored entry's signature covers, from the item as stored under `pk` (the
    /// same as [`verify`](Cache::verify) checks once the value is read).
    pub(super) fn item_signing_input(pk: &str, item: &Item) -> Vec<u8> {
        use crate::table::item::{CHECKSUM, CHUNK_VERSION, EXPIRES, FORMAT, OBJECT, VALUE};
        use crate::table::item::{get_b, get_i64, get_s};
        let sum = match get_b(item, VALUE) {
            Some(value) => codec::checksum(value),
            None if item.contains_key(CHUNK_VERSION) || item.contains_key(OBJECT) => {
                get_b(item, CHECKSUM)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        let expires = get_i64(item, EXPIRES).and_then(|e| e.ok());
        Self::signing_input(pk, get_s(item, FORMAT).unwrap_or_default(), &sum, expires)
    }

    /// The attributes of a value to store, signed when signing is on.
    fn sign(
        &self,
        key: &StoredKey,
        mut attrs: Item,
        payload: &Option<Payload>,
        stamp: Stamp,
    ) -> Item {
        if let (Some(secret), Some(p)) = (self.inner.secret_keys.0.first(), payload) {
            let input =
                Self::signing_input(&key.pk, &p.format, &codec::checksum(&p.data), stamp.expires);
            attrs.insert(
                SIGNATURE.to_owned(),
                crate::table::item::b(codec::hmac(secret, &input)),
            );
        }
        attrs
    }

    /// Checks a stored value's signature; a value without a valid one is `Corrupt`.
    fn verify(&self, key: &StoredKey, entry: &Entry) -> Result<()> {
        use crate::table::item::{CHECKSUM, FORMAT, get_b, get_i64, get_s};
        let head = entry.chunks.as_ref();
        let (format, sum) = match (&entry.payload, head) {
            // A payload in chunks: the head's checksum, which the chunks were checked against.
            (Some(p), Some(head)) => (
                p.format.clone(),
                get_b(head, CHECKSUM)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
            ),
            (Some(p), None) => (p.format.clone(), codec::checksum(&p.data)),
            (None, _) => (
                get_s(&entry.item, FORMAT).unwrap_or_default().to_owned(),
                Vec::new(),
            ),
        };
        let expires = get_i64(&entry.item, crate::table::item::EXPIRES).and_then(|e| e.ok());
        let input = Self::signing_input(&key.pk, &format, &sum, expires);
        match get_b(&entry.item, SIGNATURE) {
            Some(sig) if codec::signed_by_any(&self.inner.secret_keys.0, &input, sig) => Ok(()),
            _ => Err(Error::corrupt(
                &key.pk,
                "the value's signature does not verify",
            )),
        }
    }

    /// Encodes a value as an entry's attributes (a counter) or payload.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<(Item, Option<Payload>)> {
        self.encoded_to_entry(codec::encode(value, self.inner.compress_from)?)
    }

    /// An encoded value as an entry's attributes (a counter) or payload.
    fn encoded_to_entry(&self, encoded: Encoded) -> Result<(Item, Option<Payload>)> {
        match encoded {
            Encoded::Counter(v) => Ok((Store::counter_attributes(v), None)),
            Encoded::Bytes {
                format,
                data,
                plain_len,
            } => {
                // The decoded size is what a read is bounded by: a value that compresses under
                // the limit but decodes over it would be accepted and never read back.
                let limit = self.store().max_value_size();
                if plain_len > limit {
                    return Err(Error::ItemTooLarge {
                        size: plain_len as u64,
                        limit: limit as u64,
                    });
                }
                let payload = Payload {
                    format: format.to_owned(),
                    data,
                };
                Ok((Item::new(), Some(payload)))
            }
        }
    }

    /// Stores several values with one expiry, with BatchWriteItem (25 a call). A key given
    /// twice keeps its last value. Values too large for one item are written one by one.
    ///
    /// Batch writes cannot report the values they replace, so if one of these keys held a value
    /// split into chunks, those chunks stay until its TTL or [`vacuum`](Cache::vacuum) removes
    /// them.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.set_many", skip_all)]
    pub async fn set_many<K, T>(
        &self,
        entries: impl IntoIterator<Item = (K, T)>,
        expiry: Expiry,
    ) -> Result<()>
    where
        K: AsRef<[u8]>,
        T: Serialize,
    {
        let stamp = self.stamp(expiry);
        let entries = entries
            .into_iter()
            .map(|(k, v)| {
                let key = self.key(k.as_ref())?;
                let (attrs, payload) = self.encode(&v)?;
                let attrs = self.sign(&key, attrs, &payload, stamp);
                Ok((key, attrs, payload))
            })
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<StoredKey> = entries.iter().map(|e| e.0.clone()).collect();
        self.changing(&keys, self.store().put_many(entries, stamp))
            .await
    }

    /// Removes the value under `key`. Returns whether a live value was there.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.delete", skip_all)]
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = self.key(key.as_ref())?;
        Ok(self
            .changing([&key], self.store().remove(&key))
            .await?
            .is_some_and(|old| self.store().is_live(&key, &old)))
    }

    /// Removes the value under `key` and returns it, if it was live: one DeleteItem, so of
    /// concurrent callers (in every process) exactly one gets it. A pop for work queues and
    /// one-time tokens.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// cache.set("token", &"once").await?;
    /// assert_eq!(cache.take::<String>("token").await?.as_deref(), Some("once"));
    /// assert_eq!(cache.take::<String>("token").await?, None);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.take", skip_all)]
    pub async fn take<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let key = self.key(key.as_ref())?;
        match self.changing([&key], self.store().take(&key)).await? {
            Some(entry) => {
                let kept = self.keep(&key, entry, None)?;
                self.read_kept(&key, &kept).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Removes several keys with BatchWriteItem (25 a call). See [`set_many`](Cache::set_many)
    /// about chunks of large values.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.delete_many", skip_all)]
    pub async fn delete_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        let keys = keys
            .into_iter()
            .map(|k| self.key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let forget = keys.clone();
        self.changing(&forget, self.store().remove_many(keys)).await
    }

    // ----- counters ----------------------------------------------------------------------

    /// Adds `delta` to the counter under `key` atomically (an UpdateItem, not a read and a
    /// write) and returns the new value. A missing or expired key starts from 0 with the
    /// default expiry; an existing counter keeps its expiry. A key holding a value that is not
    /// an integer fails with [`Error::NotACounter`].
    pub async fn inc(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        self.inc_with(key, delta, Expiry::Default).await
    }

    /// Subtracts `delta`; see [`inc`](Cache::inc).
    pub async fn dec(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        let delta = delta.checked_neg().ok_or_else(|| Error::InvalidArgument {
            reason: format!("dec by {delta} cannot be negated"),
        })?;
        self.inc_with(key, delta, Expiry::Default).await
    }

    /// [`inc`](Cache::inc), with the expiry a new counter gets.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.inc_with", skip_all)]
    pub async fn inc_with(&self, key: impl AsRef<[u8]>, delta: i64, expiry: Expiry) -> Result<i64> {
        let key = self.key(key.as_ref())?;
        self.changing([&key], self.increment(&key, delta, expiry))
            .await
    }

    async fn increment(&self, key: &StoredKey, delta: i64, expiry: Expiry) -> Result<i64> {
        let key = key.clone();
        for _ in 0..8 {
            let stamp = self.stamp(expiry);
            match self.store().increment(&key, delta, stamp).await? {
                Increment::Value(v) => return Ok(v),
                Increment::NotACounter => return Err(Error::NotACounter { key: key.pk }),
                // Expired or deleted: start a fresh counter, if it is still expired.
                Increment::Expired => {
                    if self.store().start_counter(&key, delta, stamp).await? {
                        return Ok(delta);
                    }
                }
            }
        }
        Err(Error::Contention { key: key.pk })
    }

    // ----- whole-namespace operations ----------------------------------------------------

    /// Every live key of this cache, as a stream. Reads the whole table in parallel segments,
    /// page by page, so memory stays bounded; only this namespace's keys are returned.
    pub fn keys(&self) -> BoxStream<'static, Result<Key>> {
        self.store().live_keys()
    }

    /// The exact number of live values in this cache. Counts every page of the table (a Scan
    /// with `Select=COUNT`, in parallel segments), not DynamoDB's six-hourly estimate.
    pub async fn len(&self) -> Result<u64> {
        self.store().count(None, true).await
    }

    /// Whether the cache holds no live value.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Removes every item of this namespace (values, expired values, chunks), and nothing else.
    /// Returns how many items were deleted.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.clear", skip_all)]
    pub async fn clear(&self) -> Result<u64> {
        if let Some(tier) = &self.inner.tier {
            tier.clear();
        }
        let cleared = self.store().clear().await;
        // Again after: a read that started while the table was cleared is neither kept nor
        // shared with a read that starts after it.
        if let Some(tier) = &self.inner.tier {
            tier.clear();
        }
        cleared
    }

    /// Reads every item of this namespace (a full scan, to the last page) and adds up what it
    /// holds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// cache.set("big", &vec![7u8; 1_000_000]).await?;
    /// let stats = cache.storage_stats().await?;
    /// assert_eq!(stats.entries, 1);
    /// assert_eq!(stats.largest[0].0, "big");
    /// println!("${:.6} a month", stats.monthly_cost(0.25));
    /// # Ok(()) }
    /// ```
    pub async fn storage_stats(&self) -> Result<StorageStats> {
        self.store().storage_stats(None).await
    }

    /// Removes chunk items that no value refers to any more: left by interrupted writes, or by
    /// [`set_many`](Cache::set_many)/[`delete_many`](Cache::delete_many) replacing or deleting a
    /// large value. Chunks written in the last 15 minutes are left alone, as they may belong to
    /// a write in progress. With an [object store](CacheBuilder::object_store), objects that
    /// no entry names (older than 15 minutes too: a crashed writer's, an expired entry's) are
    /// deleted as well. Returns how many chunk items and objects were deleted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, Table};
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// assert_eq!(cache.vacuum().await?, 0);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.vacuum", skip_all)]
    pub async fn vacuum(&self) -> Result<u64> {
        self.store().vacuum().await
    }

    /// The object store this cache keeps large values in, if any.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// let cache = dynacache::Cache::new(dynacache::Table::builder().open().await?)?;
    /// assert!(cache.object_store().is_none());
    /// # Ok(()) }
    /// ```
    pub fn object_store(&self) -> Option<&crate::ObjectStore> {
        self.store().objects()
    }
}
