//! stallscope: what happens when sync or CPU-heavy code runs inside an async handler, made
//! visible and measurable.
//!
//! Each lesson (`routes::sleep`, `routes::cpu`, `routes::upstream`, `routes::db`) has a
//! correct and a stalling variant; `routes::users` is the ORM lesson's CRUD. [`app`] builds the real router so tests exercise exactly what ships.

pub mod blocking;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod experiment;
pub mod page;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod upstream;

use axum::Router;

/// The telemetry crate, under the name the app's modules have always used for it.
pub use stallscope_telemetry as telemetry;

pub use state::AppState;

/// The whole HTTP application for `state`: the lessons' routes and the live page.
pub fn app(state: AppState) -> Router {
    routes::router(state.clone()).merge(page::routes().with_state(state))
}

/// The telemetry settings for `args` and the in-flight cap of `limits`, with the lessons' variant labels and the database's
/// histogram buckets.
pub fn telemetry_settings(
    args: &config::TelemetryArgs,
    limits: &config::LimitArgs,
) -> telemetry::Settings {
    telemetry::Settings {
        variants: routes::route_variants(),
        histogram_buckets: db::metric_names::HISTOGRAM_BUCKETS.to_vec(),
        max_in_flight: limits.max_in_flight as usize,
        overloaded_detail: "the service is answering as many requests as --max-in-flight allows; try again in a moment",
        ..args.settings()
    }
}
