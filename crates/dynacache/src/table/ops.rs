//! Item operations: get, put, delete, update, and the batch calls with their retry loops.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, ReturnConsumedCapacity,
    ReturnValue, WriteRequest,
};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::Table;
use super::item::{Item, s};
use crate::error::{Error, Result};

/// BatchGetItem takes at most 100 keys.
const BATCH_GET_MAX: usize = 100;
/// BatchWriteItem takes at most 25 requests.
const BATCH_WRITE_MAX: usize = 25;
/// Batch calls in flight at once.
const BATCH_CONCURRENCY: usize = 4;
/// Attempts at a batch's unprocessed remainder before giving up with `Throttled`.
const BATCH_ATTEMPTS: u32 = 12;

/// A condition or update expression with its placeholders.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expr {
    pub(crate) text: String,
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, AttributeValue>,
}

impl Expr {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Expr {
            text: text.into(),
            ..Default::default()
        }
    }

    pub(crate) fn name(mut self, placeholder: &str, name: &str) -> Self {
        self.names.insert(placeholder.into(), name.into());
        self
    }

    pub(crate) fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), value);
        self
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// The outcome of a conditional put.
#[derive(Debug)]
pub(crate) enum Put {
    /// Written; with the item it replaced, when asked for.
    Written { old: Option<Item> },
    /// The condition did not hold; nothing was written.
    ConditionFailed,
}

/// One request of a batch write.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Put(Item),
    Delete(String),
}

impl Table {
    fn key_map(&self, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(self.inner.key_attr.clone(), s(key))])
    }

    /// GetItem. `projection` lists the attributes wanted (the key is always included).
    pub(crate) async fn get_item(
        &self,
        key: &str,
        projection: Option<&[&str]>,
        consistent: bool,
    ) -> Result<Option<Item>> {
        let mut req = self
            .inner
            .client
            .get_item()
            .table_name(&self.inner.name)
            .set_key(Some(self.key_map(key)))
            .consistent_read(consistent || self.inner.consistent_reads)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Some(attrs) = projection {
            let (text, names) = projection_expr(&self.inner.key_attr, attrs);
            req = req
                .projection_expression(text)
                .set_expression_attribute_names(Some(names));
        }
        let out = self
            .guarded("GetItem", async {
                req.send().await.map_err(|e| self.err(e))
            })
            .await?;
        self.inner.capacity.record_read(out.consumed_capacity());
        Ok(out.item)
    }

    /// PutItem, optionally conditional, optionally returning the item it replaced.
    pub(crate) async fn put_item(
        &self,
        item: Item,
        condition: Option<Expr>,
        return_old: bool,
    ) -> Result<Put> {
        let size = super::item::item_size(&item) as u64;
        let mut req = self
            .inner
            .client
            .put_item()
            .table_name(&self.inner.name)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if return_old {
            req = req.return_values(ReturnValue::AllOld);
        }
        if let Some(c) = &condition {
            req = req
                .condition_expression(&c.text)
                .set_expression_attribute_names(c.names())
                .set_expression_attribute_values(c.values());
        }
        self.guarded("PutItem", async {
            match req.send().await {
                Ok(out) => {
                    self.inner.capacity.record_write(out.consumed_capacity());
                    Ok(Put::Written {
                        old: out.attributes.filter(|a| !a.is_empty()),
                    })
                }
                Err(e) if is_condition_failed(&e) => Ok(Put::ConditionFailed),
                // The engine refused the item as too large: say how large it was.
                Err(e) => Err(match self.err(e) {
                    Error::ItemTooLarge { limit, .. } => Error::ItemTooLarge { size, limit },
                    other => other,
                }),
            }
        })
        .await
    }

    /// DeleteItem, optionally conditional; returns the deleted item when asked for.
    pub(crate) async fn delete_item(
        &self,
        key: &str,
        condition: Option<Expr>,
        return_old: bool,
    ) -> Result<Put> {
        let mut req = self
            .inner
            .client
            .delete_item()
            .table_name(&self.inner.name)
            .set_key(Some(self.key_map(key)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if return_old {
            req = req.return_values(ReturnValue::AllOld);
        }
        if let Some(c) = &condition {
            req = req
                .condition_expression(&c.text)
                .set_expression_attribute_names(c.names())
                .set_expression_attribute_values(c.values());
        }
        self.guarded("DeleteItem", async {
            match req.send().await {
                Ok(out) => {
                    self.inner.capacity.record_write(out.consumed_capacity());
                    Ok(Put::Written {
                        old: out.attributes.filter(|a| !a.is_empty()),
                    })
                }
                Err(e) if is_condition_failed(&e) => Ok(Put::ConditionFailed),
                Err(e) => Err(self.err(e)),
            }
        })
        .await
    }

    /// UpdateItem with an update expression and an optional condition; returns the new item
    /// (`None` when the condition failed).
    pub(crate) async fn update_item(
        &self,
        key: &str,
        update: Expr,
        condition: Option<&str>,
    ) -> Result<Option<Item>> {
        self.update(key, update, condition, ReturnValue::AllNew)
            .await
            .map(|out| out.and_then(|o| o.attributes))
    }

    /// UpdateItem that returns nothing (for large items whose body need not cross the network
    /// again); `Ok(false)` when the condition failed.
    pub(crate) async fn update_item_quiet(
        &self,
        key: &str,
        update: Expr,
        condition: Option<&str>,
    ) -> Result<bool> {
        self.update(key, update, condition, ReturnValue::None)
            .await
            .map(|out| out.is_some())
    }

    async fn update(
        &self,
        key: &str,
        update: Expr,
        condition: Option<&str>,
        returns: ReturnValue,
    ) -> Result<Option<aws_sdk_dynamodb::operation::update_item::UpdateItemOutput>> {
        let mut req = self
            .inner
            .client
            .update_item()
            .table_name(&self.inner.name)
            .set_key(Some(self.key_map(key)))
            .update_expression(&update.text)
            .set_expression_attribute_names(update.names())
            .set_expression_attribute_values(update.values())
            .return_values(returns)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Some(c) = condition {
            req = req.condition_expression(c);
        }
        self.guarded("UpdateItem", async {
            match req.send().await {
                Ok(out) => {
                    self.inner.capacity.record_write(out.consumed_capacity());
                    Ok(Some(out))
                }
                Err(e) if is_condition_failed(&e) => Ok(None),
                Err(e) => Err(self.err(e)),
            }
        })
        .await
    }

    /// BatchGetItem over any number of keys, 100 a call, a few calls in flight, unprocessed keys
    /// retried with backoff. Order is not kept; missing keys are simply absent.
    pub(crate) async fn batch_get(&self, keys: Vec<String>, consistent: bool) -> Result<Vec<Item>> {
        self.batch_get_sized(keys, consistent, BATCH_GET_MAX).await
    }

    /// [`batch_get`](Table::batch_get) with at most `per_call` keys a call (large items).
    pub(crate) async fn batch_get_sized(
        &self,
        keys: Vec<String>,
        consistent: bool,
        per_call: usize,
    ) -> Result<Vec<Item>> {
        let mut unique = keys;
        unique.sort_unstable();
        unique.dedup();
        let batches: Vec<Vec<String>> = unique
            .chunks(per_call.clamp(1, BATCH_GET_MAX))
            .map(<[String]>::to_vec)
            .collect();
        let pages: Vec<Vec<Item>> = stream::iter(batches)
            .map(|batch| self.batch_get_one(batch, consistent))
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn batch_get_one(&self, keys: Vec<String>, consistent: bool) -> Result<Vec<Item>> {
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys.iter().map(|k| self.key_map(k)).collect()))
            .consistent_read(consistent || self.inner.consistent_reads)
            .build()
            .map_err(|e| Error::config(e.to_string()))?;
        let mut found = Vec::with_capacity(keys.len());
        for attempt in 0.. {
            let call = self
                .inner
                .client
                .batch_get_item()
                .request_items(&self.inner.name, request.clone())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send();
            let out = self
                .guarded("BatchGetItem", async {
                    call.await.map_err(|e| self.err(e))
                })
                .await?;
            for c in out.consumed_capacity() {
                self.inner.capacity.record_read(Some(c));
            }
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.inner.name).unwrap_or_default());
            }
            match out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.inner.name))
                .filter(|k| !k.keys.is_empty())
            {
                None => return Ok(found),
                Some(rest) => {
                    if attempt + 1 >= BATCH_ATTEMPTS {
                        return Err(Error::Throttled {
                            message: format!(
                                "{} keys stayed unprocessed after {BATCH_ATTEMPTS} attempts",
                                rest.keys.len()
                            ),
                            source: None,
                        });
                    }
                    request = rest;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// BatchWriteItem over any number of puts and deletes, 25 a call, a few calls in flight,
    /// unprocessed items retried with backoff until done or `Throttled`.
    pub(crate) async fn batch_write(&self, writes: Vec<Write>) -> Result<()> {
        let requests: Vec<WriteRequest> = writes
            .into_iter()
            .map(|w| match w {
                Write::Put(item) => WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().ok()?)
                    .build()
                    .into(),
                Write::Delete(key) => WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(self.key_map(&key)))
                            .build()
                            .ok()?,
                    )
                    .build()
                    .into(),
            })
            .collect::<Option<_>>()
            .ok_or_else(|| Error::config("could not build a batch write request"))?;
        let batches: Vec<Vec<WriteRequest>> = requests
            .chunks(BATCH_WRITE_MAX)
            .map(<[WriteRequest]>::to_vec)
            .collect();
        stream::iter(batches)
            .map(|batch| self.batch_write_one(batch))
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn batch_write_one(&self, mut batch: Vec<WriteRequest>) -> Result<()> {
        for attempt in 0.. {
            let call = self
                .inner
                .client
                .batch_write_item()
                .request_items(&self.inner.name, batch)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send();
            let out = self
                .guarded("BatchWriteItem", async {
                    call.await.map_err(|e| self.err(e))
                })
                .await?;
            for c in out.consumed_capacity() {
                self.inner.capacity.record_write(Some(c));
            }
            match out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.inner.name))
                .filter(|r| !r.is_empty())
            {
                None => return Ok(()),
                Some(rest) => {
                    if attempt + 1 >= BATCH_ATTEMPTS {
                        return Err(Error::Throttled {
                            message: format!(
                                "{} writes stayed unprocessed after {BATCH_ATTEMPTS} attempts",
                                rest.len()
                            ),
                            source: None,
                        });
                    }
                    batch = rest;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        unreachable!("the loop returns")
    }

    pub(crate) fn err<E, R>(&self, e: aws_sdk_dynamodb::error::SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Error::from_sdk(e, &self.inner.name)
    }
}

/// Exponential backoff with full jitter: up to 25 ms, 50 ms, ... capped at 2 s.
fn backoff(attempt: u32) -> Duration {
    let cap = 25u64.saturating_mul(1 << attempt.min(7)).min(2_000);
    Duration::from_millis(fastrand::u64(cap / 2..=cap))
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// `#p0, #p1, ...` for the key and the wanted attributes.
pub(crate) fn projection_expr(key_attr: &str, attrs: &[&str]) -> (String, HashMap<String, String>) {
    let mut names = HashMap::new();
    let mut parts = Vec::new();
    for (i, a) in std::iter::once(&key_attr).chain(attrs).enumerate() {
        let p = format!("#p{i}");
        names.insert(p.clone(), (*a).to_owned());
        parts.push(p);
    }
    (parts.join(", "), names)
}
