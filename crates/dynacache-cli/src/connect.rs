//! Connection options shared by every subcommand.

use std::path::PathBuf;

use clap::Args;
use dynacache::http::HttpCache;
use dynacache::{Cache, ObjectStore, ObjectStoreBuilder, Table, TableBuilder, TablePolicy};

use crate::error::CliError;

/// Where the cache lives. Without `--endpoint-url` or `--aws`, the embedded engine is used,
/// persisted to `--embedded-file`.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The table.
    #[arg(
        long,
        global = true,
        env = "DYNACACHE_TABLE",
        default_value = "dynacache"
    )]
    pub table: String,
    /// The namespace of HTTP responses (the key/value commands use `--kv-namespace`).
    #[arg(
        long,
        global = true,
        env = "DYNACACHE_NAMESPACE",
        default_value = "http"
    )]
    pub namespace: String,
    /// The namespace of key/value entries.
    #[arg(
        long,
        global = true,
        env = "DYNACACHE_KV_NAMESPACE",
        default_value = "kv"
    )]
    pub kv_namespace: String,
    /// A DynamoDB-compatible endpoint, such as DynamoDB Local.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL_DYNAMODB")]
    pub endpoint_url: Option<String>,
    /// Use AWS DynamoDB (credentials from the standard chain).
    #[arg(
        long,
        global = true,
        env = "DYNACACHE_AWS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub aws: bool,
    /// The AWS region.
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// The AWS profile.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// The embedded engine's file [default: $XDG_DATA_HOME/dynacache/cache.db, else
    /// ~/.local/share/dynacache/cache.db].
    #[arg(long, global = true, env = "DYNACACHE_EMBEDDED_FILE")]
    pub embedded_file: Option<PathBuf>,
    /// Keep values and bodies too large for one item in an object store: s3://bucket/prefix
    /// (AWS, or the S3-compatible server at --object-store-endpoint-url), file:///directory or a
    /// path, or `embedded` (a directory beside the embedded engine's file). Every process
    /// sharing the table must use the same one.
    #[arg(long, global = true, env = "DYNACACHE_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// An S3-compatible endpoint for --object-store s3://..., such as http://127.0.0.1:9000.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL_S3")]
    pub object_store_endpoint_url: Option<String>,
    /// Payloads from this many bytes up go to the object store [default: those too large for
    /// one item, about 400 KB].
    #[arg(long, global = true, env = "DYNACACHE_OBJECT_THRESHOLD")]
    pub object_threshold: Option<usize>,
    /// Make no control-plane call: the table is assumed to exist (least-privilege IAM).
    #[arg(long, global = true)]
    pub assume_exists: bool,
    /// Which namespace options were given rather than left at their defaults (set by `main`).
    #[arg(skip)]
    pub given: Given,
}

/// Whether `--namespace` and `--kv-namespace` were given, on the command line or in the
/// environment, rather than left at their defaults (`table template --format iam` covers the
/// namespaces named, or both defaults when none is).
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    pub namespace: bool,
    pub kv_namespace: bool,
}

impl Given {
    pub fn from_matches(matches: &clap::ArgMatches) -> Given {
        let given = |id: &str| {
            matches
                .value_source(id)
                .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
        };
        Given {
            namespace: given("namespace"),
            kv_namespace: given("kv_namespace"),
        }
    }
}

/// Whether a command may create the table when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creates {
    /// Create the table when it is missing (commands that write).
    Yes,
    /// Check that it exists with the expected key schema (commands that read).
    No,
    /// Neither: the command looks at the table as it is (`table describe`, `validate`, `delete`).
    AsIs,
}

impl Connection {
    pub fn embedded_path(&self) -> PathBuf {
        if let Some(p) = &self.embedded_file {
            return p.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("dynacache").join("cache.db")
    }

    pub fn is_embedded(&self) -> bool {
        self.endpoint_url.is_none() && !self.aws
    }

    /// Where the data lives, in words.
    pub fn describe(&self) -> String {
        format!("table {:?} in {}", self.table, self.location())
    }

    /// The engine and its address, in words.
    pub fn location(&self) -> String {
        match (&self.endpoint_url, self.aws) {
            (Some(url), _) => format!("the engine at {url}"),
            (None, true) => format!(
                "AWS DynamoDB ({})",
                self.region.as_deref().unwrap_or("the default region")
            ),
            (None, false) => format!(
                "the embedded engine's file {}",
                self.embedded_path().display()
            ),
        }
    }

    pub fn builder(&self, creates: Creates) -> TableBuilder {
        let mut b = Table::builder().name(&self.table);
        b = match (&self.endpoint_url, self.aws) {
            (Some(url), _) => b.endpoint_url(url),
            (None, true) => b.aws(),
            (None, false) => b.embedded_file(self.embedded_path()),
        };
        if let Some(r) = &self.region {
            b = b.region(r);
        }
        if let Some(p) = &self.profile {
            b = b.profile(p);
        }
        let policy = if creates == Creates::Yes && !self.assume_exists {
            TablePolicy::CreateIfMissing
        } else {
            // Checked by `table()` unless --assume-exists.
            TablePolicy::AssumeExists
        };
        b.policy(policy)
            .max_attempts(3)
            .connect_timeout(std::time::Duration::from_secs(3))
    }

    /// Opens the table. Commands that write create it when it is missing; the others check that
    /// it exists with the expected key schema (a TTL setting that differs is only a warning), so
    /// that a wrong name or a wrong table is reported as such.
    pub async fn table(&self, creates: Creates) -> Result<Table, CliError> {
        let table = self
            .builder(creates)
            .open()
            .await
            .map_err(|e| CliError::storage(e, self))?;
        if creates == Creates::No && !self.assume_exists {
            let d = table
                .describe()
                .await
                .map_err(|e| CliError::storage(e, self))?;
            let expected_key = [(
                table.key_attribute().to_owned(),
                "HASH".to_owned(),
                "S".to_owned(),
            )];
            if d.key_schema != expected_key {
                // `validate` words every difference.
                let e = table.validate().await.err().unwrap_or_else(|| {
                    dynacache::Error::SchemaMismatch {
                        table: table.name().to_owned(),
                        problems: vec![format!("unexpected key schema {:?}", d.key_schema)],
                    }
                });
                return Err(CliError::storage(e, self));
            }
            if d.ttl_attribute.as_deref() != Some(table.ttl_attribute()) {
                tracing::warn!(
                    ttl_status = %d.ttl_status,
                    "TTL is not enabled on attribute {:?}: expired items stay in the table until deleted",
                    table.ttl_attribute()
                );
            }
        }
        Ok(table)
    }

    pub async fn http(&self, creates: Creates) -> Result<HttpCache, CliError> {
        let table = self.table(creates).await?;
        self.http_on(table, &self.namespace).await
    }

    pub async fn kv(&self, creates: Creates) -> Result<Cache, CliError> {
        let table = self.table(creates).await?;
        self.kv_on(table, &self.kv_namespace).await
    }

    /// The HTTP cache of `namespace` on an open table, with this connection's object store.
    pub async fn http_on(&self, table: Table, namespace: &str) -> Result<HttpCache, CliError> {
        let mut b = HttpCache::builder().namespace(namespace);
        if let Some(objects) = self.objects().await? {
            b = b.object_store(objects);
        }
        b.build(table).map_err(|e| CliError::storage(e, self))
    }

    /// The key/value cache of `namespace` on an open table, with this connection's object store.
    pub async fn kv_on(&self, table: Table, namespace: &str) -> Result<Cache, CliError> {
        let mut b = Cache::builder().namespace(namespace);
        if let Some(objects) = self.objects().await? {
            b = b.object_store(objects);
        }
        b.build(table).map_err(|e| CliError::storage(e, self))
    }

    /// The object store builder `--object-store` names, if any.
    pub fn object_store_builder(&self) -> Result<Option<ObjectStoreBuilder>, CliError> {
        let Some(url) = self.object_store.as_deref() else {
            return Ok(None);
        };
        let mut b = if url == "embedded" {
            if !self.is_embedded() {
                return Err(CliError::new(
                    "--object-store embedded needs the embedded engine: give s3://bucket/prefix \
                     or a directory",
                    2,
                ));
            }
            let mut dir = self.embedded_path().into_os_string();
            dir.push(".objects");
            ObjectStore::builder().local(PathBuf::from(dir))
        } else {
            ObjectStore::builder()
                .url(url)
                .map_err(|e| CliError::new(format!("--object-store: {e}"), 2))?
        };
        if let Some(url) = &self.object_store_endpoint_url {
            b = b.endpoint_url(url);
        }
        if let Some(r) = &self.region {
            b = b.region(r);
        }
        if let Some(p) = &self.profile {
            b = b.profile(p);
        }
        if let Some(t) = self.object_threshold {
            b = b.threshold(t);
        }
        Ok(Some(
            b.assume_exists(self.assume_exists)
                .connect_timeout(std::time::Duration::from_secs(3)),
        ))
    }

    /// The bucket and prefix of `--object-store s3://bucket/prefix`, if that is what it names.
    pub fn object_bucket(&self) -> Option<(String, String)> {
        let rest = self.object_store.as_deref()?.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some((
            bucket.to_owned(),
            dynacache::objects::normalize_prefix(prefix),
        ))
    }

    /// Opens the object store `--object-store` names, if any.
    pub async fn objects(&self) -> Result<Option<ObjectStore>, CliError> {
        match self.object_store_builder()? {
            None => Ok(None),
            Some(b) => b
                .open()
                .await
                .map(Some)
                .map_err(|e| CliError::storage(e, self)),
        }
    }
}
