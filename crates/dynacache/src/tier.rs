//! The in-process tier: an optional moka cache in front of the table.
//!
//! A read that finds its entry here costs no DynamoDB call. The staleness contract:
//!
//! - an entry is kept at most `l1_ttl` (what another process changes in the table is seen
//!   within that bound), and never past its own logical expiry (checked on every read, against
//!   the cache's clock);
//! - this process's own writes, deletes and purges update or drop the entry at once;
//! - the tier is bounded by bytes (a weigher), and entries larger than `max_entry_bytes` are
//!   never kept, so a few large values cannot push out many small ones.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// Settings of an in-process tier (see [`CacheBuilder::in_process`](crate::CacheBuilder::in_process)
/// and [`HttpCacheBuilder::in_process`](crate::http::HttpCacheBuilder::in_process)).
///
/// ```
/// use std::time::Duration;
/// use dynacache::InProcessTier;
///
/// // 64 MiB, entries seen at most 500 ms after another process changed them.
/// let tier = InProcessTier::new(64 << 20).l1_ttl(Duration::from_millis(500));
/// assert_eq!(tier.max_bytes(), 64 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProcessTier {
    max_bytes: u64,
    l1_ttl: Duration,
    max_entry_bytes: usize,
}

impl InProcessTier {
    /// A tier of at most `max_bytes`, with entries kept at most one second (`l1_ttl`) and none
    /// larger than 1 MiB.
    pub fn new(max_bytes: u64) -> Self {
        InProcessTier {
            max_bytes,
            l1_ttl: Duration::from_secs(1),
            max_entry_bytes: 1 << 20,
        }
    }

    /// The longest an entry is kept: how long a change made by another process can go unseen
    /// here (default 1 s).
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = ttl;
        self
    }

    /// Entries larger than this are never kept (default 1 MiB).
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The staleness bound.
    pub fn staleness(&self) -> Duration {
        self.l1_ttl
    }
}

/// What an in-process tier holds now.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use dynacache::{Cache, InProcessTier, Table};
///
/// let cache = Cache::builder()
///     .in_process(InProcessTier::new(1 << 20))
///     .build(Table::builder().open().await?)?;
/// cache.set("k", &"v").await?;
/// cache.get::<String>("k").await?;
/// let usage = cache.in_process_usage().unwrap();
/// assert_eq!(usage.entries, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InProcessUsage {
    /// Entries kept.
    pub entries: u64,
    /// Their weight in bytes (values plus a small overhead each).
    pub bytes: u64,
}

/// One kept entry: the value, its logical expiry (epoch ms, `None`: never), and its weight.
struct Slot<V> {
    value: Arc<V>,
    expires_ms: Option<i64>,
    weight: u32,
}

/// An in-process tier of values of type `V` under keys of type `K`.
pub(crate) struct Tier<K, V> {
    cache: moka::sync::Cache<K, Arc<Slot<V>>>,
    config: InProcessTier,
    clock: Arc<dyn Clock>,
    /// Bumped by every change this process makes: a value read from the table while a change
    /// was under way may be older than the change, so it is not kept.
    changes: std::sync::atomic::AtomicU64,
    /// The cache it serves, for metrics.
    label: &'static str,
}

/// When a read from the table started, as far as the tier's coherence goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadStart(u64);

impl<K, V> std::fmt::Debug for Tier<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("config", &self.config)
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl<K, V> Tier<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn new(config: InProcessTier, clock: Arc<dyn Clock>, label: &'static str) -> Self {
        // One time-to-live for every entry (cheaper on reads than moka's per-entry expiry):
        // reads check each entry's own logical expiry against the clock.
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_: &K, slot: &Arc<Slot<V>>| slot.weight)
            // moka refuses a time-to-live over 1,000 years; a century is "no bound".
            .time_to_live(config.l1_ttl.min(Duration::from_secs(100 * 365 * 86_400)))
            .build();
        Tier {
            cache,
            config,
            clock,
            changes: std::sync::atomic::AtomicU64::new(0),
            label,
        }
    }

    /// Call before reading the table for a value to keep.
    pub(crate) fn read_start(&self) -> ReadStart {
        ReadStart(self.changes.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The value under `key`, if it is kept and not past its logical expiry.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.cache.get(key)?;
        if slot
            .expires_ms
            .is_some_and(|e| e <= self.clock.now_millis())
        {
            self.cache.invalidate(key);
            return None;
        }
        Some(slot.value.clone())
    }

    /// Keeps `value` (of about `bytes` bytes), read from the table since `read`, until its
    /// logical expiry or the staleness bound, whichever comes first; a value too large, or
    /// already expired, is not kept (and any older value under the key is dropped). Not kept
    /// either if this process changed anything since the read started (the value read may be
    /// older than the change).
    pub(crate) fn insert_read(
        &self,
        read: ReadStart,
        key: K,
        value: Arc<V>,
        bytes: usize,
        expires_ms: Option<i64>,
    ) {
        if self.changes.load(std::sync::atomic::Ordering::SeqCst) != read.0 {
            return;
        }
        self.insert(key, value, bytes, expires_ms);
    }

    /// Keeps a value this process itself just wrote (see [`insert_read`](Tier::insert_read)).
    pub(crate) fn insert(&self, key: K, value: Arc<V>, bytes: usize, expires_ms: Option<i64>) {
        let remaining = match expires_ms {
            None => self.config.l1_ttl,
            Some(e) => {
                let left = e.saturating_sub(self.clock.now_millis());
                if left <= 0 {
                    self.cache.invalidate(&key);
                    return;
                }
                self.config.l1_ttl.min(Duration::from_millis(left as u64))
            }
        };
        if bytes > self.config.max_entry_bytes || remaining.is_zero() {
            self.cache.invalidate(&key);
            return;
        }
        let slot = Slot {
            value,
            expires_ms,
            weight: u32::try_from(bytes.saturating_add(64)).unwrap_or(u32::MAX),
        };
        self.cache.insert(key, Arc::new(slot));
        self.report();
    }

    /// Drops the value under `key` (this process is changing it).
    pub(crate) fn invalidate(&self, key: &K) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.invalidate(key);
        self.report();
    }

    /// Drops every value.
    pub(crate) fn clear(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.invalidate_all();
        self.report();
    }

    /// Sets the gauges of what is kept. moka counts entries and bytes only as it runs its
    /// pending tasks: without running them, the gauges lag (a first insert reads 0) and stay
    /// wrong until the next insert.
    fn report(&self) {
        crate::metrics::in_process(self.label, self.usage());
    }

    /// What is kept now.
    pub(crate) fn usage(&self) -> InProcessUsage {
        self.cache.run_pending_tasks();
        InProcessUsage {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn tier(clock: &ManualClock, ttl: Duration) -> Tier<String, u32> {
        Tier::new(
            InProcessTier::new(1 << 20).l1_ttl(ttl).max_entry_bytes(100),
            Arc::new(clock.clone()),
            "test",
        )
    }

    #[test]
    fn an_entry_never_outlives_its_logical_expiry() {
        let clock = ManualClock::new();
        let t = tier(&clock, Duration::from_secs(3600));
        let now = clock.now_millis();
        t.insert("k".into(), Arc::new(1), 10, Some(now + 5_000));
        assert_eq!(t.get(&"k".to_owned()).as_deref(), Some(&1));
        clock.advance(Duration::from_secs(5));
        assert_eq!(t.get(&"k".to_owned()), None, "expired by the cache's clock");
        t.insert("old".into(), Arc::new(2), 10, Some(now));
        assert_eq!(t.get(&"old".to_owned()), None, "already expired: not kept");
    }

    #[test]
    fn large_entries_are_not_kept_and_replace_nothing_stale() {
        let clock = ManualClock::new();
        let t = tier(&clock, Duration::from_secs(60));
        t.insert("k".into(), Arc::new(1), 10, None);
        t.insert("k".into(), Arc::new(2), 1000, None);
        assert_eq!(
            t.get(&"k".to_owned()),
            None,
            "the old value is dropped, not kept"
        );
    }

    #[test]
    fn entries_are_kept_at_most_the_staleness_bound() {
        let clock = ManualClock::new();
        let t = tier(&clock, Duration::from_millis(30));
        t.insert("k".into(), Arc::new(1), 10, None);
        assert!(t.get(&"k".to_owned()).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.get(&"k".to_owned()), None);
    }
}
