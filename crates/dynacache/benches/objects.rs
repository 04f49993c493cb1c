//! Large values: chunk items in the table against the object store, for 256 KB, 1 MB, 8 MB and
//! 64 MB, on the embedded pair (embedded engine + a local directory) and, when
//! `DYNACACHE_TEST_DYNAMODB_LOCAL` and `DYNACACHE_TEST_S3` are set, on DynamoDB Local + the S3
//! server. Reports write and hit latency (median), client CPU per operation, the capacity units
//! DynamoDB would bill (from the items' sizes, as DynamoDB rounds them) and the S3 requests, priced
//! with the public on-demand prices. Then HTTP hits of a 64 MB object-backed body: whole, and
//! a 1 KB range with and without the entry's part checksums. Reproduce with
//! `scripts/bench objects`.

mod common;

use std::time::{Duration, Instant};

use dynacache::{Cache, ObjectStore, Table};
use serde_bytes::ByteBuf;

/// us-east-1 on demand: $0.625 per million write request units, $0.125 per million read request
/// units; S3 Standard $0.005 per 1,000 PUTs, $0.0004 per 1,000 GETs.
const WRU: f64 = 0.625e-6;
const RRU: f64 = 0.125e-6;
const PUT: f64 = 0.005e-3;
const GET: f64 = 0.0004e-3;

/// The chunk size of values in chunks (the default).
const CHUNK: usize = 350 * 1024;
/// A head item's size, about (key, attributes, digest).
const HEAD: usize = 200;

fn noise(len: usize, seed: u64) -> ByteBuf {
    let mut rng = fastrand::Rng::with_seed(seed);
    ByteBuf::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// What DynamoDB bills for one write and one (eventually consistent) read of a value of `len`
/// bytes: in chunks, every chunk item plus the head; in the object store, the head alone, with
/// a 16-byte checksum of each 1 MiB part when there is more than one.
fn units(len: usize, chunks: bool) -> (f64, f64) {
    let wru = |bytes: usize| bytes.div_ceil(1024) as f64;
    let rru = |bytes: usize| bytes.div_ceil(4096) as f64 / 2.0;
    if !chunks {
        let parts = if len > 1 << 20 {
            len.div_ceil(1 << 20) * 16
        } else {
            0
        };
        return (wru(HEAD + parts), rru(HEAD + parts));
    }
    let mut w = wru(HEAD);
    let mut r = rru(HEAD);
    let mut left = len;
    while left > 0 {
        let piece = left.min(CHUNK) + 100;
        w += wru(piece);
        r += rru(piece);
        left = left.saturating_sub(CHUNK);
    }
    (w, r)
}

struct Row {
    pair: &'static str,
    size: usize,
    mode: &'static str,
    write: Duration,
    hit: Duration,
    write_cpu: Duration,
    hit_cpu: Duration,
    write_cost: f64,
    hit_cost: f64,
}

async fn run(pair: &'static str, table: Table, objects: ObjectStore, size: usize) -> Vec<Row> {
    let rounds = match size {
        s if s <= 1 << 20 => 20,
        s if s <= 8 << 20 => 6,
        _ => 3,
    };
    let mut rows = Vec::new();
    for mode in ["chunks", "object store"] {
        let mut b = Cache::builder()
            .namespace(format!("b{:x}", fastrand::u32(..)))
            .compress_from(None)
            .max_value_size(128 << 20);
        if mode == "object store" {
            b = b.object_store(objects.clone());
        }
        let cache = b.build(table.clone()).unwrap();
        let values: Vec<ByteBuf> = (0..rounds).map(|i| noise(size, i as u64)).collect();
        // Warm: connections, the engine's first pages.
        cache.set("warm", &values[0]).await.unwrap();
        let _: Option<ByteBuf> = cache.get("warm").await.unwrap();
        let mut writes = Vec::new();
        let cpu = common::cpu_time();
        for (i, v) in values.iter().enumerate() {
            let t = Instant::now();
            cache.set(format!("k{i}"), v).await.unwrap();
            writes.push(t.elapsed());
        }
        let write_cpu = (common::cpu_time() - cpu) / rounds as u32;
        let mut hits = Vec::new();
        let cpu = common::cpu_time();
        for i in 0..rounds {
            let t = Instant::now();
            let got: ByteBuf = cache.get(format!("k{i}")).await.unwrap().unwrap();
            hits.push(t.elapsed());
            assert_eq!(got.len(), size);
        }
        let hit_cpu = (common::cpu_time() - cpu) / rounds as u32;
        let (w, r) = units(size, mode == "chunks");
        let (write_cost, hit_cost) = if mode == "chunks" {
            (w * WRU, r * RRU)
        } else {
            (w * WRU + PUT, r * RRU + GET)
        };
        cache.clear().await.unwrap();
        rows.push(Row {
            pair,
            size,
            mode,
            write: median(writes),
            hit: median(hits),
            write_cpu,
            hit_cpu,
            write_cost,
            hit_cost,
        });
    }
    rows
}

/// Takes the part checksums off every object head of the table, as an entry written before
/// them has none: a range of it is then read through the whole object.
async fn forget_part_sums(table: &Table) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let key = table.key_attribute();
    let heads = table
        .client()
        .scan()
        .table_name(table.name())
        .filter_expression("attribute_exists(op)")
        .send()
        .await
        .unwrap();
    for head in heads.items() {
        if let Some(A::S(pk)) = head.get(key) {
            table
                .client()
                .update_item()
                .table_name(table.name())
                .key(key, A::S(pk.clone()))
                .update_expression("REMOVE op")
                .send()
                .await
                .unwrap();
        }
    }
}

/// HTTP hits of a 64 MB body stored as one object, through the tower layer: the whole body,
/// and a 1 KB range in its middle, read with the entry's part checksums (only the parts the
/// range is in are downloaded) and without them (the whole object read through). Medians of
/// 10 hits (3 for the whole body).
async fn ranges(pair: &'static str, table: Table, objects: ObjectStore) {
    use axum::http::Request;
    use dynacache::http::{CacheFactsExt, CacheLayer, HttpCache};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let body = bytes::Bytes::from(noise(64 << 20, 7).into_vec());
    let cache = HttpCache::builder()
        .namespace(format!("r{:x}", fastrand::u32(..)))
        .shared(true)
        .write_wait(Duration::from_secs(120))
        .max_body_size(128 << 20)
        .object_store(objects)
        .build(table.clone())
        .unwrap();
    let origin = body.clone();
    let app = axum::Router::new()
        .route(
            "/big",
            axum::routing::get(move || {
                let body = origin.clone();
                async move { ([("cache-control", "max-age=3600")], body) }
            }),
        )
        .layer(CacheLayer::new(cache.clone()));
    let get = |range: Option<&str>| {
        let mut req = Request::get("/big").header("host", "bench.example");
        if let Some(range) = range {
            req = req.header("range", range);
        }
        req.body(axum::body::Body::empty()).unwrap()
    };
    let stored = app.clone().oneshot(get(None)).await.unwrap();
    assert_eq!(
        stored.into_body().collect().await.unwrap().to_bytes().len(),
        body.len()
    );
    cache.flush().await;
    let row = |what: &str, lat: Vec<Duration>, cpu: Duration| {
        println!("| {pair} | {what} | {} | {} |", ms(median(lat)), ms(cpu));
    };
    let (mut lat, cpu) = (Vec::new(), common::cpu_time());
    for _ in 0..3 {
        let t = Instant::now();
        let res = app.clone().oneshot(get(None)).await.unwrap();
        assert!(res.from_cache());
        let got = res.into_body().collect().await.unwrap().to_bytes();
        lat.push(t.elapsed());
        assert_eq!(got.len(), body.len());
    }
    row("whole 64 MB body", lat, (common::cpu_time() - cpu) / 3);
    let range = "bytes=33554000-33555023"; // 1 KB across the 32nd part boundary
    for what in [
        "1 KB range, part checksums",
        "1 KB range, whole object read",
    ] {
        if what.ends_with("read") {
            forget_part_sums(&table).await;
        }
        let (mut lat, cpu) = (Vec::new(), common::cpu_time());
        for _ in 0..10 {
            let t = Instant::now();
            let res = app.clone().oneshot(get(Some(range))).await.unwrap();
            assert!(res.from_cache() && res.status() == 206, "{what}");
            let got = res.into_body().collect().await.unwrap().to_bytes();
            lat.push(t.elapsed());
            assert_eq!(got, body.slice(33_554_000..33_555_024), "{what}");
        }
        row(what, lat, (common::cpu_time() - cpu) / 10);
    }
    cache.clear().await.unwrap();
}

fn size_name(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MB", size >> 20)
    } else {
        format!("{} KB", size >> 10)
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("dynacache-bench-objects-{}", std::process::id()));
        let mut pairs: Vec<(&'static str, Table, ObjectStore)> = Vec::new();
        let timeout = Duration::from_secs(120);
        pairs.push((
            "embedded + directory",
            Table::builder().operation_timeout(timeout).open().await.unwrap(),
            ObjectStore::builder().local(&dir).open().await.unwrap(),
        ));
        if let (Ok(ddb), Ok(s3)) = (
            std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL"),
            std::env::var("DYNACACHE_TEST_S3"),
        ) {
            pairs.push((
                "DynamoDB Local + S3 server",
                Table::builder()
                    .name(format!("bench_objects_{:x}", fastrand::u32(..)))
                    .endpoint_url(ddb)
                    .operation_timeout(timeout)
                    .open()
                    .await
                    .unwrap(),
                ObjectStore::builder()
                    .s3(format!("bench-objects-{:x}", fastrand::u32(..)))
                    .endpoint_url(s3)
                    .operation_timeout(timeout)
                    .open()
                    .await
                    .unwrap(),
            ));
        }
        println!(
            "| engines | size | stored as | write p50 | hit p50 | client CPU per write | per hit | cost per write | per hit |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (pair, table, objects) in &pairs {
            for size in [256 << 10, 1 << 20, 8 << 20, 64 << 20] {
                let rows = run(pair, table.clone(), objects.clone(), size).await;
                for r in &rows {
                    println!(
                        "| {} | {} | {} | {} | {} | {} | {} | ${:.7} | ${:.8} |",
                        r.pair,
                        size_name(r.size),
                        r.mode,
                        ms(r.write),
                        ms(r.hit),
                        ms(r.write_cpu),
                        ms(r.hit_cpu),
                        r.write_cost,
                        r.hit_cost
                    );
                }
                let (c, o) = (&rows[0], &rows[1]);
                eprintln!(
                    "{pair} {}: object store costs 1/{:.0} per write, 1/{:.0} per hit; hit latency {:.2}x chunks",
                    size_name(size),
                    c.write_cost / o.write_cost,
                    c.hit_cost / o.hit_cost,
                    o.hit.as_secs_f64() / c.hit.as_secs_f64()
                );
            }
        }
        println!();
        println!("| engines | HTTP hit of a 64 MB object-backed body | p50 | client CPU |");
        println!("|---|---|---|---|");
        for (pair, table, objects) in &pairs {
            ranges(pair, table.clone(), objects.clone()).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
