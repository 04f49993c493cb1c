//! `dynacache serve`: a caching reverse proxy in front of one origin, its cache in the table,
//! shared by every proxy that opens the same table.
//!
//! A request goes: the client's connection (HTTP/1.1 or HTTP/2) → the health path, else the
//! cache ([`CacheLayer`], a shared cache) → the [`Forwarder`] (hop-by-hop fields removed, `Via`
//! and `X-Forwarded-*` added, the body streamed) → the origin. What the cache cannot store
//! streams through; a cache failure sends the request to the origin; an origin that fails is a
//! 502, one that does not answer in time a 504. An admin listener (loopback by default; a bearer
//! token required elsewhere) purges, reports health, statistics and Prometheus metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use dynacache::http::{BoxError, CacheLayer, HttpCache};
use dynacache::{InProcessTier, Table};
use futures::TryStreamExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tower::{Layer, ServiceExt};

use crate::connect::{Connection, Creates};
use crate::error::CliError;
use crate::output::Output;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The origin requests are forwarded to: scheme, host, port, and an optional path prefix.
    #[arg(
        long,
        env = "DYNACACHE_ORIGIN",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub origin: Option<String>,
    /// A TOML file of sites routed by `Host`, each with its origin and namespace (instead of
    /// `--origin`): `[[site]]` tables with `host` (omit for the default site), `origin` and
    /// `namespace`.
    #[arg(long, env = "DYNACACHE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Where the proxy listens.
    #[arg(long, env = "DYNACACHE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the admin API listens (purge, health, stats, metrics); `off` for nowhere.
    #[arg(long, env = "DYNACACHE_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: String,
    /// The bearer token the admin API requires (required when it listens beyond loopback).
    #[arg(long, env = "DYNACACHE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Memory for the in-process tier, in MiB (0: no tier; every hit reads the table).
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    /// How long the in-process tier keeps an entry: a purge or a change made through another
    /// proxy is seen here within this bound.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub l1_ttl: Duration,
    /// How long the origin may take to answer (its headers) before the client gets a 504.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub origin_timeout: Duration,
    /// Cache-specific `Cache-Control` fields (RFC 9213) that take precedence over
    /// `Cache-Control` for this cache, most specific first (repeatable).
    #[arg(long = "targeted-field", default_values = ["Dynacache-Cache-Control", "CDN-Cache-Control"])]
    pub targeted_fields: Vec<String>,
    /// Fields in which the origin names a response's tags (surrogate keys), for purges by tag
    /// (repeatable).
    #[arg(long = "tag-field", default_values = ["Surrogate-Key", "Cache-Tag"])]
    pub tag_fields: Vec<String>,
    /// Let clients see the tag fields (by default they are removed: they are for the cache).
    #[arg(long)]
    pub keep_tag_fields: bool,
    /// Do not add `X-Forwarded-For`, `-Proto` and `-Host` to requests for the origin.
    #[arg(long)]
    pub no_forwarded_headers: bool,
    /// The scheme clients use to reach the proxy (`X-Forwarded-Proto`, and the URLs responses
    /// are keyed on): `https` behind a TLS terminator.
    #[arg(long, default_value = "http")]
    pub public_scheme: String,
    /// The path of the proxy's own health endpoint on the main listener.
    #[arg(long, default_value = "/.dynacache/health")]
    pub health_path: String,
    /// The largest response body stored (larger ones stream through), in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_body_mib: usize,
    /// How long in-flight requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// The body of every response the proxy sends.
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
/// The body of a request on its way to the origin.
type ForwardBody = BoxBody<Bytes, hyper::Error>;

/// The client's address, as a request extension (for `X-Forwarded-For`).
#[derive(Debug, Clone, Copy)]
struct ClientAddr(SocketAddr);

/// The fields that concern one connection only (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
];

/// Removes the hop-by-hop fields: the fixed list, `Proxy-*`, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Appends this proxy to `Via`.
fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let protocol = match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{protocol} dynacache")) {
        headers.append(header::VIA, v);
    }
}

/// The service that sends requests to the origin: the inner service of the cache layer.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    origin: Arc<url::Url>,
    timeout: Duration,
    forwarded: bool,
    public_scheme: Arc<str>,
}

/// Why the origin did not answer.
#[derive(Debug)]
pub enum ForwardError {
    /// No answer in time: a 504.
    Timeout,
    /// No connection, or a broken one: a 502.
    Failed(String),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Timeout => f.write_str("the origin did not answer in time"),
            ForwardError::Failed(e) => write!(f, "the origin failed: {e}"),
        }
    }
}

impl std::error::Error for ForwardError {}

impl Forwarder {
    fn new(origin: url::Url, timeout: Duration, forwarded: bool, public_scheme: &str) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        Forwarder {
            client,
            origin: Arc::new(origin),
            timeout,
            forwarded,
            public_scheme: public_scheme.into(),
        }
    }

    /// The origin's URL for a request's path and query.
    fn target(&self, uri: &Uri) -> String {
        let base = self.origin.as_str().trim_end_matches('/');
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        format!("{base}{pq}")
    }
}

impl tower::Service<Request<ForwardBody>> for Forwarder {
    type Response = Response<reqwest::Body>;
    type Error = ForwardError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, ForwardError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ForwardError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ForwardBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let host = parts.headers.get(header::HOST).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts.headers.remove(header::HOST);
            add_via(&mut parts.headers, parts.version);
            if this.forwarded {
                if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>().copied() {
                    let ip = addr.ip().to_string();
                    let value = match parts.headers.get("x-forwarded-for") {
                        Some(prior) => format!("{}, {ip}", prior.to_str().unwrap_or_default()),
                        None => ip,
                    };
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        parts.headers.insert("x-forwarded-for", v);
                    }
                }
                if let Ok(v) = HeaderValue::from_str(&this.public_scheme) {
                    parts.headers.insert("x-forwarded-proto", v);
                }
                if let Some(host) = host {
                    parts.headers.insert("x-forwarded-host", host);
                }
            }
            let mut request = this
                .client
                .request(parts.method.clone(), this.target(&parts.uri))
                .headers(parts.headers)
                .body(reqwest::Body::wrap(body))
                .build()
                .map_err(|e| ForwardError::Failed(e.to_string()))?;
            *request.timeout_mut() = None;
            let sent = tokio::time::timeout(this.timeout, this.client.execute(request)).await;
            let res = match sent {
                Err(_) => return Err(ForwardError::Timeout),
                Ok(Err(e)) if e.is_timeout() => return Err(ForwardError::Timeout),
                Ok(Err(e)) => return Err(ForwardError::Failed(e.to_string())),
                Ok(Ok(res)) => res,
            };
            let mut res: Response<reqwest::Body> = res.into();
            strip_hop_by_hop(res.headers_mut());
            Ok(res)
        })
    }
}

/// An answer of the proxy's own.
fn own(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// One site: requests for a host, its origin, its cache (namespace).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The `Host` it answers for (port ignored); none for the default site.
    pub host: Option<String>,
    /// Its origin.
    pub origin: String,
    /// The namespace of its cache [default: the `--namespace` option].
    pub namespace: Option<String>,
}

/// What `--config` holds.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    site: Vec<Site>,
}

/// A site ready to serve.
#[derive(Clone)]
struct Served {
    host: Option<Arc<str>>,
    origin: Arc<str>,
    cache: HttpCache,
    service: dynacache::http::CacheService<Forwarder>,
}

/// Everything a connection needs.
#[derive(Clone)]
struct Proxy {
    sites: Arc<Vec<Served>>,
    health_path: Arc<str>,
    cache_status: Arc<str>,
}

impl Proxy {
    /// The site for a request's host: the one named, else the default one.
    fn site(&self, headers: &HeaderMap, uri: &Uri) -> Option<&Served> {
        let host = uri
            .host()
            .map(str::to_owned)
            .or_else(|| {
                let h = headers.get(header::HOST)?.to_str().ok()?;
                Some(
                    h.rsplit_once(':')
                        .map_or(h, |(name, port)| {
                            if port.bytes().all(|b| b.is_ascii_digit()) {
                                name
                            } else {
                                h
                            }
                        })
                        .to_owned(),
                )
            })
            .map(|h| h.to_ascii_lowercase());
        self.sites
            .iter()
            .find(|s| s.host.is_some() && s.host.as_deref() == host.as_deref())
            .or_else(|| self.sites.iter().find(|s| s.host.is_none()))
    }

    async fn handle(
        self,
        client: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if req.uri().path() == &*self.health_path {
            return Ok(own(StatusCode::OK, "ok\n"));
        }
        let Some(site) = self.site(req.headers(), req.uri()) else {
            return Ok(own(
                StatusCode::MISDIRECTED_REQUEST,
                "no site for this host\n",
            ));
        };
        let service = site.service.clone();
        let version = req.version();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ClientAddr(client));
        // Hop-by-hop fields are the client connection's, not part of the request to cache.
        strip_hop_by_hop(&mut parts.headers);
        let req = Request::from_parts(parts, body.boxed());
        let mut res = match service.oneshot(req).await {
            Ok(res) => res.map(|b| b.boxed_unsync()),
            Err(e) => {
                let status = match e {
                    ForwardError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                    ForwardError::Failed(_) => StatusCode::BAD_GATEWAY,
                };
                tracing::warn!(error = %e, "dynacache serve: {status}");
                let mut res = own(status, &format!("{e}\n"));
                let entry = format!(
                    "{}; fwd=uri-miss; detail=origin-unavailable",
                    self.cache_status
                );
                if let Ok(v) = HeaderValue::from_str(&entry) {
                    res.headers_mut().insert("cache-status", v);
                }
                res
            }
        };
        // Answered in the client's protocol, whatever the origin spoke.
        *res.version_mut() = version;
        add_via(res.headers_mut(), version);
        Ok(res)
    }
}

/// The sites to serve: `--origin` (one default site), or those of `--config`.
fn sites(conn: &Connection, args: &ServeArgs) -> Result<Vec<(Site, url::Url)>, CliError> {
    let sites = match (&args.origin, &args.config) {
        (Some(origin), _) => vec![Site {
            host: None,
            origin: origin.clone(),
            namespace: None,
        }],
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display()), 2))?;
            let config: Config = toml::from_str(&text).map_err(|e| {
                CliError::new(format!("{} is not a sites file: {e}", path.display()), 2)
            })?;
            config.site
        }
        (None, None) => return Err(CliError::new("give --origin or --config", 2)),
    };
    if sites.is_empty() {
        return Err(CliError::new("the sites file names no [[site]]", 2));
    }
    let mut seen = std::collections::HashSet::new();
    sites
        .into_iter()
        .map(|mut site| {
            site.host = site.host.map(|h| h.to_ascii_lowercase());
            if !seen.insert(site.host.clone()) {
                return Err(CliError::new(
                    match &site.host {
                        Some(h) => format!("two sites for host {h:?}"),
                        None => "two default sites (sites without `host`)".to_owned(),
                    },
                    2,
                ));
            }
            site.namespace.get_or_insert_with(|| conn.namespace.clone());
            let origin = url::Url::parse(&site.origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    CliError::new(
                        format!("origin {:?} is not an http or https URL", site.origin),
                        2,
                    )
                })?;
            Ok((site, origin))
        })
        .collect()
}

pub async fn run(conn: &Connection, out: &Output, args: ServeArgs) -> Result<(), CliError> {
    let sites = sites(conn, &args)?;
    let scheme: http::uri::Scheme = args
        .public_scheme
        .parse()
        .map_err(|_| CliError::new("--public-scheme is http or https", 2))?;
    let admin = match args.admin_listen.as_str() {
        "off" | "none" => None,
        addr => Some(addr.parse::<SocketAddr>().map_err(|_| {
            CliError::new(
                format!("--admin-listen {addr:?} is not an address or `off`"),
                2,
            )
        })?),
    };
    if let Some(addr) = admin
        && !addr.ip().is_loopback()
        && args.admin_token.is_none()
    {
        return Err(CliError::new(
            format!("the admin API would listen on {addr} without a token"),
            2,
        )
        .hint("set --admin-token (or DYNACACHE_ADMIN_TOKEN), or keep it on 127.0.0.1"));
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();

    let table = conn.table(Creates::Yes).await?;
    // The first request should not pay for opening the connection.
    if let Err(e) = table.warm().await {
        tracing::warn!(error = %e, "dynacache serve: the table is not reachable yet; serving from the origin until it is");
    }
    let objects = conn.objects().await?;
    let mut served = Vec::new();
    for (site, origin) in &sites {
        let namespace = site.namespace.as_deref().unwrap_or(&conn.namespace);
        let mut builder = HttpCache::builder()
            .namespace(namespace)
            .shared(true)
            .max_body_size(args.max_body_mib.saturating_mul(1 << 20))
            .targeted_cache_control(&args.targeted_fields)
            .map_err(|e| CliError::new(format!("--targeted-field: {e}"), 2))?
            .tag_fields(&args.tag_fields)
            .map_err(|e| CliError::new(format!("--tag-field: {e}"), 2))?;
        if args.memory_mib > 0 {
            // The memory is shared out between the sites.
            let bytes = args.memory_mib.saturating_mul(1 << 20) / sites.len() as u64;
            builder = builder.in_process(InProcessTier::new(bytes).l1_ttl(args.l1_ttl));
        }
        if let Some(objects) = &objects {
            builder = builder.object_store(objects.clone());
        }
        let cache = builder
            .build(table.clone())
            .map_err(|e| CliError::storage(e, conn))?;
        let forwarder = Forwarder::new(
            origin.clone(),
            args.origin_timeout,
            !args.no_forwarded_headers,
            &args.public_scheme,
        );
        served.push(Served {
            host: site.host.as_deref().map(Arc::from),
            origin: origin.as_str().into(),
            service: CacheLayer::new(cache.clone())
                .scheme(scheme.clone())
                .keep_tag_fields(args.keep_tag_fields)
                .layer(forwarder),
            cache,
        });
    }
    let proxy = Proxy {
        sites: Arc::new(served),
        health_path: args.health_path.clone().into(),
        cache_status: "dynacache".into(),
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", args.listen), 1))?;
    let listen = listener.local_addr().unwrap_or(args.listen);
    let admin_listener = match admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::new(format!("cannot listen on {addr}: {e}"), 1))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    // One line on stdout, for scripts and tests that start the proxy on port 0.
    let routes: Vec<String> = proxy
        .sites
        .iter()
        .map(|s| match &s.host {
            Some(h) => format!("{h} -> {}", s.origin),
            None => s.origin.to_string(),
        })
        .collect();
    if out.json {
        out.json_line(&json!({
            "listen": listen.to_string(),
            "admin": admin_addr.map(|a| a.to_string()),
            "origin": proxy.sites.iter().find(|s| s.host.is_none()).map(|s| s.origin.to_string()),
            "sites": routes,
            "engine_endpoint": table.local_endpoint(),
        }));
    } else {
        println!(
            "dynacache serve: http://{listen} -> {}{}",
            routes.join(", "),
            admin_addr
                .map(|a| format!(" (admin: http://{a})"))
                .unwrap_or_default()
        );
    }
    for site in proxy.sites.iter() {
        out.note(format!(
            "cache of {}: {}, namespace {:?}",
            site.host.as_deref().unwrap_or("every other host"),
            conn.describe(),
            site.cache.namespace()
        ));
    }
    if let Some(endpoint) = table.local_endpoint() {
        // Other proxies on this machine share the embedded engine through it.
        out.note(format!(
            "the embedded engine is at {endpoint}: other proxies share this cache with --endpoint-url {endpoint}"
        ));
    }

    let shutdown = tokio_util_shutdown();
    if let Some(l) = admin_listener {
        let state = AdminState {
            sites: proxy.sites.clone(),
            table: table.clone(),
            token: args.admin_token.clone().map(Arc::from),
            metrics,
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, admin_router(state))
                .with_graceful_shutdown(async move { stop.notified().await })
                .await;
        });
    }

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut stopping = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "dynacache serve: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                let service = hyper::service::service_fn(move |req| proxy.clone().handle(client, req));
                let conn = server.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "dynacache serve: connection ended");
                    }
                });
            }
            _ = &mut stopping => break,
        }
    }
    out.note("shutting down: finishing requests in flight");
    drop(listener);
    shutdown.notify_waiters();
    if tokio::time::timeout(args.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        out.note("some requests did not finish within the grace period");
    }
    for site in proxy.sites.iter() {
        site.cache.flush().await;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn tokio_util_shutdown() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

// ----- the admin API ----------------------------------------------------------------------

#[derive(Clone)]
struct AdminState {
    sites: Arc<Vec<Served>>,
    table: Table,
    token: Option<Arc<str>>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

fn admin_router(state: AdminState) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/health", get(admin_health))
        .route("/stats", get(admin_stats))
        .route("/metrics", get(admin_metrics))
        .route("/purge", post(admin_purge))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

async fn require_token(
    axum::extract::State(state): axum::extract::State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is a secret.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        }
    }
    next.run(req).await
}

async fn admin_health(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let health = state.table.health();
    let table_ok = state.table.warm().await.is_ok();
    let body = json!({
        "status": "ok",
        "table": state.table.name(),
        "table_reachable": table_ok,
        "breaker": format!("{health:?}"),
    });
    // The proxy serves from the origin when the table is down: it is healthy all the same.
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn admin_stats(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> axum::Json<serde_json::Value> {
    let site_stats = |site: &Served| {
        let s = site.cache.stats();
        let tier = site.cache.in_process_usage();
        json!({
            "host": site.host.as_deref(),
            "namespace": site.cache.namespace(),
            "hits": s.hits,
            "misses": s.misses,
            "stale_served": s.stale_served,
            "revalidated": s.revalidated,
            "coalesced": s.coalesced,
            "storage_errors": s.storage_errors,
            "writes_dropped": s.writes_dropped,
            "in_process_entries": tier.map(|t| t.entries),
            "in_process_bytes": tier.map(|t| t.bytes),
        })
    };
    let sites: Vec<serde_json::Value> = state.sites.iter().map(site_stats).collect();
    let total = |field: &str| -> u64 { sites.iter().filter_map(|s| s[field].as_u64()).sum() };
    axum::Json(json!({
        "hits": total("hits"),
        "misses": total("misses"),
        "stale_served": total("stale_served"),
        "revalidated": total("revalidated"),
        "coalesced": total("coalesced"),
        "storage_errors": total("storage_errors"),
        "writes_dropped": total("writes_dropped"),
        "sites": sites,
    }))
}

async fn admin_metrics(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed\n",
        )
            .into_response(),
    }
}

/// What `POST /purge` takes (query or JSON body): one of a URL, a URL prefix, a URL glob, a tag;
/// and optionally the site (its host) whose cache to purge, else every site's.
#[derive(Debug, Default, serde::Deserialize)]
struct Purge {
    site: Option<String>,
    url: Option<String>,
    prefix: Option<String>,
    glob: Option<String>,
    tag: Option<String>,
}

async fn admin_purge(
    axum::extract::State(state): axum::extract::State<AdminState>,
    axum::extract::Query(query): axum::extract::Query<Purge>,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let purge = if body.is_empty() {
        query
    } else {
        match serde_json::from_slice::<Purge>(&body) {
            Ok(p) => p,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("bad JSON: {e}\n")).into_response();
            }
        }
    };
    let given = [&purge.url, &purge.prefix, &purge.glob, &purge.tag]
        .iter()
        .filter(|o| o.is_some())
        .count();
    if given != 1 {
        return (
            StatusCode::BAD_REQUEST,
            "give exactly one of url, prefix, glob, tag\n",
        )
            .into_response();
    }
    let sites: Vec<&Served> = match &purge.site {
        Some(host) => {
            let host = host.to_ascii_lowercase();
            let found: Vec<&Served> = state
                .sites
                .iter()
                .filter(|s| s.host.as_deref() == Some(host.as_str()))
                .collect();
            if found.is_empty() {
                return (StatusCode::NOT_FOUND, format!("no site {host:?}\n")).into_response();
            }
            found
        }
        None => state.sites.iter().collect(),
    };
    let matcher = match &purge.glob {
        Some(glob) => match globset::Glob::new(glob) {
            Ok(g) => Some(g.compile_matcher()),
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("bad glob: {e}\n")).into_response();
            }
        },
        None => None,
    };
    let mut result: dynacache::Result<u64> = Ok(0);
    for site in sites {
        let cache = &site.cache;
        let purged = if let Some(url) = &purge.url {
            cache.delete_urls([url]).await
        } else if let Some(tag) = &purge.tag {
            cache.purge_tag(tag).await
        } else if let Some(prefix) = &purge.prefix {
            purge_matching(cache, |u| u.starts_with(prefix.as_str())).await
        } else if let Some(m) = &matcher {
            purge_matching(cache, |u| m.is_match(u)).await
        } else {
            Ok(0)
        };
        result = match (result, purged) {
            (Ok(a), Ok(b)) => Ok(a + b),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    match result {
        Ok(n) => axum::Json(json!({"purged": n})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cache could not be purged: {e}\n"),
        )
            .into_response(),
    }
}

/// Deletes every response whose URL matches (a scan of the namespace).
async fn purge_matching(
    cache: &HttpCache,
    matches: impl Fn(&str) -> bool,
) -> dynacache::Result<u64> {
    let keys: Vec<String> = cache
        .entries()
        .try_filter(|e| std::future::ready(matches(&e.url)))
        .map_ok(|e| e.key)
        .try_collect()
        .await?;
    cache.delete_keys(keys).await
}
