//! The key/value cache.

mod key;
mod large;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use key::StoredKey;
pub use key::{Key, MAX_KEY_LEN};
use key::{chunk_prefix, entry_prefixes, stored_key};

use crate::clock::{Clock, SystemClock};
use crate::codec::{self, Encoded};
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::table::item::{self, Item, b, get_b, get_i64, get_s, n, s};
use crate::table::{Expr, MAX_ITEM_BYTES, Put, Table, Write};

/// Values whose item would exceed this are split into chunks.
const INLINE_LIMIT: usize = MAX_ITEM_BYTES - 8 * 1024;

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

    /// Chunk size for values over the item limit (for tests of chunking with small values).
    #[doc(hidden)]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.clamp(1, INLINE_LIMIT);
        self
    }

    /// Builds the cache on a table.
    pub fn build(self, table: Table) -> Result<Cache> {
        key::validate_namespace(&self.namespace)?;
        Ok(Cache {
            inner: Arc::new(CacheInner {
                table,
                namespace: self.namespace,
                default_expiry: self.default_expiry,
                ttl_grace_secs: self.ttl_grace.as_secs() as i64,
                compress_from: self.compress_from,
                max_value_size: self.max_value_size,
                chunk_size: self.chunk_size,
                clock: self.clock,
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
    table: Table,
    namespace: String,
    default_expiry: Expiry,
    ttl_grace_secs: i64,
    compress_from: Option<usize>,
    max_value_size: usize,
    chunk_size: usize,
    clock: Arc<dyn Clock>,
}

/// The expiry attributes of one write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub(crate) now: i64,
    pub(crate) expires: Option<i64>,
}

/// Stored bytes and their format.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pub(crate) format: String,
    pub(crate) data: Vec<u8>,
}

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
        &self.inner.table
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub(crate) fn key(&self, key: &[u8]) -> Result<StoredKey> {
        stored_key(&self.inner.namespace, key)
    }

    pub(crate) fn stamp(&self, expiry: Expiry) -> Stamp {
        let now = self.inner.clock.now_millis();
        Stamp {
            now,
            expires: expiry.resolve(self.inner.default_expiry, now),
        }
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_millis()
    }

    /// The common attributes of an entry: key, original key, expiry, TTL, write time.
    fn base_item(&self, key: &StoredKey, stamp: Stamp) -> Item {
        let t = &self.inner.table;
        let mut item = Item::with_capacity(8);
        item.insert(t.key_attribute().to_owned(), s(key.pk.clone()));
        if let Some(original) = &key.original {
            item.insert(item::ORIGINAL_KEY.into(), b(original.clone()));
        }
        item.insert(item::WRITTEN.into(), n(stamp.now));
        if let Some(exp) = stamp.expires {
            item.insert(item::EXPIRES.into(), n(exp));
            item.insert(t.ttl_attribute().to_owned(), n(self.ttl_seconds(exp)));
        }
        item
    }

    pub(crate) fn ttl_seconds(&self, expires_millis: i64) -> i64 {
        expires_millis.div_euclid(1000) + 1 + self.inner.ttl_grace_secs
    }

    // ----- reads -------------------------------------------------------------------------

    /// The value under `key`, or `None` when it is missing or expired.
    ///
    /// Fails with [`Error::Deserialize`] when the stored value is not a `T`, and
    /// [`Error::Corrupt`] when the item is damaged.
    pub async fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let key = self.key(key.as_ref())?;
        let item = self.inner.table.get_item(&key.pk, None, false).await?;
        match item {
            Some(item) => self.decode_entry(&key, item).await,
            None => Ok(None),
        }
    }

    /// Whether `key` holds a live (unexpired) value. Reads only the key and expiry attributes,
    /// which saves bandwidth; note that DynamoDB bills a GetItem on the whole item's size.
    pub async fn has(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = self.key(key.as_ref())?;
        let item = self
            .inner
            .table
            .get_item(&key.pk, Some(&[item::EXPIRES, item::ORIGINAL_KEY]), false)
            .await?;
        Ok(item.is_some_and(|i| self.is_live(&key, &i)))
    }

    /// Whether an item is this key's (not a hash collision) and unexpired.
    pub(crate) fn is_live(&self, key: &StoredKey, item: &Item) -> bool {
        if !self.is_owner(key, item) {
            return false;
        }
        match get_i64(item, item::EXPIRES) {
            None => true,
            Some(Ok(exp)) => exp > self.now(),
            // An unreadable expiry is treated as expired rather than served forever.
            Some(Err(_)) => false,
        }
    }

    /// Whether an item belongs to this key (and not to another key with the same hash).
    pub(crate) fn is_owner(&self, key: &StoredKey, item: &Item) -> bool {
        match &key.original {
            Some(original) => get_b(item, item::ORIGINAL_KEY) == Some(original.as_slice()),
            None => true,
        }
    }

    async fn decode_entry<T: DeserializeOwned>(
        &self,
        key: &StoredKey,
        item: Item,
    ) -> Result<Option<T>> {
        let Some((item, payload)) = self.read_entry(key, item, false).await? else {
            return Ok(None);
        };
        if let Some(counter) = get_i64(&item, item::COUNTER) {
            let counter = counter.map_err(|reason| Error::corrupt(&key.pk, reason))?;
            return codec::decode_counter(&key.pk, counter).map(Some);
        }
        match payload {
            Some(p) => {
                codec::decode(&key.pk, &p.format, &p.data, self.inner.max_value_size).map(Some)
            }
            None => Err(Error::corrupt(&key.pk, "the item has no value")),
        }
    }

    /// Resolves a stored item: `None` when it is not this key's live entry; else the item
    /// (the head that was followed, for chunked values) and its payload, if it has one.
    pub(crate) async fn read_entry(
        &self,
        key: &StoredKey,
        mut item: Item,
        include_expired: bool,
    ) -> Result<Option<(Item, Option<Payload>)>> {
        let usable = if include_expired {
            self.is_owner(key, &item)
        } else {
            self.is_live(key, &item)
        };
        if !usable {
            return Ok(None);
        }
        let format = get_s(&item, item::FORMAT).map(str::to_owned);
        if let Some(data) = item::take_b(&mut item, item::VALUE) {
            let format =
                format.ok_or_else(|| Error::corrupt(&key.pk, "the item has no value format"))?;
            return Ok(Some((item, Some(Payload { format, data }))));
        }
        if item.contains_key(item::CHUNK_VERSION) {
            return Ok(self
                .read_chunked(key, item, include_expired)
                .await?
                .map(|(head, format, data)| (head, Some(Payload { format, data }))));
        }
        Ok(Some((item, None)))
    }

    /// The values under several keys, in the order of the keys (`None` for missing or expired),
    /// read with BatchGetItem, 100 keys a call.
    pub async fn get_many<T, K>(&self, keys: impl IntoIterator<Item = K>) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned,
        K: AsRef<[u8]>,
    {
        let keys: Vec<StoredKey> = keys
            .into_iter()
            .map(|k| self.key(k.as_ref()))
            .collect::<Result<_>>()?;
        let items = self
            .inner
            .table
            .batch_get(keys.iter().map(|k| k.pk.clone()).collect(), false)
            .await?;
        let key_attr = self.inner.table.key_attribute();
        let mut by_pk: HashMap<String, Item> = items
            .into_iter()
            .filter_map(|i| Some((get_s(&i, key_attr)?.to_owned(), i)))
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in &keys {
            // A key asked for twice gets the same item twice.
            let item = match by_pk.get(&key.pk) {
                Some(i) if keys.iter().filter(|k| k.pk == key.pk).count() > 1 => Some(i.clone()),
                Some(_) => by_pk.remove(&key.pk),
                None => None,
            };
            out.push(match item {
                Some(item) => self.decode_entry(key, item).await?,
                None => None,
            });
        }
        Ok(out)
    }

    // ----- writes ------------------------------------------------------------------------

    /// Stores a value with the default expiry, replacing any value under `key`.
    pub async fn set<T: Serialize + ?Sized>(&self, key: impl AsRef<[u8]>, value: &T) -> Result<()> {
        self.set_with(key, value, Expiry::Default).await
    }

    /// Stores a value with the given expiry, replacing any value under `key`.
    pub async fn set_with<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        expiry: Expiry,
    ) -> Result<()> {
        let key = self.key(key.as_ref())?;
        let encoded = self.encode(value)?;
        let stamp = self.stamp(expiry);
        self.write(&key, encoded, stamp, None).await.map(|_| ())
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
    pub async fn add_with<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        let key = self.key(key.as_ref())?;
        let encoded = self.encode(value)?;
        let stamp = self.stamp(expiry);
        let condition = Expr::new("attribute_not_exists(#k) OR #e <= :now")
            .name("#k", self.inner.table.key_attribute())
            .name("#e", item::EXPIRES)
            .value(":now", n(stamp.now));
        self.write(&key, encoded, stamp, Some(condition)).await
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Encoded> {
        let encoded = codec::encode(value, self.inner.compress_from)?;
        if let Encoded::Bytes { data, .. } = &encoded
            && data.len() > self.inner.max_value_size
        {
            return Err(Error::ItemTooLarge {
                size: data.len() as u64,
                limit: self.inner.max_value_size as u64,
            });
        }
        Ok(encoded)
    }

    /// Writes an entry (inline or chunked), then removes the chunks of the value it replaced.
    /// Returns false when `condition` did not hold.
    async fn write(
        &self,
        key: &StoredKey,
        encoded: Encoded,
        stamp: Stamp,
        condition: Option<Expr>,
    ) -> Result<bool> {
        match encoded {
            Encoded::Counter(v) => {
                let attrs = Item::from([(item::COUNTER.to_owned(), n(v))]);
                self.write_entry(key, attrs, None, stamp, condition).await
            }
            Encoded::Bytes { format, data } => {
                let payload = Payload {
                    format: format.to_owned(),
                    data,
                };
                self.write_entry(key, Item::new(), Some(payload), stamp, condition)
                    .await
            }
        }
    }

    /// Writes an entry: the common attributes, `attrs`, and the payload inline or in chunks.
    /// Then removes the chunks of the entry it replaced. Returns false when `condition` did not
    /// hold.
    pub(crate) async fn write_entry(
        &self,
        key: &StoredKey,
        attrs: Item,
        payload: Option<Payload>,
        stamp: Stamp,
        condition: Option<Expr>,
    ) -> Result<bool> {
        let mut item = self.base_item(key, stamp);
        item.extend(attrs);
        let mut written_chunks = None;
        if let Some(Payload { format, data }) = payload {
            item.insert(item::FORMAT.into(), s(format));
            let overhead = item::item_size(&item) + item::VALUE.len();
            if overhead + data.len() <= INLINE_LIMIT {
                item.insert(item::VALUE.into(), b(data));
            } else {
                let head = self.write_chunks(key, &data, stamp).await?;
                written_chunks = Some((head.version.clone(), head.count));
                item.extend(head.into_attributes());
            }
        }
        match self.inner.table.put_item(item, condition, true).await {
            Ok(Put::Written { old }) => {
                if let Some(old) = old {
                    self.remove_chunks_of(&old).await;
                }
                Ok(true)
            }
            Ok(Put::ConditionFailed) => {
                if let Some((version, count)) = written_chunks {
                    self.remove_chunks(&version, count).await;
                }
                Ok(false)
            }
            Err(e) => {
                if let Some((version, count)) = written_chunks {
                    self.remove_chunks(&version, count).await;
                }
                Err(e)
            }
        }
    }

    /// Stores several values with one expiry, with BatchWriteItem (25 a call). A key given
    /// twice keeps its last value. Values too large for one item are written one by one.
    ///
    /// Batch writes cannot report the values they replace, so if one of these keys held a value
    /// split into chunks, those chunks stay until its TTL or [`vacuum`](Cache::vacuum) removes
    /// them.
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
        let mut latest: HashMap<String, (StoredKey, Encoded)> = HashMap::new();
        for (k, v) in entries {
            let key = self.key(k.as_ref())?;
            let encoded = self.encode(&v)?;
            latest.insert(key.pk.clone(), (key, encoded));
        }
        let mut batch = Vec::with_capacity(latest.len());
        let mut large = Vec::new();
        for (_, (key, encoded)) in latest {
            let mut item = self.base_item(&key, stamp);
            match encoded {
                Encoded::Counter(v) => {
                    item.insert(item::COUNTER.into(), n(v));
                    batch.push(Write::Put(item));
                }
                Encoded::Bytes { format, data }
                    if item::item_size(&item) + data.len() + 8 <= INLINE_LIMIT =>
                {
                    item.insert(item::FORMAT.into(), s(format));
                    item.insert(item::VALUE.into(), b(data));
                    batch.push(Write::Put(item));
                }
                encoded => large.push((key, encoded)),
            }
        }
        self.inner.table.batch_write(batch).await?;
        stream::iter(large)
            .map(|(key, encoded)| async move { self.write(&key, encoded, stamp, None).await })
            .buffer_unordered(4)
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(())
    }

    /// Removes the value under `key`. Returns whether a live value was there.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = self.key(key.as_ref())?;
        Ok(self
            .remove(&key)
            .await?
            .is_some_and(|old| self.is_live(&key, &old)))
    }

    /// Deletes an entry (and its chunks), live or expired; returns the item that was there.
    pub(crate) async fn remove(&self, key: &StoredKey) -> Result<Option<Item>> {
        match self.inner.table.delete_item(&key.pk, None, true).await? {
            Put::Written { old: Some(old) } => {
                self.remove_chunks_of(&old).await;
                Ok(Some(old))
            }
            _ => Ok(None),
        }
    }

    /// Removes several keys with BatchWriteItem (25 a call). See [`set_many`](Cache::set_many)
    /// about chunks of large values.
    pub async fn delete_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        let mut pks: Vec<String> = keys
            .into_iter()
            .map(|k| self.key(k.as_ref()).map(|k| k.pk))
            .collect::<Result<_>>()?;
        pks.sort_unstable();
        pks.dedup();
        self.inner
            .table
            .batch_write(pks.into_iter().map(Write::Delete).collect())
            .await
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
        let delta = delta.checked_neg().ok_or_else(|| Error::InvalidKey {
            reason: "delta out of range".into(),
        })?;
        self.inc_with(key, delta, Expiry::Default).await
    }

    /// [`inc`](Cache::inc), with the expiry a new counter gets.
    pub async fn inc_with(&self, key: impl AsRef<[u8]>, delta: i64, expiry: Expiry) -> Result<i64> {
        let key = self.key(key.as_ref())?;
        for _ in 0..8 {
            let stamp = self.stamp(expiry);
            let t = &self.inner.table;
            let mut sets = vec!["#n = if_not_exists(#n, :zero) + :d", "#w = :now"];
            let mut update = Expr::default()
                .name("#n", item::COUNTER)
                .name("#w", item::WRITTEN)
                .name("#k", t.key_attribute())
                .name("#e", item::EXPIRES)
                .name("#v", item::VALUE)
                .name("#cv", item::CHUNK_VERSION)
                .value(":zero", n(0))
                .value(":d", n(delta))
                .value(":now", n(stamp.now));
            if let Some(exp) = stamp.expires {
                sets.push("#e = if_not_exists(#e, :e)");
                sets.push("#t = if_not_exists(#t, :t)");
                update = update
                    .name("#t", t.ttl_attribute())
                    .value(":e", n(exp))
                    .value(":t", n(self.ttl_seconds(exp)));
            }
            if let Some(original) = &key.original {
                sets.push("#o = :o");
                update = update
                    .name("#o", item::ORIGINAL_KEY)
                    .value(":o", b(original.clone()));
            }
            update.text = format!("SET {}", sets.join(", "));
            let condition = "(attribute_not_exists(#k) OR attribute_not_exists(#e) OR #e > :now) \
                             AND attribute_not_exists(#v) AND attribute_not_exists(#cv)";
            if let Some(new) = t.update_item(&key.pk, update, Some(condition)).await? {
                return match get_i64(&new, item::COUNTER) {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(reason)) => Err(Error::corrupt(&key.pk, reason)),
                    None => Err(Error::corrupt(
                        &key.pk,
                        "the counter update returned no counter",
                    )),
                };
            }
            // The condition failed: the key holds a value of another kind, or an expired one.
            let current = t.get_item(&key.pk, None, true).await?;
            match current {
                None => continue, // deleted meanwhile: try again
                Some(item) if self.is_live(&key, &item) => {
                    return Err(Error::NotACounter { key: key.pk });
                }
                Some(_) => {
                    // Expired: replace it with a fresh counter, if it is still expired.
                    let condition = Expr::new("#e <= :now")
                        .name("#e", item::EXPIRES)
                        .value(":now", n(stamp.now));
                    if self
                        .write(&key, Encoded::Counter(delta), stamp, Some(condition))
                        .await?
                    {
                        return Ok(delta);
                    }
                }
            }
        }
        Err(Error::Throttled {
            message: format!(
                "counter {:?} kept changing under concurrent writers",
                key.pk
            ),
            source: None,
        })
    }

    // ----- whole-namespace operations ----------------------------------------------------

    /// Every live key of this cache, as a stream. Reads the whole table in parallel segments,
    /// page by page, so memory stays bounded; only this namespace's keys are returned.
    pub fn keys(&self) -> BoxStream<'static, Result<Key>> {
        let cache = self.clone();
        let ns_len = self.inner.namespace.len() + 1;
        let key_attr = self.inner.table.key_attribute().to_owned();
        self.inner
            .table
            .scan(crate::table::ScanSpec {
                prefixes: entry_prefixes(&self.inner.namespace),
                projection: Some(vec![item::EXPIRES, item::ORIGINAL_KEY]),
            })
            .try_filter_map(move |item| {
                let now = cache.now();
                let live = match get_i64(&item, item::EXPIRES) {
                    None => true,
                    Some(Ok(exp)) => exp > now,
                    Some(Err(_)) => false,
                };
                let key = if !live {
                    None
                } else if let Some(original) = get_b(&item, item::ORIGINAL_KEY) {
                    Some(Key::new(original.to_vec()))
                } else {
                    get_s(&item, &key_attr)
                        .and_then(|pk| pk.get(ns_len..))
                        .map(|k| Key::new(k.as_bytes().to_vec()))
                };
                futures::future::ready(Ok(key))
            })
            .boxed()
    }

    /// The exact number of live values in this cache. Counts every page of the table (a Scan
    /// with `Select=COUNT`, in parallel segments), not DynamoDB's six-hourly estimate.
    pub async fn len(&self) -> Result<u64> {
        let live = Expr::new("attribute_not_exists(#e) OR #e > :now")
            .name("#e", item::EXPIRES)
            .value(":now", n(self.now()));
        self.inner
            .table
            .count(&entry_prefixes(&self.inner.namespace), Some(live))
            .await
    }

    /// Whether the cache holds no live value.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Removes every item of this namespace (values, expired values, chunks), and nothing else.
    /// Returns how many items were deleted.
    pub async fn clear(&self) -> Result<u64> {
        let mut prefixes = entry_prefixes(&self.inner.namespace);
        prefixes.push(chunk_prefix(&self.inner.namespace));
        let key_attr = self.inner.table.key_attribute().to_owned();
        let table = self.inner.table.clone();
        let deleted = self
            .inner
            .table
            .scan(crate::table::ScanSpec {
                prefixes,
                projection: Some(vec![]),
            })
            .try_filter_map(move |item| {
                futures::future::ready(Ok(get_s(&item, &key_attr).map(str::to_owned)))
            })
            .try_chunks(1000)
            .map_err(|e| e.1)
            .and_then(|pks| {
                let table = table.clone();
                async move {
                    let count = pks.len() as u64;
                    table
                        .batch_write(pks.into_iter().map(Write::Delete).collect())
                        .await?;
                    Ok(count)
                }
            })
            .try_fold(0u64, |acc, n| futures::future::ready(Ok(acc + n)))
            .await?;
        Ok(deleted)
    }
}

/// What a namespace holds, item by item, as read by [`Cache::storage_stats`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StorageStats {
    /// Entries (values, responses, and index or alias items).
    pub entries: u64,
    /// Entries that are expired but not yet deleted by DynamoDB's TTL.
    pub expired: u64,
    /// Chunk items of large values.
    pub chunk_items: u64,
    /// Entries whose value is split into chunks.
    pub chunked_entries: u64,
    /// Bytes stored, as DynamoDB counts item sizes (names and values, chunks included).
    pub stored_bytes: u64,
    /// The largest entries (chunks included), largest first: label (the URL for HTTP
    /// responses, else the key) and stored bytes.
    pub largest: Vec<(String, u64)>,
}

impl StorageStats {
    /// DynamoDB's storage bill for these items per month, at `price_per_gb_month` dollars
    /// (0.25 for the standard table class in us-east-1), counting the 100 bytes of index
    /// overhead DynamoDB adds to each item.
    ///
    /// ```
    /// let stats = dynacache::StorageStats::default();
    /// assert_eq!(stats.monthly_cost(0.25), 0.0);
    /// ```
    pub fn monthly_cost(&self, price_per_gb_month: f64) -> f64 {
        let bytes = self.stored_bytes + 100 * (self.entries + self.chunk_items);
        bytes as f64 / (1024.0 * 1024.0 * 1024.0) * price_per_gb_month
    }
}

impl Cache {
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
        let mut prefixes = entry_prefixes(&self.inner.namespace);
        prefixes.push(chunk_prefix(&self.inner.namespace));
        let key_attr = self.inner.table.key_attribute().to_owned();
        let ns_len = self.inner.namespace.len() + 1;
        let now = self.now();
        let chunk_prefix = chunk_prefix(&self.inner.namespace);
        let mut items = self.inner.table.scan(crate::table::ScanSpec {
            prefixes,
            projection: None,
        });
        let mut stats = StorageStats::default();
        let mut sizes: HashMap<String, (String, u64)> = HashMap::new();
        while let Some(item) = items.try_next().await? {
            let size = item::item_size(&item) as u64;
            stats.stored_bytes += size;
            let Some(pk) = get_s(&item, &key_attr) else {
                continue;
            };
            if pk.starts_with(&chunk_prefix) {
                stats.chunk_items += 1;
                if let Some(head) = get_s(&item, item::HEAD) {
                    sizes.entry(head.to_owned()).or_default().1 += size;
                }
                continue;
            }
            stats.entries += 1;
            if get_i64(&item, item::EXPIRES).is_some_and(|e| e.is_ok_and(|e| e <= now)) {
                stats.expired += 1;
            }
            if item.contains_key(item::CHUNK_VERSION) {
                stats.chunked_entries += 1;
            }
            let label = get_s(&item, "url")
                .map(str::to_owned)
                .or_else(|| pk.get(ns_len..).map(str::to_owned))
                .unwrap_or_default();
            let slot = sizes.entry(pk.to_owned()).or_default();
            slot.0 = label;
            slot.1 += size;
        }
        let mut largest: Vec<(String, u64)> =
            sizes.into_values().filter(|(l, _)| !l.is_empty()).collect();
        largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        largest.truncate(5);
        stats.largest = largest;
        Ok(stats)
    }
}
