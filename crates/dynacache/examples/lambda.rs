//! An AWS Lambda function (API Gateway HTTP API) whose responses are cached in DynamoDB by the
//! tower layer: every concurrent execution environment shares one cache, which survives cold
//! starts.
//!
//! ```text
//! cargo lambda build --release --example lambda    # with cargo-lambda, to deploy
//! ```
//! Run outside Lambda it says so and exits (the runtime needs the variables Lambda sets); the
//! test suite compiles it. On Lambda: create the table once (`dynacache --aws table create`), grant the
//! role the item actions of `dynacache table template --format iam`, and set
//! `DYNACACHE_TABLE`.

use std::time::Duration;

use dynacache::http::{CacheLayer, HttpCache};
use dynacache::{Table, TablePolicy};
use lambda_http::{Body, Error, Request, Response};
use tower::ServiceBuilder;

async fn handler(request: Request) -> Result<Response<Body>, Error> {
    let name = request.uri().path().trim_start_matches('/').to_owned();
    Ok(Response::builder()
        .header("cache-control", "public, max-age=300")
        .header("content-type", "text/plain")
        .body(Body::from(format!("hello, {name}\n")))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        eprintln!("not running on AWS Lambda: deploy this example with cargo-lambda");
        return Ok(());
    }
    // Built once per execution environment, during init; clones share the connection.
    let table = Table::builder()
        .aws()
        .name(std::env::var("DYNACACHE_TABLE").unwrap_or_else(|_| "dynacache".into()))
        // No control-plane call on a cold start, and bounded waits below the function's timeout.
        .policy(TablePolicy::AssumeExists)
        .operation_timeout(Duration::from_secs(2))
        .open()
        .await?;
    // Opens the connection during init, which runs at full CPU, not on the first request.
    if let Err(e) = table.warm().await {
        eprintln!("the cache table is not reachable yet ({e}); serving without it");
    }
    let cache = HttpCache::builder().shared(true).build(table)?;
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new(cache).scheme(http::uri::Scheme::HTTPS))
        .service(lambda_http::service_fn(handler));
    lambda_http::run_with_streaming_response(service).await
}
