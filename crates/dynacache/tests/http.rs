//! The HTTP cache's conformance suite, run on every engine against a local test origin.

mod common;

conformance!(
    a_second_request_is_served_from_the_cache_byte_exact,
    expire_after_expires_responses_and_they_are_fetched_again,
    url_patterns_pick_the_expiry_and_the_first_match_wins,
    cache_control_max_age_is_honoured,
    no_store_responses_and_requests_bypass_the_cache,
    private_responses_are_stored_only_by_a_private_cache,
    immutable_responses_are_not_revalidated_while_fresh,
    a_304_refreshes_headers_and_expiry_without_rewriting_the_body,
    no_cache_responses_with_last_modified_are_revalidated_on_every_use,
    a_changed_resource_replaces_the_stored_response,
    vary_variants_are_stored_side_by_side,
    only_allowed_status_codes_are_stored,
    post_is_cached_only_when_allowed_and_keyed_by_its_body,
    matched_headers_are_part_of_the_key,
    ignored_parameters_are_left_out_of_keys_and_stored_documents,
    filter_fn_decides_what_is_stored,
    key_fn_replaces_the_key,
    always_revalidate_sends_a_conditional_request_every_time,
    stale_if_error_serves_stale_responses_when_the_origin_fails,
    stale_while_revalidate_serves_stale_and_refreshes_once,
    only_if_cached_answers_504_on_a_miss,
    refresh_and_force_refresh_per_request,
    read_only_and_disabled_caches_never_write,
    concurrent_misses_send_one_request_to_the_origin,
    refresh_ahead_revalidates_hot_responses_before_they_expire,
    fleet_single_flight_sends_one_request_for_misses_in_four_processes,
    fleet_single_flight_lets_every_process_through_when_nothing_is_stored,
    fleet_single_flight_shares_large_streamed_bodies_whole,
    a_cancelled_fleet_fetch_releases_its_lease,
    a_20_megabyte_body_is_cached_and_served_like_a_small_one,
    expires_headers_date_responses,
    small_text_bodies_are_readable_and_larger_ones_compressed,
    a_304_for_a_chunked_body_re_dates_its_chunks_without_rewriting_them,
    bodies_over_the_maximum_pass_through_uncached,
    binary_bodies_and_non_utf8_headers_round_trip,
    corrupt_items_are_misses_and_the_request_goes_to_the_origin,
    the_middleware_caches_and_honours_request_options,
    inspection_and_maintenance_stay_in_the_namespace,
    redirects_are_cached_under_the_requested_url,
    head_requests_are_cached_separately,
    huge_header_sets_are_stored_and_served,
    truncated_bodies_are_errors_and_never_cached,
    signed_responses_that_fail_verification_are_never_served,
);

mod suite {
    use std::collections::HashMap;
    use std::time::Duration;

    use aws_sdk_dynamodb::types::AttributeValue;
    use dynacache::http::{
        CacheFactsExt, CacheMiddleware, CachedClient, ExpireAfter, HttpCache, HttpCacheBuilder,
        MatchHeaders, RequestOptions, StaleWindow,
    };
    use dynacache::{Cache, ManualClock, Table};

    use crate::common::origin::{Origin, Reply};

    struct Env {
        origin: Origin,
        clock: ManualClock,
        client: CachedClient,
        table: Table,
    }

    async fn env(table: Table, f: impl FnOnce(HttpCacheBuilder) -> HttpCacheBuilder) -> Env {
        let origin = Origin::start().await;
        let clock = ManualClock::new();
        origin.follow_clock(&clock);
        let cache = // Writes land before the response returns, so each test reads what it stored.
        f(HttpCache::builder()
            .clock(clock.clone())
            .write_wait(Duration::from_secs(60)))
            .build(table.clone())
            .unwrap();
        Env {
            origin,
            clock,
            client: CachedClient::new(reqwest::Client::new(), cache),
            table,
        }
    }

    impl Env {
        async fn get(
            &self,
            path: &str,
        ) -> (
            reqwest::StatusCode,
            bool,
            Vec<u8>,
            dynacache::http::CacheFacts,
        ) {
            let res = self.client.get(self.origin.url(path)).send().await.unwrap();
            let facts = res.cache_facts();
            let status = res.status();
            (
                status,
                facts.from_cache,
                res.bytes().await.unwrap().to_vec(),
                facts,
            )
        }

        fn advance(&self, secs: u64) {
            self.clock.advance(Duration::from_secs(secs));
        }

        async fn raw(&self, key: &str) -> HashMap<String, AttributeValue> {
            self.raw_in("http", key).await
        }

        async fn raw_in(&self, namespace: &str, key: &str) -> HashMap<String, AttributeValue> {
            self.table
                .client()
                .get_item()
                .table_name(self.table.name())
                .key(
                    self.table.key_attribute(),
                    AttributeValue::S(format!("{namespace}:{key}")),
                )
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .expect("stored")
        }
    }

    pub async fn a_second_request_is_served_from_the_cache_byte_exact(table: Table) {
        let e = env(table, |b| b).await;
        let (s1, hit1, body1, facts1) = e.get("/json").await;
        let (s2, hit2, body2, facts2) = e.get("/json").await;
        assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200));
        assert!(!hit1 && hit2);
        assert_eq!(body1, body2, "byte-exact, numbers included");
        assert_eq!(e.origin.count("/json"), 1);
        assert_eq!(facts1.cache_key, facts2.cache_key);
        assert!(facts2.created_at.is_some() && facts2.expires.is_none() && !facts2.is_expired);
        let res = e.client.get(e.origin.url("/json")).send().await.unwrap();
        assert_eq!(res.url().as_str(), e.origin.url("/json"));
        assert_eq!(res.headers()["content-type"], "application/json");
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(v["price"], 12.5);
        // The stored document is readable: status, url, headers, body as text.
        let item = e.raw(facts1.cache_key.as_deref().unwrap()).await;
        assert_eq!(item["status"].as_n().unwrap(), "200");
        assert_eq!(item["url"].as_s().unwrap(), &e.origin.url("/json"));
        assert!(item["body"].as_s().unwrap().contains("12.5"));
        assert!(item["headers"].as_m().unwrap().contains_key("content-type"));
        let stats = e.client.cache().stats();
        assert_eq!((stats.hits, stats.misses, stats.stored), (2, 1, 1));
    }

    pub async fn expire_after_expires_responses_and_they_are_fetched_again(table: Table) {
        let e = env(table, |b| b.expire_after(Duration::from_secs(60))).await;
        e.get("/json").await;
        e.advance(30);
        assert!(e.get("/json").await.1);
        e.advance(31);
        let (_, hit, _, facts) = e.get("/json").await;
        assert!(!hit, "expired: fetched again");
        assert_eq!(e.origin.count("/json"), 2);
        assert!(!facts.is_expired && facts.expires.is_some());
    }

    pub async fn url_patterns_pick_the_expiry_and_the_first_match_wins(table: Table) {
        let e = env(table, |b| {
            b.expire_after(Duration::from_secs(1000))
                .url_expire_after("127.0.0.1:*/json", Duration::from_secs(5))
                .unwrap()
                .url_expire_after("127.0.0.1:*/json", ExpireAfter::Never)
                .unwrap()
                .url_expire_after("127.0.0.1:*/status/*", ExpireAfter::DoNotCache)
                .unwrap()
        })
        .await;
        e.get("/json").await;
        e.advance(6);
        assert!(!e.get("/json").await.1, "the first pattern (5 s) won");
        e.get("/status/200").await;
        assert!(!e.get("/status/200").await.1, "do not cache");
        e.get("/binary").await;
        e.advance(500);
        assert!(
            e.get("/binary").await.1,
            "the default expiry applies elsewhere"
        );
    }

    pub async fn cache_control_max_age_is_honoured(table: Table) {
        let e = env(table, |b| b.expire_after(ExpireAfter::Never)).await;
        e.get("/max-age/10").await;
        e.advance(5);
        assert!(e.get("/max-age/10").await.1);
        e.advance(6);
        assert!(!e.get("/max-age/10").await.1);
        let off = env(e.table.clone(), |b| b.namespace("off").cache_control(false)).await;
        off.get("/max-age/10").await;
        off.advance(100);
        assert!(
            off.get("/max-age/10").await.1,
            "headers ignored when cache_control is off"
        );
    }

    pub async fn no_store_responses_and_requests_bypass_the_cache(table: Table) {
        let e = env(table, |b| b).await;
        e.get("/no-store").await;
        assert!(!e.get("/no-store").await.1);
        assert_eq!(e.origin.count("/no-store"), 2);
        e.get("/json").await;
        let res = e
            .client
            .get(e.origin.url("/json"))
            .header("cache-control", "no-store")
            .send()
            .await
            .unwrap();
        assert!(!res.from_cache());
        assert_eq!(e.origin.count("/json"), 2);
    }

    pub async fn private_responses_are_stored_only_by_a_private_cache(table: Table) {
        let private = env(table.clone(), |b| b).await;
        private.get("/private").await;
        assert!(private.get("/private").await.1);
        let shared = env(table, |b| b.namespace("shared").shared(true)).await;
        shared.get("/private").await;
        assert!(!shared.get("/private").await.1);
    }

    pub async fn immutable_responses_are_not_revalidated_while_fresh(table: Table) {
        // RFC 8246: immutable means "will not change while fresh", not "fresh forever".
        let e = env(table, |b| b.always_revalidate(true)).await;
        e.get("/immutable").await;
        let (_, hit, _, facts) = e.get("/immutable").await;
        assert!(
            hit && !facts.revalidated,
            "fresh: served without asking the origin"
        );
        assert_eq!(e.origin.count("/immutable"), 1);
        e.advance(2);
        let (_, hit, _, _) = e.get("/immutable").await;
        assert!(!hit, "stale after its max-age=1, and it has no validator");
        assert_eq!(e.origin.count("/immutable"), 2);
    }

    pub async fn a_304_refreshes_headers_and_expiry_without_rewriting_the_body(table: Table) {
        let e = env(table, |b| b).await;
        let (_, _, body, facts) = e.get("/etag").await;
        let key = facts.cache_key.unwrap();
        let before = e.raw(&key).await;
        e.advance(61);
        let (_, hit, body2, facts2) = e.get("/etag").await;
        assert!(hit && facts2.revalidated, "{facts2:?}");
        assert_eq!(body, body2);
        assert_eq!(e.origin.count("/etag"), 2);
        let after = e.raw(&key).await;
        assert_eq!(
            before["w"], after["w"],
            "not rewritten: the write time is the original"
        );
        assert_ne!(before["e"], after["e"], "expiry moved");
        assert!(
            after["headers"]
                .as_m()
                .unwrap()
                .contains_key("x-revalidated")
        );
        assert!(e.get("/etag").await.1, "fresh again");
        assert_eq!(e.origin.count("/etag"), 2);
    }

    pub async fn no_cache_responses_with_last_modified_are_revalidated_on_every_use(table: Table) {
        let e = env(table, |b| b).await;
        e.get("/last-modified").await;
        for _ in 0..3 {
            let (_, hit, body, facts) = e.get("/last-modified").await;
            assert!(hit && facts.revalidated);
            assert_eq!(body, b"dated");
        }
        assert_eq!(e.origin.count("/last-modified"), 4);
    }

    pub async fn a_changed_resource_replaces_the_stored_response(table: Table) {
        let e = env(table, |b| b).await;
        e.get("/etag").await;
        e.origin
            .changed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        e.advance(61);
        let (_, hit, body, _) = e.get("/etag").await;
        assert!(!hit);
        assert!(String::from_utf8(body).unwrap().contains("v2"));
        let (_, hit, body, _) = e.get("/etag").await;
        assert!(hit && String::from_utf8(body).unwrap().contains("v2"));
    }

    pub async fn vary_variants_are_stored_side_by_side(table: Table) {
        let e = env(table, |b| b).await;
        let get = |lang: &'static str| {
            let client = e.client.clone();
            let url = e.origin.url("/vary");
            async move {
                let res = client
                    .get(url)
                    .header("accept-language", lang)
                    .send()
                    .await
                    .unwrap();
                (res.from_cache(), res.text().await.unwrap())
            }
        };
        assert_eq!(get("en").await, (false, "hello in en".into()));
        assert_eq!(get("fr").await, (false, "hello in fr".into()));
        assert_eq!(get("en").await, (true, "hello in en".into()));
        assert_eq!(get("fr").await, (true, "hello in fr".into()));
        assert_eq!(e.origin.count("/vary"), 2);
        // Deleting the URL deletes every variant, not only the index that names them.
        let cache = e.client.cache();
        assert_eq!(cache.response_count().await.unwrap(), 2);
        assert_eq!(cache.delete_urls([e.origin.url("/vary")]).await.unwrap(), 2);
        assert_eq!(cache.response_count().await.unwrap(), 0);
        assert_eq!(get("en").await, (false, "hello in en".into()));
        e.get("/vary-star").await;
        assert!(
            !e.get("/vary-star").await.1,
            "Vary: * is never served from the cache"
        );
    }

    pub async fn only_allowed_status_codes_are_stored(table: Table) {
        let e = env(table.clone(), |b| b).await;
        e.get("/status/404").await;
        assert!(!e.get("/status/404").await.1);
        let e = env(table, |b| b.namespace("codes").allowed_codes([200, 404])).await;
        e.get("/status/404").await;
        let (status, hit, _, _) = e.get("/status/404").await;
        assert!(hit && status == 404);
    }

    pub async fn post_is_cached_only_when_allowed_and_keyed_by_its_body(table: Table) {
        let e = env(table.clone(), |b| b).await;
        let post = |e: &Env, body: &'static str| {
            let req = e
                .client
                .post(e.origin.url("/echo"))
                .header("content-type", "application/json")
                .body(body);
            async move {
                let res = req.send().await.unwrap();
                (res.from_cache(), res.text().await.unwrap())
            }
        };
        post(&e, r#"{"a": 1}"#).await;
        assert!(
            !post(&e, r#"{"a": 1}"#).await.0,
            "POST is not cached by default"
        );
        let e = env(table, |b| {
            b.namespace("post")
                .allowed_methods([reqwest::Method::GET, reqwest::Method::POST])
        })
        .await;
        post(&e, r#"{"a": 1, "b": [1, 2]}"#).await;
        assert_eq!(
            post(&e, r#"{"b":[1,2],"a":1,"api_key":"x"}"#).await,
            (true, r#"{"a": 1, "b": [1, 2]}"#.to_owned()),
            "same JSON, keys in another order: a hit, with the first body"
        );
        assert!(
            !post(&e, r#"{"a": 1, "b": [2, 1]}"#).await.0,
            "list order matters"
        );
        assert_eq!(e.origin.count("/echo"), 2);
    }

    pub async fn matched_headers_are_part_of_the_key(table: Table) {
        let e = env(table, |b| {
            b.match_headers(MatchHeaders::Only(vec!["x-tenant".parse().unwrap()]))
        })
        .await;
        let get = |tenant: &'static str| {
            let req = e
                .client
                .get(e.origin.url("/json"))
                .header("x-tenant", tenant);
            async move { req.send().await.unwrap().from_cache() }
        };
        assert!(!get("a").await);
        assert!(!get("b").await);
        assert!(get("a").await);
        assert!(get("b").await);
    }

    pub async fn ignored_parameters_are_left_out_of_keys_and_stored_documents(table: Table) {
        let e = env(table, |b| b).await;
        let res = e
            .client
            .get(e.origin.url("/json?api_key=secret1&page=2"))
            .header("authorization", "Bearer secret2")
            .header("x-trace", "t")
            .send()
            .await
            .unwrap();
        let key = res.cache_facts().cache_key.unwrap();
        let res = e
            .client
            .get(e.origin.url("/json?page=2&api_key=other"))
            .send()
            .await
            .unwrap();
        assert!(res.from_cache(), "same key without the ignored parameters");
        let item = e.raw(&key).await;
        let dump = format!("{item:?}");
        assert!(
            !dump.contains("secret1") && !dump.contains("secret2"),
            "{dump}"
        );
        assert!(dump.contains("x-trace"), "other request headers are kept");
        assert_eq!(item["url"].as_s().unwrap(), &e.origin.url("/json?page=2"));
    }

    pub async fn filter_fn_decides_what_is_stored(table: Table) {
        let e = env(table, |b| {
            b.filter_fn(|res| {
                res.headers
                    .get("content-type")
                    .is_none_or(|v| v != "text/plain")
            })
        })
        .await;
        e.get("/vary").await;
        assert!(!e.get("/vary").await.1);
        e.get("/json").await;
        assert!(e.get("/json").await.1);
    }

    pub async fn key_fn_replaces_the_key(table: Table) {
        let e = env(table, |b| {
            b.key_fn(|req, _| format!("path:{}", req.uri.path()))
        })
        .await;
        let (_, _, _, facts) = e.get("/json?x=1").await;
        assert_eq!(facts.cache_key.as_deref(), Some("path:/json"));
        assert!(
            e.get("/json?x=2").await.1,
            "the custom key ignores the query"
        );
    }

    pub async fn always_revalidate_sends_a_conditional_request_every_time(table: Table) {
        let e = env(table, |b| b.always_revalidate(true)).await;
        e.get("/etag").await;
        let (_, hit, _, facts) = e.get("/etag").await;
        assert!(hit && facts.revalidated);
        assert_eq!(e.origin.count("/etag"), 2);
    }

    pub async fn stale_if_error_serves_stale_responses_when_the_origin_fails(table: Table) {
        let e = env(table.clone(), |b| {
            b.expire_after(Duration::from_secs(10))
                .stale_if_error(StaleWindow::Max(Duration::from_secs(100)))
        })
        .await;
        e.get("/json").await;
        e.advance(20);
        e.origin.fail(true);
        let (status, hit, body, facts) = e.get("/json").await;
        assert!(status == 200 && hit && facts.stale, "{facts:?}");
        assert!(String::from_utf8(body).unwrap().contains("12.5"));
        e.advance(200);
        let (status, hit, _, _) = e.get("/json").await;
        assert!(
            status == 500 && !hit,
            "past the window the error passes through"
        );
        let strict = env(table, |b| {
            b.namespace("strict").expire_after(Duration::from_secs(10))
        })
        .await;
        strict.get("/json").await;
        strict.advance(20);
        strict.origin.fail(true);
        assert_eq!(strict.get("/json").await.0, 500);
    }

    pub async fn stale_while_revalidate_serves_stale_and_refreshes_once(table: Table) {
        let e = env(table, |b| {
            b.expire_after(Duration::from_secs(10))
                .stale_while_revalidate(StaleWindow::Always)
        })
        .await;
        e.get("/slow").await;
        e.advance(20);
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = e.client.clone();
            let url = e.origin.url("/slow");
            tasks.push(tokio::spawn(async move {
                client.get(url).send().await.unwrap().cache_facts()
            }));
        }
        for t in tasks {
            let facts = t.await.unwrap();
            assert!(facts.from_cache && facts.stale);
        }
        let _ = started;
        // Wait for the one background refresh to land.
        for _ in 0..100 {
            if e.origin.count("/slow") == 2 && e.client.cache().stats().stored == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            e.origin.count("/slow"),
            2,
            "one refresh for eight stale hits"
        );
        let (_, hit, _, facts) = e.get("/slow").await;
        assert!(hit && !facts.stale, "refreshed");
    }

    pub async fn only_if_cached_answers_504_on_a_miss(table: Table) {
        let e = env(table, |b| b).await;
        let res = e
            .client
            .get(e.origin.url("/json"))
            .only_if_cached()
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 504);
        assert_eq!(e.origin.count("/json"), 0);
        e.get("/json").await;
        let res = e
            .client
            .get(e.origin.url("/json"))
            .only_if_cached()
            .send()
            .await
            .unwrap();
        assert!(res.status() == 200 && res.from_cache());
    }

    pub async fn refresh_and_force_refresh_per_request(table: Table) {
        let e = env(table, |b| b).await;
        e.get("/etag").await;
        let res = e
            .client
            .get(e.origin.url("/etag"))
            .refresh()
            .send()
            .await
            .unwrap();
        assert!(res.cache_facts().revalidated);
        let res = e
            .client
            .get(e.origin.url("/etag"))
            .force_refresh()
            .send()
            .await
            .unwrap();
        assert!(!res.from_cache());
        assert_eq!(e.origin.count("/etag"), 3);
        let res = e
            .client
            .get(e.origin.url("/etag"))
            .disable_cache()
            .send()
            .await
            .unwrap();
        assert!(!res.from_cache());
        assert_eq!(e.origin.count("/etag"), 4);
        // DoNotCache is the fallback for responses without explicit freshness: /etag says
        // max-age=60, which wins (the response's headers come first).
        let res = e
            .client
            .get(e.origin.url("/etag"))
            .expire_after(ExpireAfter::DoNotCache)
            .send()
            .await
            .unwrap();
        assert!(res.from_cache());
        let stored = e.client.cache().stats().stored;
        let res = e
            .client
            .get(e.origin.url("/binary"))
            .expire_after(ExpireAfter::DoNotCache)
            .send()
            .await
            .unwrap();
        assert!(!res.from_cache());
        assert_eq!(
            e.client.cache().stats().stored,
            stored,
            "no explicit freshness and DoNotCache: not stored"
        );
        assert_eq!(e.origin.count("/etag"), 4);
    }

    pub async fn read_only_and_disabled_caches_never_write(table: Table) {
        let e = env(table.clone(), |b| b.read_only(true)).await;
        e.get("/json").await;
        assert!(!e.get("/json").await.1);
        assert_eq!(e.client.cache().response_count().await.unwrap(), 0);
        let e = env(table, |b| b).await;
        e.client.cache().set_enabled(false);
        e.get("/json").await;
        assert_eq!(e.client.cache().response_count().await.unwrap(), 0);
        e.client.cache().set_enabled(true);
        e.get("/json").await;
        assert!(e.get("/json").await.1);
    }

    pub async fn concurrent_misses_send_one_request_to_the_origin(table: Table) {
        let e = env(table, |b| b).await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let client = e.client.clone();
            let url = e.origin.url("/slow");
            tasks.push(tokio::spawn(async move {
                let res = client.get(url).send().await.unwrap();
                res.text().await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "slow");
        }
        assert_eq!(e.origin.count("/slow"), 1);
        assert_eq!(e.client.cache().stats().coalesced, 9);
    }

    /// `refresh_ahead`: hits near expiry (scaled by how long the origin took) refresh the
    /// response in the background while being served from the cache; without it, nothing is
    /// refreshed before expiry.
    pub async fn refresh_ahead_revalidates_hot_responses_before_they_expire(table: Table) {
        for on in [true, false] {
            let e = env(table.clone(), |b| {
                if on { b.refresh_ahead(100_000.0) } else { b }
            })
            .await;
            let path = "/max-age/10";
            assert!(!e.get(path).await.1);
            // Half the lifetime left: with a 1 ms fetch time and beta 100,000, each hit
            // refreshes with probability 1 - exp(-0.05) (about 0.95).
            e.clock.advance(Duration::from_secs(5));
            for _ in 0..20 {
                let (status, from_cache, _, _) = e.get(path).await;
                assert_eq!(status, 200);
                assert!(from_cache, "hits are served from the cache meanwhile");
                if e.origin.count(path) > 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The background refresh lands and is stored (bounded wait, not a measurement).
            for _ in 0..100 {
                if (e.origin.count(path) > 1 && e.client.cache().stats().stored > 1) || !on {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if on {
                // (A beta this large may refresh the refreshed response again.)
                assert!(e.origin.count(path) >= 2, "refreshed ahead of expiry");
                e.client.cache().flush().await;
                // Refreshed: fresh for 10 s from now, beyond the first expiry.
                e.clock.advance(Duration::from_secs(7));
                assert!(e.get(path).await.1);
            } else {
                assert_eq!(e.origin.count(path), 1, "no refresh without refresh_ahead");
            }
        }
    }

    /// Four caches on one table, as four processes of a fleet, each with its own in-process
    /// coalescing: 64 concurrent misses of one URL, 16 in each, reach the origin once.
    pub async fn fleet_single_flight_sends_one_request_for_misses_in_four_processes(table: Table) {
        let origin = Origin::start().await;
        let flight = dynacache::FleetSingleFlight::new(Duration::from_secs(30));
        let clients: Vec<CachedClient> = (0..4)
            .map(|_| {
                let cache = HttpCache::builder()
                    .fleet_single_flight(flight)
                    .write_wait(Duration::from_secs(60))
                    .build(table.clone())
                    .unwrap();
                CachedClient::new(reqwest::Client::new(), cache)
            })
            .collect();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let client = clients[i % 4].clone();
            let url = origin.url("/slow");
            tasks.push(tokio::spawn(async move {
                let res = client.get(url).send().await.unwrap();
                res.text().await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "slow");
        }
        assert_eq!(origin.count("/slow"), 1);
        let coalesced: u64 = clients.iter().map(|c| c.cache().stats().coalesced).sum();
        assert_eq!(coalesced, 63);
        // Later misses of other URLs each take and release the lease in turn.
        for path in ["/json", "/etag"] {
            for c in &clients {
                let res = c.get(origin.url(path)).send().await.unwrap();
                assert!(res.status().is_success());
            }
            assert_eq!(origin.count(path), 1, "{path}");
        }
    }

    /// A large body (streamed from its chunks on hits) stored by one process of a fleet:
    /// the requests waiting in the others, and those coalesced behind them, each get the whole
    /// body (streamed), never an empty one.
    pub async fn fleet_single_flight_shares_large_streamed_bodies_whole(table: Table) {
        let origin = Origin::start().await;
        let mut rng = fastrand::Rng::with_seed(11);
        let body: Vec<u8> = (0..6 * 1024 * 1024).map(|_| rng.u8(..)).collect();
        let path = origin.respond(
            "big",
            Reply::ok(body.clone())
                .header("cache-control", "max-age=600")
                .delay(Duration::from_millis(300)),
        );
        let flight = dynacache::FleetSingleFlight::new(Duration::from_secs(30));
        let clients: Vec<CachedClient> = (0..3)
            .map(|_| {
                let cache = HttpCache::builder()
                    .fleet_single_flight(flight)
                    .write_wait(Duration::from_secs(60))
                    .build(table.clone())
                    .unwrap();
                CachedClient::new(reqwest::Client::new(), cache)
            })
            .collect();
        let mut tasks = Vec::new();
        for i in 0..9 {
            let client = clients[i % 3].clone();
            let url = origin.url(&path);
            tasks.push(tokio::spawn(async move {
                let res = client.get(url).send().await.unwrap();
                res.bytes().await.unwrap()
            }));
        }
        for t in tasks {
            let got = t.await.unwrap();
            assert!(got == body, "a whole body, {} bytes", got.len());
        }
        assert_eq!(origin.count(&path), 1);
    }

    /// A response that may not be stored: the processes waiting on the lease go ahead when the
    /// leader releases it, every request gets its answer from the origin.
    pub async fn fleet_single_flight_lets_every_process_through_when_nothing_is_stored(
        table: Table,
    ) {
        let origin = Origin::start().await;
        let path = origin.respond(
            "private",
            Reply::ok("not for the cache")
                .header("cache-control", "no-store")
                .delay(Duration::from_millis(200)),
        );
        let flight = dynacache::FleetSingleFlight::new(Duration::from_secs(600));
        let clients: Vec<CachedClient> = (0..4)
            .map(|_| {
                let cache = HttpCache::builder()
                    .fleet_single_flight(flight)
                    .build(table.clone())
                    .unwrap();
                CachedClient::new(reqwest::Client::new(), cache)
            })
            .collect();
        let mut tasks = Vec::new();
        for c in &clients {
            let client = c.clone();
            let url = origin.url(&path);
            tasks.push(tokio::spawn(async move {
                let res = client.get(url).send().await.unwrap();
                (res.status(), res.text().await.unwrap())
            }));
        }
        for t in tasks {
            // With a 10-minute lease, only the release lets the others through: a hang here
            // (caught by the suite's guard) would mean they waited for the lease to expire.
            let (status, body) = tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("waiting processes were let through")
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(body, "not for the cache");
        }
        assert_eq!(origin.count(&path), 4);
    }

    /// A request cancelled while it fetches for the fleet (its client hung up) ends its lease:
    /// the other processes do not wait it out.
    pub async fn a_cancelled_fleet_fetch_releases_its_lease(table: Table) {
        let origin = Origin::start().await;
        let path = origin.respond(
            "slowly",
            Reply::ok("at last")
                .header("cache-control", "max-age=60")
                .delay(Duration::from_secs(1)),
        );
        let flight = dynacache::FleetSingleFlight::new(Duration::from_secs(600));
        let client = |table: Table| {
            let cache = HttpCache::builder()
                .fleet_single_flight(flight)
                .build(table)
                .unwrap();
            CachedClient::new(reqwest::Client::new(), cache)
        };
        let (leader, follower) = (client(table.clone()), client(table));
        let fetch = {
            let url = origin.url(&path);
            tokio::spawn(async move { leader.get(url).send().await.map(|_| ()) })
        };
        // The leader holds the lease once its request reached the origin.
        tokio::time::timeout(Duration::from_secs(30), async {
            while origin.count(&path) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the leader's request reached the origin");
        fetch.abort();
        assert!(fetch.await.unwrap_err().is_cancelled());
        // Held, the 10-minute lease would keep the follower waiting.
        let res = tokio::time::timeout(
            Duration::from_secs(60),
            follower.get(origin.url(&path)).send(),
        )
        .await
        .expect("the follower was let through")
        .unwrap();
        assert_eq!(res.text().await.unwrap(), "at last");
        assert_eq!(origin.count(&path), 2);
    }

    pub async fn a_20_megabyte_body_is_cached_and_served_like_a_small_one(table: Table) {
        let e = env(table, |b| b).await;
        // A compressible one (stored compressed) and an incompressible one (stored in chunks).
        for path in [
            format!("/large/{}", 20 * 1024 * 1024),
            format!("/random/{}", 20 * 1024 * 1024),
        ] {
            let (_, _, first, _) = e.get(&path).await;
            let (_, hit, second, _) = e.get(&path).await;
            assert!(hit, "{path}");
            assert_eq!(first.len(), 20 * 1024 * 1024);
            assert!(first == second, "byte-exact: {path}");
        }
        let stats = e.client.cache().storage_stats().await.unwrap();
        assert_eq!(stats.chunked_entries, 1, "{stats:?}");
        assert!(
            stats.chunk_items >= 20 * 1024 * 1024 / (350 * 1024),
            "{stats:?}"
        );
        assert_eq!(e.origin.count(&format!("/random/{}", 20 * 1024 * 1024)), 1);
    }

    pub async fn small_text_bodies_are_readable_and_larger_ones_compressed(table: Table) {
        let e = env(table.clone(), |b| b).await;
        let (_, _, small, facts) = e.get("/json").await;
        let item = e.raw(facts.cache_key.as_deref().unwrap()).await;
        assert_eq!(item["body"].as_s().unwrap().as_bytes(), small.as_slice());
        let (_, _, large, facts) = e.get("/json-size/20000").await;
        assert!(large.len() >= 19_000);
        let item = e.raw(facts.cache_key.as_deref().unwrap()).await;
        assert!(
            !item.contains_key("body"),
            "20 KB of JSON is not stored as a string"
        );
        let stored = item["v"].as_b().unwrap().as_ref().len();
        assert!(stored < large.len() / 4, "compressed: {stored} bytes");
        let (_, hit, again, _) = e.get("/json-size/20000").await;
        assert!(hit);
        assert_eq!(again, large, "byte-exact");
        // Readable up to 64 KiB on request.
        let readable = env(table, |b| {
            b.namespace("readable").readable_body_max(64 * 1024)
        })
        .await;
        let (_, _, _, facts) = readable.get("/json-size/20000").await;
        let item = readable
            .raw_in("readable", facts.cache_key.as_deref().unwrap())
            .await;
        assert_eq!(item["body"].as_s().unwrap().len(), large.len());
    }

    pub async fn a_304_for_a_chunked_body_re_dates_its_chunks_without_rewriting_them(table: Table) {
        let e = env(table.clone(), |b| b).await;
        let path = "/random-etag/1500000";
        let (_, _, body, facts) = e.get(path).await;
        let key = facts.cache_key.unwrap();
        let head = e.raw(&key).await;
        let version = head["cv"].as_s().unwrap().clone();
        let chunk = |ttl_of: &'static str| {
            let table = table.clone();
            let version = version.clone();
            async move {
                let item = table
                    .client()
                    .get_item()
                    .table_name(table.name())
                    .key(
                        table.key_attribute(),
                        AttributeValue::S(format!("http!{version}!0")),
                    )
                    .consistent_read(true)
                    .send()
                    .await
                    .unwrap()
                    .item
                    .unwrap_or_else(|| panic!("chunk 0 of {version} ({ttl_of})"));
                item[table.ttl_attribute()].as_n().unwrap().clone()
            }
        };
        assert_eq!(
            &chunk("stored").await,
            head[table.ttl_attribute()].as_n().unwrap()
        );
        e.advance(3600);
        let (_, hit, again, facts) = e.get(path).await;
        assert!(hit && facts.revalidated, "a 304 refreshed it: {facts:?}");
        assert!(again == body, "byte-exact");
        let after = e.raw(&key).await;
        assert_eq!(
            after["cv"].as_s().unwrap(),
            &version,
            "the chunks were not rewritten"
        );
        let new_ttl = after[table.ttl_attribute()].as_n().unwrap();
        assert_ne!(new_ttl, head[table.ttl_attribute()].as_n().unwrap());
        assert_eq!(
            &chunk("after the 304").await,
            new_ttl,
            "the chunks follow the head's TTL"
        );
        // reset_expiration re-dates the chunks too.
        e.client
            .cache()
            .reset_expiration(ExpireAfter::After(Duration::from_secs(7 * 86400)))
            .await
            .unwrap();
        let reset = e.raw(&key).await;
        assert_eq!(
            &chunk("after reset_expiration").await,
            reset[table.ttl_attribute()].as_n().unwrap()
        );
        assert!(e.get(path).await.1);
        assert_eq!(e.origin.count(path), 2);
    }

    pub async fn expires_headers_date_responses(table: Table) {
        let e = env(table, |b| b.expire_after(ExpireAfter::Never)).await;
        e.get("/expires/30").await;
        e.advance(20);
        assert!(e.get("/expires/30").await.1, "fresh until Expires");
        e.advance(15);
        assert!(!e.get("/expires/30").await.1, "fetched again after Expires");
        assert_eq!(e.origin.count("/expires/30"), 2);
    }

    pub async fn bodies_over_the_maximum_pass_through_uncached(table: Table) {
        let e = env(table, |b| b.max_body_size(1000)).await;
        let (_, _, body, _) = e.get("/large/5000").await;
        assert_eq!(body.len(), 5000, "the whole body reaches the caller");
        assert!(!e.get("/large/5000").await.1);
        assert!(e.get("/large/500").await.1 || e.get("/large/500").await.1);
    }

    pub async fn binary_bodies_and_non_utf8_headers_round_trip(table: Table) {
        let e = env(table, |b| b).await;
        let (_, _, body, _) = e.get("/binary").await;
        let (_, hit, cached, _) = e.get("/binary").await;
        assert!(hit && body == cached && body == [0u8, 0xff, 0xfe, 0x80, 10, 13]);
        e.get("/latin1-header").await;
        let res = e
            .client
            .get(e.origin.url("/latin1-header"))
            .send()
            .await
            .unwrap();
        assert!(res.from_cache());
        assert_eq!(res.headers()["x-latin1"].as_bytes(), b"caf\xe9");
    }

    pub async fn corrupt_items_are_misses_and_the_request_goes_to_the_origin(table: Table) {
        let e = env(table, |b| b).await;
        let (_, _, _, facts) = e.get("/json").await;
        let key = facts.cache_key.unwrap();
        let mut item = e.raw(&key).await;
        item.insert("status".into(), AttributeValue::S("garbage".into()));
        e.table
            .client()
            .put_item()
            .table_name(e.table.name())
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
        let (status, hit, _, _) = e.get("/json").await;
        assert!(status == 200 && !hit);
        assert!(e.client.cache().stats().storage_errors >= 1);
        assert!(
            e.get("/json").await.1,
            "and the fresh response replaced the corrupt one"
        );
    }

    pub async fn the_middleware_caches_and_honours_request_options(table: Table) {
        let origin = Origin::start().await;
        let cache = HttpCache::builder().build(table).unwrap();
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(CacheMiddleware::new(cache.clone()))
            .build();
        let url = origin.url("/etag");
        assert!(!client.get(&url).send().await.unwrap().from_cache());
        assert!(client.get(&url).send().await.unwrap().from_cache());
        let res = client
            .get(&url)
            .with_extension(RequestOptions {
                refresh: true,
                ..Default::default()
            })
            .send()
            .await
            .unwrap();
        assert!(res.cache_facts().revalidated);
        assert_eq!(origin.count("/etag"), 2);
        assert_eq!(cache.response_count().await.unwrap(), 1);
    }

    pub async fn inspection_and_maintenance_stay_in_the_namespace(table: Table) {
        let e = env(table.clone(), |b| b.expire_after(Duration::from_secs(100))).await;
        let kv = Cache::new(table.clone()).unwrap();
        kv.set("other", "tenant").await.unwrap();
        for p in ["/json", "/binary", "/status/200", "/vary"] {
            e.get(p).await;
        }
        let cache = e.client.cache();
        assert_eq!(cache.response_count().await.unwrap(), 4);
        let urls = cache.urls().await.unwrap();
        assert_eq!(urls.len(), 4);
        assert!(urls.contains(&e.origin.url("/json")));
        assert!(cache.contains_url(&e.origin.url("/json")).await.unwrap());
        assert_eq!(cache.delete_urls([e.origin.url("/json")]).await.unwrap(), 1);
        assert!(!cache.contains_url(&e.origin.url("/json")).await.unwrap());
        assert_eq!(cache.keys().await.unwrap().len(), 3);
        e.advance(150);
        assert_eq!(
            cache
                .reset_expiration(ExpireAfter::After(Duration::from_secs(60)))
                .await
                .unwrap(),
            3
        );
        assert!(
            e.get("/binary").await.1,
            "fresh again after reset_expiration"
        );
        e.advance(61);
        assert_eq!(cache.delete_expired().await.unwrap(), 3);
        assert_eq!(cache.response_count().await.unwrap(), 0);
        e.get("/json").await;
        e.advance(10);
        e.get("/binary").await;
        assert_eq!(
            cache
                .delete_older_than(Duration::from_secs(5))
                .await
                .unwrap(),
            1
        );
        assert_eq!(cache.urls().await.unwrap(), vec![e.origin.url("/binary")]);
        assert!(cache.clear().await.unwrap() >= 1);
        assert_eq!(cache.response_count().await.unwrap(), 0);
        assert_eq!(
            kv.get::<String>("other").await.unwrap().as_deref(),
            Some("tenant")
        );
    }

    pub async fn redirects_are_cached_under_the_requested_url(table: Table) {
        let e = env(table, |b| b).await;
        let res = e
            .client
            .get(e.origin.url("/redirect"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.url().as_str(), e.origin.url("/json"));
        let res = e
            .client
            .get(e.origin.url("/redirect"))
            .send()
            .await
            .unwrap();
        assert!(res.from_cache());
        assert_eq!(
            res.url().as_str(),
            e.origin.url("/json"),
            "the final URL is kept"
        );
        assert_eq!(e.origin.count("/redirect"), 1);
        // Another process (another cache on the same table) asking for the final URL is served
        // through the alias stored in the table.
        let other = HttpCache::builder()
            .clock(e.clock.clone())
            .build(e.table.clone())
            .unwrap();
        let other = CachedClient::new(reqwest::Client::new(), other);
        let res = other.get(e.origin.url("/json")).send().await.unwrap();
        assert!(res.from_cache(), "the alias names the stored response");
        assert_eq!(
            res.text().await.unwrap(),
            r#"{"id": 1, "price": 12.5, "tags": ["a", "b"]}"#
        );
        assert_eq!(
            e.origin.count("/json"),
            1,
            "only the first redirect reached /json"
        );
    }

    pub async fn huge_header_sets_are_stored_and_served(table: Table) {
        let e = env(table, |b| b).await;
        e.get("/huge-headers").await;
        let res = e
            .client
            .get(e.origin.url("/huge-headers"))
            .send()
            .await
            .unwrap();
        assert!(
            res.from_cache(),
            "320 KB of headers and a 150 KB body fit (the body is chunked)"
        );
        assert_eq!(res.headers()["x-big-79"].len(), 4000);
        assert_eq!(res.bytes().await.unwrap().len(), 150_000);
    }

    pub async fn truncated_bodies_are_errors_and_never_cached(table: Table) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/truncated", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")
                    .await;
                // Closing here leaves 90 promised bytes unsent.
            }
        });
        let e = env(table, |b| b).await;
        for _ in 0..2 {
            let res = e.client.get(&url).send().await.unwrap();
            assert!(!res.from_cache());
            assert!(
                res.bytes().await.is_err(),
                "the truncation reaches the caller as an error"
            );
        }
        assert_eq!(
            served.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "never cached"
        );
        assert_eq!(e.client.cache().response_count().await.unwrap(), 0);
    }

    pub async fn signed_responses_that_fail_verification_are_never_served(table: Table) {
        let origin = Origin::start().await;
        let clock = ManualClock::new();
        origin.follow_clock(&clock);
        let client = |keys: &[&str]| {
            let cache = HttpCache::builder()
                .clock(clock.clone())
                .secret_keys(keys.iter().copied())
                .build(table.clone())
                .unwrap();
            CachedClient::new(reqwest::Client::new(), cache)
        };
        let get = |c: &CachedClient, path: &str| {
            let req = c.get(origin.url(path));
            async move {
                let res = req.send().await.unwrap();
                let facts = res.cache_facts();
                (facts, res.text().await.unwrap())
            }
        };
        let old = client(&["old-key"]);
        let (facts, _) = get(&old, "/json").await;
        let key = facts.cache_key.unwrap();
        assert!(get(&old, "/json").await.0.from_cache);
        // Rotation: the new key signs, the old one still verifies.
        let rotated = client(&["new-key", "old-key"]);
        assert!(get(&rotated, "/json").await.0.from_cache);
        let new_only = client(&["new-key"]);
        assert!(
            !get(&new_only, "/json").await.0.from_cache,
            "signed by a retired key"
        );
        assert_eq!(new_only.cache().stats().verification_failures, 1);
        // The refetch was signed with the new key.
        assert!(get(&new_only, "/json").await.0.from_cache);
        // Tampering with the stored body makes it a miss, never served: a tamperer who also
        // recomputes the body's checksum still cannot forge the signature.
        let pk = AttributeValue::S(format!("http:{key}"));
        let forged = r#"{"id": 1, "price": 99.9, "tags": ["a", "b"]}"#;
        let sum = {
            use sha2::Digest;
            sha2::Sha256::digest(forged.as_bytes())[..16].to_vec()
        };
        table
            .client()
            .update_item()
            .table_name(table.name())
            .key(table.key_attribute(), pk)
            .update_expression("SET body = :b, #sum = :s")
            .expression_attribute_names("#sum", "sum")
            .expression_attribute_values(":b", AttributeValue::S(forged.into()))
            .expression_attribute_values(":s", AttributeValue::B(sum.into()))
            .send()
            .await
            .unwrap();
        let (facts, body) = get(&new_only, "/json").await;
        assert!(!facts.from_cache && body.contains("12.5"), "{body}");
        // A 304 revalidation re-signs the updated headers.
        get(&new_only, "/etag").await;
        clock.advance(Duration::from_secs(61));
        assert!(get(&new_only, "/etag").await.0.revalidated);
        assert!(
            get(&new_only, "/etag").await.0.from_cache,
            "still verifies after the update"
        );
        assert_eq!(new_only.cache().stats().verification_failures, 2);
    }

    pub async fn head_requests_are_cached_separately(table: Table) {
        let e = env(table, |b| b).await;
        let head = || async {
            let res = e.client.head(e.origin.url("/json")).send().await.unwrap();
            (res.from_cache(), res.bytes().await.unwrap().len())
        };
        assert_eq!(head().await, (false, 0));
        assert_eq!(head().await, (true, 0));
        assert!(!e.get("/json").await.1, "a GET is another key");
    }
}

#[test]
fn the_blocking_client_caches_without_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(common::origin::Origin::start());
    let mut engines = 0;
    for engine in [common::Engine::Embedded, common::Engine::DynamoDbLocal] {
        let Some(b) = common::builder(engine) else {
            continue;
        };
        let client =
            dynacache::http::blocking::CachedClient::open(b, dynacache::http::HttpCache::builder())
                .unwrap();
        let first = client.get(&origin.url("/json")).unwrap();
        let second = client.get(&origin.url("/json")).unwrap();
        assert!(!first.from_cache && second.from_cache);
        assert_eq!(first.body, second.body);
        let v: serde_json::Value = second.json().unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(client.block_on(client.cache().response_count()).unwrap(), 1);
        engines += 1;
    }
    assert_eq!(
        origin.count("/json"),
        engines,
        "one origin request per engine"
    );
}

#[tokio::test]
async fn a_storage_failure_never_fails_the_request() {
    let origin = common::origin::Origin::start().await;
    // A table that does not exist, on an engine that answers: every storage call fails.
    let table = Table::builder()
        .policy(dynacache::TablePolicy::AssumeExists)
        .name("missing_table")
        .open()
        .await
        .unwrap();
    let cache = dynacache::http::HttpCache::builder().build(table).unwrap();
    let client = dynacache::http::CachedClient::new(reqwest::Client::new(), cache.clone());
    for _ in 0..2 {
        let res = client.get(origin.url("/json")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("12.5"));
    }
    assert_eq!(origin.count("/json"), 2);
    assert!(cache.stats().storage_errors >= 4, "{:?}", cache.stats());
    // And an unreachable endpoint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let table = Table::builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .max_attempts(1)
        .policy(dynacache::TablePolicy::AssumeExists)
        .open()
        .await
        .unwrap();
    let client = dynacache::http::CachedClient::new(
        reqwest::Client::new(),
        dynacache::http::HttpCache::builder().build(table).unwrap(),
    );
    let res = client.get(origin.url("/json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

use dynacache::Table;
