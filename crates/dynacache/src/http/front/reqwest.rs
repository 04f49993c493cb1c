//! The reqwest front-ends: an async client, a reqwest-middleware middleware, and a blocking
//! client. All three turn a `reqwest::Request` into an `http::Request<Bytes>` and hand it to
//! the engine; they adapt types and nothing else.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use reqwest::{Client, IntoUrl, Method, Request, RequestBuilder, Response, ResponseBuilderExt};

use crate::http::body::CacheBody;
use crate::http::engine::{FinalUrl, HttpCache, Refresh, StoredUrl};
use crate::http::settings::RequestOptions;

/// The request in the engine's form, or the request back when its body streams (it cannot be
/// keyed or replayed, so it goes to the origin uncached).
fn to_engine(req: Request) -> reqwest::Result<Result<http::Request<Bytes>, Request>> {
    if req.body().is_some_and(|b| b.as_bytes().is_none()) {
        return Ok(Err(req));
    }
    let (parts, body) = http::Request::<reqwest::Body>::try_from(req)?.into_parts();
    let body = body
        .as_bytes()
        .map(Bytes::copy_from_slice)
        .unwrap_or_default();
    Ok(Ok(http::Request::from_parts(parts, body)))
}

/// An engine request as a reqwest request (its extensions carry reqwest's per-request settings,
/// such as the timeout).
fn to_reqwest(req: http::Request<Bytes>) -> reqwest::Result<Request> {
    let empty = req.body().is_empty();
    let mut out = Request::try_from(req)?;
    if empty && !matches!(*out.method(), Method::POST | Method::PUT | Method::PATCH) {
        *out.body_mut() = None;
    }
    Ok(out)
}

/// A reqwest response in the engine's form, its final URL kept as an extension.
fn from_origin(res: Response) -> http::Response<reqwest::Body> {
    let url = FinalUrl(res.url().clone());
    let mut res = http::Response::<reqwest::Body>::from(res);
    res.extensions_mut().insert(url);
    res
}

/// The engine's answer as a reqwest response (bytes from the cache stay reusable bytes).
fn to_response(
    res: http::Response<CacheBody<reqwest::Body>>,
    request_url: &reqwest::Url,
) -> Response {
    let url = match (
        res.extensions().get::<FinalUrl>(),
        res.extensions().get::<StoredUrl>(),
    ) {
        (Some(fin), _) => fin.0.clone(),
        (None, Some(stored)) => url::Url::parse(&stored.0).unwrap_or_else(|_| request_url.clone()),
        (None, None) => request_url.clone(),
    };
    let (mut parts, body) = res.into_parts();
    let body = match body.as_full() {
        Some(bytes) => reqwest::Body::from(bytes),
        None => reqwest::Body::wrap(body),
    };
    let with_url = http::Response::builder()
        .url(url)
        .body(())
        .map(|r| r.into_parts().0.extensions)
        .unwrap_or_default();
    parts.extensions.extend(with_url);
    Response::from(http::Response::from_parts(parts, body))
}

/// Background refreshes through this client.
pub(crate) fn refresher(client: Client) -> Refresh {
    Arc::new(move |req| {
        let client = client.clone();
        Box::pin(async move {
            let res = client.execute(to_reqwest(req)?).await?;
            Ok(from_origin(res).map(|b| b.map_err(std::io::Error::other).boxed_unsync()))
        })
    })
}

/// Sends a request through the cache with `send` as the way to the origin.
async fn execute<F, Fut, E>(
    cache: &HttpCache,
    request: Request,
    options: RequestOptions,
    send: F,
    refresh: Option<Refresh>,
) -> Result<Response, E>
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response, E>>,
    E: From<reqwest::Error>,
{
    let url = request.url().clone();
    let req = match to_engine(request)? {
        Ok(req) => req,
        Err(request) => {
            let mut parts = http::Request::new(()).into_parts().0;
            parts.method = request.method().clone();
            parts.headers = request.headers().clone();
            if let Ok(uri) = url.as_str().parse() {
                parts.uri = uri;
            }
            let res = send(request).await?;
            cache
                .invalidate_for(parts, res.status(), res.headers())
                .await;
            return Ok(res);
        }
    };
    let send = &send;
    let res = cache
        .execute(
            req,
            options,
            |req| async move { Ok::<_, E>(from_origin(send(to_reqwest(req)?).await?)) },
            refresh,
        )
        .await?;
    Ok(to_response(res, &url))
}

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
#[derive(Clone)]
pub struct CachedClient {
    client: Client,
    cache: HttpCache,
    refresh: Refresh,
}

impl std::fmt::Debug for CachedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedClient")
            .field("client", &self.client)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CachedClient {
    /// Wraps a client.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let reqwest = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    /// let client = CachedClient::new(reqwest, cache);
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, cache: HttpCache) -> Self {
        let refresh = refresher(client.clone());
        CachedClient {
            client,
            cache,
            refresh,
        }
    }

    /// The cache, for inspection and maintenance.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// assert_eq!(client.cache().response_count().await?, 0);
    /// # Ok(()) }
    /// ```
    pub fn cache(&self) -> &HttpCache {
        &self.cache
    }

    /// The wrapped client.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// // Requests sent with the wrapped client itself bypass the cache.
    /// let request = client.inner().get("https://example.com/").build()?;
    /// assert_eq!(request.url().as_str(), "https://example.com/");
    /// # Ok(()) }
    /// ```
    pub fn inner(&self) -> &Client {
        &self.client
    }

    /// Starts a GET request.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let body = client.get("https://example.com/").send().await?.text().await?;
    /// # Ok(()) }
    /// ```
    pub fn get<U: IntoUrl>(&self, url: U) -> CachedRequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a HEAD request.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let response = client.head("https://example.com/video.mp4").send().await?;
    /// println!("{:?}", response.headers().get(http::header::CONTENT_LENGTH));
    /// # Ok(()) }
    /// ```
    pub fn head<U: IntoUrl>(&self, url: U) -> CachedRequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// Starts a POST request (cached only when POST is in `allowed_methods`).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    /// use http::Method;
    ///
    /// let cache = HttpCache::builder()
    ///     .allowed_methods([Method::GET, Method::HEAD, Method::POST])
    ///     .build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// // The body is part of the key: the same query, the same stored response.
    /// let query = serde_json::json!({ "query": "{ viewer { name } }" });
    /// let response = client.post("https://example.com/graphql").json(&query).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn post<U: IntoUrl>(&self, url: U) -> CachedRequestBuilder {
        self.request(Method::POST, url)
    }

    /// Starts a request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// let response = client
    ///     .request(reqwest::Method::GET, "https://example.com/")
    ///     .only_if_cached()
    ///     .send()
    ///     .await?;
    /// assert_eq!(response.status(), 504); // nothing stored yet
    /// # Ok(()) }
    /// ```
    pub fn request<U: IntoUrl>(&self, method: Method, url: U) -> CachedRequestBuilder {
        CachedRequestBuilder {
            client: self.clone(),
            builder: self.client.request(method, url),
            options: RequestOptions::default(),
        }
    }

    /// Sends a request through the cache.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let request = client.inner().get("https://example.com/").build()?;
    /// let response = client.execute(request).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute(&self, request: Request) -> reqwest::Result<Response> {
        self.execute_with(request, RequestOptions::default()).await
    }

    /// Sends a request through the cache with per-request options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache, RequestOptions};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// let request = client.inner().get("https://example.com/").build()?;
    /// let options = RequestOptions { only_if_cached: true, ..Default::default() };
    /// let response = client.execute_with(request, options).await?;
    /// assert_eq!(response.status(), 504); // nothing stored yet, and the origin is never asked
    /// # Ok(()) }
    /// ```
    pub async fn execute_with(
        &self,
        request: Request,
        options: RequestOptions,
    ) -> reqwest::Result<Response> {
        let client = &self.client;
        execute(
            &self.cache,
            request,
            options,
            |req| client.execute(req),
            Some(self.refresh.clone()),
        )
        .await
    }
}

/// A request being built for a [`CachedClient`]: every [`reqwest::RequestBuilder`] setting is
/// reachable through [`map`](CachedRequestBuilder::map), plus the cache's per-request options.
///
/// ```no_run
/// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
/// use std::time::Duration;
///
/// let response = client
///     .get("https://example.com/api")
///     .header("Accept", "application/json")
///     .map(|b| b.timeout(Duration::from_secs(5)))
///     .expire_after(Duration::from_secs(60))
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct CachedRequestBuilder {
    client: CachedClient,
    builder: RequestBuilder,
    options: RequestOptions,
}

impl CachedRequestBuilder {
    /// Changes the underlying [`reqwest::RequestBuilder`] (headers, body, timeout, ...).
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// use std::time::Duration;
    ///
    /// let response = client
    ///     .get("https://example.com/me")
    ///     // `Authorization` is an ignored parameter: never part of the key, never stored.
    ///     .map(|b| b.bearer_auth("token").timeout(Duration::from_secs(5)))
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn map(mut self, f: impl FnOnce(RequestBuilder) -> RequestBuilder) -> Self {
        self.builder = f(self.builder);
        self
    }

    /// Adds a header.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let response = client
    ///     .get("https://example.com/api")
    ///     .header("Accept", "application/json")
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn header(self, name: &str, value: &str) -> Self {
        self.map(|b| b.header(name, value))
    }

    /// Sets the body.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let response = client.post("https://example.com/search").body("q=dynacache").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|b| b.body(body))
    }

    /// Sets a JSON body.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let filter = serde_json::json!({ "status": "open" });
    /// let response = client.post("https://example.com/search").json(&filter).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|b| b.json(json))
    }

    /// Per-request cache options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache, RequestOptions};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// let options = RequestOptions { only_if_cached: true, ..Default::default() };
    /// let response = client.get("https://example.com/").options(options).send().await?;
    /// assert_eq!(response.status(), 504); // nothing stored yet
    /// # Ok(()) }
    /// ```
    pub fn options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
    }

    /// Overrides the expiry of this response.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// use std::time::Duration;
    ///
    /// let response = client
    ///     .get("https://example.com/prices")
    ///     .expire_after(Duration::from_secs(60))
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn expire_after(mut self, expire_after: impl Into<crate::http::ExpireAfter>) -> Self {
        self.options.expire_after = Some(expire_after.into());
        self
    }

    /// Revalidates a cached response even if it is fresh.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let response = client.get("https://example.com/feed").refresh().send().await?;
    /// # Ok(()) }
    /// ```
    pub fn refresh(mut self) -> Self {
        self.options.refresh = true;
        self
    }

    /// Ignores the cached response and fetches anew (the result is stored).
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let response = client.get("https://example.com/feed").force_refresh().send().await?;
    /// # Ok(()) }
    /// ```
    pub fn force_refresh(mut self) -> Self {
        self.options.force_refresh = true;
        self
    }

    /// Answers from the cache only (`504` when nothing fresh is cached).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CachedClient, HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = CachedClient::new(reqwest::Client::new(), cache);
    /// let response = client.get("https://example.com/").only_if_cached().send().await?;
    /// assert_eq!(response.status(), 504); // nothing stored yet, and the origin is never asked
    /// # Ok(()) }
    /// ```
    pub fn only_if_cached(mut self) -> Self {
        self.options.only_if_cached = true;
        self
    }

    /// Bypasses the cache for this request.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// let response = client.get("https://example.com/now").disable_cache().send().await?;
    /// # Ok(()) }
    /// ```
    pub fn disable_cache(mut self) -> Self {
        self.options.disable_cache = true;
        self
    }

    /// Sends the request.
    ///
    /// ```no_run
    /// # async fn f(client: dynacache::http::CachedClient) -> reqwest::Result<()> {
    /// use dynacache::http::CacheFactsExt;
    ///
    /// let response = client.get("https://example.com/").send().await?;
    /// println!("{} from cache: {}", response.status(), response.from_cache());
    /// # Ok(()) }
    /// ```
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
#[derive(Clone)]
pub struct CacheMiddleware {
    cache: HttpCache,
    refresh: Refresh,
}

impl std::fmt::Debug for CacheMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMiddleware")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CacheMiddleware {
    /// A middleware storing in this cache. Background refreshes (`stale_while_revalidate`) use
    /// the builder's `refresh_client`, else a default client: they cannot go through the rest
    /// of the middleware stack, which lives only as long as the request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CacheMiddleware, HttpCache, RequestOptions};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(CacheMiddleware::new(cache))
    ///     .build();
    /// let response = client
    ///     .get("https://example.com/")
    ///     .with_extension(RequestOptions { only_if_cached: true, ..Default::default() })
    ///     .send()
    ///     .await?;
    /// assert_eq!(response.status(), 504); // nothing stored yet, and the origin is never asked
    /// # Ok(()) }
    /// ```
    pub fn new(cache: HttpCache) -> Self {
        CacheMiddleware {
            refresh: cache
                .background_refresh()
                .unwrap_or_else(|| refresher(Client::new())),
            cache,
        }
    }

    /// The cache, for inspection and maintenance.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use dynacache::Table;
    /// use dynacache::http::{CacheMiddleware, HttpCache};
    ///
    /// let cache = HttpCache::builder().build(Table::builder().open().await?)?;
    /// let middleware = CacheMiddleware::new(cache);
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(middleware.clone()) // clones share the cache
    ///     .build();
    /// assert_eq!(middleware.cache().response_count().await?, 0);
    /// # Ok(()) }
    /// ```
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
        let send = |req: Request| {
            let next = next.clone();
            let mut ext = shared.clone();
            async move { next.run(req, &mut ext).await }
        };
        execute(&self.cache, req, options, send, Some(self.refresh.clone())).await
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

    use crate::TableBuilder;
    use crate::error::{Error, Result};
    use crate::http::{CacheFacts, CacheFactsExt, HttpCache, HttpCacheBuilder, RequestOptions};

    /// A response read to the end.
    ///
    /// ```
    /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
    ///
    /// let cache = HttpCache::builder().only_if_cached(true);
    /// let client = CachedClient::open(Table::builder(), cache)?;
    /// let response = client.get("https://example.com/")?;
    /// assert_eq!((response.status.as_u16(), response.from_cache), (504, false));
    /// assert_eq!(response.url.as_str(), "https://example.com/");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let cache = HttpCache::builder().only_if_cached(true);
        /// let client = CachedClient::open(Table::builder(), cache)?;
        /// // Nothing is cached: a 504, and no request is sent.
        /// let response = client.get("https://example.com/")?;
        /// assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn status(&self) -> http::StatusCode {
            self.status
        }

        /// The body as text (lossy UTF-8).
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let cache = HttpCache::builder().only_if_cached(true);
        /// let client = CachedClient::open(Table::builder(), cache)?;
        /// // Nothing is cached: a 504, and no request is sent.
        /// let response = client.get("https://example.com/")?;
        /// println!("{}", response.text());
        /// assert_eq!(response.text().len(), response.body.len());
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body as JSON.
        ///
        /// ```no_run
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
        /// let value: serde_json::Value = client.get("https://example.com/data.json")?.json()?;
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
            serde_json::from_slice(&self.body)
        }
    }

    /// The blocking client.
    ///
    /// ```no_run
    /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
    ///
    /// // The embedded engine in a file: the cache outlives the program.
    /// let table = Table::builder().embedded_file("http_cache.db");
    /// let client = CachedClient::open(table, HttpCache::builder())?;
    /// let page = client.get("https://example.com/")?;
    /// client.block_on(client.cache().delete_expired())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Debug, Clone)]
    pub struct CachedClient {
        inner: super::CachedClient,
        runtime: Arc<tokio::runtime::Runtime>,
    }

    impl CachedClient {
        /// Opens the table and builds the cache and a default reqwest client.
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let table = Table::builder().name("http_cache");
        /// let client = CachedClient::open(table, HttpCache::builder())?;
        /// assert_eq!(client.cache().table().name(), "http_cache");
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
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
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
        /// assert_eq!(client.cache().namespace(), "http");
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn cache(&self) -> &HttpCache {
            self.inner.cache()
        }

        /// GET a URL through the cache.
        ///
        /// ```no_run
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
        /// let response = client.get("https://example.com/")?;
        /// println!("{} from cache: {}", response.status(), response.from_cache);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn get(&self, url: &str) -> reqwest::Result<BlockingResponse> {
            self.get_with(url, RequestOptions::default())
        }

        /// GET a URL with per-request options.
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, RequestOptions, blocking::CachedClient}};
        ///
        /// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
        /// let options = RequestOptions { only_if_cached: true, ..Default::default() };
        /// let response = client.get_with("https://example.com/", options)?;
        /// assert_eq!(response.status(), 504); // nothing stored yet, and the origin is never asked
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn get_with(
            &self,
            url: &str,
            options: RequestOptions,
        ) -> reqwest::Result<BlockingResponse> {
            let request = self.inner.inner().get(url).build()?;
            self.execute_with(request, options)
        }

        /// Sends a request through the cache and reads the whole body. The cache's writes for
        /// it have landed when this returns (a blocking program may exit right after).
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, RequestOptions, blocking::CachedClient}};
        ///
        /// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
        /// let url = "https://example.com/".parse()?;
        /// let request = reqwest::Request::new(reqwest::Method::GET, url);
        /// let options = RequestOptions { only_if_cached: true, ..Default::default() };
        /// assert_eq!(client.execute_with(request, options)?.status(), 504);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
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
                self.inner.cache().flush().await;
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
        ///
        /// ```
        /// use dynacache::{Table, http::{HttpCache, blocking::CachedClient}};
        ///
        /// let client = CachedClient::open(Table::builder(), HttpCache::builder())?;
        /// assert_eq!(client.block_on(client.cache().response_count())?, 0);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
            self.runtime.block_on(f)
        }
    }
}
