//! Prometheus text exposition for the figures read at scrape time: the runtime's own
//! counters, the per-variant task monitors and the route layer's HTTP metrics.
//!
//! These are cumulative counters and current gauges that Tokio and tokio-metrics already
//! keep; reading them when Prometheus scrapes is exact and costs nothing between scrapes.
//! (tokio-metrics' own reporters difference them into per-interval means instead, which
//! Prometheus cannot `rate()` correctly.)

use std::fmt::Write as _;
use std::time::Duration;

use tokio::runtime::RuntimeMetrics;

use super::task_monitors::TaskFigures;

/// Appends metric families in the Prometheus text format.
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
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
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
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
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
    let mut cumulative = 0u64;
    let buckets = metrics.poll_time_histogram_num_buckets();
    for bucket in 0..buckets {
        cumulative += (0..workers)
            .map(|w| metrics.poll_time_histogram_bucket_count(w, bucket))
            .sum::<u64>();
        let end = metrics.poll_time_histogram_bucket_range(bucket).end;
        let le = if bucket + 1 == buckets || end >= Duration::from_secs(3600 * 24) {
            "+Inf".to_owned()
        } else {
            format_value(end.as_secs_f64())
        };
        out.sample(&format!("{NAME}_bucket"), &[("le", &le)], cumulative as f64);
    }
    let busy: f64 = (0..workers)
        .map(|w| secs(metrics.worker_total_busy_duration(w)))
        .sum();
    out.sample(&format!("{NAME}_sum"), &[], busy);
    out.sample(&format!("{NAME}_count"), &[], cumulative as f64);
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
    let bucket_name = format!("{HTTP_REQUEST_DURATION}_bucket");
    let (sum_name, count_name) = (
        format!("{HTTP_REQUEST_DURATION}_sum"),
        format!("{HTTP_REQUEST_DURATION}_count"),
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
        let mut cumulative = 0;
        for (bucket, count) in figures.buckets.iter().enumerate() {
            cumulative += count;
            let le = REQUEST_BUCKETS
                .get(bucket)
                .map_or_else(|| "+Inf".to_owned(), |&le| format_value(le));
            let [route, method, status, variant] = labels;
            out.sample(
                &bucket_name,
                &[route, method, status, variant, ("le", &le)],
                cumulative as f64,
            );
        }
        out.sample(&sum_name, &labels, secs(figures.sum));
        out.sample(&count_name, &labels, cumulative as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values_and_formats_numbers() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "Help with \\ and\nnewline.");
        out.sample("x_total", &[("a", "q\"uo\\te\n")], 3.0);
        out.sample("x_total", &[], 0.25);
        out.sample("x_total", &[], f64::INFINITY);
        assert_eq!(
            out.into_string(),
            "# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\\n\"} 3\nx_total 0.25\nx_total +Inf\n"
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
