//! Read-through: `get_or_insert_with` and `try_get_or_insert_with`.
//!
//! On a miss the value is computed once, whoever asks: concurrent callers in this process wait
//! for the first one (always), and with [`FleetSingleFlight`] callers in other processes wait
//! too, through a lease in the table: the first process to take it computes, the others poll
//! for the value with a bounded backoff, take over if the lease expires (its holder crashed),
//! and stop waiting after a bound (then they compute themselves). A cache failure never fails
//! the call: the factory is called instead. With `refresh_ahead`, a hit close to its expiry is
//! recomputed early by one caller, with a probability that grows as expiry nears and with the
//! time the value took to compute (XFetch), so a hot value never expires under load. With
//! `fail_safe`, a value that expired at most that long ago is returned when the factory fails.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cache, Kept, KeptValue, lease};
use crate::coalesce::Role;
use crate::codec::{self, Encoded};
use crate::expiry::Expiry;
use crate::store::StoredKey;
use crate::store::lease::HeldLease;
use crate::table::item::{Item, n};

/// How read-through misses are shared across processes: through a lease in the table, held
/// while one process computes (see [`CacheBuilder::fleet_single_flight`](super::CacheBuilder::fleet_single_flight)).
///
/// ```
/// use std::time::Duration;
/// use dynacache::FleetSingleFlight;
///
/// // A computation takes at most 10 s; wait at most 3 s for another process's result.
/// let flight = FleetSingleFlight::new(Duration::from_secs(10)).wait(Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetSingleFlight {
    lease: Duration,
    wait: Duration,
}

impl FleetSingleFlight {
    /// A lease of `lease`: how long one process may take to compute a value before another may
    /// take over (a crashed computation is retried after at most this). Processes that wait do
    /// so at most as long.
    pub fn new(lease: Duration) -> Self {
        FleetSingleFlight { lease, wait: lease }
    }

    /// The longest a process waits for another's result before computing itself.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    pub(crate) fn lease_time(&self) -> Duration {
        self.lease
    }

    pub(crate) fn wait_time(&self) -> Duration {
        self.wait
    }
}

/// The first poll interval while another process computes; it doubles up to the last.
pub(crate) const POLL_FIRST: Duration = Duration::from_millis(20);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(500);

/// What a read found.
struct Found {
    kept: Arc<Kept>,
    live: bool,
    /// Where it was found, for metrics: `memory` or `table`.
    tier: &'static str,
}

impl Cache {
    /// The value under `key`, or the one `factory` computes, stored with `expiry`. Concurrent
    /// misses compute once (see the [module docs](self) for the fleet). Never fails: when the
    /// cache cannot be read or written, the factory's value is returned all the same.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Cache, Expiry, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// let ttl = Expiry::After(Duration::from_secs(60));
    /// let v: u64 = cache.get_or_insert_with("answer", ttl, || async { 42 }).await;
    /// let again: u64 = cache.get_or_insert_with("answer", ttl, || async { unreachable!() }).await;
    /// assert_eq!((v, again), (42, 42));
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.get_or_insert_with", skip_all)]
    pub async fn get_or_insert_with<T, F, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        expiry: Expiry,
        factory: F,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let computed = self
            .try_get_or_insert_with(key, expiry, || async {
                Ok::<T, std::convert::Infallible>(factory().await)
            })
            .await;
        match computed {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// [`get_or_insert_with`](Cache::get_or_insert_with) with a fallible factory: its error is
    /// returned (nothing is stored), unless `fail_safe` allows a recently expired value instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Cache, Expiry, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// let ttl = Expiry::After(Duration::from_secs(60));
    /// let failed: Result<String, &str> =
    ///     cache.try_get_or_insert_with("user:7", ttl, || async { Err("db down") }).await;
    /// assert_eq!(failed, Err("db down"));
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(
        level = "debug",
        name = "dynacache.kv.try_get_or_insert_with",
        skip_all
    )]
    pub async fn try_get_or_insert_with<T, E, F, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        expiry: Expiry,
        factory: F,
    ) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let Ok(key) = self.key(key.as_ref()) else {
            // A key the cache cannot hold: nothing to share, compute.
            return factory().await;
        };
        let looked_up_at = Instant::now();
        let found = self.read_through_lookup(&key).await;
        let found = match found {
            Some(found) if found.live => {
                if self.refresh_early(&found.kept) && self.start_refresh(&key) {
                    // This caller recomputes ahead of expiry; the others keep the value.
                    crate::metrics::hit("kv", found.tier);
                    // Ends the refresh however this call ends (it may be cancelled).
                    let refreshing = Refreshing {
                        cache: self,
                        key: &key,
                    };
                    let refreshed = self
                        .compute(&key, expiry, factory, None, Some(&found.kept))
                        .await;
                    drop(refreshing);
                    return match refreshed {
                        Ok(v) => Ok(v),
                        // The early refresh failed: the value is still fresh.
                        Err(e) => self.read_kept(&key, &found.kept).map_err(|_| e),
                    };
                }
                match self.read_kept(&key, &found.kept) {
                    Ok(v) => {
                        crate::metrics::hit("kv", found.tier);
                        return Ok(v);
                    }
                    // Stored as another type: computed again, and replaced.
                    Err(_) => None,
                }
            }
            other => other,
        };
        crate::metrics::miss("kv");
        let seen = found.as_ref().map(|f| f.kept.clone());
        let stale = found.filter(|f| self.within_fail_safe(&f.kept));
        let shared = match self.inner.flights.join(&key.pk, looked_up_at) {
            Role::Leader(leader) => {
                let (result, kept) = self
                    .compute_and_keep(&key, expiry, factory, stale, seen.as_deref())
                    .await;
                leader.finish(kept);
                return result;
            }
            Role::Follower(mut waiting) => waiting.recv().await.ok().flatten(),
            Role::Finished(outcome) => outcome,
        };
        if let Some(kept) = shared
            && let Ok(v) = self.read_kept(&key, &kept)
        {
            crate::metrics::coalesced("kv", "local");
            return Ok(v);
        }
        // The computation this call waited for failed: compute with this call's own factory.
        self.compute(&key, expiry, factory, stale, seen.as_deref())
            .await
    }

    /// Reads a value for read-through: from the tier, else the table (expired values too, for
    /// `fail_safe`). A cache failure is a miss.
    async fn read_through_lookup(&self, key: &StoredKey) -> Option<Found> {
        if let Some(kept) = self.kept(key) {
            return Some(Found {
                kept,
                live: true,
                tier: "memory",
            });
        }
        let read = self.read_start();
        let entry = match self.store().get(key, true).await {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::debug!(error = %e, "dynacache: read-through lookup failed; computing");
                return None;
            }
        };
        let now = self.store().now();
        let live = self.store().is_live(key, &entry.item);
        // Only a live value may go to the in-process tier.
        let kept = self.keep(key, entry, if live { read } else { None }).ok()?;
        let live = live && kept.expires.is_none_or(|e| e > now);
        Some(Found {
            kept,
            live,
            tier: "table",
        })
    }

    /// XFetch: recompute early with a probability that grows as expiry nears, scaled by how
    /// long the value took to compute. No storage call either way.
    fn refresh_early(&self, kept: &Kept) -> bool {
        let (Some(beta), Some(expires), Some(cost)) =
            (self.inner.refresh_ahead, kept.expires, kept.cost_ms)
        else {
            return false;
        };
        let now = self.store().now() as f64;
        // -ln(u) for u in (0, 1]: exponentially distributed, mean 1.
        let draw = -(1.0 - fastrand::f64()).ln();
        now + cost as f64 * beta * draw >= expires as f64
    }

    fn start_refresh(&self, key: &StoredKey) -> bool {
        self.inner
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.pk.clone())
    }

    fn end_refresh(&self, key: &StoredKey) {
        self.inner
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.pk);
    }

    fn within_fail_safe(&self, kept: &Kept) -> bool {
        let (Some(window), Some(expires)) = (self.inner.fail_safe, kept.expires) else {
            return false;
        };
        let window = window.as_millis().min(i64::MAX as u128) as i64;
        self.store().now() <= expires.saturating_add(window)
    }

    /// [`compute`](Cache::compute), also returning what waiting callers may share.
    async fn compute_and_keep<T, E, F, Fut>(
        &self,
        key: &StoredKey,
        expiry: Expiry,
        factory: F,
        stale: Option<Found>,
        seen: Option<&Kept>,
    ) -> (std::result::Result<T, E>, Option<Arc<Kept>>)
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let mut shared = None;
        let result = self
            .compute_inner(key, expiry, factory, stale, seen, &mut shared)
            .await;
        (result, shared)
    }

    /// Computes a value (once across the fleet when it is on), stores it, and returns it; on
    /// the factory's failure, a stale value within `fail_safe`, else the error.
    async fn compute<T, E, F, Fut>(
        &self,
        key: &StoredKey,
        expiry: Expiry,
        factory: F,
        stale: Option<Found>,
        seen: Option<&Kept>,
    ) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        self.compute_inner(key, expiry, factory, stale, seen, &mut None)
            .await
    }

    async fn compute_inner<T, E, F, Fut>(
        &self,
        key: &StoredKey,
        expiry: Expiry,
        factory: F,
        stale: Option<Found>,
        seen: Option<&Kept>,
        shared: &mut Option<Arc<Kept>>,
    ) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let lease = match self.inner.fleet {
            Some(fleet) => match self.wait_for_fleet(key, fleet, seen).await {
                FleetTurn::Landed(kept) => {
                    if let Ok(v) = self.read_kept(key, &kept) {
                        crate::metrics::coalesced("kv", "fleet");
                        *shared = Some(kept);
                        return Ok(v);
                    }
                    None
                }
                FleetTurn::Compute(lease) => lease,
            },
            None => None,
        };
        let started = Instant::now();
        let computed = factory().await;
        let cost = started.elapsed();
        let result = match computed {
            Ok(value) => {
                *shared = self.store_computed(key, &value, expiry, cost).await;
                Ok(value)
            }
            Err(e) => match stale.and_then(|s| self.read_kept(key, &s.kept).ok()) {
                Some(v) => {
                    crate::metrics::stale_served("kv");
                    Ok(v)
                }
                None => Err(e),
            },
        };
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    /// Stores a computed value with its cost, and returns it as shared with waiting callers.
    /// A storage failure is logged; the value is shared all the same.
    async fn store_computed<T: Serialize>(
        &self,
        key: &StoredKey,
        value: &T,
        expiry: Expiry,
        cost: Duration,
    ) -> Option<Arc<Kept>> {
        let encoded = codec::encode(value, self.inner.compress_from).ok()?;
        let stamp = self.stamp(expiry);
        let cost_ms = cost.as_millis().min(i64::MAX as u128) as i64;
        let kept = Arc::new(Kept {
            value: match &encoded {
                Encoded::Counter(v) => KeptValue::Counter(*v),
                Encoded::Bytes { format, data, .. } => {
                    KeptValue::Plain(codec::plain(&key.pk, format, data.clone(), usize::MAX).ok()?)
                }
            },
            expires: stamp.expires,
            cost_ms: Some(cost_ms),
            decoded: Default::default(),
        });
        let (mut attrs, payload) = match self.encoded_to_entry(encoded) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(error = %e, "dynacache: a computed value was not stored");
                return Some(kept);
            }
        };
        attrs.insert(crate::table::item::COST.to_owned(), n(cost_ms));
        let attrs: Item = self.sign(key, attrs, &payload, stamp);
        let write = self.store().put(key, attrs, payload, stamp, None);
        if let Err(e) = self.changing([key], write).await {
            tracing::warn!(error = %e, "dynacache: storing a computed value failed");
        } else if let Some(tier) = &self.inner.tier {
            tier.insert(key.pk.clone(), kept.clone(), kept.bytes(), kept.expires);
        }
        Some(kept)
    }

    /// Waits for another process's computation of `key`, or takes the turn to compute.
    /// `seen` is what this caller's lookup found (expired, of another type, or due for an
    /// early refresh), if anything.
    async fn wait_for_fleet(
        &self,
        key: &StoredKey,
        fleet: FleetSingleFlight,
        seen: Option<&Kept>,
    ) -> FleetTurn {
        let mut name = b"r:".to_vec();
        name.extend_from_slice(key.original.as_deref().unwrap_or(key.pk.as_bytes()));
        let Ok(lease_key) = self.store().lease_key(&name) else {
            return FleetTurn::Compute(None);
        };
        let owner = lease::owner();
        let deadline = Instant::now() + fleet.wait;
        let mut pause = POLL_FIRST;
        // After the first attempt, the lease is read before it is taken again: a failed
        // conditional write costs a write unit, a read one read unit.
        let mut held = false;
        loop {
            if held {
                match self.store().lease_ends(&lease_key).await {
                    Ok(ends) => held = ends.is_some(),
                    Err(_) => return FleetTurn::Compute(None),
                }
            }
            let attempt = if held {
                None
            } else {
                Some(self.store().acquire(&lease_key, &owner, fleet.lease).await)
            };
            match attempt {
                None => {}
                Some(Ok(Some(holding))) => {
                    let lease =
                        HeldLease::new(self.store().clone(), lease_key, owner, holding.token);
                    // Another process may have stored the value and released the lease since
                    // this caller looked: use it rather than compute it again.
                    if let Some(kept) = self.landed_since(key, seen).await {
                        lease.release().await;
                        return FleetTurn::Landed(kept);
                    }
                    return FleetTurn::Compute(Some(lease));
                }
                Some(Ok(None)) => held = true,
                // The lease cannot be read: compute rather than wait on a failing table.
                Some(Err(_)) => return FleetTurn::Compute(None),
            }
            let now = Instant::now();
            if now >= deadline {
                return FleetTurn::Compute(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
            if let Ok(Some(entry)) = self.store().get(key, false).await
                && let Ok(kept) = self.keep(key, entry, None)
            {
                return FleetTurn::Landed(kept);
            }
        }
    }

    /// The live value under `key`, if it is newer than `seen` (expires later): one another
    /// process stored since this caller looked.
    async fn landed_since(&self, key: &StoredKey, seen: Option<&Kept>) -> Option<Arc<Kept>> {
        let entry = self.store().get(key, false).await.ok()??;
        let kept = self.keep(key, entry, None).ok()?;
        let newer = match seen.map(|s| s.expires) {
            None => true,
            Some(None) => false,
            Some(Some(old)) => kept.expires.is_none_or(|new| new > old),
        };
        newer.then_some(kept)
    }
}

/// A refresh ahead of expiry under way in this process: ends when dropped, so a cancelled
/// refresh does not keep the key from being refreshed again.
struct Refreshing<'a> {
    cache: &'a Cache,
    key: &'a StoredKey,
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.cache.end_refresh(self.key);
    }
}

/// Whose turn it is to compute, across the fleet.
enum FleetTurn {
    /// Another process stored the value.
    Landed(Arc<Kept>),
    /// Compute (holding the lease, when one could be taken; released if the computation is
    /// cancelled).
    Compute(Option<HeldLease>),
}
