//! The tower layer in front of an axum app, on every engine: hits and misses with their
//! `Cache-Status`, shared-cache rules, requests that go straight through with their bodies,
//! invalidation by unsafe methods, `Vary`, replicas sharing one table, and a table that cannot be
//! reached.

mod common;

conformance!(
    a_second_get_is_a_hit_with_cache_status,
    private_and_uncacheable_responses_are_not_stored_in_a_shared_cache,
    posts_stream_through_and_invalidate_what_they_change,
    vary_misses_are_told_apart_from_uri_misses,
    two_replicas_on_one_table_are_one_cache,
    targeted_cache_control_overrides_cache_control,
    stale_responses_are_revalidated_through_the_app,
    purge_by_tag_reads_the_index_not_the_table,
);

mod suite {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, Request, StatusCode};
    use axum::routing::get;
    use dynacache::http::{CacheFactsExt, CacheLayer, HttpCache};
    use dynacache::{ManualClock, Table};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[derive(Clone, Default)]
    struct Calls(Arc<AtomicUsize>);

    impl Calls {
        fn bump(&self) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst) + 1
        }
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Routes that count their calls.
    fn routes(calls: &Calls) -> Router {
        Router::new()
            .route(
                "/fresh",
                get(|State(c): State<Calls>| async move {
                    let n = c.bump();
                    ([("cache-control", "max-age=60")], format!("fresh {n}"))
                })
                .post(|State(c): State<Calls>, body: String| async move {
                    c.bump();
                    format!("posted {}", body.len())
                }),
            )
            .route(
                "/private",
                get(|State(c): State<Calls>| async move {
                    c.bump();
                    ([("cache-control", "private, max-age=60")], "mine")
                }),
            )
            .route(
                "/no-store",
                get(|State(c): State<Calls>| async move {
                    c.bump();
                    ([("cache-control", "no-store")], "not kept")
                }),
            )
            .route(
                "/vary",
                get(|State(c): State<Calls>, headers: HeaderMap| async move {
                    c.bump();
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("en")
                        .to_owned();
                    (
                        [("cache-control", "max-age=60"), ("vary", "accept-language")],
                        format!("hello in {lang}"),
                    )
                }),
            )
            .route(
                "/targeted",
                get(|State(c): State<Calls>| async move {
                    c.bump();
                    (
                        [
                            ("cache-control", "no-store"),
                            ("cdn-cache-control", "max-age=60"),
                        ],
                        "for the CDN only",
                    )
                }),
            )
            .route(
                "/etag",
                get(|State(c): State<Calls>, headers: HeaderMap| async move {
                    c.bump();
                    if headers
                        .get("if-none-match")
                        .is_some_and(|v| v.as_bytes() == b"\"v1\"")
                    {
                        return (
                            StatusCode::NOT_MODIFIED,
                            [("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                            String::new(),
                        );
                    }
                    (
                        StatusCode::OK,
                        [("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                        "tagged".to_owned(),
                    )
                }),
            )
            .with_state(calls.clone())
    }

    fn shared(table: &Table, clock: &ManualClock) -> HttpCache {
        HttpCache::builder()
            .shared(true)
            .clock(clock.clone())
            .write_wait(Duration::from_secs(60))
            .targeted_cache_control(["CDN-Cache-Control"])
            .unwrap()
            .build(table.clone())
            .unwrap()
    }

    struct Answer {
        status: StatusCode,
        cache_status: String,
        from_cache: bool,
        body: String,
    }

    async fn send(app: &Router, req: Request<Body>) -> Answer {
        let res = app.clone().oneshot(req).await.unwrap();
        let cache_status = res
            .headers()
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(", ");
        let from_cache = res.from_cache();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            cache_status,
            from_cache,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// Checks a `Cache-Status` entry, with its `ttl` within a second of `ttl` (dates have a
    /// resolution of one second).
    fn assert_cache_status(actual: &str, expected: &str, ttl: i64) {
        let (rest, got) = actual.rsplit_once("; ttl=").expect("a ttl");
        let got: i64 = got.parse().unwrap();
        assert_eq!(rest, expected, "{actual}");
        assert!(
            (got - ttl).abs() <= 1,
            "ttl {got}, expected {ttl}: {actual}"
        );
    }

    fn get_req(path: &str) -> Request<Body> {
        Request::get(path)
            .header("host", "app.example")
            .body(Body::empty())
            .unwrap()
    }

    pub async fn a_second_get_is_a_hit_with_cache_status(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let app = routes(&calls).layer(CacheLayer::new(shared(&table, &clock)));
        let first = send(&app, get_req("/fresh")).await;
        assert_eq!(first.body, "fresh 1");
        assert!(!first.from_cache);
        assert_cache_status(
            &first.cache_status,
            "dynacache; fwd=uri-miss; fwd-status=200; stored",
            60,
        );
        clock.advance(Duration::from_secs(10));
        let second = send(&app, get_req("/fresh")).await;
        assert_eq!(second.body, "fresh 1");
        assert!(second.from_cache);
        assert_cache_status(&second.cache_status, "dynacache; hit", 50);
        assert_eq!(calls.get(), 1);
        // Another host is another URL.
        let other = Request::get("/fresh")
            .header("host", "other.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, other).await.body, "fresh 2");
        // A request without a host cannot be keyed: straight through.
        let hostless = Request::get("/fresh").body(Body::empty()).unwrap();
        let answer = send(&app, hostless).await;
        assert_eq!(answer.body, "fresh 3");
        assert_eq!(answer.cache_status, "dynacache; fwd=bypass; fwd-status=200");
        // The name is configurable, and the field can be left out.
        let quiet =
            routes(&calls).layer(CacheLayer::new(shared(&table, &clock)).cache_status(None));
        assert_eq!(send(&quiet, get_req("/fresh")).await.cache_status, "");
        let named = routes(&calls)
            .layer(CacheLayer::new(shared(&table, &clock)).cache_status(Some("edge")));
        assert!(
            send(&named, get_req("/fresh"))
                .await
                .cache_status
                .starts_with("edge; hit")
        );
    }

    pub async fn private_and_uncacheable_responses_are_not_stored_in_a_shared_cache(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let app = routes(&calls).layer(CacheLayer::new(shared(&table, &clock)));
        for path in ["/private", "/no-store"] {
            let before = calls.get();
            let a = send(&app, get_req(path)).await;
            let b = send(&app, get_req(path)).await;
            assert_eq!(calls.get(), before + 2, "{path}");
            assert!(!a.from_cache && !b.from_cache);
            assert_eq!(b.cache_status, "dynacache; fwd=uri-miss; fwd-status=200");
        }
        // A response to a request with credentials is not stored for others.
        let with_auth = || {
            Request::get("/fresh")
                .header("host", "app.example")
                .header("authorization", "Bearer x")
                .body(Body::empty())
                .unwrap()
        };
        send(&app, with_auth()).await;
        assert!(!send(&app, with_auth()).await.from_cache);
        assert!(!send(&app, get_req("/fresh")).await.from_cache);
    }

    pub async fn posts_stream_through_and_invalidate_what_they_change(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let app = routes(&calls).layer(CacheLayer::new(shared(&table, &clock)));
        send(&app, get_req("/fresh")).await;
        assert!(send(&app, get_req("/fresh")).await.from_cache);
        // A 1 MiB body, streamed in pieces to the app.
        let pieces = futures::stream::iter(
            (0..16).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 65_536]))),
        );
        let post = Request::post("/fresh")
            .header("host", "app.example")
            .body(Body::from_stream(pieces))
            .unwrap();
        let answer = send(&app, post).await;
        assert_eq!(answer.body, "posted 1048576");
        assert_eq!(answer.cache_status, "dynacache; fwd=method; fwd-status=200");
        // The POST's success invalidated the stored GET.
        let after = send(&app, get_req("/fresh")).await;
        assert!(!after.from_cache);
        assert_eq!(after.body, "fresh 3");
    }

    pub async fn vary_misses_are_told_apart_from_uri_misses(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let app = routes(&calls).layer(CacheLayer::new(shared(&table, &clock)));
        let lang = |l: &str| {
            Request::get("/vary")
                .header("host", "app.example")
                .header("accept-language", l)
                .body(Body::empty())
                .unwrap()
        };
        let en = send(&app, lang("en")).await;
        assert!(
            en.cache_status.contains("fwd=uri-miss"),
            "{}",
            en.cache_status
        );
        let fr = send(&app, lang("fr")).await;
        assert!(
            fr.cache_status.contains("fwd=vary-miss"),
            "{}",
            fr.cache_status
        );
        assert_eq!(fr.body, "hello in fr");
        assert_eq!(send(&app, lang("en")).await.body, "hello in en");
        assert!(send(&app, lang("fr")).await.from_cache);
        assert_eq!(calls.get(), 2);
    }

    pub async fn two_replicas_on_one_table_are_one_cache(table: Table) {
        let clock = ManualClock::new();
        let (calls_a, calls_b) = (Calls::default(), Calls::default());
        let a = routes(&calls_a).layer(CacheLayer::new(shared(&table, &clock)));
        let b = routes(&calls_b).layer(CacheLayer::new(shared(&table, &clock)));
        assert_eq!(send(&a, get_req("/fresh")).await.body, "fresh 1");
        let from_b = send(&b, get_req("/fresh")).await;
        assert!(from_b.from_cache);
        assert_eq!(from_b.body, "fresh 1");
        assert_eq!(calls_b.get(), 0);
        // An unsafe request through one replica invalidates for both.
        let post = Request::post("/fresh")
            .header("host", "app.example")
            .body(Body::from("x"))
            .unwrap();
        send(&b, post).await;
        assert!(!send(&a, get_req("/fresh")).await.from_cache);
    }

    pub async fn targeted_cache_control_overrides_cache_control(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let app = routes(&calls).layer(CacheLayer::new(shared(&table, &clock)));
        send(&app, get_req("/targeted")).await;
        let second = send(&app, get_req("/targeted")).await;
        assert!(second.from_cache, "{}", second.cache_status);
        assert_eq!(calls.get(), 1);
    }

    pub async fn stale_responses_are_revalidated_through_the_app(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let app = routes(&calls).layer(CacheLayer::new(shared(&table, &clock)));
        assert_eq!(send(&app, get_req("/etag")).await.body, "tagged");
        clock.advance(Duration::from_secs(30));
        let answer = send(&app, get_req("/etag")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "tagged");
        assert!(answer.from_cache);
        assert_cache_status(
            &answer.cache_status,
            "dynacache; fwd=stale; fwd-status=304; stored",
            10,
        );
        assert_eq!(calls.get(), 2);
    }

    /// Responses tagged in `Surrogate-Key` and `Cache-Tag` are purged by tag, `Vary` variants
    /// included, reading the tag's index rather than the table (the read units tell: a Scan
    /// would read the 1 MiB body stored alongside); the tag fields never reach the client
    /// unless asked for.
    pub async fn purge_by_tag_reads_the_index_not_the_table(table: Table) {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let tagged = |c: &Calls| {
            Router::new()
                .route(
                    "/product/{id}",
                    get(|State(c): State<Calls>, axum::extract::Path(id): axum::extract::Path<u32>| async move {
                        c.bump();
                        (
                            [
                                ("cache-control", "max-age=600".to_owned()),
                                ("surrogate-key", format!("product-{id} catalog")),
                            ],
                            format!("product {id}"),
                        )
                    }),
                )
                .route(
                    "/home",
                    get(|State(c): State<Calls>, headers: HeaderMap| async move {
                        c.bump();
                        let lang = headers
                            .get("accept-language")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("en")
                            .to_owned();
                        (
                            [
                                ("cache-control", "max-age=600".to_owned()),
                                ("vary", "accept-language".to_owned()),
                                ("cache-tag", "home,catalog".to_owned()),
                            ],
                            format!("home in {lang}"),
                        )
                    }),
                )
                .route(
                    "/big",
                    get(|| async {
                        (
                            [("cache-control", "max-age=600")],
                            vec![b'b'; 1 << 20],
                        )
                    }),
                )
                .with_state(c.clone())
        };
        let cache = HttpCache::builder()
            .shared(true)
            .clock(clock.clone())
            .write_wait(Duration::from_secs(60))
            .tag_fields(["Surrogate-Key", "Cache-Tag"])
            .unwrap()
            .build(table.clone())
            .unwrap();
        let app = tagged(&calls).layer(CacheLayer::new(cache.clone()));
        let home = |lang: &str| {
            Request::get("/home")
                .header("host", "app.example")
                .header("accept-language", lang)
                .body(Body::empty())
                .unwrap()
        };
        for path in ["/product/1", "/product/2", "/big"] {
            send(&app, get_req(path)).await;
        }
        send(&app, home("en")).await;
        send(&app, home("fr")).await;
        let res = app.clone().oneshot(get_req("/product/1")).await.unwrap();
        assert!(res.from_cache());
        assert!(
            !res.headers().contains_key("surrogate-key"),
            "tag fields are the cache's"
        );
        assert_eq!(calls.get(), 4);

        let before = table.consumed_capacity().read_units;
        assert_eq!(cache.purge_tag("product-1").await.unwrap(), 1);
        let read = table.consumed_capacity().read_units - before;
        assert!(read < 64.0, "a purge by tag read {read} units: it scanned");
        assert!(!send(&app, get_req("/product/1")).await.from_cache);
        assert!(send(&app, get_req("/product/2")).await.from_cache);
        assert!(send(&app, home("fr")).await.from_cache);

        // `catalog` names both products and both variants of /home; /big stays.
        assert_eq!(cache.purge_tag("catalog").await.unwrap(), 4);
        for req in [
            get_req("/product/1"),
            get_req("/product/2"),
            home("en"),
            home("fr"),
        ] {
            assert!(!send(&app, req).await.from_cache);
        }
        assert!(send(&app, get_req("/big")).await.from_cache);
        assert_eq!(cache.purge_tag("no-such-tag").await.unwrap(), 0);

        // Kept for clients on request.
        let open = tagged(&calls).layer(CacheLayer::new(cache.clone()).keep_tag_fields(true));
        let res = open.oneshot(get_req("/product/2")).await.unwrap();
        assert_eq!(res.headers()["surrogate-key"], "product-2 catalog");
    }
}

/// A table nobody can reach: the app answers every request, and `Cache-Status` tells why the
/// cache did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_table_never_fails_a_request() {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use dynacache::http::{CacheLayer, HttpCache};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let table = dynacache::Table::builder()
        .name("unreachable")
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .policy(dynacache::TablePolicy::AssumeExists)
        .open()
        .await
        .unwrap();
    let cache = HttpCache::builder().shared(true).build(table).unwrap();
    let app = Router::new()
        .route(
            "/",
            get(|| async { ([("cache-control", "max-age=60")], "from the app") }),
        )
        .layer(CacheLayer::new(cache));
    for _ in 0..3 {
        let req = Request::get("/")
            .header("host", "app.example")
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(status.contains("detail=cache-read-error"), "{status}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"from the app");
    }
}
