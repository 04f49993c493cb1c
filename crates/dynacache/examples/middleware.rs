//! The HTTP cache as a reqwest-middleware layer, next to other middleware.
//!
//! ```text
//! cargo run -p dynacache --example middleware -- https://example.com/
//! ```
//! (Without a URL it starts a local origin, so it runs with no network.)

use dynacache::Table;
use dynacache::http::{CacheFactsExt, CacheMiddleware, HttpCache, RequestOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => local_origin().await?,
    };
    let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(CacheMiddleware::new(cache))
        .build();

    for attempt in 1..=2 {
        let response = client.get(&url).send().await?;
        println!(
            "attempt {attempt}: {} from cache: {}",
            response.status(),
            response.from_cache()
        );
    }
    // Per-request options travel as an extension.
    let response = client
        .get(&url)
        .with_extension(RequestOptions {
            force_refresh: true,
            ..Default::default()
        })
        .send()
        .await?;
    println!("forced refresh: from cache: {}", response.from_cache());
    Ok(())
}

async fn local_origin() -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                )
                .await;
        }
    });
    Ok(url)
}
