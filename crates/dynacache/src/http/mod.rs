//! The HTTP response cache for reqwest.
//!
//! An [`HttpCache`] stores responses in a DynamoDB table as documents a person can read in the
//! AWS console. Use it through a [`CachedClient`] (async), a [`blocking::CachedClient`], or a
//! [`CacheMiddleware`] in a reqwest-middleware stack: all three share one implementation.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use dynacache::Table;
//! use dynacache::http::{CacheFactsExt, CachedClient, ExpireAfter, HttpCache};
//!
//! let table = Table::builder().name("http_cache").open().await?;
//! let cache = HttpCache::builder()
//!     .expire_after(ExpireAfter::After(Duration::from_secs(600)))
//!     .build(table)?;
//! let client = CachedClient::new(reqwest::Client::new(), cache);
//! let response = client.get("https://httpbin.org/get").send().await?;
//! println!("from cache: {}", response.from_cache());
//! # Ok(()) }
//! ```
//!
//! What is cached and for how long: `Cache-Control`/`Expires` of responses (when
//! `cache_control` is on, the default), then the request's own expiry, then the first matching
//! `url_expire_after` pattern, then `expire_after`. Stale responses with `ETag` or
//! `Last-Modified` are revalidated with conditional requests; a 304 updates the stored headers
//! and expiry without rewriting the body.

mod cache;
mod client;
mod document;
mod inspect;
mod key;
mod settings;

pub use cache::{CacheFacts, CacheFactsExt, CacheStats, HttpCache, HttpCacheBuilder};
pub use client::{CacheMiddleware, CachedClient, CachedRequestBuilder, blocking};
pub use inspect::{CachedEntry, StoredResponse};
pub use settings::{
    DEFAULT_IGNORED_PARAMETERS, ExpireAfter, FilterFn, KeyFn, MatchHeaders, RequestOptions,
    StaleWindow,
};
