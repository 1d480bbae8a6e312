//! The HTTP surface: one module per lesson, plus health and docs.

pub mod cpu;
pub mod db;
pub mod health;
pub mod metrics;
pub mod params;
pub mod report;
pub mod sleep;
pub mod upstream;
pub mod users;
pub(crate) mod variant;

use std::sync::Arc;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::AppError;
use crate::state::AppState;
use crate::telemetry::{Telemetry, route_layer};

/// Route templates of the lessons, as they appear in metrics and spans.
pub const SLEEP_ROUTE: &str = "/sleep/{variant}";
pub const CPU_ROUTE: &str = "/cpu/{variant}";
pub const UPSTREAM_ROUTE: &str = "/upstream/{variant}";
pub const DB_USER_ROUTE: &str = "/db/{variant}/users/{id}";
pub const DB_SLEEP_ROUTE: &str = "/db/{variant}/sleep";

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
        metrics::metrics,
        sleep::handler,
        cpu::handler,
        upstream::handler,
        db::user,
        db::sleep,
        users::create,
        users::fetch,
        users::list,
        users::update,
        users::remove,
        users::login
    ),
    components(schemas(crate::error::FieldError)),
    tags(
        (name = "sleep", description = "Waiting: tokio::time::sleep vs std::thread::sleep"),
        (name = "cpu", description = "Computing: inline hashing vs the blocking pool vs rayon"),
        (name = "upstream", description = "Calling a slow service: reqwest vs a blocking client"),
        (name = "db", description = "Querying a database: diesel-async vs a sync diesel connection"),
        (name = "users", description = "CRUD on users (diesel models through diesel-async) and login"),
        (name = "service", description = "Health and baseline"),
    )
)]
pub struct ApiDoc;

/// The variant names of a lesson route template, for bounded metric labels.
pub fn variants_of(route: &str) -> Option<&'static [&'static str]> {
    match route {
        SLEEP_ROUTE => Some(sleep::SleepVariant::NAMES),
        CPU_ROUTE => Some(cpu::CpuVariant::NAMES),
        UPSTREAM_ROUTE => Some(upstream::UpstreamVariant::NAMES),
        DB_USER_ROUTE | DB_SLEEP_ROUTE => Some(db::DbVariant::NAMES),
        _ => None,
    }
}

/// All routes, with `state` applied, behind the telemetry route layer.
pub fn router(state: AppState) -> Router {
    let telemetry = Arc::clone(&state.telemetry);
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/hello", get(health::hello))
        .route("/metrics", get(metrics::metrics))
        .route(SLEEP_ROUTE, get(sleep::handler))
        .route(CPU_ROUTE, get(cpu::handler))
        .route(UPSTREAM_ROUTE, get(upstream::handler))
        .route(DB_USER_ROUTE, get(db::user))
        .route(DB_SLEEP_ROUTE, get(db::sleep))
        .merge(users::router())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let router = if telemetry.enabled() {
        router.layer(route_layer::ObserveLayer::new(telemetry))
    } else {
        router
    };
    router.with_state(state)
}

/// `/metrics` and `/healthz` alone, for the admin listener on its own thread: it reads the
/// service's telemetry but runs none of its handlers.
pub fn admin_router(telemetry: &Arc<Telemetry>) -> Router {
    let telemetry = Arc::clone(telemetry);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let telemetry = Arc::clone(&telemetry);
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        telemetry.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(health::healthz))
}

async fn not_found(uri: Uri) -> AppError {
    AppError::RouteNotFound {
        path: uri.path().chars().take(200).collect(),
    }
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
