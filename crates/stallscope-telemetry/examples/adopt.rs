//! stallscope's telemetry in a plain axum app: one handler blocks its worker with
//! `std::thread::sleep`, and the watchdog names its route in the log *while* it blocks.
//!
//!   cargo run --example adopt -p stallscope-telemetry    # then: curl 127.0.0.1:3030/slow
//!
//! (Build with `--cfg tokio_unstable`, as the workspace's .cargo/config.toml does: the
//! task-poll hooks need it.)

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use stallscope_telemetry::logging::{self, TracingOptions};
use stallscope_telemetry::metrics_endpoint;
use stallscope_telemetry::route_layer::ObserveLayer;
use stallscope_telemetry::{Settings, Telemetry};

/// The mistake to catch: a synchronous sleep inside an async handler.
async fn slow() -> &'static str {
    std::thread::sleep(Duration::from_millis(1_500));
    "slept\n"
}

/// The app: its routes, `/metrics`, and the telemetry's route layer over all of them.
pub fn app(telemetry: &Arc<Telemetry>) -> Router {
    let scraped = Arc::clone(telemetry);
    Router::new()
        .route("/slow", get(slow))
        .route("/hello", get(|| async { "hello\n" }))
        .route(
            "/metrics",
            get(move || async move { metrics_endpoint::response(&scraped) }),
        )
        .layer(ObserveLayer::new(Arc::clone(telemetry)))
}

/// A runtime whose task polls the watchdog watches.
pub fn runtime(telemetry: &Telemetry, workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    telemetry.install_hooks(&mut builder);
    builder.build()
}

#[allow(dead_code)] // the test includes this file for `app` and `runtime` only
fn main() -> std::io::Result<()> {
    let _logs = logging::init(&TracingOptions {
        default_service_name: "adopt-example",
        console: false,
        default_log_filter: "info",
        upstream_thread: None,
    });
    let telemetry = Telemetry::new(Settings::default());
    runtime(&telemetry, 2)?.block_on(async {
        telemetry.start()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3030").await?;
        tracing::info!("try: curl 127.0.0.1:3030/slow, and watch this log");
        axum::serve(listener, app(&telemetry)).await
    })
}
