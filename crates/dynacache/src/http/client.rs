//! The three ways to use the HTTP cache: an async client, a reqwest-middleware middleware, and
//! a blocking client. All three call [`HttpCache::execute`].

use reqwest::{Client, IntoUrl, Method, Request, RequestBuilder, Response};

use super::cache::HttpCache;
use super::settings::RequestOptions;

/// A caching HTTP client: a [`reqwest::Client`] whose requests go through an [`HttpCache`].
///
/// Responses are ordinary [`reqwest::Response`]s; [`CacheFactsExt`](super::CacheFactsExt) tells
/// whether one came from the cache. A cache failure never fails a request: it is logged and
/// counted, and the request goes to the origin.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use dynacache::Table;
/// use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
///
/// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
/// let client = CachedClient::new(reqwest::Client::new(), cache);
/// let first = client.get("https://example.com/").send().await?;
/// let second = client.get("https://example.com/").send().await?;
/// assert!(!first.from_cache() && second.from_cache());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CachedClient {
    client: Client,
    cache: HttpCache,
}

impl CachedClient {
    /// Wraps a client.
    pub fn new(client: Client, cache: HttpCache) -> Self {
        cache.use_refresh_client(&client);
        CachedClient { client, cache }
    }

    /// The cache, for inspection and maintenance.
    pub fn cache(&self) -> &HttpCache {
        &self.cache
    }

    /// The wrapped client.
    pub fn inner(&self) -> &Client {
        &self.client
    }

    /// Starts a GET request.
    pub fn get<U: IntoUrl>(&self, url: U) -> CachedRequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a HEAD request.
    pub fn head<U: IntoUrl>(&self, url: U) -> CachedRequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// Starts a POST request (cached only when POST is in `allowed_methods`).
    pub fn post<U: IntoUrl>(&self, url: U) -> CachedRequestBuilder {
        self.request(Method::POST, url)
    }

    /// Starts a request.
    pub fn request<U: IntoUrl>(&self, method: Method, url: U) -> CachedRequestBuilder {
        CachedRequestBuilder {
            client: self.clone(),
            builder: self.client.request(method, url),
            options: RequestOptions::default(),
        }
    }

    /// Sends a request through the cache.
    pub async fn execute(&self, request: Request) -> reqwest::Result<Response> {
        self.execute_with(request, RequestOptions::default()).await
    }

    /// Sends a request through the cache with per-request options.
    pub async fn execute_with(
        &self,
        request: Request,
        options: RequestOptions,
    ) -> reqwest::Result<Response> {
        let client = &self.client;
        self.cache
            .execute(request, options, |req| client.execute(req))
            .await
    }
}

/// A request being built for a [`CachedClient`]: every [`reqwest::RequestBuilder`] setting is
/// reachable through [`map`](CachedRequestBuilder::map), plus the cache's per-request options.
#[derive(Debug)]
#[must_use]
pub struct CachedRequestBuilder {
    client: CachedClient,
    builder: RequestBuilder,
    options: RequestOptions,
}

impl CachedRequestBuilder {
    /// Changes the underlying [`reqwest::RequestBuilder`] (headers, body, timeout, ...).
    pub fn map(mut self, f: impl FnOnce(RequestBuilder) -> RequestBuilder) -> Self {
        self.builder = f(self.builder);
        self
    }

    /// Adds a header.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.map(|b| b.header(name, value))
    }

    /// Sets the body.
    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|b| b.body(body))
    }

    /// Sets a JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|b| b.json(json))
    }

    /// Per-request cache options.
    pub fn options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
    }

    /// Overrides the expiry of this response.
    pub fn expire_after(mut self, expire_after: impl Into<super::ExpireAfter>) -> Self {
        self.options.expire_after = Some(expire_after.into());
        self
    }

    /// Revalidates a cached response even if it is fresh.
    pub fn refresh(mut self) -> Self {
        self.options.refresh = true;
        self
    }

    /// Ignores the cached response and fetches anew (the result is stored).
    pub fn force_refresh(mut self) -> Self {
        self.options.force_refresh = true;
        self
    }

    /// Answers from the cache only (`504` when nothing fresh is cached).
    pub fn only_if_cached(mut self) -> Self {
        self.options.only_if_cached = true;
        self
    }

    /// Bypasses the cache for this request.
    pub fn disable_cache(mut self) -> Self {
        self.options.disable_cache = true;
        self
    }

    /// Sends the request.
    pub async fn send(self) -> reqwest::Result<Response> {
        let request = self.builder.build()?;
        self.client.execute_with(request, self.options).await
    }
}

/// The cache as a [`reqwest_middleware::Middleware`], to drop into an existing middleware stack
/// (retries, tracing, ...). Per-request options come from a [`RequestOptions`] extension.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use dynacache::Table;
/// use dynacache::http::{CacheMiddleware, HttpCache, RequestOptions};
///
/// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(CacheMiddleware::new(cache))
///     .build();
/// let response = client
///     .get("https://example.com/")
///     .with_extension(RequestOptions { refresh: true, ..Default::default() })
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CacheMiddleware {
    cache: HttpCache,
}

impl CacheMiddleware {
    /// A middleware storing in this cache. Background refreshes (`stale_while_revalidate`) use
    /// the builder's `refresh_client`, else a default client.
    pub fn new(cache: HttpCache) -> Self {
        CacheMiddleware { cache }
    }

    /// The cache, for inspection and maintenance.
    pub fn cache(&self) -> &HttpCache {
        &self.cache
    }
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for CacheMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let options = extensions
            .get::<RequestOptions>()
            .cloned()
            .unwrap_or_default();
        let shared = extensions.clone();
        self.cache
            .execute(req, options, |req| {
                let next = next.clone();
                let mut ext = shared.clone();
                async move { next.run(req, &mut ext).await }
            })
            .await
    }
}

/// A blocking caching client, for programs without an async runtime. It owns a small runtime;
/// do not call it from async code.
///
/// ```no_run
/// use dynacache::{Table, TableBuilder};
/// use dynacache::http::{HttpCache, blocking::CachedClient};
///
/// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
/// let response = client.get("https://example.com/")?;
/// println!("{} from cache: {}", response.status(), response.from_cache);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod blocking {
    use std::sync::Arc;

    use super::super::cache::{CacheFacts, CacheFactsExt, HttpCache, HttpCacheBuilder};
    use super::super::settings::RequestOptions;
    use crate::TableBuilder;
    use crate::error::{Error, Result};

    /// A response read to the end.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct BlockingResponse {
        /// The status.
        pub status: http::StatusCode,
        /// The headers.
        pub headers: http::HeaderMap,
        /// The final URL.
        pub url: url::Url,
        /// The body.
        pub body: bytes::Bytes,
        /// Whether it came from the cache.
        pub from_cache: bool,
        /// Everything the cache knows about it.
        pub facts: CacheFacts,
    }

    impl BlockingResponse {
        /// The status.
        pub fn status(&self) -> http::StatusCode {
            self.status
        }

        /// The body as text (lossy UTF-8).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body as JSON.
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
            serde_json::from_slice(&self.body)
        }
    }

    /// The blocking client.
    #[derive(Debug, Clone)]
    pub struct CachedClient {
        inner: super::CachedClient,
        runtime: Arc<tokio::runtime::Runtime>,
    }

    impl CachedClient {
        /// Opens the table and builds the cache and a default reqwest client.
        pub fn open(table: TableBuilder, cache: HttpCacheBuilder) -> Result<Self> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("dynacache-http-blocking")
                .enable_all()
                .build()
                .map_err(|e| Error::config(format!("cannot start a runtime: {e}")))?;
            let table = runtime.block_on(table.open())?;
            let cache: HttpCache = cache.build(table)?;
            let client = {
                let _guard = runtime.enter();
                reqwest::Client::new()
            };
            Ok(CachedClient {
                inner: super::CachedClient::new(client, cache),
                runtime: Arc::new(runtime),
            })
        }

        /// The cache.
        pub fn cache(&self) -> &HttpCache {
            self.inner.cache()
        }

        /// GET a URL through the cache.
        pub fn get(&self, url: &str) -> reqwest::Result<BlockingResponse> {
            self.get_with(url, RequestOptions::default())
        }

        /// GET a URL with per-request options.
        pub fn get_with(
            &self,
            url: &str,
            options: RequestOptions,
        ) -> reqwest::Result<BlockingResponse> {
            let request = self.inner.inner().get(url).build()?;
            self.execute_with(request, options)
        }

        /// Sends a request through the cache and reads the whole body.
        pub fn execute_with(
            &self,
            request: reqwest::Request,
            options: RequestOptions,
        ) -> reqwest::Result<BlockingResponse> {
            self.runtime.block_on(async {
                let res = self.inner.execute_with(request, options).await?;
                let facts = res.cache_facts();
                let status = res.status();
                let headers = res.headers().clone();
                let url = res.url().clone();
                let body = res.bytes().await?;
                Ok(BlockingResponse {
                    status,
                    headers,
                    url,
                    body,
                    from_cache: facts.from_cache,
                    facts,
                })
            })
        }

        /// Runs an async maintenance call of the cache (such as `response_count`) to completion.
        pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
            self.runtime.block_on(f)
        }
    }
}
