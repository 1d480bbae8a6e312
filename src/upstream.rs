//! The slow upstream that the `/upstream/*` lessons call: `GET /slow?ms=N` answers after
//! N milliseconds, like the slow third-party API in the tutorial's aiohttp lesson.
//!
//! By default the service starts one in-process, on its **own OS thread with its own
//! runtime**: a stalled service runtime must not also stall the upstream, or the lesson would
//! measure the wrong thing. `stallscope upstream` runs it alone (docker-compose does this).

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::AppError;
use crate::routes::params::QueryParams;
use crate::telemetry::background::BackgroundServer;
use axum::extract::RawQuery;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// The upstream never sleeps longer than this, whatever it is asked.
pub const MAX_UPSTREAM_DELAY_MS: u64 = 60_000;

/// The upstream's router: `GET /slow?ms=N` and `GET /healthz`.
pub fn router() -> Router {
    Router::new()
        .route("/slow", get(slow))
        .route("/healthz", get(|| async { "ok" }))
        // Its own server spans, joined to the caller's trace through `traceparent`.
        .layer(axum::middleware::from_fn(
            crate::telemetry::route_layer::trace_only,
        ))
}

/// Waits `ms` milliseconds without blocking its runtime, then answers.
async fn slow(RawQuery(query): RawQuery) -> Result<Json<Value>, AppError> {
    let ms = QueryParams::parse(query.as_deref()).bounded_u64("ms", 0, MAX_UPSTREAM_DELAY_MS)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "slept_ms": ms })))
}

/// The name of the thread the upstream serves on: its spans are told apart by it.
pub const THREAD_NAME: &str = "slow-upstream";

/// Starts the slow upstream on its own thread and runtime (see [`BackgroundServer`]).
pub fn start_in_background(bind: SocketAddr) -> std::io::Result<BackgroundServer> {
    BackgroundServer::start(THREAD_NAME, bind, router())
}
