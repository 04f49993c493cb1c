//! Integrity of stored items, on every engine: items damaged or tampered with through the raw
//! SDK (`Table::client`) are never served as another value. Signed items copied under another
//! key, forged redirect aliases and `Vary` indexes, flipped bits in bodies, values and chunks,
//! forged chunk heads, missing chunks, and damaged counters are errors or misses, never a wrong
//! answer, a hang or a panic.

mod common;

conformance!(
    a_signed_response_copied_under_another_key_is_not_served,
    forged_redirect_aliases_are_not_followed,
    a_vary_index_copied_under_another_key_is_not_followed,
    a_304_re_signs_small_and_chunked_responses,
    flipped_bits_in_stored_bodies_are_never_served,
    a_stored_1xx_status_is_not_served,
    a_forged_chunk_head_of_a_stored_body_is_a_miss,
    an_enormous_max_age_is_stored_and_served_fresh,
    flipped_bits_in_stored_values_are_corrupt_never_another_value,
    signed_values_resist_consistent_rewrites_copies_and_retired_keys,
    forged_chunk_heads_are_corrupt_before_any_chunk_is_read,
    a_value_missing_a_chunk_is_corrupt_while_has_is_true,
    damaged_counters_and_expiries_are_corrupt_and_bad_deltas_invalid,
    vacuum_removes_chunks_that_name_no_head,
    a_copy_carries_only_values_that_verify_and_signs_them_for_their_new_keys,
);

mod suite {
    use std::collections::HashMap;
    use std::future::Future;
    use std::time::Duration;

    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue;
    use dynacache::http::{CacheFactsExt, CachedClient, HttpCache, HttpCacheBuilder};
    use dynacache::{Cache, Error, Expiry, ManualClock, Table};
    use serde::{Deserialize, Serialize};

    use crate::common::origin::{Origin, Reply};

    type Item = HashMap<String, AttributeValue>;

    /// Fails the test if `f` does not finish in 60 s: a hang guard, never a measurement.
    async fn guard<F: Future>(f: F) -> F::Output {
        // Boxed: some of these futures are large for a test thread's stack in debug builds.
        tokio::time::timeout(Duration::from_secs(60), Box::pin(f))
            .await
            .expect("hung: no answer within 60 s")
    }

    // ----- raw access -------------------------------------------------------------------

    /// The raw item under a partition key, read strongly.
    async fn raw(table: &Table, pk: &str) -> Option<Item> {
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

    async fn raw_put(table: &Table, item: Item) {
        table
            .client()
            .put_item()
            .table_name(table.name())
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    async fn raw_delete(table: &Table, pk: &str) {
        table
            .client()
            .delete_item()
            .table_name(table.name())
            .key(table.key_attribute(), AttributeValue::S(pk.into()))
            .send()
            .await
            .unwrap();
    }

    /// Every item in the table, across pages.
    async fn all_items(table: &Table) -> Vec<Item> {
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
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }

    /// The partition keys starting with `prefix`, sorted.
    async fn keys_with_prefix(table: &Table, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = all_items(table)
            .await
            .iter()
            .filter_map(|i| i[table.key_attribute()].as_s().ok().cloned())
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        keys
    }

    fn bin(v: &[u8]) -> AttributeValue {
        AttributeValue::B(Blob::new(v.to_vec()))
    }

    fn bytes_of(item: &Item, attr: &str) -> Vec<u8> {
        item[attr].as_b().unwrap().as_ref().to_vec()
    }

    fn flipped(data: &[u8], bit: usize) -> Vec<u8> {
        let mut out = data.to_vec();
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut v = vec![0u8; len];
        rng.fill(&mut v);
        v
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    struct Bytes(#[serde(with = "serde_bytes")] Vec<u8>);

    // ----- the HTTP cache -----------------------------------------------------------------

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
        // Writes land before the response returns, so each test reads what it stored.
        let cache = f(HttpCache::builder()
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

    /// One answer: status, whether the cache served it, body, and its cache key.
    struct Got {
        status: u16,
        hit: bool,
        revalidated: bool,
        body: Vec<u8>,
        key: Option<String>,
    }

    impl Env {
        async fn get(&self, path: &str) -> Got {
            self.get_with(path, &[]).await
        }

        async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
            let mut req = self.client.get(self.origin.url(path));
            for (name, value) in headers {
                req = req.header(name, value);
            }
            let res = guard(req.send()).await.unwrap();
            let facts = res.cache_facts();
            Got {
                status: res.status().as_u16(),
                hit: facts.from_cache,
                revalidated: facts.revalidated,
                body: res.bytes().await.unwrap().to_vec(),
                key: facts.cache_key,
            }
        }

        fn cache(&self) -> &HttpCache {
            self.client.cache()
        }

        fn pk(&self, key: &str) -> String {
            format!("{}:{key}", self.cache().namespace())
        }

        async fn raw(&self, key: &str) -> Item {
            raw(&self.table, &self.pk(key)).await.expect("stored")
        }

        /// Puts `item` under the cache key `key` (its partition key replaced).
        async fn put_under(&self, key: &str, mut item: Item) {
            item.insert(
                self.table.key_attribute().to_owned(),
                AttributeValue::S(self.pk(key)),
            );
            raw_put(&self.table, item).await;
        }

        /// A cacheable scripted route answering `body`; returns its path.
        fn page(&self, name: &str, body: &str) -> String {
            self.origin.respond(
                name,
                Reply::ok(body.to_owned()).header("cache-control", "max-age=600"),
            )
        }
    }

    pub async fn a_signed_response_copied_under_another_key_is_not_served(table: Table) {
        let e = env(table, |b| b.secret_keys(["secret"])).await;
        let (a, b) = (e.page("a", "response A"), e.page("b", "response B"));
        let ka = e.get(&a).await.key.unwrap();
        let kb = e.get(&b).await.key.unwrap();
        assert!(e.get(&b).await.hit, "B is cached and verifies");
        // A's signed item, copied under B's key.
        e.put_under(&kb, e.raw(&ka).await).await;
        let before = e.cache().stats().verification_failures;
        let got = e.get(&b).await;
        assert_eq!(
            (got.status, got.hit),
            (200, false),
            "not served from the cache"
        );
        assert_eq!(got.body, b"response B", "the origin's answer");
        assert_eq!(e.origin.count(&b), 2);
        assert_eq!(e.cache().stats().verification_failures, before + 1);
        assert!(e.get(&a).await.hit, "A itself still verifies");
    }

    pub async fn forged_redirect_aliases_are_not_followed(table: Table) {
        let e = env(table, |b| b.secret_keys(["secret"])).await;
        let (a, b) = (e.page("a", "response A"), e.page("b", "response B"));
        let ka = e.get(&a).await.key.unwrap();
        let kb = e.get(&b).await.key.unwrap();

        // An unsigned alias under B's key, leading to A's response.
        let alias = Item::from([
            ("kind".to_owned(), AttributeValue::S("redirect".into())),
            ("url".to_owned(), AttributeValue::S(e.origin.url(&b))),
            ("target".to_owned(), AttributeValue::S(ka.clone())),
            ("w".to_owned(), AttributeValue::N(now_ms().to_string())),
        ]);
        e.put_under(&kb, alias).await;
        let before = e.cache().stats().verification_failures;
        let got = e.get(&b).await;
        assert!(
            !got.hit && got.body == b"response B",
            "unsigned alias followed"
        );
        assert_eq!(e.cache().stats().verification_failures, before + 1);
        assert!(e.get(&b).await.hit, "B's own response replaced the forgery");

        // A genuine alias: /r redirects to /final; the alias under /final's key leads to the
        // response stored for /r, and is signed for /final's key.
        let fin = e.page("final", "final response");
        e.origin
            .respond("r", Reply::new(302, "").header("location", fin.clone()));
        let got = e.get("/script/r").await;
        assert_eq!(got.body, b"final response");
        let aliases: Vec<Item> = all_items(&e.table)
            .await
            .into_iter()
            .filter(|i| {
                i.get("kind")
                    .and_then(|k| k.as_s().ok())
                    .map(String::as_str)
                    == Some("redirect")
            })
            .collect();
        assert_eq!(aliases.len(), 1, "one alias stored");
        let genuine = aliases[0].clone();
        // It is followed where it was written...
        let got = e.get(&fin).await;
        assert!(
            got.hit && got.body == b"final response",
            "the genuine alias works"
        );
        assert_eq!(e.origin.count(&fin), 1);
        // ...and not under another key.
        e.put_under(&kb, genuine).await;
        let before = e.cache().stats().verification_failures;
        let got = e.get(&b).await;
        assert!(
            !got.hit && got.body == b"response B",
            "copied alias followed"
        );
        assert_eq!(e.cache().stats().verification_failures, before + 1);
        assert_eq!(e.origin.count(&b), 3);
    }

    pub async fn a_vary_index_copied_under_another_key_is_not_followed(table: Table) {
        let e = env(table, |b| b.secret_keys(["secret"])).await;
        let v = e.origin.respond(
            "v",
            Reply::ok("varies")
                .header("vary", "accept-language")
                .header("cache-control", "max-age=600"),
        );
        let b = e.page("b", "response B");
        let en = [("accept-language", "en")];
        let kv = e.get_with(&v, &en).await.key.unwrap();
        assert!(
            e.get_with(&v, &en).await.hit,
            "the variant is served through its index"
        );
        let kb = e.get_with(&b, &en).await.key.unwrap();
        // The index is the item under the base key.
        let base = kv.split('.').next().unwrap().to_owned();
        let index = e.raw(&base).await;
        assert_eq!(index["kind"].as_s().unwrap(), "vary", "{index:?}");
        e.put_under(&kb, index).await;
        let before = e.cache().stats().verification_failures;
        let got = e.get_with(&b, &en).await;
        assert!(!got.hit && got.body == b"response B");
        assert_eq!(
            e.cache().stats().verification_failures,
            before + 1,
            "the copied index failed verification"
        );
        assert!(
            e.get_with(&v, &en).await.hit,
            "the genuine index still verifies"
        );
    }

    pub async fn a_304_re_signs_small_and_chunked_responses(table: Table) {
        let e = env(table, |b| b.secret_keys(["secret"])).await;
        for path in ["/etag", "/random-etag/600000"] {
            let first = e.get(path).await;
            assert!(!first.hit);
            assert!(e.get(path).await.hit, "{path}");
            e.clock.advance(Duration::from_secs(61));
            let got = e.get(path).await;
            assert!(got.revalidated && got.body == first.body, "{path}");
            let got = e.get(path).await;
            assert!(
                got.hit && !got.revalidated,
                "{path}: still verifies after the update"
            );
            assert_eq!(got.body, first.body);
        }
        assert_eq!(e.cache().stats().verification_failures, 0);
        assert_eq!(
            e.origin.count("/random-etag/600000"),
            2,
            "one fetch, one 304"
        );
    }

    pub async fn flipped_bits_in_stored_bodies_are_never_served(table: Table) {
        let e = env(table, |b| b).await;
        let mut errors = e.cache().stats().storage_errors;
        let mut check = async |path: &str, original: &[u8], what: &str| {
            let got = e.get(path).await;
            assert_eq!(got.status, 200, "{what}");
            assert!(!got.hit, "{what}: a damaged body was served");
            assert_eq!(got.body, original, "{what}: the origin's answer");
            let now = e.cache().stats().storage_errors;
            assert!(now > errors, "{what}: counted as a storage error");
            errors = now;
            assert!(
                e.get(path).await.hit,
                "{what}: the origin's answer was stored again"
            );
        };

        // A binary body, stored as a payload (`v`).
        let original = e.get("/binary").await;
        let key = original.key.clone().unwrap();
        for bit in [0, 7, 8, 21, 33, 47] {
            let mut item = e.raw(&key).await;
            let v = bytes_of(&item, "v");
            item.insert("v".into(), bin(&flipped(&v, bit)));
            e.put_under(&key, item).await;
            check("/binary", &original.body, &format!("v bit {bit}")).await;
        }

        // A text body, stored readably (`body`): one bit of an ASCII character, so it stays text.
        let original = e.get("/json").await;
        let key = original.key.clone().unwrap();
        let text = e.raw(&key).await["body"].as_s().unwrap().clone();
        for i in [0, 8, 17, text.len() - 1] {
            let mut item = e.raw(&key).await;
            let mut bytes = text.clone().into_bytes();
            bytes[i] ^= 1;
            let damaged = String::from_utf8(bytes).unwrap();
            assert_ne!(damaged, text);
            item.insert("body".into(), AttributeValue::S(damaged));
            e.put_under(&key, item).await;
            check("/json", &original.body, &format!("body byte {i}")).await;
        }

        // A body in chunks (`d` of each chunk item), read whole and by range.
        let path = "/random/600000";
        let original = e.get(path).await;
        assert_eq!(original.body.len(), 600_000);
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..4 {
            let chunks = keys_with_prefix(&e.table, "http!").await;
            assert_eq!(chunks.len(), 2, "600 kB in two chunks");
            let chunk = &chunks[round % 2];
            let mut item = raw(&e.table, chunk).await.unwrap();
            let d = bytes_of(&item, "d");
            let bit = rng.usize(..d.len() * 8);
            item.insert("d".into(), bin(&flipped(&d, bit)));
            raw_put(&e.table, item).await;
            if round < 2 {
                check(path, &original.body, &format!("chunk {chunk} bit {bit}")).await;
                continue;
            }
            // A range inside the damaged chunk: never the damaged bytes.
            let start = (bit / 8).saturating_sub(10) + (round % 2) * 358_400;
            let end = (start + 20).min(original.body.len() - 1);
            let got = e
                .get_with(path, &[("range", &format!("bytes={start}-{end}"))])
                .await;
            match got.status {
                206 => assert_eq!(got.body, &original.body[start..=end], "range {start}-{end}"),
                200 => assert_eq!(got.body, original.body),
                other => panic!("range answered {other}"),
            }
            assert!(!got.hit, "the damaged chunk was served");
            // Restore a whole stored copy for the next round.
            e.cache().clear().await.unwrap();
            e.get(path).await;
        }
    }

    pub async fn a_stored_1xx_status_is_not_served(table: Table) {
        let e = env(table, |b| b).await;
        let original = e.get("/json").await;
        let key = original.key.clone().unwrap();
        for status in ["100", "103", "199"] {
            let mut item = e.raw(&key).await;
            item.insert("status".into(), AttributeValue::N(status.into()));
            e.put_under(&key, item).await;
            let errors = e.cache().stats().storage_errors;
            let got = e.get("/json").await;
            assert_eq!(
                (got.status, got.hit),
                (200, false),
                "status {status} served"
            );
            assert_eq!(got.body, original.body);
            assert!(e.cache().stats().storage_errors > errors);
        }
    }

    pub async fn a_forged_chunk_head_of_a_stored_body_is_a_miss(table: Table) {
        let e = env(table, |b| b).await;
        let path = "/random/600000";
        let original = e.get(path).await;
        let key = original.key.clone().unwrap();
        let head = e.raw(&key).await;
        assert_eq!(head["c"].as_n().unwrap(), "2", "stored in two chunks");
        // A million one-byte chunks: consistent with the head's own size and chunk size.
        let mut forged = head.clone();
        for (attr, n) in [("c", "1000000"), ("sz", "1000000"), ("cz", "1")] {
            forged.insert(attr.into(), AttributeValue::N(n.into()));
        }
        e.put_under(&key, forged).await;
        // Read by a read-only cache: this test is about reading the forged head (a write
        // replacing it is another matter).
        let reader = CachedClient::new(
            reqwest::Client::new(),
            HttpCache::builder()
                .clock(e.clock.clone())
                .read_only(true)
                .build(e.table.clone())
                .unwrap(),
        );
        let res = guard(reader.get(e.origin.url(path)).send()).await.unwrap();
        assert_eq!((res.status().as_u16(), res.from_cache()), (200, false));
        assert_eq!(
            res.bytes().await.unwrap(),
            original.body,
            "the origin's answer"
        );
        assert!(reader.cache().stats().storage_errors >= 1);
        // The genuine head still reads.
        e.put_under(&key, head).await;
        let res = guard(reader.get(e.origin.url(path)).send()).await.unwrap();
        assert!(res.from_cache());
        assert_eq!(res.bytes().await.unwrap(), original.body);
    }

    pub async fn an_enormous_max_age_is_stored_and_served_fresh(table: Table) {
        let e = env(table, |b| b).await;
        let path = e.origin.respond(
            "forever",
            Reply::ok("forever").header("cache-control", "max-age=9223372036854775807"),
        );
        let got = e.get(&path).await;
        assert_eq!((got.status, got.hit), (200, false));
        let got = e.get(&path).await;
        assert_eq!(
            (got.status, got.hit, got.body.as_slice()),
            (200, true, &b"forever"[..])
        );
        // Ten years later, still fresh.
        e.clock.advance(Duration::from_secs(10 * 365 * 86_400));
        let res = guard(e.client.get(e.origin.url(&path)).send())
            .await
            .unwrap();
        let facts = res.cache_facts();
        assert!(
            facts.from_cache && !facts.stale && !facts.is_expired,
            "{facts:?}"
        );
        assert_eq!(res.text().await.unwrap(), "forever");
        assert_eq!(e.origin.count(&path), 1);
    }

    // ----- the key/value cache ------------------------------------------------------------

    /// Flips one bit at a time at `rounds` random positions of the binary attribute `attr` of the
    /// item `pk`, and checks that `read` is `Corrupt` every time; then restores the item.
    async fn flip_each<T, F, Fut>(table: &Table, pk: &str, attr: &str, seed: u64, read: F)
    where
        T: std::fmt::Debug,
        F: Fn() -> Fut,
        Fut: Future<Output = dynacache::Result<T>>,
    {
        let original = raw(table, pk).await.expect("stored");
        let data = bytes_of(&original, attr);
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..64 {
            let bit = rng.usize(..data.len() * 8);
            let mut item = original.clone();
            item.insert(attr.to_owned(), bin(&flipped(&data, bit)));
            raw_put(table, item).await;
            match guard(read()).await {
                Err(e) if e.is_corrupt() => {}
                other => panic!("{pk}: bit {bit} of {attr} flipped gave {other:?}"),
            }
        }
        raw_put(table, original).await;
    }

    pub async fn flipped_bits_in_stored_values_are_corrupt_never_another_value(table: Table) {
        let c = Cache::new(table.clone()).unwrap();
        let small = "a small value".to_owned();
        let zipped = "compressible text ".repeat(200);
        let large = Bytes(random_bytes(500_000, 1));
        c.set("small", &small).await.unwrap();
        c.set("zipped", &zipped).await.unwrap();
        c.set("large", &large).await.unwrap();
        let zipped_item = raw(&table, "kv:zipped").await.unwrap();
        assert_eq!(zipped_item["f"].as_s().unwrap(), "mz", "stored compressed");
        assert!(bytes_of(&zipped_item, "v").len() < 1024);

        flip_each(&table, "kv:small", "v", 1, || c.get::<String>("small")).await;
        flip_each(&table, "kv:zipped", "v", 2, || c.get::<String>("zipped")).await;
        let chunks = keys_with_prefix(&table, "kv!").await;
        assert_eq!(chunks.len(), 2, "500 kB in two chunks");
        for (i, chunk) in chunks.iter().enumerate() {
            flip_each(&table, chunk, "d", 3 + i as u64, || c.get::<Bytes>("large")).await;
        }
        // Restored, every value reads back as it was.
        assert_eq!(c.get::<String>("small").await.unwrap(), Some(small));
        assert_eq!(c.get::<String>("zipped").await.unwrap(), Some(zipped));
        assert_eq!(c.get::<Bytes>("large").await.unwrap(), Some(large));
    }

    pub async fn signed_values_resist_consistent_rewrites_copies_and_retired_keys(table: Table) {
        let signed = |keys: &[&str]| {
            Cache::builder()
                .secret_keys(keys.iter().copied())
                .build(table.clone())
                .unwrap()
        };
        let unsigned = Cache::new(table.clone()).unwrap();
        let s = signed(&["secret"]);
        let corrupt = |r: dynacache::Result<Option<String>>, what: &str| match r {
            Err(e) if e.is_corrupt() => {}
            other => panic!("{what}: {other:?}"),
        };

        // A payload and its checksum rewritten consistently (another value's): the checksum
        // alone cannot tell, the signature can.
        s.set("a", "value A").await.unwrap();
        s.set("b", "value B").await.unwrap();
        let original_a = raw(&table, "kv:a").await.unwrap();
        let item_b = raw(&table, "kv:b").await.unwrap();
        let mut rewritten = original_a.clone();
        for attr in ["v", "cs", "f"] {
            rewritten.insert(attr.into(), item_b[attr].clone());
        }
        raw_put(&table, rewritten).await;
        assert_eq!(
            unsigned.get::<String>("a").await.unwrap().as_deref(),
            Some("value B"),
            "without signing, the rewrite passes the checksum"
        );
        corrupt(s.get("a").await, "rewritten payload and checksum");

        // A signed value copied under another key.
        let mut copy = original_a.clone();
        copy.insert(
            table.key_attribute().to_owned(),
            AttributeValue::S("kv:c".into()),
        );
        raw_put(&table, copy).await;
        corrupt(s.get("c").await, "copied under another key");
        raw_put(&table, original_a).await;
        assert_eq!(
            s.get::<String>("a").await.unwrap().as_deref(),
            Some("value A")
        );

        // A later expiry written by hand: the signature covers the expiry.
        s.set_with("t", "short-lived", Expiry::After(Duration::from_secs(60)))
            .await
            .unwrap();
        let mut item = raw(&table, "kv:t").await.unwrap();
        let e: i64 = item["e"].as_n().unwrap().parse().unwrap();
        item.insert("e".into(), AttributeValue::N((e + 86_400_000).to_string()));
        raw_put(&table, item).await;
        corrupt(s.get("t").await, "extended expiry");

        // A chunked value's head pointed at another value's chunks (head checksum included).
        let (one, two) = (
            Bytes(random_bytes(500_000, 11)),
            Bytes(random_bytes(500_000, 12)),
        );
        s.set("big1", &one).await.unwrap();
        s.set("big2", &two).await.unwrap();
        let mut head = raw(&table, "kv:big1").await.unwrap();
        let other = raw(&table, "kv:big2").await.unwrap();
        for attr in ["cv", "c", "sz", "cs", "cz", "f"] {
            head.insert(attr.into(), other[attr].clone());
        }
        raw_put(&table, head).await;
        assert_eq!(
            unsigned.get::<Bytes>("big1").await.unwrap(),
            Some(two.clone()),
            "without signing, the swapped head reads the other value"
        );
        match s.get::<Bytes>("big1").await {
            Err(e) if e.is_corrupt() => {}
            other => panic!(
                "swapped chunk head: {:?}",
                other.map(|v| v.map(|b| b.0.len()))
            ),
        }
        assert_eq!(s.get::<Bytes>("big2").await.unwrap(), Some(two));

        // Rotation: the new key signs, the old one still verifies; a retired key does not.
        let old = signed(&["old"]);
        old.set("r1", "by the old key").await.unwrap();
        let rotated = signed(&["new", "old"]);
        assert_eq!(
            rotated.get::<String>("r1").await.unwrap().as_deref(),
            Some("by the old key")
        );
        rotated.set("r2", "by the new key").await.unwrap();
        let new_only = signed(&["new"]);
        assert_eq!(
            new_only.get::<String>("r2").await.unwrap().as_deref(),
            Some("by the new key")
        );
        corrupt(new_only.get("r1").await, "signed by a retired key");
        corrupt(old.get("r2").await, "signed by a key not known yet");

        // Counters are not signed: they change inside DynamoDB.
        assert_eq!(s.inc("n", 2).await.unwrap(), 2);
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(2));
    }

    pub async fn forged_chunk_heads_are_corrupt_before_any_chunk_is_read(table: Table) {
        let c = Cache::new(table.clone()).unwrap();
        let limited = Cache::builder()
            .max_value_size(600_000)
            .build(table.clone())
            .unwrap();
        let value = Bytes(random_bytes(500_000, 5));
        c.set("big", &value).await.unwrap();
        let head = raw(&table, "kv:big").await.unwrap();
        assert_eq!(head["c"].as_n().unwrap(), "2");
        let expect_corrupt = async |item: Item, what: &str| {
            raw_put(&table, item).await;
            for cache in [&c, &limited] {
                match guard(cache.get::<Bytes>("big")).await {
                    Err(e) if e.is_corrupt() => {}
                    other => panic!("{what}: {:?}", other.map(|v| v.map(|b| b.0.len()))),
                }
            }
        };

        // A million chunks for half a megabyte.
        let mut forged = head.clone();
        forged.insert("c".into(), AttributeValue::N("1000000".into()));
        expect_corrupt(forged, "1,000,000 chunks").await;
        // A million chunks that agree with the head's size and chunk size (one byte each): the
        // read stops at the first missing chunk instead of asking for all of them.
        let mut forged = head.clone();
        for (attr, n) in [("c", "1000000"), ("sz", "1000000"), ("cz", "1")] {
            forged.insert(attr.into(), AttributeValue::N(n.into()));
        }
        expect_corrupt(forged, "1,000,000 one-byte chunks").await;
        // The same in a head without a chunk size (as older versions wrote them).
        let mut forged = head.clone();
        forged.remove("cz");
        for (attr, n) in [("c", "1000000"), ("sz", "1000000")] {
            forged.insert(attr.into(), AttributeValue::N(n.into()));
        }
        expect_corrupt(forged, "1,000,000 chunks, no chunk size").await;
        // A size over max_value_size, with a chunk count that agrees with it.
        let mut forged = head.clone();
        forged.insert("sz".into(), AttributeValue::N("700000".into()));
        raw_put(&table, forged).await;
        match guard(limited.get::<Bytes>("big")).await {
            Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("limit"), "{e}"),
            other => panic!(
                "size over the limit: {:?}",
                other.map(|v| v.map(|b| b.0.len()))
            ),
        }
        // A size that disagrees with the chunk count.
        let mut forged = head.clone();
        forged.insert("sz".into(), AttributeValue::N("100".into()));
        expect_corrupt(forged, "size too small for two chunks").await;
        // A chunk size of zero, and a negative count.
        let mut forged = head.clone();
        forged.insert("cz".into(), AttributeValue::N("0".into()));
        expect_corrupt(forged, "chunk size zero").await;
        let mut forged = head.clone();
        forged.insert("c".into(), AttributeValue::N("-2".into()));
        expect_corrupt(forged, "negative count").await;

        // Writing over a head that names a million missing chunks does not try to delete them
        // (the last one it names is not there): the write returns, and vacuum and the TTL are
        // left to deal with whatever it named.
        let mut forged = head.clone();
        for (attr, n) in [("c", "1000000"), ("sz", "1000000"), ("cz", "1")] {
            forged.insert(attr.into(), AttributeValue::N(n.into()));
        }
        raw_put(&table, forged).await;
        guard(c.set("big", &value)).await.unwrap();
        assert_eq!(c.get::<Bytes>("big").await.unwrap(), Some(value.clone()));

        raw_put(&table, head).await;
        assert_eq!(c.get::<Bytes>("big").await.unwrap(), Some(value));
    }

    pub async fn a_value_missing_a_chunk_is_corrupt_while_has_is_true(table: Table) {
        let c = Cache::new(table.clone()).unwrap();
        c.set("big", &Bytes(random_bytes(900_000, 9)))
            .await
            .unwrap();
        let chunks = keys_with_prefix(&table, "kv!").await;
        assert_eq!(chunks.len(), 3);
        raw_delete(&table, &chunks[1]).await;
        match guard(c.get::<Bytes>("big")).await {
            Err(e) if e.is_corrupt() => {}
            other => panic!("a missing chunk: {:?}", other.map(|v| v.map(|b| b.0.len()))),
        }
        assert!(c.has("big").await.unwrap(), "the head is still there");
    }

    pub async fn damaged_counters_and_expiries_are_corrupt_and_bad_deltas_invalid(table: Table) {
        let c = Cache::new(table.clone()).unwrap();
        let key = |k: &str| {
            (
                table.key_attribute().to_owned(),
                AttributeValue::S(format!("kv:{k}")),
            )
        };
        let written = ("w".to_owned(), AttributeValue::N(now_ms().to_string()));
        raw_put(
            &table,
            Item::from([
                key("text"),
                ("n".into(), AttributeValue::S("ten".into())),
                written.clone(),
            ]),
        )
        .await;
        raw_put(
            &table,
            Item::from([
                key("expiry"),
                ("n".into(), AttributeValue::N("5".into())),
                ("e".into(), AttributeValue::S("soon".into())),
                written,
            ]),
        )
        .await;
        for name in ["text", "expiry"] {
            for delta in [1, -1] {
                let err = guard(c.inc(name, delta)).await.unwrap_err();
                assert!(err.is_corrupt(), "{name}: {err:?}");
                assert!(
                    !err.is_throttled() && !err.is_contention(),
                    "{name}: {err:?}"
                );
            }
        }
        // Left as they were.
        let item = raw(&table, "kv:text").await.unwrap();
        assert_eq!(item["n"].as_s().unwrap(), "ten");

        let err = c.dec("fresh", i64::MIN).await.unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert!(!c.has("fresh").await.unwrap(), "nothing written");
        assert_eq!(c.dec("fresh", i64::MAX).await.unwrap(), -i64::MAX);
    }

    pub async fn vacuum_removes_chunks_that_name_no_head(table: Table) {
        let c = Cache::new(table.clone()).unwrap();
        let live = Bytes(random_bytes(500_000, 4));
        c.set("live", &live).await.unwrap();
        let live_chunks = keys_with_prefix(&table, "kv!").await;
        let chunk = |pk: &str, head: Option<&str>| {
            let mut item = Item::from([
                (
                    table.key_attribute().to_owned(),
                    AttributeValue::S(pk.into()),
                ),
                ("d".into(), bin(&[1, 2, 3])),
                // Written long ago: no write in progress.
                ("w".into(), AttributeValue::N("1000".into())),
            ]);
            if let Some(h) = head {
                item.insert("h".into(), AttributeValue::S(h.into()));
            }
            item
        };
        raw_put(&table, chunk("kv!deadbeef!0", None)).await;
        raw_put(&table, chunk("kv!deadbeef!1", Some(""))).await;
        raw_put(&table, chunk("kv!cafebabe!0", Some("kv:gone"))).await;
        assert_eq!(guard(c.vacuum()).await.unwrap(), 3);
        assert_eq!(
            keys_with_prefix(&table, "kv!").await,
            live_chunks,
            "live chunks kept"
        );
        assert_eq!(c.get::<Bytes>("live").await.unwrap(), Some(live));
        assert_eq!(c.vacuum().await.unwrap(), 0);
    }

    /// `Cache::copy_to` between signed caches: a copy to another namespace verifies there (the
    /// target signs each value for its new key), a tampered value is left behind and counted, a
    /// copy from an unsigned cache into a signed one is signed, and a copy into an unsigned
    /// cache drops signatures the target could not check anyway.
    pub async fn a_copy_carries_only_values_that_verify_and_signs_them_for_their_new_keys(
        table: Table,
    ) {
        let cache = |ns: &str, keys: &[&str]| {
            Cache::builder()
                .namespace(ns)
                .secret_keys(keys.iter().copied())
                .build(table.clone())
                .unwrap()
        };
        let source = cache("src", &["old secret"]);
        let big = Bytes(random_bytes(500_000, 21));
        source.set("small", "a value").await.unwrap();
        source.set("big", &big).await.unwrap();
        source.set("tampered", "original").await.unwrap();
        source.set("counter", &0u64).await.unwrap();
        source.inc("counter", 5).await.unwrap();
        let mut item = raw(&table, "src:tampered").await.unwrap();
        let other = raw(&table, "src:small").await.unwrap();
        for attr in ["v", "cs", "f"] {
            item.insert(attr.into(), other[attr].clone());
        }
        raw_put(&table, item).await;

        // To another namespace, signed with another secret.
        let target = cache("dst", &["new secret"]);
        let done = guard(source.copy_to(&target, |_| {})).await.unwrap();
        assert_eq!(done.skipped, 1, "{done:?}");
        assert_eq!(
            target.get::<String>("small").await.unwrap().as_deref(),
            Some("a value")
        );
        assert_eq!(target.get::<Bytes>("big").await.unwrap(), Some(big.clone()));
        assert_eq!(target.get::<u64>("counter").await.unwrap(), Some(5));
        assert_eq!(target.get::<String>("tampered").await.unwrap(), None);
        // The copies verify only with the target's secret.
        let wrong = cache("dst", &["old secret"]);
        assert!(wrong.get::<String>("small").await.unwrap_err().is_corrupt());

        // From an unsigned cache into a signed one: signed on the way.
        let plain = cache("plain", &[]);
        plain.set("p", "plain value").await.unwrap();
        let signed = cache("signed", &["s"]);
        guard(plain.copy_to(&signed, |_| {})).await.unwrap();
        assert_eq!(
            signed.get::<String>("p").await.unwrap().as_deref(),
            Some("plain value")
        );
        // From a signed cache into an unsigned one: readable there.
        let unsigned = cache("unsigned", &[]);
        let done = guard(target.copy_to(&unsigned, |_| {})).await.unwrap();
        assert_eq!(done.skipped, 0);
        assert_eq!(unsigned.get::<Bytes>("big").await.unwrap(), Some(big));
        assert!(
            !raw(&table, "unsigned:small")
                .await
                .unwrap()
                .contains_key("sig")
        );
    }
}
