//! Counters: entries holding a DynamoDB number, changed atomically with UpdateItem.

use super::key::StoredKey;
use super::{Stamp, Store};
use crate::error::{Error, Result};
use crate::table::Expr;
use crate::table::item::{self, Item, b, get_i64, n};

/// The outcome of one atomic increment attempt.
#[derive(Debug)]
pub(crate) enum Increment {
    /// The counter's new value.
    Value(i64),
    /// The key holds a live entry that is not a counter.
    NotACounter,
    /// The key holds an expired entry, or nothing: the caller may start a new counter.
    Expired,
}

impl Store {
    /// Adds `delta` to the counter under `key` in one UpdateItem: a missing or expired key
    /// starts from 0 with `stamp`'s expiry; an existing counter keeps its own.
    pub(crate) async fn increment(
        &self,
        key: &StoredKey,
        delta: i64,
        stamp: Stamp,
    ) -> Result<Increment> {
        let t = self.table();
        let mut sets = vec!["#n = if_not_exists(#n, :zero) + :d", "#w = :now"];
        let mut update = Expr::default()
            .name("#n", item::COUNTER)
            .name("#w", item::WRITTEN)
            .name("#k", t.key_attribute())
            .name("#e", item::EXPIRES)
            .name("#v", item::VALUE)
            .name("#cv", item::CHUNK_VERSION)
            .name("#ob", item::OBJECT)
            .value(":zero", n(0))
            .value(":d", n(delta))
            .value(":now", n(stamp.now));
        if let Some(exp) = stamp.expires {
            sets.push("#e = if_not_exists(#e, :e)");
            sets.push("#t = if_not_exists(#t, :t)");
            update = update
                .name("#t", t.ttl_attribute())
                .value(":e", n(exp))
                .value(":t", n(self.ttl_seconds(exp)));
        }
        if let Some(mi) = crate::table::index::meta_value(&key.pk) {
            sets.push("#mi = :mi");
            update = update
                .name("#mi", crate::table::META_ATTRIBUTE)
                .value(":mi", crate::table::item::s(mi));
        }
        if let Some(original) = &key.original {
            sets.push("#o = :o");
            update = update
                .name("#o", item::ORIGINAL_KEY)
                .value(":o", b(original.clone()));
        }
        update.text = format!("SET {}", sets.join(", "));
        // DynamoDB's numbers go far beyond 64 bits: a counter is kept inside i64, or it could
        // no longer be read. Refused increments are told apart below.
        let mut condition = "(attribute_not_exists(#k) OR attribute_not_exists(#e) OR #e > :now) \
                             AND attribute_not_exists(#v) AND attribute_not_exists(#cv) \
                             AND attribute_not_exists(#ob)"
            .to_owned();
        if delta > 0 {
            condition.push_str(" AND (attribute_not_exists(#n) OR #n <= :lim)");
            update = update.value(":lim", n(i64::MAX - delta));
        } else if delta < 0 {
            condition.push_str(" AND (attribute_not_exists(#n) OR #n >= :lim)");
            update = update.value(":lim", n(i64::MIN - delta));
        }
        match t.update_item(&key.pk, update, Some(&condition)).await {
            Ok(Some(new)) => {
                return match get_i64(&new, item::COUNTER) {
                    Some(Ok(v)) => Ok(Increment::Value(v)),
                    Some(Err(reason)) => Err(Error::corrupt(&key.pk, reason)),
                    None => Err(Error::corrupt(
                        &key.pk,
                        "the counter update returned no counter",
                    )),
                };
            }
            Ok(None) => {}
            // DynamoDB refuses to add to an attribute that is not a number: a damaged counter.
            Err(Error::Service { code, .. }) if code == "ValidationException" => {
                if let Some(item) = t.get_item(&key.pk, None, true).await?
                    && let Some(Err(reason)) = get_i64(&item, item::COUNTER)
                {
                    return Err(Error::corrupt(&key.pk, reason));
                }
                return Err(Error::corrupt(&key.pk, "the counter cannot be updated"));
            }
            Err(e) => return Err(e),
        }
        // The condition failed: the key holds a value of another kind, or an expired one.
        match t.get_item(&key.pk, None, true).await? {
            // An expiry that does not read as a number: damaged, not expired (a retry would
            // only fail the same way).
            Some(item) if matches!(get_i64(&item, item::EXPIRES), Some(Err(_))) => {
                Err(Error::corrupt(&key.pk, "the expiry is not a number"))
            }
            Some(item) if matches!(get_i64(&item, item::COUNTER), Some(Err(_))) => {
                Err(Error::corrupt(&key.pk, "the counter is not a number"))
            }
            Some(item) if self.is_live(key, &item) => match get_i64(&item, item::COUNTER) {
                Some(Ok(v)) if v.checked_add(delta).is_none() => Err(Error::InvalidArgument {
                    reason: format!(
                        "adding {delta} to the counter {v} would leave the 64-bit range; \
                         the counter is unchanged"
                    ),
                }),
                _ => Ok(Increment::NotACounter),
            },
            _ => Ok(Increment::Expired),
        }
    }

    /// Starts a counter at `value`, replacing what `key` holds only if that is expired or
    /// missing. Returns false when a live entry appeared meanwhile.
    pub(crate) async fn start_counter(
        &self,
        key: &StoredKey,
        value: i64,
        stamp: Stamp,
    ) -> Result<bool> {
        let condition = Expr::new("attribute_not_exists(#k) OR #e <= :now")
            .name("#k", self.table().key_attribute())
            .name("#e", item::EXPIRES)
            .value(":now", n(stamp.now));
        let attrs = Item::from([(item::COUNTER.to_owned(), n(value))]);
        self.put(key, attrs, None, stamp, Some(condition)).await
    }

    /// The counter attribute of an entry, if it is a counter.
    pub(crate) fn counter_of(key: &StoredKey, item: &Item) -> Result<Option<i64>> {
        match get_i64(item, item::COUNTER) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(reason)) => Err(Error::corrupt(&key.pk, reason)),
        }
    }

    /// The attributes of a counter entry holding `value`.
    pub(crate) fn counter_attributes(value: i64) -> Item {
        Item::from([(item::COUNTER.to_owned(), n(value))])
    }
}
