//! Reliability when DynamoDB is unwell: a silent endpoint, throttling, server errors, a closed
//! port, recovery, and writes kept off the response path.
//!
//! No real engine produces these faults on demand, so these tests point the SDK at stand-ins on
//! 127.0.0.1 instead of engines: a TCP listener that accepts connections and never answers, a
//! closed port, and scripted stand-ins for DynamoDB's HTTP API (mocks, used only for these
//! faults; every other storage test runs on the embedded engine and DynamoDB Local). The origin
//! is the suite's scripted test origin. No test asserts on wall-clock durations: timeouts here
//! are hang guards only.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
use dynacache::{BreakerState, Cache, CircuitBreaker, Error, Table, TablePolicy};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use common::origin::{Origin, Reply};

/// Fails the test if `f` does not finish in 30 s: a hang guard, never a measurement.
async fn guard<F: Future>(f: F) -> F::Output {
    // Boxed: some of these futures are large for a test thread's stack in debug builds.
    tokio::time::timeout(Duration::from_secs(30), Box::pin(f))
        .await
        .expect("hung: no answer within 30 s")
}

// ----- stand-ins --------------------------------------------------------------------------

/// A TCP listener that accepts connections and never answers (nor closes them).
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// A port nothing listens on any more.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Answers one call of DynamoDB's JSON API: the operation (`GetItem`, ...) and its request.
type Handler = Arc<dyn Fn(String, Value) -> BoxFuture<'static, Response> + Send + Sync>;

/// A scripted stand-in for DynamoDB's HTTP API; returns its URL.
async fn stand_in(handler: Handler) -> String {
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let handler = handler.clone();
        async move {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim_start_matches("DynamoDB_20120810.")
                .to_owned();
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            handler(target, request).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}

fn throttled() -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded."
        }),
    )
}

fn server_error() -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({
            "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "message": "Internal server error"
        }),
    )
}

/// What a healthy table answers: no item for reads, success for writes.
fn healthy(target: &str) -> Response {
    match target {
        "BatchWriteItem" => json_response(StatusCode::OK, json!({ "UnprocessedItems": {} })),
        _ => json_response(StatusCode::OK, json!({})),
    }
}

// ----- helpers ----------------------------------------------------------------------------

/// A table on `url` with default settings (timeouts, retries, breaker).
async fn table_on(url: &str) -> Table {
    guard(
        Table::builder()
            .endpoint_url(url)
            .name("reliability")
            .policy(TablePolicy::AssumeExists)
            .open(),
    )
    .await
    .expect("AssumeExists opens without calling the endpoint")
}

/// An origin with a route every request of these tests goes to (each under its own query, so
/// no two requests share a cache key or a trip to the origin). Returns the origin and path.
async fn origin() -> (Origin, String) {
    let origin = Origin::start().await;
    let path = origin.respond(
        "page",
        Reply::ok("from the origin").header("cache-control", "max-age=60"),
    );
    (origin, path)
}

/// Sends GET `path?i=i` through the client; returns the status, whether the cache served it,
/// and the body.
async fn fetch(
    client: &CachedClient,
    origin: &Origin,
    path: &str,
    i: usize,
) -> (u16, bool, String) {
    let res = guard(client.get(origin.url(&format!("{path}?i={i}"))).send())
        .await
        .expect("the request never fails because of the table");
    let from_cache = res.from_cache();
    let status = res.status().as_u16();
    (status, from_cache, res.text().await.unwrap())
}

/// A KV `get` while the breaker is open: `Error::Unavailable`. A call that finds the cool-down
/// just over is the breaker's one probe (it fails and opens the breaker again), so a second
/// call is allowed before judging.
async fn assert_kv_unavailable(kv: &Cache) {
    for attempt in 0..3 {
        let err = guard(kv.get::<String>("k")).await.unwrap_err();
        if err.is_unavailable() {
            return;
        }
        assert!(
            attempt < 2,
            "never Unavailable while the breaker is open: {err:?}"
        );
    }
}

// ----- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_never_hangs_callers_and_opens_the_breaker() {
    let url = silent_endpoint().await;
    // Default settings throughout: the default timeouts alone must bound every call.
    let table = table_on(&url).await;
    let kv = Cache::new(table.clone()).unwrap();
    let err = guard(kv.get::<String>("k")).await.unwrap_err();
    assert!(err.is_timeout(), "a silent endpoint is a timeout: {err:?}");

    let (origin, path) = origin().await;
    let cache = HttpCache::builder().build(table.clone()).unwrap();
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());
    let answers =
        futures::future::join_all((0..16).map(|i| fetch(&client, &origin, &path, i))).await;
    for (status, from_cache, body) in &answers {
        assert_eq!((*status, *from_cache), (200, false));
        assert_eq!(body, "from the origin");
    }
    assert_eq!(
        origin.count(&path),
        16,
        "every request was answered by the origin"
    );

    let health = table.health();
    assert!(health.times_opened >= 1, "{health:?}");
    assert!(cache.stats().storage_errors >= 16, "{:?}", cache.stats());

    // While it is open, requests still get the origin's answer, and storage calls are refused
    // at once instead of waiting on the silent endpoint.
    let refused = table.health().calls_refused;
    for i in 16..20 {
        let (status, from_cache, body) = fetch(&client, &origin, &path, i).await;
        assert_eq!(
            (status, from_cache, body.as_str()),
            (200, false, "from the origin")
        );
    }
    assert_eq!(origin.count(&path), 20);
    assert!(
        table.health().calls_refused > refused,
        "{:?}",
        table.health()
    );
    assert_kv_unavailable(&kv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cancelled_mid_lookup_do_not_open_the_breaker() {
    // A client that hangs up while its request waits on the cache is no sign that DynamoDB is
    // unwell: 40 lookups cancelled in flight (on an endpoint that never answers, so every one
    // is in flight when it is dropped) leave the breaker closed. A lookup that runs past the
    // cache's own deadline does count.
    let url = silent_endpoint().await;
    let table = table_on(&url).await;
    let (origin, path) = origin().await;
    let patient = HttpCache::builder()
        .lookup_timeout(Duration::from_secs(30))
        .build(table.clone())
        .unwrap();
    let client = CachedClient::new(reqwest::Client::new(), patient);
    for i in 0..40 {
        let request = client.get(origin.url(&format!("{path}?i={i}"))).send();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), request)
                .await
                .is_err(),
            "the lookup is still waiting on the silent endpoint"
        );
    }
    let health = table.health();
    assert_eq!(health.times_opened, 0, "{health:?}");
    assert_eq!(health.consecutive_failures, 0, "{health:?}");

    let hasty = HttpCache::builder()
        .lookup_timeout(Duration::from_millis(50))
        .build(table.clone())
        .unwrap();
    let client = CachedClient::new(reqwest::Client::new(), hasty);
    for i in 40..45 {
        let (status, from_cache, _) = fetch(&client, &origin, &path, i).await;
        assert_eq!((status, from_cache), (200, false));
    }
    assert_eq!(
        table.health().times_opened,
        1,
        "5 lookups past the deadline opened it: {:?}",
        table.health()
    );
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    Throttle,
    ServerError,
}

/// A stand-in that fails every call in one way; returns its URL and a count of its calls.
async fn failing_stand_in(failure: Failure) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let url = stand_in(Arc::new(move |_target, _request| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match failure {
                Failure::Throttle => throttled(),
                Failure::ServerError => server_error(),
            }
        }
        .boxed()
    }))
    .await;
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_typed_and_never_fail_an_http_request() {
    for failure in [Failure::Throttle, Failure::ServerError] {
        let (url, calls) = failing_stand_in(failure).await;
        let table = table_on(&url).await;
        let kv = Cache::new(table.clone()).unwrap();
        let err = guard(kv.get::<String>("k")).await.unwrap_err();
        match failure {
            Failure::Throttle => assert!(err.is_throttled(), "{err:?}"),
            Failure::ServerError => assert!(
                matches!(&err, Error::Service { code, .. } if code == "InternalServerError"),
                "{err:?}"
            ),
        }

        let (origin, path) = origin().await;
        let cache = HttpCache::builder().build(table.clone()).unwrap();
        let client = CachedClient::new(reqwest::Client::new(), cache.clone());
        for i in 0..8 {
            let (status, from_cache, body) = fetch(&client, &origin, &path, i).await;
            assert_eq!(
                (status, from_cache, body.as_str()),
                (200, false, "from the origin"),
                "{failure:?}"
            );
        }
        assert_eq!(origin.count(&path), 8, "{failure:?}");
        let health = table.health();
        assert!(health.times_opened >= 1, "{failure:?}: {health:?}");
        assert!(health.calls_refused >= 1, "{failure:?}: {health:?}");
        assert!(calls.load(Ordering::SeqCst) >= 1);
        assert_kv_unavailable(&kv).await;
        assert!(cache.stats().storage_errors >= 8, "{:?}", cache.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_never_fails_an_http_request() {
    let table = table_on(&closed_port()).await;
    let kv = Cache::new(table.clone()).unwrap();
    let err = guard(kv.get::<String>("k")).await.unwrap_err();
    assert!(err.is_unreachable() || err.is_timeout(), "{err:?}");
    let (origin, path) = origin().await;
    let cache = HttpCache::builder().build(table.clone()).unwrap();
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());
    for i in 0..10 {
        let (status, from_cache, body) = fetch(&client, &origin, &path, i).await;
        assert_eq!(
            (status, from_cache, body.as_str()),
            (200, false, "from the origin")
        );
    }
    assert_eq!(origin.count(&path), 10);
    assert!(table.health().times_opened >= 1, "{:?}", table.health());
    assert!(cache.stats().storage_errors >= 10, "{:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cool_down_a_successful_probe_closes_the_breaker() {
    let well = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (state, counted) = (well.clone(), calls.clone());
    let url = stand_in(Arc::new(move |target, _request| {
        counted.fetch_add(1, Ordering::SeqCst);
        let well = state.load(Ordering::SeqCst);
        async move {
            if well {
                healthy(&target)
            } else {
                server_error()
            }
        }
        .boxed()
    }))
    .await;
    let table = guard(
        Table::builder()
            .endpoint_url(&url)
            .name("reliability")
            .policy(TablePolicy::AssumeExists)
            .max_attempts(1)
            .circuit_breaker(CircuitBreaker::new(2, Duration::from_millis(50)))
            .open(),
    )
    .await
    .unwrap();
    let kv = Cache::new(table.clone()).unwrap();
    for _ in 0..2 {
        let err = guard(kv.get::<String>("k")).await.unwrap_err();
        assert!(matches!(err, Error::Service { .. }), "{err:?}");
    }
    assert_eq!(table.health().times_opened, 1, "{:?}", table.health());
    assert_ne!(table.health().state, BreakerState::Closed);

    // After the cool-down, one probe goes through; a failed probe opens the breaker again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = calls.load(Ordering::SeqCst);
    let err = guard(kv.get::<String>("k")).await.unwrap_err();
    assert!(
        matches!(err, Error::Service { .. }),
        "the probe was sent: {err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(table.health().times_opened, 2, "{:?}", table.health());

    // The table recovers: the next probe succeeds and closes the breaker.
    well.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(guard(kv.get::<String>("k")).await.unwrap(), None);
    let health = table.health();
    assert_eq!(health.state, BreakerState::Closed, "{health:?}");
    assert_eq!(health.consecutive_failures, 0);
    assert_eq!(health.times_opened, 2);
    for _ in 0..3 {
        assert_eq!(guard(kv.get::<String>("k")).await.unwrap(), None);
    }
    assert_eq!(table.health().state, BreakerState::Closed);
}

/// A stand-in whose reads answer at once (no item) and whose writes are held until released.
struct Holding {
    url: String,
    release: tokio::sync::watch::Sender<bool>,
    /// Writes that arrived (held until released).
    arrived: Arc<AtomicUsize>,
    /// Writes answered.
    answered: Arc<AtomicUsize>,
    /// The keys of the items PutItem wrote.
    put_keys: Arc<Mutex<BTreeSet<String>>>,
}

async fn holding_stand_in() -> Holding {
    let (release, released) = tokio::sync::watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let put_keys = Arc::new(Mutex::new(BTreeSet::new()));
    let (a, n, p) = (arrived.clone(), answered.clone(), put_keys.clone());
    let url = stand_in(Arc::new(move |target, request| {
        let (arrived, answered, put_keys) = (a.clone(), n.clone(), p.clone());
        let mut released = released.clone();
        async move {
            if !matches!(
                target.as_str(),
                "PutItem" | "BatchWriteItem" | "UpdateItem" | "DeleteItem"
            ) {
                return healthy(&target);
            }
            arrived.fetch_add(1, Ordering::SeqCst);
            let _ = released.wait_for(|r| *r).await;
            if target == "PutItem" {
                let key = request["Item"]["key"]["S"].as_str().unwrap_or_default();
                put_keys.lock().unwrap().insert(key.to_owned());
            }
            answered.fetch_add(1, Ordering::SeqCst);
            healthy(&target)
        }
        .boxed()
    }))
    .await;
    Holding {
        url,
        release,
        arrived,
        answered,
        put_keys,
    }
}

/// A table on a holding stand-in whose calls never time out while they are held.
async fn patient_table(url: &str) -> Table {
    guard(
        Table::builder()
            .endpoint_url(url)
            .name("reliability")
            .policy(TablePolicy::AssumeExists)
            .attempt_timeout(Duration::from_secs(120))
            .operation_timeout(Duration::from_secs(120))
            .open(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_write_does_not_hold_the_response_and_flush_waits_for_it() {
    let fake = holding_stand_in().await;
    let table = patient_table(&fake.url).await;
    let cache = HttpCache::builder()
        .write_wait(Duration::from_millis(50))
        .build(table)
        .unwrap();
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());
    let (origin, path) = origin().await;
    // The response arrives although its write is held (were it waited for, the guard fails).
    let (status, from_cache, body) = fetch(&client, &origin, &path, 0).await;
    assert_eq!(
        (status, from_cache, body.as_str()),
        (200, false, "from the origin")
    );
    assert_eq!(
        fake.answered.load(Ordering::SeqCst),
        0,
        "the write is still held"
    );
    assert_eq!(cache.stats().stored, 0);
    // The write reached the stand-in in the background.
    guard(async {
        while fake.arrived.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    fake.release.send(true).unwrap();
    guard(cache.flush()).await;
    assert_eq!(cache.stats().stored, 1, "{:?}", cache.stats());
    assert_eq!(cache.stats().writes_dropped, 0);
    let keys = fake.put_keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 1, "the stand-in saw the PutItem: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("http:")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_256_under_way_are_dropped_and_counted() {
    const REQUESTS: usize = 300;
    let fake = holding_stand_in().await;
    let table = patient_table(&fake.url).await;
    let cache = HttpCache::builder()
        .write_wait(Duration::from_millis(50))
        .build(table)
        .unwrap();
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());
    let (origin, path) = origin().await;
    let answers: Vec<(u16, bool, String)> = guard(
        futures::stream::iter(0..REQUESTS)
            .map(|i| fetch(&client, &origin, &path, i))
            .buffer_unordered(32)
            .collect(),
    )
    .await;
    assert!(
        answers
            .iter()
            .all(|(s, hit, body)| *s == 200 && !hit && body == "from the origin")
    );
    assert_eq!(origin.count(&path), REQUESTS);
    let stats = cache.stats();
    assert_eq!(stats.stored, 0, "every write is still held");
    assert_eq!(
        stats.writes_dropped,
        (REQUESTS - 256) as u64,
        "256 writes under way at most: {stats:?}"
    );
    fake.release.send(true).unwrap();
    guard(cache.flush()).await;
    assert_eq!(cache.stats().stored, 256, "{:?}", cache.stats());
    assert_eq!(fake.put_keys.lock().unwrap().len(), 256);
    assert_eq!(fake.answered.load(Ordering::SeqCst), 256);
}
