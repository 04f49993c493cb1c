//! A tower layer: server-side response caching for axum, `lambda_http`, hyper and any tower
//! stack, over the same engine as the client.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;

use crate::http::body::{BoxError, CacheBody};
use crate::http::engine::{OriginBody, Refresh, passed_through};
use crate::http::facts::{CacheFacts, Forward};
use crate::http::{HttpCache, RequestOptions};

/// The `Cache-Status` field (RFC 9211).
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A tower [`Layer`](tower_layer::Layer) that caches the responses of the service it wraps in
/// an [`HttpCache`]: server-side response caching on DynamoDB, shared by every replica.
///
/// The service's error type is the inner service's (`Error = S::Error`): a cache failure is
/// logged and counted, and the request goes to the inner service, so the layer drops into
/// `axum::Router::layer` and `lambda_http` without `HandleErrorLayer`. Requests are keyed on
/// their absolute URL: the request URI's, else the `Host` header with [`scheme`](Self::scheme).
/// Requests with a body and requests of methods the cache does not store go straight to the
/// inner service, their bodies streaming (an unsafe method's success still invalidates what it
/// changes). Every response carries a `Cache-Status` field (RFC 9211) unless turned off.
///
/// Build the cache with [`HttpCacheBuilder::shared`](crate::http::HttpCacheBuilder::shared) for
/// a cache shared by many users (what a server-side cache is), so that `private` and
/// `Authorization` are honoured.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
/// use dynacache::Table;
/// use dynacache::http::{CacheLayer, HttpCache};
///
/// let cache = HttpCache::builder().shared(true).build(Table::builder().open().await?)?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { ([("cache-control", "max-age=60")], "hello") }))
///     .layer(CacheLayer::new(cache));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CacheLayer {
    cache: HttpCache,
    scheme: http::uri::Scheme,
    cache_status: Option<String>,
    keep_tag_fields: bool,
}

impl CacheLayer {
    /// A layer caching in `cache`, keying requests with `http` URLs unless their URI has a
    /// scheme, and adding `Cache-Status: dynacache; ...`.
    pub fn new(cache: HttpCache) -> Self {
        CacheLayer {
            cache,
            scheme: http::uri::Scheme::HTTP,
            cache_status: Some("dynacache".to_owned()),
            keep_tag_fields: false,
        }
    }

    /// The scheme of the URLs requests are keyed on when their URI has none (behind a TLS
    /// terminator, `https`). Default `http`.
    ///
    /// ```
    /// # async fn f(cache: dynacache::http::HttpCache) {
    /// let layer = dynacache::http::CacheLayer::new(cache).scheme(http::uri::Scheme::HTTPS);
    /// # }
    /// ```
    pub fn scheme(mut self, scheme: http::uri::Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The name this cache has in `Cache-Status` (default `dynacache`); `None` adds no
    /// `Cache-Status` field.
    ///
    /// ```
    /// # async fn f(cache: dynacache::http::HttpCache) {
    /// let layer = dynacache::http::CacheLayer::new(cache).cache_status(Some("edge"));
    /// let quiet = layer.clone().cache_status(None);
    /// # }
    /// ```
    pub fn cache_status(mut self, name: Option<&str>) -> Self {
        self.cache_status = name.map(str::to_owned);
        self
    }

    /// Lets clients see the fields naming responses' tags
    /// ([`tag_fields`](crate::http::HttpCacheBuilder::tag_fields)), which are otherwise removed:
    /// they are for this cache.
    ///
    /// ```
    /// # async fn f(cache: dynacache::http::HttpCache) {
    /// let layer = dynacache::http::CacheLayer::new(cache).keep_tag_fields(true);
    /// # }
    /// ```
    pub fn keep_tag_fields(mut self, keep: bool) -> Self {
        self.keep_tag_fields = keep;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &HttpCache {
        &self.cache
    }
}

impl<S> tower_layer::Layer<S> for CacheLayer
where
    S: Clone + Send + 'static,
{
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            refresh_with: Arc::new(Mutex::new(inner.clone())),
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`CacheLayer`].
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    /// A copy of the inner service for background refreshes (`stale-while-revalidate`).
    refresh_with: Arc<Mutex<S>>,
    layer: CacheLayer,
}

impl<S> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for CacheService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    ReqBody: Body + Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service polled ready serves this request; the clone left in its place is polled
        // before the next.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let template = self.inner.clone();
        let refresh = refresher(self.refresh_with.clone());
        let layer = self.layer.clone();
        Box::pin(async move { layer.serve(ready, template, refresh, req).await })
    }
}

/// Background refreshes through a copy of the inner service.
fn refresher<S, ReqBody, ResBody>(service: Arc<Mutex<S>>) -> Refresh
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    ReqBody: Body + Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    Arc::new(move |req: Request<Bytes>| {
        let mut svc = service.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            futures::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let res = svc.call(to_inner(req)).await.map_err(Into::into)?;
            Ok(res.map(|b| -> OriginBody {
                b.map_err(|e| std::io::Error::other(e.into()))
                    .boxed_unsync()
            }))
        }) as BoxFuture<'static, Result<Response<OriginBody>, BoxError>>
    })
}

/// A request from the engine (absolute URL, no body) as the inner service expects it: the URI
/// in origin form, as a server receives it.
fn to_inner<ReqBody: Default>(req: Request<Bytes>) -> Request<ReqBody> {
    let (mut parts, _) = req.into_parts();
    if let Some(pq) = parts.uri.path_and_query() {
        parts.uri = Uri::from(pq.clone());
    }
    Request::from_parts(parts, ReqBody::default())
}

/// The absolute URL of a request: its URI's, else `scheme://Host/path`.
fn absolute(req_uri: &Uri, headers: &http::HeaderMap, scheme: &http::uri::Scheme) -> Option<Uri> {
    if req_uri.scheme().is_some() && req_uri.authority().is_some() {
        return Some(req_uri.clone());
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        req_uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).ok()
}

impl CacheLayer {
    async fn serve<S, ReqBody, ResBody>(
        &self,
        mut ready: S,
        template: S,
        refresh: Refresh,
        req: Request<ReqBody>,
    ) -> Result<Response<CacheBody<ResBody>>, S::Error>
    where
        S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Body + Default + Send + 'static,
        ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let cache = &self.cache;
        let url = absolute(req.uri(), req.headers(), &self.scheme);
        let cached_method = cache.inner.settings.allowed_methods.contains(req.method());
        let Some(url) = url.filter(|_| req.body().is_end_stream() && cached_method) else {
            // Straight through, the body streaming; what an unsafe method changes is
            // invalidated all the same.
            let forward = if cached_method {
                Forward::Bypass
            } else {
                Forward::Method
            };
            let (parts, body) = req.into_parts();
            let mut seen = Request::new(()).into_parts().0;
            seen.method = parts.method.clone();
            seen.headers = parts.headers.clone();
            if let Some(url) = absolute(&parts.uri, &parts.headers, &self.scheme) {
                seen.uri = url;
            }
            let res = ready.call(Request::from_parts(parts, body)).await?;
            if !seen.uri.path().is_empty() && seen.uri.scheme().is_some() {
                cache
                    .invalidate_for(seen, res.status(), res.headers())
                    .await;
            }
            let mut res = passed_through(res);
            if let Some(facts) = res.extensions_mut().get_mut::<CacheFacts>() {
                facts.forward = Some(forward);
            }
            return Ok(self.finish(res));
        };
        let (mut parts, _) = req.into_parts();
        parts.uri = url;
        // The service polled ready, for the first trip; clones of the other for any further
        // (a revalidation answered for another representation).
        let services = Mutex::new((Some(ready), template));
        let fetch = |req: Request<Bytes>| {
            let (taken, template) = {
                let mut services = services.lock().unwrap_or_else(|p| p.into_inner());
                (services.0.take(), services.1.clone())
            };
            async move {
                let mut svc = match taken {
                    Some(svc) => svc,
                    None => {
                        let mut svc = template;
                        futures::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                        svc
                    }
                };
                svc.call(to_inner(req)).await
            }
        };
        let res = cache
            .execute(
                Request::from_parts(parts, Bytes::new()),
                RequestOptions::default(),
                fetch,
                Some(refresh),
            )
            .await?;
        Ok(self.finish(res))
    }

    /// Removes the tag fields (unless kept) and adds `Cache-Status` from the response's facts
    /// (unless turned off).
    fn finish<B>(&self, mut res: Response<B>) -> Response<B> {
        if !self.keep_tag_fields {
            for name in &self.cache.inner.settings.tag_fields {
                res.headers_mut().remove(name);
            }
        }
        let Some(name) = &self.cache_status else {
            return res;
        };
        let facts = res
            .extensions()
            .get::<CacheFacts>()
            .cloned()
            .unwrap_or_default();
        let now = crate::clock::millis_to_system_time(self.cache.now());
        let value = facts.cache_status(name, res.status().as_u16(), now);
        if let Ok(value) = HeaderValue::from_str(&value) {
            // After the entries of the caches behind this one: the list runs from the origin
            // to the user (RFC 9211 §2).
            res.headers_mut().append(CACHE_STATUS, value);
        }
        res
    }
}
