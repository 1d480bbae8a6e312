//! The slow upstream that the `/upstream/*` lessons call: `GET /slow?ms=N` answers after
//! N milliseconds, like the slow third-party API in the tutorial's aiohttp lesson.
//!
//! By default the service starts one in-process, on its **own OS thread with its own
//! runtime**: a stalled service runtime must not also stall the upstream, or the lesson would
//! measure the wrong thing. `stallscope upstream` runs it alone (docker-compose does this).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::error::AppError;
use crate::routes::params::QueryParams;

/// The upstream never sleeps longer than this, whatever it is asked.
pub const MAX_UPSTREAM_DELAY_MS: u64 = 60_000;

/// The upstream's router: `GET /slow?ms=N` and `GET /healthz`.
pub fn router() -> Router {
    Router::new()
        .route("/slow", get(slow))
        .route("/healthz", get(|| async { "ok" }))
}

/// Waits `ms` milliseconds without blocking its runtime, then answers.
async fn slow(RawQuery(query): RawQuery) -> Result<Json<Value>, AppError> {
    let ms = QueryParams::parse(query.as_deref()).bounded_u64("ms", 0, MAX_UPSTREAM_DELAY_MS)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "slept_ms": ms })))
}

/// A running in-process upstream; dropping it stops the server and joins its thread.
pub struct BackgroundUpstream {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundUpstream {
    /// Binds `bind` now (so the address is known and errors surface here), then serves on a
    /// new OS thread named `slow-upstream` with a current-thread runtime of its own.
    pub fn start(bind: SocketAddr) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("slow-upstream".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            tracing::error!(%err, "slow upstream could not listen");
                            return;
                        }
                    };
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    if let Err(err) = axum::serve(listener, router())
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        tracing::error!(%err, "slow upstream stopped");
                    }
                });
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for the upstream clients, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BackgroundUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
