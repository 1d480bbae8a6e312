//! `GET /metrics`: the Prometheus text of a [`Telemetry`], as a handler for the service's own
//! router and as a listener of its own that answers while the service runtime is stalled.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Telemetry;
use crate::background::BackgroundServer;

/// Prometheus' text format content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` response: every family `telemetry` knows, rendered now.
pub fn response(telemetry: &Telemetry) -> impl IntoResponse + use<> {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], telemetry.render())
}

/// `/metrics` and a bare `/healthz` (`{"status":"ok"}`), running none of the app's handlers.
pub fn router(telemetry: &Arc<Telemetry>) -> Router {
    let telemetry = Arc::clone(telemetry);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let telemetry = Arc::clone(&telemetry);
                async move { response(&telemetry) }
            }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
}

/// Serves [`router`] on `bind` from a thread and runtime of its own until dropped: a scrape
/// that a stalled service runtime cannot hold up.
pub fn serve_in_background(
    telemetry: &Arc<Telemetry>,
    bind: SocketAddr,
) -> std::io::Result<BackgroundServer> {
    BackgroundServer::start("metrics-admin", bind, router(telemetry))
}
