//! When a cached value stops being served.

use std::time::{Duration, SystemTime};

use crate::clock::system_time_millis;

/// When a value expires.
///
/// Expiry is checked on every read, so a value is a miss from the moment it expires even though
/// DynamoDB's TTL sweeper may delete the item days later.
///
/// ```
/// use std::time::Duration;
/// use dynacache::Expiry;
///
/// let five_minutes = Expiry::After(Duration::from_secs(300));
/// let forever = Expiry::Never;
/// assert_ne!(five_minutes, forever);
/// assert_eq!(Expiry::from(Duration::from_secs(300)), five_minutes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Expiry {
    /// The cache's default expiry (set with the builder's `default_ttl`).
    #[default]
    Default,
    /// The value never expires.
    Never,
    /// The value expires this long after it is written. A zero duration stores a value that is
    /// already expired, which reads as a miss.
    After(Duration),
    /// The value expires at this instant.
    At(SystemTime),
}

impl From<Duration> for Expiry {
    fn from(d: Duration) -> Self {
        Expiry::After(d)
    }
}

impl From<SystemTime> for Expiry {
    fn from(t: SystemTime) -> Self {
        Expiry::At(t)
    }
}

impl Expiry {
    /// The logical expiry in epoch milliseconds, or `None` for never.
    pub(crate) fn resolve(self, default: Expiry, now_millis: i64) -> Option<i64> {
        match self {
            Expiry::Default => match default {
                Expiry::Default => None,
                other => other.resolve(Expiry::Never, now_millis),
            },
            Expiry::Never => None,
            Expiry::After(d) => {
                Some(now_millis.saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
            }
            Expiry::At(t) => Some(system_time_millis(t)),
        }
    }
}
