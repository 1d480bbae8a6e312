//! The HTTP surface: one module per lesson, plus health and docs.

pub mod cpu;
pub mod health;
pub mod params;
pub mod report;
pub mod sleep;
pub mod upstream;
pub(crate) mod variant;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::AppError;
use crate::state::AppState;

/// Route templates of the lessons, as they appear in metrics and spans.
pub const SLEEP_ROUTE: &str = "/sleep/{variant}";
pub const CPU_ROUTE: &str = "/cpu/{variant}";
pub const UPSTREAM_ROUTE: &str = "/upstream/{variant}";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stallscope",
        description = "Executor stalls made visible: each lesson has a correct and a stalling variant."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::hello,
        sleep::handler,
        cpu::handler,
        upstream::handler
    ),
    tags(
        (name = "sleep", description = "Waiting: tokio::time::sleep vs std::thread::sleep"),
        (name = "cpu", description = "Computing: inline hashing vs the blocking pool vs rayon"),
        (name = "upstream", description = "Calling a slow service: reqwest vs a blocking client"),
        (name = "service", description = "Health and baseline"),
    )
)]
pub struct ApiDoc;

/// All routes, with `state` applied.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/hello", get(health::hello))
        .route(SLEEP_ROUTE, get(sleep::handler))
        .route(CPU_ROUTE, get(cpu::handler))
        .route(UPSTREAM_ROUTE, get(upstream::handler))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: Uri) -> AppError {
    AppError::RouteNotFound {
        path: uri.path().chars().take(200).collect(),
    }
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
