//! Metrics into Prometheus: a key/value cache and an HTTP cache on the embedded engine record
//! through the `metrics` facade into a Prometheus exporter, and the scrape is printed. The
//! metric names and labels are listed in the docs of `dynacache::metrics` (src/metrics.rs).
//!
//! ```text
//! cargo run -p dynacache --example prometheus
//! ```
//!
//! A server serves `handle.render()` on its `/metrics` route. The exporter can also listen by
//! itself (its `http-listener` feature): bind it to loopback, `.with_http_listener(([127, 0, 0,
//! 1], 9000))`, unless the scraper must reach it from elsewhere.

use std::time::Duration;

use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
use dynacache::{Cache, Expiry, InProcessTier, Table};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every metric dynacache records from now on goes to this exporter.
    let handle = PrometheusBuilder::new().install_recorder()?;

    let table = Table::builder().name("metrics_demo").open().await?; // embedded, in memory
    table.warm().await?;

    // Key/value: a hit from the table, one from memory, a miss, and a read-through value
    // computed once then served from the cache.
    let kv = Cache::builder()
        .in_process(InProcessTier::new(16 << 20))
        .build(table.clone())?;
    kv.set("answer", &42u32).await?;
    kv.get::<u32>("answer").await?;
    kv.get::<u32>("answer").await?;
    kv.get::<u32>("missing").await?;
    for _ in 0..3 {
        let _: String = kv
            .get_or_insert_with("report", Expiry::After(Duration::from_secs(60)), || async {
                "computed once".to_owned()
            })
            .await;
    }

    // HTTP: a miss that is stored, then hits.
    let origin = start_origin().await?;
    let http = HttpCache::builder().build(table)?;
    let client = CachedClient::new(reqwest::Client::new(), http.clone());
    for _ in 0..3 {
        let response = client.get(format!("{origin}/greeting")).send().await?;
        let hit = response.from_cache();
        println!("GET /greeting: {}", if hit { "hit" } else { "miss" });
        response.bytes().await?;
        http.flush().await; // the first response is stored off the response path
    }

    println!("\n# The scrape:\n{}", handle.render());
    Ok(())
}

/// A tiny origin on 127.0.0.1: `/greeting`, cacheable for five minutes.
async fn start_origin() -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                if socket.read(&mut request).await.is_err() {
                    return;
                }
                let body = "hello";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: max-age=300\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(base)
}
