//! Cache `get`/`set` against the raw AWS SDK calls that read and write the same items, in the
//! same run, on each engine. Reproduce with:
//!
//! ```text
//! scripts/bench            # starts DynamoDB Local, runs this on both engines
//! cargo bench -p dynacache --bench kv            # embedded engine only
//! ```
//!
//! Samples of the cache call and of its raw floor are interleaved, so that both see the same
//! machine load; medians and 90th percentiles are reported.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use dynacache::{Cache, Table};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Bytes(#[serde(with = "serde_bytes")] Vec<u8>);

type Item = HashMap<String, AttributeValue>;

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        median: samples[samples.len() / 2],
        p90: samples[samples.len() * 9 / 10],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn raw_get(table: &Table, pk: &str) -> Item {
    table
        .client()
        .get_item()
        .table_name(table.name())
        .key(table.key_attribute(), AttributeValue::S(pk.into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

/// The raw reads of a stored value: GetItem of its item, and BatchGetItem of its chunks if any.
async fn raw_read(table: &Table, pk: &str) {
    let head = raw_get(table, pk).await;
    if let Some(AttributeValue::S(version)) = head.get("cv") {
        let count: u32 = head["c"].as_n().unwrap().parse().unwrap();
        let keys: Vec<Item> = (0..count)
            .map(|i| {
                HashMap::from([(
                    table.key_attribute().to_owned(),
                    AttributeValue::S(format!("kv!{version}!{i}")),
                )])
            })
            .collect();
        let out = table
            .client()
            .batch_get_item()
            .request_items(
                table.name(),
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(out.responses.unwrap()[table.name()].len(), count as usize);
    }
}

/// The raw writes of a stored value: BatchWriteItem of its chunks if any, and PutItem of its item.
async fn raw_write(table: &Table, head: &Item, chunks: &[Item]) {
    if !chunks.is_empty() {
        let writes = chunks
            .iter()
            .map(|c| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(c.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        table
            .client()
            .batch_write_item()
            .request_items(table.name(), writes)
            .send()
            .await
            .unwrap();
    }
    table
        .client()
        .put_item()
        .table_name(table.name())
        .set_item(Some(head.clone()))
        .send()
        .await
        .unwrap();
}

async fn run(engine: &str, table: Table, rows: &mut Vec<String>) {
    let cache = Cache::new(table.clone()).unwrap();
    for (label, size, iterations) in [("1 KB", 1024usize, 2000usize), ("1 MB", 1 << 20, 100)] {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut value = vec![0u8; size];
        rng.fill(&mut value);
        let value = Bytes(value);
        let key = format!("bench-{size}");
        let pk = format!("kv:{key}");
        cache.set(&key, &value).await.unwrap();
        let head = raw_get(&table, &pk).await;
        let chunks: Vec<Item> = match head.get("cv") {
            Some(AttributeValue::S(version)) => {
                let count: u32 = head["c"].as_n().unwrap().parse().unwrap();
                let mut v = Vec::new();
                for i in 0..count {
                    v.push(raw_get(&table, &format!("kv!{version}!{i}")).await);
                }
                v
            }
            _ => vec![],
        };
        // Warm up connections and caches.
        for _ in 0..iterations / 10 + 5 {
            let _: Option<Bytes> = cache.get(&key).await.unwrap();
            raw_read(&table, &pk).await;
        }
        let (mut get, mut raw_get_t) = (Vec::new(), Vec::new());
        for _ in 0..iterations {
            let t = Instant::now();
            let got: Option<Bytes> = cache.get(&key).await.unwrap();
            get.push(t.elapsed());
            assert_eq!(got.unwrap().0.len(), size);
            let t = Instant::now();
            raw_read(&table, &pk).await;
            raw_get_t.push(t.elapsed());
        }
        let (get, raw_get_s) = (stats(get), stats(raw_get_t));
        // Writes: the raw floor re-puts the very items the cache wrote last (same sizes).
        let (mut set, mut raw_set) = (Vec::new(), Vec::new());
        for _ in 0..iterations.min(300) {
            let t = Instant::now();
            cache.set(&key, &value).await.unwrap();
            set.push(t.elapsed());
            let t = Instant::now();
            raw_write(&table, &head, &chunks).await;
            raw_set.push(t.elapsed());
        }
        // Leave the cache's own item in place for the next size.
        cache.set(&key, &value).await.unwrap();
        let (set, raw_set) = (stats(set), stats(raw_set));
        rows.push(format!(
            "| {engine} | {label} | get | {} | {} | {} | {} | {:.2}x |",
            ms(get.median),
            ms(get.p90),
            ms(raw_get_s.median),
            ms(raw_get_s.p90),
            get.median.as_secs_f64() / raw_get_s.median.as_secs_f64()
        ));
        rows.push(format!(
            "| {engine} | {label} | set | {} | {} | {} | {} | {:.2}x |",
            ms(set.median),
            ms(set.p90),
            ms(raw_set.median),
            ms(raw_set.p90),
            set.median.as_secs_f64() / raw_set.median.as_secs_f64()
        ));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: run quickly then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();
        let embedded = Table::builder().name("bench").open().await.unwrap();
        run("embedded", embedded, &mut rows).await;
        if let Ok(url) = std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL") {
            let local = Table::builder()
                .name(format!("bench_{:x}", fastrand::u32(..)))
                .endpoint_url(url)
                .open()
                .await
                .unwrap();
            run("DynamoDB Local", local, &mut rows).await;
        }
        println!("| engine | value | op | cache median ms | cache p90 ms | raw median ms | raw p90 ms | cache / raw |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!("{r}");
        }
    });
}
