//! The per-request instruments of the route layer — the HTTP server metrics of the
//! OpenTelemetry semantic conventions and the variant's task monitor — resolved once per
//! label set instead of once per request, and rendered when `/metrics` is scraped.
//!
//! Every label value here is bounded — route templates, the lesson's variant names, known
//! methods, the status codes the service itself produces — so each label set's instruments
//! are made once and kept. They are this module's own per-thread-sharded counters rather than
//! `metrics` handles: the recorder's gauge is one shared atomic and its histogram a shared
//! sample queue, cache lines every worker wrote on every request (see `docs/benchmarks.md`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use super::metric_names::REQUEST_BUCKETS;
use super::shards::{Padded, SHARDS, ShardedGauge, this_threads_shard};
use super::task_monitors::{TaskMonitors, VariantMonitor};
use super::watchdog::Watchdog;

/// The labels a request is known by before it has a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub route: &'static str,
    pub variant: &'static str,
    pub method: &'static str,
}

impl RouteKey {
    /// The same label strings, by address: every label is one of the code's own `&'static`
    /// strings (route templates are interned, variants and methods are constants), so equal
    /// labels are the same string and comparing addresses is enough for the per-thread cache,
    /// where comparing contents (three `memcmp`s per entry) ran for every request. Two equal
    /// labels at different addresses only miss the cache and meet in the shared map.
    fn is_same(&self, other: &Self) -> bool {
        std::ptr::eq(self.route, other.route)
            && std::ptr::eq(self.variant, other.variant)
            && std::ptr::eq(self.method, other.method)
    }
}

/// All label sets seen so far. Written once per new label set; requests find theirs through a
/// per-thread cache.
///
/// Each label set's instruments are leaked: there are as many as the code has routes,
/// variants and methods (their series stay in `/metrics` for the life of the process anyway),
/// and a `&'static` lets every request hold them without touching a shared reference count.
pub struct HttpMetrics {
    /// Tells this set's entries apart in the per-thread cache (tests build many).
    generation: u64,
    by_route: RwLock<HashMap<RouteKey, &'static RouteInstruments, BuildHasherDefault<LabelHasher>>>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        Self {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            by_route: RwLock::default(),
        }
    }
}

/// Upper bound of a thread's cache of label sets; a thread that sees more starts over.
const CACHED_PER_THREAD: usize = 64;

thread_local! {
    /// The label sets this thread has served, so a request finds its instruments without the
    /// shared lock: even a read lock is a write to the lock's cache line, which the workers
    /// would pass back and forth on every request.
    static SEEN: RefCell<Vec<(u64, RouteKey, &'static RouteInstruments)>> =
        const { RefCell::new(Vec::new()) };
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
    /// monitor (shared by every method of the route), `watchdog` the one its polls report to.
    pub fn get(
        &self,
        key: RouteKey,
        tasks: &TaskMonitors,
        watchdog: &Arc<Watchdog>,
    ) -> &'static RouteInstruments {
        let cached = SEEN
            .try_with(|seen| {
                seen.try_borrow().ok().and_then(|seen| {
                    seen.iter()
                        .find(|(generation, seen, _)| {
                            *generation == self.generation && seen.is_same(&key)
                        })
                        .map(|&(_, _, instruments)| instruments)
                })
            })
            .ok()
            .flatten();
        if let Some(instruments) = cached {
            return instruments;
        }
        let instruments = self.get_shared(key, tasks, watchdog);
        let _ = SEEN.try_with(|seen| {
            if let Ok(mut seen) = seen.try_borrow_mut() {
                if seen.len() >= CACHED_PER_THREAD {
                    seen.clear();
                }
                seen.push((self.generation, key, instruments));
            }
        });
        instruments
    }

    /// [`Self::get`] through the shared map.
    fn get_shared(
        &self,
        key: RouteKey,
        tasks: &TaskMonitors,
        watchdog: &Arc<Watchdog>,
    ) -> &'static RouteInstruments {
        if let Some(&found) = self
            .by_route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return found;
        }
        let mut by_route = self
            .by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        by_route.entry(key).or_insert_with(|| {
            Box::leak(Box::new(RouteInstruments {
                key,
                span_name: span_name(key.method, key.route),
                monitor: tasks.get(key.route, key.variant),
                watchdog: Arc::clone(watchdog),
                active: ShardedGauge::default(),
                durations: DurationsByStatus::default(),
            }))
        })
    }
}

/// `http_route` of requests that matched no route: one value for all of them.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The server span's name: `{method} {route}`, or the method alone for unmatched paths.
pub fn span_name(method: &str, route: &str) -> String {
    if route == UNMATCHED_ROUTE {
        method.to_owned()
    } else {
        format!("{method} {route}")
    }
}

/// What the route layer records for one label set.
pub struct RouteInstruments {
    key: RouteKey,
    /// The server span's name (`GET /sleep/{variant}`), formatted once.
    pub span_name: String,
    /// The variant's tokio-metrics task monitor.
    pub monitor: &'static VariantMonitor,
    /// The stall watchdog the handler's polls are tagged for.
    pub watchdog: Arc<Watchdog>,
    /// `http_server_active_requests` (summed over the variants of a route and method).
    pub active: ShardedGauge,
    /// `http_server_request_duration_seconds` by response status: a handful per route.
    durations: DurationsByStatus,
}

/// Statuses a route can answer with: more than any route of this service produces. Once all
/// but the last slot are taken, further statuses share the last one as [`OTHER_STATUS`]
/// (`http_response_status_code="_OTHER"`), so the series stay bounded whatever happens.
const STATUS_SLOTS: usize = 16;

/// Status of the series of requests whose status found no free slot.
pub const OTHER_STATUS: u16 = 0;

/// One duration histogram per response status, found without a lock: each slot is set once
/// (under `registering`, so a status never takes two) and only read afterwards.
#[derive(Default)]
struct DurationsByStatus {
    slots: [OnceLock<(u16, DurationHistogram)>; STATUS_SLOTS],
    registering: Mutex<()>,
}

impl DurationsByStatus {
    /// The histogram of `status`, if registered.
    fn find(&self, status: u16) -> Option<&DurationHistogram> {
        self.slots
            .iter()
            .map_while(OnceLock::get)
            .find(|(code, _)| *code == status)
            .map(|(_, histogram)| histogram)
    }

    /// The histogram of `status`, registered on first use.
    fn get(&self, status: u16) -> &DurationHistogram {
        if let Some(histogram) = self.find(status) {
            return histogram;
        }
        let _registering = self
            .registering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(histogram) = self.find(status) {
            return histogram; // another thread just registered it
        }
        let (first, last) = self.slots.split_at(STATUS_SLOTS - 1);
        let slot = match first.iter().find(|slot| slot.get().is_none()) {
            Some(free) => free.get_or_init(|| (status, DurationHistogram::default())),
            // The last slot is the overflow series. (Statuses that land there take this lock
            // on every request: a cost only a service answering with 16 statuses would pay.)
            None => last[0].get_or_init(|| (OTHER_STATUS, DurationHistogram::default())),
        };
        &slot.1
    }
}

/// Buckets of `http_server_request_duration_seconds`, `+Inf` included.
const BUCKETS: usize = REQUEST_BUCKETS.len() + 1;

/// `http_server_request_duration_seconds` of one label set, per shard: the count of each
/// bucket (not cumulative; summed and accumulated when rendered) and the sum in nanoseconds
/// (an integer, so shards add exactly).
#[derive(Default)]
pub struct DurationHistogram {
    shards: [Padded<HistogramShard>; SHARDS],
}

#[derive(Default)]
struct HistogramShard {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    pub fn record(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        // The first bucket whose upper bound (`le`) the duration does not exceed.
        let bucket = REQUEST_BUCKETS.partition_point(|&le| le < seconds);
        let shard = &self.shards[this_threads_shard()].0;
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The shards' figures, summed.
    pub fn figures(&self) -> HistogramFigures {
        let mut buckets = [0; BUCKETS];
        let mut sum_ns = 0u64;
        for shard in &self.shards {
            for (total, count) in buckets.iter_mut().zip(&shard.0.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(shard.0.sum_ns.load(Ordering::Relaxed));
        }
        HistogramFigures {
            buckets,
            sum: Duration::from_nanos(sum_ns),
        }
    }
}

/// A histogram's figures at one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramFigures {
    /// Per bucket, in the order of [`REQUEST_BUCKETS`] then `+Inf`; not cumulative.
    pub buckets: [u64; BUCKETS],
    pub sum: Duration,
}

/// One label set's HTTP figures at a scrape.
pub struct RouteFigures {
    pub key: RouteKey,
    pub active: i64,
    /// By response status.
    pub durations: Vec<(u16, HistogramFigures)>,
}

impl RouteInstruments {
    /// Records one finished request.
    pub fn record_duration(&self, status: u16, duration: Duration) {
        self.durations.get(status).record(duration);
    }

    fn figures(&self) -> RouteFigures {
        RouteFigures {
            key: self.key,
            active: self.active.value(),
            durations: self
                .durations
                .slots
                .iter()
                .map_while(OnceLock::get)
                .map(|(status, histogram)| (*status, histogram.figures()))
                .collect(),
        }
    }
}

impl HttpMetrics {
    /// Every label set's figures, for `/metrics`.
    pub fn snapshot(&self) -> Vec<RouteFigures> {
        self.by_route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|instruments| instruments.figures())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_instrument_set_per_label_set() {
        let tasks = TaskMonitors::new(Duration::from_millis(1));
        let watchdog = Watchdog::new(Duration::from_millis(100));
        let metrics = HttpMetrics::default();
        let key = RouteKey {
            route: "/sleep/{variant}",
            variant: "async",
            method: "GET",
        };
        let first = metrics.get(key, &tasks, &watchdog);
        let again = metrics.get(key, &tasks, &watchdog);
        assert!(std::ptr::eq(first, again));
        let post = metrics.get(
            RouteKey {
                method: "POST",
                ..key
            },
            &tasks,
            &watchdog,
        );
        assert!(!std::ptr::eq(first, post));
        // Both methods of one variant share its task monitor.
        first.monitor.instrument(async {});
        assert_eq!(tasks.snapshot().len(), 1);
        first.record_duration(200, Duration::from_millis(10));
        first.record_duration(200, Duration::from_millis(20));
        first.record_duration(404, Duration::from_millis(10));
        let registered = first.durations.slots.iter().filter_map(OnceLock::get);
        assert_eq!(
            registered.map(|(code, _)| *code).collect::<Vec<_>>(),
            [200, 404]
        );
        // Another set of metrics (another app in the same process) has its own instruments,
        // though this thread has the first set's in its cache.
        let other = HttpMetrics::default().get(key, &tasks, &watchdog);
        assert!(!std::ptr::eq(first, other));
    }

    #[test]
    fn durations_land_in_their_buckets_and_add_up_exactly() {
        // Shared by threads (so recorded in several shards), as the workers share it.
        let histogram: &'static DurationHistogram = Box::leak(Box::default());
        let durations = [
            Duration::from_micros(500),  // le="0.001"
            Duration::from_millis(1),    // le="0.001": bounds are inclusive
            Duration::from_millis(3),    // le="0.005"
            Duration::from_secs(100),    // +Inf only
            Duration::from_nanos(1_001), // le="0.001"
        ];
        let threads: Vec<_> = durations
            .iter()
            .map(|&duration| std::thread::spawn(move || histogram.record(duration)))
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let figures = histogram.figures();
        let le = |edge: f64| {
            REQUEST_BUCKETS
                .iter()
                .position(|&e| e == edge)
                .expect("an edge")
        };
        assert_eq!(figures.buckets[le(0.001)], 3);
        assert_eq!(figures.buckets[le(0.005)], 1);
        assert_eq!(figures.buckets[BUCKETS - 1], 1, "+Inf");
        assert_eq!(figures.buckets.iter().sum::<u64>(), 5);
        assert_eq!(figures.sum, durations.iter().sum::<Duration>());
    }

    #[test]
    fn statuses_beyond_the_slots_share_one_series() {
        let tasks = TaskMonitors::new(Duration::from_millis(1));
        let watchdog = Watchdog::new(Duration::from_millis(100));
        let key = RouteKey {
            route: "/users/{id}",
            variant: "none",
            method: "GET",
        };
        let instruments = HttpMetrics::default().get(key, &tasks, &watchdog);
        for status in 200..220 {
            instruments.record_duration(status, Duration::from_millis(1));
        }
        instruments.record_duration(200, Duration::from_millis(1));
        let figures = instruments.figures();
        let statuses: Vec<u16> = figures.durations.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u16> = (200..200 + STATUS_SLOTS as u16 - 1)
            .chain([OTHER_STATUS])
            .collect();
        assert_eq!(statuses, expected);
        let count = |status| {
            figures
                .durations
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, f)| f.buckets.iter().sum::<u64>())
        };
        assert_eq!(count(200), Some(2));
        assert_eq!(count(OTHER_STATUS), Some(20 - (STATUS_SLOTS as u64 - 1)));
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
