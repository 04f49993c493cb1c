//! A circuit breaker around storage calls.
//!
//! After a run of consecutive failures that say the storage is unwell (timeouts, unreachable
//! endpoint, throttling, server errors), the breaker opens: every call fails at once with
//! [`Error::Unavailable`] for a cool-down, so a cache in front of an unwell table costs its
//! callers nothing. Then one call at a time is let through (half-open); a success closes the
//! breaker, a failure opens it again. State changes are logged once and counted, never logged
//! per call.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// When a table stops calling DynamoDB for a while: after `failures` consecutive failed calls
/// (timeouts, unreachable endpoint, throttling after retries, server errors; not missing items,
/// failed conditions or invalid input), for `cool_down`, then one probe call at a time until
/// one succeeds.
///
/// ```
/// use std::time::Duration;
/// use dynacache::{CircuitBreaker, Table};
///
/// let builder = Table::builder()
///     .circuit_breaker(CircuitBreaker::new(3, Duration::from_secs(10)));
/// let off = Table::builder().circuit_breaker(CircuitBreaker::disabled());
/// assert_eq!(CircuitBreaker::default(), CircuitBreaker::new(5, Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    failures: u32,
    cool_down: Duration,
}

impl CircuitBreaker {
    /// Opens after `failures` consecutive failures (at least 1), for `cool_down`.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        CircuitBreaker {
            failures: failures.max(1),
            cool_down,
        }
    }

    /// Never opens: every call goes to DynamoDB.
    pub fn disabled() -> Self {
        CircuitBreaker {
            failures: u32::MAX,
            cool_down: Duration::ZERO,
        }
    }
}

impl Default for CircuitBreaker {
    /// Five consecutive failures, five seconds.
    fn default() -> Self {
        CircuitBreaker::new(5, Duration::from_secs(5))
    }
}

/// Where a table's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to DynamoDB.
    Closed,
    /// Calls fail at once with [`Error::Unavailable`].
    Open,
    /// One call at a time goes to DynamoDB to see whether it recovered.
    HalfOpen,
}

/// A table's storage health, as its circuit breaker sees it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use dynacache::{BreakerState, Table};
///
/// let table = Table::builder().open().await?;
/// let health = table.health();
/// assert_eq!(health.state, BreakerState::Closed);
/// assert_eq!(health.times_opened, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageHealth {
    /// The breaker's state.
    pub state: BreakerState,
    /// Consecutive failures counted so far (reset by a success).
    pub consecutive_failures: u32,
    /// How many times the breaker opened.
    pub times_opened: u64,
    /// Calls refused at once because the breaker was open.
    pub calls_refused: u64,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker of one table (shared by its clones).
#[derive(Debug)]
pub(crate) struct Breaker {
    config: CircuitBreaker,
    state: Mutex<State>,
    opened: AtomicU64,
    refused: AtomicU64,
}

/// A call the breaker let through; report how it went with [`Breaker::record`]. Dropped
/// unreported, it teaches nothing: a call is dropped when a client hangs up as often as when
/// the storage is slow (a caller that gives up because the storage is too slow says so with
/// [`Breaker::gave_up`]). A dropped probe frees the way for the next one.
#[derive(Debug)]
#[must_use]
pub(crate) struct Admission<'a> {
    breaker: &'a Breaker,
    table: &'a str,
    probe: bool,
    done: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.release_probe();
        }
    }
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreaker) -> Self {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a call through, or refuses it at once while the breaker is open.
    pub(crate) fn admit<'a>(&'a self, table: &'a str) -> Result<Admission<'a>> {
        let admitted = |probe| Admission {
            breaker: self,
            table,
            probe,
            done: false,
        };
        let mut state = self.lock();
        match &mut *state {
            State::Closed { .. } => Ok(admitted(false)),
            State::Open { until } if Instant::now() < *until => {
                let retry_in = until.saturating_duration_since(Instant::now());
                drop(state);
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Error::Unavailable {
                    table: table.to_owned(),
                    retry_in,
                })
            }
            State::Open { .. } => {
                *state = State::HalfOpen { probing: true };
                Ok(admitted(true))
            }
            State::HalfOpen { probing } if !*probing => {
                *probing = true;
                Ok(admitted(true))
            }
            State::HalfOpen { .. } => {
                drop(state);
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Error::Unavailable {
                    table: table.to_owned(),
                    retry_in: Duration::ZERO,
                })
            }
        }
    }

    /// Records how an admitted call went.
    pub(crate) fn record<T>(&self, mut admission: Admission<'_>, outcome: &Result<T>) {
        admission.done = true;
        let failed = outcome.as_ref().err().is_some_and(is_storage_failure);
        self.settle(admission.probe, failed, admission.table);
    }

    /// Takes an admitted call whose outcome is known only later (a download that has begun):
    /// returns whether it is the probe, for [`settle_deferred`](Breaker::settle_deferred) or,
    /// if it never ends, [`release_probe`](Breaker::release_probe).
    pub(crate) fn defer(&self, mut admission: Admission<'_>) -> bool {
        admission.done = true;
        admission.probe
    }

    /// Records how a [deferred](Breaker::defer) call went: whole, or with this error.
    pub(crate) fn settle_deferred(&self, probe: bool, error: Option<&Error>, table: &str) {
        self.settle(probe, error.is_some_and(is_storage_failure), table);
    }

    /// A probe that will not report (a dropped [`Admission`], or a deferred call whose reader
    /// stopped): frees the way for the next.
    pub(crate) fn release_probe(&self) {
        if let State::HalfOpen { probing } = &mut *self.lock() {
            *probing = false;
        }
    }

    /// Records that a caller gave up waiting for the storage (its own deadline passed): a call
    /// too slow to wait for is what the breaker is for, so it counts as a failure.
    pub(crate) fn gave_up(&self, table: &str) {
        // Half-open, the call given up on was the probe (its admission, dropped first, has
        // already freed the way): the probe failed.
        let half_open = matches!(*self.lock(), State::HalfOpen { .. });
        self.settle(half_open, true, table);
    }

    fn settle(&self, probe: bool, failed: bool, table: &str) {
        let mut state = self.lock();
        match (&mut *state, failed) {
            (State::Closed { failures }, false) => *failures = 0,
            (State::Closed { failures }, true) => {
                *failures = failures.saturating_add(1);
                if *failures >= self.config.failures {
                    *state = State::Open {
                        until: Instant::now() + self.config.cool_down,
                    };
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::breaker_open(table, true);
                    tracing::warn!(
                        table,
                        failures = self.config.failures,
                        cool_down_ms = self.config.cool_down.as_millis() as u64,
                        "dynacache: the storage keeps failing; calls fail fast for the cool-down"
                    );
                }
            }
            (State::HalfOpen { .. }, false) if probe => {
                *state = State::Closed { failures: 0 };
                crate::metrics::breaker_open(table, false);
                tracing::info!(table, "dynacache: the storage answers again; calls resume");
            }
            (State::HalfOpen { .. }, true) if probe => {
                *state = State::Open {
                    until: Instant::now() + self.config.cool_down,
                };
                self.opened.fetch_add(1, Ordering::Relaxed);
            }
            // A call admitted before the breaker opened finished: nothing to learn.
            _ => {}
        }
    }

    pub(crate) fn health(&self) -> StorageHealth {
        let state = self.lock();
        let (state, consecutive_failures) = match &*state {
            State::Closed { failures } => (BreakerState::Closed, *failures),
            State::Open { until } if Instant::now() < *until => {
                (BreakerState::Open, self.config.failures)
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                (BreakerState::HalfOpen, self.config.failures)
            }
        };
        StorageHealth {
            state,
            consecutive_failures,
            times_opened: self.opened.load(Ordering::Relaxed),
            calls_refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Failures that say the storage is unwell, as opposed to answers about the request.
fn is_storage_failure(e: &Error) -> bool {
    match e {
        Error::Timeout(_) | Error::Unreachable(_) | Error::Throttled { .. } => true,
        Error::Service { code, .. } => matches!(
            code.as_str(),
            "InternalServerError" | "ServiceUnavailable" | "InternalFailure" | "Unknown"
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> Result<()> {
        Err(Error::Timeout("silent".into()))
    }

    fn run(b: &Breaker, outcome: Result<()>) -> Result<()> {
        let a = b.admit("t")?;
        b.record(a, &outcome);
        outcome
    }

    #[test]
    fn consecutive_failures_open_it_and_it_refuses_at_once() {
        let b = Breaker::new(CircuitBreaker::new(3, Duration::from_secs(60)));
        for _ in 0..2 {
            assert!(run(&b, timeout()).unwrap_err().is_timeout());
        }
        assert_eq!(b.health().state, BreakerState::Closed);
        let _ = run(&b, timeout());
        assert_eq!(b.health().state, BreakerState::Open);
        let refused = run(&b, Ok(())).unwrap_err();
        assert!(refused.is_unavailable(), "{refused}");
        assert_eq!((b.health().times_opened, b.health().calls_refused), (1, 1));
    }

    #[test]
    fn a_success_resets_the_count_and_answers_about_the_request_are_not_failures() {
        let b = Breaker::new(CircuitBreaker::new(2, Duration::from_secs(60)));
        let _ = run(&b, timeout());
        let _ = run(&b, Ok(()));
        let _ = run(&b, timeout());
        let _ = run(&b, Err(Error::corrupt("k", "damaged")));
        let _ = run(
            &b,
            Err(Error::InvalidKey {
                reason: "empty".into(),
            }),
        );
        assert_eq!(b.health().state, BreakerState::Closed);
        assert_eq!(
            b.health().consecutive_failures,
            0,
            "an answer about the request shows the storage is well"
        );
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        let b = Breaker::new(CircuitBreaker::new(1, Duration::ZERO));
        let _ = run(&b, timeout());
        // Cool-down over: one probe is let through, others are refused while it runs.
        let probe = b.admit("t").unwrap();
        assert!(b.admit("t").unwrap_err().is_unavailable());
        b.record(probe, &timeout());
        assert_eq!(
            b.health().times_opened,
            2,
            "the failed probe opened it again"
        );
        let probe = b.admit("t").unwrap();
        b.record(probe, &Ok(()));
        assert_eq!(b.health().state, BreakerState::Closed);
        assert!(run(&b, Ok(())).is_ok());
    }

    #[test]
    fn a_dropped_call_is_no_failure_and_frees_the_probe() {
        let b = Breaker::new(CircuitBreaker::new(2, Duration::ZERO));
        // Cancelled calls (a client hung up) never open it.
        for _ in 0..10 {
            drop(b.admit("t").unwrap());
        }
        assert_eq!(b.health().state, BreakerState::Closed);
        assert_eq!(b.health().consecutive_failures, 0);
        let _ = run(&b, timeout());
        let _ = run(&b, timeout());
        assert_eq!(b.health().times_opened, 1);
        // Cool-down over: a probe dropped unreported lets the next probe through.
        drop(b.admit("t").unwrap());
        let probe = b
            .admit("t")
            .expect("an abandoned probe does not block the next one");
        b.record(probe, &Ok(()));
        assert_eq!(b.health().state, BreakerState::Closed);
    }

    #[test]
    fn a_probe_given_up_on_opens_it_again() {
        let b = Breaker::new(CircuitBreaker::new(1, Duration::ZERO));
        drop(b.admit("t").unwrap());
        b.gave_up("t");
        assert_eq!(b.health().times_opened, 1);
        // Cool-down over: the probe's caller gives up on it (the admission is dropped first,
        // as a timeout drops the future it wraps).
        let probe = b.admit("t").unwrap();
        drop(probe);
        b.gave_up("t");
        assert_eq!(b.health().times_opened, 2, "the slow probe opened it again");
    }

    #[test]
    fn a_caller_giving_up_on_a_slow_call_counts_as_a_failure() {
        let b = Breaker::new(CircuitBreaker::new(2, Duration::from_secs(60)));
        drop(b.admit("t").unwrap());
        b.gave_up("t");
        assert_eq!(b.health().state, BreakerState::Closed);
        drop(b.admit("t").unwrap());
        b.gave_up("t");
        assert_eq!(b.health().state, BreakerState::Open);
        assert_eq!(b.health().times_opened, 1);
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let b = Breaker::new(CircuitBreaker::disabled());
        for _ in 0..1000 {
            let _ = run(&b, timeout());
        }
        assert_eq!(b.health().state, BreakerState::Closed);
    }
}
