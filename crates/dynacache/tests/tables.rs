//! Table policies, engines and failure modes, on every engine.

mod common;

use common::{Engine, builder};
use dynacache::{Cache, CacheBuilder, Error, Table, TablePolicy};

macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Engine::Embedded).await }
            )*
        }
        mod dynamodb_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Engine::DynamoDbLocal).await }
            )*
        }
    };
}

on_every_engine!(
    a_missing_table_under_assume_exists_is_table_not_found,
    assume_exists_makes_no_control_plane_call,
    a_wrong_schema_under_validate_lists_every_difference,
    create_if_missing_refuses_a_table_with_another_key,
    validate_accepts_a_table_dynacache_created,
    create_if_missing_is_idempotent,
);

async fn a_missing_table_under_assume_exists_is_table_not_found(engine: Engine) {
    let Some(b) = builder(engine) else { return };
    let table = b.policy(TablePolicy::AssumeExists).open().await.unwrap();
    let cache = Cache::new(table).unwrap();
    let err = cache.get::<String>("k").await.unwrap_err();
    assert!(err.is_table_not_found(), "{err:?}");
    let err = cache.set("k", "v").await.unwrap_err();
    assert!(err.is_table_not_found(), "{err:?}");
}

async fn assume_exists_makes_no_control_plane_call(engine: Engine) {
    let Some(b) = builder(engine) else { return };
    let created = b.clone().open().await.unwrap();
    // Reopen through a handle that may not describe anything: it works without the table
    // being described (the proof is that a missing table above is only noticed on first use).
    let reopened = Table::builder()
        .name(created.name())
        .client(created.client().clone())
        .policy(TablePolicy::AssumeExists)
        .open()
        .await
        .unwrap();
    let cache = Cache::new(reopened).unwrap();
    cache.set("k", "v").await.unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}

async fn a_wrong_schema_under_validate_lists_every_difference(engine: Engine) {
    use aws_sdk_dynamodb::types::*;
    let Some(b) = builder(engine) else { return };
    let probe = b
        .clone()
        .policy(TablePolicy::AssumeExists)
        .open()
        .await
        .unwrap();
    probe
        .client()
        .create_table()
        .table_name(probe.name())
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    // Through the same client: each embedded engine handle is a separate in-memory database.
    let err = Table::builder()
        .name(probe.name())
        .client(probe.client().clone())
        .policy(TablePolicy::Validate)
        .open()
        .await
        .unwrap_err();
    match err {
        Error::SchemaMismatch { problems, .. } => {
            let text = problems.join("\n");
            assert!(text.contains("partition key is \"id\""), "{text}");
            assert!(text.contains("type N"), "{text}");
            assert!(text.contains("TTL"), "{text}");
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
}

async fn create_if_missing_refuses_a_table_with_another_key(engine: Engine) {
    let Some(b) = builder(engine) else { return };
    let first = b.clone().key_attribute("pk").open().await.unwrap();
    let err = Table::builder()
        .name(first.name())
        .client(first.client().clone())
        .open()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
}

async fn validate_accepts_a_table_dynacache_created(engine: Engine) {
    let Some(b) = builder(engine) else { return };
    let created = b.open().await.unwrap();
    Table::builder()
        .name(created.name())
        .client(created.client().clone())
        .policy(TablePolicy::Validate)
        .open()
        .await
        .unwrap();
}

async fn create_if_missing_is_idempotent(engine: Engine) {
    let Some(b) = builder(engine) else { return };
    let first = b.open().await.unwrap();
    Cache::new(first.clone())
        .unwrap()
        .set("k", "v")
        .await
        .unwrap();
    let again = Table::builder()
        .name(first.name())
        .client(first.client().clone())
        .open()
        .await
        .unwrap();
    let cache = Cache::new(again).unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener); // nothing listens there now
    let err = Table::builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .max_attempts(1)
        .open()
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let table = Table::builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .max_attempts(1)
        .policy(TablePolicy::AssumeExists)
        .open()
        .await
        .unwrap();
    let err = Cache::new(table)
        .unwrap()
        .get::<String>("k")
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
}

#[tokio::test]
async fn invalid_names_are_refused_before_any_request() {
    for b in [
        Table::builder().name("x"),
        Table::builder().name("has space"),
        Table::builder().key_attribute(""),
        Table::builder().ttl_attribute("v"),
        // The metadata index's key: a TTL number there would break every write.
        Table::builder().ttl_attribute("mi"),
        Table::builder().key_attribute("mi"),
        Table::builder().key_attribute("same").ttl_attribute("same"),
    ] {
        let err = b.open().await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn the_embedded_engine_persists_to_a_file() {
    let dir = std::env::temp_dir().join(common::unique_name("dynacache-test"));
    let path = dir.join("cache.db");
    {
        let table = Table::builder().embedded_file(&path).open().await.unwrap();
        Cache::new(table)
            .unwrap()
            .set("kept", &[1, 2, 3])
            .await
            .unwrap();
    }
    // The engine of the first handle shuts down in the background; give it a moment to close.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let table = Table::builder().embedded_file(&path).open().await.unwrap();
    let cache = Cache::new(table).unwrap();
    assert_eq!(
        cache.get::<Vec<i32>>("kept").await.unwrap(),
        Some(vec![1, 2, 3])
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_blocking_cache_works_without_a_runtime() {
    for engine in [Engine::Embedded, Engine::DynamoDbLocal] {
        let Some(b) = builder(engine) else { continue };
        let cache =
            dynacache::blocking::Cache::open(b, CacheBuilder::default().namespace("sync")).unwrap();
        cache.set("a", &1.5).unwrap();
        assert_eq!(cache.get::<f64>("a").unwrap(), Some(1.5));
        assert!(cache.add("b", "x").unwrap());
        assert_eq!(cache.inc("c", 2).unwrap(), 2);
        assert_eq!(cache.len().unwrap(), 3);
        let mut keys: Vec<String> = cache.keys().map(|k| k.unwrap().to_string()).collect();
        keys.sort();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(cache.clear().unwrap(), 3);
        assert!(cache.is_empty().unwrap());
    }
}

/// CI must run the DynamoDB Local half of the suite, not skip it.
#[test]
fn dynamodb_local_is_configured_in_ci() {
    if std::env::var_os("CI").is_some() {
        assert!(
            std::env::var(common::LOCAL_ENV).is_ok_and(|v| !v.is_empty()),
            "CI is set but {} is not: run the tests through scripts/test",
            common::LOCAL_ENV
        );
    }
}
