//! Payloads in an object store (see [`crate::objects`]).
//!
//! The entry's item is the head: it names the object (`ob`, and `oe`, its ETag), and carries the
//! payload's format, size and whole SHA-256 (`f`, `sz`, `cs`), so the object is bound to its
//! entry; for an object of more than one [`OBJECT_PART`], also a checksum of each part (`op`),
//! so that a range is read and checked alone (a range of intact parts of an object damaged
//! elsewhere is served: its bytes are the right ones). Object keys are unique per write, so
//! the same rules as for chunks keep readers right:
//!
//! - a writer uploads the object first, then writes the head, then deletes the object of the
//!   head it replaced; a failed or refused head write deletes the new object again, so no entry
//!   ever names an object that was not fully stored;
//! - a reader that finds the object missing, or not matching the head's size and digest, reads
//!   the head again (strongly) and follows a new one; the same head again is a miss, and the
//!   entry is deleted (only if it still names that object), never served;
//! - objects no head names (a writer that crashed between the upload and the head, a batch write
//!   or an expiry that could not delete them) are removed by [`Store::vacuum`] once they are older
//!   than a write can take.

use std::collections::HashSet;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::chunks::{CHUNK_SUM_BYTES, ChunkedRead, chunk_sum};
use super::key::{StoredKey, entry_prefixes};
use super::{Payload, Store};
use crate::error::{Error, Result};
use crate::objects::ObjectStore;
use crate::table::item::{self, Item, b, get_b, get_i64, get_s, n, s};
use crate::table::{Expr, ScanSpec};

/// How many times a reader follows a head that changed under it before it calls it a miss.
const READ_ATTEMPTS: usize = 6;

/// The size of the parts an object's head keeps checksums of, so that a range is read and
/// checked alone: a range is read with less than 2 MiB more than itself.
pub(crate) const OBJECT_PART: usize = 1 << 20;

/// The part checksums of a payload, each a chunk's checksum of its part, concatenated (empty
/// when it is one part: the whole digest covers it).
fn part_sums(data: &[u8]) -> Vec<u8> {
    if data.len() <= OBJECT_PART {
        return Vec::new();
    }
    data.chunks(OBJECT_PART).flat_map(chunk_sum).collect()
}

/// What a head item says about its object.
pub(crate) struct ObjectHead {
    pub(crate) key: String,
    etag: Option<String>,
    pub(crate) size: usize,
    sum: Vec<u8>,
    /// The checksum of each [`OBJECT_PART`], when the head has them all.
    parts: Option<Vec<u8>>,
}

impl ObjectHead {
    /// Reads and checks a head naming an object (`None`: it names none).
    pub(crate) fn from_item(pk: &str, item: &Item, max_size: usize) -> Result<Option<ObjectHead>> {
        let key = match (item.get(item::OBJECT), get_s(item, item::OBJECT)) {
            (None, _) => return Ok(None),
            (Some(_), Some(key)) => key,
            (Some(_), None) => return Err(Error::corrupt(pk, "stored object: bad key")),
        };
        let size = match get_i64(item, item::SIZE) {
            Some(Ok(s)) if s >= 1 => s as usize,
            _ => return Err(Error::corrupt(pk, "stored object: bad size")),
        };
        if size > max_size {
            return Err(Error::corrupt(
                pk,
                format!("value claims {size} bytes, over the {max_size} byte limit"),
            ));
        }
        let sum = match get_b(item, item::CHECKSUM) {
            Some(sum) if sum.len() == 32 => sum.to_vec(),
            _ => return Err(Error::corrupt(pk, "stored object: bad checksum")),
        };
        // Part checksums of another shape (an older writer, a damaged head) are not used:
        // ranges are then read through the whole object.
        let parts = get_b(item, item::OBJECT_PARTS)
            .filter(|p| p.len() == size.div_ceil(OBJECT_PART) * CHUNK_SUM_BYTES)
            .map(<[u8]>::to_vec);
        Ok(Some(ObjectHead {
            key: key.to_owned(),
            etag: get_s(item, item::OBJECT_ETAG).map(str::to_owned),
            size,
            sum,
            parts,
        }))
    }
}

/// The id of an entry's stored payload, when it is not inline: its chunk version or its object
/// key. Two reads of an entry with the same id read the same bytes.
pub(crate) fn payload_id(item: &Item) -> Option<&str> {
    get_s(item, item::CHUNK_VERSION).or_else(|| get_s(item, item::OBJECT))
}

impl Store {
    pub(crate) fn objects(&self) -> Option<&ObjectStore> {
        self.inner.objects.as_ref()
    }

    /// Whether a payload of this size goes to the object store.
    pub(super) fn wants_object(&self, len: usize) -> bool {
        self.inner
            .objects
            .as_ref()
            .is_some_and(|o| len >= o.threshold())
    }

    /// Uploads a payload as a new object; returns the head attributes that name it.
    pub(super) async fn write_object(&self, objects: &ObjectStore, data: Vec<u8>) -> Result<Item> {
        let key = objects.new_key(&self.inner.namespace);
        let size = data.len();
        let sum = crate::codec::checksum(&data);
        let parts = part_sums(&data);
        let etag = objects.put(&key, Bytes::from(data)).await?;
        let mut attrs = Item::from([
            (item::OBJECT.to_owned(), s(key)),
            (item::SIZE.to_owned(), n(size)),
            (item::CHECKSUM.to_owned(), b(sum)),
        ]);
        if !parts.is_empty() {
            attrs.insert(item::OBJECT_PARTS.to_owned(), b(parts));
        }
        if let Some(etag) = etag {
            attrs.insert(item::OBJECT_ETAG.to_owned(), s(etag));
        }
        Ok(attrs)
    }

    /// The object store, or the error of an entry naming an object with none configured.
    pub(super) fn objects_for(&self, pk: &str) -> Result<&ObjectStore> {
        self.inner.objects.as_ref().ok_or_else(|| {
            Error::config(format!(
                "entry {pk:?} keeps its value in an object store, and this cache has none \
                 configured (give it the same object store as the writer)"
            ))
        })
    }

    /// The whole object a head names, checked against the head: `None` when it is missing,
    /// replaced, truncated or longer, or its digest does not match.
    pub(super) async fn fetch_object(
        &self,
        pk: &str,
        head: &ObjectHead,
    ) -> Result<Option<Vec<u8>>> {
        // Boxed: inlined, this future's layout is too deep for the callers' async types.
        Box::pin(self.fetch_object_range(pk, head, 0, head.size as u64)).await
    }

    /// The bytes `start..end` of the object a head names: `None` as for
    /// [`fetch_object`](Store::fetch_object), or when the range is not within the object.
    ///
    /// With the head's part checksums, only the parts the range touches are downloaded, each
    /// checked against its checksum; without them (an older entry), the whole object is read
    /// through and checked whole, and only the range kept. Memory is the range's size, plus
    /// one part being checked.
    pub(super) async fn fetch_object_range(
        &self,
        pk: &str,
        head: &ObjectHead,
        start: u64,
        end: u64,
    ) -> Result<Option<Vec<u8>>> {
        if start > end || end > head.size as u64 {
            return Ok(None);
        }
        let objects = self.objects_for(pk)?;
        if let Some(parts) = &head.parts
            && (start, end) != (0, head.size as u64)
        {
            return fetch_parts(objects, head, parts, start, end).await;
        }
        let Some(mut read) = objects.get(&head.key, head.etag.as_deref(), None).await? else {
            return Ok(None);
        };
        if read.size.is_some_and(|size| size != head.size as u64) {
            return Ok(None);
        }
        let mut digest = sha2::Sha256::new();
        let mut data = Vec::with_capacity((end - start) as usize);
        let mut at = 0u64;
        while let Some(part) = read.body.try_next().await? {
            let from = at;
            at += part.len() as u64;
            if at > head.size as u64 {
                return Ok(None);
            }
            digest.update(&part);
            if at > start && from < end {
                let lo = start.saturating_sub(from) as usize;
                let hi = (end.min(at) - from) as usize;
                data.extend_from_slice(&part[lo..hi]);
            }
        }
        if at != head.size as u64 || digest.finalize().as_slice() != head.sum.as_slice() {
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// Reads a value stored as an object, following the head if it is replaced meanwhile (as
    /// [`read_chunked`](Store::read_chunked) does for chunks).
    pub(super) async fn read_object_value(
        &self,
        key: &StoredKey,
        mut head_item: Item,
        include_expired: bool,
    ) -> Result<Option<ChunkedRead>> {
        for _ in 0..READ_ATTEMPTS {
            let Some(head) = ObjectHead::from_item(&key.pk, &head_item, self.inner.max_value_size)?
            else {
                return Ok(Some(ChunkedRead::Replaced(head_item)));
            };
            let format = get_s(&head_item, item::FORMAT)
                .ok_or_else(|| Error::corrupt(&key.pk, "the item has no value format"))?
                .to_owned();
            if let Some(data) = self.fetch_object(&key.pk, &head).await? {
                return Ok(Some(ChunkedRead::Value(head_item, format, data)));
            }
            let next = match self.inner.table.get_item(&key.pk, None, true).await? {
                Some(next) if include_expired && self.is_owner(key, &next) => next,
                Some(next) if self.is_live(key, &next) => next,
                _ => return Ok(None),
            };
            if get_s(&next, item::OBJECT) == Some(head.key.as_str()) {
                self.drop_broken(key, &head).await;
                return Ok(None);
            }
            head_item = next;
        }
        tracing::warn!(key = %key.pk, "value kept changing while it was read; treated as a miss");
        Ok(None)
    }

    /// An entry whose object is missing or does not match it: logged, and deleted if it still
    /// names that object (so `has` and listings stop counting it), with its object. Never served.
    async fn drop_broken(&self, key: &StoredKey, head: &ObjectHead) {
        tracing::warn!(
            key = %key.pk,
            object = %head.key,
            "the stored object is missing or does not match its entry; treated as a miss"
        );
        let names = Expr::new("#ob = :ob")
            .name("#ob", item::OBJECT)
            .value(":ob", s(head.key.clone()));
        match self
            .inner
            .table
            .delete_item(&key.pk, Some(names), false)
            .await
        {
            // No entry names it now: the object (whatever it holds) goes too.
            Ok(crate::table::Put::Written { .. }) => {
                if let Some(objects) = &self.inner.objects
                    && objects.owns(&self.inner.namespace, &head.key)
                    && let Err(e) = objects.delete(&head.key).await
                {
                    tracing::debug!(error = %e, object = %head.key, "could not delete the broken object");
                }
            }
            Ok(crate::table::Put::ConditionFailed) => {}
            Err(e) => {
                tracing::debug!(error = %e, key = %key.pk, "could not delete the broken entry")
            }
        }
    }

    /// The payload of a head just deleted (see [`take`](Store::take)): `None` when its object
    /// is gone or does not match.
    pub(super) async fn read_object_of(
        &self,
        key: &StoredKey,
        head_item: &Item,
    ) -> Result<Option<Payload>> {
        let Some(head) = ObjectHead::from_item(&key.pk, head_item, self.inner.max_value_size)?
        else {
            return Ok(None);
        };
        let format = get_s(head_item, item::FORMAT)
            .ok_or_else(|| Error::corrupt(&key.pk, "the item has no value format"))?
            .to_owned();
        Ok(self
            .fetch_object(&key.pk, &head)
            .await?
            .map(|data| Payload { format, data }))
    }

    /// An object payload as a stream of parts (see [`stream_chunks`](Store::stream_chunks)):
    /// the digest is computed as the bytes go, and the last part is held back until it checks,
    /// so a reader never receives all the bytes of a wrong body.
    pub(super) fn stream_object(
        &self,
        key: &StoredKey,
        head: ObjectHead,
    ) -> Result<(u64, tokio::sync::mpsc::Receiver<Result<Bytes>>)> {
        let objects = self.objects_for(&key.pk)?.clone();
        let size = head.size as u64;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let pk = key.pk.clone();
        tokio::spawn(async move {
            if let Err(e) = send_object(&objects, &pk, head, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok((size, rx))
    }

    /// Deletes the object a replaced or deleted head named, if any. Failures are logged: the
    /// write they follow has succeeded, and [`vacuum`](Store::vacuum) reclaims the object.
    pub(super) async fn remove_object_of(&self, old: &Item) {
        let (Some(key), Some(objects)) = (get_s(old, item::OBJECT), self.inner.objects.as_ref())
        else {
            return;
        };
        // Only an object of this namespace's own (a damaged or forged head may name any key).
        if !objects.owns(&self.inner.namespace, key) {
            return;
        }
        if let Err(e) = objects.delete(key).await {
            tracing::warn!(error = %e, object = key, "could not delete a replaced object; vacuum will");
        }
    }

    /// The objects of this namespace: under its prefix, and of the shape of its keys (a store
    /// whose prefix is deeper, such as `{namespace}/other/`, keeps its own).
    async fn own_objects(&self, objects: &ObjectStore) -> Result<Vec<crate::objects::Listed>> {
        let ns = &self.inner.namespace;
        Ok(objects
            .list(&objects.namespace_prefix(ns))
            .await?
            .into_iter()
            .filter(|o| objects.owns(ns, &o.key))
            .collect())
    }

    /// Deletes the objects of the namespace stored before `started` (epoch ms, by the wall
    /// clock the object store dates objects by), after [`clear`](Store::clear) removed the
    /// entries. Returns how many were deleted. An object stored since may belong to a write
    /// whose head lands after the clear: it is left, and if no entry names it, vacuum takes it.
    pub(crate) async fn clear_objects(&self, started: i64) -> Result<u64> {
        let Some(objects) = self.inner.objects.as_ref() else {
            return Ok(0);
        };
        let listed = self
            .own_objects(objects)
            .await?
            .into_iter()
            .filter(|o| o.modified < started)
            .collect();
        delete_all(objects, listed).await
    }

    /// Deletes objects of the namespace that no entry names and that are older than
    /// `cutoff` (epoch ms; younger ones may belong to a write in progress). Returns how many.
    pub(super) async fn vacuum_objects(&self, cutoff: i64) -> Result<u64> {
        let Some(objects) = self.inner.objects.as_ref() else {
            return Ok(0);
        };
        // Listed first: an object uploaded after the listing is not considered at all, and one
        // listed is older than the cutoff, so its head (if any) was written before the scan.
        let listed: Vec<_> = self
            .own_objects(objects)
            .await?
            .into_iter()
            .filter(|o| o.modified <= cutoff)
            .collect();
        if listed.is_empty() {
            return Ok(0);
        }
        let mut named = HashSet::new();
        let mut heads = self.inner.table.scan(ScanSpec {
            prefixes: entry_prefixes(&self.inner.namespace),
            projection: Some(vec![item::OBJECT]),
        });
        while let Some(head) = heads.try_next().await? {
            if let Some(key) = get_s(&head, item::OBJECT) {
                named.insert(key.to_owned());
            }
        }
        let orphans: Vec<_> = listed
            .into_iter()
            .filter(|o| !named.contains(&o.key))
            .collect();
        delete_all(objects, orphans).await
    }
}

/// The bytes `start..end` of an object, reading only the parts they are in, each checked
/// against its checksum in `sums` (see [`Store::fetch_object_range`]).
async fn fetch_parts(
    objects: &ObjectStore,
    head: &ObjectHead,
    sums: &[u8],
    start: u64,
    end: u64,
) -> Result<Option<Vec<u8>>> {
    if start == end {
        return Ok(Some(Vec::new()));
    }
    let (size, part) = (head.size as u64, OBJECT_PART as u64);
    let (first, last) = (start / part, (end - 1) / part);
    let (from, to) = (first * part, ((last + 1) * part).min(size));
    let Some(mut read) = objects
        .get(&head.key, head.etag.as_deref(), Some(from..to))
        .await?
    else {
        return Ok(None);
    };
    if read.size.is_some_and(|n| n != to - from) {
        return Ok(None);
    }
    let mut data = Vec::with_capacity((end - start) as usize);
    let mut piece = Vec::with_capacity((to - from).min(part) as usize);
    let (mut index, mut at) = (first, from);
    while let Some(bytes) = read.body.try_next().await? {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            if index > last {
                return Ok(None); // more bytes than the range holds
            }
            let piece_end = ((index + 1) * part).min(size);
            let take = rest.len().min((piece_end - at) as usize);
            piece.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
            if at == piece_end {
                let i = index as usize * CHUNK_SUM_BYTES;
                if chunk_sum(&piece) != sums[i..i + CHUNK_SUM_BYTES] {
                    return Ok(None);
                }
                let piece_start = index * part;
                let lo = start.max(piece_start) - piece_start;
                let hi = end.min(piece_end) - piece_start;
                data.extend_from_slice(&piece[lo as usize..hi as usize]);
                piece.clear();
                index += 1;
            }
        }
    }
    Ok((at == to).then_some(data))
}

/// Deletes the listed objects, a few at a time; returns how many.
async fn delete_all(objects: &ObjectStore, listed: Vec<crate::objects::Listed>) -> Result<u64> {
    let count = listed.len() as u64;
    futures::stream::iter(listed)
        .map(|o| async move { objects.delete(&o.key).await })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count)
}

/// Sends an object's bytes down `tx` as they arrive, checking size and digest (see
/// [`Store::stream_object`]).
async fn send_object(
    objects: &ObjectStore,
    pk: &str,
    head: ObjectHead,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes>>,
) -> Result<()> {
    let gone = || {
        Error::corrupt(
            pk,
            "the stored object is missing or does not match its entry",
        )
    };
    let Some(mut read) = objects.get(&head.key, head.etag.as_deref(), None).await? else {
        return Err(gone());
    };
    if read.size.is_some_and(|size| size != head.size as u64) {
        return Err(gone());
    }
    let mut digest = sha2::Sha256::new();
    let mut sent = 0usize;
    let mut held: Option<Bytes> = None;
    // Parts are passed on in pieces of at least this much (object stores hand out small ones).
    const PART: usize = 256 * 1024;
    let mut pending = bytes::BytesMut::new();
    while let Some(part) = read.body.try_next().await? {
        sent += part.len();
        if sent > head.size {
            return Err(gone());
        }
        digest.update(&part);
        pending.extend_from_slice(&part);
        if pending.len() >= PART {
            let ready = pending.split().freeze();
            if let Some(previous) = held.replace(ready)
                && tx.send(Ok(previous)).await.is_err()
            {
                return Ok(()); // the reader has gone
            }
        }
    }
    if sent != head.size || digest.finalize().as_slice() != head.sum.as_slice() {
        return Err(gone());
    }
    if let Some(previous) = held
        && tx.send(Ok(previous)).await.is_err()
    {
        return Ok(());
    }
    if !pending.is_empty() {
        let _ = tx.send(Ok(pending.freeze())).await;
    }
    Ok(())
}
