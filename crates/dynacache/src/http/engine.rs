//! The HTTP cache engine, on plain `http` types: what happens to one request.
//!
//! A front-end (the reqwest client and middleware today) turns its request into an
//! `http::Request<Bytes>` and hands the engine a way to send requests to the origin; the engine
//! looks the request up, decides with [`policy`](super::policy) whether what is stored can be
//! served, revalidates it, stores what the origin sends, invalidates what unsafe methods
//! change, and answers with an `http::Response<CacheBody<B>>`. Storage failures never reach the
//! caller: they are logged and counted, and the request goes to the origin.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, request};
use http_body::Body;

use super::body::{BoxError, CacheBody};
use super::facts::{CacheStats, Counters, Forward, bump};
use super::fleet::FleetTurn;
use super::policy::{self, Action, PolicyConfig, RequestDirectives};
use super::settings::{ExpireAfter, RequestOptions, Settings};
use super::stored::{Found, Lookup, Shared};
use crate::clock::Clock;
use crate::coalesce::{Coalescer, Role};
use crate::store::Store;
use crate::table::Table;

/// A body of a response from the origin, boxed (background refreshes). Its error is a concrete
/// type: a boxed trait object there trips the compiler's `Send` analysis of spawned futures.
pub(crate) type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Sends a request to the origin from a background task (stale-while-revalidate refreshes).
pub(crate) type Refresh = Arc<
    dyn Fn(Request<Bytes>) -> BoxFuture<'static, Result<Response<OriginBody>, BoxError>>
        + Send
        + Sync,
>;

/// Storage writes that may go on in the background at once, per cache.
pub(crate) const MAX_BACKGROUND_WRITES: usize = 256;

/// The URL a response finally came from (after redirects), when the front-end knows it: a
/// response extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinalUrl(pub(crate) url::Url);

/// The URL a response served from the cache was stored from: a response extension, parsed
/// only by the front-ends that report it (reqwest's `Response::url`), not on every hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredUrl(pub(crate) String);

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

pub(crate) struct Inner {
    pub(super) store: Store,
    pub(super) settings: Settings,
    pub(super) policy: PolicyConfig,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) enabled: AtomicBool,
    pub(super) counters: Counters,
    pub(super) coalescer: Coalescer<Shared>,
    pub(super) refreshing: Mutex<HashSet<String>>,
    /// Storage writes under way in the background (permits taken).
    pub(super) writes: Arc<tokio::sync::Semaphore>,
    pub(super) secret_keys: Vec<Vec<u8>>,
    /// The in-process tier, when on: resolved lookups by key.
    pub(super) tier: Option<crate::tier::Tier<String, super::stored::Kept>>,
    /// Background refreshes for front-ends that cannot make their own (the middleware).
    pub(super) refresh: Option<Refresh>,
    /// Fleet-wide single flight for misses, when on.
    pub(super) fleet: Option<crate::FleetSingleFlight>,
}

/// What the engine notes about a request on its way: why it went to the origin, and what went
/// wrong with the cache, for the response's facts (`Cache-Status`).
#[derive(Debug, Default)]
pub(crate) struct Note {
    forward: Option<Forward>,
    detail: Option<&'static str>,
}

/// A request as the engine sees it.
pub(crate) struct Incoming {
    pub(crate) parts: request::Parts,
    pub(crate) body: Bytes,
    pub(crate) url: url::Url,
    /// The method caching decisions use (`X-HTTP-Method-Override` and its kin honoured).
    pub(crate) method: Method,
    pub(crate) directives: RequestDirectives,
    pub(crate) fallback: ExpireAfter,
}

impl Incoming {
    /// A copy of the request for the origin: without the client's conditionals and `Range`
    /// (the cache wants a whole response it can store and then answer them from), with
    /// `validators` when revalidating a stored response.
    pub(crate) fn for_origin(&self, validators: Option<&http::HeaderMap>) -> Request<Bytes> {
        self.to_origin(validators, true)
    }

    /// The request for the origin on a miss: as [`for_origin`](Incoming::for_origin), except
    /// that a range of part of the response stays a range request (fetching a whole, maybe huge,
    /// response for a few bytes would cost more than the cache can save); `bytes=0-`, the whole
    /// response, is fetched and stored.
    pub(crate) fn for_origin_on_miss(&self) -> Request<Bytes> {
        let whole = self
            .parts
            .headers
            .get(http::header::RANGE)
            .is_none_or(|r| r.as_bytes().eq_ignore_ascii_case(b"bytes=0-"));
        self.to_origin(None, whole)
    }

    fn to_origin(&self, validators: Option<&http::HeaderMap>, strip_range: bool) -> Request<Bytes> {
        let mut parts = self.parts.clone();
        let range = if strip_range {
            Default::default()
        } else {
            [http::header::RANGE, http::header::IF_RANGE]
                .map(|h| parts.headers.get(&h).cloned().map(|v| (h, v)))
        };
        policy::strip_conditionals(&mut parts.headers);
        for (name, value) in range.into_iter().flatten() {
            parts.headers.insert(name, value);
        }
        if let Some(v) = validators {
            for (name, value) in v {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        Request::from_parts(parts, self.body.clone())
    }
}

impl HttpCache {
    /// Starts building an HTTP cache.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder()
    ///     .shared(true)
    ///     .build(Table::builder().open().await?)?;
    /// assert_eq!(cache.response_count().await?, 0);
    /// # Ok(()) }
    /// ```
    pub fn builder() -> super::HttpCacheBuilder {
        super::HttpCacheBuilder::default()
    }

    /// The table responses are stored in.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().name("http_cache").open().await?)?;
    /// assert_eq!(cache.table().name(), "http_cache");
    /// # Ok(()) }
    /// ```
    pub fn table(&self) -> &Table {
        self.inner.store.table()
    }

    /// The namespace of this cache's items.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let table = Table::builder().open().await?;
    /// assert_eq!(HttpCache::builder().build(table.clone())?.namespace(), "http");
    /// let api = HttpCache::builder().namespace("api").build(table)?;
    /// assert_eq!(api.namespace(), "api");
    /// # Ok(()) }
    /// ```
    pub fn namespace(&self) -> &str {
        self.inner.store.namespace()
    }

    /// Turns caching on or off at run time (requests then go straight to the origin).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// cache.set_enabled(false); // every clone of `cache` now bypasses the cache
    /// cache.set_enabled(true);
    /// # Ok(()) }
    /// ```
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Relaxed);
    }

    /// What the in-process tier holds now (`None` when there is none).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{InProcessTier, Table, http::HttpCache};
    /// let cache = HttpCache::builder()
    ///     .in_process(InProcessTier::new(1 << 20))
    ///     .build(Table::builder().open().await?)?;
    /// assert_eq!(cache.in_process_usage().unwrap().entries, 0);
    /// # Ok(()) }
    /// ```
    pub fn in_process_usage(&self) -> Option<crate::InProcessUsage> {
        self.inner.tier.as_ref().map(crate::tier::Tier::usage)
    }

    /// What the cache has done so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::{CacheStats, HttpCache}};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let stats = cache.stats();
    /// println!("{} hits, {} misses", stats.hits, stats.misses);
    /// assert_eq!(stats, CacheStats::default()); // nothing done yet
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    pub(super) fn now(&self) -> i64 {
        self.inner.clock.now_millis()
    }

    pub(super) fn storage_error(&self, what: &str, e: &crate::Error) {
        bump(&self.inner.counters.storage_errors);
        crate::metrics::storage_error(e);
        if e.is_unavailable() {
            // The table's breaker is open: it logged that once, and counts what it refuses.
            tracing::debug!(error = %e, "dynacache: {what} skipped; the table is unavailable");
        } else {
            tracing::warn!(error = %e, "dynacache: {what} failed; going on without the cache");
        }
    }

    /// Runs a storage write off the response path: the request waits for it up to
    /// `write_wait`, then it goes on in the background (at most [`MAX_BACKGROUND_WRITES`] at
    /// once; past that it is dropped and counted). Failures are logged and counted.
    pub(super) async fn write_behind<F>(&self, what: &'static str, write: F)
    where
        F: Future<Output = crate::Result<()>> + Send + 'static,
    {
        let Ok(permit) = self.inner.writes.clone().try_acquire_owned() else {
            bump(&self.inner.counters.writes_dropped);
            tracing::debug!("dynacache: {what} dropped; too many writes under way");
            return;
        };
        let cache = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = write.await {
                cache.storage_error(what, &e);
            }
            drop(permit);
        });
        let _ = tokio::time::timeout(self.inner.settings.write_wait, task).await;
    }

    /// Waits until every write under way in the background has landed (or failed): for tests,
    /// and before a process exits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// cache.flush().await;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) {
        if let Ok(all) = self
            .inner
            .writes
            .acquire_many(MAX_BACKGROUND_WRITES as u32)
            .await
        {
            drop(all);
        }
    }

    /// How the middleware refreshes in the background, when the builder was given a client.
    pub(super) fn background_refresh(&self) -> Option<Refresh> {
        self.inner.refresh.clone()
    }

    /// The base key of a request (before `Vary`).
    pub(super) fn key_for_parts(
        &self,
        parts: &request::Parts,
        url: &url::Url,
        body: &[u8],
    ) -> String {
        let key = super::key::create_key(
            &parts.method,
            url,
            &parts.headers,
            body,
            &self.inner.settings,
        );
        match &self.inner.settings.key_fn {
            Some(f) => f(parts, &key),
            None => key,
        }
    }

    /// The whole cache under any HTTP client: looks `request` up, serves it from the cache when
    /// RFC 9111 allows, and otherwise sends the origin the request it needs (the request itself,
    /// or a conditional revalidation) through `fetch`, storing what comes back. This is what
    /// [`CachedClient`](super::CachedClient) and [`CacheLayer`](super::CacheLayer) do for reqwest
    /// and tower; a front-end for another client (the Python package's requests adapter and
    /// httpx transports) calls it with that client's way of sending a request.
    ///
    /// `request` carries an absolute URI and its whole body (a request whose body streams cannot
    /// be keyed: send it yourself, then call [`invalidate_for`](HttpCache::invalidate_for)).
    /// `fetch` may be called more than once (a revalidation answered for another
    /// representation is fetched whole). The response's [`CacheFacts`](super::CacheFacts)
    /// extension tells whether it came from the cache and why not. Storage failures never reach
    /// the caller; `fetch`'s own errors do, unless a stale response may stand in for them
    /// (`stale-if-error`). `stale-while-revalidate` revalidates before answering, since there is
    /// no client here to refresh in the background with.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bytes::Bytes;
    /// use dynacache::{Table, http::{CacheFacts, HttpCache, RequestOptions}};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let origin = |_req: http::Request<Bytes>| async {
    ///     Ok::<_, std::convert::Infallible>(
    ///         http::Response::builder()
    ///             .header("cache-control", "max-age=60")
    ///             .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
    ///             .unwrap(),
    ///     )
    /// };
    /// let request = || http::Request::get("https://example.com/").body(Bytes::new()).unwrap();
    /// let first = cache.send_with(request(), RequestOptions::default(), origin).await?;
    /// assert!(!first.extensions().get::<CacheFacts>().unwrap().from_cache);
    /// cache.flush().await;
    /// let second = cache.send_with(request(), RequestOptions::default(), origin).await?;
    /// assert!(second.extensions().get::<CacheFacts>().unwrap().from_cache);
    /// # Ok(()) }
    /// ```
    pub async fn send_with<B, E, F, Fut>(
        &self,
        request: Request<Bytes>,
        options: RequestOptions,
        fetch: F,
    ) -> Result<Response<CacheBody<B>>, E>
    where
        F: Fn(Request<Bytes>) -> Fut,
        Fut: Future<Output = Result<Response<B>, E>>,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.execute(request, options, fetch, None).await
    }

    /// The whole caching decision for one request. `fetch` sends a request to the origin;
    /// `refresh`, when given, lets stale-while-revalidate refresh in the background. The
    /// response's [`CacheFacts`](super::CacheFacts) say why it was forwarded, if it was.
    #[tracing::instrument(level = "debug", name = "dynacache.http.request", skip_all, fields(method = %req.method()))]
    pub(crate) async fn execute<B, E, F, Fut>(
        &self,
        req: Request<Bytes>,
        opts: RequestOptions,
        fetch: F,
        refresh: Option<Refresh>,
    ) -> Result<Response<CacheBody<B>>, E>
    where
        F: Fn(Request<Bytes>) -> Fut,
        Fut: Future<Output = Result<Response<B>, E>>,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut note = Note::default();
        // Boxed: callers' stacks (a test thread's in debug builds, say) need not hold the
        // engine's future. Its rarely taken paths (misses, revalidations, the table lookup, a
        // body read from chunks) are boxed in turn where they start, so that a request in
        // flight holds about 5 KB rather than 22 KB (measured in release).
        let mut res = Box::pin(self.execute_noted(req, opts, fetch, refresh, &mut note)).await?;
        if let Some(facts) = res.extensions_mut().get_mut::<super::facts::CacheFacts>() {
            if !facts.from_cache || facts.revalidated || facts.coalesced {
                facts.forward = note.forward;
            }
            facts.detail = note.detail;
        }
        Ok(res)
    }

    async fn execute_noted<B, E, F, Fut>(
        &self,
        req: Request<Bytes>,
        opts: RequestOptions,
        fetch: F,
        refresh: Option<Refresh>,
        note: &mut Note,
    ) -> Result<Response<CacheBody<B>>, E>
    where
        F: Fn(Request<Bytes>) -> Fut,
        Fut: Future<Output = Result<Response<B>, E>>,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let settings = &self.inner.settings;
        let (parts, body) = req.into_parts();
        let overridden = method_override(&parts).is_some();
        let method = invalidating_method(&parts);
        let Ok(url) = url::Url::parse(&parts.uri.to_string()) else {
            // Not an absolute URL: nothing to key it on.
            note.forward = Some(Forward::Bypass);
            let res = Box::pin(fetch(Request::from_parts(parts, body))).await?;
            return Ok(passed_through(res));
        };
        let fallback = opts
            .expire_after
            .unwrap_or_else(|| settings.expire_after_for(&url));
        let incoming = Incoming {
            directives: policy::request_directives(&parts.headers),
            parts,
            body,
            url,
            method,
            fallback,
        };
        // A request's own no-store bypasses the cache both ways, as fetch()'s "no-store" mode
        // does: RFC 9111 only forbids storing, and not reading the cache is always allowed.
        let cacheable = self.inner.enabled.load(Ordering::Relaxed)
            && !opts.disable_cache
            && !incoming.directives.no_store
            // Method override headers only ever turn caching off: a POST that claims to be a
            // GET is still a POST to the cache.
            && !overridden
            // Preconditions on the state of the resource are the origin's to evaluate.
            && !incoming.parts.headers.contains_key(http::header::IF_MATCH)
            && !incoming
                .parts
                .headers
                .contains_key(http::header::IF_UNMODIFIED_SINCE)
            && settings.allowed_methods.contains(&incoming.method)
            // With headers ignored, "do not cache" can skip the cache without reading it.
            && (self.inner.policy.honour_headers || fallback != ExpireAfter::DoNotCache);
        if !cacheable {
            note.forward = Some(
                if !settings.allowed_methods.contains(&incoming.method) || overridden {
                    Forward::Method
                } else if incoming.directives.no_store {
                    Forward::Request
                } else {
                    Forward::Bypass
                },
            );
            let res = Box::pin(fetch(Request::from_parts(
                incoming.parts.clone(),
                incoming.body.clone(),
            )))
            .await?;
            Box::pin(self.invalidate_after(&incoming, res.status(), res.headers())).await;
            return Ok(passed_through(res));
        }
        let base = self.key_for_parts(&incoming.parts, &incoming.url, &incoming.body);
        let only_if_cached =
            opts.only_if_cached || settings.only_if_cached || incoming.directives.only_if_cached;
        let looked_up_at = Instant::now();
        // The lookup reads heads only (bounded by `lookup_timeout`); a body in chunks is read
        // when it is served, only the chunks a range needs.
        let defer_body = true;
        let mut from_tier = false;
        let mut lookup = if opts.force_refresh {
            Lookup::empty(base)
        } else if let Some(lookup) = self.lookup_kept(&base, &incoming.parts.headers) {
            from_tier = true;
            lookup
        } else {
            let read = self.inner.tier.as_ref().map(crate::tier::Tier::read_start);
            let lookup = Box::pin(self.lookup(&base, &incoming.parts.headers, defer_body));
            match tokio::time::timeout(settings.lookup_timeout, lookup).await {
                Ok(Ok(lookup)) => {
                    if let Some(read) = read {
                        self.keep(read, &lookup);
                    }
                    lookup
                }
                Ok(Err(e)) => {
                    self.storage_error("reading the cache", &e);
                    note.detail = Some("cache-read-error");
                    Lookup::empty(base)
                }
                Err(_) => {
                    self.table().gave_up();
                    let e = crate::Error::Timeout("the cache lookup took too long".into());
                    self.storage_error("reading the cache", &e);
                    note.detail = Some("cache-read-timeout");
                    Lookup::empty(base)
                }
            }
        };
        let Some(found) = lookup.found.take() else {
            if only_if_cached {
                return Ok(super::reply::gateway_timeout());
            }
            bump(&self.inner.counters.misses);
            crate::metrics::miss("http");
            note.forward = Some(if opts.force_refresh {
                Forward::Request
            } else if lookup.index.is_some() {
                Forward::VaryMiss
            } else {
                Forward::UriMiss
            });
            return Box::pin(self.miss(&incoming, &lookup, looked_up_at, &fetch)).await;
        };

        let now = self.now();
        let mut directives = incoming.directives.clone();
        directives.no_cache |= opts.refresh;
        let decision = policy::decide(&found.meta(), &directives, &self.inner.policy, now);
        match decision.action {
            Action::Serve { stale } => {
                let was_deferred = found.deferred.is_some();
                let Some(found) = self.ready_now(found, &incoming).await else {
                    note.forward = Some(Forward::UriMiss);
                    note.detail = Some("cache-body-unreadable");
                    return Box::pin(self.miss(&incoming, &lookup, looked_up_at, &fetch)).await;
                };
                if was_deferred && found.part.is_none() && found.stream.is_none() {
                    // A body read from its chunks, whole: keep it for the next hits.
                    self.remember(&lookup, &found);
                }
                if stale {
                    bump(&self.inner.counters.stale_served);
                    crate::metrics::stale_served("http");
                } else {
                    bump(&self.inner.counters.hits);
                    crate::metrics::hit("http", if from_tier { "memory" } else { "table" });
                    if let Some(refresh) = refresh.clone()
                        && self.refresh_early(&found)
                    {
                        self.refresh_in_background(&found, &incoming, &lookup, refresh);
                    }
                }
                Ok(self.reply(&found, &incoming, &decision, Served::hit(stale)))
            }
            Action::ServeStaleAndRevalidate if refresh.is_some() => {
                let Some(found) = self.ready_now(found, &incoming).await else {
                    note.forward = Some(Forward::UriMiss);
                    note.detail = Some("cache-body-unreadable");
                    return Box::pin(self.miss(&incoming, &lookup, looked_up_at, &fetch)).await;
                };
                if let Some(refresh) = refresh {
                    self.refresh_in_background(&found, &incoming, &lookup, refresh);
                }

                bump(&self.inner.counters.stale_served);
                crate::metrics::stale_served("http");
                Ok(self.reply(&found, &incoming, &decision, Served::hit(true)))
            }
            Action::Revalidate { .. } | Action::ServeStaleAndRevalidate if only_if_cached => {
                Ok(super::reply::gateway_timeout())
            }
            action => {
                note.forward = Some(if directives.no_cache || directives.max_age == Some(0) {
                    Forward::Request
                } else {
                    Forward::Stale
                });
                // Without a way to refresh in the background, a response servable while it is
                // revalidated is revalidated now, and still served if that fails.
                let stale_if_error = match action {
                    Action::Revalidate { stale_if_error } => stale_if_error,
                    _ => true,
                };
                let validators = policy::validators(&found.doc.headers, self.now());
                let request_time = self.now();
                let res = Box::pin(fetch(incoming.for_origin(Some(&validators)))).await;
                let origin_failed = match &res {
                    Ok(res) => is_origin_error(res.status()),
                    Err(_) => true,
                };
                if stale_if_error
                    && origin_failed
                    && let Some(found) = self.ready_now(found.clone(), &incoming).await
                {
                    let stale = found.is_stale(self.now());
                    bump(&self.inner.counters.stale_served);
                    crate::metrics::stale_served("http");
                    return Ok(self.reply(&found, &incoming, &decision, Served::hit(stale)));
                }
                let res = res?;
                if res.status() != StatusCode::NOT_MODIFIED {
                    return Ok(Box::pin(self.store_and_answer(
                        &incoming,
                        &lookup,
                        res,
                        request_time,
                    ))
                    .await
                    .0);
                }
                if policy::not_modified_selects(&found.doc.headers, res.headers(), self.now())
                    && !vary_changed(&found.doc.headers, res.headers())
                {
                    let refreshed = Box::pin(self.apply_not_modified(
                        &found,
                        &incoming,
                        res.headers(),
                        request_time,
                    ))
                    .await;
                    if refreshed.deferred.is_none() {
                        self.remember(&lookup, &refreshed);
                    }
                    if let Some(refreshed) = self.ready_now(refreshed, &incoming).await {
                        bump(&self.inner.counters.revalidated);
                        crate::metrics::revalidated();
                        return Ok(self.reply(
                            &refreshed,
                            &incoming,
                            &decision,
                            Served::revalidated(),
                        ));
                    }
                }
                // A 304 for another representation than the stored one (or a stored body that
                // cannot be read any more): fetch it whole.
                let request_time = self.now();
                let res = Box::pin(fetch(incoming.for_origin(None))).await?;
                Ok(
                    Box::pin(self.store_and_answer(&incoming, &lookup, res, request_time))
                        .await
                        .0,
                )
            }
        }
    }

    /// For a request that did not go through the cache (its body streams): removes what its
    /// response invalidates, as [`send_with`](HttpCache::send_with) does for the others (a
    /// successful POST, PUT, DELETE or PATCH removes the stored responses of its URL and of
    /// its `Location` and `Content-Location` on the same host).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let (parts, ()) = http::Request::post("https://example.com/items").body(()).unwrap().into_parts();
    /// cache.invalidate_for(parts, http::StatusCode::CREATED, &http::HeaderMap::new()).await;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_for(
        &self,
        parts: request::Parts,
        status: StatusCode,
        headers: &http::HeaderMap,
    ) {
        let Ok(url) = url::Url::parse(&parts.uri.to_string()) else {
            return;
        };
        let incoming = Incoming {
            method: invalidating_method(&parts),
            directives: RequestDirectives::default(),
            parts,
            body: Bytes::new(),
            url,
            fallback: self.inner.settings.default_expire_after(),
        };
        self.invalidate_after(&incoming, status, headers).await;
    }

    /// A miss: one trip to the origin shared by every concurrent request for the response.
    /// [`ready`](HttpCache::ready), its (large) future allocated only for a body left in its
    /// chunks: a hit's future stays small.
    async fn ready_now(&self, found: Found, incoming: &Incoming) -> Option<Found> {
        if found.deferred.is_none() {
            return Some(found);
        }
        Box::pin(self.ready(found, incoming)).await
    }

    async fn miss<B, E, F, Fut>(
        &self,
        incoming: &Incoming,
        lookup: &Lookup,
        looked_up_at: Instant,
        fetch: &F,
    ) -> Result<Response<CacheBody<B>>, E>
    where
        F: Fn(Request<Bytes>) -> Fut,
        Fut: Future<Output = Result<Response<B>, E>>,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let key = lookup.coalescing_key(&incoming.parts.headers);
        let shared = match self.inner.coalescer.join(&key, looked_up_at) {
            Role::Leader(leader) => {
                let mut holding = None;
                if let Some(fleet) = self.inner.fleet {
                    match self.fleet_turn(incoming, lookup, &key, fleet).await {
                        FleetTurn::Landed {
                            found,
                            decision,
                            shared,
                        } => {
                            leader.finish(shared);
                            bump(&self.inner.counters.coalesced);
                            crate::metrics::coalesced("http", "fleet");
                            return Ok(self.reply(
                                &found,
                                incoming,
                                &decision,
                                Served::coalesced(),
                            ));
                        }
                        FleetTurn::Fetch(h) => holding = h,
                    }
                }
                let request_time = self.now();
                let res = fetch(incoming.for_origin_on_miss()).await;
                let res = match res {
                    Ok(res) => res,
                    Err(e) => {
                        self.end_fleet_turn(holding).await;
                        return Err(e);
                    }
                };
                let (response, shared) = self
                    .store_and_answer(incoming, lookup, res, request_time)
                    .await;
                leader.finish(shared);
                self.end_fleet_turn(holding).await;
                return Ok(response);
            }
            Role::Follower(mut rx) => rx.recv().await.ok().flatten(),
            Role::Finished(outcome) => outcome,
        };
        if let Some(shared) = shared
            && self.fits(&shared, incoming)
        {
            bump(&self.inner.counters.coalesced);
            crate::metrics::coalesced("http", "local");
            let found = Found {
                key: shared.key.clone(),
                doc: shared.doc.clone(),
                written: shared.doc.received_ms,
                digest: None,
                chunks: None,
                deferred: None,
                part: None,
                stream: shared.stream.clone(),
            };
            let decision = policy::decide(
                &found.meta(),
                &RequestDirectives::default(),
                &self.inner.policy,
                self.now(),
            );
            return Ok(self.reply(&found, incoming, &decision, Served::coalesced()));
        }
        // The leader failed, or brought back a response this request may not use.
        let request_time = self.now();
        let res = fetch(incoming.for_origin_on_miss()).await?;
        Ok(self
            .store_and_answer(incoming, lookup, res, request_time)
            .await
            .0)
    }

    /// XFetch for a fresh response: refresh it now, ahead of expiry? Never without a cost
    /// (responses stored before it was recorded) or an expiry.
    fn refresh_early(&self, found: &Found) -> bool {
        let (Some(beta), Some(expires), Some(cost)) = (
            self.inner.settings.refresh_ahead,
            found.doc.expires_ms,
            found.doc.fetch_ms,
        ) else {
            return false;
        };
        // -ln(u) for u in (0, 1]: exponentially distributed, mean 1.
        let draw = -(1.0 - fastrand::f64()).ln();
        self.now() as f64 + cost as f64 * beta * draw >= expires as f64
    }

    /// Revalidates a stale response in the background, once per key at a time.
    fn refresh_in_background(
        &self,
        found: &Found,
        incoming: &Incoming,
        lookup: &Lookup,
        refresh: Refresh,
    ) {
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
        let cache = self.clone();
        let found = found.clone();
        let incoming = incoming.clone_without_extensions();
        let lookup = Lookup {
            base: lookup.base.clone(),
            index: lookup.index.clone(),
            found: None,
        };
        tokio::spawn(async move {
            cache.refresh(&found, &incoming, &lookup, refresh).await;
            cache
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&found.key);
        });
    }

    async fn refresh(&self, found: &Found, incoming: &Incoming, lookup: &Lookup, refresh: Refresh) {
        let validators = policy::validators(&found.doc.headers, self.now());
        let request_time = self.now();
        let res: Response<OriginBody> = match refresh(incoming.for_origin(Some(&validators))).await
        {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(error = %e, "background refresh failed");
                return;
            }
        };
        if res.status() == StatusCode::NOT_MODIFIED {
            if policy::not_modified_selects(&found.doc.headers, res.headers(), self.now()) {
                self.apply_not_modified(found, incoming, res.headers(), request_time)
                    .await;
                bump(&self.inner.counters.revalidated);
                crate::metrics::revalidated();
            }
        } else if !is_origin_error(res.status()) {
            // What was not stored (an oversized body) is dropped, not read.
            let _ = self
                .store_and_answer(incoming, lookup, res, request_time)
                .await;
        }
    }

    /// Whether a coalesced request may use the response the leader stored: the same variant,
    /// and a response this request would have been allowed to store.
    fn fits(&self, shared: &Shared, incoming: &Incoming) -> bool {
        if let Some(index) = &shared.index
            && super::key::variant_suffix(index, &incoming.parts.headers) != shared.suffix
        {
            return false;
        }
        let exchange = policy::Exchange {
            request_headers: &incoming.parts.headers,
            status: shared.doc.status,
            headers: &shared.doc.headers,
            request_time_ms: shared.doc.received_ms,
            response_time_ms: shared.doc.received_ms,
        };
        policy::storable(&exchange, &self.inner.policy, incoming.fallback).is_ok()
    }
}

impl Incoming {
    /// A copy for a background task (request extensions are not `'static`-safe to share).
    fn clone_without_extensions(&self) -> Incoming {
        let mut parts = Request::new(()).into_parts().0;
        parts.method = self.parts.method.clone();
        parts.uri = self.parts.uri.clone();
        parts.version = self.parts.version;
        parts.headers = self.parts.headers.clone();
        Incoming {
            parts,
            body: self.body.clone(),
            url: self.url.clone(),
            method: self.method.clone(),
            directives: self.directives.clone(),
            fallback: self.fallback,
        }
    }
}

/// How a response served by the cache came to be.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Served {
    pub(crate) from_cache: bool,
    pub(crate) revalidated: bool,
    pub(crate) stale: bool,
    pub(crate) coalesced: bool,
}

impl Served {
    fn hit(stale: bool) -> Self {
        Served {
            from_cache: true,
            stale,
            ..Default::default()
        }
    }

    fn revalidated() -> Self {
        Served {
            from_cache: true,
            revalidated: true,
            ..Default::default()
        }
    }

    fn coalesced() -> Self {
        Served {
            coalesced: true,
            ..Default::default()
        }
    }
}

/// A response from the origin passed through as it is.
pub(crate) fn passed_through<B>(res: Response<B>) -> Response<CacheBody<B>> {
    let mut res = res.map(|b| CacheBody::streaming(Bytes::new(), b));
    res.extensions_mut()
        .insert(super::facts::CacheFacts::default());
    res
}

/// 500, 502, 503 and 504: the statuses `stale-if-error` covers (RFC 5861 §4).
fn is_origin_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// The method an override header (`X-HTTP-Method-Override` and its kin) names, if any.
fn method_override(parts: &request::Parts) -> Option<Method> {
    [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .find_map(|h| {
        let value = parts.headers.get(*h)?;
        Method::from_bytes(value.as_bytes()).ok()
    })
}

/// The method whose response decides invalidation: the request's, or an unsafe one an
/// override header names (the origin may well honour it).
fn invalidating_method(parts: &request::Parts) -> Method {
    match method_override(parts) {
        Some(m)
            if !matches!(
                m,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            ) =>
        {
            m
        }
        _ => parts.method.clone(),
    }
}

/// Whether a 304 says the response now varies on other request headers than the stored one:
/// then it cannot update that one (RFC 9111 §4.1, §4.3.4).
fn vary_changed(stored: &http::HeaderMap, not_modified: &http::HeaderMap) -> bool {
    not_modified.contains_key(http::header::VARY)
        && policy::vary(not_modified) != policy::vary(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_overrides_only_make_requests_less_cacheable() {
        let (mut parts, _) = Request::post("http://x/").body(()).unwrap().into_parts();
        parts
            .headers
            .insert("x-http-method-override", "GET".parse().unwrap());
        assert_eq!(method_override(&parts), Some(Method::GET));
        assert_eq!(invalidating_method(&parts), Method::POST, "still a POST");
        let (mut parts, _) = Request::get("http://x/").body(()).unwrap().into_parts();
        parts
            .headers
            .insert("x-http-method-override", "DELETE".parse().unwrap());
        assert_eq!(invalidating_method(&parts), Method::DELETE);
    }

    #[test]
    fn a_304_with_another_vary_cannot_update_the_stored_response() {
        let mut stored = http::HeaderMap::new();
        stored.insert(http::header::VARY, "accept".parse().unwrap());
        let mut nm = http::HeaderMap::new();
        assert!(
            !vary_changed(&stored, &nm),
            "no Vary in the 304: nothing changes"
        );
        nm.insert(http::header::VARY, "Accept".parse().unwrap());
        assert!(!vary_changed(&stored, &nm));
        nm.insert(http::header::VARY, "accept-language".parse().unwrap());
        assert!(vary_changed(&stored, &nm));
    }
}
