//! Every metric name in one place, with its help text. Dashboards, alert rules and the
//! README's table use these names; `promtool check metrics` checks them in `scripts/test`.

/// OpenTelemetry HTTP semantic conventions (`http.server.request.duration`), Prometheus style.
pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
pub const HTTP_ACTIVE_REQUESTS: &str = "http_server_active_requests";

pub const EXECUTOR_LAG: &str = "stallscope_executor_lag_seconds";
pub const EXECUTOR_LAG_MAX: &str = "stallscope_executor_lag_max_seconds";

pub const STALLS: &str = "stallscope_stalls_total";
pub const STALLS_IN_PROGRESS: &str = "stallscope_stalls_in_progress";
pub const STALL_DURATION: &str = "stallscope_stall_duration_seconds";
pub const STALL_VICTIMS: &str = "stallscope_stall_victims_total";

pub const BLOCKING_QUEUE_WAIT: &str = "stallscope_blocking_queue_wait_seconds";
pub const BLOCKING_RUN: &str = "stallscope_blocking_run_seconds";
pub const BLOCKING_IN_FLIGHT: &str = "stallscope_blocking_in_flight";

pub const OTEL_SPANS_EXPORTED: &str = "stallscope_otel_spans_exported_total";
pub const OTEL_SPANS_DROPPED: &str = "stallscope_otel_spans_dropped_total";

/// Requests answered without their handler, by `reason` (the app adds its own reasons).
pub const REQUESTS_REFUSED: &str = "stallscope_requests_refused_total";
/// The route layer's reason: past `Settings::max_in_flight`.
pub const REFUSED_IN_FLIGHT_CAP: &str = "in_flight_cap";

pub const CONNECTIONS_OPEN: &str = "stallscope_connections_open";
pub const CONNECTION_CAP: &str = "stallscope_connection_cap";
pub const CONNECTIONS_REFUSED: &str = "stallscope_connections_refused_total";
pub const CONNECTIONS_TIMED_OUT: &str = "stallscope_connections_timed_out_total";

/// Buckets for request-scale durations (1 ms … 30 s).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 7.5,
    10.0, 15.0, 30.0,
];

/// Buckets for lag and queue waits, which are healthy well under a millisecond.
pub const LAG_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Registers help text and units with the `metrics` facade (emitted as `# HELP`).
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        EXECUTOR_LAG,
        Unit::Seconds,
        "How late the canary's 10 ms tick fired: time a ready task waits for a worker. A late tick also records each tick it swallowed (L - I, L - 2I, ...), so a stall weighs by its length."
    );
    describe_gauge!(
        EXECUTOR_LAG_MAX,
        Unit::Seconds,
        "The largest executor lag since the previous scrape (every scrape, of either port, starts it over): a single stall shows at any scrape interval."
    );
    describe_counter!(
        STALLS,
        "Polls that held a runtime worker longer than the stall threshold, by route and variant (route=\"task\": not an HTTP request)."
    );
    describe_gauge!(
        STALLS_IN_PROGRESS,
        "Stalls the watchdog has reported that are still blocking a worker right now."
    );
    describe_histogram!(
        STALL_DURATION,
        Unit::Seconds,
        "Full length of each stalling poll, recorded when it ends."
    );
    describe_counter!(
        STALL_VICTIMS,
        "Requests that were in flight while another request's or task's poll stalled a worker, by the culprit's route and variant (with several workers: exposed to the stall, not necessarily delayed by it)."
    );
    describe_histogram!(
        BLOCKING_QUEUE_WAIT,
        Unit::Seconds,
        "Time a blocking-pool job waited between submission and start, by call site."
    );
    describe_histogram!(
        BLOCKING_RUN,
        Unit::Seconds,
        "Time a blocking-pool job ran, by call site."
    );
    describe_counter!(
        OTEL_SPANS_EXPORTED,
        "Spans delivered to the OTLP collector."
    );
    describe_counter!(
        OTEL_SPANS_DROPPED,
        "Spans not delivered, by reason: queue_full (the collector is slower than the traffic), export_failed (the collector is down or refused), shut_down."
    );
    describe_gauge!(
        BLOCKING_IN_FLIGHT,
        "Blocking-pool jobs submitted and not finished (queued or running), by call site."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        "Client connections open on the service's port (placed by the front door, or being placed)."
    );
    describe_gauge!(
        CONNECTION_CAP,
        "Client connections the front door keeps open at once; more are closed as they arrive."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed as they arrived because the connection cap was reached."
    );
    describe_counter!(
        CONNECTIONS_TIMED_OUT,
        "Connections closed because a request's head (request line and headers) took longer than the header-read timeout to arrive, or a kept-alive connection stayed idle that long."
    );
}
