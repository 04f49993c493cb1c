//! The HTTP client through an unwell DynamoDB, with default settings: a killed endpoint (port
//! closed), a silent one (accepts connections, never answers), a throttling one and an erroring
//! one (stand-ins for DynamoDB's HTTP API on 127.0.0.1). For each: how many requests were
//! answered and failed, and the latency the cache added over the origin's own, before and after
//! the circuit breaker opened. Reproduce with `scripts/bench faults`.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use dynacache::http::{CachedClient, HttpCache};
use dynacache::{Table, TablePolicy};
use futures::StreamExt;

const REQUESTS: usize = 2000;
const CONCURRENCY: usize = 16;

/// A local origin answering 20 KB of JSON, cacheable for a minute.
async fn origin() -> String {
    let body = format!("[{}]", vec![r#"{"id":1,"name":"item"}"#; 900].join(","));
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [
                    ("content-type", "application/json"),
                    ("cache-control", "max-age=60"),
                ],
                body,
            )
        }
    });
    serve(app).await
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn silent() -> String {
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

fn killed() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// A stand-in answering every call with this DynamoDB error.
async fn failing(status: StatusCode, kind: &'static str, message: &'static str) -> String {
    let app = axum::Router::new().fallback(move |_: HeaderMap, _: Bytes| async move {
        (
            status,
            [("content-type", "application/x-amz-json-1.0")],
            serde_json::json!({ "__type": kind, "message": message }).to_string(),
        )
            .into_response()
    });
    serve(app).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `REQUESTS` GETs, `CONCURRENCY` at a time; latencies of the answered ones in request order.
async fn load(
    client: &reqwest::Client,
    cached: Option<&CachedClient>,
    url: &str,
) -> (Vec<Duration>, usize) {
    let results: Vec<Option<Duration>> = futures::stream::iter(0..REQUESTS)
        .map(|_| async move {
            let started = Instant::now();
            let res = match cached {
                Some(c) => c.get(url).send().await,
                None => client.get(url).send().await,
            };
            match res {
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.ok()?;
                    Some(started.elapsed())
                }
                _ => None,
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_none()).count();
    (results.into_iter().flatten().collect(), failed)
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
        let origin = origin().await;
        let url = format!("{origin}/items.json");
        let plain = reqwest::Client::new();
        // The origin's own latency, through the same kind of client.
        let (mut own, _) = load(&plain, None, &url).await;
        own.sort();
        let (own50, own99) = (percentile(&own, 0.5), percentile(&own, 0.99));
        println!("origin alone: p50 {:.2} ms, p99 {:.2} ms ({REQUESTS} requests, {CONCURRENCY} at a time)", ms(own50), ms(own99));
        println!();
        println!("| DynamoDB endpoint | answered | failed | breaker opened (times) | calls refused | p50 ms, breaker open | p99 ms, breaker open | slowest request before it opened ms |");
        println!("|---|---|---|---|---|---|---|---|");
        let endpoints = [
            ("killed (port closed)", killed()),
            ("silent (never answers)", silent().await),
            (
                "throttling",
                failing(
                    StatusCode::BAD_REQUEST,
                    "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded.",
                )
                .await,
            ),
            (
                "erroring (500)",
                failing(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "com.amazonaws.dynamodb.v20120810#InternalServerError",
                    "Internal server error",
                )
                .await,
            ),
        ];
        for (name, endpoint) in endpoints {
            // Default settings, as a user who configures nothing gets them.
            let table = Table::builder()
                .endpoint_url(endpoint)
                .policy(TablePolicy::AssumeExists)
                .open()
                .await
                .unwrap();
            let cache = HttpCache::builder().build(table.clone()).unwrap();
            let client = CachedClient::new(reqwest::Client::new(), cache.clone());
            let (latencies, failed) = load(&plain, Some(&client), &url).await;
            let health = table.health();
            // Requests answered after the breaker opened: all but the first ones, which paid
            // the timeouts or errors that opened it. Take the last three quarters.
            let (before, after) = latencies.split_at(latencies.len() / 4);
            let mut after = after.to_vec();
            after.sort();
            let slowest_before = before.iter().max().copied().unwrap_or_default();
            println!(
                "| {name} | {} | {failed} | {} | {} | {:.2} | {:.2} | {:.0} |",
                latencies.len(),
                health.times_opened,
                health.calls_refused,
                ms(percentile(&after, 0.5)),
                ms(percentile(&after, 0.99)),
                ms(slowest_before),
            );
            cache.flush().await;
        }
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
