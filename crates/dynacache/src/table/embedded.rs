//! The embedded engine: dynoxide (a DynamoDB-compatible engine on SQLite) served on a loopback
//! port from a thread of its own, so that dynacache talks to it through exactly the same
//! DynamoDB request path as to AWS.

use std::path::Path;

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// A running embedded engine. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct EmbeddedEngine {
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
}

impl EmbeddedEngine {
    /// Starts the engine, in memory (`None`) or persisted to a SQLite file.
    pub(crate) fn start(path: Option<&Path>) -> Result<Self> {
        let db = match path {
            None => dynoxide::Database::memory(),
            Some(p) => {
                if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::Embedded {
                        message: format!("cannot create {}: {e}", parent.display()),
                    })?;
                }
                let s = p.to_str().ok_or_else(|| Error::Embedded {
                    message: format!("path is not UTF-8: {}", p.display()),
                })?;
                dynoxide::Database::new(s)
            }
        }
        .map_err(|e| Error::Embedded {
            message: format!("cannot open the database: {e}"),
        })?;

        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("dynacache-embedded".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("dynacache-embedded")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("cannot start a runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("cannot listen on 127.0.0.1: {e}")));
                            return;
                        }
                    };
                    let addr = listener.local_addr().map_err(|e| e.to_string());
                    let _ = addr_tx.send(addr);
                    let shutdown = async move {
                        let _ = stop_rx.await;
                    };
                    if let Err(e) =
                        dynoxide::server::serve_with_shutdown(listener, db, shutdown).await
                    {
                        tracing::error!(error = %e, "embedded engine stopped");
                    }
                });
            })
            .map_err(|e| Error::Embedded {
                message: format!("cannot start a thread: {e}"),
            })?;
        let addr = addr_rx
            .recv()
            .map_err(|_| Error::Embedded {
                message: "the engine thread ended before it listened".into(),
            })?
            .map_err(|message| Error::Embedded { message })?;
        Ok(EmbeddedEngine {
            endpoint: format!("http://{addr}"),
            stop: Some(stop_tx),
        })
    }

    /// The engine's `http://127.0.0.1:PORT` endpoint.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for EmbeddedEngine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
