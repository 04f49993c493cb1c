//! # dynacache
//!
//! DynamoDB-backed caching for Rust. One storage code path from a laptop to AWS: the same
//! DynamoDB requests go to AWS DynamoDB in production, to the official DynamoDB Local in CI, and
//! to an **embedded** DynamoDB-compatible engine (in-process, SQLite-backed) that is the
//! zero-setup default.
//!
//! ## The key/value cache
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use dynacache::{Cache, Expiry, Table};
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct User { name: String, visits: u32 }
//!
//! // The embedded engine, in memory: no AWS account needed.
//! let table = Table::builder().name("my_cache").open().await?;
//! let users = Cache::builder()
//!     .namespace("users")
//!     .default_ttl(Duration::from_secs(300))
//!     .build(table)?;
//!
//! let alice = User { name: "Alice".into(), visits: 3 };
//! users.set("alice", &alice).await?;
//! assert_eq!(users.get::<User>("alice").await?, Some(alice));
//!
//! // Atomic counters and add-if-absent, safe across processes.
//! assert_eq!(users.inc("logins", 1).await?, 1);
//! assert!(users.add_with("lock", &"me", Expiry::After(Duration::from_secs(30))).await?);
//! assert!(!users.add("lock", &"someone else").await?);
//! # Ok(()) }
//! ```
//!
//! ## Engines
//!
//! - [`TableBuilder::embedded`] (default) and [`TableBuilder::embedded_file`]: the embedded
//!   engine, in memory or persisted to a file.
//! - [`TableBuilder::endpoint_url`]: any DynamoDB-compatible endpoint, such as DynamoDB Local.
//! - [`TableBuilder::aws`], [`TableBuilder::sdk_config`], [`TableBuilder::client`]: AWS, with the
//!   standard credential chain or your own SDK configuration.
//!
//! ## Errors
//!
//! Every fallible call returns [`Error`], one enum by meaning (throttled, table missing, corrupt
//! item, value too large, ...), with the AWS SDK error kept as its source.
//!
//! ## Without an async runtime
//!
//! [`blocking::Cache`] offers the same API for synchronous programs.
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod blocking;
mod clock;
mod coalesce;
mod codec;
mod error;
mod expiry;
#[cfg(all(test, feature = "http"))]
mod fuzz;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http-cache")]
pub mod http_cache;
mod kv;
pub mod metrics;
pub mod objects;
mod store;
mod table;
mod tier;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::PYTHON_PICKLE_EXT;
pub use error::{Error, Result};
pub use expiry::Expiry;
pub use kv::{Cache, CacheBuilder, FleetSingleFlight, Lease};
pub use objects::{DEFAULT_OBJECT_THRESHOLD, ObjectStore, ObjectStoreBuilder};
pub use store::{CopyProgress, Key, MAX_KEY_LEN, StorageStats};
pub use table::{
    BreakerState, CircuitBreaker, ConsumedCapacity, DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_TABLE, Engine, MAX_ITEM_BYTES,
    MAX_KEY_BYTES, META_ATTRIBUTE, META_INDEX, META_PROJECTED, META_SHARDS, Reindexed,
    StorageHealth, Table, TableBuilder, TableDescription, TablePolicy,
};
pub use tier::{InProcessTier, InProcessUsage};
