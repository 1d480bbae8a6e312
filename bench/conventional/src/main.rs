//! The conventional instrumented axum stack, for bench/overhead.sh: what a typical service
//! gets from off-the-shelf crates (tower-http tracing, axum-prometheus HTTP metrics, a
//! tokio-metrics task monitor per route), serving stallscope's `/hello` and `/healthz`
//! responses, so stallscope's own instrumentation can be compared with it on equal terms; and
//! `/sleep/async?ms=N` (a `tokio::time::sleep`) for bench/peers, whose Little's-law runs need
//! a route that waits.
//!
//!   conventional --bind HOST:PORT

use std::future::Future;
use std::time::Duration;

use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use axum_prometheus::PrometheusMetricLayer;
use tokio_metrics::TaskMonitor;
use tower_http::trace::TraceLayer;

/// A GET route whose handler futures run under their own task monitor, as a service watching
/// per-route poll times would; the monitor lives as long as the route.
fn monitored<H, F, R>(handler: H) -> MethodRouter
where
    H: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = R> + Send + 'static,
    R: IntoResponse + 'static,
{
    let monitor = TaskMonitor::new();
    get(move || monitor.instrument(handler()))
}

// Same bodies and content types as stallscope's routes/health.rs.
async fn hello() -> &'static str {
    "Hello, world!"
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(serde::Deserialize)]
struct SleepParams {
    ms: u64,
}

/// stallscope's correct sleep variant, minus its JSON report: waits without holding a worker.
fn sleep_route() -> MethodRouter {
    let monitor = TaskMonitor::new();
    get(move |Query(params): Query<SleepParams>| {
        monitor.instrument(async move {
            tokio::time::sleep(Duration::from_millis(params.ms.min(10_000))).await;
            Json(serde_json::json!({ "work": "sleep", "variant": "async", "ms": params.ms }))
        })
    })
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut bind = String::from("127.0.0.1:8080");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--bind", Some(value)) => bind = value,
            _ => {
                eprintln!("usage: conventional --bind HOST:PORT");
                std::process::exit(2);
            }
        }
    }

    // Human-readable logs at info on stderr: the usual default.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();

    // Two workers, as the benchmark gives stallscope (`--workers 2`).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(bind))
}

async fn serve(bind: String) -> std::io::Result<()> {
    let (prometheus_layer, metric_handle) = PrometheusMetricLayer::pair();
    let app = Router::new()
        .route("/hello", monitored(hello))
        .route("/healthz", monitored(healthz))
        .route("/sleep/async", sleep_route())
        .route("/metrics", get(move || async move { metric_handle.render() }))
        .layer(prometheus_layer)
        .layer(TraceLayer::new_for_http());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
