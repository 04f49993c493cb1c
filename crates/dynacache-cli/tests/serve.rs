//! `dynacache serve`, run as a user runs it (a child process), in front of a scripted origin, on
//! the embedded engine and on DynamoDB Local (when `DYNACACHE_TEST_DYNAMODB_LOCAL` names it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;

/// Where the proxies' cache lives.
enum Engine {
    Embedded(tempfile::TempDir),
    Local(String),
}

impl Engine {
    fn embedded() -> Engine {
        Engine::Embedded(tempfile::tempdir().unwrap())
    }

    fn local() -> Option<Engine> {
        std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Engine::Local)
    }

    fn args(&self, table: &str) -> Vec<String> {
        let mut args = match self {
            Engine::Embedded(dir) => vec![
                "--embedded-file".into(),
                dir.path().join("cache.db").display().to_string(),
            ],
            Engine::Local(url) => vec!["--endpoint-url".into(), url.clone()],
        };
        args.extend(["--table".into(), table.into()]);
        args
    }
}

fn unique_table() -> String {
    format!("serve_{:016x}", fastrand_u64())
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A running `dynacache serve`, killed when dropped.
struct Proxy {
    child: Child,
    base: String,
    admin: String,
    /// The embedded engine's address, when the proxy runs one.
    engine_endpoint: Option<String>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Stops it as an orchestrator would (SIGTERM: requests in flight and the cache's writes
    /// finish) and waits for it to exit.
    fn stop(mut self) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    /// Starts a proxy with these connection and serve arguments; waits until it listens.
    fn start(connection: &[String], serve: &[&str]) -> Proxy {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("dynacache"));
        for var in [
            "DYNACACHE_TABLE",
            "DYNACACHE_NAMESPACE",
            "DYNACACHE_EMBEDDED_FILE",
            "AWS_ENDPOINT_URL_DYNAMODB",
            "DYNACACHE_ORIGIN",
            "DYNACACHE_LISTEN",
            "DYNACACHE_ADMIN_LISTEN",
            "DYNACACHE_ADMIN_TOKEN",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(connection)
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(serve)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !serve.contains(&"--admin-listen") {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd.spawn().expect("start dynacache serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not the proxy's JSON line ({e}): {line:?}"));
        Proxy {
            child,
            base: format!("http://{}", info["listen"].as_str().unwrap()),
            admin: info["admin"]
                .as_str()
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
            engine_endpoint: info["engine_endpoint"].as_str().map(str::to_owned),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The proxy's peak resident memory, in bytes.
    fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }
}

/// The scripted origin: what it received, and routes for every rule under test.
#[derive(Clone, Default)]
struct Origin {
    hits: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<HeaderMap>>>,
}

impl Origin {
    fn start(&self) -> String {
        let o = self.clone();
        let count = move |o: &Origin, headers: HeaderMap| {
            o.hits.fetch_add(1, Ordering::SeqCst);
            o.seen.lock().unwrap().push(headers);
        };
        let (c1, c2, c3, c4) = (count, count, count, count);
        let (o1, o2, o3, o4) = (o.clone(), o.clone(), o.clone(), o.clone());
        let app = Router::new()
            .route(
                "/fresh",
                get(move |h: HeaderMap| async move {
                    c1(&o1, h);
                    ([("cache-control", "max-age=600")], "fresh body")
                }),
            )
            .route(
                "/hop",
                get(move |h: HeaderMap| async move {
                    c2(&o2, h);
                    (
                        [
                            ("cache-control", "no-store"),
                            ("connection", "x-secret"),
                            ("x-secret", "internal"),
                            ("keep-alive", "timeout=5"),
                        ],
                        "hop",
                    )
                }),
            )
            .route(
                "/upload",
                post(move |h: HeaderMap, body: axum::body::Bytes| async move {
                    c3(&o3, h);
                    format!("{} bytes", body.len())
                })
                .get(move |h: HeaderMap| async move {
                    c4(&o4, h);
                    ([("cache-control", "max-age=600")], "listing")
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    ([("cache-control", "no-store")], "slow")
                }),
            )
            .route(
                "/huge",
                get(|| async {
                    // 100 MiB, 1 MiB at a time, never stored.
                    let chunks = futures::stream::iter((0..100).map(|_| {
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'z'; 1 << 20]))
                    }));
                    ([("cache-control", "no-store")], Body::from_stream(chunks))
                }),
            )
            .route(
                "/big-cached",
                // 24 MiB of noise (stored uncompressed, in chunks), the same every time.
                get(|| async { ([("cache-control", "max-age=600")], noise(BIG_CACHED)) }),
            )
            .route(
                "/huge-cached",
                // 64 MiB of noise, for the object store.
                get(|| async { ([("cache-control", "max-age=600")], noise(HUGE_CACHED)) }),
            )
            .route(
                "/tagged",
                get(|| async {
                    (
                        [
                            ("cache-control", "max-age=600"),
                            ("surrogate-key", "t1 shared"),
                        ],
                        "tagged body",
                    )
                }),
            )
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "origin error") }),
            );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        format!("http://{}", rx.recv().unwrap())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last_headers(&self) -> HeaderMap {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn cache_status(res: &reqwest::blocking::Response) -> String {
    res.headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name(super::Engine::embedded()); })*
        }
        mod dynamodb_local {
            $(#[test] fn $name() {
                match super::Engine::local() {
                    Some(engine) => super::$name(engine),
                    None => eprintln!("DYNACACHE_TEST_DYNAMODB_LOCAL is not set: skipped"),
                }
            })*
        }
    };
}

on_both_engines!(
    proxies_caches_and_forwards_like_a_reverse_proxy,
    two_proxies_on_one_table_are_one_cache_and_purges_reach_both,
    large_uncacheable_bodies_stream_with_flat_memory,
    large_cached_bodies_stream_from_their_chunks_with_flat_memory,
    cached_bodies_stream_from_the_object_store_with_flat_memory,
    origin_failures_are_502_and_504_and_sigterm_finishes_requests,
    sites_from_a_config_file_are_routed_by_host,
);

/// Hits and misses with `Cache-Status`; `Via` both ways; `X-Forwarded-*`; hop-by-hop fields
/// removed both ways; a POST's body forwarded and its success invalidating; the health path;
/// HTTP/2 from the client; the admin API's purge and stats.
fn proxies_caches_and_forwards_like_a_reverse_proxy(engine: Engine) {
    let origin = Origin::default();
    let base = origin.start();
    let table = unique_table();
    let proxy = Proxy::start(&engine.args(&table), &["--origin", &base]);
    let http = client();

    let first = http.get(proxy.url("/fresh")).send().unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        cache_status(&first).starts_with("dynacache; fwd=uri-miss; fwd-status=200; stored"),
        "{}",
        cache_status(&first)
    );
    assert_eq!(first.headers()["via"], "1.1 dynacache");
    assert_eq!(first.version(), reqwest::Version::HTTP_11);
    assert_eq!(first.text().unwrap(), "fresh body");
    let seen = origin.last_headers();
    assert_eq!(seen["via"], "1.1 dynacache");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(
        seen["x-forwarded-host"].to_str().unwrap(),
        proxy.base.trim_start_matches("http://")
    );
    let second = http.get(proxy.url("/fresh")).send().unwrap();
    assert!(
        cache_status(&second).starts_with("dynacache; hit; ttl="),
        "{}",
        cache_status(&second)
    );
    assert_eq!(second.text().unwrap(), "fresh body");
    assert_eq!(origin.hits(), 1);

    // HTTP/2 (prior knowledge) is served too, from the same cache.
    let h2 = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = h2.get(proxy.url("/fresh")).send().unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert!(cache_status(&res).contains("hit"));
    assert_eq!(origin.hits(), 1);

    // Hop-by-hop fields stay on their hop.
    let res = http
        .get(proxy.url("/hop"))
        .header("connection", "x-client-secret")
        .header("x-client-secret", "mine")
        .header("proxy-authorization", "Basic eA==")
        .send()
        .unwrap();
    assert_eq!(res.text().unwrap(), "hop");
    let seen = origin.last_headers();
    for name in ["x-client-secret", "proxy-authorization"] {
        assert!(!seen.contains_key(name), "{name} reached the origin");
    }
    let res = http.get(proxy.url("/hop")).send().unwrap();
    for name in ["x-secret", "keep-alive"] {
        assert!(
            !res.headers().contains_key(name),
            "{name} reached the client"
        );
    }

    // A POST's body reaches the origin; its success invalidates the stored GET.
    http.get(proxy.url("/upload")).send().unwrap();
    assert!(cache_status(&http.get(proxy.url("/upload")).send().unwrap()).contains("hit"));
    let res = http
        .post(proxy.url("/upload"))
        .body(vec![7u8; 300_000])
        .send()
        .unwrap();
    assert_eq!(cache_status(&res), "dynacache; fwd=method; fwd-status=200");
    assert_eq!(res.text().unwrap(), "300000 bytes");
    assert!(cache_status(&http.get(proxy.url("/upload")).send().unwrap()).contains("fwd=uri-miss"));

    // The proxy's own health path, never forwarded.
    let before = origin.hits();
    let res = http.get(proxy.url("/.dynacache/health")).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(origin.hits(), before);

    // The admin API: purge by URL, by prefix, by glob; stats.
    let purge = |query: &str| -> u64 {
        let res = http
            .post(format!("{}/purge?{query}", proxy.admin))
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "{query}");
        res.json::<Value>().unwrap()["purged"].as_u64().unwrap()
    };
    let fresh = proxy.url("/fresh");
    assert_eq!(purge(&format!("url={fresh}")), 1);
    assert!(cache_status(&http.get(proxy.url("/fresh")).send().unwrap()).contains("fwd=uri-miss"));
    assert_eq!(purge(&format!("prefix={}/up", proxy.base)), 1);
    assert_eq!(purge("glob=*/fresh"), 1);
    assert_eq!(purge("glob=*/nothing"), 0);
    let bad = http.post(format!("{}/purge", proxy.admin)).send().unwrap();
    assert_eq!(bad.status(), 400);
    let stats: Value = http
        .get(format!("{}/stats", proxy.admin))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(stats["hits"].as_u64().unwrap() >= 2, "{stats}");
    let metrics = http
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("dynacache_hits_total"), "{metrics}");
}

/// Two proxies on one table: what one stores is a hit in the other; a purge at one is seen by
/// the other once its in-process tier lets go (`--l1-ttl`).
fn two_proxies_on_one_table_are_one_cache_and_purges_reach_both(engine: Engine) {
    let origin = Origin::default();
    let base = origin.start();
    let table = unique_table();
    let a = Proxy::start(
        &engine.args(&table),
        &["--origin", &base, "--l1-ttl", "200ms"],
    );
    // On the embedded engine, the second proxy reaches the first one's engine.
    let b_connection = match (&engine, &a.engine_endpoint) {
        (Engine::Embedded(_), Some(endpoint)) => vec![
            "--endpoint-url".to_owned(),
            endpoint.clone(),
            "--table".to_owned(),
            table.clone(),
        ],
        _ => engine.args(&table),
    };
    let b = Proxy::start(&b_connection, &["--origin", &base, "--l1-ttl", "200ms"]);
    let http = client();
    assert!(cache_status(&http.get(a.url("/fresh")).send().unwrap()).contains("stored"));
    // Proxy b is keyed on its own host and port: the same path through b is another URL.
    // Clients reach both under one name, as behind a load balancer.
    let host = a.base.trim_start_matches("http://").to_owned();
    let via_b = |path: &str| http.get(b.url(path)).header("host", &host).send().unwrap();
    let res = via_b("/fresh");
    assert!(cache_status(&res).contains("hit"), "{}", cache_status(&res));
    assert_eq!(res.text().unwrap(), "fresh body");
    assert_eq!(origin.hits(), 1);
    // Purge at a; b sees it within its l1_ttl.
    let res = http
        .post(format!("{}/purge?url={}", a.admin, a.url("/fresh")))
        .send()
        .unwrap();
    assert_eq!(res.json::<Value>().unwrap()["purged"], 1);
    std::thread::sleep(Duration::from_millis(600));
    assert!(cache_status(&via_b("/fresh")).contains("fwd=uri-miss"));
    assert_eq!(origin.hits(), 2);

    // Purge by tag at b; a sees it. The tag field never reaches clients.
    let res = http.get(a.url("/tagged")).send().unwrap();
    assert!(!res.headers().contains_key("surrogate-key"));
    let res = via_b("/tagged");
    assert!(cache_status(&res).contains("hit"), "{}", cache_status(&res));
    let res = http
        .post(format!("{}/purge", b.admin))
        .json(&serde_json::json!({"tag": "shared"}))
        .send()
        .unwrap();
    assert_eq!(res.json::<Value>().unwrap()["purged"], 1);
    std::thread::sleep(Duration::from_millis(600));
    let res = http.get(a.url("/tagged")).send().unwrap();
    assert!(
        cache_status(&res).contains("fwd=uri-miss"),
        "{}",
        cache_status(&res)
    );
    // And from the command line, on the same table.
    if let Engine::Local(_) = engine {
        let out = Command::new(assert_cmd::cargo::cargo_bin("dynacache"))
            .args(engine.args(&table))
            .args(["purge", "--tag", "t1", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["deleted"], 1);
    }
}

/// A 100 MiB response the cache may not store streams through without being held in memory.
fn large_uncacheable_bodies_stream_with_flat_memory(engine: Engine) {
    let origin = Origin::default();
    let base = origin.start();
    let proxy = Proxy::start(&engine.args(&unique_table()), &["--origin", &base]);
    let http = client();
    http.get(proxy.url("/fresh"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let before = proxy.peak_memory();
    let mut res = http.get(proxy.url("/huge")).send().unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut res, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == b'z'));
        total += n as u64;
    }
    assert_eq!(total, 100 << 20);
    let grew = proxy.peak_memory().saturating_sub(before);
    assert!(
        grew < 32 << 20,
        "the proxy's peak memory grew by {} MiB while streaming 100 MiB",
        grew >> 20
    );
}

const BIG_CACHED: usize = 24 << 20;
const HUGE_CACHED: usize = 64 << 20;

/// Noise that does not compress, the same every time.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Hits on a large cached body stream from its chunks: in a proxy started after the body was
/// stored (so that storing it is not in its peak memory), three concurrent hits of 24 MiB,
/// whose readers wait until all have their headers, leave the peak memory about flat (read
/// whole, they would hold 72 MiB at once).
fn large_cached_bodies_stream_from_their_chunks_with_flat_memory(engine: Engine) {
    let table = unique_table();
    cached_bodies_stream_with_flat_memory(&engine.args(&table), "/big-cached", BIG_CACHED, 3);
}

/// `serve --object-store`: a 64 MiB body is stored as one object, and sixteen concurrent hits
/// stream it from the object store with the proxy's peak memory about flat (read whole, they
/// would hold 1 GiB at once). Embedded: a directory; DynamoDB Local: the S3 server.
fn cached_bodies_stream_from_the_object_store_with_flat_memory(engine: Engine) {
    let table = unique_table();
    let mut args = engine.args(&table);
    let dir = tempfile::tempdir().unwrap();
    match &engine {
        Engine::Embedded(_) => {
            args.extend(["--object-store".into(), dir.path().display().to_string()]);
        }
        Engine::Local(_) => match std::env::var("DYNACACHE_TEST_S3") {
            Ok(url) if !url.is_empty() => args.extend([
                "--object-store".into(),
                format!("s3://{}/proxy", table.replace('_', "-")),
                "--object-store-endpoint-url".into(),
                url,
            ]),
            _ => return eprintln!("DYNACACHE_TEST_S3 is not set: skipped"),
        },
    }
    cached_bodies_stream_with_flat_memory(&args, "/huge-cached", HUGE_CACHED, 16);
    if let Engine::Embedded(_) = engine {
        let objects = std::fs::read_dir(dir.path().join("http")).unwrap().count();
        assert_eq!(objects, 1, "the body is one object");
    }
}

/// Stores `path` through a proxy, then, in a proxy started afresh (so that storing it is not in
/// its peak memory), `readers` concurrent hits whose readers wait until all have their headers:
/// the peak memory grows by far less than the bodies' total.
fn cached_bodies_stream_with_flat_memory(
    connection: &[String],
    path: &str,
    len: usize,
    readers: usize,
) {
    let origin = Origin::default();
    let base = origin.start();
    let read_all = |res: reqwest::blocking::Response| -> Vec<u8> {
        let mut res = res;
        let mut body = Vec::with_capacity(len);
        let status = format!("{:?}", res.headers().get("cache-status"));
        std::io::Read::read_to_end(&mut res, &mut body)
            .unwrap_or_else(|e| panic!("{status}: {e} after {} bytes", body.len()));
        body
    };
    let stored = {
        // No in-process tier: a hit is a hit in the table.
        let proxy = Proxy::start(connection, &["--origin", &base, "--memory-mib", "0"]);
        let http = client();
        // A proxy is keyed on the host it is asked for: both are asked for one name.
        let get = || {
            http.get(proxy.url(path))
                .header("host", "big.example")
                .send()
                .unwrap()
        };
        let stored = read_all(get());
        assert_eq!(stored.len(), len);
        // Stored once its writes have landed: wait for a hit.
        let mut hit = false;
        for _ in 0..100 {
            let res = get();
            hit = res.headers()["cache-status"]
                .to_str()
                .unwrap()
                .contains("hit");
            assert!(read_all(res) == stored);
            if hit {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(hit, "stored");
        // Writes of a miss that raced the first store land before the proxy stops.
        proxy.stop();
        stored
    };
    let proxy = Proxy::start(connection, &["--origin", &base]);
    // Warm: one hit first (connections, thread arenas, the engine's caches).
    let warm = client()
        .get(proxy.url(path))
        .header("host", "big.example")
        .send()
        .unwrap();
    assert!(read_all(warm) == stored);
    let before = proxy.peak_memory();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(readers));
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let (url, barrier) = (proxy.url(path), barrier.clone());
            std::thread::spawn(move || {
                let res = client()
                    .get(url)
                    .header("host", "big.example")
                    .send()
                    .unwrap();
                let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
                barrier.wait();
                let mut res = res;
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut res, &mut body).unwrap();
                (status, body)
            })
        })
        .collect();
    for reader in threads {
        let (status, body) = reader.join().unwrap();
        assert!(status.contains("hit"), "{status}");
        assert!(body == stored);
    }
    let grew = proxy.peak_memory().saturating_sub(before);
    eprintln!(
        "{readers} hits of {} MiB: peak memory grew by {} MiB",
        len >> 20,
        grew >> 20
    );
    assert!(
        grew < (len * readers / 2).min(len * 3 / 2) as u64,
        "the proxy's peak memory grew by {} MiB for {readers} hits of {} MiB",
        grew >> 20,
        len >> 20
    );
}

/// An origin that is down is a 502; one that does not answer in time a 504; after SIGTERM the
/// request in flight still gets its answer and the proxy exits cleanly.
fn origin_failures_are_502_and_504_and_sigterm_finishes_requests(engine: Engine) {
    let origin = Origin::default();
    let base = origin.start();
    let table = unique_table();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let http = client();
    let down = Proxy::start(&engine.args(&table), &["--origin", &closed]);
    let res = http.get(down.url("/anything")).send().unwrap();
    assert_eq!(res.status(), 502);
    drop(down);

    let proxy = Proxy::start(
        &engine.args(&table),
        &["--origin", &base, "--origin-timeout", "1s"],
    );
    let res = http.get(proxy.url("/slow")).send().unwrap();
    assert_eq!(res.status(), 504);
    // An origin error is the origin's answer, passed on.
    assert_eq!(http.get(proxy.url("/broken")).send().unwrap().status(), 500);
    // One process on the embedded file at a time.
    drop(proxy);

    let mut patient = Proxy::start(
        &engine.args(&table),
        &["--origin", &base, "--origin-timeout", "10s"],
    );
    let url = patient.url("/slow");
    let in_flight = std::thread::spawn(move || {
        let res = client().get(url).send().unwrap();
        (res.status(), res.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a plain kill(2) of our own child.
    unsafe {
        libc::kill(patient.child.id() as i32, libc::SIGTERM);
    }
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slow");
    let exit = patient.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A table nobody can reach: every request is answered by the origin, and `Cache-Status` says
/// why the cache did not; with the in-process tier on, what this proxy fetched is served from
/// memory meanwhile.
#[test]
fn an_unreachable_table_never_fails_a_request() {
    let origin = Origin::default();
    let base = origin.start();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let connection = ["--endpoint-url".into(), closed, "--assume-exists".into()];
    let http = client();
    let without_tier = Proxy::start(&connection, &["--origin", &base, "--memory-mib", "0"]);
    for _ in 0..3 {
        let res = http.get(without_tier.url("/fresh")).send().unwrap();
        assert_eq!(res.status(), 200);
        let status = cache_status(&res);
        assert!(
            status.contains("fwd=uri-miss") && status.contains("detail="),
            "{status}"
        );
        assert_eq!(res.text().unwrap(), "fresh body");
    }
    assert_eq!(origin.hits(), 3);
    let with_tier = Proxy::start(&connection, &["--origin", &base]);
    let first = http.get(with_tier.url("/fresh")).send().unwrap();
    assert!(
        cache_status(&first).contains("detail="),
        "{}",
        cache_status(&first)
    );
    let second = http.get(with_tier.url("/fresh")).send().unwrap();
    assert!(
        cache_status(&second).contains("hit"),
        "{}",
        cache_status(&second)
    );
    assert_eq!(second.text().unwrap(), "fresh body");
    assert_eq!(origin.hits(), 4);
}

#[test]
fn the_admin_api_needs_a_token_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.db").display().to_string();
    let out = Command::new(assert_cmd::cargo::cargo_bin("dynacache"))
        .args([
            "--embedded-file",
            &file,
            "serve",
            "--origin",
            "http://127.0.0.1:9",
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));

    let proxy = Proxy::start(
        &["--embedded-file".into(), file],
        &["--origin", "http://127.0.0.1:9", "--admin-token", "s3cret"],
    );
    let http = client();
    let purge = format!("{}/purge?glob=*", proxy.admin);
    assert_eq!(http.post(&purge).send().unwrap().status(), 401);
    let wrong = http.post(&purge).bearer_auth("guess").send().unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http.post(&purge).bearer_auth("s3cret").send().unwrap();
    assert_eq!(right.status(), 200);
}

/// `--config`: sites routed by `Host`, each with its origin and namespace; purges confined to a
/// site with `site=`.
fn sites_from_a_config_file_are_routed_by_host(engine: Engine) {
    let (shop, blog) = (Origin::default(), Origin::default());
    let (shop_url, blog_url) = (shop.start(), blog.start());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sites.toml");
    std::fs::write(
        &config,
        format!(
            "[[site]]\nhost = \"Shop.Example\"\norigin = \"{shop_url}\"\nnamespace = \"shop\"\n\n\
             [[site]]\norigin = \"{blog_url}\"\nnamespace = \"blog\"\n"
        ),
    )
    .unwrap();
    let proxy = Proxy::start(
        &engine.args(&unique_table()),
        &["--config", config.to_str().unwrap()],
    );
    let http = client();
    let get = |host: &str| {
        http.get(proxy.url("/fresh"))
            .header("host", host)
            .send()
            .unwrap()
    };
    for _ in 0..2 {
        assert_eq!(get("shop.example:8080").text().unwrap(), "fresh body");
        assert_eq!(get("anything.example").text().unwrap(), "fresh body");
    }
    assert_eq!((shop.hits(), blog.hits()), (1, 1));
    let stats: Value = http
        .get(format!("{}/stats", proxy.admin))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let namespaces: Vec<&str> = stats["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["shop", "blog"]);
    assert_eq!(stats["hits"], 2);
    // A purge confined to the shop.
    let res = http
        .post(format!("{}/purge?site=shop.example&glob=*", proxy.admin))
        .send()
        .unwrap();
    assert_eq!(res.json::<Value>().unwrap()["purged"], 1);
    get("shop.example");
    get("anything.example");
    assert_eq!((shop.hits(), blog.hits()), (2, 1));
    let res = http
        .post(format!("{}/purge?site=nowhere.example&glob=*", proxy.admin))
        .send()
        .unwrap();
    assert_eq!(res.status(), 404);
    drop(proxy);

    // A file naming two default sites is refused.
    std::fs::write(
        &config,
        format!("[[site]]\norigin = \"{shop_url}\"\n[[site]]\norigin = \"{blog_url}\"\n"),
    )
    .unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("dynacache"))
        .args(engine.args(&unique_table()))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("two default sites"));
}
