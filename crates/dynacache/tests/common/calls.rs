//! The DynamoDB operations a test's cache calls make, from the `op` field of the
//! `dynacache.storage` spans (recorded on the thread that installs the subscriber: use a
//! current-thread runtime).

use std::sync::{Arc, Mutex};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Records the operation of each storage call, in order.
#[derive(Clone, Default)]
pub struct StorageCalls(Arc<Mutex<Vec<String>>>);

impl StorageCalls {
    /// Starts recording on this thread until the guard is dropped.
    pub fn install() -> (StorageCalls, tracing::subscriber::DefaultGuard) {
        let calls = StorageCalls::default();
        let guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(calls.clone()));
        (calls, guard)
    }

    /// The operations recorded since the last `take`.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// How many calls of `op` were recorded since the last `take`.
    pub fn count(&self, op: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|c| *c == op).count()
    }
}

struct OpField<'a>(&'a mut Option<String>);

impl Visit for OpField<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "op" {
            *self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "op" {
            *self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StorageCalls {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "dynacache.storage" {
            let mut op = None;
            attrs.record(&mut OpField(&mut op));
            self.0.lock().unwrap().extend(op);
        }
    }
}
