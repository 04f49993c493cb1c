//! Building an [`HttpCache`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::Method;

use super::engine::{HttpCache, Inner};
use super::facts::Counters;
use super::settings::{
    ExpireAfter, FilterFn, KeyFn, MatchHeaders, SetCookie, Settings, StaleWindow, UrlPattern,
};
use crate::clock::{Clock, SystemClock};
use crate::coalesce::Coalescer;
use crate::error::Result;
use crate::store::{Store, StoreConfig};
use crate::table::Table;

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
    tier: Option<crate::InProcessTier>,
    fleet: Option<crate::FleetSingleFlight>,
    objects: Option<crate::ObjectStore>,
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
    /// The namespace (key prefix) of this cache's items in the table (default `http`): 1 to 64
    /// characters of letters, digits, `_ - . /`.
    ///
    /// ```
    /// // Two caches in one table, each seeing only its own responses.
    /// let api = dynacache::http::HttpCache::builder().namespace("api");
    /// let images = dynacache::http::HttpCache::builder().namespace("images");
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Keeps bodies too large for one item (or from the store's
    /// [threshold](crate::ObjectStoreBuilder::threshold) up) in an object store: the table keeps
    /// the entry (status, headers, expiry, tags, the object's key and digest), the object store
    /// the bytes (see [`crate::objects`]). A 304 revalidation updates the entry only; a hit
    /// streams the body from the object as it arrives. Every client and `dynacache serve`
    /// sharing the table and namespace must be given the same object store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{ObjectStore, Table, http::HttpCache};
    ///
    /// let dir = std::env::temp_dir().join(format!("dynacache-http-doc-{}", std::process::id()));
    /// let cache = HttpCache::builder()
    ///     .object_store(ObjectStore::builder().local(&dir).open().await?)
    ///     .build(Table::builder().open().await?)?;
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(()) }
    /// ```
    pub fn object_store(mut self, objects: crate::ObjectStore) -> Self {
        self.objects = Some(objects);
        self
    }

    /// How long responses stay fresh when neither their headers nor a URL pattern say.
    ///
    /// The default depends on the mode. A private cache (the default mode, a client caching for
    /// itself as requests-cache does) keeps such responses fresh forever
    /// ([`ExpireAfter::Never`]): the user asked for caching, and decides what to store with
    /// `allowed_codes`, URL patterns and `expire_after`. A shared cache serves many users on the
    /// origin's behalf, so it stores only what the origin's headers and RFC 9111's heuristics
    /// allow ([`ExpireAfter::Headers`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::http::{ExpireAfter, HttpCache};
    ///
    /// let private = HttpCache::builder().expire_after(Duration::from_secs(600));
    /// // A shared cache that stores only what the origin marks fresh.
    /// let shared = HttpCache::builder().shared(true).expire_after(ExpireAfter::DoNotCache);
    /// ```
    pub fn expire_after(mut self, expire_after: impl Into<ExpireAfter>) -> Self {
        self.settings.expire_after = Some(expire_after.into());
        self
    }

    /// RFC 9111 §4.2.2's heuristic freshness, used by [`ExpireAfter::Headers`] for responses
    /// with `Last-Modified` and no explicit freshness: fresh for `fraction` of the time since
    /// they were last modified, at most `max` (default 10%, at most one day).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = dynacache::http::HttpCache::builder()
    ///     .heuristic_freshness(0.05, Duration::from_secs(3600));
    /// ```
    pub fn heuristic_freshness(mut self, fraction: f64, max: Duration) -> Self {
        self.settings.heuristic_fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.settings.heuristic_max = max;
        self
    }

    /// Refreshes hot responses before they expire, XFetch style: on a fresh hit, with a
    /// probability that grows as expiry nears and with how long the origin took to answer
    /// (`now + fetch_time × beta × −ln(random) ≥ expiry`), the response is revalidated in the
    /// background (one refresh per key at a time in a process; no storage request when not
    /// refreshing), so a popular response is rarely seen expired. `beta` 1.0 is the usual
    /// choice, larger refreshes earlier; default off. Needs a front-end that refreshes in the
    /// background: [`CachedClient`](super::CachedClient), [`CacheLayer`](super::CacheLayer),
    /// or a [`CacheMiddleware`](super::CacheMiddleware) given a client with
    /// [`refresh_client`](Self::refresh_client).
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().refresh_ahead(1.0);
    /// ```
    pub fn refresh_ahead(mut self, beta: f64) -> Self {
        self.settings.refresh_ahead = (beta.is_finite() && beta > 0.0).then_some(beta);
        self
    }

    /// Fields in which responses name their tags (surrogate keys), such as `Surrogate-Key`
    /// (space-separated) and `Cache-Tag` (comma-separated): a stored response is indexed under
    /// each, and [`HttpCache::purge_tag`] deletes every response of a tag without scanning the
    /// table (one more write per tag of each stored response). Default none. Fails on a name
    /// that is not a valid header name. [`CacheLayer`](super::CacheLayer) removes these fields
    /// from what clients see.
    ///
    /// ```
    /// # fn main() -> dynacache::Result<()> {
    /// let builder = dynacache::http::HttpCache::builder()
    ///     .shared(true)
    ///     .tag_fields(["Surrogate-Key", "Cache-Tag"])?;
    /// # Ok(()) }
    /// ```
    pub fn tag_fields<N: AsRef<str>>(mut self, names: impl IntoIterator<Item = N>) -> Result<Self> {
        self.settings.tag_fields = header_names(names)?;
        Ok(self)
    }

    /// Cache-specific `Cache-Control` fields (RFC 9213), most specific first, such as
    /// `CDN-Cache-Control`: in a shared cache, the first of them a response carries (and that
    /// parses) replaces its `Cache-Control` and `Expires` for this cache's decisions, so an
    /// origin can tell this cache something else than browsers. Default none. Fails on a name
    /// that is not a valid header name.
    ///
    /// ```
    /// # fn main() -> dynacache::Result<()> {
    /// let builder = dynacache::http::HttpCache::builder()
    ///     .shared(true)
    ///     .targeted_cache_control(["Dynacache-Cache-Control", "CDN-Cache-Control"])?;
    /// # Ok(()) }
    /// ```
    pub fn targeted_cache_control<N: AsRef<str>>(
        mut self,
        names: impl IntoIterator<Item = N>,
    ) -> Result<Self> {
        self.settings.targeted_fields = header_names(names)?;
        Ok(self)
    }

    /// What to do with responses that set cookies (default [`SetCookie::Store`] in a private
    /// cache, [`SetCookie::DoNotStore`] in a shared one).
    ///
    /// ```
    /// use dynacache::http::{HttpCache, SetCookie};
    /// let builder = HttpCache::builder().set_cookie(SetCookie::DoNotStore);
    /// ```
    pub fn set_cookie(mut self, policy: SetCookie) -> Self {
        self.settings.set_cookie = Some(policy);
        self
    }

    /// An expiry for URLs matching a glob (matched against the URL without its scheme, with a
    /// trailing `**` implied: `api.example.com/users`, `*.example.com/static/*`). Patterns are
    /// tried in the order they are added; the first match wins. An
    /// [`ExpireAfter::DoNotCache`] for `*` after the others turns them into an allow-list.
    ///
    /// ```
    /// # fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::http::{ExpireAfter, HttpCache};
    ///
    /// // Cache the API for five minutes, and nothing else.
    /// let builder = HttpCache::builder()
    ///     .url_expire_after("api.example.com/v1/*", Duration::from_secs(300))?
    ///     .url_expire_after("*", ExpireAfter::DoNotCache)?;
    /// assert!(HttpCache::builder().url_expire_after("[", ExpireAfter::Never).is_err());
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::http::{ExpireAfter, HttpCache};
    ///
    /// // Keep every response an hour, whatever the origin says.
    /// let builder = HttpCache::builder()
    ///     .cache_control(false)
    ///     .expire_after(ExpireAfter::After(Duration::from_secs(3600)));
    /// ```
    pub fn cache_control(mut self, honour: bool) -> Self {
        self.settings.cache_control = honour;
        self
    }

    /// Shared-cache semantics (RFC 9111): `private` responses and responses to requests with
    /// `Authorization` are not stored unless the response allows it; `s-maxage` and
    /// `proxy-revalidate` apply; responses setting cookies are not stored; and the defaults of
    /// `expire_after` and `allowed_codes` become what the RFC allows. Default false (a private
    /// cache).
    ///
    /// ```
    /// use dynacache::http::HttpCache;
    /// // A cache in front of an API for many users, such as a proxy's.
    /// let builder = HttpCache::builder().shared(true);
    /// ```
    pub fn shared(mut self, shared: bool) -> Self {
        self.settings.shared = shared;
        self
    }

    /// Status codes that may be stored. This narrows what RFC 9111 allows (a status with
    /// explicit freshness or `public`, or a heuristically cacheable one such as 200, 301 or
    /// 404), never widens it. Default `[200]` in a private cache, no restriction in a shared one.
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().allowed_codes([200, 203, 301, 404]);
    /// ```
    pub fn allowed_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.settings.allowed_codes = Some(codes.into_iter().collect());
        self
    }

    /// Methods that are cached (default GET and HEAD). Add POST to cache POST requests, whose
    /// body is then part of the key.
    ///
    /// ```
    /// use http::Method;
    /// let builder = dynacache::http::HttpCache::builder()
    ///     .allowed_methods([Method::GET, Method::HEAD, Method::POST]);
    /// ```
    pub fn allowed_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.settings.allowed_methods = methods.into_iter().collect();
        self
    }

    /// Request headers that are part of the key (default none; `Vary` is always honoured).
    ///
    /// ```
    /// use dynacache::http::{HttpCache, MatchHeaders};
    /// // One stored response per language, even when the origin forgets `Vary`.
    /// let builder = HttpCache::builder()
    ///     .match_headers(MatchHeaders::Only(vec![http::header::ACCEPT_LANGUAGE]));
    /// ```
    pub fn match_headers(mut self, match_headers: MatchHeaders) -> Self {
        self.settings.match_headers = match_headers;
        self
    }

    /// Query parameters, JSON and form body fields and headers removed from the stored request
    /// and URL, and left out of the key (default: `Authorization`, `Proxy-Authorization`,
    /// `Cookie`, `X-API-Key`, `X-Auth-Token`, `X-API-Token`, `X-Access-Token`, `access_token`,
    /// `api_key`, `apikey`, `token`). Case-insensitive. Replaces the defaults.
    ///
    /// A shared cache keeps query parameters and body fields in the key (hashed): it serves
    /// many users, and a response to `?token=alice` must never answer `?token=bob`.
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().ignored_parameters(["sig", "Cookie"]);
    /// ```
    pub fn ignored_parameters<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.settings.ignored_parameters = names.into_iter().map(Into::into).collect();
        self
    }

    /// A predicate deciding whether a response may be stored (and, when read back, served).
    ///
    /// ```
    /// // Store JSON responses only.
    /// let builder = dynacache::http::HttpCache::builder().filter_fn(|response| {
    ///     let content_type = response.headers.get(http::header::CONTENT_TYPE);
    ///     content_type.is_some_and(|t| t.as_bytes().starts_with(b"application/json"))
    /// });
    /// ```
    pub fn filter_fn(
        mut self,
        f: impl Fn(&http::response::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings.filter_fn = Some(Arc::new(f) as FilterFn);
        self
    }

    /// A custom key function: given the request and dynacache's key, returns the key to use.
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder()
    ///     .key_fn(|req, _| format!("path:{}", req.uri.path()));
    /// ```
    pub fn key_fn(
        mut self,
        f: impl Fn(&http::request::Parts, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.settings.key_fn = Some(Arc::new(f) as KeyFn);
        self
    }

    /// Revalidate every cached response with the origin before serving it, except fresh
    /// `immutable` ones (default false).
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().always_revalidate(true);
    /// ```
    pub fn always_revalidate(mut self, always: bool) -> Self {
        self.settings.always_revalidate = always;
        self
    }

    /// Serve a stale response when the origin fails (a connection error, or 500, 502, 503 or
    /// 504) while revalidating it, for responses without their own `stale-if-error` (default
    /// off). Never against `must-revalidate`, `no-cache`, or in a shared cache
    /// `proxy-revalidate` and `s-maxage`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::http::{HttpCache, StaleWindow};
    /// // Up to a day past expiry while the origin is down.
    /// let builder = HttpCache::builder()
    ///     .stale_if_error(StaleWindow::Max(Duration::from_secs(86_400)));
    /// ```
    pub fn stale_if_error(mut self, window: StaleWindow) -> Self {
        self.settings.stale_if_error = window;
        self
    }

    /// Serve a stale response at once and refresh it in the background, once per key however
    /// many requests arrive meanwhile, for responses without their own
    /// `stale-while-revalidate` (default off). Never against `must-revalidate`, `no-cache`, or
    /// in a shared cache `proxy-revalidate` and `s-maxage`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::http::{HttpCache, StaleWindow};
    /// let builder =
    ///     HttpCache::builder().stale_while_revalidate(StaleWindow::Max(Duration::from_secs(60)));
    /// ```
    pub fn stale_while_revalidate(mut self, window: StaleWindow) -> Self {
        self.settings.stale_while_revalidate = window;
        self
    }

    /// Answer from the cache only, as if every request said `Cache-Control: only-if-cached`:
    /// `504 Gateway Timeout` when nothing usable (fresh, or stale where allowed) is stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    ///
    /// let table = Table::builder().open().await?;
    /// let cache = HttpCache::builder().only_if_cached(true).build(table)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// // Nothing is stored, and the origin is never asked.
    /// let response = client.get("https://example.com/").send().await?;
    /// assert_eq!(response.status(), 504);
    /// # Ok(()) }
    /// ```
    pub fn only_if_cached(mut self, only: bool) -> Self {
        self.settings.only_if_cached = only;
        self
    }

    /// Read from the cache but never write to it.
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().read_only(true);
    /// ```
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.settings.read_only = read_only;
        self
    }

    /// Bodies larger than this are passed through without being cached (default 64 MiB).
    ///
    /// ```
    /// let builder = dynacache::http::HttpCache::builder().max_body_size(1024 * 1024);
    /// ```
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

    /// The longest a request waits for the cache to find its stored response (default 1 s);
    /// past it, the request goes to the origin as on a miss. With the table's own timeouts and
    /// circuit breaker, this bounds what an unwell table can add to a request.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = dynacache::http::HttpCache::builder().lookup_timeout(Duration::from_millis(200));
    /// ```
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.settings.lookup_timeout = timeout;
        self
    }

    /// The longest a request waits for the cache's writes for it (storing the response,
    /// updating it after a 304, invalidating; default 250 ms). Writes that take longer go on in
    /// the background, so a miss is never slower than the origin plus this. [`HttpCache::flush`]
    /// waits for them.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = dynacache::http::HttpCache::builder().write_wait(Duration::ZERO); // never wait
    /// ```
    pub fn write_wait(mut self, wait: Duration) -> Self {
        self.settings.write_wait = wait;
        self
    }

    /// How long after expiry DynamoDB's TTL may delete a response (default: one day, or the
    /// stale windows when longer), so that revalidation and stale serving still find it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = dynacache::http::HttpCache::builder().ttl_grace(Duration::from_secs(3600));
    /// ```
    pub fn ttl_grace(mut self, grace: Duration) -> Self {
        self.ttl_grace = Some(grace);
        self
    }

    /// The clock freshness is measured against.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::ManualClock;
    ///
    /// // Tests of expiry move time forward without sleeping.
    /// let clock = ManualClock::new();
    /// let builder = dynacache::http::HttpCache::builder().clock(clock.clone());
    /// clock.advance(Duration::from_secs(600));
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Keeps responses in memory too, in front of the table (default: off). A hit from the tier
    /// costs no DynamoDB call and no decoding; what another process stores, revalidates or
    /// invalidates is seen within the tier's staleness bound; this cache's own writes are seen
    /// at once; no response is kept past its freshness. See [`InProcessTier`](crate::InProcessTier).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::InProcessTier;
    /// let builder = dynacache::http::HttpCache::builder()
    ///     .in_process(InProcessTier::new(256 << 20).l1_ttl(Duration::from_secs(1)));
    /// ```
    pub fn in_process(mut self, tier: crate::InProcessTier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// One trip to the origin per miss across the fleet (default: off; misses are always
    /// shared within a process). On a miss of a `GET`, the process that takes a lease item in
    /// the table fetches; the others poll the table for the response it stores, and fetch
    /// themselves when it does not land within the flight's wait (the leader crashed, was slow,
    /// or the response is not storable). A miss costs two more writes (taking and releasing the
    /// lease) and a read, and, for processes that wait, a read per poll (20 ms doubling to
    /// 500 ms). See
    /// [`FleetSingleFlight`](crate::FleetSingleFlight).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::FleetSingleFlight;
    /// let builder = dynacache::http::HttpCache::builder().fleet_single_flight(
    ///     FleetSingleFlight::new(Duration::from_secs(10)).wait(Duration::from_secs(2)),
    /// );
    /// ```
    pub fn fleet_single_flight(mut self, flight: crate::FleetSingleFlight) -> Self {
        self.fleet = Some(flight);
        self
    }

    /// The client background refreshes (`stale_while_revalidate`) use when the cache runs as a
    /// middleware (a [`CachedClient`](super::CachedClient) uses its own).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::http::{HttpCache, StaleWindow};
    /// let builder = HttpCache::builder()
    ///     .stale_while_revalidate(StaleWindow::Max(Duration::from_secs(60)))
    ///     .refresh_client(reqwest::Client::new());
    /// ```
    pub fn refresh_client(mut self, client: reqwest::Client) -> Self {
        self.refresher = Some(client);
        self
    }

    /// Signs every stored response with HMAC-SHA256 and serves only responses whose signature
    /// verifies; others are misses (logged and counted, never served). The first key signs;
    /// every key verifies, so keys can be rotated: put the new key first, keep the old one
    /// until the responses it signed have expired.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let table = Table::builder().open().await?;
    /// // Rotating: the new key signs, both verify.
    /// HttpCache::builder()
    ///     .secret_keys(["key of June", "key of May"])
    ///     .build(table.clone())?;
    /// assert!(HttpCache::builder().secret_keys([""]).build(table).is_err()); // empty key
    /// # Ok(()) }
    /// ```
    pub fn secret_keys<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.secret_keys = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// Builds the cache on a table. Fails on an invalid namespace or an empty secret key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let table = Table::builder().open().await?;
    /// let cache = HttpCache::builder().build(table.clone())?;
    /// assert_eq!(cache.response_count().await?, 0);
    /// assert!(HttpCache::builder().namespace("not valid!").build(table).is_err());
    /// # Ok(()) }
    /// ```
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
                objects: self.objects.clone(),
            },
        )?;
        let policy = self.settings.policy();
        let tier = self
            .tier
            .map(|t| crate::tier::Tier::new(t, clock.clone(), "http"));
        Ok(HttpCache {
            inner: Arc::new(Inner {
                store,
                policy,
                settings: self.settings,
                clock,
                enabled: AtomicBool::new(true),
                counters: Counters::default(),
                coalescer: Coalescer::default(),
                refreshing: std::sync::Mutex::new(std::collections::HashSet::new()),
                writes: Arc::new(tokio::sync::Semaphore::new(
                    super::engine::MAX_BACKGROUND_WRITES,
                )),
                secret_keys: self.secret_keys,
                tier,
                refresh: self.refresher.map(super::front::reqwest::refresher),
                fleet: self.fleet,
            }),
        })
    }
}

/// Header names from strings; a string that is not one is a configuration error.
fn header_names<N: AsRef<str>>(
    names: impl IntoIterator<Item = N>,
) -> Result<Vec<http::HeaderName>> {
    names
        .into_iter()
        .map(|n| {
            http::HeaderName::from_bytes(n.as_ref().as_bytes())
                .map_err(|_| crate::Error::config(format!("{:?} is not a header name", n.as_ref())))
        })
        .collect()
}
