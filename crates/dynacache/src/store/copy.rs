//! Copying a namespace to another table, engine or namespace, item for item.

use futures::stream::{StreamExt, TryStreamExt};

use super::Store;
use super::key::{chunk_prefix, entry_prefixes, lease_prefix};
use crate::error::Result;
use crate::table::item::{self, Item, get_s, s};
use crate::table::{ScanSpec, Write};

/// How a copy is going, reported as it goes.
///
/// ```
/// let progress = dynacache::CopyProgress::default();
/// assert_eq!(progress.items, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyProgress {
    /// Items written to the target so far (entries, chunks of large values, leases).
    pub items: u64,
    /// Their size in bytes, as DynamoDB counts it.
    pub bytes: u64,
    /// Entries left behind because their signature does not verify with the source's secret
    /// keys (a signed cache copies only what it would serve).
    pub skipped: u64,
}

/// Items written per progress report.
const REPORT_EVERY: usize = 100;

impl Store {
    /// Copies every item of this namespace into `target` (another table, engine or namespace):
    /// chunks of large values first, then the entries that name them, so a reader of the
    /// target never finds an entry whose chunks are not there yet. Items are copied as they are
    /// (values, expiry, checksums, signatures), with the key renamed to the target's namespace
    /// and the key and TTL attributes to the target table's. `rewrite` sees each entry (not
    /// chunks, not leases) with its source and target keys before it is written: it may re-sign
    /// it, or return false to leave it behind. Reports progress to `progress`.
    pub(crate) async fn copy_to(
        &self,
        target: &Store,
        rewrite: impl Fn(&str, &str, &mut Item) -> bool,
        mut progress: impl FnMut(CopyProgress),
    ) -> Result<CopyProgress> {
        let mut done = CopyProgress::default();
        let ns = self.namespace();
        let marker = crate::table::index::namespace_marker(ns);
        let passes = [
            vec![chunk_prefix(ns)],
            entry_prefixes(ns),
            vec![lease_prefix(ns)],
        ];
        for (pass, prefixes) in passes.into_iter().enumerate() {
            let entries = pass == 1;
            let mut pages = self
                .table()
                .scan(ScanSpec {
                    prefixes,
                    projection: None,
                })
                .map(|item| item.map(|i| self.retarget(i, target)))
                .try_chunks(REPORT_EVERY);
            while let Some(batch) = pages.try_next().await.map_err(|e| e.1)? {
                // The index marker says what the source's heads carry, not the target's.
                let batch: Vec<(String, Item)> =
                    batch.into_iter().filter(|(pk, _)| *pk != marker).collect();
                let before = batch.len();
                let batch: Vec<Item> = batch
                    .into_iter()
                    .filter_map(|(old_pk, mut item)| {
                        let new_pk = get_s(&item, target.table().key_attribute())?.to_owned();
                        (!entries || rewrite(&old_pk, &new_pk, &mut item)).then_some(item)
                    })
                    .collect();
                // A value in the object store is copied to the target's object store, under a
                // key of its own (the source's entry keeps its object).
                let mut kept = Vec::with_capacity(batch.len());
                for mut item in batch {
                    let keep = !entries
                        || !item.contains_key(item::OBJECT)
                        || self.copy_object(target, &mut item).await?;
                    if keep {
                        kept.push(item);
                    }
                }
                let batch = kept;
                done.skipped += (before - batch.len()) as u64;
                if batch.is_empty() {
                    progress(done);
                    continue;
                }
                let bytes: usize = batch.iter().map(item::item_size).sum();
                let count = batch.len() as u64;
                target
                    .table()
                    .batch_write(batch.into_iter().map(Write::Put).collect())
                    .await?;
                done.items += count;
                done.bytes += bytes as u64;
                progress(done);
            }
        }
        Ok(done)
    }

    /// Copies the object an entry names into the target's object store and points the entry at
    /// the copy. False when the source object is gone or does not match (the entry is left
    /// behind, as a reader would find it a miss); an error when the target has no object store.
    async fn copy_object(&self, target: &Store, item: &mut Item) -> Result<bool> {
        let pk = get_s(item, target.table().key_attribute())
            .unwrap_or_default()
            .to_owned();
        let Some(head) =
            super::objects::ObjectHead::from_item(&pk, item, self.inner.max_value_size)?
        else {
            return Ok(false);
        };
        let Some(data) = self.fetch_object(&pk, &head).await? else {
            return Ok(false);
        };
        let objects = target.objects_for(&pk)?;
        let attrs = target.write_object(objects, data).await?;
        item.remove(item::OBJECT_ETAG);
        item.remove(item::OBJECT_PARTS);
        item.extend(attrs);
        Ok(true)
    }

    /// An item of this namespace as the target stores it, with its key in the source.
    fn retarget(&self, mut item: Item, target: &Store) -> (String, Item) {
        let (from, to) = (self.table(), target.table());
        let rename = |pk: &str| match pk.strip_prefix(self.namespace()) {
            Some(rest) => format!("{}{rest}", target.namespace()),
            None => pk.to_owned(),
        };
        let mut old_pk = String::new();
        if let Some(pk) = item.remove(from.key_attribute()) {
            old_pk = pk.as_s().cloned().unwrap_or_default();
            let new_pk = rename(&old_pk);
            // An entry head is indexed under its new namespace's shard.
            match crate::table::index::meta_value(&new_pk) {
                Some(mi) => item.insert(crate::table::META_ATTRIBUTE.to_owned(), s(mi)),
                None => item.remove(crate::table::META_ATTRIBUTE),
            };
            item.insert(to.key_attribute().to_owned(), s(new_pk));
        }
        if let Some(ttl) = item.remove(from.ttl_attribute()) {
            item.insert(to.ttl_attribute().to_owned(), ttl);
        }
        // A chunk names the entry it belongs to.
        if let Some(head) = get_s(&item, item::HEAD).map(rename) {
            item.insert(item::HEAD.to_owned(), s(head));
        }
        (old_pk, item)
    }
}
