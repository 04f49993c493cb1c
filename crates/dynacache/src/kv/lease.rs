//! Leases for users: a named lock held by one process of the fleet at a time, with a fencing
//! token.

use std::time::{Duration, SystemTime};

use super::Cache;
use crate::clock::millis_to_system_time;
use crate::error::Result;

/// A lease this process holds (see [`Cache::lease`]): a named lock over the whole fleet, until
/// it expires or is released.
///
/// The fencing token grows with every new holder: pass it along with the work the lease
/// protects, and have the resource refuse a token smaller than the last it saw, so a holder
/// that paused past its lease (a long GC, a frozen VM) cannot overwrite its successor's work.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use std::time::Duration;
/// use dynacache::{Cache, Table};
///
/// let cache = Cache::new(Table::builder().open().await?)?;
/// let lease = cache.lease("nightly-report", Duration::from_secs(30)).await?.expect("free");
/// assert!(cache.lease("nightly-report", Duration::from_secs(30)).await?.is_none(), "held");
/// let token = lease.token();
/// assert!(cache.release(lease).await?);
/// let next = cache.lease("nightly-report", Duration::from_secs(30)).await?.unwrap();
/// assert!(next.token() > token);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    name: Vec<u8>,
    owner: String,
    token: u64,
    expires: SystemTime,
}

impl Lease {
    /// The lease's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The fencing token: larger than every earlier holder's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// When the holding ends unless renewed.
    pub fn expires(&self) -> SystemTime {
        self.expires
    }
}

/// Lease names for users, kept apart from the cache's own (read-through) leases.
fn user_name(name: &[u8]) -> Vec<u8> {
    let mut out = b"u:".to_vec();
    out.extend_from_slice(name);
    out
}

/// A fresh owner token.
pub(super) fn owner() -> String {
    crate::store::lease::owner()
}

impl Cache {
    /// Takes the lease `name` for `ttl`, if no process of the fleet holds it: one conditional
    /// UpdateItem. `None` when it is held. A holder that crashes lets it expire.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.lease", skip_all)]
    pub async fn lease(&self, name: impl AsRef<[u8]>, ttl: Duration) -> Result<Option<Lease>> {
        let name = name.as_ref();
        let key = self.store().lease_key(&user_name(name))?;
        let owner = owner();
        Ok(self
            .store()
            .acquire(&key, &owner, ttl)
            .await?
            .map(|holding| Lease {
                name: name.to_vec(),
                owner,
                token: holding.token,
                expires: millis_to_system_time(holding.expires_ms),
            }))
    }

    /// Extends a lease by `ttl` from now. Returns false when it was lost (it expired and another
    /// process took it): stop the work it protects.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use std::time::Duration;
    /// use dynacache::{Cache, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// let mut lease = cache.lease("job", Duration::from_secs(10)).await?.unwrap();
    /// assert!(cache.renew(&mut lease, Duration::from_secs(60)).await?);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "dynacache.kv.renew", skip_all)]
    pub async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<bool> {
        let key = self.store().lease_key(&user_name(&lease.name))?;
        match self
            .store()
            .renew(&key, &lease.owner, lease.token, ttl)
            .await?
        {
            Some(expires) => {
                lease.expires = millis_to_system_time(expires);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ends a lease, so another process can take it at once. Returns false when it had already
    /// been lost.
    #[tracing::instrument(level = "debug", name = "dynacache.kv.release", skip_all)]
    pub async fn release(&self, lease: Lease) -> Result<bool> {
        let key = self.store().lease_key(&user_name(&lease.name))?;
        self.store().release(&key, &lease.owner, lease.token).await
    }
}
