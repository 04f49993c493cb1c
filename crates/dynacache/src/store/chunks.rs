//! Values over DynamoDB's 400 KB item limit.
//!
//! A large value is split into chunk items, all written before the small head item that names
//! them (by a random version id, a count, the chunk size, and a SHA-256 of the whole payload;
//! each chunk carries a SHA-256 of its own bytes, so a part can be read and checked alone).
//! Readers follow the head, so they see either the old value or the new one, never a mix:
//!
//! - a writer replacing a value writes new chunks under a new version, then swaps the head, then
//!   deletes the chunks of the head it replaced;
//! - a reader that finds a chunk missing (its version was just replaced and cleaned up) reads the
//!   head again and follows the new version;
//! - an interrupted write leaves only unreferenced chunks: the old head still names the old, intact
//!   chunks. Unreferenced chunks carry the value's TTL, and [`Store::vacuum`] removes them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::key::{StoredKey, chunk_key, chunk_prefix};
use super::{Payload, Stamp, Store};
use crate::codec::checksum;
use crate::error::{Error, Result};
use crate::table::item::{self, Item, b, get_b, get_i64, get_s, n, s, take_b};
use crate::table::{ScanSpec, Write};

/// How many times a reader follows a head that changed under it before it calls it a miss.
const READ_ATTEMPTS: usize = 6;
/// Chunks fetched per BatchGetItem call (about 2.8 MB), several calls in flight.
const CHUNKS_PER_CALL: usize = 8;
/// Chunks younger than this may belong to a write in progress; vacuum leaves them.
const VACUUM_MIN_AGE: Duration = Duration::from_secs(15 * 60);

/// Chunks read per call when a value is streamed (about 700 KB): with one part waiting for
/// the reader and one being read, a stream holds a few MB whatever the value's size.
const STREAMED_CHUNKS_PER_CALL: u32 = 2;
/// Chunk batches in flight at once for one read (each at most `CHUNKS_PER_CALL` chunks).
const CHUNK_CALLS_IN_FLIGHT: usize = 4;
/// Bytes of a chunk's own SHA-256 kept in the chunk item.
pub(super) const CHUNK_SUM_BYTES: usize = 16;

/// What a head item says about its chunks.
pub(crate) struct Head {
    pub(super) version: String,
    pub(crate) count: u32,
    size: usize,
    sum: Vec<u8>,
    /// The size of every chunk but the last (absent from heads written by older versions).
    chunk_size: Option<usize>,
}

impl Head {
    /// The payload size it declares.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(super) fn into_attributes(self) -> Item {
        let mut attrs = Item::from([
            (item::CHUNK_VERSION.to_owned(), s(self.version)),
            (item::CHUNKS.to_owned(), n(self.count)),
            (item::SIZE.to_owned(), n(self.size)),
            (item::CHECKSUM.to_owned(), b(self.sum)),
        ]);
        if let Some(cz) = self.chunk_size {
            attrs.insert(item::CHUNK_SIZE.to_owned(), n(cz));
        }
        attrs
    }

    /// Reads and checks a head: its chunk count must agree with its size and chunk size, and
    /// its size must be within `max_size`, so a damaged or forged head cannot make a reader
    /// fetch or allocate more than a real value of that size would need.
    pub(crate) fn from_item(pk: &str, item: &Item, max_size: usize) -> Result<Option<Head>> {
        let Some(version) = get_s(item, item::CHUNK_VERSION) else {
            return Ok(None);
        };
        let bad = |what: &str| Error::corrupt(pk, format!("chunked value: bad {what}"));
        let count = match get_i64(item, item::CHUNKS) {
            Some(Ok(c)) if (1..=1_000_000).contains(&c) => c as u32,
            _ => return Err(bad("chunk count")),
        };
        let size = match get_i64(item, item::SIZE) {
            Some(Ok(s)) if s >= 1 => s as usize,
            _ => return Err(bad("size")),
        };
        if size > max_size {
            return Err(Error::corrupt(
                pk,
                format!("value claims {size} bytes, over the {max_size} byte limit"),
            ));
        }
        let chunk_size = match get_i64(item, item::CHUNK_SIZE) {
            None => None,
            Some(Ok(c)) if (1..=super::INLINE_LIMIT as i64).contains(&c) => Some(c as usize),
            Some(_) => return Err(bad("chunk size")),
        };
        let consistent = match chunk_size {
            Some(cz) => size.div_ceil(cz) == count as usize,
            // Older heads: every chunk holds at least one byte and at most an item's worth.
            None => (count as usize) <= size && size <= count as usize * super::INLINE_LIMIT,
        };
        if !consistent {
            return Err(bad("chunk count for its size"));
        }
        let sum = get_b(item, item::CHECKSUM)
            .ok_or_else(|| bad("checksum"))?
            .to_vec();
        Ok(Some(Head {
            version: version.to_owned(),
            count,
            size,
            sum,
            chunk_size,
        }))
    }
}

/// What reading a chunked value found.
pub(super) enum ChunkedRead {
    /// The head followed, the payload's format, and the payload.
    Value(Item, String, Vec<u8>),
    /// The item that replaced the head meanwhile, with its value inline (or none).
    Replaced(Item),
}

/// The head attributes that name a payload's chunks (to re-date them, or read part of them).
pub(super) fn head_attributes(head: &Item) -> Item {
    [
        item::CHUNK_VERSION,
        item::CHUNKS,
        item::SIZE,
        item::CHECKSUM,
        item::CHUNK_SIZE,
        item::FORMAT,
        item::OBJECT,
        item::OBJECT_ETAG,
        item::OBJECT_PARTS,
    ]
    .into_iter()
    .filter_map(|k| Some((k.to_owned(), head.get(k)?.clone())))
    .collect()
}

pub(super) fn chunk_sum(piece: &[u8]) -> Vec<u8> {
    let mut sum = checksum(piece);
    sum.truncate(CHUNK_SUM_BYTES);
    sum
}

impl Store {
    /// Writes a payload's chunks under a new version and returns the head attributes naming them.
    pub(super) async fn write_chunks(
        &self,
        key: &StoredKey,
        data: &[u8],
        stamp: Stamp,
    ) -> Result<Head> {
        let version = format!("{:032x}", fastrand::u128(..));
        let table = &self.inner.table;
        let ns = &self.inner.namespace;
        let mut writes = Vec::new();
        let mut count = 0u32;
        for (i, piece) in data.chunks(self.inner.chunk_size).enumerate() {
            let mut chunk = Item::from([
                (
                    table.key_attribute().to_owned(),
                    s(chunk_key(ns, &version, i as u32)),
                ),
                (item::HEAD.to_owned(), s(key.pk.clone())),
                (item::DATA.to_owned(), b(piece.to_vec())),
                (item::CHECKSUM.to_owned(), b(chunk_sum(piece))),
                (item::WRITTEN.to_owned(), n(stamp.now)),
            ]);
            if let Some(exp) = stamp.expires {
                chunk.insert(table.ttl_attribute().to_owned(), n(self.ttl_seconds(exp)));
            }
            writes.push(Write::Put(chunk));
            count += 1;
        }
        let head = Head {
            version,
            count,
            size: data.len(),
            sum: checksum(data),
            chunk_size: Some(self.inner.chunk_size),
        };
        if let Err(e) = table.batch_write(writes).await {
            self.remove_chunks(&head.version, head.count).await;
            return Err(e);
        }
        Ok(head)
    }

    /// Reads a chunked value from its head, following the head if it is replaced meanwhile.
    /// Returns the head followed, the format and the payload; the item that replaced it when
    /// that is not in chunks (a small value written meanwhile); or `None` when the value
    /// disappeared or expired.
    pub(super) async fn read_chunked(
        &self,
        key: &StoredKey,
        mut head_item: Item,
        include_expired: bool,
    ) -> Result<Option<ChunkedRead>> {
        if head_item.contains_key(item::OBJECT) {
            return self
                .read_object_value(key, head_item, include_expired)
                .await;
        }
        let table = &self.inner.table;
        let mut consistent = false;
        for _ in 0..READ_ATTEMPTS {
            let Some(head) = Head::from_item(&key.pk, &head_item, self.inner.max_value_size)?
            else {
                return Err(Error::corrupt(&key.pk, "the item has no value"));
            };
            let format = get_s(&head_item, item::FORMAT)
                .ok_or_else(|| Error::corrupt(&key.pk, "the item has no value format"))?
                .to_owned();
            if let Some(data) = self
                .fetch_chunks(&key.pk, &head, 0..head.count, consistent, false)
                .await?
            {
                if data.len() != head.size || checksum(&data) != head.sum {
                    return Err(Error::corrupt(
                        &key.pk,
                        "chunks do not match the checksum in the head",
                    ));
                }
                return Ok(Some(ChunkedRead::Value(head_item, format, data)));
            }
            // A chunk was missing: the value was replaced (or, on an eventually consistent
            // read, the chunks are not visible yet). Read the head again, strongly. Missing
            // again under the same head, strongly read: the chunks are gone, and the value is
            // damaged (not a miss, which would hide it while `has` says it is there).
            if consistent {
                return Err(Error::corrupt(
                    &key.pk,
                    format!("chunks of version {} are missing", head.version),
                ));
            }
            consistent = true;
            let next = match table.get_item(&key.pk, None, true).await? {
                Some(next) if include_expired && self.is_owner(key, &next) => next,
                Some(next) if self.is_live(key, &next) => next,
                _ => return Ok(None),
            };
            if !next.contains_key(item::CHUNK_VERSION) {
                // A value inline, or in an object store: decoded afresh by the caller.
                return Ok(Some(ChunkedRead::Replaced(next)));
            }
            if get_s(&next, item::CHUNK_VERSION) != Some(head.version.as_str()) {
                // Replaced meanwhile: follow the new value (eventually consistent again).
                consistent = false;
            }
            head_item = next;
        }
        tracing::warn!(key = %key.pk, "value kept changing while it was read; treated as a miss");
        Ok(None)
    }

    /// The payload a head names, read once (strongly): for a head just deleted, whose chunks
    /// are about to go. Missing chunks are `Corrupt`.
    pub(super) async fn read_chunks_of(
        &self,
        key: &StoredKey,
        head_item: &Item,
    ) -> Result<Payload> {
        let Some(head) = Head::from_item(&key.pk, head_item, self.inner.max_value_size)? else {
            return Err(Error::corrupt(&key.pk, "the item has no value"));
        };
        let format = get_s(head_item, item::FORMAT)
            .ok_or_else(|| Error::corrupt(&key.pk, "the item has no value format"))?
            .to_owned();
        match self
            .fetch_chunks(&key.pk, &head, 0..head.count, true, false)
            .await?
        {
            Some(data) if data.len() == head.size && checksum(&data) == head.sum => {
                Ok(Payload { format, data })
            }
            Some(_) => Err(Error::corrupt(
                &key.pk,
                "chunks do not match the checksum in the head",
            )),
            None => Err(Error::corrupt(&key.pk, "chunks are missing")),
        }
    }

    /// The bytes `start..=end` of a payload stored in chunks, reading only the chunks that hold
    /// them, each checked against its own checksum (or of one stored as an object, only the
    /// parts of it they are in, each checked against its part checksum; see
    /// [`fetch_object_range`](Store::fetch_object_range)). `None` when a chunk or the object is
    /// gone or does not match (the value was replaced meanwhile) or the head predates recorded
    /// chunk sizes: the caller then reads the whole value.
    pub(crate) async fn read_chunk_range(
        &self,
        key: &StoredKey,
        head: &Item,
        start: u64,
        end: u64,
    ) -> Result<Option<Vec<u8>>> {
        // An object: only the parts the range is in (the whole, when its head has no part
        // checksums), only the range kept.
        if let Some(object) =
            super::objects::ObjectHead::from_item(&key.pk, head, self.inner.max_value_size)?
        {
            // Boxed: inlined, this future's layout is too deep for the callers' async types.
            return Box::pin(self.fetch_object_range(
                &key.pk,
                &object,
                start,
                end.saturating_add(1),
            ))
            .await;
        }
        let Some(head) = Head::from_item(&key.pk, head, self.inner.max_value_size)? else {
            return Ok(None);
        };
        let Some(cz) = head.chunk_size else {
            return Ok(None);
        };
        if start > end || end >= head.size as u64 {
            return Ok(None);
        }
        let first = (start / cz as u64) as u32;
        let last = (end / cz as u64) as u32;
        let Some(data) = self
            .fetch_chunks(&key.pk, &head, first..last + 1, false, true)
            .await?
        else {
            return Ok(None);
        };
        let offset = first as u64 * cz as u64;
        let from = (start - offset) as usize;
        let to = (end - offset) as usize;
        match data.get(from..=to) {
            Some(part) => Ok(Some(part.to_vec())),
            None => Err(Error::corrupt(
                &key.pk,
                "chunks shorter than their head says",
            )),
        }
    }

    /// A chunked payload as a stream of parts, read two chunks at a time (one part read
    /// ahead, so memory stays at a few MB whatever the size): each chunk is
    /// checked against its own checksum before its bytes are sent, and the whole against the
    /// head's digest at the end. The stream ends with an error, never early and never with
    /// wrong bytes, when a chunk is missing (the value was replaced meanwhile) or damaged.
    /// `None` for a head without chunks. Runs on a task of its own; dropping the stream stops
    /// it.
    pub(crate) fn stream_chunks(
        &self,
        key: &StoredKey,
        head: &Item,
    ) -> Result<Option<(u64, tokio::sync::mpsc::Receiver<Result<bytes::Bytes>>)>> {
        if let Some(object) =
            super::objects::ObjectHead::from_item(&key.pk, head, self.inner.max_value_size)?
        {
            return self.stream_object(key, object).map(Some);
        }
        let Some(head) = Head::from_item(&key.pk, head, self.inner.max_value_size)? else {
            return Ok(None);
        };
        let size = head.size as u64;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let store = self.clone();
        let pk = key.pk.clone();
        tokio::spawn(async move {
            if let Err(e) = store.send_chunks(&pk, head, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Some((size, rx)))
    }

    /// Sends a head's chunks down `tx` in order, batch by batch (see
    /// [`stream_chunks`](Store::stream_chunks)).
    async fn send_chunks(
        &self,
        pk: &str,
        mut head: Head,
        tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes>>,
    ) -> Result<()> {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        let mut read = 0usize;
        let mut next = 0u32;
        let mut follows = 0;
        // The last part is held back until the whole digest checks: once a reader has all the
        // bytes its `Content-Length` announced, a later error could not reach it.
        let mut held: Option<bytes::Bytes> = None;
        while next < head.count {
            let end = head
                .count
                .min(next.saturating_add(STREAMED_CHUNKS_PER_CALL));
            let mut part = self.fetch_chunks(pk, &head, next..end, false, true).await?;
            if part.is_none() {
                // Not visible yet to an eventually consistent read, or replaced meanwhile.
                part = self.fetch_chunks(pk, &head, next..end, true, true).await?;
            }
            let Some(part) = part else {
                // Replaced: the same bytes stored again (a refresh of an unchanged response)
                // are followed from where the stream is; other bytes cannot be.
                follows += 1;
                match self.same_payload_again(pk, &head).await? {
                    Some(again) if follows < READ_ATTEMPTS => {
                        head = again;
                        continue;
                    }
                    _ => {
                        return Err(Error::corrupt(
                            pk,
                            "a chunk is gone: the value was replaced while it was streamed",
                        ));
                    }
                }
            };
            digest.update(&part);
            read += part.len();
            if let Some(ready) = held.replace(bytes::Bytes::from(part))
                && tx.send(Ok(ready)).await.is_err()
            {
                return Ok(()); // the reader has gone
            }
            next = end;
        }
        if read != head.size || digest.finalize().as_slice() != head.sum.as_slice() {
            return Err(Error::corrupt(
                pk,
                "chunks do not match their head's digest",
            ));
        }
        if let Some(last) = held {
            let _ = tx.send(Ok(last)).await;
        }
        Ok(())
    }

    /// The size of the payload a head names, when it can be streamed: a valid head with a
    /// recorded chunk size (heads written by old versions have none).
    pub(crate) fn streamable_size(&self, key: &StoredKey, head: &Item) -> Result<Option<u64>> {
        if let Some(object) =
            super::objects::ObjectHead::from_item(&key.pk, head, self.inner.max_value_size)?
        {
            return Ok(Some(object.size as u64));
        }
        Ok(Head::from_item(&key.pk, head, self.inner.max_value_size)?
            .filter(|h| h.chunk_size.is_some())
            .map(|h| h.size as u64))
    }

    /// The head now stored under `pk`, when it names other chunks of the very same payload as
    /// `head` (same size, chunk size and digest).
    async fn same_payload_again(&self, pk: &str, head: &Head) -> Result<Option<Head>> {
        let Some(item) = self.inner.table.get_item(pk, None, true).await? else {
            return Ok(None);
        };
        let Some(again) = Head::from_item(pk, &item, self.inner.max_value_size)? else {
            return Ok(None);
        };
        // Chunk boundaries must be the same for the stream to go on at the same index.
        let same = again.version != head.version
            && again.size == head.size
            && again.chunk_size.is_some()
            && again.chunk_size == head.chunk_size
            && again.sum == head.sum;
        Ok(same.then_some(again))
    }

    /// Chunks `range` of a version in order, or `None` if any is missing. Fetches a few
    /// batches at a time, checks each chunk's own checksum when `check_each` (parts read
    /// alone; a whole payload is checked against the head's digest instead, one SHA-256 pass
    /// rather than two), and never assembles more than the head's size.
    async fn fetch_chunks(
        &self,
        pk: &str,
        head: &Head,
        range: std::ops::Range<u32>,
        consistent: bool,
        check_each: bool,
    ) -> Result<Option<Vec<u8>>> {
        let ns = &self.inner.namespace;
        let table = &self.inner.table;
        let key_attr = table.key_attribute();
        let count = range.end.saturating_sub(range.start) as usize;
        let expected = head
            .chunk_size
            .map_or(head.size, |cz| count.saturating_mul(cz).min(head.size));
        let mut data = Vec::with_capacity(expected);
        // Batches are asked for a few at a time, in order, and the read stops at the first
        // missing chunk: a head naming chunks that are not there (a forged count, a value
        // replaced meanwhile) costs a few calls, not one per chunk it names. Calls are made as
        // they are needed, never all up front (no closure inside a stream: it keeps this
        // future `Send` for every caller).
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut groups = std::collections::VecDeque::new();
        let mut next = range.start;
        loop {
            while in_flight.len() < CHUNK_CALLS_IN_FLIGHT && next < range.end {
                let end = range.end.min(next.saturating_add(CHUNKS_PER_CALL as u32));
                let keys: Vec<String> = (next..end)
                    .map(|i| chunk_key(ns, &head.version, i))
                    .collect();
                in_flight.push_back(table.batch_get_sized(
                    keys.clone(),
                    consistent,
                    CHUNKS_PER_CALL,
                ));
                groups.push_back(keys);
                next = end;
            }
            let Some(page) = in_flight.try_next().await? else {
                break;
            };
            let keys: Vec<String> = groups.pop_front().unwrap_or_default();
            let mut by_key: HashMap<String, Item> = page
                .into_iter()
                .filter_map(|i| Some((get_s(&i, key_attr)?.to_owned(), i)))
                .collect();
            for k in &keys {
                let Some(mut chunk) = by_key.remove(k) else {
                    return Ok(None);
                };
                let Some(piece) = take_b(&mut chunk, item::DATA) else {
                    return Ok(None);
                };
                if check_each && get_b(&chunk, item::CHECKSUM) != Some(chunk_sum(&piece).as_slice())
                {
                    return Err(Error::corrupt(pk, "a chunk does not match its checksum"));
                }
                if data.len() + piece.len() > head.size {
                    return Err(Error::corrupt(pk, "chunks longer than their head says"));
                }
                data.extend_from_slice(&piece);
            }
        }
        Ok(Some(data))
    }

    /// Deletes the chunks named by a replaced or deleted head, if it had any. Failures are
    /// logged, not returned: the write they follow has succeeded, and the chunks' TTL or
    /// [`vacuum`](Store::vacuum) reclaims them.
    pub(super) async fn remove_chunks_of(&self, old: &Item) {
        self.remove_object_of(old).await;
        if let (Some(version), Some(Ok(count))) =
            (get_s(old, item::CHUNK_VERSION), get_i64(old, item::CHUNKS))
            && (1..=1_000_000).contains(&count)
            && self.names_real_chunks(version, count as u32).await
        {
            self.remove_chunks(version, count as u32).await;
        }
    }

    /// Whether a head naming many chunks names chunks that exist: its last one is there. A
    /// forged or damaged head claiming a million chunks must not turn into a million deletes or
    /// updates; if its last chunk is missing, the chunks it names are left to their TTL and
    /// [`vacuum`](Store::vacuum). One small read, only for heads naming more than a few chunks.
    async fn names_real_chunks(&self, version: &str, count: u32) -> bool {
        const CHECK_ABOVE: u32 = 32;
        if count <= CHECK_ABOVE {
            return true;
        }
        let last = chunk_key(&self.inner.namespace, version, count - 1);
        matches!(
            self.inner.table.get_item(&last, Some(&[]), true).await,
            Ok(Some(_))
        )
    }

    /// Gives the chunks named by `head` the TTL of a new expiry (`None`: never), after the
    /// head's own expiry changed without a rewrite. Only the TTL attribute is updated; chunks
    /// that are gone (their value was replaced meanwhile) are skipped.
    pub(super) async fn retime_chunks(&self, head: &Item, expires: Option<i64>) -> Result<()> {
        let (Some(version), Some(Ok(count))) = (
            get_s(head, item::CHUNK_VERSION),
            get_i64(head, item::CHUNKS),
        ) else {
            return Ok(());
        };
        if !(1..=1_000_000).contains(&count) || !self.names_real_chunks(version, count as u32).await
        {
            return Ok(());
        }
        let table = &self.inner.table;
        let ns = &self.inner.namespace;
        let update = || {
            let e = match expires {
                Some(exp) => {
                    crate::table::Expr::new("SET #t = :t").value(":t", n(self.ttl_seconds(exp)))
                }
                None => crate::table::Expr::new("REMOVE #t"),
            };
            e.name("#t", table.ttl_attribute()).name("#d", item::DATA)
        };
        futures::stream::iter(0..count as u32)
            .map(|i| {
                let key = chunk_key(ns, version, i);
                let update = update();
                async move {
                    table
                        .update_item_quiet(&key, update, Some("attribute_exists(#d)"))
                        .await
                }
            })
            .buffer_unordered(CHUNKS_PER_CALL)
            .try_collect::<Vec<bool>>()
            .await
            .map(|_| ())
    }

    pub(super) async fn remove_chunks(&self, version: &str, count: u32) {
        let ns = &self.inner.namespace;
        let deletes = (0..count)
            .map(|i| Write::Delete(chunk_key(ns, version, i)))
            .collect();
        if let Err(e) = self.inner.table.batch_write(deletes).await {
            tracing::warn!(error = %e, version, "could not delete replaced chunks; vacuum will");
        }
    }

    /// Removes chunk items that no value refers to any more: left by interrupted writes, or by
    /// [`put_many`](Store::put_many)/[`remove_many`](Store::remove_many) replacing or deleting a
    /// large value. Chunks written in the last 15 minutes are left alone, as they may belong to
    /// a write in progress. With an object store, objects no entry names (older than 15
    /// minutes too) are deleted as well. Returns how many chunk items and objects were deleted.
    pub(crate) async fn vacuum(&self) -> Result<u64> {
        let table = &self.inner.table;
        let key_attr = table.key_attribute().to_owned();
        let cutoff = self.now() - VACUUM_MIN_AGE.as_millis() as i64;
        let mut chunks = table.scan(ScanSpec {
            prefixes: vec![chunk_prefix(&self.inner.namespace)],
            projection: Some(vec![item::HEAD, item::WRITTEN]),
        });
        let mut live_versions: HashMap<String, Option<String>> = HashMap::new();
        let mut orphans = Vec::new();
        let mut checked: HashSet<String> = HashSet::new();
        while let Some(chunk) = chunks.try_next().await? {
            let Some(pk) = get_s(&chunk, &key_attr) else {
                continue;
            };
            let written = get_i64(&chunk, item::WRITTEN)
                .and_then(|w| w.ok())
                .unwrap_or(0);
            if written > cutoff {
                continue;
            }
            let version = pk.split('!').nth(1).unwrap_or_default().to_owned();
            // A chunk that names no head belongs to nothing: an orphan.
            let Some(head_pk) = get_s(&chunk, item::HEAD).filter(|h| !h.is_empty()) else {
                orphans.push(pk.to_owned());
                continue;
            };
            let head_pk = head_pk.to_owned();
            if !checked.contains(&head_pk) {
                let head = table
                    .get_item(&head_pk, Some(&[item::CHUNK_VERSION]), true)
                    .await?;
                let current = head
                    .as_ref()
                    .and_then(|h| get_s(h, item::CHUNK_VERSION))
                    .map(str::to_owned);
                live_versions.insert(head_pk.clone(), current);
                checked.insert(head_pk.clone());
            }
            if live_versions.get(&head_pk).cloned().flatten().as_deref() != Some(version.as_str()) {
                orphans.push(pk.to_owned());
            }
        }
        let removed = orphans.len() as u64;
        table
            .batch_write(orphans.into_iter().map(Write::Delete).collect())
            .await?;
        Ok(removed + self.vacuum_objects(cutoff).await?)
    }
}
