//! An [http-cache](https://docs.rs/http-cache) `CacheManager` on DynamoDB (feature
//! `http-cache`): users of `http-cache-reqwest`, `http-cache-tower` and
//! `http-cache-tower-server` keep http-cache's semantics and get one cache shared by every
//! process that opens the table.
//!
//! Each record is http-cache's own pair of response and `CachePolicy`, stored as one value of a
//! key/value [`Cache`] (MessagePack; compressed, and split into chunks past 400 KB, like every
//! value), so http-cache's decisions are exactly its own. Records expire in DynamoDB when their
//! freshness ends plus [`keep_stale`](DynamoDbManager::keep_stale) (default one day, so that
//! stale records can still be revalidated). The manager fails open: a record that cannot be read
//! is a miss, one that cannot be written is logged, and neither fails the request.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dynacache::Table;
//! use dynacache::http_cache::DynamoDbManager;
//! use http_cache_reqwest::{Cache, CacheMode, HttpCache, HttpCacheOptions};
//!
//! let manager = DynamoDbManager::new(Table::builder().name("http_cache").open().await?)?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(Cache(HttpCache {
//!         mode: CacheMode::Default,
//!         manager,
//!         options: HttpCacheOptions::default(),
//!     }))
//!     .build();
//! let response = client.get("https://example.com/").send().await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use http_cache::{CacheManager, HttpResponse};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::{Cache, Expiry, Table};

/// The namespace records go to by default.
pub const DEFAULT_NAMESPACE: &str = "http-cache";

/// http-cache's `CacheManager`, on a DynamoDB table. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use std::time::Duration;
/// use dynacache::Table;
/// use dynacache::http_cache::DynamoDbManager;
///
/// let manager = DynamoDbManager::new(Table::builder().open().await?)?
///     .keep_stale(Duration::from_secs(3600));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DynamoDbManager {
    cache: Cache,
    keep_stale: Duration,
}

/// One record: what http-cache hands a manager.
#[derive(Serialize, Deserialize)]
struct Store {
    response: HttpResponse,
    policy: CachePolicy,
}

impl DynamoDbManager {
    /// A manager storing records in `table`, namespace `http-cache`.
    pub fn new(table: Table) -> crate::Result<Self> {
        Ok(Self::with_cache(
            Cache::builder().namespace(DEFAULT_NAMESPACE).build(table)?,
        ))
    }

    /// A manager storing records in this key/value cache (its namespace, in-process tier,
    /// signing keys and limits apply).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, InProcessTier, Table};
    /// use dynacache::http_cache::DynamoDbManager;
    ///
    /// let cache = Cache::builder()
    ///     .namespace("responses")
    ///     .in_process(InProcessTier::new(64 << 20))
    ///     .build(Table::builder().open().await?)?;
    /// let manager = DynamoDbManager::with_cache(cache);
    /// # Ok(()) }
    /// ```
    pub fn with_cache(cache: Cache) -> Self {
        DynamoDbManager {
            cache,
            keep_stale: Duration::from_secs(86_400),
        }
    }

    /// How long a record is kept after its freshness ends, for revalidation (default one day).
    pub fn keep_stale(mut self, keep: Duration) -> Self {
        self.keep_stale = keep;
        self
    }

    /// The key/value cache records are stored in.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl CacheManager for DynamoDbManager {
    async fn get(
        &self,
        cache_key: &str,
    ) -> http_cache::Result<Option<(HttpResponse, CachePolicy)>> {
        match self.cache.get::<Store>(cache_key).await {
            Ok(found) => Ok(found.map(|s| (s.response, s.policy))),
            Err(e) => {
                tracing::warn!(error = %e, "dynacache: reading an http-cache record failed; a miss");
                Ok(None)
            }
        }
    }

    async fn put(
        &self,
        cache_key: String,
        response: HttpResponse,
        policy: CachePolicy,
    ) -> http_cache::Result<HttpResponse> {
        let lifetime = policy
            .time_to_live(SystemTime::now())
            .saturating_add(self.keep_stale);
        let record = Store { response, policy };
        if let Err(e) = self
            .cache
            .set_with(&cache_key, &record, Expiry::After(lifetime))
            .await
        {
            tracing::warn!(error = %e, "dynacache: storing an http-cache record failed");
        }
        Ok(record.response)
    }

    async fn delete(&self, cache_key: &str) -> http_cache::Result<()> {
        if let Err(e) = self.cache.delete(cache_key).await {
            tracing::warn!(error = %e, "dynacache: deleting an http-cache record failed");
        }
        Ok(())
    }
}
