//! An HTTP cache hit of a 20 KB JSON response against a raw GetItem of the same stored item, in
//! the same run, on each engine; and the client CPU time per hit. Reproduce with
//! `scripts/bench` (both engines) or `cargo bench -p dynacache --bench http` (embedded only).

mod common;
use common::cpu_time;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use dynacache::Table;
use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};

async fn origin() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let items: Vec<String> = (0..326)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"item {i:04}","price":{}.25,"tags":["x","y"]}}"#,
                i * 3
            )
        })
        .collect();
    let body = format!("[{}]", items.join(","));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    base
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(engine: &str, table: Table, base: &str, rows: &mut Vec<String>) {
    let cache = HttpCache::builder().build(table.clone()).unwrap();
    let client = CachedClient::new(reqwest::Client::new(), cache);
    let url = format!("{base}/items.json");
    let first = client.get(&url).send().await.unwrap();
    let key = first.cache_facts().cache_key.expect("stored");
    let size = first.bytes().await.unwrap().len();
    let pk = format!("http:{key}");
    let raw = || async {
        table
            .client()
            .get_item()
            .table_name(table.name())
            .key(table.key_attribute(), AttributeValue::S(pk.clone()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    };
    let hit = || async {
        let res = client.get(&url).send().await.unwrap();
        assert!(res.from_cache());
        res.bytes().await.unwrap().len()
    };
    for _ in 0..200 {
        hit().await;
        raw().await;
    }
    let n = 2000;
    let (mut hits, mut raws) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(hit().await, size);
        hits.push(t.elapsed());
        let t = Instant::now();
        raw().await;
        raws.push(t.elapsed());
    }
    // CPU per operation, measured separately so the two do not mix.
    let c = cpu_time();
    for _ in 0..n {
        hit().await;
    }
    let hit_cpu = (cpu_time() - c) / n;
    let c = cpu_time();
    for _ in 0..n {
        raw().await;
    }
    let raw_cpu = (cpu_time() - c) / n;
    let (h, r) = (median(hits), median(raws));
    // What one hit costs: the capacity of the GetItem it makes.
    let before = table.consumed_capacity().read_units;
    hit().await;
    let read_units = table.consumed_capacity().read_units - before;
    rows.push(format!(
        "| {engine} | {size} B JSON | {:.3} | {:.3} | {:.2}x | {:.3} | {:.3} | {read_units} |",
        h.as_secs_f64() * 1e3,
        r.as_secs_f64() * 1e3,
        h.as_secs_f64() / r.as_secs_f64(),
        hit_cpu.as_secs_f64() * 1e3,
        raw_cpu.as_secs_f64() * 1e3,
    ));
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
        let base = origin().await;
        let mut rows = Vec::new();
        let embedded = Table::builder().name("bench_http").open().await.unwrap();
        run("embedded", embedded, &base, &mut rows).await;
        if let Ok(url) = std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL") {
            let local = Table::builder()
                .name(format!("bench_http_{:x}", fastrand::u32(..)))
                .endpoint_url(url)
                .open()
                .await
                .unwrap();
            run("DynamoDB Local", local, &base, &mut rows).await;
        }
        println!("| engine | response | hit median ms | raw GetItem median ms | hit / raw | CPU per hit ms | CPU per raw GetItem ms | read units per hit |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!("{r}");
        }
    });
}
