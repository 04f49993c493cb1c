//! The HTTP cache on the embedded engine, against a tiny origin on 127.0.0.1: no set-up, no
//! network.
//!
//! ```text
//! cargo run -p dynacache --example http_quickstart
//! ```

use std::time::{Duration, Instant};

use dynacache::Table;
use dynacache::http::{CacheFactsExt, CachedClient, ExpireAfter, HttpCache};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let origin = start_origin().await?;

    let table = Table::builder().name("http_cache").open().await?; // embedded, in memory
    let cache = HttpCache::builder()
        .expire_after(ExpireAfter::After(Duration::from_secs(300)))
        .build(table)?;
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());

    for round in 1..=2 {
        for path in ["/users.json", "/etag"] {
            let started = Instant::now();
            let response = client.get(format!("{origin}{path}")).send().await?;
            let facts = response.cache_facts();
            let status = response.status();
            let size = response.bytes().await?.len();
            println!(
                "round {round} {path:<12} {status} {size:>6} B  {:<11} {:>7.2} ms",
                if facts.revalidated {
                    "revalidated"
                } else if facts.from_cache {
                    "hit"
                } else {
                    "miss"
                },
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    println!("stored responses: {}", cache.response_count().await?);
    for url in cache.urls().await? {
        println!("  {url}");
    }
    println!("stats: {:?}", cache.stats());
    Ok(())
}

/// A small origin: a JSON document, and a resource with an ETag that is always stale.
async fn start_origin() -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let Ok(n) = socket.read(&mut buf).await else {
                    return;
                };
                let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let (headers, body) = if request.starts_with("get /etag") {
                    if request.contains("if-none-match: \"v1\"") {
                        ("HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncache-control: no-cache\r\n".to_owned(), String::new())
                    } else {
                        ("HTTP/1.1 200 OK\r\netag: \"v1\"\r\ncache-control: no-cache\r\ncontent-type: text/plain\r\n".to_owned(), "version 1".to_owned())
                    }
                } else {
                    let users: Vec<String> = (0..200)
                        .map(|i| {
                            format!(
                                r#"{{"id":{i},"name":"user {i}","score":{}}}"#,
                                i as f64 * 1.5
                            )
                        })
                        .collect();
                    (
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_owned(),
                        format!("[{}]", users.join(",")),
                    )
                };
                let response = format!(
                    "{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(base)
}
