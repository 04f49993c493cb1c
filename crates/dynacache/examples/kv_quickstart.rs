//! The key/value cache on the embedded engine: no AWS account, no set-up.
//!
//! ```text
//! cargo run -p dynacache --example kv_quickstart
//! ```

use std::time::Duration;

use dynacache::{Cache, Expiry, Table};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Profile {
    name: String,
    languages: Vec<String>,
}

#[tokio::main]
async fn main() -> dynacache::Result<()> {
    // The embedded DynamoDB-compatible engine, persisted to a file. Swap this line for
    // `.endpoint_url("http://127.0.0.1:8000")` (DynamoDB Local) or `.aws()` (AWS DynamoDB):
    // the rest of the program stays the same.
    let path = std::env::temp_dir().join("dynacache-quickstart.db");
    let table = Table::builder()
        .name("quickstart")
        .embedded_file(&path)
        .open()
        .await?;
    let cache = Cache::builder()
        .namespace("profiles")
        .default_ttl(Duration::from_secs(600))
        .build(table)?;

    let alice = Profile {
        name: "Alice".into(),
        languages: vec!["Rust".into(), "Python".into()],
    };
    cache.set("alice", &alice).await?;
    println!(
        "get alice      -> {:?}",
        cache.get::<Profile>("alice").await?
    );

    // Atomic counters: safe across processes sharing the table.
    let visits = cache.inc("visits:alice", 1).await?;
    println!("visits         -> {visits}");

    // add: only if absent, atomically (a simple distributed lock).
    let locked = cache
        .add_with(
            "lock:report",
            &"worker-1",
            Expiry::After(Duration::from_secs(30)),
        )
        .await?;
    println!("took lock      -> {locked}");

    // Values beyond DynamoDB's 400 KB item limit are compressed and split transparently.
    let big: Vec<u64> = (0..200_000).collect();
    cache.set("big", &big).await?;
    println!(
        "big value      -> {} numbers back",
        cache.get::<Vec<u64>>("big").await?.map_or(0, |v| v.len())
    );

    // Batches.
    cache
        .set_many(
            (0..5).map(|i| (format!("item:{i}"), i * i)),
            Expiry::Default,
        )
        .await?;
    let squares: Vec<Option<i32>> = cache.get_many(["item:2", "item:3", "nope"]).await?;
    println!("get_many       -> {squares:?}");
    println!("len            -> {}", cache.len().await?);
    println!("cleared        -> {} items", cache.clear().await?);
    println!("capacity used  -> {:?}", cache.table().consumed_capacity());
    println!("stored in      -> {}", path.display());
    Ok(())
}
