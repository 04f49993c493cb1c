//! Paginated, parallel scans confined to key prefixes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, Select};
use futures::stream::{self, BoxStream, StreamExt};

use super::Table;
use super::item::{Item, s};
use super::ops::{Expr, projection_expr};
use crate::error::Result;

/// What a scan reads.
#[derive(Debug, Clone)]
pub(crate) struct ScanSpec {
    /// Items whose key starts with any of these (none: every item of the table).
    pub(crate) prefixes: Vec<String>,
    /// Attributes to read besides the key; `None`: every attribute.
    pub(crate) projection: Option<Vec<&'static str>>,
}

impl Table {
    /// Every item whose key starts with one of the prefixes, as a stream. Each segment holds one
    /// page (at most 1 MB) at a time, so memory stays bounded however large the table is.
    pub(crate) fn scan(&self, spec: ScanSpec) -> BoxStream<'static, Result<Item>> {
        let segments = self.inner.scan_segments;
        let streams =
            (0..segments).map(|segment| self.scan_segment(spec.clone(), segment, segments).boxed());
        stream::select_all(streams).boxed()
    }

    fn scan_segment(
        &self,
        spec: ScanSpec,
        segment: u32,
        total: u32,
    ) -> impl futures::Stream<Item = Result<Item>> + Send + 'static {
        let table = self.clone();
        // State: Some(start key) to read the next page from; None once the segment is done.
        stream::try_unfold(Some(None), move |state: Option<Option<Item>>| {
            let table = table.clone();
            let spec = spec.clone();
            async move {
                let Some(start) = state else {
                    return Ok(None);
                };
                let mut req = table.inner.client.scan().table_name(&table.inner.name);
                let mut names = HashMap::new();
                if !spec.prefixes.is_empty() {
                    let (filter, fnames, values) =
                        prefix_filter(&table.inner.key_attr, &spec.prefixes);
                    names.extend(fnames);
                    req = req
                        .filter_expression(filter)
                        .set_expression_attribute_values(Some(values));
                }
                if let Some(attrs) = &spec.projection {
                    let (projection, pnames) = projection_expr(&table.inner.key_attr, attrs);
                    names.extend(pnames);
                    req = req.projection_expression(projection);
                }
                if !names.is_empty() {
                    req = req.set_expression_attribute_names(Some(names));
                }
                let mut req = req
                    .set_exclusive_start_key(start)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total);
                if total > 1 {
                    req = req.segment(segment as i32).total_segments(total as i32);
                }
                let out = table
                    .guarded("Scan", async { req.send().await.map_err(|e| table.err(e)) })
                    .await?;
                table.inner.capacity.record_read(out.consumed_capacity());
                let next = out.last_evaluated_key.filter(|k| !k.is_empty()).map(Some);
                let items = out.items.unwrap_or_default();
                Ok(Some((items, next)))
            }
        })
        .map(|page: Result<Vec<Item>>| match page {
            Ok(items) => stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::iter(std::iter::once(Err(e))).right_stream(),
        })
        .flatten()
    }

    /// Counts the items whose key starts with one of the prefixes and that pass `extra` (a filter
    /// expression over `#e` for the expiry attribute and `:now`), reading every page.
    pub(crate) async fn count(&self, prefixes: &[String], extra: Option<Expr>) -> Result<u64> {
        let segments = self.inner.scan_segments;
        let (mut filter, mut names, mut values) = prefix_filter(&self.inner.key_attr, prefixes);
        if let Some(extra) = extra {
            filter = format!("({filter}) AND ({})", extra.text);
            names.extend(extra.names);
            values.extend(extra.values);
        }
        let counts = stream::iter(0..segments)
            .map(|segment| {
                let (filter, names, values) = (filter.clone(), names.clone(), values.clone());
                async move {
                    let mut total = 0u64;
                    let mut start = None;
                    loop {
                        let mut req = self
                            .inner
                            .client
                            .scan()
                            .table_name(&self.inner.name)
                            .select(Select::Count)
                            .filter_expression(&filter)
                            .set_expression_attribute_names(Some(names.clone()))
                            .set_expression_attribute_values(Some(values.clone()))
                            .set_exclusive_start_key(start)
                            .return_consumed_capacity(ReturnConsumedCapacity::Total);
                        if segments > 1 {
                            req = req.segment(segment as i32).total_segments(segments as i32);
                        }
                        let out = self
                            .guarded("Scan", async { req.send().await.map_err(|e| self.err(e)) })
                            .await?;
                        self.inner.capacity.record_read(out.consumed_capacity());
                        total += out.count.max(0) as u64;
                        match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                            Some(k) => start = Some(k),
                            None => return Ok::<u64, crate::Error>(total),
                        }
                    }
                }
            })
            .buffer_unordered(segments as usize)
            .collect::<Vec<_>>()
            .await;
        counts.into_iter().sum()
    }
}

/// `begins_with(#k, :p0) OR begins_with(#k, :p1) ...`
fn prefix_filter(
    key_attr: &str,
    prefixes: &[String],
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let names = HashMap::from([("#k".to_owned(), key_attr.to_owned())]);
    let mut values = HashMap::new();
    let mut parts = Vec::new();
    for (i, p) in prefixes.iter().enumerate() {
        let placeholder = format!(":p{i}");
        parts.push(format!("begins_with(#k, {placeholder})"));
        values.insert(placeholder, s(p.clone()));
    }
    (parts.join(" OR "), names, values)
}
