//! `GET /metrics`: Prometheus text exposition.

use axum::extract::State;
use axum::response::IntoResponse;

use crate::state::AppState;
use crate::telemetry::metrics_endpoint;

/// Every metric of the service, in the Prometheus text format (see the README's table).
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics_endpoint::response(&state.telemetry)
}
