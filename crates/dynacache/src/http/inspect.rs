//! Inspection and maintenance: listing, counting, deleting and re-dating stored responses. Every
//! call reads the table to its last page and touches only this cache's namespace.

use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use http::Method;

use super::document;
use super::engine::HttpCache;
use super::settings::ExpireAfter;
use crate::clock::millis_to_system_time;
use crate::error::Result;
use crate::table::item::{self, Item, get_i64, get_s};

/// A stored response in full, as read by [`HttpCache::stored_response`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use dynacache::{Table, http::HttpCache};
///
/// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
/// let key = cache.key_for_url("https://example.com/a").unwrap();
/// if let Some(stored) = cache.stored_response(&key).await? {
///     println!("{} {}: {:?}", stored.entry.status, stored.entry.url, stored.headers);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredResponse {
    /// Its metadata.
    pub entry: CachedEntry,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The request headers stored with it (secrets removed).
    pub request_headers: http::HeaderMap,
    /// The body.
    pub body: bytes::Bytes,
}

/// A stored response's metadata (no body), as listed by [`HttpCache::entries`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use futures::TryStreamExt;
/// use dynacache::{Table, http::{CachedEntry, HttpCache}};
///
/// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
/// let expired: Vec<CachedEntry> = cache
///     .entries()
///     .try_filter(|entry| std::future::ready(entry.is_expired))
///     .try_collect()
///     .await?;
/// assert!(expired.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedEntry {
    /// The cache key.
    pub key: String,
    /// The method of the request it answered.
    pub method: String,
    /// The response's URL (secrets removed).
    pub url: String,
    /// The status code.
    pub status: u16,
    /// The body size in bytes.
    pub size: u64,
    /// When it was fetched.
    pub created_at: SystemTime,
    /// When it stops being fresh (`None`: never).
    pub expires: Option<SystemTime>,
    /// Whether it is expired now (it may still be served stale or revalidated).
    pub is_expired: bool,
}

const LISTED: &[&str] = &[
    "kind",
    "method",
    "url",
    "status",
    "size",
    "received",
    item::WRITTEN,
];

impl HttpCache {
    fn entry_of(key: String, item: &Item, now: i64) -> Option<CachedEntry> {
        if get_s(item, document::KIND) != Some(document::KIND_RESPONSE) {
            return None;
        }
        let expires = get_i64(item, item::EXPIRES).and_then(|e| e.ok());
        Some(CachedEntry {
            key,
            method: get_s(item, "method").unwrap_or("GET").to_owned(),
            url: get_s(item, "url").unwrap_or_default().to_owned(),
            status: get_i64(item, "status")
                .and_then(|s| s.ok())
                .unwrap_or(0)
                .clamp(0, u16::MAX as i64) as u16,
            size: get_i64(item, "size")
                .and_then(|s| s.ok())
                .unwrap_or(0)
                .max(0) as u64,
            created_at: millis_to_system_time(
                get_i64(item, "received")
                    .or_else(|| get_i64(item, item::WRITTEN))
                    .and_then(|w| w.ok())
                    .unwrap_or(0),
            ),
            expires: expires.map(millis_to_system_time),
            is_expired: expires.is_some_and(|e| e <= now),
        })
    }

    /// Every stored response (expired ones included), as a stream read page by page.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use futures::TryStreamExt;
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let mut entries = cache.entries();
    /// let mut total = 0;
    /// while let Some(entry) = entries.try_next().await? {
    ///     println!("{} {} {} ({} bytes)", entry.status, entry.method, entry.url, entry.size);
    ///     total += entry.size;
    /// }
    /// assert_eq!(total, 0); // nothing stored yet
    /// # Ok(()) }
    /// ```
    pub fn entries(&self) -> BoxStream<'static, Result<CachedEntry>> {
        let store = self.inner.store.clone();
        self.inner
            .store
            .list(LISTED)
            .try_filter_map(move |listed| {
                let key = listed.key.to_string();
                futures::future::ready(Ok(Self::entry_of(key, &listed.item, store.now())))
            })
            .boxed()
    }

    /// The key a `GET url` request has (`None` for a URL that does not parse).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let key = cache.key_for_url("https://example.com/a?b=1&a=2").unwrap();
    /// // Query parameters are sorted: the same request, the same key.
    /// assert_eq!(cache.key_for_url("https://EXAMPLE.com:443/a?a=2&b=1"), Some(key.clone()));
    /// // Nothing is stored under it yet.
    /// assert!(cache.stored_response(&key).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn key_for_url(&self, url: &str) -> Option<String> {
        let url = url::Url::parse(url).ok()?;
        let parts = super::stored::parts_for(Method::GET, &url)?;
        Some(self.key_for_parts(&parts, &url, &[]))
    }

    /// The key a request has (`None` for a request whose URI is not an absolute URL).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let request = http::Request::get("https://example.com/a").body(Vec::new()).unwrap();
    /// assert_eq!(cache.key_for_request(&request), cache.key_for_url("https://example.com/a"));
    /// # Ok(()) }
    /// ```
    pub fn key_for_request<B: AsRef<[u8]>>(&self, request: &http::Request<B>) -> Option<String> {
        let url = url::Url::parse(&request.uri().to_string()).ok()?;
        let mut parts = super::stored::parts_for(request.method().clone(), &url)?;
        parts.headers = request.headers().clone();
        Some(self.key_for_parts(&parts, &url, request.body().as_ref()))
    }

    /// The stored response under a key (expired or not; following a redirect alias, and for a
    /// `Vary` index, the variant of a request with no headers). `None` when nothing usable is
    /// stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let key = cache.key_for_url("https://example.com/a").unwrap();
    /// match cache.stored_response(&key).await? {
    ///     Some(stored) => println!("{} {:?}", stored.entry.status, stored.body),
    ///     None => println!("not stored"),
    /// }
    /// assert!(cache.stored_response(&key).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn stored_response(&self, key: &str) -> Result<Option<StoredResponse>> {
        let Some(found) = self
            .lookup(key, &http::HeaderMap::new(), false)
            .await?
            .found
        else {
            return Ok(None);
        };
        let now = self.inner.store.now();
        let doc = found.doc;
        Ok(Some(StoredResponse {
            entry: CachedEntry {
                key: found.key,
                method: doc.method.clone(),
                url: doc.url.clone(),
                status: doc.status.as_u16(),
                size: doc.body.len() as u64,
                created_at: millis_to_system_time(doc.received_ms),
                expires: doc.expires_ms.map(millis_to_system_time),
                is_expired: doc.expires_ms.is_some_and(|e| e <= now),
            },
            headers: doc.headers,
            request_headers: doc.request_headers,
            body: doc.body,
        }))
    }

    /// What this cache's namespace holds (a full scan): see [`crate::StorageStats`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let stats = cache.storage_stats().await?;
    /// assert_eq!((stats.entries, stats.chunk_items), (0, 0));
    /// # Ok(()) }
    /// ```
    pub async fn storage_stats(&self) -> Result<crate::StorageStats> {
        self.inner.store.storage_stats(Some("url")).await
    }

    /// Every cache key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// assert!(cache.keys().await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn keys(&self) -> Result<Vec<String>> {
        self.entries().map_ok(|e| e.key).try_collect().await
    }

    /// The distinct URLs of stored responses, sorted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// assert_eq!(cache.urls().await?, Vec::<String>::new());
    /// # Ok(()) }
    /// ```
    pub async fn urls(&self) -> Result<Vec<String>> {
        let mut urls: Vec<String> = self.entries().map_ok(|e| e.url).try_collect().await?;
        urls.sort();
        urls.dedup();
        Ok(urls)
    }

    /// The exact number of stored responses (expired ones included), counted to the last page.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// assert_eq!(cache.response_count().await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn response_count(&self) -> Result<u64> {
        let only_responses = crate::table::Expr::new("#kind = :response")
            .name("#kind", document::KIND)
            .value(":response", item::s(document::KIND_RESPONSE));
        self.inner.store.count(Some(only_responses), false).await
    }

    /// Whether a response is stored under this key: a response, a redirect alias leading to
    /// one, or a `Vary` index naming at least one variant.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let key = cache.key_for_url("https://example.com/a").unwrap();
    /// assert!(!cache.contains_key(&key).await?);
    /// # Ok(()) }
    /// ```
    pub async fn contains_key(&self, key: &str) -> Result<bool> {
        let lookup = self.lookup(key, &http::HeaderMap::new(), true).await?;
        Ok(lookup.found.is_some() || lookup.index.is_some_and(|index| !index.variants.is_empty()))
    }

    /// Whether a response to `GET url` is stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// assert!(!cache.contains_url("https://example.com/a").await?);
    /// assert!(!cache.contains_url("not a URL").await?); // never an error
    /// # Ok(()) }
    /// ```
    pub async fn contains_url(&self, url: &str) -> Result<bool> {
        match self.key_for_url(url) {
            Some(key) => self.contains_key(&key).await,
            None => Ok(false),
        }
    }

    /// Whether a response to this request is stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let request = http::Request::get("https://example.com/a").body(Vec::new()).unwrap();
    /// assert!(!cache.contains_request(&request).await?);
    /// # Ok(()) }
    /// ```
    pub async fn contains_request<B: AsRef<[u8]>>(
        &self,
        request: &http::Request<B>,
    ) -> Result<bool> {
        match self.key_for_request(request) {
            Some(key) => self.contains_key(&key).await,
            None => Ok(false),
        }
    }

    /// Deletes responses by key. A key whose item is a `Vary` index (a response stored in
    /// variants) takes every variant with it. Returns how many responses were there.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let key = cache.key_for_url("https://example.com/a").unwrap();
    /// assert_eq!(cache.delete_keys([key]).await?, 0); // nothing was stored under it
    /// # Ok(()) }
    /// ```
    pub async fn delete_keys<S: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = S>,
    ) -> Result<u64> {
        self.remove_keys(keys.into_iter().map(|k| k.as_ref().to_owned()))
            .await
    }

    /// Deletes the responses to `GET url` for each URL. Returns how many responses were there.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// // A URL that does not parse has no key: it is skipped.
    /// let deleted = cache.delete_urls(["https://example.com/a", "not a URL"]).await?;
    /// assert_eq!(deleted, 0);
    /// # Ok(()) }
    /// ```
    pub async fn delete_urls<S: AsRef<str>>(
        &self,
        urls: impl IntoIterator<Item = S>,
    ) -> Result<u64> {
        let keys: Vec<String> = urls
            .into_iter()
            .filter_map(|u| self.key_for_url(u.as_ref()))
            .collect();
        self.delete_keys(keys).await
    }

    /// Deletes the responses to these requests. Returns how many responses were there.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let a = http::Request::get("https://example.com/a").body(Vec::new()).unwrap();
    /// let b = http::Request::get("https://example.com/b").body(Vec::new()).unwrap();
    /// assert_eq!(cache.delete_requests([&a, &b]).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn delete_requests<'a, B: AsRef<[u8]> + 'a>(
        &self,
        requests: impl IntoIterator<Item = &'a http::Request<B>>,
    ) -> Result<u64> {
        let keys: Vec<String> = requests
            .into_iter()
            .filter_map(|r| self.key_for_request(r))
            .collect();
        self.delete_keys(keys).await
    }

    /// Deletes every expired response. Returns how many.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// assert_eq!(cache.delete_expired().await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn delete_expired(&self) -> Result<u64> {
        let keys: Vec<String> = self
            .entries()
            .try_filter(|e| futures::future::ready(e.is_expired))
            .map_ok(|e| e.key)
            .try_collect()
            .await?;
        self.delete_keys(keys).await
    }

    /// Deletes responses fetched longer ago than `age`. Returns how many.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let week = Duration::from_secs(7 * 86_400);
    /// assert_eq!(cache.delete_older_than(week).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn delete_older_than(&self, age: Duration) -> Result<u64> {
        let cutoff = millis_to_system_time(self.inner.store.now()) - age;
        let keys: Vec<String> = self
            .entries()
            .try_filter(|e| futures::future::ready(e.created_at < cutoff))
            .map_ok(|e| e.key)
            .try_collect()
            .await?;
        self.delete_keys(keys).await
    }

    /// Sets a new expiry, counted from now, on every stored response (an UpdateItem each; the
    /// bodies are not rewritten). Returns how many were updated.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Table, http::{ExpireAfter, HttpCache}};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let hour = ExpireAfter::After(Duration::from_secs(3600));
    /// assert_eq!(cache.reset_expiration(hour).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn reset_expiration(&self, expire_after: ExpireAfter) -> Result<u64> {
        let store = &self.inner.store;
        let expires = expire_after
            .to_expiry()
            .resolve(crate::Expiry::Never, store.now());
        let keys = self.keys().await?;
        let updated: Vec<bool> = futures::stream::iter(keys)
            .map(|k| async move {
                let key = store.key(k.as_bytes())?;
                store.set_expiry(&key, expires).await
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(updated.into_iter().filter(|u| *u).count() as u64)
    }

    /// Copies every stored response of this cache (variants, aliases and bodies in chunks
    /// included, chunks before the items naming them) into `target`'s namespace and table, with
    /// progress as it goes; see [`Cache::copy_to`](crate::Cache::copy_to). Signed responses
    /// are copied as they are, and verify in the target when it has the same secret keys.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let from = HttpCache::builder().build(Table::builder().name("source").open().await?)?;
    /// let to = HttpCache::builder().build(Table::builder().name("target").open().await?)?;
    /// assert_eq!(from.copy_to(&to, |_| {}).await?.items, 0);
    /// # Ok(()) }
    /// ```
    pub async fn copy_to(
        &self,
        target: &HttpCache,
        progress: impl FnMut(crate::CopyProgress),
    ) -> Result<crate::CopyProgress> {
        if let Some(tier) = &target.inner.tier {
            tier.clear();
        }
        // A response's signature covers its key within the namespace, not the namespace: it
        // verifies in the target when the target has the same secret keys.
        self.inner
            .store
            .copy_to(&target.inner.store, |_, _, _| true, progress)
            .await
    }

    /// Deletes every item of this cache. Returns how many items were deleted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, Table, http::HttpCache};
    ///
    /// let table = Table::builder().open().await?;
    /// let cache = HttpCache::builder().build(table.clone())?;
    /// let kv = Cache::new(table)?;
    /// kv.set("answer", &42).await?;
    /// // Only this cache's namespace is cleared: the key/value item in the same table stays.
    /// assert_eq!(cache.clear().await?, 0);
    /// assert_eq!(kv.get::<u32>("answer").await?, Some(42));
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self) -> Result<u64> {
        if let Some(tier) = &self.inner.tier {
            tier.clear();
        }
        self.inner.store.clear().await
    }

    /// Removes what no response names any more: chunk items and (with an
    /// [object store](crate::http::HttpCacheBuilder::object_store)) objects left by a writer
    /// that crashed, by entries that expired, or by batch deletes. Anything written in the last
    /// 15 minutes is left alone, as it may belong to a write in progress. Returns how many
    /// chunk items and objects were deleted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// assert_eq!(cache.vacuum().await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn vacuum(&self) -> Result<u64> {
        self.inner.store.vacuum().await
    }

    /// The object store this cache keeps large bodies in, if any.
    pub fn object_store(&self) -> Option<&crate::ObjectStore> {
        self.inner.store.objects()
    }
}
