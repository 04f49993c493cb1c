//! The in-process tier, on every engine: coherence with this process's own writes, the
//! staleness bound for other processes' writes, expiry never exceeded, and hits that cost no
//! DynamoDB call.

mod common;

conformance!(
    own_writes_and_deletes_are_seen_at_once,
    another_processs_change_is_seen_within_the_staleness_bound,
    a_kept_value_never_outlives_its_expiry,
    a_kept_value_costs_no_read,
    shared_reads_decode_once_and_follow_writes,
    an_unbounded_staleness_bound_is_accepted,
    http_hits_from_the_tier_cost_no_read,
    http_own_invalidations_and_purges_are_seen_at_once,
    http_another_processs_purge_is_seen_within_the_staleness_bound,
    a_kept_response_is_never_served_past_its_freshness,
);

mod suite {
    use std::time::Duration;

    use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
    use dynacache::{Cache, Expiry, InProcessTier, ManualClock, Table};

    use crate::common::origin::{Origin, Reply};

    fn tier(ttl: Duration) -> InProcessTier {
        InProcessTier::new(16 << 20).l1_ttl(ttl)
    }

    fn reads(table: &Table) -> f64 {
        table.consumed_capacity().read_units
    }

    pub async fn own_writes_and_deletes_are_seen_at_once(table: Table) {
        let c = Cache::builder()
            .in_process(tier(Duration::from_secs(3600)))
            .build(table)
            .unwrap();
        c.set("k", &"v1").await.unwrap();
        assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v1"));
        c.set("k", &"v2").await.unwrap();
        assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v2"));
        c.delete("k").await.unwrap();
        assert_eq!(c.get::<String>("k").await.unwrap(), None);
        assert!(!c.has("k").await.unwrap());
        c.set("n", &1).await.unwrap();
        assert_eq!(c.get::<i64>("n").await.unwrap(), Some(1));
        c.inc("n", 5).await.unwrap();
        assert_eq!(c.get::<i64>("n").await.unwrap(), Some(6));
        c.set_many([("a", 1), ("b", 2)], Expiry::Default)
            .await
            .unwrap();
        assert_eq!(
            c.get_many::<i64, _>(["a", "b"]).await.unwrap(),
            vec![Some(1), Some(2)]
        );
        c.set_many([("a", 3), ("b", 4)], Expiry::Default)
            .await
            .unwrap();
        assert_eq!(
            c.get_many::<i64, _>(["a", "b"]).await.unwrap(),
            vec![Some(3), Some(4)]
        );
        c.delete_many(["a"]).await.unwrap();
        assert_eq!(c.get::<i64>("a").await.unwrap(), None);
        assert!(c.add("a", &7).await.unwrap());
        assert_eq!(c.get::<i64>("a").await.unwrap(), Some(7));
        c.clear().await.unwrap();
        assert_eq!(c.get::<i64>("b").await.unwrap(), None);
    }

    pub async fn another_processs_change_is_seen_within_the_staleness_bound(table: Table) {
        let bound = Duration::from_millis(200);
        let here = Cache::builder()
            .in_process(tier(bound))
            .build(table.clone())
            .unwrap();
        let there = Cache::new(table).unwrap();
        there.set("k", &"v1").await.unwrap();
        assert_eq!(
            here.get::<String>("k").await.unwrap().as_deref(),
            Some("v1")
        );
        there.set("k", &"v2").await.unwrap();
        // Within the bound `here` may still answer v1; past it, it must answer v2.
        tokio::time::sleep(bound * 2).await;
        assert_eq!(
            here.get::<String>("k").await.unwrap().as_deref(),
            Some("v2")
        );
        there.delete("k").await.unwrap();
        tokio::time::sleep(bound * 2).await;
        assert_eq!(here.get::<String>("k").await.unwrap(), None);
    }

    pub async fn a_kept_value_never_outlives_its_expiry(table: Table) {
        let clock = ManualClock::new();
        let c = Cache::builder()
            .clock(clock.clone())
            .in_process(tier(Duration::from_secs(3600)))
            .build(table)
            .unwrap();
        c.set_with("k", &"v", Expiry::After(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(c.get::<String>("k").await.unwrap().is_some());
        clock.advance(Duration::from_secs(9));
        assert!(c.get::<String>("k").await.unwrap().is_some());
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            c.get::<String>("k").await.unwrap(),
            None,
            "expired: gone from memory too"
        );
    }

    pub async fn shared_reads_decode_once_and_follow_writes(table: Table) {
        use std::sync::Arc;
        let c = Cache::builder()
            .in_process(tier(Duration::from_secs(3600)))
            .build(table.clone())
            .unwrap();
        let plain = Cache::new(table).unwrap();
        c.set("k", &vec!["a".to_owned(), "b".to_owned()])
            .await
            .unwrap();
        let first: Arc<Vec<String>> = c.get_shared("k").await.unwrap().unwrap();
        assert_eq!(*first, ["a", "b"]);
        let again: Arc<Vec<String>> = c.get_shared("k").await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "a tier hit shares the decoded value"
        );
        // Another type asked of the same value is decoded for that type, not mixed up.
        let other: Arc<Vec<serde_json::Value>> = c.get_shared("k").await.unwrap().unwrap();
        assert_eq!(*other, [serde_json::json!("a"), serde_json::json!("b")]);
        let wrong = c.get_shared::<u64>("k").await;
        assert!(
            wrong.is_err(),
            "a value of another shape is an error, not a panic"
        );
        let back: Arc<Vec<String>> = c.get_shared("k").await.unwrap().unwrap();
        assert_eq!(*back, ["a", "b"]);
        // This process's write replaces the shared value at once; the old Arc keeps its data.
        c.set("k", &vec!["c".to_owned()]).await.unwrap();
        let after: Arc<Vec<String>> = c.get_shared("k").await.unwrap().unwrap();
        assert_eq!(*after, ["c"]);
        assert_eq!(*first, ["a", "b"]);
        c.delete("k").await.unwrap();
        assert!(c.get_shared::<Vec<String>>("k").await.unwrap().is_none());
        // Without a tier, get_shared reads the table like get.
        plain.set("p", &5u32).await.unwrap();
        assert_eq!(
            plain.get_shared::<u32>("p").await.unwrap().as_deref(),
            Some(&5)
        );
        assert!(plain.get_shared::<u32>("missing").await.unwrap().is_none());
    }

    pub async fn an_unbounded_staleness_bound_is_accepted(table: Table) {
        // `l1_ttl(Duration::MAX)` means "no bound": it must build, not panic.
        let c = Cache::builder()
            .in_process(tier(Duration::MAX))
            .build(table)
            .unwrap();
        c.set("k", &1).await.unwrap();
        assert_eq!(c.get::<i32>("k").await.unwrap(), Some(1));
    }

    pub async fn a_kept_value_costs_no_read(table: Table) {
        let c = Cache::builder()
            .in_process(tier(Duration::from_secs(3600)))
            .build(table.clone())
            .unwrap();
        c.set("k", &vec![7u8; 5000]).await.unwrap();
        let before = reads(&table);
        assert!(c.get::<Vec<u8>>("k").await.unwrap().is_some());
        let first = reads(&table) - before;
        for _ in 0..10 {
            assert!(c.get::<Vec<u8>>("k").await.unwrap().is_some());
            assert!(c.has("k").await.unwrap());
        }
        let rest = reads(&table) - before - first;
        if first > 0.0 {
            assert_eq!(rest, 0.0, "hits from memory read nothing");
        }
    }

    struct Web {
        origin: Origin,
        client: CachedClient,
        table: Table,
    }

    async fn web(table: Table, ttl: Duration, clock: Option<&ManualClock>) -> Web {
        let origin = Origin::start().await;
        let mut builder = HttpCache::builder()
            .in_process(tier(ttl))
            .write_wait(Duration::from_secs(60));
        if let Some(clock) = clock {
            origin.follow_clock(clock);
            builder = builder.clock(clock.clone());
        }
        let cache = builder.build(table.clone()).unwrap();
        Web {
            origin,
            client: CachedClient::new(reqwest::Client::new(), cache),
            table,
        }
    }

    impl Web {
        async fn get(&self, path: &str) -> (bool, String) {
            let res = self.client.get(self.origin.url(path)).send().await.unwrap();
            let hit = res.from_cache();
            (hit, res.text().await.unwrap())
        }
    }

    fn counted(origin: &Origin, name: &str) -> String {
        origin.script(name, |req| {
            Reply::ok(format!("version {}", req.n)).header("cache-control", "max-age=600")
        })
    }

    pub async fn http_hits_from_the_tier_cost_no_read(table: Table) {
        let w = web(table, Duration::from_secs(3600), None).await;
        let p = counted(&w.origin, "r");
        w.get(&p).await;
        let before = reads(&w.table);
        for _ in 0..10 {
            assert_eq!(w.get(&p).await, (true, "version 1".to_owned()));
        }
        assert_eq!(reads(&w.table), before, "served from memory");
        assert_eq!(w.origin.count(&p), 1);
    }

    pub async fn http_own_invalidations_and_purges_are_seen_at_once(table: Table) {
        let w = web(table, Duration::from_secs(3600), None).await;
        let p = counted(&w.origin, "r");
        w.get(&p).await;
        assert!(w.get(&p).await.0);
        // A POST through this cache invalidates at once.
        w.client.post(w.origin.url(&p)).send().await.unwrap();
        assert_eq!(w.get(&p).await, (false, "version 3".to_owned()));
        assert!(w.get(&p).await.0);
        // So does a purge through the inspection API.
        let cache = w.client.cache();
        assert_eq!(cache.delete_urls([w.origin.url(&p)]).await.unwrap(), 1);
        assert_eq!(w.get(&p).await, (false, "version 4".to_owned()));
        cache.clear().await.unwrap();
        assert!(!w.get(&p).await.0);
    }

    pub async fn http_another_processs_purge_is_seen_within_the_staleness_bound(table: Table) {
        let bound = Duration::from_millis(200);
        let w = web(table.clone(), bound, None).await;
        let p = counted(&w.origin, "r");
        w.get(&p).await;
        assert!(w.get(&p).await.0);
        let other = HttpCache::builder().build(table).unwrap();
        assert_eq!(other.delete_urls([w.origin.url(&p)]).await.unwrap(), 1);
        tokio::time::sleep(bound * 2).await;
        assert_eq!(w.get(&p).await, (false, "version 2".to_owned()));
    }

    pub async fn a_kept_response_is_never_served_past_its_freshness(table: Table) {
        let clock = ManualClock::new();
        let w = web(table, Duration::from_secs(3600), Some(&clock)).await;
        let p = w.origin.script("short", |req| {
            Reply::ok(format!("version {}", req.n)).header("cache-control", "max-age=5")
        });
        w.get(&p).await;
        assert!(w.get(&p).await.0);
        clock.advance(Duration::from_secs(6));
        let res = w.client.get(w.origin.url(&p)).send().await.unwrap();
        let facts = res.cache_facts();
        assert!(!facts.from_cache || facts.stale, "{facts:?}");
        assert_eq!(res.text().await.unwrap(), "version 2");
    }
}
