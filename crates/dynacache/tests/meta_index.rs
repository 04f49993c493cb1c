//! The metadata index: listing, counting and clearing one namespace read that namespace's
//! metadata from the `meta` index (Query) instead of scanning the table, once the index is
//! complete; until then, and on tables without it, they scan and see the same entries.
//! Every test runs on the embedded engine and on DynamoDB Local.

mod common;

use std::collections::BTreeSet;

use dynacache::{Cache, Table, TableBuilder};
use futures::TryStreamExt;

use crate::common::Engine;
use crate::common::calls::StorageCalls;

fn count(calls: &[String], op: &str) -> usize {
    calls.iter().filter(|c| *c == op).count()
}

async fn keys(cache: &Cache) -> BTreeSet<String> {
    cache
        .keys()
        .map_ok(|k| k.to_string())
        .try_collect()
        .await
        .unwrap()
}

fn kv(table: &Table, ns: &str) -> Cache {
    Cache::builder().namespace(ns).build(table.clone()).unwrap()
}

/// Stores a mix of entries in namespace `a`: readable and hashed keys, a counter, a value in
/// chunks; and entries in namespace `b` that `a`'s listings must never bill or show.
async fn fill(table: &Table) -> BTreeSet<String> {
    let (a, b) = (kv(table, "a"), kv(table, "b"));
    let mut want = BTreeSet::new();
    for i in 0..40 {
        a.set(format!("k{i}").as_str(), &i).await.unwrap();
        want.insert(format!("k{i}"));
    }
    let long = "L".repeat(3000); // stored under its hash
    a.set(long.as_str(), &1).await.unwrap();
    want.insert(long);
    a.inc("hits", 2).await.unwrap();
    want.insert("hits".into());
    let noise: Vec<u8> = (0..900_000).map(|_| fastrand::u8(..)).collect();
    a.set("big", &serde_bytes::ByteBuf::from(noise))
        .await
        .unwrap();
    want.insert("big".into());
    for i in 0..10 {
        b.set(format!("other{i}").as_str(), &i).await.unwrap();
    }
    want
}

async fn new_table(engine: Engine, with_index: bool) -> Option<Table> {
    let builder: TableBuilder = common::builder(engine)?;
    Some(builder.meta_index(with_index).open().await.unwrap())
}

async fn a_new_table_lists_from_the_index(engine: Engine) {
    let Some(table) = new_table(engine, true).await else {
        return;
    };
    let (calls, _guard) = StorageCalls::install();
    let want = fill(&table).await;
    let a = kv(&table, "a");
    calls.take();
    assert_eq!(keys(&a).await, want);
    assert_eq!(a.len().await.unwrap(), want.len() as u64);
    let made = calls.take();
    assert_eq!(count(&made, "Scan"), 0, "{made:?}");
    assert!(count(&made, "Query") >= 2 * 16, "{made:?}");
    // `b` is listed from its own shards, and sees only its own.
    assert_eq!(keys(&kv(&table, "b")).await.len(), 10);
    assert_eq!(count(&calls.take(), "Scan"), 0);

    // Deleting and expiring entries shows in the listing.
    a.delete("k0").await.unwrap();
    a.set_with("brief", &1, std::time::Duration::from_millis(1).into())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut want = want;
    want.remove("k0");
    assert_eq!(
        keys(&a).await,
        want,
        "expired and deleted keys are not listed"
    );
    assert_eq!(a.len().await.unwrap(), want.len() as u64);
}

async fn an_old_table_is_scanned_until_reindexed(engine: Engine) {
    // DynamoDB Local builds an index added by UpdateTable in the background, and on an engine
    // busy with the rest of the suite that took minutes (or never ended): there the table has
    // the index from the start, without its marker, as a table after UpdateTable would.
    let update_table = engine == Engine::Embedded;
    let Some(table) = new_table(engine, !update_table).await else {
        return;
    };
    if !update_table {
        delete_item(&table, "~meta").await;
    }
    let want = fill(&table).await;
    // What versions before the index wrote: heads without the index attribute.
    let heads: Vec<String> = common::all_partition_keys(&table)
        .await
        .into_iter()
        .filter(|pk| pk.starts_with("a:") || pk.starts_with("a#") || pk.starts_with("b:"))
        .collect();
    for pk in &heads {
        table
            .client()
            .update_item()
            .table_name(table.name())
            .key(
                table.key_attribute(),
                aws_sdk_dynamodb::types::AttributeValue::S(pk.clone()),
            )
            .update_expression("REMOVE mi")
            .send()
            .await
            .unwrap();
    }
    let a = kv(&table, "a");
    let (calls, _guard) = StorageCalls::install();
    assert_eq!(keys(&a).await, want);
    assert!(count(&calls.take(), "Scan") > 0, "no index: listings scan");

    if update_table {
        table.add_meta_index().await.unwrap();
        let a = kv(&table, "a"); // a new handle asks again; the old one rechecks after 30 s
        assert_eq!(keys(&a).await, want, "an incomplete index is not used");
        let made = calls.take();
        assert!(count(&made, "Scan") > 0, "{made:?}");
    }
    assert!(
        table
            .describe()
            .await
            .unwrap()
            .indexes
            .contains(&("meta".into(), "ACTIVE".into()))
    );

    let done = table.reindex(&["c"]).await.unwrap();
    assert_eq!(done.indexed, heads.len() as u64, "{done:?}");
    assert_eq!(done.namespaces, ["a", "b", "c"], "seen and named");
    assert!(table.reindex(&["no:colons"]).await.is_err());
    calls.take();
    assert_eq!(keys(&a).await, want);
    assert_eq!(a.len().await.unwrap(), want.len() as u64);
    let made = calls.take();
    assert_eq!(count(&made, "Scan"), 0, "{made:?}");
    assert!(count(&made, "Query") > 0, "{made:?}");
    assert_eq!(
        table.reindex(&[]).await.unwrap().indexed,
        0,
        "nothing left to do"
    );

    // A tenant that cannot read the table's marker relies on its namespace's own.
    delete_item(&table, "~meta").await;
    let b = Cache::builder()
        .namespace("b")
        .build(reopen(&table, engine).await)
        .unwrap();
    calls.take();
    assert_eq!(keys(&b).await.len(), 10);
    let made = calls.take();
    assert_eq!(
        count(&made, "Scan"),
        0,
        "{made:?} {:?}",
        common::all_partition_keys(&table).await
    );
}

async fn a_marker_without_the_index_still_scans(engine: Engine) {
    let Some(table) = new_table(engine, false).await else {
        return;
    };
    let want = fill(&table).await;
    table.reindex(&[]).await.unwrap(); // markers, but no index to read
    let a = kv(&table, "a");
    let (calls, _guard) = StorageCalls::install();
    assert_eq!(keys(&a).await, want);
    assert_eq!(a.len().await.unwrap(), want.len() as u64);
    assert!(count(&calls.take(), "Scan") > 0);
}

async fn copies_and_clears_keep_the_index_complete(engine: Engine) {
    let Some(table) = new_table(engine, true).await else {
        return;
    };
    let want = fill(&table).await;
    let (a, c) = (kv(&table, "a"), kv(&table, "c"));
    a.copy_to(&c, |_| {}).await.unwrap();
    let (calls, _guard) = StorageCalls::install();
    assert_eq!(
        keys(&c).await,
        want,
        "copies are indexed under their new namespace"
    );
    assert_eq!(keys(&a).await, want);
    assert_eq!(count(&calls.take(), "Scan"), 0);
    let cleared = a.clear().await.unwrap();
    assert!(cleared > want.len() as u64, "chunks too: {cleared}");
    calls.take();
    assert!(keys(&a).await.is_empty());
    assert_eq!(a.len().await.unwrap(), 0);
    assert_eq!(keys(&c).await, want);
    assert_eq!(count(&calls.take(), "Scan"), 0);
}

async fn delete_item(table: &Table, pk: &str) {
    table
        .client()
        .delete_item()
        .table_name(table.name())
        .key(
            table.key_attribute(),
            aws_sdk_dynamodb::types::AttributeValue::S(pk.into()),
        )
        .send()
        .await
        .unwrap();
}

/// Another handle on the same table (a process that starts afresh).
async fn reopen(table: &Table, engine: Engine) -> Table {
    match engine {
        Engine::Embedded => {
            let url = table.local_endpoint().unwrap().to_owned();
            Table::builder()
                .name(table.name())
                .endpoint_url(url)
                .open()
                .await
                .unwrap()
        }
        Engine::DynamoDbLocal => Table::builder()
            .name(table.name())
            .endpoint_url(std::env::var(common::LOCAL_ENV).unwrap())
            .open()
            .await
            .unwrap(),
    }
}

on_both_engines!(
    a_new_table_lists_from_the_index,
    an_old_table_is_scanned_until_reindexed,
    a_marker_without_the_index_still_scans,
    copies_and_clears_keep_the_index_complete,
);
