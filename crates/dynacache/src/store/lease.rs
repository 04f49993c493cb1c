//! Leases: a named claim held by one owner at a time across every process sharing the table,
//! until it expires or is released.
//!
//! A lease is one item (`{ns}~…`): its holder's owner token, when the holding ends, and a
//! fencing token that grows by one with every new holder. Taking a lease is one conditional
//! UpdateItem (it succeeds only if nobody holds it, or the holding ended), so two processes can
//! never both hold it; a holder that crashes simply lets it expire. Releasing ends the holding
//! but keeps the item, so fencing tokens keep growing; the item's TTL removes it a week after
//! its last holding ended.

use std::time::Duration;

use super::Store;
use super::key::{StoredKey, lease_key};
use crate::error::{Error, Result};
use crate::table::Expr;
use crate::table::item::{self, b, get_i64, n, s};

/// How long a lease item outlives its last holding, so fencing tokens keep growing.
const KEPT_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// A holding of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holding {
    /// The fencing token: larger than every earlier holding's.
    pub(crate) token: u64,
    /// When it ends, epoch ms.
    pub(crate) expires_ms: i64,
}

/// A lease the cache itself holds for a computation or a fetch: released with
/// [`release`](HeldLease::release) when the work is done, or, if the work is cancelled (its
/// future dropped, e.g. a client that hung up), released in the background when dropped, so the
/// rest of the fleet does not wait out the lease.
pub(crate) struct HeldLease {
    store: Store,
    key: StoredKey,
    owner: String,
    token: u64,
    released: bool,
}

impl HeldLease {
    pub(crate) fn new(store: Store, key: StoredKey, owner: String, token: u64) -> Self {
        HeldLease {
            store,
            key,
            owner,
            token,
            released: false,
        }
    }

    /// Ends the holding.
    pub(crate) async fn release(mut self) {
        let _ = self.store.release(&self.key, &self.owner, self.token).await;
        // Only now: if this is cancelled midway, dropping it releases in the background (a
        // second release of the same holding changes nothing).
        self.released = true;
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, owner, token) = (
                self.store.clone(),
                self.key.clone(),
                std::mem::take(&mut self.owner),
                self.token,
            );
            runtime.spawn(async move {
                let _ = store.release(&key, &owner, token).await;
            });
        }
    }
}

/// A fresh owner token: who holds a lease, unique per holding attempt.
pub(crate) fn owner() -> String {
    format!("{:032x}", fastrand::u128(..))
}

impl Store {
    pub(crate) fn lease_key(&self, name: &[u8]) -> Result<StoredKey> {
        lease_key(self.namespace(), name)
    }

    fn lease_ttl_seconds(&self, expires_ms: i64) -> i64 {
        expires_ms
            .div_euclid(1000)
            .saturating_add(KEPT_AFTER.as_secs() as i64)
    }

    /// When the current holding of a lease ends (epoch ms, this store's clock), read without
    /// writing (strongly, so a release is seen at once); `None` when nobody holds it. A process
    /// waiting for a lease reads this rather than retrying [`acquire`](Store::acquire) (a failed
    /// conditional write is still billed, a write unit against this read's one read unit).
    pub(crate) async fn lease_ends(&self, key: &StoredKey) -> Result<Option<i64>> {
        let Some(item) = self
            .table()
            .get_item(&key.pk, Some(&[item::LEASE_EXPIRES]), true)
            .await?
        else {
            return Ok(None);
        };
        Ok(match get_i64(&item, item::LEASE_EXPIRES) {
            Some(Ok(ends)) if ends > self.now() => Some(ends),
            _ => None,
        })
    }

    /// Takes the lease for `owner` for `ttl`, unless someone holds it. `None` when they do.
    pub(crate) async fn acquire(
        &self,
        key: &StoredKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Holding>> {
        let now = self.now();
        let expires = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        let t = self.table();
        let mut sets = vec![
            "#lo = :owner",
            "#le = :expires",
            "#lt = if_not_exists(#lt, :zero) + :one",
            "#w = :now",
            "#ttl = :ttl",
        ];
        let mut update = Expr::default()
            .name("#k", t.key_attribute())
            .name("#lo", item::LEASE_OWNER)
            .name("#le", item::LEASE_EXPIRES)
            .name("#lt", item::LEASE_TOKEN)
            .name("#w", item::WRITTEN)
            .name("#ttl", t.ttl_attribute())
            .value(":owner", s(owner))
            .value(":expires", n(expires))
            .value(":zero", n(0))
            .value(":one", n(1))
            .value(":now", n(now))
            .value(":ttl", n(self.lease_ttl_seconds(expires)));
        if let Some(original) = &key.original {
            sets.push("#o = :o");
            update = update
                .name("#o", item::ORIGINAL_KEY)
                .value(":o", b(original.clone()));
        }
        update.text = format!("SET {}", sets.join(", "));
        let condition = "attribute_not_exists(#k) OR attribute_not_exists(#le) OR #le <= :now";
        let Some(item) = t.update_item(&key.pk, update, Some(condition)).await? else {
            return Ok(None);
        };
        match get_i64(&item, item::LEASE_TOKEN) {
            Some(Ok(token)) if token > 0 => Ok(Some(Holding {
                token: token as u64,
                expires_ms: expires,
            })),
            _ => Err(Error::corrupt(&key.pk, "the lease has no fencing token")),
        }
    }

    /// Extends a holding by `ttl` from now, if it is still this one (same owner, same token).
    /// `None` when another holder took it.
    pub(crate) async fn renew(
        &self,
        key: &StoredKey,
        owner: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<Option<i64>> {
        let expires = self
            .now()
            .saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        let t = self.table();
        let update = Expr::new("SET #le = :expires, #ttl = :ttl")
            .name("#lo", item::LEASE_OWNER)
            .name("#le", item::LEASE_EXPIRES)
            .name("#lt", item::LEASE_TOKEN)
            .name("#ttl", t.ttl_attribute())
            .value(":owner", s(owner))
            .value(":token", n(token))
            .value(":expires", n(expires))
            .value(":ttl", n(self.lease_ttl_seconds(expires)));
        let held = t
            .update_item_quiet(&key.pk, update, Some("#lo = :owner AND #lt = :token"))
            .await?;
        Ok(held.then_some(expires))
    }

    /// Ends a holding, if it is still this one. Returns whether it was.
    pub(crate) async fn release(&self, key: &StoredKey, owner: &str, token: u64) -> Result<bool> {
        let update = Expr::new("SET #le = :zero")
            .name("#lo", item::LEASE_OWNER)
            .name("#le", item::LEASE_EXPIRES)
            .name("#lt", item::LEASE_TOKEN)
            .value(":owner", s(owner))
            .value(":token", n(token))
            .value(":zero", n(0));
        self.table()
            .update_item_quiet(&key.pk, update, Some("#lo = :owner AND #lt = :token"))
            .await
    }
}
