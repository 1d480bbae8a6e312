//! Name the route that blocks a Tokio worker *while it blocks*, in any axum service.
//!
//! Everything that observes a service, in one cross-cutting place: logs, the metrics
//! recorder, per-route (and per-variant) task monitors, runtime figures, the executor-lag
//! canary and the stall watchdog. Handlers are never instrumented by hand; the route layer
//! does it. The crate knows nothing of the app it observes: routes are labelled by their
//! `MatchedPath`, and an app may declare one bounded path parameter per route as the
//! `variant` label ([`RouteVariants`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use stallscope_telemetry::{Settings, Telemetry, route_layer::ObserveLayer};
//!
//! let telemetry = Telemetry::new(Settings::default());
//! // The runtime's task-poll hooks feed the watchdog.
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! telemetry.install_hooks(&mut builder);
//! let runtime = builder.enable_all().build()?;
//! runtime.block_on(async {
//!     telemetry.start()?;
//!     let app = Router::new()
//!         .route("/slow", get(|| async { std::thread::sleep(std::time::Duration::from_millis(300)) }))
//!         .layer(ObserveLayer::new(Arc::clone(&telemetry)));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     axum::serve(listener, app).await
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod background;
pub mod blocking;
pub mod canary;
pub mod clock;
pub mod cpu_wait;
pub mod exposition;
pub mod front_door;
pub mod http_metrics;
mod id_header;
pub mod in_flight;
pub mod in_request;
pub mod live;
pub mod logging;
pub mod metric_names;
pub mod metrics_endpoint;
pub mod otlp;
pub mod poll_stats;
pub mod request_context;
pub mod route_layer;
pub mod serve;
mod settings;
pub mod shards;
pub mod span_ids;
pub mod stall_log;
pub mod task_monitors;
pub mod trace_context;
pub mod watchdog;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::runtime::Handle;

use exposition::Exposition;
pub use route_layer::RouteVariants;
pub use settings::Settings;
use task_monitors::TaskMonitors;
use watchdog::Watchdog;

/// The service's telemetry: one per running service.
pub struct Telemetry {
    prometheus: PrometheusHandle,
    pub tasks: TaskMonitors,
    pub http: http_metrics::HttpMetrics,
    pub watchdog: Arc<Watchdog>,
    /// The requests being answered, named by a shutdown that abandons them.
    pub in_flight: Arc<in_flight::InFlightRequests>,
    /// The canary's largest lag since the last scrape.
    lag_max: Arc<canary::LagMax>,
    /// When the canary last ran: the live feed's lag.
    pub heartbeat: Arc<canary::Heartbeat>,
    /// The service runtime, known once it runs; `/metrics` reads its figures from any thread.
    runtime: OnceLock<Handle>,
    settings: Settings,
}

impl Telemetry {
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            prometheus: prometheus_handle(&settings.histogram_buckets),
            tasks: TaskMonitors::new(settings.slow_poll_threshold),
            http: http_metrics::HttpMetrics::default(),
            watchdog: Watchdog::new(settings.stall_threshold),
            in_flight: Arc::new(in_flight::InFlightRequests::with_cap(
                settings.max_in_flight,
            )),
            lag_max: Arc::default(),
            heartbeat: Arc::new(canary::Heartbeat::new(settings.canary_interval)),
            runtime: OnceLock::new(),
            settings,
        })
    }

    /// Starts what runs beside the service, on the current (service) runtime: the canary,
    /// the recorder's upkeep, and the watchdog's scanning thread.
    pub fn start(&self) -> std::io::Result<()> {
        let _ = self.runtime.set(Handle::current());
        self.watchdog.attach(Handle::current());
        if !self.enabled() {
            return Ok(());
        }
        canary::spawn(
            self.settings.canary_interval,
            Arc::clone(&self.lag_max),
            Arc::clone(&self.heartbeat),
        )?;
        let prometheus = self.prometheus.clone();
        tokio::task::Builder::new()
            .name("metrics-upkeep")
            .spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    prometheus.run_upkeep();
                }
            })?;
        self.watchdog
            .spawn_scanner(self.settings.watchdog_scan_interval)
    }

    /// The service runtime, once [`Self::start`] ran.
    pub fn runtime(&self) -> Option<Handle> {
        self.runtime.get().cloned()
    }

    /// The routes' declared `variant` labels.
    pub fn variants(&self) -> &RouteVariants {
        &self.settings.variants
    }

    /// False with `--no-instrumentation` (the bare-router benchmark).
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Installs the task-poll hooks that feed the watchdog on `builder` (unless
    /// instrumentation is off). Needs `--cfg tokio_unstable`.
    pub fn install_hooks(&self, builder: &mut tokio::runtime::Builder) {
        if let Some(watchdog) = self.watchdog() {
            watchdog.install_hooks(builder);
        }
    }

    /// The watchdog whose hooks the runtime should install, unless instrumentation is off.
    pub fn watchdog(&self) -> Option<&Arc<Watchdog>> {
        self.enabled().then_some(&self.watchdog)
    }

    /// The whole `/metrics` document.
    pub fn render(&self) -> String {
        let mut scraped = Exposition::default();
        if let Some(runtime) = self
            .runtime
            .get()
            .cloned()
            .or_else(|| Handle::try_current().ok())
        {
            exposition::render_runtime(&mut scraped, &runtime.metrics());
        }
        exposition::render_tasks(&mut scraped, &self.tasks.snapshot());
        exposition::render_http(&mut scraped, &self.http.snapshot());
        metrics::gauge!(metric_names::EXECUTOR_LAG_MAX).set(self.lag_max.take().as_secs_f64());
        let mut text = self.prometheus.render();
        text.push_str(&scraped.into_string());
        text
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.watchdog.stop();
    }
}

/// The process-wide `metrics` recorder, installed on first use. Histograms get explicit
/// buckets (never summaries), so Prometheus can aggregate and compute quantiles itself.
fn prometheus_handle(app_buckets: &[(&'static str, &'static [f64])]) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use metric_names::*;
            let builder = PrometheusBuilder::new();
            let builder = [
                (STALL_DURATION, REQUEST_BUCKETS),
                (BLOCKING_RUN, REQUEST_BUCKETS),
                (EXECUTOR_LAG, LAG_BUCKETS),
                (BLOCKING_QUEUE_WAIT, LAG_BUCKETS),
            ]
            .into_iter()
            .chain(app_buckets.iter().copied())
            .fold(builder, |builder, (name, buckets)| {
                builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .unwrap_or_else(|err| panic!("bucket list for {name} is empty: {err}"))
            });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only runtime figures"
                );
            }
            describe();
            // Series that exist from the first scrape, so `rate()` and `increase()` see their
            // first rise instead of starting from an absent series.
            metrics::counter!(OTEL_SPANS_EXPORTED).increment(0);
            for reason in otlp::DROP_REASONS {
                metrics::counter!(OTEL_SPANS_DROPPED, "reason" => reason).increment(0);
            }
            handle
        })
        .clone()
}
