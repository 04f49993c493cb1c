//! Fleet-wide single flight for misses: one process fetches, the others wait for what it
//! stores.
//!
//! The process whose request leads its own process's flight takes a lease item
//! (`{ns}~h:{key}`, one conditional UpdateItem). If it gets it, it looks once more (another
//! process may have stored the response and released the lease since this one looked), then
//! fetches, stores, and releases it. If another process holds it, this one polls the table for the response (20 ms, doubling
//! to 500 ms) and serves it as soon as it lands fresh. It fetches itself when the wait runs
//! out, when the lease is free again and nothing landed (the response was not storable, or its
//! fetch failed: the lease is released at once so that every waiting process goes ahead in
//! parallel rather than in turns), or when the table cannot be read.

use std::sync::Arc;
use std::time::Instant;

use super::HttpCache;
use super::engine::Incoming;
use super::key::variant_suffix;
use super::policy::{self, Action, Decision};
use super::stored::{Found, Lookup, Shared};
use crate::FleetSingleFlight;
use crate::kv::read_through::{POLL_FIRST, POLL_MAX};
use crate::store::lease::{HeldLease, owner};

/// Whose turn it is to fetch, across the fleet.
pub(super) enum FleetTurn {
    /// Another process stored the response: serve it.
    Landed {
        found: Box<Found>,
        decision: Decision,
        /// What local followers may be answered with (not a part read for a range).
        shared: Option<Arc<Shared>>,
    },
    /// Fetch, holding the lease when one was taken (release it after storing).
    Fetch(Option<HeldLease>),
}

impl HttpCache {
    /// Waits for another process's fetch of this miss, or takes the turn to fetch.
    pub(super) async fn fleet_turn(
        &self,
        incoming: &Incoming,
        lookup: &Lookup,
        coalescing_key: &str,
        fleet: FleetSingleFlight,
    ) -> FleetTurn {
        if incoming.method != http::Method::GET || incoming.directives.no_store {
            return FleetTurn::Fetch(None);
        }
        let store = &self.inner.store;
        let mut name = b"h:".to_vec();
        name.extend_from_slice(coalescing_key.as_bytes());
        let Ok(lease_key) = store.lease_key(&name) else {
            return FleetTurn::Fetch(None);
        };
        let owner = owner();
        let deadline = Instant::now() + fleet.wait_time();
        let mut pause = POLL_FIRST;
        let mut waited = false;
        loop {
            if waited && let Some(landed) = self.landed(incoming, lookup).await {
                return landed;
            }
            // While the lease is held, it is read rather than taken again: a failed conditional
            // write costs a write unit, a read one read unit.
            let held = if waited {
                match store.lease_ends(&lease_key).await {
                    Ok(ends) => ends.is_some(),
                    Err(_) => return FleetTurn::Fetch(None),
                }
            } else {
                false
            };
            let attempt = if held {
                Ok(None)
            } else {
                store.acquire(&lease_key, &owner, fleet.lease_time()).await
            };
            match attempt {
                Ok(Some(holding)) if !waited => {
                    let lease = HeldLease::new(store.clone(), lease_key, owner, holding.token);
                    // Another process may have stored the response and released the lease
                    // since this request looked: serve it rather than fetch it again.
                    if let Some(landed) = self.landed(incoming, lookup).await {
                        lease.release().await;
                        return landed;
                    }
                    return FleetTurn::Fetch(Some(lease));
                }
                Ok(Some(holding)) => {
                    // The leader is done and nothing fresh landed: every waiting process goes
                    // ahead, at once.
                    HeldLease::new(store.clone(), lease_key, owner, holding.token)
                        .release()
                        .await;
                    return FleetTurn::Fetch(None);
                }
                Ok(None) => {}
                // The lease cannot be taken or read: fetch rather than wait on a failing table.
                Err(_) => return FleetTurn::Fetch(None),
            }
            let now = Instant::now();
            if now >= deadline {
                return FleetTurn::Fetch(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
            waited = true;
        }
    }

    /// The response another process stored for this request, if it is there and fresh.
    async fn landed(&self, incoming: &Incoming, lookup: &Lookup) -> Option<FleetTurn> {
        // Heads only within the lookup's bound; a body in chunks is read by `ready` after.
        let read = self.lookup(&lookup.base, &incoming.parts.headers, true);
        let Ok(found_lookup) = tokio::time::timeout(self.inner.settings.lookup_timeout, read).await
        else {
            self.table().gave_up();
            return None;
        };
        let found_lookup = found_lookup.ok()?;
        let found = found_lookup.found.clone()?;
        let decision = policy::decide(
            &found.meta(),
            &incoming.directives,
            &self.inner.policy,
            self.now(),
        );
        if !matches!(decision.action, Action::Serve { stale: false }) {
            return None;
        }
        let found = self.ready(found, incoming).await?;
        let suffix = found_lookup
            .index
            .as_ref()
            .map(|index| variant_suffix(index, &incoming.parts.headers))
            .unwrap_or_default();
        // A part read for a range is this request's only; a streamed body is shared as its
        // head, each follower streaming it.
        let shared = found.part.is_none().then(|| {
            Arc::new(Shared {
                key: found.key.clone(),
                doc: found.doc.clone(),
                stream: found.stream.as_ref().map(|s| s.unstarted()),
                index: found_lookup.index.clone(),
                suffix,
            })
        });
        if found.part.is_none() && found.stream.is_none() {
            self.remember(&found_lookup, &found);
        }
        Some(FleetTurn::Landed {
            found: Box::new(found),
            decision,
            shared,
        })
    }

    /// Ends a holding taken for a fetch (its expiry would, later).
    pub(super) async fn end_fleet_turn(&self, holding: Option<HeldLease>) {
        if let Some(h) = holding {
            h.release().await;
        }
    }
}
