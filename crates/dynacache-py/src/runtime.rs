//! One tokio runtime per process, made on first use and made again in a child after `os.fork()`
//! (threads do not survive a fork: a runtime inherited from the parent has no workers).
//!
//! [`run`] drives a storage call to its end with the GIL released, waking every 50 ms to let
//! Python handle signals, so Ctrl-C during a slow call raises `KeyboardInterrupt` at once (the
//! call is cancelled, which the cache is built to survive).

use std::future::Future;
use std::sync::Mutex;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::{self, Failure};

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The runtime of this process.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = *slot
        && owner == pid
    {
        return Ok(rt);
    }
    // A runtime made by the parent of a fork is left as it is: its threads are gone, so it can
    // neither run nor be shut down.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .thread_name("dynacache")
        // Debug builds of the AWS SDK's futures are deep.
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .map_err(|e| {
            Python::attach(|py| {
                errors::raise(
                    py,
                    "ConfigurationError",
                    &format!("cannot start the runtime: {e}"),
                )
            })
        })?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// Runs `fut` on the runtime, the GIL released, checking for signals while it waits.
pub(crate) fn run<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    let (tx, mut rx) = sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    loop {
        // A unique borrow is Send where a shared one is not (a Receiver is not Sync).
        let waiting = &mut rx;
        match py.detach(move || waiting.recv_timeout(Duration::from_millis(50))) {
            Ok(result) => return result.map_err(|f| f.into_py(py)),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupted) = py.check_signals() {
                    task.abort();
                    return Err(interrupted);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(errors::raise(py, "Error", "the operation was cancelled"));
            }
        }
    }
}

/// Runs a `dynacache` future, its error turned into the matching Python exception.
pub(crate) fn run_dc<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = dynacache::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    run(py, async move { fut.await.map_err(Failure::Cache) })
}

/// A value of this process (an open cache), made again in a child after `os.fork()`: the
/// parent's connections and engine threads do not exist there. The parent's value is leaked in
/// the child, never dropped (dropping it would wait on threads that are gone).
pub(crate) struct PerProcess<T> {
    state: Mutex<Slot<T>>,
}

enum Slot<T> {
    Open { pid: u32, value: T },
    Closed,
}

fn closed(py: Python<'_>) -> PyErr {
    errors::raise(py, "ClosedError", "the cache is closed")
}

impl<T: Clone> PerProcess<T> {
    pub(crate) fn new(value: T) -> Self {
        PerProcess {
            state: Mutex::new(Slot::Open {
                pid: std::process::id(),
                value,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This process's value: `open` makes it (without the lock held, so with the GIL released
    /// while it opens) when the one held is the parent's; `ClosedError` after `close`.
    pub(crate) fn get(
        &self,
        py: Python<'_>,
        open: impl FnOnce(Python<'_>) -> PyResult<T>,
    ) -> PyResult<T> {
        match &*self.lock() {
            Slot::Closed => return Err(closed(py)),
            Slot::Open { pid, value } if *pid == std::process::id() => return Ok(value.clone()),
            Slot::Open { .. } => {}
        }
        let value = open(py)?;
        let mut slot = self.lock();
        match &*slot {
            Slot::Closed => return Err(closed(py)),
            Slot::Open { pid, value: theirs } if *pid == std::process::id() => {
                return Ok(theirs.clone());
            }
            Slot::Open { .. } => {}
        }
        let parents = std::mem::replace(
            &mut *slot,
            Slot::Open {
                pid: std::process::id(),
                value: value.clone(),
            },
        );
        std::mem::forget(parents);
        Ok(value)
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(*self.lock(), Slot::Closed)
    }

    /// Closes: later `get`s raise `ClosedError`. The value, when it is this process's (one
    /// inherited through a fork is leaked, not returned); `None` when already closed.
    pub(crate) fn close(&self) -> Option<T> {
        match std::mem::replace(&mut *self.lock(), Slot::Closed) {
            Slot::Open { pid, value } if pid == std::process::id() => Some(value),
            other => {
                std::mem::forget(other);
                None
            }
        }
    }
}
