//! Connecting to an engine and opening the table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Credentials;

use super::breaker::{Breaker, CircuitBreaker};
use super::{Table, TableInner, TablePolicy};

/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time allowed for one attempt of a DynamoDB call.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed for one DynamoDB call, retries included: no storage call waits longer.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(4);
use crate::error::{Error, Result};

/// Where the table lives.
#[derive(Debug, Clone)]
enum Source {
    #[cfg(feature = "embedded")]
    Embedded(Option<PathBuf>),
    Endpoint(String),
    Aws,
    SdkConfig(Box<SdkConfig>),
    Client(Box<Client>),
}

/// Which kind of engine a [`Table`] talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// The embedded engine, in memory or in a file.
    Embedded {
        /// The SQLite file, or `None` for memory.
        path: Option<PathBuf>,
    },
    /// A DynamoDB-compatible endpoint, such as DynamoDB Local.
    Endpoint {
        /// The endpoint URL.
        url: String,
    },
    /// AWS DynamoDB.
    Aws,
    /// A client or configuration the caller built.
    Custom,
}

/// Builds a [`Table`]: which engine, which table, and what to do when it is missing.
///
/// With no engine chosen, the embedded in-memory engine is used, so this works on a fresh
/// machine with no AWS account:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use dynacache::Table;
///
/// let table = Table::builder().name("my_cache").open().await?;
/// assert_eq!(table.name(), "my_cache");
/// # Ok(()) }
/// ```
///
/// Against DynamoDB Local, or AWS:
///
/// ```no_run
/// # async fn f() -> dynacache::Result<()> {
/// use dynacache::{Table, TablePolicy};
///
/// let local = Table::builder().endpoint_url("http://127.0.0.1:8000").open().await?;
/// let aws = Table::builder()
///     .aws()
///     .region("eu-west-1")
///     .name("prod_cache")
///     .policy(TablePolicy::AssumeExists)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TableBuilder {
    source: Option<Source>,
    name: String,
    key_attribute: String,
    ttl_attribute: String,
    policy: TablePolicy,
    region: Option<String>,
    profile: Option<String>,
    credentials: Option<Credentials>,
    max_attempts: Option<u32>,
    connect_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    consistent_reads: bool,
    scan_segments: u32,
    meta_index: bool,
    breaker: CircuitBreaker,
}

impl Default for TableBuilder {
    fn default() -> Self {
        TableBuilder {
            source: None,
            name: super::DEFAULT_TABLE.into(),
            key_attribute: "key".into(),
            ttl_attribute: "ttl".into(),
            policy: TablePolicy::CreateIfMissing,
            region: None,
            profile: None,
            credentials: None,
            max_attempts: None,
            connect_timeout: None,
            operation_timeout: None,
            attempt_timeout: None,
            consistent_reads: false,
            scan_segments: 4,
            meta_index: true,
            breaker: CircuitBreaker::default(),
        }
    }
}

impl TableBuilder {
    /// The table name (default `dynacache`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The partition key attribute, a string (default `key`).
    pub fn key_attribute(mut self, name: impl Into<String>) -> Self {
        self.key_attribute = name.into();
        self
    }

    /// The TTL attribute, a number of epoch seconds (default `ttl`).
    pub fn ttl_attribute(mut self, name: impl Into<String>) -> Self {
        self.ttl_attribute = name.into();
        self
    }

    /// What to do about the table at start-up (default [`TablePolicy::CreateIfMissing`]).
    pub fn policy(mut self, policy: TablePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Use the embedded engine in memory (the default). Its data is gone when the last
    /// [`Table`] handle is dropped.
    #[cfg(feature = "embedded")]
    pub fn embedded(mut self) -> Self {
        self.source = Some(Source::Embedded(None));
        self
    }

    /// Use the embedded engine, persisted to a SQLite file (created with its folder if missing).
    #[cfg(feature = "embedded")]
    pub fn embedded_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(Source::Embedded(Some(path.into())));
        self
    }

    /// Use a DynamoDB-compatible endpoint, such as DynamoDB Local at `http://127.0.0.1:8000`.
    ///
    /// Credentials come from the standard chain, except for a loopback endpoint when none are
    /// given: then static placeholder credentials are used, which local engines accept.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.source = Some(Source::Endpoint(url.into()));
        self
    }

    /// Use AWS DynamoDB with the standard credential chain (environment, profile, SSO, web
    /// identity, container and instance roles). `AWS_ENDPOINT_URL_DYNAMODB` is honoured.
    pub fn aws(mut self) -> Self {
        self.source = Some(Source::Aws);
        self
    }

    /// Use a configuration the caller loaded with `aws-config`.
    pub fn sdk_config(mut self, config: &SdkConfig) -> Self {
        self.source = Some(Source::SdkConfig(Box::new(config.clone())));
        self
    }

    /// Use a DynamoDB client the caller built. Retry, timeout, region and credential settings of
    /// this builder are then ignored: the client's own apply.
    pub fn client(mut self, client: Client) -> Self {
        self.source = Some(Source::Client(Box::new(client)));
        self
    }

    /// The AWS region (default: from the environment, else `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The named profile from `~/.aws/config` to take credentials and region from.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Explicit credentials.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "dynacache",
        ));
        self
    }

    /// How many times a request is tried in all, with exponential backoff between attempts
    /// (50 ms, then doubling, at most 500 ms: a cache gains little from waiting longer), when it
    /// is throttled or fails in a transient way (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Time allowed to open a connection (default [`DEFAULT_CONNECT_TIMEOUT`], 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Time allowed for one operation, retries included (default
    /// [`DEFAULT_OPERATION_TIMEOUT`], 4 s): no single storage call waits longer.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Time allowed for one attempt of an operation (default [`DEFAULT_ATTEMPT_TIMEOUT`], 2 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// When to stop calling DynamoDB for a while after repeated failures (default
    /// [`CircuitBreaker::default`]: five consecutive failures, five seconds). While it is open,
    /// calls fail at once with [`Error::Unavailable`] and the HTTP cache goes straight to the
    /// origin.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dynacache::{CircuitBreaker, Table};
    /// let builder = Table::builder().circuit_breaker(CircuitBreaker::new(10, Duration::from_secs(2)));
    /// ```
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// Read with strong consistency (default: eventually consistent, half the read cost).
    pub fn consistent_reads(mut self, consistent: bool) -> Self {
        self.consistent_reads = consistent;
        self
    }

    /// How many parallel segments scans use (listing, counting, clearing). Default 4.
    pub fn scan_segments(mut self, segments: u32) -> Self {
        self.scan_segments = segments.clamp(1, 1_000_000);
        self
    }

    /// Whether a table this handle creates gets the metadata index (default: yes), so that
    /// listing, counting and purging a namespace read only its metadata instead of scanning
    /// the table; it adds about one write unit to each stored entry. Tables that exist are
    /// left as they are (see [`Table::add_meta_index`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::Table;
    ///
    /// let table = Table::builder().meta_index(false).open().await?;
    /// assert!(table.describe().await?.indexes.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn meta_index(mut self, enabled: bool) -> Self {
        self.meta_index = enabled;
        self
    }

    /// Connects, applies the [`TablePolicy`], and returns the table.
    pub async fn open(self) -> Result<Table> {
        validate_table_name(&self.name)?;
        validate_attribute_name(&self.key_attribute)?;
        validate_attribute_name(&self.ttl_attribute)?;
        if self.key_attribute == self.ttl_attribute {
            return Err(Error::config(
                "the key and TTL attributes must have different names",
            ));
        }
        #[cfg(feature = "embedded")]
        let default_source = Source::Embedded(None);
        #[cfg(not(feature = "embedded"))]
        let default_source = Source::Aws;
        let source = self.source.clone().unwrap_or(default_source);

        #[cfg(feature = "embedded")]
        let mut embedded = None;
        let (client, engine) = match source {
            #[cfg(feature = "embedded")]
            Source::Embedded(path) => {
                let started = super::embedded::EmbeddedEngine::start(path.as_deref())?;
                let config = self
                    .loader(Some(started.endpoint()), true)
                    .region(Region::new("us-east-1"))
                    .load()
                    .await;
                embedded = Some(started);
                (Client::new(&config), Engine::Embedded { path })
            }
            Source::Endpoint(url) => {
                let config = self.loader(Some(&url), is_loopback(&url)).load().await;
                (Client::new(&config), Engine::Endpoint { url })
            }
            Source::Aws => {
                let config = self.loader(None, false).load().await;
                (Client::new(&config), Engine::Aws)
            }
            Source::SdkConfig(config) => {
                // Bounded waits unless the configuration brings its own timeouts.
                let mut conf = aws_sdk_dynamodb::config::Builder::from(&*config);
                if config.timeout_config().is_none_or(|t| !t.has_timeouts()) {
                    conf = conf.timeout_config(self.timeouts());
                }
                (Client::from_conf(conf.build()), Engine::Custom)
            }
            Source::Client(client) => (*client, Engine::Custom),
        };

        let table = Table {
            inner: Arc::new(TableInner {
                client,
                name: self.name,
                key_attr: self.key_attribute,
                ttl_attr: self.ttl_attribute,
                consistent_reads: self.consistent_reads,
                scan_segments: self.scan_segments,
                meta_index: self.meta_index,
                meta: Default::default(),
                engine,
                capacity: Default::default(),
                breaker: Breaker::new(self.breaker),
                #[cfg(feature = "embedded")]
                _embedded: embedded,
            }),
        };
        table.apply_policy(self.policy).await?;
        Ok(table)
    }

    fn loader(&self, endpoint: Option<&str>, local: bool) -> aws_config::ConfigLoader {
        aws_loader(
            endpoint,
            local,
            self.region.as_deref(),
            self.profile.as_deref(),
            self.credentials.as_ref(),
            self.max_attempts,
        )
        .timeout_config(self.timeouts())
    }

    /// The timeouts: the ones set, else bounded defaults (a cache must never hang its callers
    /// on a silent endpoint).
    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
            .operation_timeout(self.operation_timeout.unwrap_or(DEFAULT_OPERATION_TIMEOUT))
            .operation_attempt_timeout(self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT))
            .build()
    }
}

/// The SDK configuration loader of every client dynacache makes (DynamoDB, S3): endpoint, profile,
/// region (a local engine gets one to sign with), credentials (a local engine gets dummy ones),
/// and short retries (a cache gains little from long backoffs: a miss goes to the origin).
pub(crate) fn aws_loader(
    endpoint: Option<&str>,
    local: bool,
    region: Option<&str>,
    profile: Option<&str>,
    credentials: Option<&Credentials>,
    max_attempts: Option<u32>,
) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).stalled_stream_protection(
        aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
    );
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    match (region, local) {
        (Some(r), _) => loader = loader.region(Region::new(r.to_owned())),
        (None, true) => loader = loader.region(Region::new("us-east-1")),
        (None, false) => {
            loader = loader.region(
                aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else("us-east-1"),
            )
        }
    }
    match (credentials, local) {
        (Some(c), _) => loader = loader.credentials_provider(c.clone()),
        (None, true) => {
            loader = loader.credentials_provider(Credentials::new(
                "dynacache",
                "local",
                None,
                None,
                "dynacache-local",
            ))
        }
        (None, false) => {}
    }
    let mut retry = RetryConfig::standard()
        .with_initial_backoff(Duration::from_millis(if local { 20 } else { 50 }))
        .with_max_backoff(Duration::from_millis(500));
    if let Some(n) = max_attempts {
        retry = retry.with_max_attempts(n);
    }
    loader.retry_config(retry)
}

pub(crate) fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// DynamoDB table names: 3 to 255 characters of `a-z A-Z 0-9 _ - .`.
pub(crate) fn validate_table_name(name: &str) -> Result<()> {
    let ok = (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "table name {name:?} is not valid: DynamoDB table names are 3 to 255 characters of \
             letters, digits, '_', '-' and '.'"
        )))
    }
}

fn validate_attribute_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::config(format!(
            "attribute name {name:?} must be 1 to 255 bytes long"
        )));
    }
    if super::item::is_reserved_attribute(name) {
        return Err(Error::config(format!(
            "attribute name {name:?} is used by dynacache itself; choose another"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:8000"));
        assert!(is_loopback("http://localhost:8000/"));
        assert!(is_loopback("http://[::1]:8000"));
        assert!(!is_loopback("https://dynamodb.eu-west-1.amazonaws.com"));
    }

    #[test]
    fn table_names_follow_dynamodb_rules() {
        assert!(validate_table_name("http_cache").is_ok());
        assert!(validate_table_name("ab").is_err());
        assert!(validate_table_name("a b c").is_err());
        assert!(validate_table_name(&"x".repeat(256)).is_err());
    }
}
