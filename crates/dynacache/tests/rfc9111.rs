//! RFC 9111 end to end: each behaviour of the HTTP cache engine, through the reqwest
//! `CachedClient` (and the middleware), against the scripted test origin, on every engine.

mod common;

conformance!(
    // Age (§4.2.3, §5.1).
    a_hit_carries_the_stored_age_plus_its_time_in_the_cache,
    an_age_list_is_read_as_its_first_member_and_can_make_a_response_stale_on_arrival,
    an_invalid_age_is_ignored,
    // Invalidation (§4.4).
    unsafe_and_unknown_methods_invalidate_the_stored_response_of_their_url,
    an_unsafe_request_answered_with_an_error_invalidates_nothing,
    same_origin_location_and_content_location_are_invalidated_and_other_origins_never,
    an_invalidation_through_one_cache_is_seen_by_another_on_the_same_table,
    an_invalidation_removes_every_variant_of_a_vary_url,
    // Client conditionals (§4.3.2).
    a_client_if_none_match_is_answered_304_from_the_cache_with_weak_comparison,
    a_client_if_modified_since_is_answered_from_the_cache_and_if_none_match_takes_precedence,
    a_conditional_request_that_misses_is_answered_from_the_freshly_stored_response,
    // Heuristic freshness (§4.2.2).
    a_shared_cache_keeps_a_last_modified_response_fresh_for_a_tenth_of_its_age,
    the_heuristic_freshness_setting_caps_the_lifetime,
    a_response_without_freshness_or_validator_is_stored_only_by_a_private_cache,
    // Storable (§3).
    a_shared_cache_stores_error_and_unusual_statuses_with_explicit_freshness,
    allowed_codes_narrows_what_a_shared_cache_stores,
    a_404_without_explicit_freshness_is_stored_by_a_shared_cache_only_with_last_modified,
    must_understand_overrides_no_store_only_for_understood_statuses,
    // Stale responses (§4.2.4, RFC 5861).
    stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background,
    stale_if_error_serves_the_stale_response_when_the_origin_answers_500,
    a_cache_wide_stale_if_error_never_overrides_must_revalidate_no_cache_or_proxy_revalidate,
    // Directives (§5.2).
    response_directive_names_are_case_insensitive,
    qualified_no_cache_fields_are_not_served_from_the_cache,
    qualified_private_fields_are_not_stored_by_a_shared_cache,
    // Dates (§5.3, RFC 9110 §5.6.7).
    expires_in_rfc850_and_asctime_forms_is_honoured,
    an_invalid_expires_means_already_expired,
    expires_is_ignored_when_max_age_or_a_shared_s_maxage_is_present,
    // Request directives (§5.2.1).
    a_request_max_age_refuses_an_older_response,
    a_request_max_stale_accepts_a_stale_response_within_its_bound,
    a_request_min_fresh_needs_that_much_freshness_left,
    a_request_no_cache_revalidates_a_fresh_response,
    a_request_no_store_neither_reads_nor_writes_the_cache,
    a_request_only_if_cached_answers_504_on_a_miss_and_the_stored_response_on_a_hit,
    // Vary (§4.1).
    vary_matches_request_headers_that_mean_the_same,
    // Ranges (RFC 9110 §14).
    byte_ranges_are_answered_from_the_stored_response,
    a_partial_range_that_misses_goes_to_the_origin_as_a_range,
    a_whole_range_that_misses_is_fetched_whole_stored_and_answered_206,
    a_range_inside_a_chunked_body_is_byte_exact,
    a_range_of_a_chunked_body_reads_only_the_chunks_it_needs,
    // Coalescing.
    sixty_four_concurrent_misses_send_one_request_to_the_origin,
    concurrent_misses_for_different_variants_each_get_their_own,
    a_coalesced_response_is_not_shared_with_a_request_that_may_not_store_it,
    // Settings.
    set_cookie_responses_follow_the_set_cookie_setting,
    do_not_cache_stores_only_responses_with_explicit_freshness,
    keys_over_two_kilobytes_are_hashed_and_still_listed_counted_and_deleted,
    the_middleware_invalidates_on_post_and_answers_conditionals_with_304,
    // Races and trust.
    a_304_never_updates_a_response_another_process_replaced_meanwhile,
    a_shared_cache_does_not_store_a_response_the_client_was_redirected_to,
    a_redirect_alias_never_replaces_a_response_stored_for_the_final_url,
    method_override_headers_only_ever_turn_caching_off,
    requests_with_preconditions_on_the_resource_go_to_the_origin,
);

mod suite {
    use std::time::{Duration, SystemTime};

    use dynacache::http::{
        CacheFacts, CacheFactsExt, CacheMiddleware, CachedClient, ExpireAfter, HttpCache,
        HttpCacheBuilder, SetCookie, StaleWindow,
    };
    use dynacache::{ManualClock, Table};
    use futures::TryStreamExt;
    use reqwest::Method;

    use crate::common::origin::{Origin, Reply, ScriptRequest};

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

    /// A response read to the end.
    #[derive(Debug)]
    struct Got {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
        facts: CacheFacts,
    }

    impl Got {
        async fn read(res: reqwest::Response) -> Got {
            let facts = res.cache_facts();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = res.bytes().await.unwrap().to_vec();
            Got {
                status,
                headers,
                body,
                facts,
            }
        }

        fn hit(&self) -> bool {
            self.facts.from_cache
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        }
    }

    impl Env {
        fn url(&self, path: &str) -> String {
            self.origin.url(path)
        }

        async fn get(&self, path: &str) -> Got {
            self.send(Method::GET, path, &[]).await
        }

        async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
            self.send(Method::GET, path, headers).await
        }

        async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Got {
            send(&self.client, method, &self.url(path), headers).await
        }

        fn advance(&self, secs: u64) {
            self.clock.advance(Duration::from_secs(secs));
        }

        /// How many GET requests reached `path`.
        fn gets(&self, path: &str) -> usize {
            self.origin
                .requests(path)
                .iter()
                .filter(|r| r.method == Method::GET)
                .count()
        }

        /// Another cache on the same table and clock (another process).
        fn other_client(
            &self,
            f: impl FnOnce(HttpCacheBuilder) -> HttpCacheBuilder,
        ) -> CachedClient {
            let cache = f(HttpCache::builder()
                .clock(self.clock.clone())
                .write_wait(Duration::from_secs(60)))
            .build(self.table.clone())
            .unwrap();
            CachedClient::new(reqwest::Client::new(), cache)
        }
    }

    async fn send(
        client: &CachedClient,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Got {
        let mut req = client.request(method, url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        Got::read(req.send().await.unwrap()).await
    }

    /// Waits (bounded) until `done` holds.
    async fn eventually(mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn imf(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    /// The fields of an IMF-fixdate: day name, day, month, year, time.
    fn fields(t: SystemTime) -> (String, String, String, String, String) {
        let text = imf(t);
        let (day_name, rest) = text.split_once(", ").unwrap();
        let parts: Vec<&str> = rest.split(' ').collect();
        (
            day_name.to_owned(),
            parts[0].to_owned(),
            parts[1].to_owned(),
            parts[2].to_owned(),
            parts[3].to_owned(),
        )
    }

    /// `Sunday, 06-Nov-94 08:49:37 GMT`.
    fn rfc850(t: SystemTime) -> String {
        let (day_name, day, month, year, time) = fields(t);
        let long = match day_name.as_str() {
            "Mon" => "Monday",
            "Tue" => "Tuesday",
            "Wed" => "Wednesday",
            "Thu" => "Thursday",
            "Fri" => "Friday",
            "Sat" => "Saturday",
            _ => "Sunday",
        };
        format!("{long}, {day}-{month}-{} {time} GMT", &year[2..])
    }

    /// `Sun Nov  6 08:49:37 1994`.
    fn asctime(t: SystemTime) -> String {
        let (day_name, day, month, year, time) = fields(t);
        let day = day.trim_start_matches('0');
        format!("{day_name} {month} {day:>2} {time} {year}")
    }

    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;

    // ---------------------------------------------------------------------------------------
    // Age
    // ---------------------------------------------------------------------------------------

    pub async fn a_hit_carries_the_stored_age_plus_its_time_in_the_cache(table: Table) {
        let e = env(table, |b| b).await;
        let p = e.origin.respond(
            "aged",
            Reply::ok("aged")
                .header("cache-control", "max-age=600")
                .header("age", "30"),
        );
        let first = e.get(&p).await;
        assert!(!first.hit());
        assert_eq!(
            first.header("age").as_deref(),
            Some("30"),
            "as the origin sent it"
        );
        let hit = e.get(&p).await;
        assert!(hit.hit());
        assert_eq!(hit.header("age").as_deref(), Some("30"));
        e.advance(10);
        let hit = e.get(&p).await;
        assert!(hit.hit());
        assert_eq!(
            hit.header("age").as_deref(),
            Some("40"),
            "30 + 10 s in the cache"
        );
        assert_eq!(e.origin.count(&p), 1);
        // A response without Age gets one too.
        let p = e.origin.respond(
            "unaged",
            Reply::ok("x").header("cache-control", "max-age=600"),
        );
        e.get(&p).await;
        e.advance(7);
        assert_eq!(e.get(&p).await.header("age").as_deref(), Some("7"));
    }

    pub async fn an_age_list_is_read_as_its_first_member_and_can_make_a_response_stale_on_arrival(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        // With max-age=9000 it is fresh, and 7200 s old from the start.
        let p = e.origin.respond(
            "old-but-fresh",
            Reply::ok("x")
                .header("cache-control", "max-age=9000")
                .header("age", "7200, 0"),
        );
        e.get(&p).await;
        let hit = e.get(&p).await;
        assert!(hit.hit());
        assert_eq!(hit.header("age").as_deref(), Some("7200"));
        // With max-age=3600 it is stale on arrival, and without a validator useless.
        let p = e.origin.respond(
            "stale-on-arrival",
            Reply::ok("x")
                .header("cache-control", "max-age=3600")
                .header("age", "7200, 0"),
        );
        e.get(&p).await;
        assert!(!e.get(&p).await.hit());
        assert_eq!(e.origin.count(&p), 2);
        // With a validator it is stored, and revalidated before any use.
        let p = e.origin.script("stale-with-etag", |r| {
            if r.header("if-none-match") == Some("\"a\"") {
                Reply::new(304, "").header("etag", "\"a\"")
            } else {
                Reply::ok("x")
                    .header("cache-control", "max-age=3600")
                    .header("age", "7200, 0")
                    .header("etag", "\"a\"")
            }
        });
        e.get(&p).await;
        let second = e.get(&p).await;
        assert_eq!(e.origin.count(&p), 2, "not served without revalidation");
        assert_eq!(
            e.origin.last_request(&p).headers["if-none-match"],
            "\"a\"",
            "a conditional request"
        );
        assert!(second.facts.revalidated && second.body == b"x");
        // The 304 has no Age: the origin validated it for this request (§5.1), so the old Age
        // no longer counts and it is fresh for its max-age from now on.
        assert_eq!(second.header("age").as_deref(), Some("0"));
        e.advance(60);
        let third = e.get(&p).await;
        assert!(third.hit() && !third.facts.revalidated, "{:?}", third.facts);
        assert_eq!(third.header("age").as_deref(), Some("60"));
        assert_eq!(e.origin.count(&p), 2);
    }

    pub async fn an_invalid_age_is_ignored(table: Table) {
        let e = env(table, |b| b).await;
        for (name, age) in [("letters", "abc"), ("negative", "-5"), ("fraction", "1.5")] {
            let p = e.origin.respond(
                name,
                Reply::ok("x")
                    .header("cache-control", "max-age=600")
                    .header("age", age),
            );
            e.get(&p).await;
            e.advance(10);
            let hit = e.get(&p).await;
            assert!(hit.hit(), "{age}");
            assert_eq!(hit.header("age").as_deref(), Some("10"), "Age: {age}");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Invalidation
    // ---------------------------------------------------------------------------------------

    /// GET answers a fresh response numbered by the request count; other methods answer `status`.
    fn resource(status: u16) -> impl Fn(&ScriptRequest) -> Reply + Send + Sync + 'static {
        move |r: &ScriptRequest| {
            if r.method == Method::GET || r.method == Method::HEAD {
                Reply::ok(format!("version {}", r.n)).header("cache-control", "max-age=600")
            } else {
                Reply::new(status, "done")
            }
        }
    }

    pub async fn unsafe_and_unknown_methods_invalidate_the_stored_response_of_their_url(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        for (i, method) in ["POST", "PUT", "DELETE", "PATCH", "PURGE"]
            .iter()
            .enumerate()
        {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let p = e.origin.script(&format!("r{i}"), resource(200));
            e.get(&p).await;
            assert!(e.get(&p).await.hit(), "{method}: stored");
            let res = e.send(method.clone(), &p, &[]).await;
            assert!(res.status == 200 && !res.hit());
            let after = e.get(&p).await;
            assert!(!after.hit(), "{method} invalidated the stored response");
            assert_eq!(e.gets(&p), 2, "{method}");
            assert!(e.get(&p).await.hit(), "{method}: stored again");
        }
        // Safe methods invalidate nothing.
        let p = e.origin.script("safe", resource(200));
        e.get(&p).await;
        e.send(Method::OPTIONS, &p, &[]).await;
        assert!(e.get(&p).await.hit());
        assert!(e.client.cache().stats().invalidated >= 5);
    }

    pub async fn an_unsafe_request_answered_with_an_error_invalidates_nothing(table: Table) {
        let e = env(table, |b| b).await;
        for status in [500, 404] {
            let p = e.origin.script(&format!("err{status}"), resource(status));
            e.get(&p).await;
            let res = e.send(Method::POST, &p, &[]).await;
            assert_eq!(res.status, status);
            assert!(
                e.get(&p).await.hit(),
                "a POST answered {status} changed nothing"
            );
            assert_eq!(e.gets(&p), 1);
        }
        // The same POST answered 201 does invalidate (the test can fail).
        let p = e.origin.script("created", resource(201));
        e.get(&p).await;
        e.send(Method::POST, &p, &[]).await;
        assert!(!e.get(&p).await.hit());
    }

    pub async fn same_origin_location_and_content_location_are_invalidated_and_other_origins_never(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let other = Origin::start().await;
        other.follow_clock(&e.clock);
        let b = e.origin.script("b", resource(200));
        let c = e.origin.script("c", resource(200));
        let foreign = other.script("d", resource(200));
        let foreign_url = other.url(&foreign);
        let c_url = e.url(&c);
        let foreign_for_a = foreign_url.clone();
        let a = e.origin.script("a", move |r| {
            if r.method == Method::POST {
                Reply::new(201, "created")
                    .header("location", "/script/b")
                    .header("content-location", c_url.clone())
            } else if r.method == Method::PUT {
                Reply::new(200, "moved").header("location", foreign_for_a.clone())
            } else {
                Reply::ok("a").header("cache-control", "max-age=600")
            }
        });
        for p in [&a, &b, &c] {
            e.get(p).await;
            assert!(e.get(p).await.hit());
        }
        send(&e.client, Method::GET, &foreign_url, &[]).await;
        assert!(send(&e.client, Method::GET, &foreign_url, &[]).await.hit());

        e.send(Method::POST, &a, &[]).await;
        assert!(!e.get(&a).await.hit(), "the target");
        assert!(!e.get(&b).await.hit(), "Location (relative)");
        assert!(!e.get(&c).await.hit(), "Content-Location (absolute)");
        // A Location on another origin (another port) is never invalidated.
        e.send(Method::PUT, &a, &[]).await;
        assert!(!e.get(&a).await.hit());
        assert!(
            send(&e.client, Method::GET, &foreign_url, &[]).await.hit(),
            "another origin's response stays"
        );
        assert_eq!(other.count(&foreign), 1);
    }

    pub async fn an_invalidation_through_one_cache_is_seen_by_another_on_the_same_table(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let other = e.other_client(|b| b);
        let p = e.origin.script("shared-resource", resource(204));
        let url = e.url(&p);
        e.get(&p).await;
        assert!(
            send(&other, Method::GET, &url, &[]).await.hit(),
            "one table, one store"
        );
        // The second process changes the resource: the first one sees it.
        send(&other, Method::DELETE, &url, &[]).await;
        let after = e.get(&p).await;
        assert!(!after.hit());
        assert_eq!(after.text(), "version 3", "fetched anew");
        assert!(send(&other, Method::GET, &url, &[]).await.hit());
        // And the other way round.
        e.send(Method::PATCH, &p, &[]).await;
        assert!(!send(&other, Method::GET, &url, &[]).await.hit());
        assert_eq!(e.gets(&p), 3);
    }

    pub async fn an_invalidation_removes_every_variant_of_a_vary_url(table: Table) {
        let e = env(table, |b| b).await;
        let p = e.origin.script("variants", |r| {
            if r.method == Method::POST {
                return Reply::new(200, "changed");
            }
            let lang = r.header("accept-language").unwrap_or("none").to_owned();
            Reply::ok(format!("hello in {lang}"))
                .header("cache-control", "max-age=600")
                .header("vary", "Accept-Language")
        });
        for lang in ["en", "fr", "de"] {
            e.get_with(&p, &[("accept-language", lang)]).await;
            assert!(e.get_with(&p, &[("accept-language", lang)]).await.hit());
        }
        let cache = e.client.cache();
        assert_eq!(cache.response_count().await.unwrap(), 3);
        e.send(Method::POST, &p, &[("accept-language", "en")]).await;
        assert_eq!(
            cache.response_count().await.unwrap(),
            0,
            "every variant, not only the POST's language"
        );
        for lang in ["en", "fr", "de"] {
            let res = e.get_with(&p, &[("accept-language", lang)]).await;
            assert!(!res.hit() && res.text() == format!("hello in {lang}"));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Client conditionals
    // ---------------------------------------------------------------------------------------

    const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

    fn validated(etag: &'static str) -> Reply {
        Reply::ok("the representation")
            .header("cache-control", "max-age=600")
            .header("etag", etag)
            .header("last-modified", LAST_MODIFIED)
            .header("content-type", "text/plain")
    }

    pub async fn a_client_if_none_match_is_answered_304_from_the_cache_with_weak_comparison(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let p = e.origin.respond("etag", validated("\"v1\""));
        e.get(&p).await;
        for inm in ["\"v1\"", "W/\"v1\"", "\"x\", \"v1\"", "*"] {
            let res = e.get_with(&p, &[("if-none-match", inm)]).await;
            assert_eq!(res.status, 304, "If-None-Match: {inm}");
            assert!(res.hit() && res.body.is_empty());
            assert_eq!(res.header("etag").as_deref(), Some("\"v1\""));
            assert_eq!(res.header("cache-control").as_deref(), Some("max-age=600"));
            assert!(res.header("age").is_some());
        }
        let res = e.get_with(&p, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(res.status, 200);
        assert!(res.hit());
        assert_eq!(res.text(), "the representation");
        assert_eq!(e.origin.count(&p), 1, "the origin was never asked again");
        // A weak stored ETag matches a strong request tag (weak comparison).
        let p = e.origin.respond("weak", validated("W/\"w1\""));
        e.get(&p).await;
        assert_eq!(
            e.get_with(&p, &[("if-none-match", "\"w1\"")]).await.status,
            304
        );
    }

    pub async fn a_client_if_modified_since_is_answered_from_the_cache_and_if_none_match_takes_precedence(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let p = e.origin.respond("dated", validated("\"v1\""));
        e.get(&p).await;
        let later = "Thu, 22 Oct 2015 07:28:00 GMT";
        let earlier = "Tue, 20 Oct 2015 07:28:00 GMT";
        let res = e.get_with(&p, &[("if-modified-since", later)]).await;
        assert!(res.status == 304 && res.hit());
        let res = e
            .get_with(&p, &[("if-modified-since", LAST_MODIFIED)])
            .await;
        assert_eq!(res.status, 304, "not modified since exactly then");
        let res = e.get_with(&p, &[("if-modified-since", earlier)]).await;
        assert!(res.status == 200 && res.hit() && res.text() == "the representation");
        // If-None-Match decides alone when both are present.
        let res = e
            .get_with(
                &p,
                &[("if-none-match", "\"other\""), ("if-modified-since", later)],
            )
            .await;
        assert_eq!(res.status, 200);
        let res = e
            .get_with(
                &p,
                &[("if-none-match", "\"v1\""), ("if-modified-since", earlier)],
            )
            .await;
        assert_eq!(res.status, 304);
        assert_eq!(e.origin.count(&p), 1);
    }

    pub async fn a_conditional_request_that_misses_is_answered_from_the_freshly_stored_response(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let p = e.origin.respond("fresh", validated("\"v1\""));
        let res = e.get_with(&p, &[("if-none-match", "\"v1\"")]).await;
        assert_eq!(res.status, 304);
        assert!(!res.hit() && res.body.is_empty());
        assert_eq!(res.header("etag").as_deref(), Some("\"v1\""));
        let asked = e.origin.last_request(&p);
        assert!(
            !asked.headers.contains_key("if-none-match"),
            "the cache asked for the whole response, to store it"
        );
        let res = e.get(&p).await;
        assert!(res.hit() && res.status == 200 && res.text() == "the representation");
        // The same for If-Modified-Since, and a non-matching tag gets the body at once.
        let p = e.origin.respond("fresh2", validated("\"v2\""));
        let res = e.get_with(&p, &[("if-none-match", "\"other\"")]).await;
        assert!(res.status == 200 && res.text() == "the representation");
        let p = e.origin.respond("fresh3", validated("\"v3\""));
        let res = e
            .get_with(
                &p,
                &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
            )
            .await;
        assert_eq!(res.status, 304);
        assert!(
            !e.origin
                .last_request(&p)
                .headers
                .contains_key("if-modified-since")
        );
        assert!(e.get(&p).await.hit());
    }

    // ---------------------------------------------------------------------------------------
    // Heuristic freshness
    // ---------------------------------------------------------------------------------------

    /// A 200 last modified `age` before now (by the origin's clock), with no freshness.
    fn last_modified_ago(e: &Env, name: &str, age: Duration) -> String {
        let lm = imf(e.origin.now() - age);
        e.origin
            .respond(name, Reply::ok("heuristic").header("last-modified", lm))
    }

    pub async fn a_shared_cache_keeps_a_last_modified_response_fresh_for_a_tenth_of_its_age(
        table: Table,
    ) {
        let e = env(table, |b| b.shared(true)).await;
        let p = last_modified_ago(&e, "ten-days", Duration::from_secs(10 * DAY));
        e.get(&p).await;
        e.advance(23 * HOUR);
        assert!(e.get(&p).await.hit(), "fresh for a day (10% of 10 days)");
        assert_eq!(e.origin.count(&p), 1);
        e.advance(2 * HOUR);
        let res = e.get(&p).await;
        assert_eq!(e.origin.count(&p), 2, "stale after a day: {:?}", res.facts);
        assert!(
            e.origin
                .last_request(&p)
                .headers
                .contains_key("if-modified-since"),
            "revalidated with its Last-Modified"
        );
    }

    pub async fn the_heuristic_freshness_setting_caps_the_lifetime(table: Table) {
        let e = env(table, |b| {
            b.shared(true)
                .heuristic_freshness(0.5, Duration::from_secs(HOUR))
        })
        .await;
        let p = last_modified_ago(&e, "capped", Duration::from_secs(10 * DAY));
        e.get(&p).await;
        e.advance(59 * 60);
        assert!(e.get(&p).await.hit());
        e.advance(2 * 60);
        e.get(&p).await;
        assert_eq!(e.origin.count(&p), 2, "half of 10 days, capped at an hour");
    }

    pub async fn a_response_without_freshness_or_validator_is_stored_only_by_a_private_cache(
        table: Table,
    ) {
        let shared = env(table.clone(), |b| b.namespace("shared").shared(true)).await;
        let p = shared.origin.respond("bare", Reply::ok("bare"));
        shared.get(&p).await;
        assert!(!shared.get(&p).await.hit());
        assert_eq!(shared.origin.count(&p), 2);
        assert_eq!(shared.client.cache().response_count().await.unwrap(), 0);
        let private = env(table, |b| b).await;
        let p = private.origin.respond("bare", Reply::ok("bare"));
        private.get(&p).await;
        private.advance(1000 * DAY);
        assert!(private.get(&p).await.hit(), "ExpireAfter::Never keeps it");
    }

    // ---------------------------------------------------------------------------------------
    // Storable
    // ---------------------------------------------------------------------------------------

    pub async fn a_shared_cache_stores_error_and_unusual_statuses_with_explicit_freshness(
        table: Table,
    ) {
        let e = env(table, |b| b.shared(true)).await;
        for status in [400u16, 500, 502, 503, 504, 299, 599] {
            let p = e.origin.respond(
                &format!("s{status}"),
                Reply::new(status, format!("status {status}"))
                    .header("cache-control", "max-age=60"),
            );
            let first = e.get(&p).await;
            assert!(first.status == status && !first.hit());
            let second = e.get(&p).await;
            assert!(second.hit(), "{status} stored");
            assert_eq!(second.status, status);
            assert_eq!(second.text(), format!("status {status}"));
            assert_eq!(e.origin.count(&p), 1);
        }
    }

    pub async fn allowed_codes_narrows_what_a_shared_cache_stores(table: Table) {
        let e = env(table, |b| b.shared(true).allowed_codes([200])).await;
        let p = e.origin.respond(
            "err",
            Reply::new(500, "boom").header("cache-control", "max-age=60"),
        );
        e.get(&p).await;
        assert!(!e.get(&p).await.hit());
        assert_eq!(e.origin.count(&p), 2);
        let p = e.origin.respond(
            "ok",
            Reply::ok("fine").header("cache-control", "max-age=60"),
        );
        e.get(&p).await;
        assert!(e.get(&p).await.hit());
    }

    pub async fn a_404_without_explicit_freshness_is_stored_by_a_shared_cache_only_with_last_modified(
        table: Table,
    ) {
        let e = env(table, |b| b.shared(true)).await;
        let bare = e.origin.respond("bare", Reply::new(404, "gone"));
        e.get(&bare).await;
        assert!(!e.get(&bare).await.hit());
        let lm = imf(e.origin.now() - Duration::from_secs(10 * DAY));
        let dated = e
            .origin
            .respond("dated", Reply::new(404, "gone").header("last-modified", lm));
        e.get(&dated).await;
        let res = e.get(&dated).await;
        assert!(res.hit() && res.status == 404 && res.text() == "gone");
        assert_eq!(e.origin.count(&dated), 1);
    }

    pub async fn must_understand_overrides_no_store_only_for_understood_statuses(table: Table) {
        let e = env(table, |b| b.shared(true)).await;
        let cc = "must-understand, no-store, max-age=60";
        let ok = e
            .origin
            .respond("ok", Reply::ok("understood").header("cache-control", cc));
        e.get(&ok).await;
        assert!(
            e.get(&ok).await.hit(),
            "200 is understood: no-store is overridden"
        );
        let odd = e
            .origin
            .respond("odd", Reply::new(299, "odd").header("cache-control", cc));
        e.get(&odd).await;
        assert!(
            !e.get(&odd).await.hit(),
            "299 is not understood: not stored"
        );
        assert_eq!(e.origin.count(&odd), 2);
    }

    // ---------------------------------------------------------------------------------------
    // Stale
    // ---------------------------------------------------------------------------------------

    pub async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let p = e.origin.script("swr", |r| {
            Reply::ok(format!("version {}", r.n))
                .header("cache-control", "max-age=10, stale-while-revalidate=60")
                .delay(Duration::from_millis(100))
        });
        e.get(&p).await;
        e.advance(20);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = e.client.clone();
            let url = e.url(&p);
            tasks.push(tokio::spawn(async move {
                send(&client, Method::GET, &url, &[]).await
            }));
        }
        for t in tasks {
            let res = t.await.unwrap();
            assert!(res.hit() && res.facts.stale, "{:?}", res.facts);
            assert_eq!(res.text(), "version 1");
        }
        let stats = || e.client.cache().stats();
        eventually(|| e.origin.count(&p) >= 2 && stats().stored >= 2).await;
        assert_eq!(
            e.origin.count(&p),
            2,
            "one background refresh for eight stale hits"
        );
        let res = e.get(&p).await;
        assert!(res.hit() && !res.facts.stale);
        assert_eq!(res.text(), "version 2", "refreshed");
        // Past the window it is not served stale.
        e.advance(100);
        let res = e.get(&p).await;
        assert!(!res.hit() && res.text() == "version 3");
    }

    pub async fn stale_if_error_serves_the_stale_response_when_the_origin_answers_500(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let p = e.origin.respond(
            "sie",
            Reply::ok("kept").header("cache-control", "max-age=10, stale-if-error=60"),
        );
        e.get(&p).await;
        e.advance(20);
        e.origin.fail(true);
        let res = e.get(&p).await;
        assert!(res.status == 200 && res.hit() && res.facts.stale, "{res:?}");
        assert_eq!(res.text(), "kept");
        assert_eq!(e.origin.count(&p), 2, "the origin was asked");
        e.advance(100);
        let res = e.get(&p).await;
        assert!(
            res.status == 500 && !res.hit(),
            "past the window the error passes"
        );
    }

    pub async fn a_cache_wide_stale_if_error_never_overrides_must_revalidate_no_cache_or_proxy_revalidate(
        table: Table,
    ) {
        async fn case(e: &Env, name: &str, cc: &str) -> Got {
            e.origin.fail(false);
            let p = e.origin.respond(
                name,
                Reply::ok("stored")
                    .header("cache-control", cc)
                    .header("etag", "\"e\""),
            );
            e.get(&p).await;
            e.advance(20);
            e.origin.fail(true);
            let res = e.get(&p).await;
            e.origin.fail(false);
            res
        }
        let private = env(table.clone(), |b| b.stale_if_error(StaleWindow::Always)).await;
        let control = case(&private, "plain", "max-age=10").await;
        assert!(
            control.status == 200 && control.facts.stale,
            "the setting works"
        );
        for (name, cc) in [
            ("must-revalidate", "max-age=10, must-revalidate"),
            ("no-cache", "no-cache"),
            ("no-cache-max-age", "no-cache, max-age=600"),
        ] {
            let res = case(&private, name, cc).await;
            assert!(res.status == 500 && !res.hit(), "{cc}: {res:?}");
        }
        let shared = env(table, |b| {
            b.namespace("shared")
                .shared(true)
                .stale_if_error(StaleWindow::Always)
        })
        .await;
        let control = case(&shared, "plain", "max-age=10").await;
        assert!(control.status == 200 && control.facts.stale);
        for (name, cc) in [
            ("proxy-revalidate", "max-age=10, proxy-revalidate"),
            ("s-maxage", "s-maxage=10"),
            ("s-maxage-max-age", "max-age=600, s-maxage=10"),
        ] {
            let res = case(&shared, name, cc).await;
            assert!(res.status == 500 && !res.hit(), "shared, {cc}: {res:?}");
        }
        // A private cache is not bound by proxy-revalidate or s-maxage.
        let res = case(&private, "private-proxy", "max-age=10, proxy-revalidate").await;
        assert!(res.status == 200 && res.facts.stale);
    }

    // ---------------------------------------------------------------------------------------
    // Directives
    // ---------------------------------------------------------------------------------------

    pub async fn response_directive_names_are_case_insensitive(table: Table) {
        let private = env(table.clone(), |b| b).await;
        let p = private.origin.respond(
            "no-store",
            Reply::ok("x").header("cache-control", "No-Store, max-age=3600"),
        );
        private.get(&p).await;
        assert!(!private.get(&p).await.hit());
        assert_eq!(private.origin.count(&p), 2);
        let p = private.origin.respond(
            "upper-max-age",
            Reply::ok("x").header("cache-control", "MAX-AGE=10"),
        );
        private.get(&p).await;
        private.advance(11);
        assert!(!private.get(&p).await.hit(), "MAX-AGE=10 is max-age=10");
        let shared = env(table, |b| b.namespace("shared").shared(true)).await;
        let p = shared.origin.respond(
            "private",
            Reply::ok("x").header("cache-control", "PRIVATE, max-age=3600"),
        );
        shared.get(&p).await;
        assert!(!shared.get(&p).await.hit());
        assert_eq!(shared.origin.count(&p), 2);
        let p = shared.origin.respond(
            "public",
            Reply::ok("x").header("cache-control", "Public, Max-Age=3600"),
        );
        shared.get(&p).await;
        assert!(shared.get(&p).await.hit(), "the control is stored");
    }

    pub async fn qualified_no_cache_fields_are_not_served_from_the_cache(table: Table) {
        let e = env(table, |b| b).await;
        for (name, cc) in [
            ("lower", "no-cache=\"x-secret\", max-age=600"),
            ("upper", "No-Cache=\"X-Secret\", max-age=600"),
        ] {
            let p = e.origin.respond(
                name,
                Reply::ok("body")
                    .header("cache-control", cc)
                    .header("x-secret", "s3cret")
                    .header("x-other", "kept"),
            );
            let first = e.get(&p).await;
            assert_eq!(first.header("x-secret").as_deref(), Some("s3cret"));
            let hit = e.get(&p).await;
            assert!(hit.hit(), "{cc}: served without revalidation");
            assert_eq!(hit.header("x-secret"), None, "{cc}");
            assert_eq!(hit.header("x-other").as_deref(), Some("kept"));
            assert_eq!(hit.header("cache-control").as_deref(), Some(cc));
            assert_eq!(hit.text(), "body");
            assert_eq!(e.origin.count(&p), 1);
        }
    }

    pub async fn qualified_private_fields_are_not_stored_by_a_shared_cache(table: Table) {
        let e = env(table, |b| b.shared(true)).await;
        let p = e.origin.respond(
            "user",
            Reply::ok("page")
                .header("cache-control", "private=\"x-user\", max-age=600")
                .header("x-user", "alice")
                .header("x-other", "kept"),
        );
        let first = e.get(&p).await;
        assert_eq!(
            first.header("x-user").as_deref(),
            Some("alice"),
            "the miss has it"
        );
        let hit = e.get(&p).await;
        assert!(hit.hit());
        assert_eq!(hit.header("x-user"), None);
        assert_eq!(hit.header("x-other").as_deref(), Some("kept"));
        assert_eq!(hit.text(), "page");
        let stored = e
            .client
            .cache()
            .stored_response(hit.facts.cache_key.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.headers.contains_key("x-user"), "not even stored");
    }

    // ---------------------------------------------------------------------------------------
    // Dates
    // ---------------------------------------------------------------------------------------

    pub async fn expires_in_rfc850_and_asctime_forms_is_honoured(table: Table) {
        let e = env(table, |b| b).await;
        type Form = fn(SystemTime) -> String;
        let forms: [(&str, Form); 3] = [("imf", imf), ("rfc850", rfc850), ("asctime", asctime)];
        for (name, form) in forms {
            let expires = form(e.origin.now() + Duration::from_secs(HOUR));
            let p = e
                .origin
                .respond(name, Reply::ok("x").header("expires", expires.clone()));
            e.get(&p).await;
            e.advance(30 * 60);
            assert!(e.get(&p).await.hit(), "fresh until {expires}");
            e.advance(31 * 60);
            assert!(!e.get(&p).await.hit(), "expired after {expires}");
            assert_eq!(e.origin.count(&p), 2);
            e.advance(DAY);
        }
    }

    pub async fn an_invalid_expires_means_already_expired(table: Table) {
        let e = env(table, |b| b).await;
        for (i, expires) in [
            "Thu,  01 Dec 2099 16:00:00 GMT",
            "0",
            "Thu, 01 Dec 2099 16:00:00",
            "tomorrow",
        ]
        .iter()
        .enumerate()
        {
            let p = e
                .origin
                .respond(&format!("e{i}"), Reply::ok("x").header("expires", *expires));
            e.get(&p).await;
            assert!(!e.get(&p).await.hit(), "Expires: {expires}");
            assert_eq!(e.origin.count(&p), 2);
        }
        // The same with a validator: stored, but revalidated before any use.
        let p = e.origin.script("validated", |r| {
            if r.header("if-none-match").is_some() {
                Reply::new(304, "").header("etag", "\"x\"")
            } else {
                Reply::ok("x")
                    .header("expires", "0")
                    .header("etag", "\"x\"")
            }
        });
        e.get(&p).await;
        let res = e.get(&p).await;
        assert!(res.facts.revalidated, "{:?}", res.facts);
        assert_eq!(e.origin.count(&p), 2);
    }

    pub async fn expires_is_ignored_when_max_age_or_a_shared_s_maxage_is_present(table: Table) {
        let private = env(table.clone(), |b| b).await;
        let now = private.origin.now();
        let later = imf(now + Duration::from_secs(HOUR));
        let past = imf(now - Duration::from_secs(HOUR));
        let short = private.origin.respond(
            "short",
            Reply::ok("x")
                .header("cache-control", "max-age=10")
                .header("expires", later.clone()),
        );
        let long = private.origin.respond(
            "long",
            Reply::ok("x")
                .header("cache-control", "max-age=3600")
                .header("expires", past.clone()),
        );
        private.get(&short).await;
        private.get(&long).await;
        private.advance(20);
        assert!(
            !private.get(&short).await.hit(),
            "max-age=10 wins over Expires"
        );
        assert!(
            private.get(&long).await.hit(),
            "max-age=3600 wins over a past Expires"
        );

        let shared = env(table, |b| b.namespace("shared").shared(true)).await;
        let now = shared.origin.now();
        let later = imf(now + Duration::from_secs(HOUR));
        let past = imf(now - Duration::from_secs(HOUR));
        let short = shared.origin.respond(
            "short",
            Reply::ok("x")
                .header("cache-control", "s-maxage=10")
                .header("expires", later),
        );
        let long = shared.origin.respond(
            "long",
            Reply::ok("x")
                .header("cache-control", "s-maxage=3600")
                .header("expires", past),
        );
        shared.get(&short).await;
        shared.get(&long).await;
        shared.advance(20);
        assert!(
            !shared.get(&short).await.hit(),
            "s-maxage=10 wins over Expires"
        );
        assert!(
            shared.get(&long).await.hit(),
            "s-maxage=3600 wins over a past Expires"
        );
    }

    // ---------------------------------------------------------------------------------------
    // Request directives
    // ---------------------------------------------------------------------------------------

    fn fresh_for(e: &Env, name: &str, secs: u64) -> String {
        e.origin.script(name, move |r| {
            Reply::ok(format!("version {}", r.n)).header("cache-control", format!("max-age={secs}"))
        })
    }

    pub async fn a_request_max_age_refuses_an_older_response(table: Table) {
        let e = env(table, |b| b).await;
        let p = fresh_for(&e, "r", 600);
        e.get(&p).await;
        e.advance(10);
        assert!(
            e.get_with(&p, &[("cache-control", "max-age=20")])
                .await
                .hit()
        );
        let res = e.get_with(&p, &[("cache-control", "max-age=5")]).await;
        assert!(
            !res.hit() && res.text() == "version 2",
            "10 s old is too old"
        );
        assert_eq!(e.origin.count(&p), 2);
    }

    pub async fn a_request_max_stale_accepts_a_stale_response_within_its_bound(table: Table) {
        let e = env(table, |b| b).await;
        let p = fresh_for(&e, "r", 10);
        e.get(&p).await;
        e.advance(60);
        let res = e.get_with(&p, &[("cache-control", "max-stale=100")]).await;
        assert!(
            res.hit() && res.facts.stale,
            "stale by 50 s: {:?}",
            res.facts
        );
        assert_eq!(res.text(), "version 1");
        e.advance(150);
        let res = e.get_with(&p, &[("cache-control", "max-stale=100")]).await;
        assert!(!res.hit(), "stale by 200 s");
        assert_eq!(e.origin.count(&p), 2);
        // Without a value, any staleness.
        let p = fresh_for(&e, "any", 10);
        e.get(&p).await;
        e.advance(100 * DAY);
        let res = e.get_with(&p, &[("cache-control", "max-stale")]).await;
        assert!(res.hit() && res.facts.stale);
        assert_eq!(e.origin.count(&p), 1);
    }

    pub async fn a_request_min_fresh_needs_that_much_freshness_left(table: Table) {
        let e = env(table, |b| b).await;
        let p = fresh_for(&e, "r", 100);
        e.get(&p).await;
        e.advance(50);
        assert!(
            e.get_with(&p, &[("cache-control", "min-fresh=30")])
                .await
                .hit()
        );
        let res = e.get_with(&p, &[("cache-control", "min-fresh=100")]).await;
        assert!(!res.hit(), "only 50 s left");
        assert_eq!(e.origin.count(&p), 2);
    }

    pub async fn a_request_no_cache_revalidates_a_fresh_response(table: Table) {
        let e = env(table, |b| b).await;
        let p = e.origin.script("r", |r| {
            if r.header("if-none-match") == Some("\"v1\"") {
                Reply::new(304, "")
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=600")
            } else {
                validated("\"v1\"")
            }
        });
        e.get(&p).await;
        let res = e.get_with(&p, &[("cache-control", "no-cache")]).await;
        assert!(res.facts.revalidated, "{:?}", res.facts);
        assert_eq!(res.text(), "the representation");
        assert_eq!(e.origin.count(&p), 2);
        assert_eq!(e.origin.last_request(&p).headers["if-none-match"], "\"v1\"");
        let res = e.get_with(&p, &[("pragma", "no-cache")]).await;
        assert!(res.facts.revalidated, "Pragma: no-cache too");
        assert!(e.get(&p).await.hit() && e.origin.count(&p) == 3);
    }

    pub async fn a_request_no_store_neither_reads_nor_writes_the_cache(table: Table) {
        let e = env(table, |b| b).await;
        let p = fresh_for(&e, "stored", 600);
        e.get(&p).await;
        let res = e.get_with(&p, &[("cache-control", "no-store")]).await;
        assert!(!res.hit() && res.text() == "version 2", "not read");
        assert_eq!(e.get(&p).await.text(), "version 1", "and not overwritten");
        let p = fresh_for(&e, "never", 600);
        e.get_with(&p, &[("cache-control", "no-store")]).await;
        assert_eq!(e.client.cache().response_count().await.unwrap(), 1);
        assert!(!e.get(&p).await.hit(), "not written");
    }

    pub async fn a_request_only_if_cached_answers_504_on_a_miss_and_the_stored_response_on_a_hit(
        table: Table,
    ) {
        let e = env(table, |b| b).await;
        let p = fresh_for(&e, "r", 60);
        let res = e.get_with(&p, &[("cache-control", "only-if-cached")]).await;
        assert_eq!(res.status, 504);
        assert_eq!(e.origin.count(&p), 0);
        e.get(&p).await;
        let res = e.get_with(&p, &[("cache-control", "only-if-cached")]).await;
        assert!(res.status == 200 && res.hit() && res.text() == "version 1");
        e.advance(61);
        let res = e.get_with(&p, &[("cache-control", "only-if-cached")]).await;
        assert_eq!(res.status, 504, "stale and not allowed to ask the origin");
        assert_eq!(e.origin.count(&p), 1);
    }

    // ---------------------------------------------------------------------------------------
    // Vary
    // ---------------------------------------------------------------------------------------

    pub async fn vary_matches_request_headers_that_mean_the_same(table: Table) {
        let e = env(table, |b| b).await;
        let echo = |header: &'static str| {
            move |r: &ScriptRequest| {
                Reply::ok(format!("{header}: {}", r.header(header).unwrap_or("-")))
                    .header("cache-control", "max-age=600")
                    .header("vary", header)
            }
        };
        let p = e.origin.script("lang", echo("accept-language"));
        let first = e.get_with(&p, &[("accept-language", "en, fr;q=0.5")]).await;
        let same = e
            .get_with(&p, &[("accept-language", "fr;q=0.50,  EN")])
            .await;
        assert!(same.hit(), "the same preferences");
        assert_eq!(same.body, first.body);
        let other = e.get_with(&p, &[("accept-language", "fr, en;q=0.5")]).await;
        assert!(!other.hit() && other.text() == "accept-language: fr, en;q=0.5");
        assert_eq!(e.origin.count(&p), 2);

        let p = e.origin.script("enc", echo("accept-encoding"));
        e.get_with(&p, &[("accept-encoding", "gzip, br")]).await;
        let same = e.get_with(&p, &[("accept-encoding", "br,gzip")]).await;
        assert!(same.hit() && same.text() == "accept-encoding: gzip, br");
        let other = e.get_with(&p, &[("accept-encoding", "identity")]).await;
        assert!(!other.hit());
        let none = e.get(&p).await;
        assert!(!none.hit() && none.text() == "accept-encoding: -");
        assert_eq!(e.origin.count(&p), 3);

        let p = e.origin.respond(
            "star",
            Reply::ok("x")
                .header("cache-control", "max-age=600")
                .header("vary", "*"),
        );
        for _ in 0..3 {
            assert!(
                !e.get(&p).await.hit(),
                "Vary: * is never served from the cache"
            );
        }
        assert_eq!(e.origin.count(&p), 3);
    }

    // ---------------------------------------------------------------------------------------
    // Ranges
    // ---------------------------------------------------------------------------------------

    fn alphabet(len: usize) -> Vec<u8> {
        (0..len).map(|i| b'a' + (i % 26) as u8).collect()
    }

    fn ranged(e: &Env, name: &str) -> String {
        e.origin.respond(
            name,
            Reply::ok(alphabet(100))
                .header("cache-control", "max-age=600")
                .header("etag", "\"r1\"")
                .header("content-type", "application/octet-stream"),
        )
    }

    pub async fn byte_ranges_are_answered_from_the_stored_response(table: Table) {
        let e = env(table, |b| b).await;
        let p = ranged(&e, "r");
        let body = alphabet(100);
        e.get(&p).await;
        let range = |spec: &'static str| {
            let (e, p) = (&e, &p);
            async move { e.get_with(p, &[("range", spec)]).await }
        };
        let res = range("bytes=0-9").await;
        assert!(res.status == 206 && res.hit());
        assert_eq!(
            res.header("content-range").as_deref(),
            Some("bytes 0-9/100")
        );
        assert_eq!(res.body, &body[0..10]);
        let res = range("bytes=-5").await;
        assert_eq!(res.status, 206);
        assert_eq!(
            res.header("content-range").as_deref(),
            Some("bytes 95-99/100")
        );
        assert_eq!(res.body, &body[95..]);
        let res = range("bytes=10-").await;
        assert_eq!(res.status, 206);
        assert_eq!(
            res.header("content-range").as_deref(),
            Some("bytes 10-99/100")
        );
        assert_eq!(res.body, &body[10..]);
        let res = range("bytes=90-200").await;
        assert_eq!(
            res.header("content-range").as_deref(),
            Some("bytes 90-99/100")
        );
        let res = range("bytes=999999-").await;
        assert_eq!(res.status, 416);
        assert_eq!(res.header("content-range").as_deref(), Some("bytes */100"));
        assert!(res.body.is_empty());
        let res = range("bytes=0-1,5-6").await;
        assert!(
            res.status == 200 && res.body == body,
            "several ranges: the whole body"
        );
        assert!(res.header("content-range").is_none());
        // If-Range: a strong match gets the range, anything else the whole body.
        let res = e
            .get_with(&p, &[("range", "bytes=0-9"), ("if-range", "\"r1\"")])
            .await;
        assert!(res.status == 206 && res.body == body[0..10]);
        for if_range in ["\"other\"", "W/\"r1\""] {
            let res = e
                .get_with(&p, &[("range", "bytes=0-9"), ("if-range", if_range)])
                .await;
            assert!(
                res.status == 200 && res.body == body,
                "If-Range: {if_range}"
            );
        }
        assert_eq!(e.origin.count(&p), 1);
    }

    pub async fn a_partial_range_that_misses_goes_to_the_origin_as_a_range(table: Table) {
        // Fetching a whole (maybe huge) response for a few bytes would cost more than the cache
        // saves: the origin gets the range. This origin ignores it and answers 200, which is
        // stored, and the range is answered from it.
        let e = env(table, |b| b).await;
        let p = ranged(&e, "r");
        let res = e.get_with(&p, &[("range", "bytes=0-9")]).await;
        assert!(res.status == 206 && !res.hit());
        assert_eq!(
            res.header("content-range").as_deref(),
            Some("bytes 0-9/100")
        );
        assert_eq!(res.body, &alphabet(100)[0..10]);
        assert_eq!(
            e.origin
                .last_request(&p)
                .headers
                .get("range")
                .map(|v| v.as_bytes()),
            Some(&b"bytes=0-9"[..]),
            "the origin was asked for the range"
        );
        let res = e.get(&p).await;
        assert!(res.hit() && res.status == 200 && res.body == alphabet(100));
        assert_eq!(e.origin.count(&p), 1);
    }

    pub async fn a_whole_range_that_misses_is_fetched_whole_stored_and_answered_206(table: Table) {
        let e = env(table, |b| b).await;
        let p = ranged(&e, "r");
        let res = e.get_with(&p, &[("range", "bytes=0-")]).await;
        assert!(res.status == 206 && !res.hit());
        assert_eq!(
            res.header("content-range").as_deref(),
            Some("bytes 0-99/100")
        );
        assert_eq!(res.body, alphabet(100));
        assert!(
            !e.origin.last_request(&p).headers.contains_key("range"),
            "the origin was asked for the whole response"
        );
        let res = e.get_with(&p, &[("range", "bytes=90-")]).await;
        assert!(res.hit() && res.status == 206 && res.body == alphabet(100)[90..]);
        assert_eq!(e.origin.count(&p), 1);
    }

    pub async fn a_range_inside_a_chunked_body_is_byte_exact(table: Table) {
        let e = env(table, |b| b).await;
        let p = "/random-etag/500000";
        let full = e.get(p).await.body;
        assert_eq!(full.len(), 500_000);
        let stats = e.client.cache().storage_stats().await.unwrap();
        assert_eq!(stats.chunked_entries, 1, "stored in chunks: {stats:?}");
        let boundary = 350 * 1024;
        for (spec, start, end) in [
            (
                format!("bytes={}-{}", boundary - 10, boundary + 9),
                boundary - 10,
                boundary + 10,
            ),
            ("bytes=400000-400099".to_owned(), 400_000, 400_100),
            ("bytes=-1000".to_owned(), 499_000, 500_000),
            ("bytes=0-".to_owned(), 0, 500_000),
        ] {
            let res = e.get_with(p, &[("range", spec.as_str())]).await;
            assert!(res.status == 206 && res.hit(), "{spec}");
            assert_eq!(
                res.header("content-range"),
                Some(format!("bytes {}-{}/500000", start, end - 1))
            );
            assert!(res.body == full[start..end], "{spec}: byte-exact");
        }
        assert_eq!(e.origin.count(p), 1);
    }

    // ---------------------------------------------------------------------------------------
    // Coalescing
    // ---------------------------------------------------------------------------------------

    pub async fn sixty_four_concurrent_misses_send_one_request_to_the_origin(table: Table) {
        let origin = Origin::start().await;
        for trial in 0..5 {
            let cache = HttpCache::builder()
                .namespace(format!("trial{trial}"))
                .build(table.clone())
                .unwrap();
            let client = CachedClient::new(reqwest::Client::new(), cache);
            let p = origin.script(&format!("slow{trial}"), |r| {
                // Long enough for all 64 lookups to miss before the leader stores, even on a
                // loaded machine (a later lookup would be a plain hit).
                Reply::ok(format!("response {}", r.n))
                    .header("cache-control", "max-age=600")
                    .delay(Duration::from_millis(1000))
            });
            let url = origin.url(&p);
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    tokio::spawn(async move { send(&client, Method::GET, &url, &[]).await })
                })
                .collect();
            let mut coalesced = 0;
            for t in tasks {
                let res = t.await.unwrap();
                assert!(
                    res.status == 200 && res.text() == "response 1",
                    "trial {trial}"
                );
                coalesced += usize::from(res.facts.coalesced);
            }
            assert_eq!(
                origin.count(&p),
                1,
                "trial {trial}: one request reached the origin"
            );
            assert_eq!(coalesced, 63, "trial {trial}");
            assert_eq!(client.cache().stats().coalesced, 63);
        }
    }

    pub async fn concurrent_misses_for_different_variants_each_get_their_own(table: Table) {
        let e = env(table, |b| b).await;
        let p = e.origin.script("lang", |r| {
            let lang = r.header("accept-language").unwrap_or("none").to_owned();
            Reply::ok(format!("hello in {lang}"))
                .header("cache-control", "max-age=600")
                .header("vary", "Accept-Language")
                .delay(Duration::from_millis(200))
        });
        let langs = ["en", "fr", "de", "it"];
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let client = e.client.clone();
                let url = e.url(&p);
                let lang = langs[i % langs.len()];
                tokio::spawn(async move {
                    let res = send(&client, Method::GET, &url, &[("accept-language", lang)]).await;
                    (lang, res)
                })
            })
            .collect();
        for t in tasks {
            let (lang, res) = t.await.unwrap();
            assert_eq!(res.text(), format!("hello in {lang}"), "{:?}", res.facts);
        }
        assert!(e.origin.count(&p) >= langs.len());
        // First writers racing on a new URL may leave some variants unreachable (each started
        // an index); the next round stores them under the one index, and then all are hits.
        for lang in langs {
            let res = e.get_with(&p, &[("accept-language", lang)]).await;
            assert_eq!(res.text(), format!("hello in {lang}"));
        }
        for lang in langs {
            let res = e.get_with(&p, &[("accept-language", lang)]).await;
            assert!(res.hit() && res.text() == format!("hello in {lang}"));
        }
    }

    pub async fn a_coalesced_response_is_not_shared_with_a_request_that_may_not_store_it(
        table: Table,
    ) {
        let e = env(table, |b| b.shared(true)).await;
        let p = e.origin.script("slow", |r| {
            let who = r.header("authorization").unwrap_or("anonymous").to_owned();
            Reply::ok(format!("for {who}"))
                .header("cache-control", "max-age=600")
                .delay(Duration::from_millis(1000))
        });
        let spawn = |headers: &'static [(&'static str, &'static str)]| {
            let client = e.client.clone();
            let url = e.url(&p);
            tokio::spawn(async move { send(&client, Method::GET, &url, headers).await })
        };
        let leader = spawn(&[]);
        // The followers join while the leader waits for the origin.
        eventually(|| e.origin.count(&p) == 1).await;
        let plain = spawn(&[]);
        let authorized = spawn(&[("authorization", "Bearer t")]);
        let leader = leader.await.unwrap();
        let plain = plain.await.unwrap();
        let authorized = authorized.await.unwrap();
        assert_eq!(leader.text(), "for anonymous");
        assert!(plain.facts.coalesced && plain.text() == "for anonymous");
        assert!(!authorized.facts.coalesced, "{:?}", authorized.facts);
        assert_eq!(authorized.text(), "for Bearer t", "its own response");
        assert_eq!(e.origin.count(&p), 2);
        assert_eq!(
            e.origin.requests(&p)[1].headers["authorization"],
            "Bearer t"
        );
    }

    // ---------------------------------------------------------------------------------------
    // Settings
    // ---------------------------------------------------------------------------------------

    pub async fn set_cookie_responses_follow_the_set_cookie_setting(table: Table) {
        async fn case(e: &Env) -> (Got, Got) {
            let p = e.origin.respond(
                "cookie",
                Reply::ok("with a cookie")
                    .header("cache-control", "max-age=600")
                    .header("set-cookie", "sid=1; Path=/"),
            );
            (e.get(&p).await, e.get(&p).await)
        }
        let private = env(table.clone(), |b| b.namespace("private")).await;
        let (first, second) = case(&private).await;
        assert!(first.header("set-cookie").is_some());
        assert!(second.hit(), "a private cache stores it");
        assert_eq!(
            second.header("set-cookie").as_deref(),
            Some("sid=1; Path=/")
        );

        let shared = env(table.clone(), |b| b.namespace("shared").shared(true)).await;
        let (first, second) = case(&shared).await;
        assert!(first.header("set-cookie").is_some());
        assert!(!second.hit(), "a shared cache does not store it by default");
        assert_eq!(shared.client.cache().response_count().await.unwrap(), 0);

        let strip = env(table.clone(), |b| {
            b.namespace("strip")
                .shared(true)
                .set_cookie(SetCookie::Strip)
        })
        .await;
        let (first, second) = case(&strip).await;
        assert_eq!(first.header("set-cookie").as_deref(), Some("sid=1; Path=/"));
        assert!(second.hit());
        assert_eq!(
            second.header("set-cookie"),
            None,
            "stored without its cookie"
        );
        assert_eq!(second.text(), "with a cookie");

        let store = env(table, |b| {
            b.namespace("store")
                .shared(true)
                .set_cookie(SetCookie::Store)
        })
        .await;
        let (_, second) = case(&store).await;
        assert!(second.hit());
        assert_eq!(
            second.header("set-cookie").as_deref(),
            Some("sid=1; Path=/")
        );
    }

    pub async fn do_not_cache_stores_only_responses_with_explicit_freshness(table: Table) {
        let e = env(table, |b| b.expire_after(ExpireAfter::DoNotCache)).await;
        let explicit = e.origin.respond(
            "explicit",
            Reply::ok("x").header("cache-control", "max-age=60"),
        );
        e.get(&explicit).await;
        assert!(e.get(&explicit).await.hit());
        let expires = imf(e.origin.now() + Duration::from_secs(60));
        let dated = e
            .origin
            .respond("expires", Reply::ok("x").header("expires", expires));
        e.get(&dated).await;
        assert!(
            e.get(&dated).await.hit(),
            "Expires is explicit freshness too"
        );
        let lm = imf(e.origin.now() - Duration::from_secs(10 * DAY));
        for (name, reply) in [
            ("bare", Reply::ok("x")),
            ("validated", Reply::ok("x").header("etag", "\"e\"")),
            ("heuristic", Reply::ok("x").header("last-modified", lm)),
        ] {
            let p = e.origin.respond(name, reply);
            e.get(&p).await;
            assert!(!e.get(&p).await.hit(), "{name}");
            assert_eq!(e.origin.count(&p), 2, "{name}");
        }
        assert_eq!(e.client.cache().response_count().await.unwrap(), 2);
    }

    pub async fn keys_over_two_kilobytes_are_hashed_and_still_listed_counted_and_deleted(
        table: Table,
    ) {
        let e = env(table, |b| {
            b.key_fn(|req, _| format!("{}{}", "k".repeat(3000), req.uri.path()))
        })
        .await;
        let p = fresh_for(&e, "long", 600);
        let long_key = format!("{}{p}", "k".repeat(3000));
        let first = e.get(&p).await;
        assert_eq!(first.facts.cache_key.as_deref(), Some(long_key.as_str()));
        assert!(e.get(&p).await.hit());
        let cache = e.client.cache();
        let entries: Vec<_> = cache.entries().try_collect().await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key, long_key);
        assert_eq!(entries[0].url, e.url(&p));
        assert_eq!(cache.keys().await.unwrap(), vec![long_key.clone()]);
        assert_eq!(cache.response_count().await.unwrap(), 1);
        assert!(cache.contains_key(&long_key).await.unwrap());
        // Stored under its hash: no partition key is that long.
        let scanned = e
            .table
            .client()
            .scan()
            .table_name(e.table.name())
            .send()
            .await
            .unwrap();
        let pks: Vec<String> = scanned
            .items()
            .iter()
            .filter_map(|i| i.get(e.table.key_attribute()))
            .filter_map(|v| v.as_s().ok().cloned())
            .collect();
        assert!(pks.iter().all(|pk| pk.len() < 2048), "{pks:?}");
        assert!(pks.iter().any(|pk| pk.starts_with("http#")), "{pks:?}");

        assert_eq!(cache.delete_keys([&long_key]).await.unwrap(), 1);
        assert_eq!(cache.response_count().await.unwrap(), 0);
        assert!(!e.get(&p).await.hit());
        assert_eq!(cache.response_count().await.unwrap(), 1);
        assert!(cache.clear().await.unwrap() >= 1);
        assert_eq!(cache.response_count().await.unwrap(), 0);
        assert!(cache.keys().await.unwrap().is_empty());
        assert!(!e.get(&p).await.hit());
        assert_eq!(e.origin.count(&p), 3);
    }

    pub async fn the_middleware_invalidates_on_post_and_answers_conditionals_with_304(
        table: Table,
    ) {
        let origin = Origin::start().await;
        let clock = ManualClock::new();
        origin.follow_clock(&clock);
        let cache = HttpCache::builder()
            .clock(clock.clone())
            .build(table)
            .unwrap();
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(CacheMiddleware::new(cache.clone()))
            .build();
        let p = origin.script("r", |r| {
            if r.method == Method::POST {
                Reply::new(200, "posted")
            } else {
                Reply::ok(format!("version {}", r.n))
                    .header("cache-control", "max-age=600")
                    .header("etag", format!("\"v{}\"", r.n))
            }
        });
        let url = origin.url(&p);
        let get = |headers: &'static [(&'static str, &'static str)]| {
            let mut req = client.get(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            async move { Got::read(req.send().await.unwrap()).await }
        };
        assert!(!get(&[]).await.hit());
        assert!(get(&[]).await.hit());
        let res = get(&[("if-none-match", "\"v1\"")]).await;
        assert!(res.status == 304 && res.hit() && res.body.is_empty());
        assert_eq!(res.header("etag").as_deref(), Some("\"v1\""));
        let posted = client.post(&url).body("x").send().await.unwrap();
        assert_eq!(posted.status(), 200);
        let res = get(&[]).await;
        assert!(
            !res.hit() && res.text() == "version 3",
            "invalidated by the POST"
        );
        let res = get(&[("if-none-match", "\"v1\"")]).await;
        assert_eq!(res.status, 200, "v1 is no longer the stored representation");
        assert_eq!(res.text(), "version 3");
        let res = get(&[("if-none-match", "\"v3\"")]).await;
        assert!(res.status == 304 && res.hit());
        assert_eq!(origin.count(&p), 3);
        assert!(cache.stats().invalidated >= 1);
    }

    pub async fn a_304_never_updates_a_response_another_process_replaced_meanwhile(table: Table) {
        // Process A holds a stale v1 and revalidates it; the origin is slow to answer 304.
        // Meanwhile process B stores v2. A's 304 describes v1: it must not land on v2's body.
        let e = env(table, |b| b).await;
        let p = e.origin.script("race", |req| {
            if req.header("if-none-match") == Some("\"v1\"") {
                return Reply::new(304, "")
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=60")
                    .delay(Duration::from_millis(600));
            }
            let version = if req.n == 1 { "v1" } else { "v2" };
            Reply::ok(format!("body {version}"))
                .header("etag", format!("\"{version}\""))
                .header("cache-control", "max-age=60")
        });
        e.get(&p).await;
        e.advance(61);
        let a = {
            let client = e.client.clone();
            let url = e.url(&p);
            tokio::spawn(async move { send(&client, Method::GET, &url, &[]).await })
        };
        // Let A's conditional request reach the origin, then B replaces the response.
        eventually(|| e.origin.count(&p) == 2).await;
        let b = e.other_client(|b| b);
        let got = Got::read(b.get(e.url(&p)).force_refresh().send().await.unwrap()).await;
        assert_eq!(got.body, b"body v2");
        let a = a.await.unwrap();
        assert!(
            a.facts.revalidated && a.body == b"body v1",
            "A got what it revalidated"
        );
        let c = e.other_client(|b| b);
        let got = Got::read(c.get(e.url(&p)).send().await.unwrap()).await;
        assert!(got.hit() && got.body == b"body v2");
        assert_eq!(
            got.header("etag").as_deref(),
            Some("\"v2\""),
            "v2's body keeps v2's own headers"
        );
    }

    pub async fn a_shared_cache_does_not_store_a_response_the_client_was_redirected_to(
        table: Table,
    ) {
        // The client follows the redirect itself, so the cache never sees whether the redirect
        // may be shared: `/me` redirecting privately to one user's page must not be served
        // to everyone.
        let e = env(table.clone(), |b| b.shared(true)).await;
        let target = e.origin.respond(
            "page-42",
            Reply::ok("user 42").header("cache-control", "public, max-age=600"),
        );
        let me = e.origin.respond(
            "me",
            Reply::new(302, "")
                .header("location", target.clone())
                .header("cache-control", "private"),
        );
        assert_eq!(e.get(&me).await.body, b"user 42");
        assert!(!e.get(&me).await.hit());
        assert_eq!(e.origin.count(&me), 2);
        // A private cache (one user) keeps its old convenience: stored under the asked URL.
        let private = env(table, |b| b.namespace("private")).await;
        let target = private.origin.respond(
            "page-42",
            Reply::ok("user 42").header("cache-control", "public, max-age=600"),
        );
        let me = private
            .origin
            .respond("me", Reply::new(302, "").header("location", target));
        private.get(&me).await;
        assert!(private.get(&me).await.hit());
    }

    pub async fn a_redirect_alias_never_replaces_a_response_stored_for_the_final_url(table: Table) {
        let e = env(table, |b| b).await;
        let target = e.origin.script("final", |req| {
            Reply::ok(format!("final {}", req.n)).header("cache-control", "max-age=600")
        });
        let from = e.origin.respond(
            "from",
            Reply::new(301, "").header("location", target.clone()),
        );
        assert_eq!(e.get(&target).await.body, b"final 1");
        // Following the redirect fetches the final URL again ("final 2"), stored under `from`;
        // the alias it would write under the final URL's key must not replace "final 1".
        assert_eq!(e.get(&from).await.body, b"final 2");
        let again = e.get(&target).await;
        assert!(again.hit() && again.body == b"final 1", "{:?}", again.body);
        assert!(e.get(&from).await.hit());
    }

    pub async fn method_override_headers_only_ever_turn_caching_off(table: Table) {
        let e = env(table, |b| b).await;
        let p = e.origin.script("override", |req| {
            Reply::ok(format!("{} {}", req.method, req.n)).header("cache-control", "max-age=600")
        });
        // A POST claiming to be a GET is still a POST: never stored, never served from cache.
        for _ in 0..2 {
            let got = e
                .send(Method::POST, &p, &[("x-http-method-override", "GET")])
                .await;
            assert!(!got.hit());
        }
        assert_eq!(e.origin.count(&p), 2);
        // A GET claiming to be a DELETE is not served from cache, and invalidates.
        e.get(&p).await;
        assert!(e.get(&p).await.hit());
        let got = e
            .get_with(&p, &[("x-http-method-override", "DELETE")])
            .await;
        assert!(!got.hit());
        assert!(
            !e.get(&p).await.hit(),
            "the override's DELETE invalidated it"
        );
    }

    pub async fn requests_with_preconditions_on_the_resource_go_to_the_origin(table: Table) {
        let e = env(table, |b| b).await;
        let p = e.origin.script("precondition", |req| {
            if req.header("if-match").is_some_and(|m| m != "\"a\"") {
                return Reply::new(412, "");
            }
            Reply::ok("a")
                .header("etag", "\"a\"")
                .header("cache-control", "max-age=600")
        });
        e.get(&p).await;
        assert!(e.get(&p).await.hit());
        let got = e.get_with(&p, &[("if-match", "\"nope\"")]).await;
        assert!(got.status == 412 && !got.hit(), "evaluated by the origin");
        let got = e
            .get_with(
                &p,
                &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            )
            .await;
        assert!(!got.hit());
        assert_eq!(e.origin.count(&p), 3);
    }

    pub async fn a_range_of_a_chunked_body_reads_only_the_chunks_it_needs(table: Table) {
        // 1.5 MB of incompressible bytes: a head and 5 chunks of 350 KiB. A range inside one
        // chunk reads the head and that chunk; a whole GET reads them all.
        let e = env(table.clone(), |b| b).await;
        let p = "/random-etag/1500000";
        let full = e.get(p).await.body;
        let units = || table.consumed_capacity().read_units;
        let before = units();
        assert!(e.get(p).await.hit());
        let whole = units() - before;
        let before = units();
        let res = e.get_with(p, &[("range", "bytes=400000-400009")]).await;
        let ranged = units() - before;
        assert!(res.hit() && res.status == 206 && res.body == full[400_000..400_010]);
        if whole > 0.0 {
            // Engines that report capacity: a chunk is 350 KiB, so 1 of 5 chunks is well under
            // half of the whole read.
            assert!(
                ranged < whole / 2.0,
                "range {ranged} units, whole {whole} units"
            );
        } else {
            eprintln!("this engine reports no consumed capacity; range reads not measured");
        }
    }
}
