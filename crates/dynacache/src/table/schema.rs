//! The control plane: creating, describing, validating and deleting the table.

use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use super::Table;
use crate::error::{Error, Result};

/// What [`TableBuilder::open`](super::TableBuilder::open) does about the table.
///
/// ```
/// use dynacache::TablePolicy;
/// assert_eq!(TablePolicy::default(), TablePolicy::CreateIfMissing);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TablePolicy {
    /// Describe the table; create it if it is missing (on-demand billing, wait until active,
    /// enable TTL). An existing table with another key schema is an error. Needs
    /// `dynamodb:DescribeTable` and `DescribeTimeToLive`, and `CreateTable` and
    /// `UpdateTimeToLive` when it creates.
    #[default]
    CreateIfMissing,
    /// Make no control-plane call at all: the table is assumed to exist with the right schema.
    /// For AWS Lambda cold starts and least-privilege IAM policies. A missing table shows up as
    /// [`Error::TableNotFound`] on the first operation.
    AssumeExists,
    /// Describe the table and its TTL setting and fail with [`Error::SchemaMismatch`], listing
    /// every difference, when they are not what dynacache expects. Never modifies the table.
    Validate,
}

/// What DescribeTable and DescribeTimeToLive say about the table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TableDescription {
    /// The table name.
    pub name: String,
    /// `ACTIVE`, `CREATING`, ...
    pub status: String,
    /// The partition key attribute, if the table has a single string partition key... or
    /// whatever its first key element is.
    pub key_attribute: Option<String>,
    /// Each key element as `(name, HASH|RANGE, S|N|B)`.
    pub key_schema: Vec<(String, String, String)>,
    /// The TTL attribute, when TTL is enabled (or being enabled).
    pub ttl_attribute: Option<String>,
    /// `ENABLED`, `DISABLED`, `ENABLING`, `DISABLING`.
    pub ttl_status: String,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub billing_mode: String,
    /// The approximate item count (AWS refreshes it about every six hours).
    pub approximate_item_count: i64,
    /// The approximate size in bytes (refreshed like the item count).
    pub approximate_size_bytes: i64,
    /// The global secondary indexes as `(name, status)`: `meta` is the metadata index that
    /// listings read ([`Table::add_meta_index`]).
    pub indexes: Vec<(String, String)>,
}

impl Table {
    pub(super) async fn apply_policy(&self, policy: TablePolicy) -> Result<()> {
        match policy {
            TablePolicy::AssumeExists => Ok(()),
            TablePolicy::Validate => self.validate().await,
            TablePolicy::CreateIfMissing => match self.describe().await {
                Ok(d) => {
                    let problems = self.key_problems(&d);
                    if !problems.is_empty() {
                        return Err(Error::SchemaMismatch {
                            table: self.inner.name.clone(),
                            problems,
                        });
                    }
                    if d.ttl_attribute.as_deref() != Some(self.inner.ttl_attr.as_str()) {
                        tracing::warn!(
                            table = %self.inner.name,
                            ttl_attribute = %self.inner.ttl_attr,
                            "TTL is not enabled on this attribute: expired items are still \
                             misses, but DynamoDB will not delete them"
                        );
                    }
                    Ok(())
                }
                Err(Error::TableNotFound { .. }) => self.create().await,
                Err(e) => Err(e),
            },
        }
    }

    /// Creates the table as dynacache expects it (string partition key, on-demand billing,
    /// the metadata index unless [`TableBuilder::meta_index`](super::TableBuilder::meta_index)
    /// said no), waits until it is active, and enables TTL on the TTL attribute. A table that
    /// already exists is left as it is.
    pub async fn create(&self) -> Result<()> {
        let key = &self.inner.key_attr;
        let mut create = self.inner.client.create_table();
        if self.inner.meta_index {
            let (attr, index) = Self::meta_index_for_create()?;
            create = create
                .attribute_definitions(attr)
                .global_secondary_indexes(index);
        }
        let created = create
            .table_name(&self.inner.name)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| Error::config(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| Error::config(e.to_string()))?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        let mut created_here = true;
        match created {
            Ok(_) => {}
            // Another process created it first.
            Err(e)
                if e.as_service_error()
                    .and_then(|s| s.code())
                    .is_some_and(|c| c == "ResourceInUseException") =>
            {
                created_here = false;
            }
            Err(e) => return Err(self.err(e)),
        }
        self.inner
            .client
            .wait_until_table_exists()
            .table_name(&self.inner.name)
            .wait(Duration::from_secs(300))
            .await
            .map_err(|e| self.waiter_err(e))?;
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(&self.inner.ttl_attr)
            .enabled(true)
            .build()
            .map_err(|e| Error::config(e.to_string()))?;
        match self
            .inner
            .client
            .update_time_to_live()
            .table_name(&self.inner.name)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            Ok(_) => {}
            // Already enabled (a concurrent creator did it), which is what we want.
            Err(e)
                if e.as_service_error()
                    .and_then(|s| s.code())
                    .is_some_and(|c| c == "ValidationException") =>
            {
                tracing::debug!(table = %self.inner.name, "TTL already being set");
            }
            Err(e) => return Err(self.err(e)),
        }
        if created_here && self.inner.meta_index {
            // Created with the index: every head written to it carries `mi`. Without the
            // marker (a role that may not write it), listings scan until `reindex` runs.
            if let Err(e) = self.mark_indexed(super::index::TABLE_MARKER).await {
                tracing::warn!(
                    table = %self.inner.name,
                    error = %e,
                    "the table was created with its metadata index, but marking it failed: \
                     listings scan until `dynacache table index` runs"
                );
            }
        }
        Ok(())
    }

    /// Describes the table and its TTL setting.
    pub async fn describe(&self) -> Result<TableDescription> {
        let out = self
            .inner
            .client
            .describe_table()
            .table_name(&self.inner.name)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let t = out.table.ok_or_else(|| Error::TableNotFound {
            table: self.inner.name.clone(),
            source: None,
        })?;
        let types: std::collections::HashMap<String, String> = t
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_owned(),
                    a.attribute_type().as_str().to_owned(),
                )
            })
            .collect();
        let key_schema: Vec<(String, String, String)> = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                    types.get(k.attribute_name()).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let ttl = self
            .inner
            .client
            .describe_time_to_live()
            .table_name(&self.inner.name)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let ttl = ttl.time_to_live_description;
        let ttl_status = ttl
            .as_ref()
            .and_then(|d| d.time_to_live_status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "DISABLED".into());
        let ttl_attribute = ttl
            .as_ref()
            .filter(|d| {
                matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
            })
            .and_then(|d| d.attribute_name())
            .map(str::to_owned);
        Ok(TableDescription {
            name: self.inner.name.clone(),
            status: t
                .table_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            key_attribute: key_schema.first().map(|k| k.0.clone()),
            key_schema,
            ttl_attribute,
            ttl_status,
            billing_mode: t
                .billing_mode_summary()
                .and_then(|b| b.billing_mode())
                .map(|b| b.as_str().to_owned())
                .unwrap_or_else(|| "PROVISIONED".into()),
            approximate_item_count: t.item_count().unwrap_or(0),
            approximate_size_bytes: t.table_size_bytes().unwrap_or(0),
            indexes: t
                .global_secondary_indexes()
                .iter()
                .map(|i| {
                    (
                        i.index_name().unwrap_or_default().to_owned(),
                        i.index_status()
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        })
    }

    /// Checks the table's key schema and TTL setting against what this handle expects, and
    /// returns [`Error::SchemaMismatch`] listing every difference.
    pub async fn validate(&self) -> Result<()> {
        let d = self.describe().await?;
        let mut problems = self.key_problems(&d);
        match &d.ttl_attribute {
            Some(a) if *a == self.inner.ttl_attr => {}
            Some(a) => problems.push(format!(
                "TTL is enabled on attribute {a:?}, expected {:?}",
                self.inner.ttl_attr
            )),
            None => problems.push(format!(
                "TTL is {} (expected ENABLED on attribute {:?})",
                d.ttl_status, self.inner.ttl_attr
            )),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::SchemaMismatch {
                table: self.inner.name.clone(),
                problems,
            })
        }
    }

    fn key_problems(&self, d: &TableDescription) -> Vec<String> {
        let want = (
            self.inner.key_attr.clone(),
            "HASH".to_owned(),
            "S".to_owned(),
        );
        if d.key_schema == [want] {
            return Vec::new();
        }
        let mut problems = Vec::new();
        match d.key_schema.iter().find(|k| k.1 == "HASH") {
            Some((name, _, ty)) => {
                if *name != self.inner.key_attr {
                    problems.push(format!(
                        "partition key is {name:?}, expected {:?}",
                        self.inner.key_attr
                    ));
                }
                if ty != "S" {
                    problems.push(format!(
                        "partition key {name:?} has type {ty}, expected S (string)"
                    ));
                }
            }
            None => problems.push("the table has no partition key".into()),
        }
        for (name, _, _) in d.key_schema.iter().filter(|k| k.1 == "RANGE") {
            problems.push(format!(
                "the table has a sort key {name:?}; dynacache expects a partition key only"
            ));
        }
        problems
    }

    fn waiter_err<O: std::fmt::Debug + Send + Sync + 'static>(
        &self,
        e: aws_smithy_runtime_api::client::waiters::error::WaiterError<
            O,
            aws_sdk_dynamodb::operation::describe_table::DescribeTableError,
        >,
    ) -> Error {
        use aws_smithy_runtime_api::client::waiters::error::WaiterError;
        match e {
            WaiterError::OperationFailed(op) => self.err(op.into_error()),
            other => Error::Service {
                code: "WaiterFailed".into(),
                message: format!(
                    "table {:?} did not reach the expected state: {other:?}",
                    self.inner.name
                ),
                source: Box::new(other),
            },
        }
    }

    /// Deletes the table and everything in it, and waits until it is gone.
    pub async fn delete_table(&self) -> Result<()> {
        self.inner
            .client
            .delete_table()
            .table_name(&self.inner.name)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        self.inner
            .client
            .wait_until_table_not_exists()
            .table_name(&self.inner.name)
            .wait(Duration::from_secs(300))
            .await
            .map_err(|e| self.waiter_err(e))?;
        Ok(())
    }
}
