//! Liveness, readiness and the zero-work baseline.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, ProblemDoc};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up and a worker polled this handler.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the service accepts lesson traffic. 503 once shutdown has begun, or while the
/// database does not answer a `SELECT 1` within the acquire timeout; it turns 200 again by
/// itself when the database is back.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Shutting down, or the database is unreachable", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    if state.shutdown.is_cancelled() {
        return Err(AppError::Unavailable("the service is shutting down".into()));
    }
    state.db.ping().await?;
    Ok(Json(Health { status: "ready" }))
}

/// The baseline: no work at all. Benchmarks compare this with and without instrumentation.
#[utoipa::path(get, path = "/hello", tag = "service",
    responses((status = 200, description = "Greeting", body = String, content_type = "text/plain")))]
pub async fn hello() -> &'static str {
    "Hello, world!"
}
