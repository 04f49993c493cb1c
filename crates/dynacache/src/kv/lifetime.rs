//! How long a value has left, and keeping a value alive while it is used.

use std::time::Duration;

use super::Cache;
use crate::error::Result;

/// A touch rewrites the expiry only when less than this share of the new lifetime is left:
/// a value touched on every read is written about once per tenth of its lifetime, not per read.
const TOUCH_SLACK: f64 = 0.9;

impl Cache {
    /// How long the value under `key` has left: `None` when it is missing or expired,
    /// `Some(None)` when it never expires. Reads only the key's expiry (DynamoDB still bills
    /// the whole item); from the in-process tier when it holds the value.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Cache, Expiry, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// cache.set_with("k", &1, Expiry::After(Duration::from_secs(60))).await?;
    /// let left = cache.ttl("k").await?.unwrap().unwrap();
    /// assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    /// assert_eq!(cache.ttl("missing").await?, None);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.ttl", skip_all)]
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Option<Option<Duration>>> {
        let key = self.key(key.as_ref())?;
        let now = self.store().now();
        let expires = match self.kept(&key) {
            Some(kept) => kept.expires,
            None => match self.store().expiry(&key).await? {
                Some(expires) => expires,
                None => return Ok(None),
            },
        };
        Ok(match expires {
            None => Some(None),
            Some(e) if e > now => Some(Some(Duration::from_millis((e - now) as u64))),
            Some(_) => None,
        })
    }

    /// Sliding expiry: keeps the value under `key` alive for `ttl` from now, without rewriting
    /// it. The expiry is written only when less than 90% of `ttl` is left, so a value touched on
    /// every read costs a write about once per tenth of its lifetime. It never shortens a
    /// lifetime: a value with more than `ttl` left, or none, is left as it is. Returns whether a
    /// live value was there (nothing is created).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Cache, Expiry, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// cache.set_with("session", &"alice", Expiry::After(Duration::from_secs(60))).await?;
    /// assert!(cache.touch("session", Duration::from_secs(3600)).await?);
    /// assert!(cache.ttl("session").await?.unwrap().unwrap() > Duration::from_secs(3000));
    /// assert!(!cache.touch("nobody", Duration::from_secs(3600)).await?);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.touch", skip_all)]
    pub async fn touch(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool> {
        let Some(left) = self.ttl(key.as_ref()).await? else {
            return Ok(false);
        };
        let slack = ttl.mul_f64(TOUCH_SLACK);
        if left.is_none_or(|left| left >= slack) {
            return Ok(true);
        }
        let key = self.key(key.as_ref())?;
        let expires = self
            .store()
            .now()
            .saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        self.changing([&key], self.store().extend(&key, expires))
            .await
    }
}
