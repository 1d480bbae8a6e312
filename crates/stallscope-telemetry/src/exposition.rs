//! The figures read at scrape time — the runtime's own counters, the per-variant task
//! monitors and the route layer's HTTP instruments — in the same `/metrics` document as the
//! recorder's series, and written by the same library: metrics-exporter-prometheus's
//! `formatting` functions.
//!
//! They are cumulative counters and current gauges that Tokio and tokio-metrics already keep;
//! reading them at scrape time is exact and costs nothing between scrapes. They cannot go
//! through the `metrics` facade itself: its counters are whole numbers (these count seconds
//! too) and its histograms take single observations (these arrive as bucket counts). The
//! HTTP instruments are sharded per thread for speed (docs/benchmarks.md, "Per-worker
//! counters") and summed here.

use std::time::Duration;

use indexmap::IndexMap;
use metrics_exporter_prometheus::LabelSet;
use metrics_exporter_prometheus::formatting::{
    write_help_line, write_metric_line, write_type_line,
};
use tokio::runtime::RuntimeMetrics;

use super::task_monitors::TaskFigures;

/// Metric families in the Prometheus text format, appended one after another.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn into_string(self) -> String {
        self.out
    }

    /// `# HELP` and `# TYPE` lines; `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        write_help_line(&mut self.out, name, None, None, help);
        write_type_line(&mut self.out, name, None, None, kind);
    }

    /// One sample of family `name` (with `suffix`: `bucket`, `sum` or `count` of a histogram),
    /// and a histogram bucket's `le`.
    fn line(
        &mut self,
        name: &str,
        suffix: Option<&'static str>,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: f64,
    ) {
        let key = metrics::Key::from_parts(
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        );
        let labels = LabelSet::from_key_and_global(&key, &IndexMap::new());
        write_metric_line(
            &mut self.out,
            name,
            suffix,
            &labels,
            le.map(|le| ("le", le)),
            value,
            None,
        );
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.line(name, None, labels, None, value);
    }

    /// One family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One family with a sample per worker (`worker="0"`, …).
    fn per_worker(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        workers: usize,
        value: impl Fn(usize) -> f64,
    ) {
        self.family(name, kind, help);
        for worker in 0..workers {
            let label = worker.to_string();
            self.sample(name, &[("worker", &label)], value(worker));
        }
    }

    /// One histogram series: cumulative `_bucket`s (`les` are the upper bounds, `+Inf` last),
    /// `_sum` and `_count`.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (String, u64)>,
        sum: f64,
    ) {
        let mut cumulative = 0;
        for (le, count) in buckets {
            cumulative += count;
            self.line(name, Some("bucket"), labels, Some(&le), cumulative as f64);
        }
        self.line(name, Some("sum"), labels, None, sum);
        self.line(name, Some("count"), labels, None, cumulative as f64);
    }
}

/// A bucket bound as Prometheus writes it.
fn le(bound: f64) -> String {
    if bound.is_infinite() {
        "+Inf".to_owned()
    } else {
        bound.to_string()
    }
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// The runtime's workers, queues, blocking pool and poll-time histogram.
pub fn render_runtime(out: &mut Exposition, metrics: &RuntimeMetrics) {
    let workers = metrics.num_workers();
    out.single(
        "stallscope_runtime_workers",
        "gauge",
        "Worker threads of the service runtime.",
        workers as f64,
    );
    out.single(
        "stallscope_runtime_alive_tasks",
        "gauge",
        "Tasks currently alive (spawned and not finished).",
        metrics.num_alive_tasks() as f64,
    );
    out.single(
        "stallscope_runtime_spawned_tasks_total",
        "counter",
        "Tasks spawned since the runtime started.",
        metrics.spawned_tasks_count() as f64,
    );
    out.single(
        "stallscope_runtime_global_queue_depth",
        "gauge",
        "Tasks waiting in the runtime's global (injection) queue.",
        metrics.global_queue_depth() as f64,
    );
    out.single(
        "stallscope_runtime_remote_schedules_total",
        "counter",
        "Tasks woken from outside the runtime's workers.",
        metrics.remote_schedule_count() as f64,
    );
    out.single(
        "stallscope_runtime_budget_forced_yields_total",
        "counter",
        "Times a task was forced to yield after exhausting its cooperative budget.",
        metrics.budget_forced_yield_count() as f64,
    );
    out.per_worker(
        "stallscope_runtime_worker_local_queue_depth",
        "gauge",
        "Tasks waiting in each worker's local run queue.",
        workers,
        |w| metrics.worker_local_queue_depth(w) as f64,
    );
    out.per_worker(
        "stallscope_runtime_worker_busy_seconds_total",
        "counter",
        "Time each worker spent polling tasks; rate() of it is the worker's busy ratio.",
        workers,
        |w| secs(metrics.worker_total_busy_duration(w)),
    );
    out.per_worker(
        "stallscope_runtime_worker_polls_total",
        "counter",
        "Task polls by each worker.",
        workers,
        |w| metrics.worker_poll_count(w) as f64,
    );
    out.per_worker(
        "stallscope_runtime_worker_parks_total",
        "counter",
        "Times each worker parked (went idle).",
        workers,
        |w| metrics.worker_park_count(w) as f64,
    );
    out.per_worker(
        "stallscope_runtime_worker_steals_total",
        "counter",
        "Tasks each worker stole from another worker's queue.",
        workers,
        |w| metrics.worker_steal_count(w) as f64,
    );
    out.single(
        "stallscope_runtime_blocking_threads",
        "gauge",
        "Threads in the blocking pool (spawn_blocking, block_in_place hand-offs).",
        metrics.num_blocking_threads() as f64,
    );
    out.single(
        "stallscope_runtime_blocking_idle_threads",
        "gauge",
        "Blocking-pool threads waiting for work.",
        metrics.num_idle_blocking_threads() as f64,
    );
    out.single(
        "stallscope_runtime_blocking_queue_depth",
        "gauge",
        "Blocking jobs waiting for a thread: above 0 means the pool is at its cap.",
        metrics.blocking_queue_depth() as f64,
    );
    render_poll_histogram(out, metrics, workers);
}

/// Tokio's poll-time histogram, summed over workers, as a Prometheus histogram.
fn render_poll_histogram(out: &mut Exposition, metrics: &RuntimeMetrics, workers: usize) {
    if !metrics.poll_time_histogram_enabled() {
        return;
    }
    const NAME: &str = "stallscope_runtime_poll_duration_seconds";
    out.family(
        NAME,
        "histogram",
        "Duration of every task poll on the service runtime (power-of-two buckets). _sum is the workers' total busy time.",
    );
    let count = metrics.poll_time_histogram_num_buckets();
    let buckets = (0..count).map(|bucket| {
        let polls = (0..workers)
            .map(|w| metrics.poll_time_histogram_bucket_count(w, bucket))
            .sum::<u64>();
        let end = metrics.poll_time_histogram_bucket_range(bucket).end;
        let last = bucket + 1 == count || end >= Duration::from_secs(3600 * 24);
        (
            le(if last {
                f64::INFINITY
            } else {
                end.as_secs_f64()
            }),
            polls,
        )
    });
    let busy: f64 = (0..workers)
        .map(|w| secs(metrics.worker_total_busy_duration(w)))
        .sum();
    out.histogram(NAME, &[], buckets, busy);
}

/// The per-variant task monitor families.
pub fn render_tasks(out: &mut Exposition, tasks: &[TaskFigures<'_>]) {
    type Pick = fn(&tokio_metrics::TaskMetrics) -> f64;
    let families: [(&str, &str, Pick); 12] = [
        (
            "stallscope_task_instrumented_total",
            "Request futures instrumented.",
            |m| m.instrumented_count as f64,
        ),
        (
            "stallscope_task_dropped_total",
            "Request futures finished or dropped.",
            |m| m.dropped_count as f64,
        ),
        (
            "stallscope_task_first_polls_total",
            "Request futures polled at least once.",
            |m| m.first_poll_count as f64,
        ),
        (
            "stallscope_task_first_poll_delay_seconds_total",
            "Time from instrumenting to the first poll, summed.",
            |m| secs(m.total_first_poll_delay),
        ),
        (
            "stallscope_task_polls_total",
            "Polls of request futures.",
            |m| m.total_poll_count as f64,
        ),
        (
            "stallscope_task_poll_duration_seconds_total",
            "Time spent polling request futures.",
            |m| secs(m.total_poll_duration),
        ),
        (
            "stallscope_task_slow_polls_total",
            "Polls longer than the slow-poll threshold (default 1 ms).",
            |m| m.total_slow_poll_count as f64,
        ),
        (
            "stallscope_task_slow_poll_duration_seconds_total",
            "Time spent in slow polls.",
            |m| secs(m.total_slow_poll_duration),
        ),
        (
            "stallscope_task_schedules_total",
            "Times a request future was woken and queued to run.",
            |m| m.total_scheduled_count as f64,
        ),
        (
            "stallscope_task_scheduled_delay_seconds_total",
            "Time woken request futures waited in a run queue before being polled.",
            |m| secs(m.total_scheduled_duration),
        ),
        (
            "stallscope_task_idles_total",
            "Times a request future went idle (waiting to be woken).",
            |m| m.total_idled_count as f64,
        ),
        (
            "stallscope_task_idle_seconds_total",
            "Time request futures spent idle.",
            |m| secs(m.total_idle_duration),
        ),
    ];
    for (name, help, pick) in families {
        out.family(name, "counter", &format!("{help} By route and variant."));
        for task in tasks {
            out.sample(
                name,
                &[("route", task.route), ("variant", task.variant)],
                pick(&task.metrics),
            );
        }
    }
}

/// `http.server.request.duration` and `http.server.active_requests` of the OpenTelemetry HTTP
/// semantic conventions, from the route layer's instruments.
pub fn render_http(out: &mut Exposition, routes: &[super::http_metrics::RouteFigures]) {
    use super::metric_names::{HTTP_ACTIVE_REQUESTS, HTTP_REQUEST_DURATION, REQUEST_BUCKETS};
    use std::collections::BTreeMap;
    if routes.is_empty() {
        return;
    }
    // One gauge series per route and method: the variants of a route share it.
    let mut active: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for route in routes {
        *active
            .entry((route.key.route, route.key.method))
            .or_default() += route.active;
    }
    out.family(
        HTTP_ACTIVE_REQUESTS,
        "gauge",
        "HTTP server requests in flight, by route template and method.",
    );
    for ((route, method), value) in active {
        out.sample(
            HTTP_ACTIVE_REQUESTS,
            &[("http_route", route), ("http_request_method", method)],
            value as f64,
        );
    }

    let mut histograms = BTreeMap::new();
    for route in routes {
        for (status, figures) in &route.durations {
            let key = (
                route.key.route,
                route.key.method,
                *status,
                route.key.variant,
            );
            histograms.insert(key, figures);
        }
    }
    out.family(
        HTTP_REQUEST_DURATION,
        "histogram",
        "Duration of HTTP server requests, by route template, method, status code and lesson variant.",
    );
    for ((route, method, status, variant), figures) in histograms {
        let status = if status == super::http_metrics::OTHER_STATUS {
            "_OTHER".to_owned()
        } else {
            status.to_string()
        };
        let labels = [
            ("http_route", route),
            ("http_request_method", method),
            ("http_response_status_code", status.as_str()),
            // Not an OpenTelemetry attribute, but bounded like `http_route`, and what lets a
            // dashboard put each lesson's variants side by side.
            ("variant", variant),
        ];
        let bounds = REQUEST_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds.map(le).zip(figures.buckets);
        out.histogram(HTTP_REQUEST_DURATION, &labels, buckets, secs(figures.sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_written_as_prometheus_reads_them() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "Help with \\ and\nnewline.");
        out.sample("x_total", &[("a", "q\"uo\\te\n")], 3.0);
        out.sample("x_total", &[], 0.25);
        assert_eq!(
            out.into_string(),
            "# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\\n\"} 3\nx_total 0.25\n"
        );
        assert_eq!(
            (le(0.005), le(f64::INFINITY)),
            ("0.005".into(), "+Inf".into())
        );
    }

    /// The HTTP families: one in-flight series per route and method (its variants summed),
    /// cumulative buckets, `_OTHER` for statuses past the bounded set.
    #[test]
    fn http_figures_render_as_cumulative_histograms() {
        use crate::http_metrics::{HistogramFigures, OTHER_STATUS, RouteFigures, RouteKey};
        use crate::metric_names::REQUEST_BUCKETS;
        let mut buckets = [0; REQUEST_BUCKETS.len() + 1];
        buckets[0] = 2; // le="0.001"
        buckets[2] = 1; // le="0.005"
        buckets[REQUEST_BUCKETS.len()] = 1; // +Inf only
        let figures = HistogramFigures {
            buckets,
            sum: Duration::from_millis(100_006),
        };
        let key = RouteKey {
            route: "/sleep/{variant}",
            variant: "async",
            method: "GET",
        };
        let routes = [
            RouteFigures {
                key,
                active: 2,
                durations: vec![(200, figures.clone()), (OTHER_STATUS, figures)],
            },
            RouteFigures {
                key: RouteKey {
                    variant: "blocking",
                    ..key
                },
                active: 1,
                durations: Vec::new(),
            },
        ];
        let mut out = Exposition::default();
        render_http(&mut out, &routes);
        let text = out.into_string();
        let lines: Vec<&str> = text.lines().collect();
        let labels = r#"http_route="/sleep/{variant}",http_request_method="GET""#;
        assert!(lines.contains(&format!("http_server_active_requests{{{labels}}} 3").as_str()));
        for (le, count) in [
            ("0.001", 2),
            ("0.0025", 2),
            ("0.005", 3),
            ("30", 3),
            ("+Inf", 4),
        ] {
            let line = format!(
                r#"http_server_request_duration_seconds_bucket{{{labels},http_response_status_code="200",variant="async",le="{le}"}} {count}"#
            );
            assert!(lines.contains(&line.as_str()), "{line} in\n{text}");
        }
        let status = r#"http_response_status_code="200",variant="async""#;
        assert!(
            lines.contains(
                &format!("http_server_request_duration_seconds_sum{{{labels},{status}}} 100.006")
                    .as_str()
            )
        );
        assert!(lines.contains(
            &format!("http_server_request_duration_seconds_count{{{labels},{status}}} 4").as_str()
        ));
        assert!(text.contains(r#"http_response_status_code="_OTHER""#));
        assert_eq!(
            text.matches("# TYPE http_server_request_duration_seconds histogram")
                .count(),
            1
        );
    }
}
