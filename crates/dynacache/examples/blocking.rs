//! The blocking HTTP and key/value caches, for programs without an async runtime.
//!
//! ```text
//! cargo run -p dynacache --example blocking -- https://example.com/
//! ```
//! (Without a URL it starts a local origin, so it runs with no network.)

use dynacache::http::{HttpCache, blocking::CachedClient};
use dynacache::{CacheBuilder, Table};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => local_origin()?,
    };
    let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
    for attempt in 1..=2 {
        let response = client.get(&url)?;
        println!(
            "attempt {attempt}: {} {} bytes, from cache: {}",
            response.status(),
            response.body.len(),
            response.from_cache
        );
    }

    let kv = dynacache::blocking::Cache::open(Table::builder(), CacheBuilder::default())?;
    kv.set("greeting", "hello")?;
    println!("kv: {:?}", kv.get::<String>("greeting")?);
    Ok(())
}

fn local_origin() -> std::io::Result<String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/", listener.local_addr()?);
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf);
            let _ = socket.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    Ok(url)
}
