//! The entry store: the one owner of how entries are laid out in the table.
//!
//! Both the key/value cache and the HTTP cache keep their data here; neither knows the key
//! layout, the expiry attributes or how large payloads are split. An entry is one item:
//!
//! ```text
//! key   {namespace}:{key}            (or {namespace}#{sha256} with the key bytes in `k`)
//! w     written, epoch ms            e    logical expiry, epoch ms (absent: never)
//! ttl   e in seconds + grace         (DynamoDB's sweeper; reads check `e`, never `ttl`)
//! f, v  payload format and bytes     (or cv, c, sz, cs: a head naming chunk items;
//!                                     or ob, oe, sz, cs: a head naming an object)
//! ...   the owner's own attributes   (HTTP documents: status, url, headers, ...)
//! ```
//!
//! See [`key`] for the key layout, [`chunks`] for payloads over the item limit, and [`objects`]
//! for payloads kept in an object store.

pub(crate) mod chunks;
mod copy;
mod counter;
mod key;
pub(crate) mod lease;
mod objects;
mod scan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use copy::CopyProgress;
pub(crate) use counter::Increment;

pub use key::{Key, MAX_KEY_LEN};
pub(crate) use key::{StoredKey, validate_namespace};
pub(crate) use objects::payload_id;
pub use scan::StorageStats;

use crate::clock::Clock;
use crate::error::Result;
use crate::expiry::Expiry;
use crate::table::item::{self, Item, b, get_b, get_i64, get_s, n, s};
use crate::table::{Expr, MAX_ITEM_BYTES, Put, Table, Write};
use aws_sdk_dynamodb::types::AttributeValue;

/// Payloads whose item would exceed this are split into chunks.
const INLINE_LIMIT: usize = MAX_ITEM_BYTES - 8 * 1024;

/// Bytes of the SHA-256 an inline payload carries (`cs`; a chunk head carries all 32).
const INLINE_SUM_BYTES: usize = 16;

/// The checksum an inline payload is stored with.
fn inline_sum(data: &[u8]) -> Vec<u8> {
    let mut sum = crate::codec::checksum(data);
    sum.truncate(INLINE_SUM_BYTES);
    sum
}

/// Checks an inline payload against its checksum: a damaged value is `Corrupt`, never another
/// value (a value without its checksum too: it could be any bytes).
fn check_sum(pk: &str, item: &Item, data: &[u8]) -> Result<()> {
    match get_b(item, item::CHECKSUM) {
        None => Err(crate::Error::corrupt(pk, "the value has no checksum")),
        Some(sum)
            if sum.len() >= INLINE_SUM_BYTES
                && crate::codec::checksum(data).get(..sum.len()) == Some(sum) =>
        {
            Ok(())
        }
        Some(_) => Err(crate::Error::corrupt(
            pk,
            "the value does not match its checksum",
        )),
    }
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

/// An entry as read: its attributes (the payload taken out), its payload if it has one, and,
/// for a payload in chunks, the head attributes that name them. A payload in chunks read with
/// [`Store::get_deferred`] is not read yet: `payload` is `None` and `chunks` is set.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) item: Item,
    pub(crate) payload: Option<Payload>,
    pub(crate) chunks: Option<Item>,
}

impl Entry {
    /// When the entry was written (its identity: an update of its attributes keeps it, a
    /// replacement changes it).
    pub(crate) fn written(&self) -> i64 {
        get_i64(&self.item, item::WRITTEN)
            .and_then(|w| w.ok())
            .unwrap_or(0)
    }

    /// Whether the payload is in chunks not read yet.
    pub(crate) fn is_deferred(&self) -> bool {
        self.payload.is_none() && self.chunks.is_some()
    }
}

/// A condition on an entry's own attributes, for writes that must not overwrite what another
/// process wrote meanwhile.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// The entry exists and its attribute equals the value.
    Equals(&'static str, AttributeValue),
    /// There is no entry, or its attribute equals the value.
    AbsentOr(&'static str, AttributeValue),
    /// There is no entry, or it lacks the attribute.
    AbsentOrWithout(&'static str),
    /// The entry is still the one written at this time (see [`Entry::written`]).
    Unchanged(i64),
}

impl Condition {
    fn expr(self, key_attribute: &str) -> Expr {
        let e = Expr::default().name("#ck", key_attribute);
        match self {
            Condition::Equals(name, value) => Expr {
                text: "attribute_exists(#ck) AND #ca = :cv".into(),
                ..e
            }
            .name("#ca", name)
            .value(":cv", value),
            Condition::AbsentOr(name, value) => Expr {
                text: "attribute_not_exists(#ck) OR #ca = :cv".into(),
                ..e
            }
            .name("#ca", name)
            .value(":cv", value),
            Condition::AbsentOrWithout(name) => Expr {
                text: "attribute_not_exists(#ck) OR attribute_not_exists(#ca)".into(),
                ..e
            }
            .name("#ca", name),
            Condition::Unchanged(written) => Expr {
                text: "attribute_exists(#ck) AND #ca = :cv".into(),
                ..e
            }
            .name("#ca", item::WRITTEN)
            .value(":cv", n(written)),
        }
    }
}

/// A stored item, decoded as far as it can be without another read.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Not this key's (live) entry.
    Absent,
    /// The entry.
    Entry(Entry),
    /// A head whose payload is in chunks still to read.
    Chunked(Item),
}

/// Settings of a store (see the builders of the caches that own one).
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) namespace: String,
    pub(crate) ttl_grace: Duration,
    pub(crate) max_value_size: usize,
    pub(crate) chunk_size: usize,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where payloads too large for an item (or over its threshold) go, if anywhere.
    pub(crate) objects: Option<crate::objects::ObjectStore>,
}

/// The entries of one namespace in one table. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    table: Table,
    namespace: String,
    ttl_grace_secs: i64,
    max_value_size: usize,
    chunk_size: usize,
    clock: Arc<dyn Clock>,
    objects: Option<crate::objects::ObjectStore>,
}

impl Store {
    pub(crate) fn new(table: Table, config: StoreConfig) -> Result<Store> {
        validate_namespace(&config.namespace)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                table,
                namespace: config.namespace,
                ttl_grace_secs: config.ttl_grace.as_secs().min(i64::MAX as u64 / 2) as i64,
                max_value_size: config.max_value_size,
                chunk_size: config.chunk_size.clamp(1, INLINE_LIMIT),
                clock: config.clock,
                objects: config.objects,
            }),
        })
    }

    pub(crate) fn table(&self) -> &Table {
        &self.inner.table
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub(crate) fn max_value_size(&self) -> usize {
        self.inner.max_value_size
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_millis()
    }

    /// The partition key a cache key is stored under.
    pub(crate) fn key(&self, key: &[u8]) -> Result<StoredKey> {
        key::stored_key(&self.inner.namespace, key)
    }

    /// The stamp of a write made now with this expiry (`default` resolves [`Expiry::Default`]).
    pub(crate) fn stamp(&self, expiry: Expiry, default: Expiry) -> Stamp {
        let now = self.now();
        Stamp {
            now,
            expires: expiry.resolve(default, now),
        }
    }

    /// The TTL attribute for a logical expiry: later by the grace period, in seconds.
    pub(crate) fn ttl_seconds(&self, expires_millis: i64) -> i64 {
        expires_millis
            .div_euclid(1000)
            .saturating_add(1)
            .saturating_add(self.inner.ttl_grace_secs)
    }

    /// The common attributes of an entry: key, original key, expiry, TTL, write time.
    fn base_item(&self, key: &StoredKey, stamp: Stamp) -> Item {
        let t = &self.inner.table;
        let mut item = Item::with_capacity(8);
        item.insert(t.key_attribute().to_owned(), s(key.pk.clone()));
        if let Some(mi) = crate::table::index::meta_value(&key.pk) {
            item.insert(crate::table::META_ATTRIBUTE.into(), s(mi));
        }
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
    fn is_owner(&self, key: &StoredKey, item: &Item) -> bool {
        match &key.original {
            Some(original) => get_b(item, item::ORIGINAL_KEY) == Some(original.as_slice()),
            None => true,
        }
    }

    // ----- reads -------------------------------------------------------------------------

    /// The entry under `key`: `None` when it is missing, another key's, or (unless
    /// `include_expired`) expired.
    pub(crate) async fn get(
        &self,
        key: &StoredKey,
        include_expired: bool,
    ) -> Result<Option<Entry>> {
        match self.inner.table.get_item(&key.pk, None, false).await? {
            Some(item) => self.resolve(key, item, include_expired, false).await,
            None => Ok(None),
        }
    }

    /// [`get`](Store::get), but a payload in chunks is left unread (one GetItem, whatever the
    /// size): read it with [`read_deferred`](Store::read_deferred) or, in part, with
    /// [`read_chunk_range`](Store::read_chunk_range).
    pub(crate) async fn get_deferred(
        &self,
        key: &StoredKey,
        include_expired: bool,
    ) -> Result<Option<Entry>> {
        match self.inner.table.get_item(&key.pk, None, false).await? {
            Some(item) => self.resolve(key, item, include_expired, true).await,
            None => Ok(None),
        }
    }

    /// Reads the payload of an entry got with [`get_deferred`](Store::get_deferred) (following
    /// the value if it was replaced meanwhile). `None` when it disappeared.
    pub(crate) async fn read_deferred(
        &self,
        key: &StoredKey,
        entry: Entry,
        include_expired: bool,
    ) -> Result<Option<Entry>> {
        if !entry.is_deferred() {
            return Ok(Some(entry));
        }
        self.resolve(key, entry.item, include_expired, false).await
    }

    /// Whether `key` holds a live entry. Reads only the key and expiry attributes, which saves
    /// bandwidth; DynamoDB still bills the whole item's size.
    pub(crate) async fn has(&self, key: &StoredKey) -> Result<bool> {
        let item = self
            .inner
            .table
            .get_item(&key.pk, Some(&[item::EXPIRES, item::ORIGINAL_KEY]), false)
            .await?;
        Ok(item.is_some_and(|i| self.is_live(key, &i)))
    }

    /// The entries under several keys, in the order of the keys (a key asked for twice gets the
    /// same entry twice), read with BatchGetItem.
    pub(crate) async fn get_many(&self, keys: &[StoredKey]) -> Result<Vec<Option<Entry>>> {
        let items = self
            .inner
            .table
            .batch_get(keys.iter().map(|k| k.pk.clone()).collect(), false)
            .await?;
        let key_attr = self.inner.table.key_attribute();
        let by_pk: HashMap<String, Item> = items
            .into_iter()
            .filter_map(|i| Some((get_s(&i, key_attr)?.to_owned(), i)))
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(match by_pk.get(&key.pk) {
                Some(item) => self.resolve(key, item.clone(), false, false).await?,
                None => None,
            });
        }
        Ok(out)
    }

    /// Resolves a stored item into an entry: `None` when it is not this key's (live) entry;
    /// a payload in chunks is read in full unless `defer`.
    async fn resolve(
        &self,
        key: &StoredKey,
        item: Item,
        include_expired: bool,
        defer: bool,
    ) -> Result<Option<Entry>> {
        self.resolve_at(key, item, include_expired, defer, 0).await
    }

    /// [`resolve`](Store::resolve), `depth` replacements deep: a value that keeps being replaced
    /// by values stored otherwise (chunks, then an object, then chunks) is a miss after a few.
    async fn resolve_at(
        &self,
        key: &StoredKey,
        item: Item,
        include_expired: bool,
        defer: bool,
        depth: u8,
    ) -> Result<Option<Entry>> {
        match self.decode_item(key, item, include_expired, defer)? {
            Decoded::Absent => Ok(None),
            Decoded::Entry(entry) => Ok(Some(entry)),
            Decoded::Chunked(head) => match self.read_chunked(key, head, include_expired).await? {
                None => Ok(None),
                Some(chunks::ChunkedRead::Value(head, format, data)) => Ok(Some(Entry {
                    chunks: Some(chunks::head_attributes(&head)),
                    item: head,
                    payload: Some(Payload { format, data }),
                })),
                // Replaced by a value stored otherwise (inline, in chunks, as an object):
                // decoded afresh, a few times at most.
                Some(chunks::ChunkedRead::Replaced(_)) if depth >= 4 => {
                    tracing::warn!(key = %key.pk, "value kept changing while it was read; treated as a miss");
                    Ok(None)
                }
                Some(chunks::ChunkedRead::Replaced(item)) => {
                    Box::pin(self.resolve_at(key, item, include_expired, defer, depth + 1)).await
                }
            },
        }
    }

    /// Everything about a stored item that needs no further read: whose it is, whether it is
    /// live, its inline payload checked against its checksum. A payload in chunks is left to
    /// read (or, with `defer`, returned unread).
    pub(crate) fn decode_item(
        &self,
        key: &StoredKey,
        mut item: Item,
        include_expired: bool,
        defer: bool,
    ) -> Result<Decoded> {
        let usable = if include_expired {
            self.is_owner(key, &item)
        } else {
            self.is_live(key, &item)
        };
        if !usable {
            return Ok(Decoded::Absent);
        }
        let format = get_s(&item, item::FORMAT).map(str::to_owned);
        if let Some(data) = item::take_b(&mut item, item::VALUE) {
            let format = format
                .ok_or_else(|| crate::Error::corrupt(&key.pk, "the item has no value format"))?;
            check_sum(&key.pk, &item, &data)?;
            return Ok(Decoded::Entry(Entry {
                item,
                payload: Some(Payload { format, data }),
                chunks: None,
            }));
        }
        if item.contains_key(item::CHUNK_VERSION) || item.contains_key(item::OBJECT) {
            if !defer {
                return Ok(Decoded::Chunked(item));
            }
            return Ok(Decoded::Entry(Entry {
                chunks: Some(chunks::head_attributes(&item)),
                item,
                payload: None,
            }));
        }
        Ok(Decoded::Entry(Entry {
            item,
            payload: None,
            chunks: None,
        }))
    }

    // ----- writes ------------------------------------------------------------------------

    /// Writes an entry: the common attributes, `attrs`, and the payload inline or in chunks.
    /// Then removes the chunks of the entry it replaced. Returns false when `condition` did not
    /// hold (nothing was written).
    pub(crate) async fn put(
        &self,
        key: &StoredKey,
        attrs: Item,
        payload: Option<Payload>,
        stamp: Stamp,
        condition: Option<Expr>,
    ) -> Result<bool> {
        let mut written_chunks = None;
        let mut written_object = None;
        let item = match self.inline_item(key, attrs, payload, stamp) {
            Ok(item) => item,
            Err((mut item, data)) => {
                if let Some(objects) = self.inner.objects.as_ref() {
                    let head = self.write_object(objects, data).await?;
                    written_object = get_s(&head, item::OBJECT).map(str::to_owned);
                    item.extend(head);
                } else {
                    let head = self.write_chunks(key, &data, stamp).await?;
                    written_chunks = Some((head.version.clone(), head.count));
                    item.extend(head.into_attributes());
                }
                item
            }
        };
        let outcome = self.inner.table.put_item(item, condition, true).await;
        match outcome {
            Ok(Put::Written { old }) => {
                if let Some(old) = old {
                    self.remove_chunks_of(&old).await;
                }
                Ok(true)
            }
            Ok(Put::ConditionFailed) | Err(_) => {
                if let Some((version, count)) = written_chunks {
                    self.remove_chunks(&version, count).await;
                }
                // Only when the head is known not written: a failed call may still have
                // written it, and then its object must stay (vacuum reclaims it otherwise).
                if matches!(outcome, Ok(Put::ConditionFailed))
                    && let (Some(object), Some(objects)) = (written_object, &self.inner.objects)
                    && let Err(e) = objects.delete(&object).await
                {
                    tracing::warn!(error = %e, object, "could not delete an unused object; vacuum will");
                }
                outcome.map(|_| false)
            }
        }
    }

    /// The item an entry is written as, when its payload fits inline; else the item without
    /// its payload, and the payload to write in chunks.
    pub(crate) fn inline_item(
        &self,
        key: &StoredKey,
        attrs: Item,
        payload: Option<Payload>,
        stamp: Stamp,
    ) -> std::result::Result<Item, (Item, Vec<u8>)> {
        let mut item = self.base_item(key, stamp);
        item.extend(attrs);
        if let Some(Payload { format, data }) = payload {
            item.insert(item::FORMAT.into(), s(format));
            let overhead = item::item_size(&item) + item::VALUE.len() + INLINE_SUM_BYTES + 4;
            if overhead + data.len() > INLINE_LIMIT || self.wants_object(data.len()) {
                return Err((item, data));
            }
            item.insert(item::CHECKSUM.into(), b(inline_sum(&data)));
            item.insert(item::VALUE.into(), b(data));
        }
        Ok(item)
    }

    /// [`put`](Store::put) only if `when` holds. Returns false when it did not.
    pub(crate) async fn put_if(
        &self,
        key: &StoredKey,
        attrs: Item,
        payload: Option<Payload>,
        stamp: Stamp,
        when: Condition,
    ) -> Result<bool> {
        let condition = when.expr(self.inner.table.key_attribute());
        self.put(key, attrs, payload, stamp, Some(condition)).await
    }

    /// Writes several entries with one stamp, with BatchWriteItem (25 a call). A key given twice
    /// keeps its last entry. Entries too large for one item are written one by one.
    ///
    /// Batch writes cannot report the entries they replace, so chunks of a replaced large
    /// payload stay until their TTL or [`vacuum`](Store::vacuum) removes them.
    pub(crate) async fn put_many(
        &self,
        entries: Vec<(StoredKey, Item, Option<Payload>)>,
        stamp: Stamp,
    ) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let mut latest: HashMap<String, (StoredKey, Item, Option<Payload>)> = HashMap::new();
        for entry in entries {
            latest.insert(entry.0.pk.clone(), entry);
        }
        let mut batch = Vec::with_capacity(latest.len());
        let mut large = Vec::new();
        for (_, (key, attrs, payload)) in latest {
            let mut item = self.base_item(&key, stamp);
            item.extend(attrs);
            match payload {
                None => batch.push(Write::Put(item)),
                Some(Payload { format, data })
                    if item::item_size(&item) + data.len() + INLINE_SUM_BYTES + 16
                        <= INLINE_LIMIT
                        && !self.wants_object(data.len()) =>
                {
                    item.insert(item::FORMAT.into(), s(format));
                    item.insert(item::CHECKSUM.into(), b(inline_sum(&data)));
                    item.insert(item::VALUE.into(), b(data));
                    batch.push(Write::Put(item));
                }
                Some(payload) => large.push((key, payload)),
            }
        }
        self.inner.table.batch_write(batch).await?;
        futures::stream::iter(large)
            .map(|(key, payload)| async move {
                self.put(&key, Item::new(), Some(payload), stamp, None)
                    .await
            })
            .buffer_unordered(4)
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(())
    }

    /// Updates an existing entry's own attributes (`sets`) and its expiry, without rewriting
    /// its payload; a payload in chunks gets the new TTL on every chunk. `when` guards against
    /// updating an entry another process replaced meanwhile. Returns false when the entry is
    /// gone (or `when` did not hold). Returns nothing of the item, so a large one does not
    /// cross the network.
    pub(crate) async fn update(
        &self,
        key: &StoredKey,
        sets: Item,
        expires: Option<i64>,
        chunks: Option<&Item>,
        when: Option<Condition>,
    ) -> Result<bool> {
        // Chunks first: a chunk outliving its head is harmless, a head outliving its chunks is
        // a miss.
        if let Some(head) = chunks {
            self.retime_chunks(head, expires).await?;
        }
        let mut update = self.expiry_update(sets, expires);
        let condition = match when {
            None => "attribute_exists(#k)".to_owned(),
            Some(when) => {
                let c = when.expr(self.inner.table.key_attribute());
                // The condition names the key itself; DynamoDB refuses unused names.
                update.names.remove("#k");
                update.names.extend(c.names);
                update.values.extend(c.values);
                c.text
            }
        };
        self.inner
            .table
            .update_item_quiet(&key.pk, update, Some(&condition))
            .await
    }

    /// The expiry of the entry under `key`: `None` when there is none (or another key's),
    /// `Some(None)` when it never expires. Reads only the expiry (and original key).
    pub(crate) async fn expiry(&self, key: &StoredKey) -> Result<Option<Option<i64>>> {
        let item = self
            .inner
            .table
            .get_item(&key.pk, Some(&[item::EXPIRES, item::ORIGINAL_KEY]), false)
            .await?;
        Ok(match item {
            Some(item) if self.is_owner(key, &item) => match get_i64(&item, item::EXPIRES) {
                None => Some(None),
                Some(Ok(e)) => Some(Some(e)),
                Some(Err(reason)) => return Err(crate::Error::corrupt(&key.pk, reason)),
            },
            _ => None,
        })
    }

    /// Moves a live entry's expiry to `expires` (and its chunks' TTL with it). Returns false
    /// when there is no live entry (nothing is created).
    pub(crate) async fn extend(&self, key: &StoredKey, expires: i64) -> Result<bool> {
        let update = self
            .expiry_update(Item::new(), Some(expires))
            .value(":now", n(self.now()));
        let condition = "attribute_exists(#k) AND (attribute_not_exists(#e) OR #e > :now)";
        match self
            .inner
            .table
            .update_item(&key.pk, update, Some(condition))
            .await?
        {
            Some(head) => {
                self.retime_chunks(&head, Some(expires)).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives an entry a new expiry (and its chunks the new TTL), leaving everything else as it
    /// is. Returns false when the entry is gone.
    pub(crate) async fn set_expiry(&self, key: &StoredKey, expires: Option<i64>) -> Result<bool> {
        let update = self.expiry_update(Item::new(), expires);
        match self
            .inner
            .table
            .update_item(&key.pk, update, Some("attribute_exists(#k)"))
            .await?
        {
            Some(head) => {
                self.retime_chunks(&head, expires).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `SET` of `sets` and the expiry attributes (or their `REMOVE`, for never).
    fn expiry_update(&self, sets: Item, expires: Option<i64>) -> Expr {
        let t = &self.inner.table;
        let mut e = Expr::default().name("#k", t.key_attribute());
        let mut set = Vec::new();
        let mut remove = Vec::new();
        for (i, (name, value)) in sets.into_iter().enumerate() {
            set.push(format!("#a{i} = :a{i}"));
            e = e
                .name(&format!("#a{i}"), &name)
                .value(&format!(":a{i}"), value);
        }
        e = e.name("#e", item::EXPIRES).name("#t", t.ttl_attribute());
        match expires {
            Some(exp) => {
                set.push("#e = :e".into());
                set.push("#t = :t".into());
                e = e.value(":e", n(exp)).value(":t", n(self.ttl_seconds(exp)));
            }
            None => remove.extend(["#e".to_owned(), "#t".to_owned()]),
        }
        let mut clauses = Vec::new();
        if !set.is_empty() {
            clauses.push(format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            clauses.push(format!("REMOVE {}", remove.join(", ")));
        }
        e.text = clauses.join(" ");
        e
    }

    /// Adds `member` to the string-set attribute `set` of an entry, if `when` holds. Returns
    /// false when it did not.
    pub(crate) async fn add_to_set(
        &self,
        key: &StoredKey,
        set: &str,
        member: &str,
        when: Condition,
    ) -> Result<bool> {
        let c = when.expr(self.inner.table.key_attribute());
        let mut update = Expr::new("ADD #set :member")
            .name("#set", set)
            .value(":member", AttributeValue::Ss(vec![member.to_owned()]));
        update.names.extend(c.names);
        update.values.extend(c.values);
        self.inner
            .table
            .update_item_quiet(&key.pk, update, Some(&c.text))
            .await
    }

    /// Deletes an entry and returns it as it was, if it was live: one DeleteItem, so no other
    /// caller can take it too. A payload in chunks is read before its chunks are removed.
    pub(crate) async fn take(&self, key: &StoredKey) -> Result<Option<Entry>> {
        // Conditional, so that of concurrent takers exactly one deletes the item on every
        // engine: DynamoDB Local may hand the old item to several unconditional deletes.
        let exists = Expr::new("attribute_exists(#k)").name("#k", self.inner.table.key_attribute());
        let Put::Written { old: Some(old) } = self
            .inner
            .table
            .delete_item(&key.pk, Some(exists), true)
            .await?
        else {
            return Ok(None);
        };
        let taken = match self.decode_item(key, old.clone(), false, false) {
            Ok(Decoded::Absent) => Ok(None),
            Ok(Decoded::Entry(entry)) => Ok(Some(entry)),
            Ok(Decoded::Chunked(head)) if head.contains_key(item::OBJECT) => {
                self.read_object_of(key, &head).await.map(|payload| {
                    Some(Entry {
                        chunks: Some(chunks::head_attributes(&head)),
                        item: head,
                        payload: Some(payload?),
                    })
                })
            }
            Ok(Decoded::Chunked(head)) => self.read_chunks_of(key, &head).await.map(|payload| {
                Some(Entry {
                    chunks: Some(chunks::head_attributes(&head)),
                    item: head,
                    payload: Some(payload),
                })
            }),
            Err(e) => Err(e),
        };
        self.remove_chunks_of(&old).await;
        taken
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

    /// Deletes several entries with BatchWriteItem (25 a call). Chunks of large payloads stay
    /// until their TTL or [`vacuum`](Store::vacuum) removes them.
    pub(crate) async fn remove_many(&self, keys: Vec<StoredKey>) -> Result<()> {
        let mut pks: Vec<String> = keys.into_iter().map(|k| k.pk).collect();
        pks.sort_unstable();
        pks.dedup();
        self.inner
            .table
            .batch_write(pks.into_iter().map(Write::Delete).collect())
            .await
    }
}
