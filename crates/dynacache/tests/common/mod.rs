//! Engines for the conformance suite: every test runs once on the embedded engine and once on
//! DynamoDB Local (started by `scripts/test`, which sets `DYNACACHE_TEST_DYNAMODB_LOCAL`).
#![allow(dead_code)]

pub mod calls;
pub mod origin;

use dynacache::{Table, TableBuilder};

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    DynamoDbLocal,
}

pub const LOCAL_ENV: &str = "DYNACACHE_TEST_DYNAMODB_LOCAL";

/// A unique table name, so tests never see each other's items.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", fastrand::u64(..))
}

/// A builder for a fresh table on the engine, or `None` when DynamoDB Local is not configured
/// (outside `scripts/test`; CI always configures it, see `dynamodb_local_is_configured_in_ci`).
pub fn builder(engine: Engine) -> Option<TableBuilder> {
    // A generous bound on each storage call: a 64 MB value's batches on a 2-core machine
    // running other tests (or a build) can outlast the 4 s default. Tests of timeouts set
    // their own.
    let b = Table::builder()
        .name(unique_name("t"))
        .operation_timeout(std::time::Duration::from_secs(60));
    match engine {
        Engine::Embedded => Some(b.embedded()),
        Engine::DynamoDbLocal => match std::env::var(LOCAL_ENV) {
            Ok(url) if !url.is_empty() => Some(b.endpoint_url(url)),
            _ => {
                eprintln!(
                    "{LOCAL_ENV} is not set: DynamoDB Local test not run (scripts/test sets it)"
                );
                None
            }
        },
    }
}

/// A fresh table on the engine (created with the default policy).
pub async fn table(engine: Engine) -> Option<Table> {
    Some(builder(engine)?.open().await.expect("open table"))
}

/// Every partition key in the table, read with the raw SDK (a Scan to the last page).
pub async fn all_partition_keys(table: &Table) -> Vec<String> {
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let page = table
            .client()
            .scan()
            .table_name(table.name())
            .projection_expression("#k")
            .expression_attribute_names("#k", table.key_attribute())
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan the table");
        for item in page.items() {
            keys.extend(item[table.key_attribute()].as_s().ok().cloned());
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return keys;
        }
    }
}

/// Generates one `#[tokio::test]` per engine for each suite function `suite::NAME(Table)`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::common::table($crate::common::Engine::Embedded).await.unwrap();
                    super::suite::$name(t).await;
                }
            )*
        }
        mod dynamodb_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(t) = $crate::common::table($crate::common::Engine::DynamoDbLocal).await {
                        super::suite::$name(t).await;
                    }
                }
            )*
        }
    };
}

/// Generates one current-thread `#[tokio::test]` per engine for each function
/// `NAME(Engine)` of the test file (for tests that open their own tables, or record spans on
/// their own thread).
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $name() {
                    super::$name($crate::common::Engine::Embedded).await;
                }
            )*
        }
        mod dynamodb_local {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $name() {
                    super::$name($crate::common::Engine::DynamoDbLocal).await;
                }
            )*
        }
    };
}
