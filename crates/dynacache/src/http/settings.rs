//! What the HTTP cache stores, for how long, and when it revalidates.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobMatcher};
use http::{HeaderName, Method};

use crate::error::{Error, Result};

/// How long a response stays fresh when its own headers do not say.
///
/// Explicit freshness in the response (`Cache-Control: max-age`, `s-maxage` in a shared cache,
/// `Expires`) always wins; this is the fallback for responses without it.
///
/// ```
/// use std::time::Duration;
/// use dynacache::http::ExpireAfter;
///
/// let ten_minutes = ExpireAfter::After(Duration::from_secs(600));
/// assert_ne!(ten_minutes, ExpireAfter::Headers);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpireAfter {
    /// Fresh forever (the default of a private cache, as in requests-cache).
    Never,
    /// Not stored, unless the response's headers give it explicit freshness.
    DoNotCache,
    /// Stored, but stale at once: revalidated with the origin on every use. Stored only when the
    /// response has a validator (`ETag` or `Last-Modified`), as it is useless otherwise.
    Immediately,
    /// Fresh for this long after it is received.
    After(Duration),
    /// Fresh until this instant.
    At(SystemTime),
    /// Only what the headers and RFC 9111's heuristic say: a response with `Last-Modified` is
    /// fresh for a fraction of its age (see
    /// [`heuristic_freshness`](super::HttpCacheBuilder::heuristic_freshness)); one with neither
    /// is stale at once (stored only with a validator). The default of a shared cache.
    Headers,
}

/// What a cache does with responses that set cookies (`Set-Cookie`).
///
/// RFC 9111 §7.3 lets a cache store and replay them; a shared cache that did so would hand
/// one user's cookie to every other user, which is why nginx and Varnish refuse by default,
/// and so does a shared dynacache.
///
/// ```
/// use dynacache::http::{HttpCache, SetCookie};
/// let builder = HttpCache::builder().shared(true).set_cookie(SetCookie::Strip);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetCookie {
    /// Store them with their cookies and replay them (RFC 9111; the private cache's default).
    Store,
    /// Store them without their `Set-Cookie` fields: the request that fetched the response gets
    /// its cookie, later ones do not.
    Strip,
    /// Do not store them (the shared cache's default).
    DoNotStore,
}

impl ExpireAfter {
    /// The same expiry as a key/value [`Expiry`](crate::Expiry) (`DoNotCache` and
    /// `Immediately`: expired at once).
    pub(crate) fn to_expiry(self) -> crate::Expiry {
        match self {
            ExpireAfter::Never => crate::Expiry::Never,
            ExpireAfter::DoNotCache | ExpireAfter::Immediately | ExpireAfter::Headers => {
                crate::Expiry::After(Duration::ZERO)
            }
            ExpireAfter::After(d) => crate::Expiry::After(d),
            ExpireAfter::At(t) => crate::Expiry::At(t),
        }
    }
}

impl From<Duration> for ExpireAfter {
    fn from(d: Duration) -> Self {
        ExpireAfter::After(d)
    }
}

/// For how long a stale response may still be served (`stale_if_error`,
/// `stale_while_revalidate`).
///
/// ```
/// use std::time::Duration;
/// use dynacache::http::{HttpCache, StaleWindow};
///
/// assert_eq!(StaleWindow::default(), StaleWindow::Off);
/// let builder = HttpCache::builder()
///     .stale_if_error(StaleWindow::Always)
///     .stale_while_revalidate(StaleWindow::Max(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StaleWindow {
    /// Never.
    #[default]
    Off,
    /// However stale it is.
    Always,
    /// Up to this long after it expired.
    Max(Duration),
}

impl StaleWindow {
    pub(crate) fn max(a: Self, b: Self) -> Self {
        match (a, b) {
            (StaleWindow::Always, _) | (_, StaleWindow::Always) => StaleWindow::Always,
            (StaleWindow::Max(x), StaleWindow::Max(y)) => StaleWindow::Max(x.max(y)),
            (StaleWindow::Max(x), StaleWindow::Off) | (StaleWindow::Off, StaleWindow::Max(x)) => {
                StaleWindow::Max(x)
            }
            (StaleWindow::Off, StaleWindow::Off) => StaleWindow::Off,
        }
    }
}

/// Which request headers are part of the cache key (besides those a response's `Vary` names,
/// which always are).
///
/// ```
/// use dynacache::http::{HttpCache, MatchHeaders};
///
/// assert_eq!(MatchHeaders::default(), MatchHeaders::None);
/// let builder = HttpCache::builder().match_headers(MatchHeaders::Only(vec![
///     http::header::ACCEPT,
///     http::HeaderName::from_static("x-tenant"),
/// ]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MatchHeaders {
    /// None.
    #[default]
    None,
    /// Every request header (except ignored ones).
    All,
    /// These headers.
    Only(Vec<HeaderName>),
}

/// A URL pattern of `urls_expire_after`: a glob matched against the URL without its scheme
/// (`api.example.com/users/*`; a trailing `**` is implied).
#[derive(Clone)]
pub(crate) struct UrlPattern {
    text: String,
    matcher: GlobMatcher,
}

impl fmt::Debug for UrlPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl UrlPattern {
    pub(crate) fn new(pattern: &str) -> Result<Self> {
        let base = pattern.trim_end_matches('*');
        let glob = format!("{base}**");
        let matcher = Glob::new(&glob)
            .map_err(|e| Error::config(format!("bad URL pattern {pattern:?}: {e}")))?
            .compile_matcher();
        Ok(UrlPattern {
            text: pattern.to_owned(),
            matcher,
        })
    }

    pub(crate) fn matches(&self, url: &url::Url) -> bool {
        let s = url.as_str();
        let without_scheme = s.split_once("://").map_or(s, |(_, rest)| rest);
        self.matcher.is_match(without_scheme)
    }
}

/// A predicate on responses: `false` means "do not cache this one" (and, for a response read
/// from the cache, "delete it").
///
/// ```
/// use std::sync::Arc;
/// use dynacache::http::{FilterFn, HttpCache};
///
/// let only_ok: FilterFn = Arc::new(|response| response.status == http::StatusCode::OK);
/// let (parts, _) = http::Response::new(()).into_parts();
/// assert!(only_ok(&parts));
/// let builder = HttpCache::builder().filter_fn(move |response| only_ok(response));
/// ```
pub type FilterFn = Arc<dyn Fn(&http::response::Parts) -> bool + Send + Sync>;

/// A custom cache key: given the request and the key dynacache would use, returns the key to use.
///
/// ```
/// use std::sync::Arc;
/// use dynacache::http::{HttpCache, KeyFn};
///
/// // One key per path, whatever the query string.
/// let by_path: KeyFn = Arc::new(|request, _key| format!("path:{}", request.uri.path()));
/// let (parts, _) = http::Request::get("https://example.com/a?b=1").body(()).unwrap().into_parts();
/// assert_eq!(by_path(&parts, "dynacache's key"), "path:/a");
/// let builder = HttpCache::builder().key_fn(move |request, key| by_path(request, key));
/// ```
pub type KeyFn = Arc<dyn Fn(&http::request::Parts, &str) -> String + Send + Sync>;

/// The default `ignored_parameters`: credentials that must never be part of a key or be stored.
///
/// ```
/// use dynacache::http::{DEFAULT_IGNORED_PARAMETERS, HttpCache};
///
/// assert!(DEFAULT_IGNORED_PARAMETERS.contains(&"Authorization"));
/// // The defaults plus a parameter of your own.
/// let builder = HttpCache::builder()
///     .ignored_parameters(DEFAULT_IGNORED_PARAMETERS.iter().copied().chain(["sig"]));
/// ```
pub const DEFAULT_IGNORED_PARAMETERS: &[&str] = &[
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "X-API-Key",
    "X-Auth-Token",
    "X-API-Token",
    "X-Access-Token",
    "access_token",
    "api_key",
    "apikey",
    "token",
];

/// The settings of an HTTP cache (see [`HttpCacheBuilder`](super::HttpCacheBuilder)).
#[derive(Clone)]
pub(crate) struct Settings {
    /// `None`: the mode's default ([`ExpireAfter::Never`] private, [`ExpireAfter::Headers`]
    /// shared).
    pub(crate) expire_after: Option<ExpireAfter>,
    pub(crate) urls_expire_after: Vec<(UrlPattern, ExpireAfter)>,
    pub(crate) cache_control: bool,
    pub(crate) shared: bool,
    /// `None`: the mode's default (`[200]` private, anything RFC 9111 allows shared).
    pub(crate) allowed_codes: Option<Vec<u16>>,
    pub(crate) set_cookie: Option<SetCookie>,
    pub(crate) heuristic_fraction: f64,
    pub(crate) heuristic_max: Duration,
    pub(crate) targeted_fields: Vec<HeaderName>,
    /// Fields naming a response's tags (surrogate keys), for `purge_tag`.
    pub(crate) tag_fields: Vec<HeaderName>,
    /// XFetch's beta for refreshing fresh responses ahead of expiry; `None`: off.
    pub(crate) refresh_ahead: Option<f64>,
    pub(crate) allowed_methods: Vec<Method>,
    pub(crate) match_headers: MatchHeaders,
    pub(crate) ignored_parameters: Vec<String>,
    pub(crate) filter_fn: Option<FilterFn>,
    pub(crate) key_fn: Option<KeyFn>,
    pub(crate) always_revalidate: bool,
    pub(crate) stale_if_error: StaleWindow,
    pub(crate) stale_while_revalidate: StaleWindow,
    pub(crate) only_if_cached: bool,
    pub(crate) read_only: bool,
    pub(crate) max_body_size: usize,
    pub(crate) readable_body_max: usize,
    pub(crate) lookup_timeout: Duration,
    pub(crate) write_wait: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("expire_after", &self.expire_after)
            .field("urls_expire_after", &self.urls_expire_after)
            .field("cache_control", &self.cache_control)
            .field("shared", &self.shared)
            .field("allowed_codes", &self.allowed_codes)
            .field("set_cookie", &self.set_cookie)
            .field("heuristic_fraction", &self.heuristic_fraction)
            .field("heuristic_max", &self.heuristic_max)
            .field("targeted_fields", &self.targeted_fields)
            .field("tag_fields", &self.tag_fields)
            .field("allowed_methods", &self.allowed_methods)
            .field("match_headers", &self.match_headers)
            .field("ignored_parameters", &self.ignored_parameters)
            .field("always_revalidate", &self.always_revalidate)
            .field("stale_if_error", &self.stale_if_error)
            .field("stale_while_revalidate", &self.stale_while_revalidate)
            .field("only_if_cached", &self.only_if_cached)
            .field("read_only", &self.read_only)
            .field("max_body_size", &self.max_body_size)
            .field("readable_body_max", &self.readable_body_max)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("write_wait", &self.write_wait)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            expire_after: None,
            urls_expire_after: Vec::new(),
            cache_control: true,
            shared: false,
            allowed_codes: None,
            set_cookie: None,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86_400),
            targeted_fields: Vec::new(),
            tag_fields: Vec::new(),
            refresh_ahead: None,
            allowed_methods: vec![Method::GET, Method::HEAD],
            match_headers: MatchHeaders::None,
            ignored_parameters: DEFAULT_IGNORED_PARAMETERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            filter_fn: None,
            key_fn: None,
            always_revalidate: false,
            stale_if_error: StaleWindow::Off,
            stale_while_revalidate: StaleWindow::Off,
            only_if_cached: false,
            read_only: false,
            max_body_size: 64 * 1024 * 1024,
            readable_body_max: 4 * 1024,
            lookup_timeout: Duration::from_secs(1),
            write_wait: Duration::from_millis(250),
        }
    }
}

impl Settings {
    pub(crate) fn is_ignored(&self, name: &str) -> bool {
        self.ignored_parameters
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
    }

    /// Whether a query parameter or body field is left out of the key: ignored parameters are,
    /// in a private cache only (see [`key`](super::key)).
    pub(crate) fn drops_from_key(&self, name: &str) -> bool {
        !self.shared && self.is_ignored(name)
    }

    /// The fallback expiry when nothing else is configured.
    pub(crate) fn default_expire_after(&self) -> ExpireAfter {
        self.expire_after.unwrap_or(if self.shared {
            ExpireAfter::Headers
        } else {
            ExpireAfter::Never
        })
    }

    /// The expiry configured for a URL: the first matching `urls_expire_after`, else
    /// `expire_after`.
    pub(crate) fn expire_after_for(&self, url: &url::Url) -> ExpireAfter {
        self.urls_expire_after
            .iter()
            .find(|(p, _)| p.matches(url))
            .map_or_else(|| self.default_expire_after(), |(_, e)| *e)
    }

    /// The decision rules of this cache, for the policy module.
    pub(crate) fn policy(&self) -> super::policy::PolicyConfig {
        super::policy::PolicyConfig {
            shared: self.shared,
            honour_headers: self.cache_control,
            heuristic_fraction: self.heuristic_fraction,
            heuristic_max_ms: self.heuristic_max.as_millis().min(i64::MAX as u128) as i64,
            allowed_codes: match (&self.allowed_codes, self.shared) {
                (Some(codes), _) => Some(codes.clone()),
                (None, true) => None,
                (None, false) => Some(vec![200]),
            },
            set_cookie: self.set_cookie.unwrap_or(if self.shared {
                SetCookie::DoNotStore
            } else {
                SetCookie::Store
            }),
            targeted_fields: self.targeted_fields.clone(),
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            always_revalidate: self.always_revalidate,
        }
    }
}

/// Per-request settings, given to [`CachedClient::execute_with`](super::CachedClient) or, with
/// reqwest-middleware, as a request extension (`.with_extension(RequestOptions { .. })`).
///
/// ```
/// use std::time::Duration;
/// use dynacache::http::{ExpireAfter, RequestOptions};
///
/// let opts = RequestOptions {
///     expire_after: Some(ExpireAfter::After(Duration::from_secs(5))),
///     refresh: true,
///     ..Default::default()
/// };
/// assert!(!opts.force_refresh);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Overrides the expiry for this request's response.
    pub expire_after: Option<ExpireAfter>,
    /// Revalidate with the origin even if the cached response is fresh (a conditional request
    /// when the response has validators).
    pub refresh: bool,
    /// Ignore the cached response: fetch unconditionally, and store the result.
    pub force_refresh: bool,
    /// Answer from the cache only: `504 Gateway Timeout` when nothing usable is cached.
    pub only_if_cached: bool,
    /// Bypass the cache entirely for this request.
    pub disable_cache: bool,
}
