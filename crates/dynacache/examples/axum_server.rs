//! Server-side response caching for an axum app: every replica that opens the same table shares
//! one cache.
//!
//! ```text
//! cargo run -p dynacache --example axum_server            # serves on 127.0.0.1:3000
//! cargo run -p dynacache --example axum_server -- --once  # one request to itself, then exits
//! curl -i http://127.0.0.1:3000/report                    # twice: `Cache-Status: dynacache; hit`
//! ```
//! On AWS, open the table with `Table::builder().aws()` (and `TablePolicy::AssumeExists` when
//! the role may not describe or create tables).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use dynacache::http::{CacheLayer, HttpCache};
use dynacache::{InProcessTier, Table};

/// A page that takes a while to build, and may be cached by shared caches for a minute.
async fn report() -> ([(&'static str, &'static str); 1], String) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    (
        [("cache-control", "public, max-age=60")],
        format!("report built at {:?}\n", std::time::SystemTime::now()),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let table = Table::builder().name("axum_example").open().await?;
    table.warm().await?;
    let cache = HttpCache::builder()
        .shared(true)
        .targeted_cache_control(["CDN-Cache-Control"])?
        .in_process(InProcessTier::new(64 << 20).l1_ttl(Duration::from_secs(1)))
        .build(table)?;
    let app = Router::new()
        .route("/report", get(report))
        .route(
            "/live",
            get(|| async { "never cached: no Cache-Control\n" }),
        )
        .layer(CacheLayer::new(cache.clone()));

    let once = std::env::args().any(|a| a == "--once");
    let listener = tokio::net::TcpListener::bind(if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if once {
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let res = client.get(format!("http://{addr}/report")).send().await?;
            println!("Cache-Status: {:?}", res.headers().get("cache-status"));
        }
        cache.flush().await;
        server.abort();
        return Ok(());
    }
    server.await??;
    Ok(())
}
