//! The metadata index: a sparse global secondary index `meta` that holds only the heads of
//! entries (values, responses, `Vary` indexes, redirect aliases, counters), keyed by
//! `mi = "{namespace}#{shard}"` with the listing attributes projected. Listing, counting and
//! purging one namespace read its 16 index partitions instead of scanning the table: they bill
//! the metadata of that namespace only, not bodies, chunks or other namespaces' items.
//!
//! Every entry head this version writes carries `mi`, whether the table has the index or not
//! (about 10 bytes). A listing uses the index only when it is complete: the table was created
//! with it (a marker item `~meta` is written then), or [`Table::reindex`] has given every older
//! head its `mi` since (it writes the same marker, and one `{ns}~meta` per namespace it saw, the
//! only one a tenant restricted to its own keys can read). Otherwise listings scan, as before.
//! Index reads are eventually consistent: on AWS an entry written a moment ago can be missing
//! from a listing for a fraction of a second.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus,
    KeySchemaElement, KeyType, Projection, ProjectionType, ReturnConsumedCapacity,
    ScalarAttributeType, Select,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::Table;
use super::item::{Item, get_s, n, s};
use super::ops::{Expr, projection_expr};
use super::scan::ScanSpec;
use crate::error::{Error, Result};

/// The index's name.
pub const META_INDEX: &str = "meta";
/// The index's partition key attribute: `{namespace}#{shard}`.
pub const META_ATTRIBUTE: &str = "mi";
/// Index partitions per namespace: a namespace's index writes spread over this many, and a
/// listing runs this many Queries.
pub const META_SHARDS: u32 = 16;
/// The attributes the index holds besides the table's key and `mi`: what listings read.
pub const META_PROJECTED: &[&str] = &[
    super::item::EXPIRES,
    super::item::ORIGINAL_KEY,
    "kind",
    "method",
    "url",
    "status",
    "size",
    "received",
];

/// The marker saying every head of the table carries `mi` (no namespace starts with `~`).
pub(super) const TABLE_MARKER: &str = "~meta";
/// How long a process trusts "this namespace's index is not complete" before asking again.
const NOT_READY_RECHECK: Duration = Duration::from_secs(30);

/// The marker saying every head of namespace `ns` carries `mi`.
pub(crate) fn namespace_marker(ns: &str) -> String {
    format!("{ns}~meta")
}

/// FNV-1a: a hash stable across processes and versions, for spreading keys over shards.
pub(crate) fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The `mi` value of the item stored under `pk`: `{namespace}#{shard}` for an entry head
/// (`{ns}:key` or `{ns}#hash`), `None` for chunks, leases, tag shards and markers.
pub(crate) fn meta_value(pk: &str) -> Option<String> {
    let sep = pk.find([':', '#', '!', '~'])?;
    if sep == 0 || !matches!(pk.as_bytes()[sep], b':' | b'#') {
        return None;
    }
    Some(format!("{}#{}", &pk[..sep], fnv1a(pk) % META_SHARDS))
}

/// What a process knows of one namespace's index.
#[derive(Debug, Clone, Copy)]
pub(super) enum MetaState {
    Ready,
    NotReady(Instant),
}

/// What [`Table::reindex`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reindexed {
    /// Items read (the whole table, once).
    pub scanned: u64,
    /// Entry heads that had no index attribute and were given one.
    pub indexed: u64,
    /// The namespaces seen, each now marked as completely indexed.
    pub namespaces: Vec<String>,
}

impl Table {
    /// The index definition CreateTable and UpdateTable use.
    fn meta_index_definition() -> Result<(AttributeDefinition, GlobalSecondaryIndex)> {
        let attr = AttributeDefinition::builder()
            .attribute_name(META_ATTRIBUTE)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| Error::config(e.to_string()))?;
        let index = GlobalSecondaryIndex::builder()
            .index_name(META_INDEX)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(META_ATTRIBUTE)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| Error::config(e.to_string()))?,
            )
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(
                        META_PROJECTED.iter().map(|a| (*a).to_owned()).collect(),
                    ))
                    .build(),
            )
            .build()
            .map_err(|e| Error::config(e.to_string()))?;
        Ok((attr, index))
    }

    pub(super) fn meta_index_for_create() -> Result<(AttributeDefinition, GlobalSecondaryIndex)> {
        Self::meta_index_definition()
    }

    /// Writes the marker saying every head of the table carries `mi` (after CreateTable with
    /// the index, or a reindex).
    pub(super) async fn mark_indexed(&self, pk: &str) -> Result<()> {
        let item = Item::from([
            (self.inner.key_attr.clone(), s(pk)),
            (
                super::item::WRITTEN.to_owned(),
                n(crate::clock::Clock::now_millis(&crate::clock::SystemClock)),
            ),
        ]);
        self.put_item(item, None, false).await.map(|_| ())
    }

    /// Adds the metadata index to a table created without it (UpdateTable), and waits until
    /// DynamoDB has built it. Does nothing when the table has it. Listings use it once
    /// [`reindex`](Table::reindex) has run.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::Table;
    ///
    /// let table = Table::builder().meta_index(false).open().await?;
    /// assert!(!table.describe().await?.indexes.iter().any(|(name, _)| name == "meta"));
    /// table.add_meta_index().await?;
    /// table.reindex(&[]).await?;
    /// assert!(table.describe().await?.indexes.contains(&("meta".into(), "ACTIVE".into())));
    /// # Ok(()) }
    /// ```
    pub async fn add_meta_index(&self) -> Result<()> {
        let mut delay = Duration::from_millis(100);
        loop {
            let d = self.describe().await?;
            match d.indexes.iter().find(|(name, _)| name == META_INDEX) {
                Some((_, status))
                    if status == IndexStatus::Active.as_str() && d.status == "ACTIVE" =>
                {
                    return Ok(());
                }
                // Being built: DynamoDB backfills it from the table (minutes to hours on a
                // large AWS table).
                Some(_) => {}
                None => {
                    let (attr, index) = Self::meta_index_definition()?;
                    let create =
                        aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                            .index_name(META_INDEX)
                            .set_key_schema(Some(index.key_schema().to_vec()))
                            .set_projection(index.projection().cloned())
                            .build()
                            .map_err(|e| Error::config(e.to_string()))?;
                    let sent = self
                        .inner
                        .client
                        .update_table()
                        .table_name(&self.inner.name)
                        .attribute_definitions(attr)
                        .global_secondary_index_updates(
                            GlobalSecondaryIndexUpdate::builder().create(create).build(),
                        )
                        .send()
                        .await;
                    match sent {
                        Ok(_) => {}
                        // The table is busy with another update, or another index is being
                        // built: ask again after a while.
                        Err(e)
                            if e.as_service_error()
                                .and_then(|s| s.code())
                                .is_some_and(|c| {
                                    c == "ResourceInUseException" || c == "LimitExceededException"
                                }) => {}
                        Err(e) => return Err(self.err(e)),
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Gives every entry head that lacks it the index attribute (heads written by versions
    /// before the index), then marks the table, each namespace seen and each of `namespaces`
    /// (which may hold nothing yet) as completely indexed, so listings read the index from
    /// then on. Scans the whole table once (its cost is the table's size in read units). Run
    /// it after every writer runs a version that writes the attribute; it can be run again at
    /// any time.
    ///
    /// A namespace's marker (`{ns}~meta`) is what a tenant confined to its own keys reads
    /// (see `docs/iam.md`); processes with access to the whole table also read the table's.
    pub async fn reindex(&self, namespaces: &[&str]) -> Result<Reindexed> {
        for ns in namespaces {
            crate::store::validate_namespace(ns)?;
        }
        let key_attr = self.inner.key_attr.clone();
        let items = self.scan(ScanSpec {
            prefixes: Vec::new(),
            projection: Some(vec![META_ATTRIBUTE]),
        });
        let named = namespaces;
        let mut namespaces: BTreeSet<String> = named.iter().map(|n| (*n).to_owned()).collect();
        let mut scanned = 0u64;
        let missing = items
            .try_filter_map(|item| {
                scanned += 1;
                let pk = get_s(&item, &key_attr).unwrap_or_default();
                let mi = meta_value(pk);
                if let Some(mi) = &mi {
                    namespaces.insert(mi[..mi.rfind('#').unwrap_or(0)].to_owned());
                }
                let todo = match (mi, item.contains_key(META_ATTRIBUTE)) {
                    (Some(mi), false) => Some((pk.to_owned(), mi)),
                    _ => None,
                };
                futures::future::ready(Ok(todo))
            })
            .map_ok(|(pk, mi)| async move {
                let update = Expr::new("SET #mi = :mi")
                    .name("#mi", META_ATTRIBUTE)
                    .name("#k", &self.inner.key_attr)
                    .value(":mi", s(mi));
                // Not on an item deleted meanwhile (that would create a stub entry).
                self.update_item_quiet(&pk, update, Some("attribute_exists(#k)"))
                    .await
            })
            .try_buffer_unordered(16)
            .try_fold(0u64, |done, updated| {
                futures::future::ready(Ok(done + u64::from(updated)))
            })
            .await?;
        for ns in &namespaces {
            self.mark_indexed(&namespace_marker(ns)).await?;
        }
        self.mark_indexed(TABLE_MARKER).await?;
        self.inner
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(Reindexed {
            scanned,
            indexed: missing,
            namespaces: namespaces.into_iter().collect(),
        })
    }

    /// Whether listings of `ns` may read the index: it exists, and a marker says every head of
    /// the namespace carries `mi`. Remembered for the process once true; rechecked every 30
    /// seconds while false. Any error reads as "no" (the caller scans instead).
    pub(crate) async fn meta_ready(&self, ns: &str) -> bool {
        let known = self
            .inner
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ns)
            .copied();
        match known {
            Some(MetaState::Ready) => return true,
            Some(MetaState::NotReady(at)) if at.elapsed() < NOT_READY_RECHECK => return false,
            _ => {}
        }
        let marked = |pk: String| async move {
            matches!(self.get_item(&pk, Some(&[]), false).await, Ok(Some(_)))
        };
        let ready = (marked(namespace_marker(ns)).await || marked(TABLE_MARKER.to_owned()).await)
            // The index itself must be there (a marker outlives a deleted index).
            && self.count_meta(ns, None, Some(1)).await.is_ok();
        let state = if ready {
            MetaState::Ready
        } else {
            MetaState::NotReady(Instant::now())
        };
        self.inner
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ns.to_owned(), state);
        ready
    }

    /// After a Query of the index failed because the index is gone or being rebuilt
    /// (ValidationException), this process asks again before its next listing, which scans
    /// until the index is complete again.
    fn forget_meta_after(&self, ns: &str, e: &Error) {
        if matches!(e, Error::Service { code, .. } if code == "ValidationException") {
            self.inner
                .meta
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(ns);
        }
    }

    /// The heads of namespace `ns` from the index, page by page over its shards, with the
    /// `projection` attributes that the index holds (others are left out) and the key.
    pub(crate) fn query_meta(
        &self,
        ns: &str,
        projection: &[&'static str],
        filter: Option<Expr>,
    ) -> BoxStream<'static, Result<Item>> {
        let attrs: Vec<&'static str> = projection
            .iter()
            .copied()
            .filter(|a| META_PROJECTED.contains(a))
            .collect();
        let shards = (0..META_SHARDS).map(|shard| {
            let table = self.clone();
            let (attrs, filter) = (attrs.clone(), filter.clone());
            let mi = format!("{ns}#{shard}");
            let ns = ns.to_owned();
            stream::try_unfold(Some(None), move |state: Option<Option<Item>>| {
                let table = table.clone();
                let (attrs, filter, mi, ns) =
                    (attrs.clone(), filter.clone(), mi.clone(), ns.clone());
                async move {
                    let Some(start) = state else {
                        return Ok(None);
                    };
                    let (projection, mut names) = projection_expr(&table.inner.key_attr, &attrs);
                    names.insert("#mi".into(), META_ATTRIBUTE.into());
                    let mut values = HashMap::from([(":mi".to_owned(), s(mi))]);
                    let mut req = table
                        .inner
                        .client
                        .query()
                        .table_name(&table.inner.name)
                        .index_name(META_INDEX)
                        .key_condition_expression("#mi = :mi")
                        .projection_expression(projection)
                        .set_exclusive_start_key(start)
                        .return_consumed_capacity(ReturnConsumedCapacity::Total);
                    if let Some(f) = filter {
                        names.extend(f.names);
                        values.extend(f.values);
                        req = req.filter_expression(f.text);
                    }
                    let req = req
                        .set_expression_attribute_names(Some(names))
                        .set_expression_attribute_values(Some(values));
                    let out = table
                        .guarded("Query", async {
                            req.send().await.map_err(|e| table.err(e))
                        })
                        .await
                        .inspect_err(|e| table.forget_meta_after(&ns, e))?;
                    table.inner.capacity.record_read(out.consumed_capacity());
                    let next = out.last_evaluated_key.filter(|k| !k.is_empty()).map(Some);
                    Ok(Some((out.items.unwrap_or_default(), next)))
                }
            })
            .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
        });
        stream::select_all(shards).boxed()
    }

    /// Counts the heads of namespace `ns` in the index that pass `filter`, reading every page
    /// (or up to `limit` items per shard).
    pub(crate) async fn count_meta(
        &self,
        ns: &str,
        filter: Option<Expr>,
        limit: Option<i32>,
    ) -> Result<u64> {
        let shards = if limit.is_some() { 1 } else { META_SHARDS };
        let counts = stream::iter(0..shards)
            .map(|shard| {
                let filter = filter.clone();
                async move {
                    let mut total = 0u64;
                    let mut start = None;
                    loop {
                        let mut names = HashMap::from([("#mi".to_owned(), META_ATTRIBUTE.into())]);
                        let mut values =
                            HashMap::from([(":mi".to_owned(), s(format!("{ns}#{shard}")))]);
                        let mut req = self
                            .inner
                            .client
                            .query()
                            .table_name(&self.inner.name)
                            .index_name(META_INDEX)
                            .select(Select::Count)
                            .key_condition_expression("#mi = :mi")
                            .set_limit(limit)
                            .set_exclusive_start_key(start)
                            .return_consumed_capacity(ReturnConsumedCapacity::Total);
                        if let Some(f) = &filter {
                            names.extend(f.names.clone());
                            values.extend(f.values.clone());
                            req = req.filter_expression(&f.text);
                        }
                        let req = req
                            .set_expression_attribute_names(Some(names))
                            .set_expression_attribute_values(Some(values));
                        let out = self
                            .guarded("Query", async { req.send().await.map_err(|e| self.err(e)) })
                            .await
                            .inspect_err(|e| self.forget_meta_after(ns, e))?;
                        self.inner.capacity.record_read(out.consumed_capacity());
                        total += out.count.max(0) as u64;
                        match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                            Some(k) if limit.is_none() => start = Some(k),
                            _ => return Ok::<u64, Error>(total),
                        }
                    }
                }
            })
            .buffer_unordered(shards as usize)
            .collect::<Vec<_>>()
            .await;
        counts.into_iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entry_heads_get_an_index_value() {
        let mi = meta_value("http:GET https://example.com/").unwrap();
        assert!(mi.starts_with("http#"), "{mi}");
        let shard: u32 = mi["http#".len()..].parse().unwrap();
        assert!(shard < META_SHARDS);
        assert!(meta_value("kv#0123abcd").unwrap().starts_with("kv#"));
        for not_a_head in [
            "kv!0f!1",
            "kv~:lease",
            "http~g:tag#3",
            "~meta",
            "kv~meta",
            "nokey",
        ] {
            assert_eq!(meta_value(not_a_head), None, "{not_a_head}");
        }
    }

    #[test]
    fn index_values_are_stable_and_spread_over_every_shard() {
        assert_eq!(meta_value("kv:a"), meta_value("kv:a"));
        let shards: BTreeSet<String> = (0..1000)
            .filter_map(|i| meta_value(&format!("kv:key-{i}")))
            .collect();
        assert_eq!(shards.len(), META_SHARDS as usize);
    }
}
