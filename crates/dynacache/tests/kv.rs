//! The key/value cache's conformance suite, run on every engine.

mod common;

conformance!(
    typed_values_round_trip_exactly,
    missing_keys_are_none,
    set_replaces_the_value,
    add_stores_only_when_absent_or_expired,
    add_is_atomic_under_concurrent_callers,
    delete_reports_whether_a_live_value_was_there,
    has_sees_only_live_values,
    expired_items_are_misses_before_the_ttl_sweeper_runs,
    expiry_forms_default_after_at_and_never,
    counters_are_atomic_under_concurrent_increments,
    counters_keep_their_expiry_and_restart_when_expired,
    integers_set_as_values_can_be_incremented,
    inc_on_a_value_that_is_not_a_counter_is_an_error,
    an_increment_past_the_64_bit_range_is_refused_and_the_counter_kept,
    ten_thousand_keys_through_set_many_get_many_and_clear,
    get_many_keeps_order_and_duplicates,
    delete_many_removes_only_the_given_keys,
    clear_leaves_other_namespaces_untouched,
    keys_and_len_read_past_the_first_megabyte,
    values_of_zero_and_399_kilobytes_round_trip,
    values_of_5_megabytes_round_trip_compressed_or_not,
    a_64_megabyte_value_round_trips,
    concurrent_writers_of_a_large_value_never_show_a_mix,
    a_large_value_replaced_by_a_small_one_while_read_is_never_an_error,
    an_interrupted_large_write_leaves_the_old_value_and_vacuum_reclaims_its_chunks,
    replaced_and_deleted_large_values_leave_no_chunks,
    long_and_binary_keys_are_stored_without_collisions,
    bad_keys_are_typed_errors,
    values_that_fail_to_serialize_are_typed_errors,
    reading_as_the_wrong_type_is_a_typed_error,
    corrupt_or_tampered_items_are_errors_not_panics,
    values_over_the_configured_maximum_are_refused,
    the_maximum_bounds_the_decoded_size_so_every_accepted_value_reads_back,
    created_tables_have_the_documented_schema_and_ttl,
    strongly_consistent_reads_see_their_own_writes,
    take_pops_a_value_for_exactly_one_caller,
    touch_slides_the_expiry_with_few_writes,
    ttl_tells_what_is_left,
    entries_streams_every_live_value_with_its_key,
    copy_to_another_namespace_keeps_values_expiry_and_chunks,
);

mod suite {
    use std::collections::{BTreeMap, HashMap};
    use std::time::{Duration, SystemTime};

    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue;
    use dynacache::{Cache, Error, Expiry, ManualClock, Table};
    use futures::{StreamExt, TryStreamExt};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Circle { radius: f64 },
        Square(u32),
        Empty,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u64,
        name: String,
        tags: Vec<String>,
        scores: BTreeMap<String, f32>,
        shape: Shape,
        parent: Option<Box<Record>>,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    }

    fn record() -> Record {
        Record {
            id: u64::MAX,
            name: "Zoë 🦀 \u{0}".into(),
            tags: vec!["a".into(), "".into()],
            scores: BTreeMap::from([("x".into(), 1.5), ("y".into(), -0.0)]),
            shape: Shape::Circle { radius: 2.25 },
            parent: Some(Box::new(Record {
                id: 0,
                name: String::new(),
                tags: vec![],
                scores: BTreeMap::new(),
                shape: Shape::Empty,
                parent: None,
                blob: vec![],
            })),
            blob: (0..=255).collect(),
        }
    }

    fn cache(table: &Table) -> Cache {
        Cache::new(table.clone()).unwrap()
    }

    fn clocked(table: &Table, clock: &ManualClock) -> Cache {
        Cache::builder()
            .clock(clock.clone())
            .build(table.clone())
            .unwrap()
    }

    /// The raw item under a partition key, read strongly.
    async fn raw(table: &Table, pk: &str) -> Option<HashMap<String, AttributeValue>> {
        table
            .client()
            .get_item()
            .table_name(table.name())
            .key(table.key_attribute(), AttributeValue::S(pk.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    async fn raw_put(table: &Table, item: HashMap<String, AttributeValue>) {
        table
            .client()
            .put_item()
            .table_name(table.name())
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    /// Every partition key in the table, across pages.
    async fn all_keys(table: &Table) -> Vec<String> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = table
                .client()
                .scan()
                .table_name(table.name())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let pk = item[table.key_attribute()].as_s().unwrap();
                // The table's metadata index marker is not a cache item.
                if pk != "~meta" {
                    out.push(pk.clone());
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }

    fn random_bytes(len: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(len as u64);
        let mut v = vec![0u8; len];
        rng.fill(&mut v);
        v
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    struct Bytes(#[serde(with = "serde_bytes")] Vec<u8>);

    pub async fn typed_values_round_trip_exactly(table: Table) {
        let c = cache(&table);
        c.set("record", &record()).await.unwrap();
        assert_eq!(c.get::<Record>("record").await.unwrap(), Some(record()));

        c.set("float", &0.1f64).await.unwrap();
        assert_eq!(c.get::<f64>("float").await.unwrap(), Some(0.1));
        c.set("big", &u64::MAX).await.unwrap();
        assert_eq!(c.get::<u64>("big").await.unwrap(), Some(u64::MAX));
        c.set("neg", &i64::MIN).await.unwrap();
        assert_eq!(c.get::<i64>("neg").await.unwrap(), Some(i64::MIN));
        c.set("bool", &false).await.unwrap();
        assert_eq!(c.get::<bool>("bool").await.unwrap(), Some(false));
        c.set("none", &None::<u8>).await.unwrap();
        assert_eq!(c.get::<Option<u8>>("none").await.unwrap(), Some(None));
        c.set("unit", &()).await.unwrap();
        assert_eq!(c.get::<()>("unit").await.unwrap(), Some(()));
        c.set("empty", "").await.unwrap();
        assert_eq!(c.get::<String>("empty").await.unwrap(), Some(String::new()));
        let map: HashMap<u32, Vec<Shape>> =
            HashMap::from([(1, vec![Shape::Square(3)]), (2, vec![])]);
        c.set("map", &map).await.unwrap();
        assert_eq!(
            c.get::<HashMap<u32, Vec<Shape>>>("map").await.unwrap(),
            Some(map)
        );
        let json = serde_json::json!({"a": [1, 2.5, "x", null, {"b": true}]});
        c.set("json", &json).await.unwrap();
        assert_eq!(
            c.get::<serde_json::Value>("json").await.unwrap(),
            Some(json)
        );
    }

    pub async fn missing_keys_are_none(table: Table) {
        let c = cache(&table);
        assert_eq!(c.get::<String>("nope").await.unwrap(), None);
        assert!(!c.has("nope").await.unwrap());
        assert!(!c.delete("nope").await.unwrap());
    }

    pub async fn set_replaces_the_value(table: Table) {
        let c = cache(&table);
        c.set("k", "one").await.unwrap();
        c.set("k", &Shape::Square(2)).await.unwrap();
        assert_eq!(c.get::<Shape>("k").await.unwrap(), Some(Shape::Square(2)));
        assert_eq!(c.len().await.unwrap(), 1);
    }

    pub async fn add_stores_only_when_absent_or_expired(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        assert!(
            c.add_with("k", "first", Duration::from_secs(10).into())
                .await
                .unwrap()
        );
        assert!(!c.add("k", "second").await.unwrap());
        assert_eq!(
            c.get::<String>("k").await.unwrap().as_deref(),
            Some("first")
        );
        clock.advance(Duration::from_secs(11));
        assert!(
            c.add("k", "third").await.unwrap(),
            "an expired value does not block add"
        );
        assert_eq!(
            c.get::<String>("k").await.unwrap().as_deref(),
            Some("third")
        );
        // A value that never expires blocks add forever.
        clock.advance(Duration::from_secs(1_000_000));
        assert!(!c.add("k", "fourth").await.unwrap());
    }

    pub async fn add_is_atomic_under_concurrent_callers(table: Table) {
        let c = cache(&table);
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.add("lock", &i).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += t.await.unwrap() as u32;
        }
        assert_eq!(winners, 1, "exactly one add wins");
    }

    pub async fn delete_reports_whether_a_live_value_was_there(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        c.set("k", "v").await.unwrap();
        assert!(c.delete("k").await.unwrap());
        assert!(!c.delete("k").await.unwrap());
        assert_eq!(c.get::<String>("k").await.unwrap(), None);
        c.set_with("old", "v", Duration::from_secs(1).into())
            .await
            .unwrap();
        clock.advance(Duration::from_secs(5));
        assert!(
            !c.delete("old").await.unwrap(),
            "an expired value was not live"
        );
        assert!(all_keys(&table).await.is_empty(), "but its item is gone");
    }

    pub async fn has_sees_only_live_values(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        c.set_with("k", &1.5, Duration::from_secs(60).into())
            .await
            .unwrap();
        assert!(c.has("k").await.unwrap());
        clock.advance(Duration::from_secs(61));
        assert!(!c.has("k").await.unwrap());
    }

    pub async fn expired_items_are_misses_before_the_ttl_sweeper_runs(table: Table) {
        let clock = ManualClock::new();
        let c = Cache::builder()
            .clock(clock.clone())
            .ttl_grace(Duration::from_secs(600))
            .build(table.clone())
            .unwrap();
        c.set_with("k", "v", Duration::from_secs(30).into())
            .await
            .unwrap();
        let item = raw(&table, "kv:k").await.expect("stored");
        let ttl: i64 = item[table.ttl_attribute()].as_n().unwrap().parse().unwrap();
        let expires: i64 = item["e"].as_n().unwrap().parse().unwrap();
        assert!(
            ttl * 1000 >= expires + 600_000,
            "TTL is later than expiry by the grace"
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(c.get::<String>("k").await.unwrap(), None);
        assert_eq!(c.get_many::<String, _>(["k"]).await.unwrap(), vec![None]);
        assert_eq!(c.len().await.unwrap(), 0);
        assert!(c.keys().try_collect::<Vec<_>>().await.unwrap().is_empty());
        assert!(
            raw(&table, "kv:k").await.is_some(),
            "the item is still in the table"
        );
    }

    pub async fn expiry_forms_default_after_at_and_never(table: Table) {
        let clock = ManualClock::new();
        let c = Cache::builder()
            .clock(clock.clone())
            .default_ttl(Duration::from_secs(100))
            .build(table.clone())
            .unwrap();
        let at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(clock_now(&clock) as u64)
            + Duration::from_secs(300);
        c.set("default", &1.0).await.unwrap();
        c.set_with("after", &1.0, Expiry::After(Duration::from_secs(200)))
            .await
            .unwrap();
        c.set_with("at", &1.0, Expiry::At(at)).await.unwrap();
        c.set_with("never", &1.0, Expiry::Never).await.unwrap();
        c.set_with("zero", &1.0, Expiry::After(Duration::ZERO))
            .await
            .unwrap();
        assert!(
            !raw(&table, "kv:never")
                .await
                .unwrap()
                .contains_key(table.ttl_attribute())
        );
        let live = |c: Cache| async move {
            let mut v = Vec::new();
            for k in ["default", "after", "at", "never", "zero"] {
                if c.has(k).await.unwrap() {
                    v.push(k);
                }
            }
            v
        };
        assert_eq!(live(c.clone()).await, ["default", "after", "at", "never"]);
        clock.advance(Duration::from_secs(150));
        assert_eq!(live(c.clone()).await, ["after", "at", "never"]);
        clock.advance(Duration::from_secs(100));
        assert_eq!(live(c.clone()).await, ["at", "never"]);
        clock.advance(Duration::from_secs(100));
        assert_eq!(live(c.clone()).await, ["never"]);
    }

    fn clock_now(clock: &ManualClock) -> i64 {
        use dynacache::Clock;
        clock.now_millis()
    }

    pub async fn counters_are_atomic_under_concurrent_increments(table: Table) {
        let c = cache(&table);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        c.inc("hits", 1).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(c.get::<i64>("hits").await.unwrap(), Some(200));
        assert_eq!(c.dec("hits", 50).await.unwrap(), 150);
        assert_eq!(c.inc("fresh", -3).await.unwrap(), -3);
    }

    pub async fn counters_keep_their_expiry_and_restart_when_expired(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        assert_eq!(
            c.inc_with("rate", 1, Duration::from_secs(60).into())
                .await
                .unwrap(),
            1
        );
        let expires = raw(&table, "kv:rate").await.unwrap()["e"].clone();
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            c.inc_with("rate", 1, Duration::from_secs(60).into())
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            raw(&table, "kv:rate").await.unwrap()["e"],
            expires,
            "expiry kept"
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(c.get::<i64>("rate").await.unwrap(), None);
        assert_eq!(
            c.inc_with("rate", 5, Duration::from_secs(60).into())
                .await
                .unwrap(),
            5,
            "an expired counter starts again"
        );
        assert_ne!(
            raw(&table, "kv:rate").await.unwrap()["e"],
            expires,
            "with a new expiry"
        );
    }

    pub async fn integers_set_as_values_can_be_incremented(table: Table) {
        let c = cache(&table);
        c.set("n", &10u16).await.unwrap();
        assert_eq!(c.inc("n", 5).await.unwrap(), 15);
        assert_eq!(c.get::<u16>("n").await.unwrap(), Some(15));
        c.set_many([("a", 1), ("b", 2)], Expiry::Default)
            .await
            .unwrap();
        assert_eq!(c.inc("b", 1).await.unwrap(), 3);
    }

    pub async fn an_increment_past_the_64_bit_range_is_refused_and_the_counter_kept(table: Table) {
        let c = cache(&table);
        c.set("max", &i64::MAX).await.unwrap();
        let err = c.inc("max", 1).await.unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        assert_eq!(c.get::<i64>("max").await.unwrap(), Some(i64::MAX));
        assert_eq!(c.dec("max", 1).await.unwrap(), i64::MAX - 1);
        c.set("min", &i64::MIN).await.unwrap();
        assert!(c.dec("min", 1).await.unwrap_err().is_invalid_input());
        assert_eq!(c.get::<i64>("min").await.unwrap(), Some(i64::MIN));
        assert_eq!(c.inc("min", 5).await.unwrap(), i64::MIN + 5);
    }

    pub async fn inc_on_a_value_that_is_not_a_counter_is_an_error(table: Table) {
        let c = cache(&table);
        c.set("s", "text").await.unwrap();
        let err = c.inc("s", 1).await.unwrap_err();
        assert!(matches!(err, Error::NotACounter { .. }), "{err:?}");
        assert_eq!(
            c.get::<String>("s").await.unwrap().as_deref(),
            Some("text"),
            "untouched"
        );
    }

    pub async fn ten_thousand_keys_through_set_many_get_many_and_clear(table: Table) {
        let c = cache(&table);
        let entries: Vec<(String, String)> = (0..10_000)
            .map(|i| (format!("key-{i}"), format!("value-{i}")))
            .collect();
        c.set_many(entries.iter().map(|(k, v)| (k, v)), Expiry::Default)
            .await
            .unwrap();
        assert_eq!(c.len().await.unwrap(), 10_000);
        let got: Vec<Option<String>> = c.get_many(entries.iter().map(|(k, _)| k)).await.unwrap();
        let want: Vec<Option<String>> = entries.iter().map(|(_, v)| Some(v.clone())).collect();
        assert_eq!(got, want);
        assert_eq!(c.clear().await.unwrap(), 10_000);
        assert_eq!(c.len().await.unwrap(), 0);
        assert!(all_keys(&table).await.is_empty());
    }

    pub async fn get_many_keeps_order_and_duplicates(table: Table) {
        let c = cache(&table);
        c.set("a", "A").await.unwrap();
        c.set("b", "B").await.unwrap();
        let got: Vec<Option<String>> = c.get_many(["b", "missing", "a", "b"]).await.unwrap();
        assert_eq!(
            got,
            [Some("B".into()), None, Some("A".into()), Some("B".into())]
        );
        let big = random_bytes(1_000_000);
        c.set("large", &Bytes(big.clone())).await.unwrap();
        let got: Vec<Option<Bytes>> = c.get_many(["large"]).await.unwrap();
        assert_eq!(got, [Some(Bytes(big))]);
    }

    pub async fn delete_many_removes_only_the_given_keys(table: Table) {
        let c = cache(&table);
        c.set_many((0..60).map(|i| (format!("k{i}"), i)), Expiry::Default)
            .await
            .unwrap();
        c.delete_many((0..50).map(|i| format!("k{i}")))
            .await
            .unwrap();
        let mut left: Vec<String> = c
            .keys()
            .map_ok(|k| k.to_string())
            .try_collect()
            .await
            .unwrap();
        left.sort();
        let mut want: Vec<String> = (50..60).map(|i| format!("k{i}")).collect();
        want.sort();
        assert_eq!(left, want);
    }

    pub async fn clear_leaves_other_namespaces_untouched(table: Table) {
        let a = Cache::builder()
            .namespace("a")
            .build(table.clone())
            .unwrap();
        let ab = Cache::builder()
            .namespace("ab")
            .build(table.clone())
            .unwrap();
        a.set("k", "a's").await.unwrap();
        a.set(vec![0xffu8], "a's binary").await.unwrap();
        a.set("large", &Bytes(random_bytes(800_000))).await.unwrap();
        ab.set("k", "ab's").await.unwrap();
        ab.set("large", &Bytes(random_bytes(800_000)))
            .await
            .unwrap();
        // An item of another application in the same table.
        raw_put(
            &table,
            HashMap::from([(
                table.key_attribute().to_owned(),
                AttributeValue::S("a".into()),
            )]),
        )
        .await;
        assert!(a.clear().await.unwrap() >= 3);
        assert_eq!(a.len().await.unwrap(), 0);
        assert_eq!(ab.len().await.unwrap(), 2);
        assert_eq!(
            ab.get::<String>("k").await.unwrap().as_deref(),
            Some("ab's")
        );
        assert!(ab.get::<Bytes>("large").await.unwrap().is_some());
        assert!(raw(&table, "a").await.is_some(), "foreign item kept");
        assert!(
            all_keys(&table)
                .await
                .iter()
                .all(|k| !k.starts_with("a:") && !k.starts_with("a#") && !k.starts_with("a!"))
        );
    }

    pub async fn keys_and_len_read_past_the_first_megabyte(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        let value = "x".repeat(6_000);
        let c_uncompressed = Cache::builder()
            .clock(clock.clone())
            .compress_from(None)
            .build(table.clone())
            .unwrap();
        c_uncompressed
            .set_many(
                (0..1200).map(|i| (format!("k{i:04}"), &value)),
                Expiry::Default,
            )
            .await
            .unwrap();
        c.set_many(
            (0..50).map(|i| (format!("soon{i}"), 1.5)),
            Duration::from_secs(5).into(),
        )
        .await
        .unwrap();
        clock.advance(Duration::from_secs(6));
        // 1,200 values of 6,000 bytes are 7.2 MB: with the default four parallel scan segments,
        // each segment holds about 1.8 MB, more than one 1 MB page.
        assert_eq!(c.len().await.unwrap(), 1200);
        let mut keys: Vec<String> = c
            .keys()
            .map_ok(|k| k.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        let want: Vec<String> = (0..1200).map(|i| format!("k{i:04}")).collect();
        assert_eq!(keys, want);
        // And `clear` deletes past the first page of every segment too.
        assert_eq!(c.clear().await.unwrap(), 1250);
        assert_eq!(c.len().await.unwrap(), 0);
    }

    pub async fn values_of_zero_and_399_kilobytes_round_trip(table: Table) {
        let c = cache(&table);
        c.set("zero", &Bytes(vec![])).await.unwrap();
        assert_eq!(c.get::<Bytes>("zero").await.unwrap(), Some(Bytes(vec![])));
        let v = random_bytes(399 * 1024);
        c.set("399k", &Bytes(v.clone())).await.unwrap();
        assert_eq!(c.get::<Bytes>("399k").await.unwrap(), Some(Bytes(v)));
    }

    pub async fn values_of_5_megabytes_round_trip_compressed_or_not(table: Table) {
        let c = cache(&table);
        let random = random_bytes(5 * 1024 * 1024);
        c.set("random", &Bytes(random.clone())).await.unwrap();
        assert_eq!(c.get::<Bytes>("random").await.unwrap(), Some(Bytes(random)));
        let text: String = (0..5 * 1024 * 1024 / 16)
            .map(|i| format!("{:015}\n", i as u64 * 7919))
            .collect();
        c.set("text", &text).await.unwrap();
        assert_eq!(c.get::<String>("text").await.unwrap(), Some(text));
        let stored = raw(&table, "kv:text").await.unwrap();
        assert_eq!(
            stored["f"].as_s().unwrap(),
            "mz",
            "text is stored compressed"
        );
    }

    pub async fn a_64_megabyte_value_round_trips(table: Table) {
        let c = cache(&table);
        let v = random_bytes(64 * 1024 * 1024);
        c.set("huge", &Bytes(v.clone())).await.unwrap();
        let got = c.get::<Bytes>("huge").await.unwrap().expect("present");
        assert!(got.0 == v, "64 MB value differs");
        assert!(c.delete("huge").await.unwrap());
        assert!(all_keys(&table).await.is_empty(), "no chunk left behind");
    }

    pub async fn a_large_value_replaced_by_a_small_one_while_read_is_never_an_error(table: Table) {
        // A reader that follows a large value's head while another process replaces it with a
        // small value (or deletes it) must answer the small value (or a miss), not an error.
        let c = Cache::builder()
            .chunk_size(64 * 1024)
            .compress_from(None)
            .build(table)
            .unwrap();
        let size = 500 * 1024;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (c, done) = (c.clone(), done.clone());
            tokio::spawn(async move {
                for round in 0..12u8 {
                    c.set("v", &Bytes(vec![round; size])).await.unwrap();
                    c.set("v", &Bytes(vec![round; 3])).await.unwrap();
                    if round % 3 == 0 {
                        c.delete("v").await.unwrap();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (c, done) = (c.clone(), done.clone());
                tokio::spawn(async move {
                    let mut reads = 0u32;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        match c.get::<Bytes>("v").await {
                            Ok(Some(Bytes(v))) => {
                                assert!(v.len() == size || v.len() == 3, "{} bytes", v.len());
                                assert!(v.iter().all(|b| *b == v[0]), "a mix of two versions");
                            }
                            Ok(None) => {}
                            Err(e) => panic!("read {reads} failed: {e}"),
                        }
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    reads
                })
            })
            .collect();
        writer.await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
    }

    pub async fn concurrent_writers_of_a_large_value_never_show_a_mix(table: Table) {
        let c = Cache::builder()
            .chunk_size(64 * 1024)
            .compress_from(None)
            .build(table.clone())
            .unwrap();
        let size = 700 * 1024;
        c.set("hot", &Bytes(vec![0u8; size])).await.unwrap();
        let writers: Vec<_> = (1..=2u8)
            .map(|w| {
                let c = c.clone();
                tokio::spawn(async move {
                    for round in 0..6u8 {
                        let fill = w * 100 + round;
                        c.set("hot", &Bytes(vec![fill; size])).await.unwrap();
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut seen = 0;
                    for _ in 0..12 {
                        if let Some(Bytes(v)) = c.get::<Bytes>("hot").await.unwrap() {
                            assert_eq!(v.len(), size);
                            assert!(v.iter().all(|b| *b == v[0]), "a mix of two versions");
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let mut seen = 0;
        for r in readers {
            seen += r.await.unwrap();
        }
        assert!(seen > 0, "readers saw values");
        // Whatever won, only its chunks are left: 700 KB in 64 KB chunks = 11.
        let chunks = all_keys(&table)
            .await
            .into_iter()
            .filter(|k| k.starts_with("kv!"))
            .count();
        assert_eq!(chunks, 11);
    }

    pub async fn an_interrupted_large_write_leaves_the_old_value_and_vacuum_reclaims_its_chunks(
        table: Table,
    ) {
        let clock = ManualClock::new();
        let c = Cache::builder()
            .clock(clock.clone())
            .compress_from(None)
            .build(table.clone())
            .unwrap();
        let old = random_bytes(900_000);
        c.set("v", &Bytes(old.clone())).await.unwrap();
        // A writer that died after writing two chunks of a new version, before its head.
        for i in 0..2 {
            raw_put(
                &table,
                HashMap::from([
                    (
                        table.key_attribute().to_owned(),
                        AttributeValue::S(format!("kv!deadbeef!{i}")),
                    ),
                    ("h".to_owned(), AttributeValue::S("kv:v".into())),
                    (
                        "d".to_owned(),
                        AttributeValue::B(Blob::new(vec![7u8; 1000])),
                    ),
                    (
                        "w".to_owned(),
                        AttributeValue::N(clock_now(&clock).to_string()),
                    ),
                ]),
            )
            .await;
        }
        assert_eq!(c.get::<Bytes>("v").await.unwrap(), Some(Bytes(old.clone())));
        assert_eq!(
            c.vacuum().await.unwrap(),
            0,
            "recent chunks may be a write in progress"
        );
        clock.advance(Duration::from_secs(3600));
        assert_eq!(c.vacuum().await.unwrap(), 2);
        assert_eq!(
            c.get::<Bytes>("v").await.unwrap(),
            Some(Bytes(old)),
            "live chunks kept"
        );
    }

    pub async fn replaced_and_deleted_large_values_leave_no_chunks(table: Table) {
        let c = Cache::builder()
            .compress_from(None)
            .build(table.clone())
            .unwrap();
        let chunk_count = |table: Table| async move {
            all_keys(&table)
                .await
                .iter()
                .filter(|k| k.starts_with("kv!"))
                .count()
        };
        c.set("v", &Bytes(random_bytes(1_000_000))).await.unwrap();
        assert_eq!(
            chunk_count(table.clone()).await,
            3,
            "1 MB in 350 KiB chunks"
        );
        c.set("v", &Bytes(random_bytes(500_000))).await.unwrap();
        assert_eq!(chunk_count(table.clone()).await, 2, "old chunks deleted");
        c.set("v", "small").await.unwrap();
        assert_eq!(chunk_count(table.clone()).await, 0);
        c.set("v", &Bytes(random_bytes(1_000_000))).await.unwrap();
        assert!(c.delete("v").await.unwrap());
        assert_eq!(chunk_count(table.clone()).await, 0);
        // A failed add of a large value removes the chunks it wrote.
        c.set("taken", "x").await.unwrap();
        assert!(
            !c.add("taken", &Bytes(random_bytes(1_000_000)))
                .await
                .unwrap()
        );
        assert_eq!(chunk_count(table.clone()).await, 0);
        // Chunked values written with an expiry carry the TTL on every chunk.
        c.set_with(
            "t",
            &Bytes(random_bytes(1_000_000)),
            Duration::from_secs(60).into(),
        )
        .await
        .unwrap();
        for k in all_keys(&table)
            .await
            .iter()
            .filter(|k| k.starts_with("kv!"))
        {
            assert!(
                raw(&table, k)
                    .await
                    .unwrap()
                    .contains_key(table.ttl_attribute())
            );
        }
    }

    pub async fn long_and_binary_keys_are_stored_without_collisions(table: Table) {
        let c = cache(&table);
        let long_a = "a".repeat(4096);
        let mut long_b = long_a.clone();
        long_b.push('b');
        let binary = vec![0xffu8, 0x00, 0xfe];
        c.set(&long_a, "A").await.unwrap();
        c.set(&long_b, "B").await.unwrap();
        c.set(&binary, "bin").await.unwrap();
        c.set("plain", "p").await.unwrap();
        assert_eq!(
            c.get::<String>(&long_a).await.unwrap().as_deref(),
            Some("A")
        );
        assert_eq!(
            c.get::<String>(&long_b).await.unwrap().as_deref(),
            Some("B")
        );
        assert_eq!(
            c.get::<String>(&binary).await.unwrap().as_deref(),
            Some("bin")
        );
        assert!(c.has(&long_a).await.unwrap());
        assert_eq!(c.inc(format!("{long_a}-counter"), 2).await.unwrap(), 2);
        let mut keys: Vec<Vec<u8>> = c
            .keys()
            .map_ok(|k| k.into_bytes())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        let mut want = vec![
            long_a.clone().into_bytes(),
            long_b.clone().into_bytes(),
            binary.clone(),
            b"plain".to_vec(),
            format!("{long_a}-counter").into_bytes(),
        ];
        want.sort();
        assert_eq!(keys, want);
        assert!(c.delete(&long_a).await.unwrap());
        assert_eq!(
            c.get::<String>(&long_b).await.unwrap().as_deref(),
            Some("B")
        );
    }

    pub async fn bad_keys_are_typed_errors(table: Table) {
        let c = cache(&table);
        for err in [
            c.get::<String>("").await.unwrap_err(),
            c.set("", "v").await.unwrap_err(),
            c.inc("", 1).await.unwrap_err(),
            c.set(vec![0u8; dynacache::MAX_KEY_LEN + 1], "v")
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
        }
        assert!(
            c.get_many::<String, _>(["ok", ""])
                .await
                .unwrap_err()
                .is_invalid_input()
        );
        assert!(Cache::builder().namespace("a:b").build(table).is_err());
    }

    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to serialize"))
        }
    }

    pub async fn values_that_fail_to_serialize_are_typed_errors(table: Table) {
        let c = cache(&table);
        c.set("k", "before").await.unwrap();
        let err = c.set("k", &Unserializable).await.unwrap_err();
        assert!(matches!(err, Error::Serialize(_)), "{err:?}");
        assert_eq!(
            c.get::<String>("k").await.unwrap().as_deref(),
            Some("before")
        );
    }

    pub async fn reading_as_the_wrong_type_is_a_typed_error(table: Table) {
        let c = cache(&table);
        c.set("k", &record()).await.unwrap();
        let err = c.get::<Vec<bool>>("k").await.unwrap_err();
        assert!(matches!(err, Error::Deserialize { .. }), "{err:?}");
    }

    pub async fn corrupt_or_tampered_items_are_errors_not_panics(table: Table) {
        let c = Cache::builder()
            .compress_from(None)
            .build(table.clone())
            .unwrap();
        let key = |k: &str| {
            (
                table.key_attribute().to_owned(),
                AttributeValue::S(k.into()),
            )
        };
        let bin = |v: &[u8]| AttributeValue::B(Blob::new(v.to_vec()));
        let s = |v: &str| AttributeValue::S(v.into());
        let cases = [
            ("garbage", vec![("v", bin(b"\xc1\xc1")), ("f", s("m"))]),
            ("format", vec![("v", bin(b"\x01")), ("f", s("rot13"))]),
            ("zstd", vec![("v", bin(b"not zstd")), ("f", s("mz"))]),
            ("novalue", vec![("f", s("m"))]),
            ("counter", vec![("n", AttributeValue::S("ten".into()))]),
            (
                "chunks",
                vec![
                    ("f", s("m")),
                    ("cv", s("x")),
                    ("c", AttributeValue::N("-1".into())),
                ],
            ),
        ];
        for (name, attrs) in cases {
            let mut item = HashMap::from([key(&format!("kv:{name}"))]);
            item.extend(attrs.into_iter().map(|(k, v)| (k.to_owned(), v)));
            raw_put(&table, item).await;
            let err = c.get::<String>(name).await.unwrap_err();
            assert!(err.is_corrupt(), "{name}: {err:?}");
        }
        // A chunk tampered with after it was written fails the checksum.
        c.set("big", &Bytes(random_bytes(900_000))).await.unwrap();
        let chunk = all_keys(&table)
            .await
            .into_iter()
            .find(|k| k.starts_with("kv!"))
            .unwrap();
        let mut item = raw(&table, &chunk).await.unwrap();
        let mut data = item["d"].as_b().unwrap().as_ref().to_vec();
        data[10] ^= 1;
        item.insert("d".into(), AttributeValue::B(Blob::new(data)));
        raw_put(&table, item).await;
        let err = c.get::<Bytes>("big").await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    }

    pub async fn values_over_the_configured_maximum_are_refused(table: Table) {
        let c = Cache::builder()
            .max_value_size(1000)
            .compress_from(None)
            .build(table.clone())
            .unwrap();
        let err = c.set("k", &Bytes(random_bytes(2000))).await.unwrap_err();
        assert!(
            matches!(err, Error::ItemTooLarge { size, limit: 1000 } if size > 2000),
            "{err:?}"
        );
        assert!(!c.has("k").await.unwrap());
    }

    pub async fn the_maximum_bounds_the_decoded_size_so_every_accepted_value_reads_back(
        table: Table,
    ) {
        // 10 KB of text compresses far under 1000 bytes: accepting it would store a value that
        // the read-side bound (what a read will decompress) then refuses as corrupt.
        let c = Cache::builder()
            .max_value_size(1000)
            .build(table.clone())
            .unwrap();
        let err = c.set("text", &"a".repeat(10_000)).await.unwrap_err();
        assert!(
            matches!(err, Error::ItemTooLarge { size, limit: 1000 } if size > 10_000),
            "{err:?}"
        );
        c.set("fits", &"a".repeat(900)).await.unwrap();
        assert_eq!(
            c.get::<String>("fits").await.unwrap(),
            Some("a".repeat(900))
        );
    }

    pub async fn created_tables_have_the_documented_schema_and_ttl(table: Table) {
        let d = table.describe().await.unwrap();
        assert_eq!(
            d.key_schema,
            vec![("key".into(), "HASH".into(), "S".into())]
        );
        assert_eq!(d.ttl_attribute.as_deref(), Some("ttl"));
        assert_eq!(d.billing_mode, "PAY_PER_REQUEST");
        table.validate().await.unwrap();
    }

    pub async fn strongly_consistent_reads_see_their_own_writes(table: Table) {
        let strong = Table::builder()
            .name(table.name())
            .client(table.client().clone())
            .consistent_reads(true)
            .policy(dynacache::TablePolicy::AssumeExists)
            .open()
            .await
            .unwrap();
        assert!(strong.consistent_reads());
        let c = cache(&strong);
        for i in 0..20 {
            c.set("k", &i).await.unwrap();
            assert_eq!(c.get::<i32>("k").await.unwrap(), Some(i));
        }
    }

    /// `take`: of many callers in two "processes" (caches of their own) popping one key at
    /// once, exactly one gets the value; a large value comes back whole and leaves no chunks;
    /// an expired value is not taken.
    pub async fn take_pops_a_value_for_exactly_one_caller(table: Table) {
        let (a, b) = (cache(&table), cache(&table));
        for round in 0..5 {
            let key = format!("token{round}");
            a.set(&key, &round).await.unwrap();
            let takers = (0..16).map(|i| {
                let c = if i % 2 == 0 { a.clone() } else { b.clone() };
                let key = key.clone();
                tokio::spawn(async move { c.take::<i32>(&key).await.unwrap() })
            });
            let got: Vec<Option<i32>> = futures::future::join_all(takers)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let winners: Vec<i32> = got.into_iter().flatten().collect();
            assert_eq!(winners, [round], "round {round}");
            assert!(!a.has(&key).await.unwrap());
        }
        let big = Bytes(random_bytes(900_000));
        a.set("big", &big).await.unwrap();
        assert_eq!(b.take::<Bytes>("big").await.unwrap(), Some(big));
        assert_eq!(a.get::<Bytes>("big").await.unwrap(), None);
        assert!(
            all_keys(&table).await.iter().all(|k| !k.starts_with("kv!")),
            "chunks left: {:?}",
            all_keys(&table).await
        );

        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        c.set_with("brief", "v", Duration::from_secs(10).into())
            .await
            .unwrap();
        clock.advance(Duration::from_secs(11));
        assert_eq!(c.take::<String>("brief").await.unwrap(), None);
    }

    /// `touch`: keeps a value alive for the given time from now, writing the expiry only when
    /// less than 90% of it is left; a missing or expired key is not created.
    pub async fn touch_slides_the_expiry_with_few_writes(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        let ttl = Duration::from_secs(100);
        c.set_with("session", "alice", ttl.into()).await.unwrap();
        let written = |item: &HashMap<String, AttributeValue>| -> i64 {
            item["e"].as_n().unwrap().parse().unwrap()
        };
        let first = written(&raw(&table, "kv:session").await.unwrap());

        // 95 s left of 100: more than 90%, so nothing is written.
        clock.advance(Duration::from_secs(5));
        assert!(c.touch("session", ttl).await.unwrap());
        assert_eq!(written(&raw(&table, "kv:session").await.unwrap()), first);

        // 85 s left: the expiry moves to 100 s from now.
        clock.advance(Duration::from_secs(10));
        assert!(c.touch("session", ttl).await.unwrap());
        let second = written(&raw(&table, "kv:session").await.unwrap());
        assert_eq!(second, first + 15_000);

        // Touched often, it outlives its first expiry by far, value unchanged.
        for _ in 0..30 {
            clock.advance(Duration::from_secs(20));
            assert!(c.touch("session", ttl).await.unwrap());
        }
        assert_eq!(
            c.get::<String>("session").await.unwrap().as_deref(),
            Some("alice")
        );
        let left = c.ttl("session").await.unwrap().flatten().unwrap();
        assert!(left > Duration::from_secs(70), "{left:?}");

        // Expired or missing: not created.
        clock.advance(Duration::from_secs(101));
        assert!(!c.touch("session", ttl).await.unwrap());
        assert_eq!(c.get::<String>("session").await.unwrap(), None);
        assert!(!c.touch("nobody", ttl).await.unwrap());
        assert_eq!(c.get::<String>("nobody").await.unwrap(), None);
        // A lifetime is never shortened.
        c.set_with("forever", "x", Expiry::Never).await.unwrap();
        assert!(c.touch("forever", ttl).await.unwrap());
        assert_eq!(c.ttl("forever").await.unwrap(), Some(None));
        c.set_with("long", "x", Duration::from_secs(1000).into())
            .await
            .unwrap();
        assert!(c.touch("long", ttl).await.unwrap());
        assert_eq!(
            c.ttl("long").await.unwrap(),
            Some(Some(Duration::from_secs(1000)))
        );
    }

    /// `ttl`: the time left, `Some(None)` for a value that never expires, `None` for missing or
    /// expired keys.
    pub async fn ttl_tells_what_is_left(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        c.set_with("k", &1, Duration::from_secs(60).into())
            .await
            .unwrap();
        c.set_with("never", &1, Expiry::Never).await.unwrap();
        c.set_with(
            "big",
            &Bytes(random_bytes(500_000)),
            Duration::from_secs(60).into(),
        )
        .await
        .unwrap();
        assert_eq!(
            c.ttl("k").await.unwrap(),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(c.ttl("never").await.unwrap(), Some(None));
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            c.ttl("k").await.unwrap(),
            Some(Some(Duration::from_secs(40)))
        );
        assert_eq!(
            c.ttl("big").await.unwrap(),
            Some(Some(Duration::from_secs(40)))
        );
        clock.advance(Duration::from_secs(41));
        assert_eq!(c.ttl("k").await.unwrap(), None);
        assert_eq!(c.ttl("missing").await.unwrap(), None);
        assert!(c.ttl("").await.unwrap_err().is_invalid_input());
    }

    /// `entries`: every live value of the namespace with its key, across pages and chunks;
    /// expired values and other namespaces left out; a value of another type is an error item
    /// and the stream goes on.
    pub async fn entries_streams_every_live_value_with_its_key(table: Table) {
        let clock = ManualClock::new();
        let c = clocked(&table, &clock);
        let pairs: Vec<(String, String)> = (0..300)
            .map(|i| {
                (
                    format!("key{i:03}"),
                    format!("value {i} {}", "x".repeat(i * 10)),
                )
            })
            .collect();
        c.set_many(pairs.iter().map(|(k, v)| (k, v)), Expiry::Default)
            .await
            .unwrap();
        let big = String::from_utf8(
            random_bytes(700_000)
                .iter()
                .map(|b| b'a' + b % 26)
                .collect(),
        )
        .unwrap();
        c.set("big", &big).await.unwrap();
        c.set_with("brief", "gone", Duration::from_secs(5).into())
            .await
            .unwrap();
        c.set("number", &7u64).await.unwrap();
        Cache::builder()
            .namespace("other")
            .build(table.clone())
            .unwrap()
            .set("key000", "not mine")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(6));

        let mut got = Vec::new();
        let mut errors = 0;
        let mut stream = c.entries::<String>();
        while let Some(next) = stream.next().await {
            match next {
                Ok((k, v)) => got.push((k.to_string(), v)),
                Err(_) => errors += 1,
            }
        }
        got.sort();
        let mut want = pairs.clone();
        want.push(("big".into(), big));
        want.sort();
        assert_eq!(errors, 1, "the counter is not a string");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "entries differ from what was stored");
    }

    /// `copy_to` within one table: every value, its expiry and its chunks, under another
    /// namespace; the source unchanged; copying again replaces rather than duplicates.
    pub async fn copy_to_another_namespace_keeps_values_expiry_and_chunks(table: Table) {
        let clock = ManualClock::new();
        let ns = |name: &str| {
            Cache::builder()
                .namespace(name)
                .clock(clock.clone())
                .build(table.clone())
                .unwrap()
        };
        let (from, to) = (ns("from"), ns("to"));
        let big = Bytes(random_bytes(1_500_000));
        from.set("big", &big).await.unwrap();
        from.set_with("brief", "v", Duration::from_secs(60).into())
            .await
            .unwrap();
        from.inc("hits", 3).await.unwrap();
        let mut seen = Vec::new();
        let done = from.copy_to(&to, |p| seen.push(p.items)).await.unwrap();
        assert!(done.items > 3, "chunks are items too: {done:?}");
        assert_eq!(seen.last(), Some(&done.items));
        assert_eq!(to.get::<Bytes>("big").await.unwrap(), Some(big.clone()));
        assert_eq!(to.get::<u64>("hits").await.unwrap(), Some(3));
        assert_eq!(
            to.ttl("brief").await.unwrap(),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(from.get::<Bytes>("big").await.unwrap(), Some(big.clone()));
        let before = all_keys(&table).await.len();
        from.copy_to(&to, |_| {}).await.unwrap();
        assert_eq!(to.len().await.unwrap(), 3);
        // The second copy's chunks replace the first's under the same names.
        assert_eq!(all_keys(&table).await.len(), before);
        assert_eq!(to.get::<Bytes>("big").await.unwrap(), Some(big));
    }
}
