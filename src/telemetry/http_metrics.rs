//! The per-request instruments of the route layer — the HTTP server metrics of the
//! OpenTelemetry semantic conventions and the variant's task monitor — resolved once per
//! label set instead of once per request.
//!
//! `metrics::histogram!(name, labels…)` builds a key, hashes every label and searches the
//! recorder's registry on each call. At tens of thousands of requests per second that was a
//! visible share of the route layer's cost (see `docs/benchmarks.md`). Every label value here
//! is bounded — route templates, the lesson's variant names, known methods, the status codes
//! the service itself produces — so each label set's handles are looked up once and kept.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Gauge, Histogram};
use tokio_metrics::TaskMonitor;

use super::metric_names::{HTTP_ACTIVE_REQUESTS, HTTP_REQUEST_DURATION};
use super::task_monitors::TaskMonitors;

/// The labels a request is known by before it has a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub route: &'static str,
    pub variant: &'static str,
    pub method: &'static str,
}

/// All label sets seen so far. Written once per new label set, read on every request.
#[derive(Default)]
pub struct HttpMetrics {
    by_route: RwLock<HashMap<RouteKey, Arc<RouteInstruments>, BuildHasherDefault<LabelHasher>>>,
}

/// FNV-1a: the keys are a few short, trusted strings (bounded labels, never raw client input),
/// so the default SipHash's protection against crafted collisions buys nothing here, and it
/// ran for every request.
pub struct LabelHasher(u64);

impl Default for LabelHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325) // FNV-1a's offset basis
    }
}

impl Hasher for LabelHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
}

impl HttpMetrics {
    /// The instruments of `key`, created on first use; `tasks` supplies the variant's task
    /// monitor (shared by every method of the route).
    pub fn get(&self, key: RouteKey, tasks: &TaskMonitors) -> Arc<RouteInstruments> {
        if let Some(found) = self
            .by_route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(found);
        }
        let mut by_route = self
            .by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(by_route.entry(key).or_insert_with(|| {
            Arc::new(RouteInstruments {
                key,
                span_name: super::route_layer::span_name(key.method, key.route),
                monitor: tasks.get(key.route, key.variant),
                active: metrics::gauge!(
                    HTTP_ACTIVE_REQUESTS,
                    "http_route" => key.route,
                    "http_request_method" => key.method,
                ),
                durations: RwLock::new(Vec::new()),
            })
        }))
    }
}

/// What the route layer records for one label set.
pub struct RouteInstruments {
    key: RouteKey,
    /// The server span's name (`GET /sleep/{variant}`), formatted once.
    pub span_name: String,
    /// The variant's tokio-metrics task monitor.
    pub monitor: TaskMonitor,
    /// `http_server_active_requests`.
    pub active: Gauge,
    /// `http_server_request_duration_seconds` by response status: a handful per route.
    durations: RwLock<Vec<(u16, Histogram)>>,
}

impl RouteInstruments {
    /// Records one finished request.
    pub fn record_duration(&self, status: u16, seconds: f64) {
        if let Some((_, histogram)) = self
            .durations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(code, _)| *code == status)
        {
            histogram.record(seconds);
            return;
        }
        // First request with this status: register its histogram (unless another thread
        // just did).
        let mut durations = self
            .durations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, histogram)) = durations.iter().find(|(code, _)| *code == status) {
            histogram.record(seconds);
            return;
        }
        let histogram = metrics::histogram!(
            HTTP_REQUEST_DURATION,
            "http_route" => self.key.route,
            "http_request_method" => self.key.method,
            "http_response_status_code" => status.to_string(),
            // Not an OpenTelemetry attribute, but bounded like `http_route`, and what lets a
            // dashboard put each lesson's variants side by side.
            "variant" => self.key.variant,
        );
        histogram.record(seconds);
        durations.push((status, histogram));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_instrument_set_per_label_set() {
        let tasks = TaskMonitors::new(Duration::from_millis(1));
        let metrics = HttpMetrics::default();
        let key = RouteKey {
            route: "/sleep/{variant}",
            variant: "async",
            method: "GET",
        };
        let first = metrics.get(key, &tasks);
        let again = metrics.get(key, &tasks);
        assert!(Arc::ptr_eq(&first, &again));
        let post = metrics.get(
            RouteKey {
                method: "POST",
                ..key
            },
            &tasks,
        );
        assert!(!Arc::ptr_eq(&first, &post));
        // Both methods of one variant share its task monitor.
        first.monitor.instrument(async {});
        assert_eq!(tasks.snapshot().len(), 1);
        first.record_duration(200, 0.01);
        first.record_duration(200, 0.02);
        first.record_duration(404, 0.01);
        assert_eq!(first.durations.read().expect("durations").len(), 2);
    }

    #[test]
    fn the_label_hasher_tells_label_sets_apart() {
        use std::hash::BuildHasher;
        let hash = |key: RouteKey| BuildHasherDefault::<LabelHasher>::default().hash_one(key);
        let key = RouteKey {
            route: "/sleep/{variant}",
            variant: "async",
            method: "GET",
        };
        assert_eq!(hash(key), hash(key));
        for other in [
            RouteKey {
                variant: "blocking",
                ..key
            },
            RouteKey {
                method: "POST",
                ..key
            },
            RouteKey {
                route: "/cpu/{variant}",
                ..key
            },
            // Same bytes, split differently: `str`'s Hash adds a terminator.
            RouteKey {
                route: "/sleep/{variant}a",
                variant: "sync",
                ..key
            },
        ] {
            assert_ne!(hash(key), hash(other), "{other:?}");
        }
    }
}
