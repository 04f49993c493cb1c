//! Fault paths no real engine produces on demand: UnprocessedItems/UnprocessedKeys and
//! throttling. These tests point the SDK at a scripted stand-in for DynamoDB's HTTP API on
//! 127.0.0.1 (a mock, and only for these faults; every other storage test runs on real engines).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dynacache::{Cache, Expiry, Table, TablePolicy};
use serde_json::{Value, json};

/// How the stand-in answers.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Batch calls leave their last two requests unprocessed this many times per call chain,
    /// then process everything.
    UnprocessedThenDone(u32),
    /// Batch calls never process their last request.
    AlwaysUnprocessed,
    /// Every call is throttled.
    Throttle,
}

#[derive(Default)]
struct Seen {
    calls: HashMap<String, u32>,
    written: BTreeSet<String>,
    deleted: BTreeSet<String>,
    read_keys: BTreeSet<String>,
    unprocessed_rounds: u32,
    /// `ConsistentRead` of each GetItem.
    consistent_gets: Vec<bool>,
}

struct FakeDynamo {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

fn key_of(v: &Value) -> String {
    v["key"]["S"].as_str().unwrap_or_default().to_owned()
}

async fn start(script: Script) -> FakeDynamo {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let seen = state.clone();
        async move { answer(script, &seen, &headers, &body) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeDynamo { url, seen }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}

fn answer(script: Script, seen: &Mutex<Seen>, headers: &HeaderMap, body: &[u8]) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start_matches("DynamoDB_20120810.")
        .to_owned();
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut seen = seen.lock().unwrap();
    *seen.calls.entry(target.clone()).or_default() += 1;
    if script == Script::Throttle {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded."
            }),
        );
    }
    let leave_unprocessed = match script {
        Script::UnprocessedThenDone(n) => seen.unprocessed_rounds < n,
        Script::AlwaysUnprocessed => true,
        Script::Throttle => unreachable!(),
    };
    match target.as_str() {
        "BatchWriteItem" => {
            let (table, requests) = request["RequestItems"]
                .as_object()
                .and_then(|m| m.iter().next())
                .map(|(t, r)| (t.clone(), r.as_array().cloned().unwrap_or_default()))
                .unwrap();
            let cut = if leave_unprocessed && requests.len() >= 2 {
                seen.unprocessed_rounds += 1;
                requests.len() - 2
            } else if leave_unprocessed {
                seen.unprocessed_rounds += 1;
                0
            } else {
                requests.len()
            };
            for r in &requests[..cut] {
                if let Some(item) = r.get("PutRequest") {
                    seen.written.insert(key_of(&item["Item"]));
                }
                if let Some(del) = r.get("DeleteRequest") {
                    seen.deleted.insert(key_of(&del["Key"]));
                }
            }
            let unprocessed = &requests[cut..];
            let mut out = json!({ "UnprocessedItems": {} });
            if !unprocessed.is_empty() {
                out["UnprocessedItems"][table] = json!(unprocessed);
            }
            json_response(StatusCode::OK, out)
        }
        "BatchGetItem" => {
            let (table, spec) = request["RequestItems"]
                .as_object()
                .and_then(|m| m.iter().next())
                .map(|(t, s)| (t.clone(), s.clone()))
                .unwrap();
            let keys = spec["Keys"].as_array().cloned().unwrap_or_default();
            let cut = if leave_unprocessed && !keys.is_empty() {
                seen.unprocessed_rounds += 1;
                keys.len() - 1
            } else {
                keys.len()
            };
            for k in &keys[..cut] {
                seen.read_keys.insert(key_of(k));
            }
            // Every key read is absent: the test is about which keys were asked for.
            let mut out = json!({ "Responses": { table.clone(): [] }, "UnprocessedKeys": {} });
            if cut < keys.len() {
                let mut rest = spec.clone();
                rest["Keys"] = json!(keys[cut..]);
                out["UnprocessedKeys"][table] = rest;
            }
            json_response(StatusCode::OK, out)
        }
        // A miss for single-item reads.
        "GetItem" => {
            let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
            seen.consistent_gets.push(consistent);
            json_response(StatusCode::OK, json!({}))
        }
        other => json_response(
            StatusCode::BAD_REQUEST,
            json!({
                "__type": "com.amazon.coral.validate#ValidationException",
                "message": format!("the stand-in does not script {other}")
            }),
        ),
    }
}

async fn cache_on(fake: &FakeDynamo) -> Cache {
    let table = Table::builder()
        .endpoint_url(&fake.url)
        .name("faults")
        .policy(TablePolicy::AssumeExists)
        .max_attempts(2)
        .attempt_timeout(Duration::from_secs(5))
        .open()
        .await
        .unwrap();
    Cache::builder().namespace("f").build(table).unwrap()
}

#[tokio::test]
async fn unprocessed_writes_are_retried_until_every_item_is_written() {
    let fake = start(Script::UnprocessedThenDone(6)).await;
    let cache = cache_on(&fake).await;
    let entries: Vec<(String, u32)> = (0..60).map(|i| (format!("k{i:02}"), i)).collect();
    cache
        .set_many(
            entries.iter().map(|(k, v)| (k.as_str(), v)),
            Expiry::Default,
        )
        .await
        .unwrap();
    let seen = fake.seen.lock().unwrap();
    let expected: BTreeSet<String> = (0..60).map(|i| format!("f:k{i:02}")).collect();
    assert_eq!(
        seen.written, expected,
        "every item written once the retries are done"
    );
    assert_eq!(seen.unprocessed_rounds, 6);
    // 60 items are 3 batches of at most 25; six more calls retried what was left over.
    assert_eq!(seen.calls["BatchWriteItem"], 3 + 6);
}

#[tokio::test]
async fn unprocessed_deletes_are_retried_too() {
    let fake = start(Script::UnprocessedThenDone(3)).await;
    let cache = cache_on(&fake).await;
    let keys: Vec<String> = (0..30).map(|i| format!("d{i}")).collect();
    cache.delete_many(&keys).await.unwrap();
    let seen = fake.seen.lock().unwrap();
    let expected: BTreeSet<String> = keys.iter().map(|k| format!("f:{k}")).collect();
    assert_eq!(seen.deleted, expected);
}

#[tokio::test]
async fn unprocessed_keys_are_read_again() {
    let fake = start(Script::UnprocessedThenDone(4)).await;
    let cache = cache_on(&fake).await;
    let keys: Vec<String> = (0..150).map(|i| format!("g{i}")).collect();
    let values: Vec<Option<u32>> = cache.get_many(&keys).await.unwrap();
    assert_eq!(values.len(), 150);
    assert!(values.iter().all(Option::is_none));
    let seen = fake.seen.lock().unwrap();
    let expected: BTreeSet<String> = keys.iter().map(|k| format!("f:{k}")).collect();
    assert_eq!(
        seen.read_keys, expected,
        "every key asked for, the unprocessed ones again"
    );
    assert_eq!(seen.calls["BatchGetItem"], 2 + 4);
}

#[tokio::test]
async fn writes_that_stay_unprocessed_are_a_throttled_error_not_a_silent_loss() {
    let fake = start(Script::AlwaysUnprocessed).await;
    let cache = cache_on(&fake).await;
    let err = cache
        .set_many([("a", &1u32), ("b", &2u32), ("c", &3u32)], Expiry::Default)
        .await
        .unwrap_err();
    assert!(err.is_throttled(), "{err:?}");
    assert!(err.to_string().contains("unprocessed"), "{err}");
    let err = cache.get_many::<u32, _>(["x", "y"]).await.unwrap_err();
    assert!(err.is_throttled(), "{err:?}");
}

#[tokio::test]
async fn throttling_is_a_typed_error_after_the_configured_retries() {
    let fake = start(Script::Throttle).await;
    let cache = cache_on(&fake).await;
    let err = cache.get::<u32>("k").await.unwrap_err();
    assert!(err.is_throttled(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the SDK error is the source"
    );
    // max_attempts(2): the SDK retried once.
    assert_eq!(fake.seen.lock().unwrap().calls["GetItem"], 2);
}

#[cfg(feature = "http")]
#[tokio::test]
async fn a_throttled_table_never_fails_an_http_request() {
    use dynacache::http::{CachedClient, HttpCache};
    let fake = start(Script::Throttle).await;
    let origin = axum::Router::new().route(
        "/r",
        axum::routing::get(|| async { ([("cache-control", "max-age=60")], "origin body") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_url = format!("http://{}/r", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, origin).await;
    });
    let table = Table::builder()
        .endpoint_url(&fake.url)
        .policy(TablePolicy::AssumeExists)
        .max_attempts(1)
        .open()
        .await
        .unwrap();
    let cache = HttpCache::builder().build(table).unwrap();
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());
    for _ in 0..2 {
        let res = client.get(&origin_url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "origin body");
    }
    assert!(cache.stats().storage_errors >= 2, "{:?}", cache.stats());
}

#[tokio::test]
async fn reads_are_eventually_consistent_unless_asked_otherwise() {
    // Local engines are always consistent, so only the request itself shows the setting.
    let fake = start(Script::UnprocessedThenDone(0)).await;
    let eventual = cache_on(&fake).await;
    assert_eq!(eventual.get::<u32>("k").await.unwrap(), None);
    let strong_table = Table::builder()
        .endpoint_url(&fake.url)
        .name("faults")
        .policy(TablePolicy::AssumeExists)
        .consistent_reads(true)
        .open()
        .await
        .unwrap();
    let strong = Cache::new(strong_table).unwrap();
    assert_eq!(strong.get::<u32>("k").await.unwrap(), None);
    assert_eq!(fake.seen.lock().unwrap().consistent_gets, [false, true]);
}
