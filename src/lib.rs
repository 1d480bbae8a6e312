//! stallscope: what happens when sync or CPU-heavy code runs inside an async handler, made
//! visible and measurable.
//!
//! Each lesson (`routes::sleep`, `routes::cpu`, `routes::upstream`, `routes::db`) has a
//! correct and a stalling variant; `routes::users` is the ORM lesson's CRUD. [`app`] builds the real router so tests exercise exactly what ships.

pub mod background;
pub mod blocking;
pub mod config;
pub mod db;
pub mod error;
pub mod experiment;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod upstream;

use axum::Router;

pub use state::AppState;

/// The whole HTTP application for `state`.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}
