//! Spans: every cache operation and every DynamoDB call it makes is a `tracing` span (at debug
//! level), so a subscriber can time them and see which calls an operation made.

mod common;

use std::sync::{Arc, Mutex};

use dynacache::http::{CachedClient, HttpCache};
use dynacache::{Cache, Expiry};
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::common::origin::{Origin, Reply};

/// A span's name and its parent's name.
type Seen = (String, Option<String>);

/// Records each span's name and its parent's name.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.name().to_owned());
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), parent));
    }
}

impl Spans {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn cache_operations_and_their_dynamodb_calls_are_spans() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let table = common::table(common::Engine::Embedded).await.unwrap();
    let cache = Cache::new(table.clone()).unwrap();
    spans.take();

    cache.set("k", &1).await.unwrap();
    cache.get::<i32>("k").await.unwrap();
    let got: i32 = cache
        .get_or_insert_with("r", Expiry::Default, || async { 7 })
        .await;
    assert_eq!(got, 7);
    let seen = spans.take();
    let has = |name: &str, parent: Option<&str>| {
        seen.iter()
            .any(|(n, p)| n == name && p.as_deref() == parent)
    };
    assert!(has("dynacache.kv.set_with", None), "{seen:?}");
    assert!(has("dynacache.kv.get", None), "{seen:?}");
    assert!(has("dynacache.kv.get_or_insert_with", None), "{seen:?}");
    assert!(
        has("dynacache.storage", Some("dynacache.kv.set_with")),
        "a storage call is a child of the operation that made it: {seen:?}"
    );
    assert!(
        has("dynacache.storage", Some("dynacache.kv.get")),
        "{seen:?}"
    );

    let origin = Origin::start().await;
    let path = origin.respond(
        "p",
        Reply::ok("hello").header("cache-control", "max-age=60"),
    );
    let client = CachedClient::new(
        reqwest::Client::new(),
        HttpCache::builder().build(table).unwrap(),
    );
    for _ in 0..2 {
        let res = client.get(origin.url(&path)).send().await.unwrap();
        assert_eq!(res.text().await.unwrap(), "hello");
    }
    let seen = spans.take();
    assert!(
        seen.iter()
            .filter(|(n, _)| n == "dynacache.http.request")
            .count()
            >= 2,
        "{seen:?}"
    );
    assert!(
        seen.iter().any(
            |(n, p)| n == "dynacache.storage" && p.as_deref() == Some("dynacache.http.request")
        ),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_tier_misses_of_one_key_share_one_read() {
    // With the in-process tier, 64 callers missing it for one key at once make one GetItem;
    // after this process writes the key, a new read is made (never a result read before it).
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let table = common::table(common::Engine::Embedded).await.unwrap();
    let cache = Cache::builder()
        .in_process(dynacache::InProcessTier::new(16 << 20))
        .build(table.clone())
        .unwrap();
    let writer = Cache::new(table).unwrap();
    writer.set("hot", &1).await.unwrap();
    let reads_of = |seen: &[Seen]| {
        seen.iter()
            .filter(|(n, p)| n == "dynacache.storage" && p.as_deref() == Some("dynacache.kv.get"))
            .count()
    };
    spans.take();
    let all = futures::future::join_all((0..64).map(|_| cache.get::<i32>("hot"))).await;
    assert!(all.iter().all(|v| matches!(v, Ok(Some(1)))), "{all:?}");
    assert_eq!(
        reads_of(&spans.take()),
        1,
        "one GetItem for 64 concurrent misses"
    );

    // Misses of a key nobody stored are shared too.
    let all = futures::future::join_all((0..8).map(|_| cache.get::<i32>("absent"))).await;
    assert!(all.iter().all(|v| matches!(v, Ok(None))), "{all:?}");
    assert_eq!(reads_of(&spans.take()), 1);

    // This process's own write is seen by every read after it.
    cache.set("hot", &2).await.unwrap();
    let all = futures::future::join_all((0..8).map(|_| cache.get::<i32>("hot"))).await;
    assert!(all.iter().all(|v| matches!(v, Ok(Some(2)))), "{all:?}");
}
