//! A test origin on 127.0.0.1: counts requests per path and scripts caching headers, validators,
//! Vary, redirects, errors and delays.
//!
//! Besides the fixed routes, `/script/<name>` answers with whatever the test scripted for `name`
//! ([`Origin::script`], [`Origin::respond`]), and every request's method and headers are recorded
//! ([`Origin::requests`]) so tests can check what the cache sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;

/// A request as a script sees it.
#[derive(Debug, Clone)]
pub struct ScriptRequest {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: axum::body::Bytes,
    /// The origin's idea of now (the test's clock when it follows one).
    pub now: std::time::SystemTime,
    /// How many requests reached this script's path, this one included.
    pub n: usize,
}

impl ScriptRequest {
    /// A request header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A scripted answer: status, headers (in order, repeats allowed), body, and a delay before it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A 200 with this body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, body)
    }

    /// Adds a header line (a `date` line replaces the origin's own `Date`).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = Arc<dyn Fn(&ScriptRequest) -> Reply + Send + Sync>;

/// A request the origin received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub headers: HeaderMap,
}

#[derive(Clone, Default)]
pub struct Origin {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    received: Arc<Mutex<HashMap<String, Vec<Received>>>>,
    /// The clock the origin's `Date` headers follow (the test's manual clock), if set.
    clock: Arc<Mutex<Option<dynacache::ManualClock>>>,
    /// When set, every route answers 500.
    pub failing: Arc<AtomicBool>,
    /// When set, validators in requests are ignored (the resource "changed").
    pub changed: Arc<AtomicBool>,
    pub base: String,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut origin = Origin {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(origin.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        origin.base = origin.base.clone();
        origin
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How many requests reached `path` (without the query).
    pub fn count(&self, path: &str) -> usize {
        *self.counts.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Dates responses (`Date`, and the `Expires` of `/expires/N`) by this clock instead of the
    /// system clock, so that ages computed by a cache on the same clock are right.
    pub fn follow_clock(&self, clock: &dynacache::ManualClock) {
        *self.clock.lock().unwrap() = Some(clock.clone());
    }

    /// The origin's idea of now.
    pub fn now(&self) -> std::time::SystemTime {
        use dynacache::Clock;
        match &*self.clock.lock().unwrap() {
            Some(c) => std::time::UNIX_EPOCH + Duration::from_millis(c.now_millis() as u64),
            None => std::time::SystemTime::now(),
        }
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Scripts `/script/<name>`: every request to it is answered by `f`. Returns the path.
    pub fn script(
        &self,
        name: &str,
        f: impl Fn(&ScriptRequest) -> Reply + Send + Sync + 'static,
    ) -> String {
        self.scripts
            .lock()
            .unwrap()
            .insert(name.to_owned(), Arc::new(f));
        format!("/script/{name}")
    }

    /// Scripts `/script/<name>` to answer `reply` to every request. Returns the path.
    pub fn respond(&self, name: &str, reply: Reply) -> String {
        self.script(name, move |_| reply.clone())
    }

    /// The requests that reached `path` (without the query), oldest first.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// The last request that reached `path`.
    pub fn last_request(&self, path: &str) -> Received {
        self.requests(path)
            .pop()
            .unwrap_or_else(|| panic!("no request reached {path}"))
    }
}

fn response(status: StatusCode, headers: &[(&str, String)], body: impl Into<Body>) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(body.into()).unwrap()
}

async fn handle(
    State(origin): State<Origin>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let now = origin.now();
    origin
        .received
        .lock()
        .unwrap()
        .entry(format!("/{path}"))
        .or_default()
        .push(Received {
            method: method.clone(),
            headers: headers.clone(),
        });
    let mut res = route(origin, path, method, headers, body).await;
    if !res.headers().contains_key(header::DATE) {
        res.headers_mut().insert(
            header::DATE,
            axum::http::HeaderValue::from_str(&httpdate::fmt_http_date(now)).unwrap(),
        );
    }
    res
}

async fn route(
    origin: Origin,
    path: String,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("/{path}");
    let n = {
        let mut counts = origin.counts.lock().unwrap();
        let n = counts.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    if origin.failing.load(Ordering::SeqCst) {
        return response(StatusCode::INTERNAL_SERVER_ERROR, &[], "origin down");
    }
    let changed = origin.changed.load(Ordering::SeqCst);
    let json = || ("content-type", "application/json".to_owned());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["script", name] => {
            let script = origin.scripts.lock().unwrap().get(*name).cloned();
            let Some(script) = script else {
                return response(StatusCode::NOT_FOUND, &[], "no such script");
            };
            let reply = script(&ScriptRequest {
                method,
                headers,
                body,
                now: origin.now(),
                n,
            });
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let mut b = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
            for (k, v) in &reply.headers {
                b = b.header(k.as_str(), v.as_str());
            }
            b.body(Body::from(reply.body)).unwrap()
        }
        ["json"] => response(
            StatusCode::OK,
            &[json()],
            r#"{"id": 1, "price": 12.5, "tags": ["a", "b"]}"#,
        ),
        ["max-age", n] => response(
            StatusCode::OK,
            &[json(), ("cache-control", format!("max-age={n}"))],
            format!(r#"{{"max_age": {n}}}"#),
        ),
        ["no-store"] => response(
            StatusCode::OK,
            &[("cache-control", "no-store".into())],
            "secret",
        ),
        ["private"] => response(
            StatusCode::OK,
            &[("cache-control", "private, max-age=60".into())],
            "mine",
        ),
        ["immutable"] => response(
            StatusCode::OK,
            &[("cache-control", "max-age=1, immutable".into())],
            "forever",
        ),
        ["etag"] => {
            let version = if changed { "\"v2\"" } else { "\"v1\"" };
            if !changed
                && headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v.as_bytes() == b"\"v1\"")
            {
                return response(
                    StatusCode::NOT_MODIFIED,
                    &[
                        ("etag", version.into()),
                        ("cache-control", "max-age=60".into()),
                        ("x-revalidated", "yes".into()),
                    ],
                    "",
                );
            }
            response(
                StatusCode::OK,
                &[
                    json(),
                    ("etag", version.into()),
                    ("cache-control", "max-age=60".into()),
                ],
                format!(r#"{{"version": {version}}}"#),
            )
        }
        ["last-modified"] => {
            let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
            if headers
                .get(header::IF_MODIFIED_SINCE)
                .is_some_and(|v| v.as_bytes() == lm.as_bytes())
            {
                return response(StatusCode::NOT_MODIFIED, &[], "");
            }
            response(
                StatusCode::OK,
                &[
                    ("last-modified", lm.into()),
                    ("cache-control", "no-cache".into()),
                ],
                "dated",
            )
        }
        ["vary"] => {
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            response(
                StatusCode::OK,
                &[
                    ("vary", "Accept-Language".into()),
                    ("content-type", "text/plain".into()),
                ],
                format!("hello in {lang}"),
            )
        }
        ["vary-star"] => response(StatusCode::OK, &[("vary", "*".into())], "never"),
        ["status", code] => {
            let code: u16 = code.parse().unwrap();
            response(
                StatusCode::from_u16(code).unwrap(),
                &[],
                format!("status {code}"),
            )
        }
        ["slow"] => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            response(StatusCode::OK, &[], "slow")
        }
        ["large", n] => {
            let n: usize = n.parse().unwrap();
            let body: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            response(
                StatusCode::OK,
                &[("content-type", "application/octet-stream".into())],
                body,
            )
        }
        ["json-size", n] => {
            let n: usize = n.parse().unwrap();
            let mut body = String::from("[");
            let mut i = 0;
            while body.len() + 64 < n {
                body.push_str(&format!(
                    r#"{{"id": {i}, "name": "item {i}", "in_stock": true}},"#
                ));
                i += 1;
            }
            body.push_str(r#"{"end": true}]"#);
            response(StatusCode::OK, &[json()], body)
        }
        ["random-etag", n] => {
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == b"\"r1\"")
            {
                return response(
                    StatusCode::NOT_MODIFIED,
                    &[
                        ("etag", "\"r1\"".into()),
                        ("cache-control", "max-age=60".into()),
                    ],
                    "",
                );
            }
            let n: usize = n.parse().unwrap();
            let mut r = random_response(n);
            r.headers_mut()
                .insert("etag", axum::http::HeaderValue::from_static("\"r1\""));
            r.headers_mut().insert(
                "cache-control",
                axum::http::HeaderValue::from_static("max-age=60"),
            );
            r
        }
        ["random", n] => random_response(n.parse().unwrap()),
        ["expires", secs] => {
            let now = origin.now();
            let secs: u64 = secs.parse().unwrap();
            response(
                StatusCode::OK,
                &[
                    ("date", httpdate::fmt_http_date(now)),
                    (
                        "expires",
                        httpdate::fmt_http_date(now + Duration::from_secs(secs)),
                    ),
                ],
                "dated by Expires",
            )
        }
        ["binary"] => response(
            StatusCode::OK,
            &[("content-type", "application/octet-stream".into())],
            vec![0u8, 0xff, 0xfe, 0x80, 10, 13],
        ),
        ["latin1-header"] => {
            let mut r = response(StatusCode::OK, &[], "ok");
            r.headers_mut().insert(
                "x-latin1",
                axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
            );
            r
        }
        ["huge-headers"] => {
            let mut r = response(StatusCode::OK, &[], vec![7u8; 150_000]);
            for i in 0..80 {
                r.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap(),
                    axum::http::HeaderValue::from_str(&"h".repeat(4000)).unwrap(),
                );
            }
            r
        }
        ["redirect"] => response(StatusCode::FOUND, &[("location", "/json".into())], ""),
        ["echo"] => response(StatusCode::OK, &[], body),
        ["headers"] => {
            let mut names: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
            names.sort();
            response(StatusCode::OK, &[], names.join(","))
        }
        _ => response(StatusCode::NOT_FOUND, &[], "not found"),
    }
}

/// An incompressible body (xorshift) of `n` bytes, so that a large one is stored in chunks.
fn random_response(n: usize) -> Response {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut body = Vec::with_capacity(n + 8);
    while body.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        body.extend_from_slice(&state.to_le_bytes());
    }
    body.truncate(n);
    response(
        StatusCode::OK,
        &[
            ("content-type", "application/octet-stream".into()),
            ("cache-control", "max-age=600".into()),
        ],
        body,
    )
}
