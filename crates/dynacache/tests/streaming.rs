//! Large cached bodies are streamed from their chunks as they are sent, not read whole first:
//! the answer starts after the first batch of chunks, every byte sent is checked, and a damaged
//! or vanished chunk ends the body with an error, never with wrong bytes or a short body that
//! looks complete. With signing on, bodies are read and verified whole before they are sent.
//! Every test runs on the embedded engine and on DynamoDB Local, through the tower layer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use bytes::Bytes;
use dynacache::Table;
use dynacache::http::{CacheFactsExt, CacheLayer, HttpCache, HttpCacheBuilder};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::common::Engine;
use crate::common::calls::StorageCalls;

/// 24 MiB of noise: stored uncompressed, in about 70 chunks (9 batches of reads).
const BIG: usize = 24 * 1024 * 1024;

const BATCH_GET: &str = "BatchGetItem";

fn noise() -> Bytes {
    let mut rng = fastrand::Rng::with_seed(7);
    Bytes::from((0..BIG).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

fn app(cache: HttpCache, body: Bytes) -> Router {
    Router::new()
        .route(
            "/big",
            get(move || {
                let body = body.clone();
                async move { ([("cache-control", "max-age=600")], body) }
            }),
        )
        .layer(CacheLayer::new(cache))
}

fn builder() -> HttpCacheBuilder {
    HttpCache::builder()
        .shared(true)
        .write_wait(Duration::from_secs(120))
        .max_body_size(64 * 1024 * 1024)
}

fn big() -> Request<Body> {
    Request::get("/big")
        .header("host", "app.example")
        .body(Body::empty())
        .unwrap()
}

/// Stores the big response (a miss), and returns the cache's answer to a second request (a
/// hit) before its body is read.
async fn stored_then_hit(
    table: &Table,
    cache: HttpCache,
    body: &Bytes,
) -> axum::response::Response {
    let app = app(cache.clone(), body.clone());
    let first = app.clone().oneshot(big()).await.unwrap();
    assert!(!first.from_cache());
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), *body);
    cache.flush().await;
    assert!(chunk_keys(table).await.len() > 60, "stored in chunks");
    let second = app.oneshot(big()).await.unwrap();
    assert!(second.from_cache());
    assert_eq!(
        second.headers()["content-length"],
        BIG.to_string().as_str(),
        "the length is known before the body is read"
    );
    second
}

async fn large_cached_bodies_stream_from_their_chunks(engine: Engine) {
    let Some(table) = common::table(engine).await else {
        return;
    };
    let body = noise();
    let (calls, _guard) = StorageCalls::install();
    let cache = builder().build(table.clone()).unwrap();
    let before = calls.count(BATCH_GET);
    let mut res = stored_then_hit(&table, cache, &body).await.into_body();
    let first = res.frame().await.unwrap().unwrap().into_data().unwrap();
    let at_first = calls.count(BATCH_GET) - before;
    assert!(
        at_first <= 3,
        "the answer starts after the first batches of chunks, not all 9: {at_first}"
    );
    let mut got = first.to_vec();
    while let Some(frame) = res.frame().await {
        got.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert!(got == body, "every byte, in order");
    assert!(
        calls.count(BATCH_GET) - before >= 9,
        "then every batch is read"
    );
}

async fn a_damaged_chunk_ends_the_body_with_an_error(engine: Engine) {
    let Some(table) = common::table(engine).await else {
        return;
    };
    let body = noise();
    let cache = builder().build(table.clone()).unwrap();
    let app = app(cache.clone(), body.clone());
    app.clone()
        .oneshot(big())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    cache.flush().await;
    // The 40th chunk, past the first parts: the answer has started when it is read.
    damage_chunk(&table, "!40").await;

    let res = app.oneshot(big()).await.unwrap();
    assert!(res.from_cache());
    let mut body_stream = res.into_body();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(frame) = body_stream.frame().await {
        match frame {
            Ok(frame) => got.extend_from_slice(&frame.into_data().unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ends with an error");
    assert!(got.len() < BIG, "never the whole length: {}", got.len());
    assert!(
        body.starts_with(&got),
        "what was sent is the stored body's start"
    );
}

async fn signed_large_bodies_are_verified_whole_before_they_are_sent(engine: Engine) {
    let Some(table) = common::table(engine).await else {
        return;
    };
    let body = noise();
    let (calls, _guard) = StorageCalls::install();
    let cache = builder()
        .secret_keys([b"0123456789abcdef0123456789abcdef"])
        .build(table.clone())
        .unwrap();
    let before = calls.count(BATCH_GET);
    let res = stored_then_hit(&table, cache, &body).await;
    let at_answer = calls.count(BATCH_GET) - before;
    assert!(
        at_answer >= 9,
        "every chunk read before the answer: {at_answer}"
    );
    assert!(res.into_body().collect().await.unwrap().to_bytes() == body);
}

/// A response replaced while a hit streams it: the same bytes stored again (a refresh of an
/// unchanged response) are followed to the end; other bytes end the body with an error.
async fn a_body_replaced_while_streamed_is_followed_only_to_the_same_bytes(engine: Engine) {
    let Some(table) = common::table(engine).await else {
        return;
    };
    let calls = Arc::new(Mutex::new(0u64));
    let changing = {
        let calls = calls.clone();
        Router::new().route(
            "/big",
            get(move || {
                let calls = calls.clone();
                async move {
                    // The same noise for the first two fetches, other noise after.
                    let mut n = calls.lock().unwrap();
                    *n += 1;
                    let mut rng = fastrand::Rng::with_seed(if *n <= 2 { 7 } else { *n });
                    let body: Vec<u8> = (0..BIG).map(|_| rng.u8(..)).collect();
                    ([("cache-control", "max-age=600")], body)
                }
            }),
        )
    };
    let cache = builder().build(table.clone()).unwrap();
    let app = changing.layer(CacheLayer::new(cache.clone()));
    let body = noise();
    let first = app.clone().oneshot(big()).await.unwrap();
    assert!(first.into_body().collect().await.unwrap().to_bytes() == body);
    cache.flush().await;
    let refetch = || {
        Request::get("/big")
            .header("host", "app.example")
            .header("cache-control", "no-cache")
            .body(Body::empty())
            .unwrap()
    };

    // Replaced by the same bytes (fetch 2) while streamed: followed.
    let hit = app.clone().oneshot(big()).await.unwrap();
    assert!(hit.from_cache());
    let mut stream = hit.into_body();
    let mut got = stream
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    let again = app.clone().oneshot(refetch()).await.unwrap();
    assert!(!again.from_cache());
    again.into_body().collect().await.unwrap();
    cache.flush().await;
    while let Some(frame) = stream.frame().await {
        got.extend_from_slice(&frame.expect("followed to the end").into_data().unwrap());
    }
    assert!(got == body);

    // Replaced by other bytes (fetch 3) while streamed: an error, after the old bytes only.
    let hit = app.clone().oneshot(big()).await.unwrap();
    assert!(hit.from_cache());
    let mut stream = hit.into_body();
    let mut got = stream
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    let other = app.clone().oneshot(refetch()).await.unwrap();
    assert!(other.into_body().collect().await.unwrap().to_bytes() != body);
    cache.flush().await;
    let mut failed = false;
    while let Some(frame) = stream.frame().await {
        match frame {
            Ok(frame) => got.extend_from_slice(&frame.into_data().unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "other bytes cannot continue this body");
    assert!(got.len() < BIG && body.starts_with(&got));
    assert_eq!(*calls.lock().unwrap(), 3);
}

/// A body whose first chunks cannot be read is a miss answered whole from the origin, not a
/// broken answer: the stream's first part is read before the answer is committed.
async fn a_body_damaged_at_its_start_is_a_miss(engine: Engine) {
    let Some(table) = common::table(engine).await else {
        return;
    };
    let body = noise();
    let cache = builder().build(table.clone()).unwrap();
    let app = app(cache.clone(), body.clone());
    app.clone()
        .oneshot(big())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    cache.flush().await;
    damage_chunk(&table, "!0").await;
    let res = app.oneshot(big()).await.unwrap();
    assert!(!res.from_cache(), "a miss");
    assert!(res.into_body().collect().await.unwrap().to_bytes() == body);
    assert_eq!(
        cache.stats().verification_failures + cache.stats().storage_errors,
        1
    );
}

/// Flips a byte in the chunk whose key ends with `suffix`: it no longer matches its checksum.
async fn damage_chunk(table: &Table, suffix: &str) {
    let key = chunk_keys(table)
        .await
        .into_iter()
        .find(|k| k.ends_with(suffix))
        .unwrap();
    let item = table
        .client()
        .get_item()
        .table_name(table.name())
        .key(
            table.key_attribute(),
            aws_sdk_dynamodb::types::AttributeValue::S(key.clone()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut data = item["d"].as_b().unwrap().clone().into_inner();
    data[100] ^= 1;
    let mut damaged = item.clone();
    damaged.insert(
        "d".into(),
        aws_sdk_dynamodb::types::AttributeValue::B(data.into()),
    );
    table
        .client()
        .put_item()
        .table_name(table.name())
        .set_item(Some(damaged))
        .send()
        .await
        .unwrap();
}

/// The partition keys of chunk items.
async fn chunk_keys(table: &Table) -> Vec<String> {
    let mut keys = common::all_partition_keys(table).await;
    keys.retain(|pk| pk.contains('!'));
    keys
}

on_both_engines!(
    large_cached_bodies_stream_from_their_chunks,
    a_damaged_chunk_ends_the_body_with_an_error,
    signed_large_bodies_are_verified_whole_before_they_are_sent,
    a_body_replaced_while_streamed_is_followed_only_to_the_same_bytes,
    a_body_damaged_at_its_start_is_a_miss,
);
