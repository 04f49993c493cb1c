//! The HTTP response cache: one RFC 9111 engine, private or shared.
//!
//! An [`HttpCache`] stores responses in a DynamoDB table as documents a person can read in the
//! AWS console. Its engine works on plain `http` types; use it through a [`CachedClient`]
//! (async), a [`blocking::CachedClient`], or a [`CacheMiddleware`] in a reqwest-middleware
//! stack: all three are thin adapters over the same engine.
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
//! What is stored and for how long follows RFC 9111: explicit freshness in the response
//! (`Cache-Control` `max-age`, `s-maxage` in a shared cache, `Expires`) wins; without it, the
//! request's own expiry, then the first matching `url_expire_after` pattern, then
//! `expire_after` (whose default depends on the mode, see
//! [`HttpCacheBuilder::expire_after`]). Stale responses with `ETag` or `Last-Modified` are
//! revalidated with conditional requests; a 304 updates the stored headers and expiry without
//! rewriting the body. Responses served from the cache carry an `Age` header; a client's own
//! `If-None-Match`/`If-Modified-Since` is answered with a 304 and a `Range` with a 206; a
//! successful POST, PUT, DELETE or PATCH removes the stored responses of its URL from the table.
//! `docs/rfc9111.md` maps each rule to the test that proves it.

mod body;
mod builder;
mod document;
mod engine;
mod facts;
mod fleet;
mod front;
#[cfg(test)]
pub(crate) mod fuzzing;
mod inspect;
mod key;
mod policy;
mod reply;
mod settings;
mod stored;
mod tags;

pub use body::{BoxError, CacheBody};
pub use builder::HttpCacheBuilder;
pub use engine::HttpCache;
pub use facts::{CacheFacts, CacheFactsExt, CacheStats, Forward};
pub use front::reqwest::{CacheMiddleware, CachedClient, CachedRequestBuilder, blocking};
pub use front::tower::{CacheLayer, CacheService};
pub use inspect::{CachedEntry, StoredResponse};
pub use settings::{
    DEFAULT_IGNORED_PARAMETERS, ExpireAfter, FilterFn, KeyFn, MatchHeaders, RequestOptions,
    SetCookie, StaleWindow,
};
