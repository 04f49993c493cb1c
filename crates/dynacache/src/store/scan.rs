//! Whole-namespace reads: listing, counting, clearing and storage statistics. Every call reads
//! the table to its last page and sees only this namespace's items, readable and hashed keys
//! alike.

use std::collections::HashMap;

use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use super::Store;
use super::key::{Key, chunk_prefix, entry_prefixes, lease_prefix};
use crate::error::Result;
use crate::table::item::{self, Item, get_b, get_i64, get_s, n};
use crate::table::{Expr, ScanSpec, Write};

/// What a namespace holds, item by item, as read by [`Cache::storage_stats`](crate::Cache::storage_stats).
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
    /// Entries whose value is an object in the object store.
    pub object_entries: u64,
    /// Bytes of those objects (not in `stored_bytes`: the object store bills them).
    pub object_bytes: u64,
    /// The largest entries (chunks and objects included), largest first: label (the URL for HTTP
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

/// One entry as listed: its key and the attributes asked for.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) key: Key,
    pub(crate) item: Item,
}

impl Store {
    /// Every entry of the namespace (expired ones included), with the `projection` attributes
    /// (besides the key and the expiry; `None`: every attribute), page by page.
    pub(crate) fn list(&self, projection: &[&'static str]) -> BoxStream<'static, Result<Listed>> {
        let mut attrs = vec![item::EXPIRES, item::ORIGINAL_KEY];
        attrs.extend_from_slice(projection);
        self.list_items(Some(attrs))
    }

    /// [`list`](Store::list) with every attribute.
    pub(crate) fn list_all(&self) -> BoxStream<'static, Result<Listed>> {
        self.list_items(None)
    }

    fn list_items(
        &self,
        projection: Option<Vec<&'static str>>,
    ) -> BoxStream<'static, Result<Listed>> {
        let ns_len = self.namespace().len() + 1;
        let key_attr = self.table().key_attribute().to_owned();
        let store = self.clone();
        // The index holds the listing attributes only; a listing of whole items scans.
        let items = futures::stream::once(async move {
            let ns = store.namespace();
            match projection {
                Some(attrs) if store.table().meta_ready(ns).await => {
                    store.table().query_meta(ns, &attrs, None)
                }
                projection => store.table().scan(ScanSpec {
                    prefixes: entry_prefixes(ns),
                    projection,
                }),
            }
        })
        .flatten();
        items
            .try_filter_map(move |item| {
                let key = match get_b(&item, item::ORIGINAL_KEY) {
                    Some(original) => Some(Key::new(original.to_vec())),
                    None => get_s(&item, &key_attr)
                        .and_then(|pk| pk.get(ns_len..))
                        .map(|k| Key::new(k.as_bytes().to_vec())),
                };
                futures::future::ready(Ok(key.map(|key| Listed { key, item })))
            })
            .boxed()
    }

    /// The keys of live entries, as a stream.
    pub(crate) fn live_keys(&self) -> BoxStream<'static, Result<Key>> {
        let store = self.clone();
        self.list(&[])
            .try_filter_map(move |listed| {
                let live = match get_i64(&listed.item, item::EXPIRES) {
                    None => true,
                    Some(Ok(exp)) => exp > store.now(),
                    Some(Err(_)) => false,
                };
                futures::future::ready(Ok(live.then_some(listed.key)))
            })
            .boxed()
    }

    /// The exact number of entries passing `filter` (an expression over the entry's attributes;
    /// `None`: all), counted to the last page. `live_only` adds "not expired".
    pub(crate) async fn count(&self, filter: Option<Expr>, live_only: bool) -> Result<u64> {
        let filter = match (filter, live_only) {
            (f, false) => f,
            (f, true) => {
                let live = Expr::new("attribute_not_exists(#live_e) OR #live_e > :live_now")
                    .name("#live_e", item::EXPIRES)
                    .value(":live_now", n(self.now()));
                Some(match f {
                    None => live,
                    Some(mut f) => {
                        f.text = format!("({}) AND ({})", f.text, live.text);
                        f.names.extend(live.names);
                        f.values.extend(live.values);
                        f
                    }
                })
            }
        };
        let ns = self.namespace();
        if self.table().meta_ready(ns).await {
            return self.table().count_meta(ns, filter, None).await;
        }
        self.table().count(&entry_prefixes(ns), filter).await
    }

    /// Removes every item of the namespace (entries, expired entries, chunks, leases) and its
    /// objects, and nothing else. Returns how many items and objects were deleted.
    pub(crate) async fn clear(&self) -> Result<u64> {
        let started = crate::clock::system_time_millis(std::time::SystemTime::now());
        let mut prefixes = entry_prefixes(self.namespace());
        prefixes.push(chunk_prefix(self.namespace()));
        prefixes.push(lease_prefix(self.namespace()));
        let key_attr = self.table().key_attribute().to_owned();
        let table = self.table().clone();
        // The index marker stays: an empty namespace is completely indexed.
        let marker = crate::table::index::namespace_marker(self.namespace());
        let removed = self
            .table()
            .scan(ScanSpec {
                prefixes,
                projection: Some(vec![]),
            })
            .try_filter_map(move |item| {
                let pk = get_s(&item, &key_attr).filter(|pk| *pk != marker);
                futures::future::ready(Ok(pk.map(str::to_owned)))
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
        // Then the namespace's objects stored before the clear began (none is named by an
        // entry any more, unless a write raced the clear: its object is newer).
        Ok(removed + self.clear_objects(started).await?)
    }

    /// Reads every item of the namespace (a full scan, to the last page) and adds up what it
    /// holds. `label` names the attribute that labels an entry in `largest` (else its key).
    pub(crate) async fn storage_stats(&self, label: Option<&str>) -> Result<StorageStats> {
        let ns = self.namespace();
        let mut prefixes = entry_prefixes(ns);
        let chunk_prefix = chunk_prefix(ns);
        prefixes.push(chunk_prefix.clone());
        let key_attr = self.table().key_attribute().to_owned();
        let ns_len = ns.len() + 1;
        let now = self.now();
        let mut items = self.table().scan(ScanSpec {
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
            let object_size = if item.contains_key(item::OBJECT) {
                let sz = get_i64(&item, item::SIZE)
                    .and_then(|s| s.ok())
                    .unwrap_or(0)
                    .max(0) as u64;
                stats.object_entries += 1;
                stats.object_bytes += sz;
                sz
            } else {
                0
            };
            let name = match get_b(&item, item::ORIGINAL_KEY) {
                Some(original) => Some(String::from_utf8_lossy(original).into_owned()),
                None => pk.get(ns_len..).map(str::to_owned),
            };
            let label = label
                .and_then(|l| get_s(&item, l))
                .map(str::to_owned)
                .or(name)
                .unwrap_or_default();
            let slot = sizes.entry(pk.to_owned()).or_default();
            slot.0 = label;
            slot.1 += size + object_size;
        }
        let mut largest: Vec<(String, u64)> =
            sizes.into_values().filter(|(l, _)| !l.is_empty()).collect();
        largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        largest.truncate(5);
        stats.largest = largest;
        Ok(stats)
    }
}
