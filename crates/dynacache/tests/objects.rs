//! Large payloads on an object store: the table keeps the entry, the object store the bytes.
//! Every test runs on both pairs of engines: the embedded table with a local directory, and
//! DynamoDB Local with an S3-compatible server (moto's, started by `scripts/test`, which sets
//! `DYNACACHE_TEST_S3`).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use bytes::Bytes;
use dynacache::http::{CacheFactsExt, CacheLayer, HttpCache};
use dynacache::{BreakerState, Cache, CircuitBreaker, ManualClock, ObjectStore, Table};
use http_body_util::BodyExt;
use serde_bytes::ByteBuf;
use tower::ServiceExt;

use crate::common::Engine;

const S3_ENV: &str = "DYNACACHE_TEST_S3";

/// Where a pair's objects are, with raw access for tests that damage them.
enum Raw {
    Dir(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

struct Pair {
    table: Table,
    objects: ObjectStore,
    raw: Raw,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Raw::Dir(dir) = &self.raw {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Pair {
    async fn open(engine: Engine) -> Option<Pair> {
        Self::open_with(engine, |b| b).await
    }

    async fn open_with(
        engine: Engine,
        f: impl FnOnce(dynacache::ObjectStoreBuilder) -> dynacache::ObjectStoreBuilder,
    ) -> Option<Pair> {
        let table = common::table(engine).await?;
        let b = ObjectStore::builder().operation_timeout(Duration::from_secs(60));
        match engine {
            Engine::Embedded => {
                let dir = std::env::temp_dir().join(common::unique_name("dynacache-objects"));
                let objects = f(b.local(&dir)).open().await.expect("open the directory");
                Some(Pair {
                    table,
                    objects,
                    raw: Raw::Dir(dir),
                })
            }
            Engine::DynamoDbLocal => {
                let url = match std::env::var(S3_ENV) {
                    Ok(url) if !url.is_empty() => url,
                    _ => {
                        eprintln!("{S3_ENV} is not set: S3 test not run (scripts/test sets it)");
                        return None;
                    }
                };
                let bucket = common::unique_name("b").replace('_', "-");
                let objects = f(b.s3(&bucket).prefix("cache").endpoint_url(&url))
                    .open()
                    .await
                    .expect("open the bucket");
                let config = aws_sdk_s3::Config::builder()
                    .behavior_version_latest()
                    .endpoint_url(&url)
                    .force_path_style(true)
                    .region(aws_sdk_s3::config::Region::new("us-east-1"))
                    .credentials_provider(aws_sdk_s3::config::Credentials::new(
                        "x", "y", None, None, "test",
                    ))
                    .build();
                Some(Pair {
                    table,
                    objects,
                    raw: Raw::S3 {
                        client: aws_sdk_s3::Client::from_conf(config),
                        bucket,
                    },
                })
            }
        }
    }

    fn cache(&self) -> Cache {
        Cache::builder()
            .object_store(self.objects.clone())
            .compress_from(None)
            .build(self.table.clone())
            .unwrap()
    }

    /// The keys of the objects under a namespace.
    async fn objects_of(&self, namespace: &str) -> Vec<String> {
        let prefix = self.objects.namespace_prefix(namespace);
        match &self.raw {
            Raw::Dir(dir) => {
                let d = dir.join(prefix.trim_end_matches('/'));
                let mut out: Vec<String> = std::fs::read_dir(&d)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok())
                            .map(|e| format!("{prefix}{}", e.file_name().to_string_lossy()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.sort();
                out
            }
            Raw::S3 { client, bucket } => {
                let page = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&prefix)
                    .send()
                    .await
                    .unwrap();
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned))
                    .collect()
            }
        }
    }

    /// Writes an object's bytes behind dynacache's back.
    async fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        match &self.raw {
            Raw::Dir(dir) => {
                let path = dir.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap()
            }
            Raw::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Takes the object ETag off every head in the table, as a store that gives none would
    /// have written them: a read then gets whatever bytes the object holds, and only the
    /// checksums stand between them and the reader.
    async fn forget_object_etags(&self) {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        let key = self.table.key_attribute();
        let heads = self
            .table
            .client()
            .scan()
            .table_name(self.table.name())
            .filter_expression("attribute_exists(ob)")
            .send()
            .await
            .unwrap();
        for head in heads.items() {
            let Some(A::S(pk)) = head.get(key) else {
                continue;
            };
            self.table
                .client()
                .update_item()
                .table_name(self.table.name())
                .key(key, A::S(pk.clone()))
                .update_expression("REMOVE oe")
                .send()
                .await
                .unwrap();
        }
    }

    async fn read_raw(&self, key: &str) -> Vec<u8> {
        match &self.raw {
            Raw::Dir(dir) => std::fs::read(dir.join(key)).unwrap(),
            Raw::S3 { client, bucket } => client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .to_vec(),
        }
    }

    async fn remove_raw(&self, key: &str) {
        match &self.raw {
            Raw::Dir(dir) => std::fs::remove_file(dir.join(key)).unwrap(),
            Raw::S3 { client, bucket } => {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn bytes(v: &[u8]) -> ByteBuf {
    ByteBuf::from(v.to_vec())
}

/// Chunk items of the namespace `ns` in the table.
async fn chunk_items(table: &Table, ns: &str) -> usize {
    common::all_partition_keys(table)
        .await
        .iter()
        .filter(|k| k.starts_with(&format!("{ns}!")))
        .count()
}

async fn a_large_value_is_one_object_and_one_item(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    let value = noise(3 << 20, 1);
    cache.set("report", &bytes(&value)).await.unwrap();
    assert_eq!(chunk_items(&pair.table, "kv").await, 0, "no chunk items");
    let objects = pair.objects_of("kv").await;
    assert_eq!(objects.len(), 1, "one object: {objects:?}");
    assert!(pair.read_raw(&objects[0]).await.len() >= value.len());
    let back: ByteBuf = cache.get("report").await.unwrap().expect("a hit");
    assert_eq!(back.into_vec(), value);
    // Another process, with the same object store, reads it too.
    let other = pair.cache();
    assert!(other.has("report").await.unwrap());
    let back: ByteBuf = other.get("report").await.unwrap().expect("a hit");
    assert_eq!(back.len(), value.len());
    // Small values stay inline.
    cache.set("small", &bytes(b"tiny")).await.unwrap();
    assert_eq!(pair.objects_of("kv").await.len(), 1);
    let stats = cache.storage_stats().await.unwrap();
    assert_eq!(
        (stats.entries, stats.object_entries, stats.chunk_items),
        (2, 1, 0)
    );
    assert!(stats.object_bytes >= value.len() as u64, "{stats:?}");
    assert!(
        stats.stored_bytes < 4096,
        "only the heads are in the table: {stats:?}"
    );
}

async fn replacing_or_deleting_a_value_deletes_its_object(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    cache.set("k", &bytes(&noise(1 << 20, 2))).await.unwrap();
    let first = pair.objects_of("kv").await;
    cache.set("k", &bytes(&noise(1 << 20, 3))).await.unwrap();
    let second = pair.objects_of("kv").await;
    assert_eq!(second.len(), 1);
    assert_ne!(first, second, "a new object per write, the old one deleted");
    let back: ByteBuf = cache.get("k").await.unwrap().unwrap();
    assert_eq!(back.into_vec(), noise(1 << 20, 3));
    // A small value replacing it leaves no object behind.
    cache.set("k", &bytes(b"small now")).await.unwrap();
    assert!(pair.objects_of("kv").await.is_empty());
    cache.set("k", &bytes(&noise(1 << 20, 4))).await.unwrap();
    assert!(cache.delete("k").await.unwrap());
    assert!(pair.objects_of("kv").await.is_empty());
    // take() reads the object, then deletes it.
    cache.set("t", &bytes(&noise(1 << 20, 5))).await.unwrap();
    let taken: ByteBuf = cache.take("t").await.unwrap().expect("taken");
    assert_eq!(taken.into_vec(), noise(1 << 20, 5));
    assert!(pair.objects_of("kv").await.is_empty());
    // clear() removes every object of the namespace.
    cache.set("a", &bytes(&noise(1 << 20, 6))).await.unwrap();
    cache.set("b", &bytes(&noise(1 << 20, 7))).await.unwrap();
    assert_eq!(pair.objects_of("kv").await.len(), 2);
    cache.clear().await.unwrap();
    assert!(pair.objects_of("kv").await.is_empty());
    assert!(cache.get::<ByteBuf>("a").await.unwrap().is_none());
}

async fn the_threshold_moves_smaller_values_to_objects(engine: Engine) {
    let Some(pair) = Pair::open_with(engine, |b| b.threshold(64 * 1024)).await else {
        return;
    };
    let cache = pair.cache();
    cache
        .set("mid", &bytes(&noise(100 * 1024, 8)))
        .await
        .unwrap();
    cache
        .set("low", &bytes(&noise(10 * 1024, 9)))
        .await
        .unwrap();
    cache
        .set_many(
            [
                ("m1", bytes(&noise(80 * 1024, 10))),
                ("m2", bytes(&noise(1024, 11))),
            ],
            dynacache::Expiry::Default,
        )
        .await
        .unwrap();
    assert_eq!(pair.objects_of("kv").await.len(), 2, "mid and m1");
    let back: ByteBuf = cache.get("m1").await.unwrap().unwrap();
    assert_eq!(back.into_vec(), noise(80 * 1024, 10));
    let back: ByteBuf = cache.get("low").await.unwrap().unwrap();
    assert_eq!(back.into_vec(), noise(10 * 1024, 9));
}

async fn a_damaged_replaced_or_missing_object_is_a_miss_never_served(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    let value = noise(1 << 20, 12);
    // Replaced by other bytes of the same length.
    cache.set("a", &bytes(&value)).await.unwrap();
    let key = pair.objects_of("kv").await.remove(0);
    let mut other = pair.read_raw(&key).await;
    other[1000] ^= 1;
    pair.overwrite(&key, other).await;
    assert!(cache.get::<ByteBuf>("a").await.unwrap().is_none());
    assert!(!cache.has("a").await.unwrap(), "the broken entry is gone");
    assert!(pair.objects_of("kv").await.is_empty(), "and its object");
    // Truncated.
    cache.set("b", &bytes(&value)).await.unwrap();
    let key = pair.objects_of("kv").await.remove(0);
    let raw = pair.read_raw(&key).await;
    pair.overwrite(&key, raw[..raw.len() / 2].to_vec()).await;
    assert!(cache.get::<ByteBuf>("b").await.unwrap().is_none());
    // Foreign: another entry's object in its place.
    cache.clear().await.unwrap();
    cache.set("c", &bytes(&value)).await.unwrap();
    let c_obj = pair.objects_of("kv").await.remove(0);
    let d_value = noise(1 << 20, 13);
    cache.set("d", &bytes(&d_value)).await.unwrap();
    let d_obj = pair
        .objects_of("kv")
        .await
        .into_iter()
        .find(|k| *k != c_obj)
        .unwrap();
    let d_bytes = pair.read_raw(&d_obj).await;
    pair.overwrite(&c_obj, d_bytes).await;
    assert!(
        cache.get::<ByteBuf>("c").await.unwrap().is_none(),
        "not d's value"
    );
    let d: ByteBuf = cache.get("d").await.unwrap().unwrap();
    assert_eq!(d.into_vec(), d_value);
    // Missing.
    cache.clear().await.unwrap();
    cache.set("e", &bytes(&value)).await.unwrap();
    let key = pair.objects_of("kv").await.remove(0);
    pair.remove_raw(&key).await;
    assert!(cache.get::<ByteBuf>("e").await.unwrap().is_none());
    let many: Vec<Option<ByteBuf>> = cache.get_many(["e"]).await.unwrap();
    assert!(many[0].is_none());
}

async fn concurrent_writers_leave_one_intact_value_and_one_object(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    let values: Vec<Vec<u8>> = (0..6).map(|i| noise(600 * 1024, 100 + i)).collect();
    let writers = values.iter().cloned().map(|v| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.set("hot", &ByteBuf::from(v)).await })
    });
    for w in futures::future::join_all(writers).await {
        w.unwrap().unwrap();
    }
    let back: ByteBuf = cache.get("hot").await.unwrap().unwrap();
    assert!(
        values.contains(&back.into_vec()),
        "one writer's value, whole"
    );
    assert_eq!(
        pair.objects_of("kv").await.len(),
        1,
        "each replaced head's object was deleted"
    );
}

async fn vacuum_reclaims_objects_no_entry_names(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .object_store(pair.objects.clone())
        .compress_from(None)
        .clock(clock.clone())
        .build(pair.table.clone())
        .unwrap();
    cache
        .set("kept", &bytes(&noise(1 << 20, 20)))
        .await
        .unwrap();
    cache
        .set("gone", &bytes(&noise(1 << 20, 21)))
        .await
        .unwrap();
    // A batch delete cannot report what it removed: its object is left behind.
    cache.delete_many(["gone"]).await.unwrap();
    // So is the upload of a writer that crashed before it wrote its entry.
    let crashed = format!("{}{:032x}", pair.objects.namespace_prefix("kv"), 7u128);
    pair.overwrite(&crashed, noise(1000, 22)).await;
    assert_eq!(pair.objects_of("kv").await.len(), 3);
    // Young objects may belong to writes in progress: left alone.
    assert_eq!(cache.vacuum().await.unwrap(), 0);
    clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(cache.vacuum().await.unwrap(), 2);
    assert_eq!(pair.objects_of("kv").await.len(), 1);
    let back: ByteBuf = cache.get("kept").await.unwrap().unwrap();
    assert_eq!(back.into_vec(), noise(1 << 20, 20));
}

async fn a_reader_without_the_object_store_gets_a_clear_error(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    pair.cache()
        .set("x", &bytes(&noise(1 << 20, 30)))
        .await
        .unwrap();
    let without = Cache::new(pair.table.clone()).unwrap();
    let err = without.get::<ByteBuf>("x").await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("object store"), "{err}");
}

async fn a_failed_upload_leaves_the_old_value(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    cache.set("k", &bytes(b"old")).await.unwrap();
    // Make the object store refuse writes: the directory becomes a file, the bucket goes.
    match &pair.raw {
        Raw::Dir(dir) => {
            std::fs::remove_dir_all(dir).unwrap();
            std::fs::write(dir, b"not a directory").unwrap();
        }
        Raw::S3 { client, bucket } => {
            client.delete_bucket().bucket(bucket).send().await.unwrap();
        }
    }
    let err = cache
        .set("k", &bytes(&noise(1 << 20, 40)))
        .await
        .unwrap_err();
    eprintln!("refused upload: {err}");
    let back: ByteBuf = cache.get("k").await.unwrap().expect("the old value");
    assert_eq!(back.into_vec(), b"old");
    if let Raw::Dir(dir) = &pair.raw {
        std::fs::remove_file(dir).unwrap();
    }
}

async fn a_64_megabyte_value_round_trips(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = Cache::builder()
        .object_store(pair.objects.clone())
        .compress_from(None)
        .build(pair.table.clone())
        .unwrap();
    let value = noise(64 << 20, 50);
    cache.set("huge", &bytes(&value)).await.unwrap();
    assert_eq!(chunk_items(&pair.table, "kv").await, 0);
    let back: ByteBuf = cache.get("huge").await.unwrap().unwrap();
    assert!(back.into_vec() == value);
}

async fn forged_heads_and_counters_on_objects_are_clear_errors(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    cache.set("big", &bytes(&noise(1 << 20, 80))).await.unwrap();
    // A counter cannot be made of a value in the object store.
    let err = cache.inc("big", 1).await.unwrap_err();
    assert!(matches!(err, dynacache::Error::NotACounter { .. }), "{err}");
    let back: ByteBuf = cache.get("big").await.unwrap().unwrap();
    assert_eq!(back.len(), 1 << 20);
    // A head whose object key is not a string: Corrupt, not a crash or a loop.
    use aws_sdk_dynamodb::types::AttributeValue as A;
    pair.table
        .client()
        .update_item()
        .table_name(pair.table.name())
        .key(pair.table.key_attribute(), A::S("kv:big".into()))
        .update_expression("SET ob = :n")
        .expression_attribute_values(":n", A::N("7".into()))
        .send()
        .await
        .unwrap();
    let err = cache.get::<ByteBuf>("big").await.unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    // A head naming another store's object: deleting the entry leaves that object alone.
    let foreign = format!("elsewhere/{}", "b".repeat(32));
    pair.overwrite(&foreign, b"not yours".to_vec()).await;
    pair.table
        .client()
        .update_item()
        .table_name(pair.table.name())
        .key(pair.table.key_attribute(), A::S("kv:big".into()))
        .update_expression("SET ob = :k")
        .expression_attribute_values(":k", A::S(foreign.clone()))
        .send()
        .await
        .unwrap();
    assert!(cache.get::<ByteBuf>("big").await.unwrap().is_none());
    cache.delete("big").await.unwrap();
    assert_eq!(pair.read_raw(&foreign).await, b"not yours");
}

async fn vacuum_and_clear_leave_a_deeper_store_s_objects(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    // Two stores in one place: `inner` with prefix "outer/" (namespace "kv": keys
    // "outer/kv/..."), and `outer` with no prefix (namespace "outer": keys "outer/...").
    let store = |prefix: &str| {
        let b = match &pair.raw {
            Raw::Dir(dir) => ObjectStore::builder().local(dir),
            Raw::S3 { bucket, .. } => ObjectStore::builder()
                .s3(bucket)
                .endpoint_url(std::env::var(S3_ENV).unwrap()),
        };
        b.prefix(prefix).open()
    };
    let inner = store("outer").await.unwrap();
    let outer = store("").await.unwrap();
    let cache = Cache::builder()
        .object_store(inner)
        .compress_from(None)
        .build(pair.table.clone())
        .unwrap();
    cache.set("x", &bytes(&noise(1 << 20, 90))).await.unwrap();
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(3600));
    let outer_cache = Cache::builder()
        .namespace("outer")
        .object_store(outer)
        .clock(clock)
        .build(pair.table.clone())
        .unwrap();
    assert_eq!(outer_cache.vacuum().await.unwrap(), 0);
    outer_cache.clear().await.unwrap();
    let back: ByteBuf = cache
        .get("x")
        .await
        .unwrap()
        .expect("the deeper store's value");
    assert_eq!(back.len(), 1 << 20);
}

// ----- HTTP ---------------------------------------------------------------------------------

fn app(cache: HttpCache, body: Bytes) -> Router {
    Router::new()
        .route(
            "/big",
            get(move |req: Request<Body>| {
                let body = body.clone();
                async move {
                    if req.headers().get("if-none-match").map(|v| v.as_bytes()) == Some(b"\"v1\"") {
                        return (
                            axum::http::StatusCode::NOT_MODIFIED,
                            [("cache-control", "max-age=0"), ("etag", "\"v1\"")],
                            Bytes::new(),
                        );
                    }
                    (
                        axum::http::StatusCode::OK,
                        [("cache-control", "max-age=0"), ("etag", "\"v1\"")],
                        body,
                    )
                }
            }),
        )
        .layer(CacheLayer::new(cache))
}

fn big() -> Request<Body> {
    Request::get("/big")
        .header("host", "app.example")
        .body(Body::empty())
        .unwrap()
}

/// A shared HTTP cache keeping bodies of up to 64 MiB in the pair's object store.
fn shared_cache_on_objects(pair: &Pair) -> HttpCache {
    HttpCache::builder()
        .shared(true)
        .write_wait(Duration::from_secs(120))
        .max_body_size(64 * 1024 * 1024)
        .object_store(pair.objects.clone())
        .build(pair.table.clone())
        .unwrap()
}

async fn http_bodies_stream_from_objects_and_304s_keep_them(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = shared_cache_on_objects(&pair);
    let body = Bytes::from(noise(12 << 20, 60));
    let app = app(cache.clone(), body.clone());
    let first = app.clone().oneshot(big()).await.unwrap();
    assert!(!first.from_cache());
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), body);
    cache.flush().await;
    let stored = pair.objects_of("http").await;
    assert_eq!(stored.len(), 1, "the body is one object");
    assert_eq!(chunk_items(&pair.table, "http").await, 0);
    // max-age=0: each hit revalidates; the 304 updates the entry, never the object.
    for _ in 0..2 {
        let hit = app.clone().oneshot(big()).await.unwrap();
        assert!(hit.from_cache(), "a revalidated hit");
        assert_eq!(hit.headers()["content-length"], body.len().to_string());
        assert_eq!(hit.into_body().collect().await.unwrap().to_bytes(), body);
    }
    cache.flush().await;
    assert_eq!(pair.objects_of("http").await, stored, "the same object");
    // A damaged object: the origin answers, and the client gets the right bytes.
    let mut damaged = pair.read_raw(&stored[0]).await;
    damaged[5] ^= 0xff;
    pair.overwrite(&stored[0], damaged).await;
    let answer = app.clone().oneshot(big()).await.unwrap();
    let got = answer.into_body().collect().await;
    assert!(
        got.map(|b| b.to_bytes() == body).unwrap_or(true),
        "never wrong bytes"
    );
    // Purging the entry deletes its object.
    cache.flush().await;
    cache.clear().await.unwrap();
    assert!(pair.objects_of("http").await.is_empty());
}

async fn range_requests_are_answered_from_objects(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = shared_cache_on_objects(&pair);
    let body = Bytes::from(noise((5 << 20) + 123, 61));
    let app = app(cache.clone(), body.clone());
    let first = app.clone().oneshot(big()).await.unwrap();
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), body);
    cache.flush().await;
    assert_eq!(
        pair.objects_of("http").await.len(),
        1,
        "the body is one object"
    );
    let len = body.len();
    let ranged = |range: &str| {
        let mut req = big();
        req.headers_mut().insert("range", range.parse().unwrap());
        req
    };
    // Ranges inside the object's first and last parts, across many, and to its end.
    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-300000", 1000, 300_000),
        ("bytes=-100", len - 100, len - 1),
        ("bytes=5000000-", 5_000_000, len - 1),
        ("bytes=262143-262144", 262_143, 262_144),
        ("bytes=1048000-2100000", 1_048_000, 2_100_000),
        ("bytes=1048576-1048576", 1_048_576, 1_048_576),
    ] {
        let res = app.clone().oneshot(ranged(range)).await.unwrap();
        assert!(res.from_cache(), "{range}: answered from the entry");
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{end}/{len}"),
            "{range}"
        );
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, body.slice(start..=end), "{range}: the right bytes");
    }
    // Only the parts a range is in are read, each checked alone: with the ETag taken off the
    // head (so the store hands out whatever bytes the object now holds), damage in part 3
    // leaves a range in part 0 answered from the entry...
    let stored = pair.objects_of("http").await;
    pair.forget_object_etags().await;
    let mut damaged = pair.read_raw(&stored[0]).await;
    damaged[3 << 20] ^= 0xff;
    pair.overwrite(&stored[0], damaged).await;
    let res = app
        .clone()
        .oneshot(ranged("bytes=1000-2000"))
        .await
        .unwrap();
    assert!(res.from_cache(), "part 0 is intact");
    assert_eq!(res.status(), 206);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, body.slice(1000..=2000));
    // ...and a range in the damaged part is never answered with wrong bytes.
    let res = app
        .clone()
        .oneshot(ranged("bytes=3145000-3146000"))
        .await
        .unwrap();
    let status = res.status();
    let got = res.into_body().collect().await.unwrap().to_bytes();
    match status.as_u16() {
        206 => assert_eq!(got, body.slice(3_145_000..=3_146_000)),
        200 => assert_eq!(got, body),
        other => panic!("unexpected status {other}"),
    }
}

async fn an_unreachable_object_store_is_a_typed_error(engine: Engine) {
    if engine != Engine::Embedded {
        return;
    }
    let err = ObjectStore::builder()
        .s3("nowhere")
        .endpoint_url("http://127.0.0.1:9")
        .operation_timeout(Duration::from_secs(2))
        .open()
        .await
        .unwrap_err();
    assert!(err.is_unreachable() || err.is_timeout(), "{err}");
    let err = ObjectStore::builder().url("s3://Bad_Bucket").unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err = ObjectStore::builder().url("ftp://x/y").unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

/// How [`fake_s3`] answers a GET.
#[derive(Clone, Copy, PartialEq)]
enum FakeGet {
    /// The headers and the first KB, then nothing: a store that answers and then hangs.
    Stalls,
    /// The whole object, 64 KiB at a time with a pause between: a store that is waited for.
    Trickles,
}

/// An S3 endpoint that keeps the last object it is sent and answers GETs as `get` says, for
/// faults no real server produces on demand. Every other call succeeds. Counts the GETs.
fn fake_s3(get: FakeGet) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counted = gets.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (gets, stored) = (counted.clone(), stored.clone());
            std::thread::spawn(move || serve_fake_s3(stream, get, &gets, &stored));
        }
    });
    (url, gets)
}

fn serve_fake_s3(
    stream: std::net::TcpStream,
    get: FakeGet,
    gets: &AtomicUsize,
    stored: &std::sync::Mutex<Vec<u8>>,
) {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let method = line.split(' ').next().unwrap_or("").to_owned();
        let (mut length, mut expect) = (0usize, false);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            expect |= header.starts_with("expect:") && header.contains("100-continue");
        }
        if expect {
            let _ = out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if method == "GET" {
            gets.fetch_add(1, Ordering::SeqCst);
            let object = stored.lock().unwrap().clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"e\"\r\n\r\n",
                object.len()
            );
            if out.write_all(head.as_bytes()).is_err() {
                return;
            }
            match get {
                FakeGet::Stalls => {
                    let _ = out.write_all(&object[..1024.min(object.len())]);
                    let _ = out.flush();
                    std::thread::sleep(Duration::from_secs(60));
                    return;
                }
                FakeGet::Trickles => {
                    for piece in object.chunks(64 << 10) {
                        if out.write_all(piece).and_then(|()| out.flush()).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    continue;
                }
            }
        }
        if method == "PUT" {
            *stored.lock().unwrap() = body;
        }
        let ok = "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n";
        if out.write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}

/// An object store on a [`fake_s3`], with a short operation timeout.
async fn fake_store(url: &str, breaker: CircuitBreaker) -> ObjectStore {
    ObjectStore::builder()
        .s3("fake")
        .endpoint_url(url)
        .operation_timeout(Duration::from_millis(500))
        .circuit_breaker(breaker)
        .assume_exists(true)
        .open()
        .await
        .unwrap()
}

/// A store that starts a download and then stalls fails the read within the operation
/// timeout, and counts against its breaker as a call that fails does: after as many such
/// reads as the breaker allows, reads fail fast without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stalls_mid_download_opens_its_breaker() {
    let table = common::table(Engine::Embedded).await.unwrap();
    let (url, gets) = fake_s3(FakeGet::Stalls);
    let cool_down = Duration::from_millis(500);
    let objects = fake_store(&url, CircuitBreaker::new(2, cool_down)).await;
    let cache = Cache::builder()
        .object_store(objects.clone())
        .build(table)
        .unwrap();
    cache
        .set("big", &bytes(&noise(600 << 10, 90)))
        .await
        .unwrap();
    for _ in 0..2 {
        let err = cache.get::<ByteBuf>("big").await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
    assert_eq!(objects.health().state, BreakerState::Open);
    let before = gets.load(Ordering::SeqCst);
    let err = cache.get::<ByteBuf>("big").await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(
        gets.load(Ordering::SeqCst),
        before,
        "refused without a call"
    );
    // After the cool-down, the probe is settled when the store sends its first part (the way
    // is not held for a whole download); its stall then counts as one failure.
    tokio::time::sleep(cool_down + Duration::from_millis(200)).await;
    let err = cache.get::<ByteBuf>("big").await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let health = objects.health();
    assert_eq!(health.state, BreakerState::Closed);
    assert_eq!(health.consecutive_failures, 1);
}

/// A client that reads a body streamed from an object slowly, for longer than the download
/// would be given (the operation timeout plus its size at 8 MiB/s), from a store that makes it
/// wait for every part, gets it whole: only the time spent waiting for the store counts, and
/// the store's breaker counts no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_not_taken_for_a_slow_store() {
    let table = common::table(Engine::Embedded).await.unwrap();
    let (url, _) = fake_s3(FakeGet::Trickles);
    let objects = fake_store(&url, CircuitBreaker::new(1, Duration::from_secs(600))).await;
    let cache = HttpCache::builder()
        .shared(true)
        .write_wait(Duration::from_secs(120))
        .max_body_size(64 * 1024 * 1024)
        .object_store(objects.clone())
        .build(table)
        .unwrap();
    let body = Bytes::from(noise(12 << 20, 91));
    let app = app(cache.clone(), body.clone());
    let first = app.clone().oneshot(big()).await.unwrap();
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), body);
    cache.flush().await;
    // The download is given 0.5 s + 1.5 s; the reader takes about 3 s.
    let hit = app.clone().oneshot(big()).await.unwrap();
    assert!(hit.from_cache());
    let mut hit = hit.into_body();
    let mut got = Vec::new();
    while let Some(frame) = hit.frame().await {
        let frame = frame.expect("the body streams to its end");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
            // 3 s for the whole body, in proportion.
            let share = data.len() as f64 / body.len() as f64;
            tokio::time::sleep(Duration::from_secs_f64(3.0 * share)).await;
        }
    }
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the right bytes");
    assert_eq!(objects.health().consecutive_failures, 0);
}

/// `clear` deletes the objects stored before it began, and leaves one stored since (a write
/// racing the clear, whose head may land after it): if no entry names it, vacuum takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_leaves_an_object_stored_after_it_began() {
    let pair = Pair::open(Engine::Embedded).await.unwrap();
    let Raw::Dir(dir) = &pair.raw else {
        unreachable!()
    };
    let cache = pair.cache();
    cache.set("old", &bytes(&noise(1 << 20, 95))).await.unwrap();
    let old = pair.objects_of("kv").await;
    assert_eq!(old.len(), 1);
    // An object of the namespace's own shape, dated an hour on (as one stored while the
    // clear runs is dated after its start).
    let racing = format!("{}{}", pair.objects.namespace_prefix("kv"), "a".repeat(32));
    pair.overwrite(&racing, b"a racing writer's bytes".to_vec())
        .await;
    std::fs::File::options()
        .write(true)
        .open(dir.join(&racing))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    cache.clear().await.unwrap();
    assert_eq!(pair.objects_of("kv").await, vec![racing]);
}

/// CI runs the S3 half of these tests: an unset variable there is a broken set-up, not a skip.
#[test]
fn s3_is_configured_in_ci() {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            std::env::var(S3_ENV).is_ok_and(|v| !v.is_empty()),
            "{S3_ENV} must be set in CI (scripts/test starts the S3 server)"
        );
    }
}

on_both_engines!(
    a_large_value_is_one_object_and_one_item,
    replacing_or_deleting_a_value_deletes_its_object,
    the_threshold_moves_smaller_values_to_objects,
    a_damaged_replaced_or_missing_object_is_a_miss_never_served,
    concurrent_writers_leave_one_intact_value_and_one_object,
    vacuum_reclaims_objects_no_entry_names,
    a_reader_without_the_object_store_gets_a_clear_error,
    a_failed_upload_leaves_the_old_value,
    a_64_megabyte_value_round_trips,
    http_bodies_stream_from_objects_and_304s_keep_them,
    range_requests_are_answered_from_objects,
    an_unreachable_object_store_is_a_typed_error,
    copying_a_namespace_copies_its_objects,
    forged_heads_and_counters_on_objects_are_clear_errors,
    vacuum_and_clear_leave_a_deeper_store_s_objects,
);

async fn copying_a_namespace_copies_its_objects(engine: Engine) {
    let Some(pair) = Pair::open(engine).await else {
        return;
    };
    let cache = pair.cache();
    let value = noise(1 << 20, 70);
    cache.set("big", &bytes(&value)).await.unwrap();
    let target = Cache::builder()
        .namespace("kv2")
        .object_store(pair.objects.clone())
        .build(pair.table.clone())
        .unwrap();
    let copied = cache.copy_to(&target, |_| {}).await.unwrap();
    assert_eq!(copied.skipped, 0);
    assert_eq!(pair.objects_of("kv2").await.len(), 1, "a copy of its own");
    // The source's object can go: the copy does not share it.
    cache.clear().await.unwrap();
    let back: ByteBuf = target.get("big").await.unwrap().unwrap();
    assert_eq!(back.into_vec(), value);
    // A target without an object store is told so.
    cache.set("big", &bytes(&value)).await.unwrap();
    let bare = Cache::builder()
        .namespace("kv3")
        .build(pair.table.clone())
        .unwrap();
    let err = cache.copy_to(&bare, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("object store"), "{err}");
}
