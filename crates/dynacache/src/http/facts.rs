//! What the cache did: per response ([`CacheFacts`]) and since it was built ([`CacheStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// What the cache did for a response. Every response that goes through the cache carries one in
/// its extensions; read it with [`CacheFactsExt::cache_facts`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use dynacache::Table;
/// use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
///
/// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
/// let client = CachedClient::new(reqwest::Client::new(), cache);
/// let response = client.get("https://example.com/").only_if_cached().send().await?;
/// let facts = response.cache_facts();
/// println!("key: {:?}, expires: {:?}", facts.cache_key, facts.expires);
/// assert!(!facts.from_cache); // a 504: nothing is stored yet
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheFacts {
    /// Served from the cache (fresh, revalidated, or stale).
    pub from_cache: bool,
    /// The cached response was revalidated with the origin (a 304) before being served.
    pub revalidated: bool,
    /// Served although stale (`stale-while-revalidate`, `stale-if-error` or the request's
    /// `max-stale`).
    pub stale: bool,
    /// The response came from another request's trip to the origin: this request waited for
    /// it instead of sending its own.
    pub coalesced: bool,
    /// When the stored response was received from the origin (or last revalidated).
    pub created_at: Option<SystemTime>,
    /// When it stops being fresh (`None`: never, or not stored).
    pub expires: Option<SystemTime>,
    /// Whether it is stale now.
    pub is_expired: bool,
    /// The cache key, when the response was read from or written to the cache.
    pub cache_key: Option<String>,
    /// Why the request went to the origin, when it did (RFC 9211's `fwd`).
    pub forward: Option<Forward>,
    /// What went wrong with the cache, when something did (the request was answered all the
    /// same): `cache-read-error`, `cache-read-timeout`, `cache-body-unreadable`.
    pub detail: Option<&'static str>,
}

impl CacheFacts {
    /// Whether the response was written to the cache (it came from the origin and may be
    /// stored).
    pub fn stored(&self) -> bool {
        !self.from_cache && self.cache_key.is_some()
    }

    /// The RFC 9211 `Cache-Status` entry of this cache (named `name`, e.g. `dynacache`) for
    /// this response: `hit` with the remaining freshness (`ttl`, negative when stale), or
    /// `fwd` with the reason and `fwd-status`, `stored`, `collapsed` for a request that waited
    /// for another's trip to the origin, and `detail` when the cache failed.
    ///
    /// ```
    /// use dynacache::http::{CacheFacts, Forward};
    /// let mut facts = CacheFacts::default();
    /// facts.forward = Some(Forward::Bypass);
    /// assert_eq!(facts.cache_status("dynacache", 200, std::time::SystemTime::now()), "dynacache; fwd=bypass; fwd-status=200");
    /// ```
    pub fn cache_status(&self, name: &str, status: u16, now: SystemTime) -> String {
        let mut out = String::from(name);
        // To the nearest second: ages and expiries are kept in milliseconds.
        let ttl = |expires: SystemTime| -> i64 {
            match expires.duration_since(now) {
                Ok(left) => (left.as_millis() as i64 + 500) / 1000,
                Err(past) => -((past.duration().as_millis() as i64 + 500) / 1000),
            }
        };
        if self.from_cache && !self.revalidated && !self.coalesced {
            out.push_str("; hit");
        } else {
            let forward = self.forward.unwrap_or(Forward::UriMiss);
            out.push_str("; fwd=");
            out.push_str(forward.as_str());
            let fwd_status = if self.revalidated { 304 } else { status };
            out.push_str(&format!("; fwd-status={fwd_status}"));
            if self.coalesced {
                out.push_str("; collapsed");
            }
            if self.stored() || self.revalidated {
                out.push_str("; stored");
            }
        }
        if (self.from_cache || self.stored())
            && let Some(expires) = self.expires
        {
            out.push_str(&format!("; ttl={}", ttl(expires)));
        }
        if let Some(detail) = self.detail {
            out.push_str("; detail=");
            out.push_str(detail);
        }
        out
    }
}

/// Why a request went to the origin (RFC 9211 §2.2's `fwd` values).
///
/// ```
/// assert_eq!(dynacache::http::Forward::VaryMiss.as_str(), "vary-miss");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forward {
    /// The cache was configured not to handle this request (not an absolute URL, caching off,
    /// or a request it never caches).
    Bypass,
    /// The method is not cached.
    Method,
    /// Nothing was stored for the URL.
    UriMiss,
    /// Responses were stored for the URL, none for this request's `Vary` headers.
    VaryMiss,
    /// The stored response was stale, and revalidated or replaced.
    Stale,
    /// The request asked to go to the origin (`no-cache`, `max-age=0`, `no-store`, a forced
    /// refresh).
    Request,
}

impl Forward {
    /// The token RFC 9211 names it by.
    pub fn as_str(&self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Stale => "stale",
            Forward::Request => "request",
        }
    }
}

/// Reads the [`CacheFacts`] of a response (a `reqwest::Response` or an `http::Response`).
///
/// ```
/// use dynacache::http::CacheFactsExt;
/// let response = reqwest::Response::from(http::Response::new(""));
/// assert!(!response.from_cache());
/// let response = http::Response::new(());
/// assert_eq!(response.cache_facts().cache_key, None);
/// ```
pub trait CacheFactsExt {
    /// The cache facts (all false when the response did not go through a cache).
    fn cache_facts(&self) -> CacheFacts;
    /// Whether the response was served from the cache.
    // The name requests-cache and aiohttp-client-cache users know.
    #[allow(clippy::wrong_self_convention)]
    fn from_cache(&self) -> bool {
        self.cache_facts().from_cache
    }
}

impl CacheFactsExt for reqwest::Response {
    fn cache_facts(&self) -> CacheFacts {
        self.extensions()
            .get::<CacheFacts>()
            .cloned()
            .unwrap_or_default()
    }
}

impl<B> CacheFactsExt for http::Response<B> {
    fn cache_facts(&self) -> CacheFacts {
        self.extensions()
            .get::<CacheFacts>()
            .cloned()
            .unwrap_or_default()
    }
}

/// Counters of what the cache did, since it was built.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use dynacache::{Table, http::HttpCache};
///
/// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
/// let stats = cache.stats();
/// let served = stats.hits + stats.stale_served + stats.revalidated;
/// let hit_ratio = served as f64 / (served + stats.misses).max(1) as f64;
/// assert_eq!(hit_ratio, 0.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Fresh responses served from the cache.
    pub hits: u64,
    /// Requests sent to the origin because nothing usable was cached.
    pub misses: u64,
    /// Cached responses revalidated with a 304.
    pub revalidated: u64,
    /// Stale responses served.
    pub stale_served: u64,
    /// Responses written to the cache.
    pub stored: u64,
    /// Requests that waited for another in-flight request for the same response instead of
    /// going to the origin.
    pub coalesced: u64,
    /// Stored responses removed because a request with an unsafe method (POST, PUT, DELETE,
    /// ...) changed their resource.
    pub invalidated: u64,
    /// Storage failures (the request went on without the cache), refusals of an open circuit
    /// breaker included.
    pub storage_errors: u64,
    /// Storage writes dropped because too many were already under way in the background.
    pub writes_dropped: u64,
    /// Stored responses that failed signature verification (not served).
    pub verification_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) revalidated: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) invalidated: AtomicU64,
    pub(crate) storage_errors: AtomicU64,
    pub(crate) writes_dropped: AtomicU64,
    pub(crate) verification_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CacheStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: l(&self.hits),
            misses: l(&self.misses),
            revalidated: l(&self.revalidated),
            stale_served: l(&self.stale_served),
            stored: l(&self.stored),
            coalesced: l(&self.coalesced),
            invalidated: l(&self.invalidated),
            storage_errors: l(&self.storage_errors),
            writes_dropped: l(&self.writes_dropped),
            verification_failures: l(&self.verification_failures),
        }
    }
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
