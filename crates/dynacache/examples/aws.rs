//! The HTTP and key/value caches on AWS DynamoDB (or any endpoint), configured from the
//! environment: `AWS_REGION`, `AWS_PROFILE`, credentials from the standard chain, and
//! `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local.
//!
//! ```text
//! DYNACACHE_TABLE=my_cache AWS_REGION=eu-west-1 cargo run -p dynacache --example aws -- https://example.com/
//! AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 cargo run -p dynacache --example aws -- https://example.com/
//! ```

use std::time::Duration;

use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
use dynacache::{Cache, Table, TablePolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: aws URL")?;
    let name = std::env::var("DYNACACHE_TABLE").unwrap_or_else(|_| "dynacache".into());
    let policy = match std::env::var("DYNACACHE_TABLE_POLICY").as_deref() {
        Ok("assume-exists") => TablePolicy::AssumeExists,
        Ok("validate") => TablePolicy::Validate,
        _ => TablePolicy::CreateIfMissing,
    };
    let mut builder = Table::builder()
        .aws()
        .name(name)
        .policy(policy)
        .max_attempts(5)
        .operation_timeout(Duration::from_secs(10));
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB") {
        builder = builder.endpoint_url(endpoint);
    }
    let table = builder.open().await?;
    println!("table {} on {:?}", table.name(), table.engine());

    let client = CachedClient::new(
        reqwest::Client::new(),
        HttpCache::builder().build(table.clone())?,
    );
    for attempt in 1..=2 {
        let response = client.get(&url).send().await?;
        println!(
            "attempt {attempt}: {} from cache: {}",
            response.status(),
            response.from_cache()
        );
    }
    let kv = Cache::new(table.clone())?;
    println!("kv counter: {}", kv.inc("example-runs", 1).await?);
    println!("capacity consumed: {:?}", table.consumed_capacity());
    Ok(())
}
