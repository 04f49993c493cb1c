//! Single flight for misses: concurrent requests for one response share one trip to the origin.
//!
//! The first request to miss becomes the leader; requests that miss while it is in flight wait
//! for what it brings back. A request that missed before the leader stored its response, but
//! reaches this module only after the leader finished, must not become a second leader: so the
//! leader's result stays here for a few seconds, and a request whose lookup started before the
//! result was ready takes it instead of going to the origin.
//!
//! The HTTP cache keys sharing on the request's key (and its variant, when the `Vary` index is
//! known) and decides whether a waiting request may use the leader's response; the key/value
//! cache's read-through keys it on the cache key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

/// How long a finished leader's result stays available to requests that looked up before it.
/// Finished results are swept at most this often, so none is held much longer.
const RETENTION: Duration = Duration::from_secs(5);

/// What a leader shares: its response, if it was stored (only stored responses are shared).
pub(crate) type Outcome<T> = Option<Arc<T>>;

enum Slot<T> {
    InFlight {
        id: u64,
        tx: broadcast::Sender<Outcome<T>>,
    },
    Done {
        at: Instant,
        outcome: Outcome<T>,
    },
}

/// The in-flight misses of one cache.
pub(crate) struct Coalescer<T> {
    slots: Mutex<Slots<T>>,
    next_id: AtomicU64,
}

struct Slots<T> {
    by_key: HashMap<String, Slot<T>>,
    swept: Instant,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            slots: Mutex::new(Slots {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<T> std::fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

/// A request's part in a miss.
pub(crate) enum Role<'a, T> {
    /// Go to the origin, then [`Leader::finish`].
    Leader(Leader<'a, T>),
    /// Wait for the leader's outcome.
    Follower(broadcast::Receiver<Outcome<T>>),
    /// A leader finished after this request's lookup started: here is its outcome.
    Finished(Outcome<T>),
}

impl<T> Coalescer<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<T>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the miss for `key`; `looked_up_at` is when this request started reading the cache.
    pub(crate) fn join(&self, key: &str, looked_up_at: Instant) -> Role<'_, T> {
        let mut guard = self.lock();
        let slots = &mut *guard;
        // Finished results hold whole responses: drop the old ones, whatever the traffic.
        if slots.swept.elapsed() >= RETENTION {
            slots.by_key.retain(|_, slot| match slot {
                Slot::InFlight { .. } => true,
                Slot::Done { at, .. } => at.elapsed() < RETENTION,
            });
            slots.swept = Instant::now();
        }
        let slots = &mut slots.by_key;
        match slots.get(key) {
            Some(Slot::InFlight { tx, .. }) => return Role::Follower(tx.subscribe()),
            Some(Slot::Done { at, outcome, .. })
                if *at >= looked_up_at && at.elapsed() < RETENTION =>
            {
                return Role::Finished(outcome.clone());
            }
            _ => {}
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = broadcast::channel(1);
        slots.insert(key.to_owned(), Slot::InFlight { id, tx });
        Role::Leader(Leader {
            coalescer: self,
            key: key.to_owned(),
            id,
            finished: false,
        })
    }
}

/// The request that goes to the origin for everyone. Dropping it unfinished (the request was
/// cancelled, or failed) lets the waiting requests go to the origin themselves.
pub(crate) struct Leader<'a, T> {
    coalescer: &'a Coalescer<T>,
    key: String,
    id: u64,
    finished: bool,
}

impl<T> Leader<'_, T> {
    /// Hands the outcome to the waiting requests, and keeps it for late ones.
    pub(crate) fn finish(mut self, outcome: Outcome<T>) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome<T>) {
        self.finished = true;
        let mut guard = self.coalescer.lock();
        let slots = &mut guard.by_key;
        let Some(Slot::InFlight { id, .. }) = slots.get(&self.key) else {
            return;
        };
        if *id != self.id {
            return;
        }
        if let Some(Slot::InFlight { tx, .. }) = slots.insert(
            self.key.clone(),
            Slot::Done {
                at: Instant::now(),
                outcome: outcome.clone(),
            },
        ) {
            let _ = tx.send(outcome);
        }
    }
}

impl<T> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        if !self.finished {
            self.publish(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_leads_and_later_ones_follow() {
        let c = Coalescer::<u32>::default();
        let t0 = Instant::now();
        let Role::Leader(leader) = c.join("k", t0) else {
            panic!("first request leads")
        };
        let Role::Follower(mut rx) = c.join("k", t0) else {
            panic!("second request follows")
        };
        leader.finish(Some(Arc::new(7)));
        assert_eq!(rx.try_recv().unwrap().as_deref(), Some(&7));
    }

    #[test]
    fn a_request_that_looked_up_before_the_leader_finished_takes_its_outcome() {
        let c = Coalescer::<u32>::default();
        let early = Instant::now();
        let Role::Leader(leader) = c.join("k", early) else {
            panic!()
        };
        leader.finish(Some(Arc::new(1)));
        // Missed before the leader stored, arrives after it finished: no second trip.
        assert!(matches!(c.join("k", early), Role::Finished(Some(_))));
        // A request that looks up after the leader finished would have seen the stored
        // response; if it still missed (it was deleted meanwhile), it leads.
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(c.join("k", Instant::now()), Role::Leader(_)));
    }

    #[test]
    fn a_dropped_leader_releases_its_followers() {
        let c = Coalescer::<u32>::default();
        let t0 = Instant::now();
        let leader = c.join("k", t0);
        let Role::Follower(mut rx) = c.join("k", t0) else {
            panic!()
        };
        drop(leader);
        assert_eq!(rx.try_recv().unwrap(), None);
        assert!(matches!(c.join("k", t0), Role::Finished(None)));
    }
}
