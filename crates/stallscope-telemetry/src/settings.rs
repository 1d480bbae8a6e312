//! What a service tells the telemetry: thresholds, intervals, extra histogram buckets and the
//! routes' variant labels. Plain data; the app maps its own flags onto it.

use std::time::Duration;

use crate::route_layer::RouteVariants;

/// The stall detectors' thresholds and intervals, and what the metrics need from the app.
#[derive(Clone)]
pub struct Settings {
    /// A poll that holds a worker longer than this is a stall: the watchdog reports it while
    /// it is still running.
    pub stall_threshold: Duration,
    /// How often the watchdog thread looks at the workers.
    pub watchdog_scan_interval: Duration,
    /// Polls longer than this count as slow in the task monitors (tokio-metrics' 50 µs
    /// default flags ordinary JSON encoding; 1 ms means real blocking or heavy CPU).
    pub slow_poll_threshold: Duration,
    /// The executor-lag canary's tick.
    pub canary_interval: Duration,
    /// False: no route layer, task-poll hooks, canary or watchdog (a bare baseline).
    pub enabled: bool,
    /// Bucket boundaries for the app's own histograms, by metric name (the crate's have theirs).
    pub histogram_buckets: Vec<(&'static str, &'static [f64])>,
    /// The routes whose path parameter labels their metrics as `variant`.
    pub variants: RouteVariants,
    /// Requests the route layer lets in at once, all routes together; past it a request is
    /// answered 503 (problem+json, `Retry-After: 1`) without running its handler.
    pub max_in_flight: usize,
    /// The problem's `detail` for a request refused at the cap (name the app's own setting).
    pub overloaded_detail: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stall_threshold: Duration::from_millis(100),
            watchdog_scan_interval: Duration::from_millis(5),
            slow_poll_threshold: Duration::from_millis(1),
            canary_interval: Duration::from_millis(10),
            enabled: true,
            histogram_buckets: Vec::new(),
            variants: RouteVariants::default(),
            max_in_flight: usize::MAX,
            overloaded_detail: "the service is answering as many requests as it takes at once; try again in a moment",
        }
    }
}
