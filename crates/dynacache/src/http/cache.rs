//! The HTTP cache: one implementation behind the client, the blocking client and the middleware.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_cache_semantics::{CacheOptions, CachePolicy};
use reqwest::{Request, Response, ResponseBuilderExt};
use tokio::sync::broadcast;

use super::document::{self, StoredResponse};
use super::key::{create_key, variant_key};
use super::settings::{
    ExpireAfter, FilterFn, KeyFn, MatchHeaders, RequestOptions, Settings, StaleWindow, UrlPattern,
};
use crate::clock::{Clock, SystemClock, millis_to_system_time, system_time_millis};
use crate::error::Result;
use crate::store::{Entry, Stamp, Store, StoreConfig};
use crate::table::Table;

/// What the cache did for a response. Every response a caching client returns carries one in
/// its extensions; read it with [`CacheFactsExt::cache_facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheFacts {
    /// Served from the cache (fresh, revalidated, or stale).
    pub from_cache: bool,
    /// The cached response was revalidated with the origin (a 304) before being served.
    pub revalidated: bool,
    /// Served although expired (`stale_if_error` or `stale_while_revalidate`).
    pub stale: bool,
    /// When the stored response was fetched from the origin.
    pub created_at: Option<SystemTime>,
    /// When it stops being fresh (`None`: never, or not stored).
    pub expires: Option<SystemTime>,
    /// Whether it is expired now.
    pub is_expired: bool,
    /// The cache key, when the response was read from or written to the cache.
    pub cache_key: Option<String>,
}

/// Reads the [`CacheFacts`] of a response.
///
/// ```
/// use dynacache::http::CacheFactsExt;
/// let response = reqwest::Response::from(http::Response::new(""));
/// assert!(!response.from_cache());
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

impl CacheFactsExt for Response {
    fn cache_facts(&self) -> CacheFacts {
        self.extensions()
            .get::<CacheFacts>()
            .cloned()
            .unwrap_or_default()
    }
}

/// Counters of what the cache did, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Fresh responses served from the cache.
    pub hits: u64,
    /// Requests sent to the origin because nothing usable was cached.
    pub misses: u64,
    /// Cached responses revalidated with a 304.
    pub revalidated: u64,
    /// Stale responses served (`stale_if_error`, `stale_while_revalidate`).
    pub stale_served: u64,
    /// Responses written to the cache.
    pub stored: u64,
    /// Requests that waited for another in-flight request for the same key instead of going
    /// to the origin.
    pub coalesced: u64,
    /// Storage failures (the request went on without the cache).
    pub storage_errors: u64,
    /// Stored responses that failed signature verification (not served).
    pub verification_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    revalidated: AtomicU64,
    stale_served: AtomicU64,
    stored: AtomicU64,
    coalesced: AtomicU64,
    storage_errors: AtomicU64,
    verification_failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A response buffered in memory, shareable between coalesced requests.
#[derive(Debug, Clone)]
struct Buffered {
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    url: url::Url,
    body: bytes::Bytes,
}

/// Builds an [`HttpCache`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use std::time::Duration;
/// use dynacache::Table;
/// use dynacache::http::{ExpireAfter, HttpCache, StaleWindow};
///
/// let cache = HttpCache::builder()
///     .expire_after(ExpireAfter::After(Duration::from_secs(3600)))
///     .url_expire_after("api.example.com/live/*", ExpireAfter::After(Duration::from_secs(5)))?
///     .url_expire_after("*.example.com/static/*", ExpireAfter::Never)?
///     .stale_if_error(StaleWindow::Max(Duration::from_secs(86_400)))
///     .build(Table::builder().name("http_cache").open().await?)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct HttpCacheBuilder {
    settings: Settings,
    namespace: Option<String>,
    clock: Option<Arc<dyn Clock>>,
    ttl_grace: Option<Duration>,
    refresher: Option<reqwest::Client>,
    secret_keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for HttpCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCacheBuilder")
            .field("settings", &self.settings)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl HttpCacheBuilder {
    /// The namespace (key prefix) of this cache's items in the table (default `http`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// How long responses stay fresh when neither their headers nor a URL pattern say (default
    /// [`ExpireAfter::Never`]).
    pub fn expire_after(mut self, expire_after: impl Into<ExpireAfter>) -> Self {
        self.settings.expire_after = expire_after.into();
        self
    }

    /// An expiry for URLs matching a glob (matched against the URL without its scheme, with a
    /// trailing `**` implied: `api.example.com/users`, `*.example.com/static/*`). Patterns are
    /// tried in the order they are added; the first match wins. An
    /// [`ExpireAfter::DoNotCache`] for `*` after the others turns them into an allow-list.
    pub fn url_expire_after(
        mut self,
        pattern: &str,
        expire_after: impl Into<ExpireAfter>,
    ) -> Result<Self> {
        self.settings
            .urls_expire_after
            .push((UrlPattern::new(pattern)?, expire_after.into()));
        Ok(self)
    }

    /// Honour `Cache-Control`, `Expires` and `ETag`/`Last-Modified` freshness of responses
    /// (default true). Request `Cache-Control` is always honoured.
    pub fn cache_control(mut self, honour: bool) -> Self {
        self.settings.cache_control = honour;
        self
    }

    /// Shared-cache semantics (RFC 9111): `private` responses and responses to requests with
    /// `Authorization` are not stored unless the response allows it; `s-maxage` applies.
    /// Default false (a private cache).
    pub fn shared(mut self, shared: bool) -> Self {
        self.settings.shared = shared;
        self
    }

    /// Status codes that may be stored (default `[200]`).
    pub fn allowed_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.settings.allowed_codes = codes.into_iter().collect();
        self
    }

    /// Methods that are cached (default GET and HEAD). Add POST to cache POST requests, whose
    /// body is then part of the key.
    pub fn allowed_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.settings.allowed_methods = methods.into_iter().collect();
        self
    }

    /// Request headers that are part of the key (default none; `Vary` is always honoured).
    pub fn match_headers(mut self, match_headers: MatchHeaders) -> Self {
        self.settings.match_headers = match_headers;
        self
    }

    /// Query parameters, JSON and form body fields and headers left out of the key and removed
    /// from the stored request (default: `Authorization`, `Proxy-Authorization`, `Cookie`,
    /// `X-API-Key`, `X-Auth-Token`, `X-API-Token`, `X-Access-Token`, `access_token`, `api_key`,
    /// `apikey`). Case-insensitive. Replaces the defaults.
    pub fn ignored_parameters<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.settings.ignored_parameters = names.into_iter().map(Into::into).collect();
        self
    }

    /// A predicate deciding whether a response may be stored (and, when read back, served).
    pub fn filter_fn(
        mut self,
        f: impl Fn(&http::response::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings.filter_fn = Some(Arc::new(f) as FilterFn);
        self
    }

    /// A custom key function: given the request and dynacache's key, returns the key to use.
    pub fn key_fn(mut self, f: impl Fn(&Request, &str) -> String + Send + Sync + 'static) -> Self {
        self.settings.key_fn = Some(Arc::new(f) as KeyFn);
        self
    }

    /// Revalidate every cached response with the origin before serving it (default false).
    pub fn always_revalidate(mut self, always: bool) -> Self {
        self.settings.always_revalidate = always;
        self
    }

    /// Serve a stale response when the origin fails (an error, or a status of 500 or more) while
    /// revalidating it (default off).
    pub fn stale_if_error(mut self, window: StaleWindow) -> Self {
        self.settings.stale_if_error = window;
        self
    }

    /// Serve a stale response at once and refresh it in the background, once per key however
    /// many requests arrive meanwhile (default off).
    pub fn stale_while_revalidate(mut self, window: StaleWindow) -> Self {
        self.settings.stale_while_revalidate = window;
        self
    }

    /// Answer from the cache only: `504 Gateway Timeout` when nothing fresh is cached.
    pub fn only_if_cached(mut self, only: bool) -> Self {
        self.settings.only_if_cached = only;
        self
    }

    /// Read from the cache but never write to it.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.settings.read_only = read_only;
        self
    }

    /// Bodies larger than this are passed through without being cached (default 64 MiB).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.settings.max_body_size = bytes;
        self
    }

    /// Text bodies (text/*, JSON, XML, JavaScript, forms) up to this size are stored as a
    /// readable string, shown as is by the AWS console and `aws dynamodb get-item` (default
    /// 4 KiB, at most 64 KiB). Larger ones are stored as binary, zstd-compressed when that saves
    /// space: a 20 KB JSON response then costs one read unit instead of three. `0` stores every
    /// body as binary.
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().readable_body_max(16 * 1024);
    /// ```
    pub fn readable_body_max(mut self, bytes: usize) -> Self {
        self.settings.readable_body_max = bytes.min(64 * 1024);
        self
    }

    /// How long after expiry DynamoDB's TTL may delete a response (default: one day, or the
    /// stale windows when longer), so that revalidation and stale serving still find it.
    pub fn ttl_grace(mut self, grace: Duration) -> Self {
        self.ttl_grace = Some(grace);
        self
    }

    /// The clock freshness is measured against.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The client background refreshes (`stale_while_revalidate`) use when the cache runs as a
    /// middleware (a [`CachedClient`](super::CachedClient) uses its own).
    pub fn refresh_client(mut self, client: reqwest::Client) -> Self {
        self.refresher = Some(client);
        self
    }

    /// Signs every stored response with HMAC-SHA256 and serves only responses whose signature
    /// verifies; others are misses (logged and counted, never served). The first key signs;
    /// every key verifies, so keys can be rotated: put the new key first, keep the old one
    /// until the responses it signed have expired.
    pub fn secret_keys<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.secret_keys = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// Builds the cache on a table.
    pub fn build(self, table: Table) -> Result<HttpCache> {
        if self.secret_keys.iter().any(Vec::is_empty) {
            return Err(crate::Error::config("a secret key must not be empty"));
        }
        let grace = match StaleWindow::max(
            self.settings.stale_if_error,
            self.settings.stale_while_revalidate,
        ) {
            StaleWindow::Max(d) => d.max(self.ttl_grace.unwrap_or(Duration::from_secs(86_400))),
            StaleWindow::Always => Duration::from_secs(30 * 86_400),
            StaleWindow::Off => self.ttl_grace.unwrap_or(Duration::from_secs(86_400)),
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = Store::new(
            table,
            StoreConfig {
                namespace: self.namespace.unwrap_or_else(|| "http".into()),
                ttl_grace: grace,
                max_value_size: self.settings.max_body_size.saturating_mul(2).max(1 << 20),
                chunk_size: 350 * 1024,
                clock: clock.clone(),
            },
        )?;
        Ok(HttpCache {
            inner: Arc::new(Inner {
                store,
                settings: self.settings,
                clock,
                enabled: AtomicBool::new(true),
                counters: Counters::default(),
                in_flight: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                secret_keys: self.secret_keys,
                refresher: {
                    let cell = std::sync::OnceLock::new();
                    if let Some(client) = self.refresher {
                        let _ = cell.set(client);
                    }
                    cell
                },
            }),
        })
    }
}

/// An HTTP response cache on a DynamoDB table. Cheap to clone. Use it through
/// [`CachedClient`](super::CachedClient), [`CacheMiddleware`](super::CacheMiddleware) or
/// [`blocking::CachedClient`](super::blocking::CachedClient).
#[derive(Clone)]
pub struct HttpCache {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("namespace", &self.inner.store.namespace())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) settings: Settings,
    clock: Arc<dyn Clock>,
    enabled: AtomicBool,
    counters: Counters,
    in_flight: Mutex<HashMap<String, broadcast::Sender<Arc<Buffered>>>>,
    refreshing: Mutex<HashSet<String>>,
    refresher: std::sync::OnceLock<reqwest::Client>,
    secret_keys: Vec<Vec<u8>>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A cached response found for a request.
pub(super) struct Found {
    pub(super) key: String,
    pub(super) doc: StoredResponse,
    /// For a body stored in chunks: the head's chunk version and count, to re-date the chunks.
    chunk_head: Option<crate::table::item::Item>,
}

/// What the request's own `Cache-Control` asks for.
#[derive(Debug, Default)]
struct RequestDirectives {
    no_store: bool,
    no_cache: bool,
    only_if_cached: bool,
    max_age: Option<u64>,
}

fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    let mut d = RequestDirectives::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let part = part.trim().to_ascii_lowercase();
            match part.split_once('=') {
                Some(("max-age", v)) => d.max_age = v.trim_matches('"').parse().ok(),
                None if part == "no-store" => d.no_store = true,
                None if part == "no-cache" => d.no_cache = true,
                None if part == "only-if-cached" => d.only_if_cached = true,
                _ => {}
            }
        }
    }
    if headers
        .get(header::PRAGMA)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("no-cache"))
    {
        d.no_cache = true;
    }
    d
}

fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case(name)
                || p.split_once('=')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        })
}

fn effective_method(req: &Request) -> Method {
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        if let Some(m) = req
            .headers()
            .get(h)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        {
            return m;
        }
    }
    req.method().clone()
}

impl HttpCache {
    /// Starts building an HTTP cache.
    pub fn builder() -> HttpCacheBuilder {
        HttpCacheBuilder::default()
    }

    /// The table responses are stored in.
    pub fn table(&self) -> &Table {
        self.inner.store.table()
    }

    /// The namespace of this cache's items.
    pub fn namespace(&self) -> &str {
        self.inner.store.namespace()
    }

    /// Turns caching on or off at run time (requests then go straight to the origin).
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Background refreshes use this client unless the builder set one.
    pub(super) fn use_refresh_client(&self, client: &reqwest::Client) {
        let _ = self.inner.refresher.set(client.clone());
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: l(&c.hits),
            misses: l(&c.misses),
            revalidated: l(&c.revalidated),
            stale_served: l(&c.stale_served),
            stored: l(&c.stored),
            coalesced: l(&c.coalesced),
            storage_errors: l(&c.storage_errors),
            verification_failures: l(&c.verification_failures),
        }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_millis()
    }

    fn storage_error(&self, what: &str, e: &crate::Error) {
        bump(&self.inner.counters.storage_errors);
        tracing::warn!(error = %e, "dynacache: {what} failed; going on without the cache");
    }

    /// The base key of a request, or `None` when the request cannot be cached (a streaming
    /// body).
    pub(super) fn key_for(&self, req: &Request) -> Option<String> {
        let body = match req.body() {
            None => &[][..],
            Some(b) => b.as_bytes()?,
        };
        let key = create_key(
            req.method(),
            req.url(),
            req.headers(),
            body,
            &self.inner.settings,
        );
        Some(match &self.inner.settings.key_fn {
            Some(f) => f(req, &key),
            None => key,
        })
    }

    /// The whole caching decision for one request. `fetch` sends a request to the origin.
    pub(super) async fn execute<F, Fut, E>(
        &self,
        req: Request,
        opts: RequestOptions,
        fetch: F,
    ) -> std::result::Result<Response, E>
    where
        F: Fn(Request) -> Fut,
        Fut: Future<Output = std::result::Result<Response, E>>,
    {
        let settings = &self.inner.settings;
        let method = effective_method(&req);
        let directives = request_directives(req.headers());
        let expire_after = opts
            .expire_after
            .unwrap_or_else(|| settings.expire_after_for(req.url()));
        if !self.inner.enabled.load(Ordering::Relaxed)
            || opts.disable_cache
            || !settings.allowed_methods.contains(&method)
            || directives.no_store
            || expire_after == ExpireAfter::DoNotCache
        {
            return fetch(req).await;
        }
        let Some(base) = self.key_for(&req) else {
            return fetch(req).await;
        };
        let only_if_cached =
            opts.only_if_cached || settings.only_if_cached || directives.only_if_cached;
        let found = if opts.force_refresh {
            None
        } else {
            match self.lookup(&base, req.headers()).await {
                Ok(found) => found,
                Err(e) => {
                    self.storage_error("reading the cache", &e);
                    None
                }
            }
        };
        let now = self.now();
        let Some(found) = found else {
            if only_if_cached {
                return Ok(gateway_timeout(&req));
            }
            bump(&self.inner.counters.misses);
            return self.fetch_coalesced(&base, req, expire_after, &fetch).await;
        };

        let doc = &found.doc;
        let mut fresh = doc.expires_ms.is_none_or(|e| e > now);
        if let Some(max_age) = directives.max_age {
            fresh &= (now - doc.created_ms) <= (max_age as i64).saturating_mul(1000);
        }
        let must_revalidate = opts.refresh
            || settings.always_revalidate
            || directives.no_cache
            || (settings.cache_control && has_directive(&doc.headers, "no-cache"));
        if fresh && !must_revalidate {
            bump(&self.inner.counters.hits);
            return Ok(self.respond(&found, false, false, &req));
        }
        if only_if_cached {
            return Ok(if fresh {
                self.respond(&found, false, false, &req)
            } else {
                gateway_timeout(&req)
            });
        }
        let stale_for = Duration::from_millis((now - doc.expires_ms.unwrap_or(now)).max(0) as u64);
        if !fresh && !must_revalidate && settings.stale_while_revalidate.allows(stale_for) {
            self.refresh_in_background(&found, &req);
            bump(&self.inner.counters.stale_served);
            return Ok(self.respond(&found, false, true, &req));
        }
        // Revalidate: a conditional request when the response has validators.
        let Some(mut conditional) = req.try_clone() else {
            return fetch(req).await;
        };
        add_validators(conditional.headers_mut(), &doc.headers);
        let stale_ok = settings.stale_if_error.allows(stale_for);
        match fetch(conditional).await {
            Ok(res) if res.status() == StatusCode::NOT_MODIFIED => {
                let refreshed = self
                    .apply_not_modified(&found, &req, &res, expire_after)
                    .await;
                bump(&self.inner.counters.revalidated);
                Ok(self.respond(&refreshed, true, false, &req))
            }
            Ok(res) if res.status().is_server_error() && stale_ok => {
                bump(&self.inner.counters.stale_served);
                Ok(self.respond(&found, false, true, &req))
            }
            Ok(res) => Ok(self.store(&base, &req, res, expire_after).await),
            Err(_) if stale_ok => {
                bump(&self.inner.counters.stale_served);
                Ok(self.respond(&found, false, true, &req))
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches a miss, sharing one origin request between concurrent callers for the same key.
    async fn fetch_coalesced<F, Fut, E>(
        &self,
        base: &str,
        req: Request,
        expire_after: ExpireAfter,
        fetch: &F,
    ) -> std::result::Result<Response, E>
    where
        F: Fn(Request) -> Fut,
        Fut: Future<Output = std::result::Result<Response, E>>,
    {
        let waiting = {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match in_flight.get(base) {
                Some(sender) => Some(sender.subscribe()),
                None => {
                    let (tx, _) = broadcast::channel(1);
                    in_flight.insert(base.to_owned(), tx);
                    None
                }
            }
        };
        if let Some(mut rx) = waiting {
            if let Ok(shared) = rx.recv().await {
                bump(&self.inner.counters.coalesced);
                return Ok(buffered_response(&shared, CacheFacts::default()));
            }
            // The leader failed or its response was not shareable: go to the origin.
            return fetch(req).await;
        }
        // Leader: whatever happens, remove the entry so later requests do not wait forever.
        struct Done<'a>(&'a Inner, &'a str);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut in_flight = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                in_flight.remove(self.1);
            }
        }
        let done = Done(&self.inner, base);
        let parts = req_parts_only(&req);
        let response = match fetch(req).await {
            Ok(res) => self.store(base, &parts, res, expire_after).await,
            Err(e) => return Err(e),
        };
        if let Some(shared) = response.extensions().get::<Arc<Buffered>>().cloned() {
            let in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = in_flight.get(base) {
                let _ = tx.send(shared);
            }
        }
        drop(done);
        Ok(response)
    }

    /// Finds the cached response for a request (following a `Vary` index to its variant).
    pub(super) async fn lookup(&self, base: &str, headers: &HeaderMap) -> Result<Option<Found>> {
        let Some(mut entry) = self.read(base).await? else {
            return Ok(None);
        };
        let mut base = base.to_owned();
        // A redirect alias (this URL was the target of a redirect another request followed):
        // follow it once.
        if let Some(target) = document::redirect_target(&entry.item) {
            match self.read(&target).await? {
                Some(e) => (entry, base) = (e, target),
                None => return Ok(None),
            }
        }
        let base = base.as_str();
        let (key, entry) = match document::vary_names(&entry.item) {
            None => (base.to_owned(), entry),
            Some(names) => {
                let key = variant_key(base, &names, headers);
                match self.read(&key).await? {
                    Some(entry) => (key, entry),
                    None => return Ok(None),
                }
            }
        };
        let Entry {
            item,
            payload,
            chunks: chunk_head,
        } = entry;
        let doc = document::from_item(&key, &item, payload, self.inner.settings.max_body_size)?;
        if !self.inner.secret_keys.is_empty() {
            let signature = crate::table::item::get_b(&item, document::SIGNATURE);
            let input = document::signing_input(&doc);
            let verified = signature.is_some_and(|sig| {
                self.inner
                    .secret_keys
                    .iter()
                    .any(|k| constant_time_eq(&hmac(k, &input), sig))
            });
            if !verified {
                bump(&self.inner.counters.verification_failures);
                tracing::warn!(key = %key, "dynacache: a stored response failed signature verification; not served");
                return Ok(None);
            }
        }
        if let Some(filter) = &self.inner.settings.filter_fn
            && !filter(&doc.response_parts())
        {
            if !self.inner.settings.read_only
                && let Err(e) = async {
                    self.inner
                        .store
                        .remove(&self.inner.store.key(key.as_bytes())?)
                        .await
                }
                .await
            {
                self.storage_error("deleting a filtered response", &e);
            }
            return Ok(None);
        }
        Ok(Some(Found {
            key,
            doc,
            chunk_head,
        }))
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        let store = &self.inner.store;
        store.get(&store.key(key.as_bytes())?, true).await
    }

    /// The expiry of a response fetched now, or `None` when it must not be stored.
    fn expiry_for(
        &self,
        req: &Request,
        res: &http::response::Parts,
        expire_after: ExpireAfter,
        now: i64,
    ) -> Option<Option<i64>> {
        let settings = &self.inner.settings;
        let has_validators = res.headers.contains_key(header::ETAG)
            || res.headers.contains_key(header::LAST_MODIFIED);
        let from_setting = |e: ExpireAfter| -> Option<Option<i64>> {
            match e {
                ExpireAfter::Never => Some(None),
                ExpireAfter::DoNotCache => None,
                ExpireAfter::Immediately => has_validators.then_some(Some(now)),
                ExpireAfter::After(d) if d.is_zero() => has_validators.then_some(Some(now)),
                ExpireAfter::After(d) => Some(Some(now.saturating_add(d.as_millis() as i64))),
                ExpireAfter::At(t) => Some(Some(system_time_millis(t))),
            }
        };
        if !settings.cache_control {
            return from_setting(expire_after);
        }
        let mut req_parts = http::Request::new(());
        // RFC 9111 stores POST responses only with explicit freshness; a user who put POST in
        // `allowed_methods` asked for them to be cached, so they are judged like GETs.
        *req_parts.method_mut() = match *req.method() {
            Method::HEAD => Method::HEAD,
            _ => Method::GET,
        };
        *req_parts.uri_mut() = req.url().as_str().parse().unwrap_or_default();
        *req_parts.headers_mut() = req.headers().clone();
        let (req_parts, _) = req_parts.into_parts();
        let policy = CachePolicy::new_options(
            &req_parts,
            res,
            millis_to_system_time(now),
            CacheOptions {
                shared: settings.shared,
                ..CacheOptions::default()
            },
        );
        if !policy.is_storable() {
            return None;
        }
        let h = &res.headers;
        if has_directive(h, "immutable") {
            return Some(None);
        }
        if has_directive(h, "max-age")
            || (settings.shared && has_directive(h, "s-maxage"))
            || h.contains_key(header::EXPIRES)
        {
            let ttl = policy.time_to_live(millis_to_system_time(now));
            if ttl.is_zero() {
                return has_validators.then_some(Some(now));
            }
            return Some(Some(now + ttl.as_millis() as i64));
        }
        if has_directive(h, "no-cache") {
            return has_validators.then_some(Some(now));
        }
        from_setting(expire_after)
    }

    /// Stores a response from the origin if the settings allow, and returns it (rebuilt from
    /// its buffered body when it was read). Storage failures are logged, never returned.
    async fn store(
        &self,
        base: &str,
        req: &Request,
        res: Response,
        expire_after: ExpireAfter,
    ) -> Response {
        let settings = &self.inner.settings;
        let status = res.status();
        if settings.read_only || !settings.allowed_codes.contains(&status.as_u16()) {
            return res;
        }
        if res
            .content_length()
            .is_some_and(|len| len as usize > settings.max_body_size)
        {
            return res;
        }
        let now = self.now();
        let mut parts = http::Response::new(());
        *parts.status_mut() = status;
        *parts.headers_mut() = res.headers().clone();
        let (parts, _) = parts.into_parts();
        if let Some(filter) = &settings.filter_fn
            && !filter(&parts)
        {
            return res;
        }
        let Some(expires) = self.expiry_for(req, &parts, expire_after, now) else {
            return res;
        };
        let vary: Vec<String> = res
            .headers()
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect();
        if vary.iter().any(|v| v == "*") {
            return res;
        }
        let url = res.url().clone();
        let version = res.version();
        let headers = res.headers().clone();
        let (body, rest) = match read_limited(res, settings.max_body_size).await {
            Ok(Limited::Complete(body)) => (body, None),
            Ok(Limited::TooLarge(prefix, rest)) => (prefix, Some(rest)),
            Err(e) => {
                tracing::debug!(error = %e, "response body failed while being read");
                return error_response(status, &headers, &url);
            }
        };
        if let Some(rest) = rest {
            return streamed_response(status, version, headers, url, body, rest);
        }
        let buffered = Arc::new(Buffered {
            status,
            version,
            headers,
            url,
            body,
        });
        let doc = StoredResponse {
            status,
            url: document::redact_url(&buffered.url, settings),
            method: req.method().to_string(),
            headers: buffered.headers.clone(),
            request_headers: document::redact_headers(req.headers(), settings),
            created_ms: now,
            expires_ms: expires,
            body: buffered.body.clone(),
        };
        let key = if vary.is_empty() {
            base.to_owned()
        } else {
            variant_key(base, &vary, req.headers())
        };
        let mut facts = CacheFacts {
            created_at: Some(millis_to_system_time(now)),
            expires: expires.map(millis_to_system_time),
            is_expired: expires.is_some_and(|e| e <= now),
            ..CacheFacts::default()
        };
        match self.write(base, &key, &vary, &doc).await {
            Ok(()) => {
                bump(&self.inner.counters.stored);
                facts.cache_key = Some(key);
                if let Err(e) = self
                    .write_redirect_alias(base, req, &buffered.url, expires)
                    .await
                {
                    self.storage_error("storing a redirect alias", &e);
                }
            }
            Err(e) => self.storage_error("storing a response", &e),
        }
        let mut response = buffered_response(&buffered, facts);
        response.extensions_mut().insert(buffered);
        response
    }

    /// When a GET was redirected, stores an alias under the final URL's key pointing to the
    /// response stored for the requested URL, so that every process sharing the table gets a
    /// hit for the final URL too.
    async fn write_redirect_alias(
        &self,
        base: &str,
        req: &Request,
        final_url: &url::Url,
        expires: Option<i64>,
    ) -> Result<()> {
        let settings = &self.inner.settings;
        if req.method() != Method::GET
            || super::key::normalize_url(final_url, settings)
                == super::key::normalize_url(req.url(), settings)
        {
            return Ok(());
        }
        let mut alias_request = Request::new(Method::GET, final_url.clone());
        *alias_request.headers_mut() = req.headers().clone();
        let Some(alias) = self.key_for(&alias_request) else {
            return Ok(());
        };
        let store = &self.inner.store;
        let attrs = document::redirect_attributes(base, &document::redact_url(final_url, settings));
        let stamp = Stamp {
            now: self.now(),
            expires,
        };
        store
            .put(&store.key(alias.as_bytes())?, attrs, None, stamp, None)
            .await
            .map(|_| ())
    }

    async fn write(
        &self,
        base: &str,
        key: &str,
        vary: &[String],
        doc: &StoredResponse,
    ) -> Result<()> {
        let store = &self.inner.store;
        let stamp = Stamp {
            now: doc.created_ms,
            expires: doc.expires_ms,
        };
        if !vary.is_empty() {
            let index = document::vary_attributes(vary, &doc.url);
            let index_stamp = Stamp {
                now: doc.created_ms,
                expires: None,
            };
            store
                .put(&store.key(base.as_bytes())?, index, None, index_stamp, None)
                .await?;
        }
        let (mut attrs, payload) =
            document::to_attributes(doc, Some(1024), self.inner.settings.readable_body_max);
        if let Some(signature) = self.sign(doc) {
            attrs.insert(
                document::SIGNATURE.to_owned(),
                crate::table::item::b(signature),
            );
        }
        store
            .put(&store.key(key.as_bytes())?, attrs, payload, stamp, None)
            .await?;
        Ok(())
    }

    /// Merges a 304's headers into the stored response and stores the new headers and expiry,
    /// without rewriting the body (a chunked body's chunks get the new TTL, and nothing else).
    async fn apply_not_modified(
        &self,
        found: &Found,
        req: &Request,
        res: &Response,
        expire_after: ExpireAfter,
    ) -> Found {
        let now = self.now();
        let mut doc = found.doc.clone();
        for (name, value) in res.headers() {
            if name == header::CONTENT_LENGTH || name == header::CONTENT_ENCODING {
                continue;
            }
            doc.headers.insert(name.clone(), value.clone());
        }
        let parts = doc.response_parts();
        let expires = self
            .expiry_for(req, &parts, expire_after, now)
            .unwrap_or(Some(now));
        doc.expires_ms = expires;
        if !self.inner.settings.read_only
            && let Err(e) = self
                .update_metadata(&found.key, &doc, found.chunk_head.as_ref())
                .await
        {
            self.storage_error("updating a revalidated response", &e);
        }
        Found {
            key: found.key.clone(),
            doc,
            chunk_head: found.chunk_head.clone(),
        }
    }

    fn sign(&self, doc: &StoredResponse) -> Option<Vec<u8>> {
        let key = self.inner.secret_keys.first()?;
        Some(hmac(key, &document::signing_input(doc)))
    }

    async fn update_metadata(
        &self,
        key: &str,
        doc: &StoredResponse,
        chunks: Option<&crate::table::item::Item>,
    ) -> Result<()> {
        let store = &self.inner.store;
        let mut sets = document::metadata_attributes(doc);
        if let Some(signature) = self.sign(doc) {
            sets.insert(
                document::SIGNATURE.to_owned(),
                crate::table::item::b(signature),
            );
        }
        store
            .update(&store.key(key.as_bytes())?, sets, doc.expires_ms, chunks)
            .await
            .map(|_| ())
    }

    /// Revalidates a stale response in the background, once per key at a time.
    fn refresh_in_background(&self, found: &Found, req: &Request) {
        let client = self
            .inner
            .refresher
            .get_or_init(reqwest::Client::new)
            .clone();
        let Some(mut conditional) = req.try_clone() else {
            return;
        };
        {
            let mut refreshing = self
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !refreshing.insert(found.key.clone()) {
                return;
            }
        }
        add_validators(conditional.headers_mut(), &found.doc.headers);
        let cache = self.clone();
        let found = Found {
            key: found.key.clone(),
            doc: found.doc.clone(),
            chunk_head: found.chunk_head.clone(),
        };
        let original = req_parts_only(req);
        let base = self.key_for(req).unwrap_or_else(|| found.key.clone());
        let expire_after = self.inner.settings.expire_after_for(req.url());
        tokio::spawn(async move {
            match client.execute(conditional).await {
                Ok(res) if res.status() == StatusCode::NOT_MODIFIED => {
                    cache
                        .apply_not_modified(&found, &original, &res, expire_after)
                        .await;
                    bump(&cache.inner.counters.revalidated);
                }
                Ok(res) if !res.status().is_server_error() => {
                    cache.store(&base, &original, res, expire_after).await;
                }
                Ok(_) | Err(_) => {}
            }
            let mut refreshing = cache
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            refreshing.remove(&found.key);
        });
    }

    fn respond(&self, found: &Found, revalidated: bool, stale: bool, req: &Request) -> Response {
        let doc = &found.doc;
        let now = self.now();
        let facts = CacheFacts {
            from_cache: true,
            revalidated,
            stale,
            created_at: Some(millis_to_system_time(doc.created_ms)),
            expires: doc.expires_ms.map(millis_to_system_time),
            is_expired: doc.expires_ms.is_some_and(|e| e <= now),
            cache_key: Some(found.key.clone()),
        };
        let url = url::Url::parse(&doc.url).unwrap_or_else(|_| req.url().clone());
        let body = if req.method() == Method::HEAD {
            bytes::Bytes::new()
        } else {
            doc.body.clone()
        };
        let buffered = Buffered {
            status: doc.status,
            version: http::Version::HTTP_11,
            headers: doc.headers.clone(),
            url,
            body,
        };
        buffered_response(&buffered, facts)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A copy of a request without its body (for storage decisions after the body was sent).
fn req_parts_only(req: &Request) -> Request {
    let mut copy = Request::new(req.method().clone(), req.url().clone());
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn add_validators(headers: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = stored.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

fn buffered_response(b: &Buffered, facts: CacheFacts) -> Response {
    let mut builder = http::Response::builder()
        .status(b.status)
        .version(b.version)
        .url(b.url.clone());
    if let Some(headers) = builder.headers_mut() {
        *headers = b.headers.clone();
    }
    let mut res = builder
        .extension(facts)
        .body(b.body.clone())
        .unwrap_or_else(|_| http::Response::new(bytes::Bytes::new()));
    // A Content-Length that disagrees with the body (HEAD, or a 304 merge) would confuse readers.
    if b.status != StatusCode::NOT_MODIFIED && !b.body.is_empty() {
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(b.body.len()));
    }
    Response::from(res)
}

fn gateway_timeout(req: &Request) -> Response {
    let res = http::Response::builder()
        .status(StatusCode::GATEWAY_TIMEOUT)
        .url(req.url().clone())
        .header(header::CONTENT_TYPE, "text/plain")
        .extension(CacheFacts::default())
        .body("504 Gateway Timeout: not in the cache (only-if-cached)")
        .unwrap_or_else(|_| http::Response::new(""));
    Response::from(res)
}

fn error_response(status: StatusCode, headers: &HeaderMap, url: &url::Url) -> Response {
    // The origin's body broke off: surface that as a body error to the caller rather than a
    // truncated body that looks complete.
    let stream = futures::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the response body ended early",
        ))
    });
    let mut builder = http::Response::builder().status(status).url(url.clone());
    if let Some(h) = builder.headers_mut() {
        *h = headers.clone();
        h.remove(header::CONTENT_LENGTH);
    }
    let res = builder
        .extension(CacheFacts::default())
        .body(reqwest::Body::wrap_stream(stream))
        .unwrap_or_else(|_| http::Response::new(reqwest::Body::from("")));
    Response::from(res)
}

enum Limited {
    Complete(bytes::Bytes),
    TooLarge(bytes::Bytes, Response),
}

async fn read_limited(mut res: Response, max: usize) -> reqwest::Result<Limited> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = res.chunk().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > max {
            return Ok(Limited::TooLarge(buf.freeze(), res));
        }
    }
    Ok(Limited::Complete(buf.freeze()))
}

/// A response whose first bytes were read before it turned out too large to cache: the read
/// bytes, then the rest of the stream.
fn streamed_response(
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    url: url::Url,
    prefix: bytes::Bytes,
    rest: Response,
) -> Response {
    use futures::StreamExt;
    let stream = futures::stream::once(async move { Ok::<_, reqwest::Error>(prefix) })
        .chain(rest.bytes_stream());
    let mut builder = http::Response::builder()
        .status(status)
        .version(version)
        .url(url);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let res = builder
        .extension(CacheFacts::default())
        .body(reqwest::Body::wrap_stream(stream))
        .unwrap_or_else(|_| http::Response::new(reqwest::Body::from("")));
    Response::from(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_cache_control_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            "No-Cache, max-age=5".parse().unwrap(),
        );
        let d = request_directives(&h);
        assert!(d.no_cache && !d.no_store && !d.only_if_cached);
        assert_eq!(d.max_age, Some(5));
    }

    #[test]
    fn method_overrides_are_honoured() {
        let mut req = Request::new(Method::POST, "http://x/".parse().unwrap());
        req.headers_mut()
            .insert("x-http-method-override", "GET".parse().unwrap());
        assert_eq!(effective_method(&req), Method::GET);
    }
}
