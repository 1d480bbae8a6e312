//! The live feed: what a page shows of a service a few times a second, as Server-Sent Events.
//!
//! Each open stream samples the telemetry on its own ([`Sampler`]): the executor's lag as of
//! now (the canary's [`Heartbeat`](crate::canary::Heartbeat), which grows while a stall
//! lasts), per-worker busy ratios, the watchdog's stalls in progress and recently ended with
//! their victims, the blocking pool, the requests in flight and per-route latency over the
//! last ten seconds. Nothing is shared between streams and nothing runs without one: a
//! closed page leaves no task behind.
//!
//! Serve [`router`] where a stalled service runtime cannot hold it up (see
//! [`crate::front_door`]): the feed exists to show stalls while they happen.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Telemetry;
use crate::http_metrics::RouteKey;
use crate::metric_names::REQUEST_BUCKETS;

/// How often a stream sends a snapshot.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// How far back the per-route latency looks.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// Recently ended stalls sent, newest first.
const RECENT_STALLS: usize = 20;
/// In-flight requests listed, oldest first.
const IN_FLIGHT_LISTED: usize = 20;

/// `GET /live/stream`: snapshots as `text/event-stream`, one every [`INTERVAL`], until the
/// client goes away or `shutdown` is cancelled (a draining server must not wait on a stream
/// that never ends).
pub fn router(telemetry: Arc<Telemetry>, shutdown: CancellationToken) -> Router {
    Router::new().route(
        "/live/stream",
        get(move || {
            let telemetry = Arc::clone(&telemetry);
            let shutdown = shutdown.clone();
            async move { stream(telemetry, shutdown) }
        }),
    )
}

/// The feed as a response: snapshots until the client goes away or `shutdown` is cancelled.
pub fn stream(
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = futures::stream::unfold(
        (Sampler::new(telemetry), ticks),
        |(mut sampler, mut ticks)| async move {
            ticks.tick().await;
            let event = Event::default()
                .event("snapshot")
                .json_data(sampler.sample())
                .unwrap_or_else(|_| Event::default().comment("unserialisable snapshot"));
            Some((Ok(event), (sampler, ticks)))
        },
    )
    .take_until(shutdown.cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// One snapshot of the service.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The executor's lag now: how late the canary last ran, or how overdue it is.
    pub lag_ms: f64,
    /// The watchdog's threshold: a poll longer than this is a stall.
    pub stall_threshold_ms: f64,
    pub workers: Vec<WorkerView>,
    /// In progress first, then recently ended, newest first.
    pub stalls: Vec<StallView>,
    pub blocking: BlockingView,
    pub in_flight_total: usize,
    /// The oldest in-flight requests.
    pub in_flight: Vec<InFlightView>,
    /// Per route, variant and method, over the last [`LATENCY_WINDOW`].
    pub routes: Vec<RouteView>,
}

#[derive(Debug, Serialize)]
pub struct WorkerView {
    pub worker: usize,
    /// Share of the last interval the worker spent running tasks, 0 to 1.
    pub busy: f64,
    /// How long its current poll has run (0 when idle or between polls).
    pub poll_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct StallView {
    pub worker: String,
    pub route: &'static str,
    pub variant: &'static str,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub in_progress: bool,
    /// So far (in progress) or in full.
    pub length_ms: f64,
    /// `code` or `host` (the worker waited for a CPU).
    pub cause: &'static str,
    pub victims: Vec<VictimView>,
}

#[derive(Debug, Serialize)]
pub struct VictimView {
    pub route: &'static str,
    pub variant: &'static str,
    pub request_id: String,
    /// How long stalls were in progress while it was: what they cost it at most.
    pub delayed_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct BlockingView {
    pub threads: usize,
    pub idle: usize,
    pub queue_depth: usize,
    pub call_sites: Vec<CallSiteView>,
}

#[derive(Debug, Serialize)]
pub struct CallSiteView {
    pub call_site: &'static str,
    pub in_flight: u64,
    /// The longest queue wait in the last ten seconds or so.
    pub recent_max_wait_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct InFlightView {
    pub method: &'static str,
    pub route: &'static str,
    pub variant: &'static str,
    pub request_id: String,
    pub age_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct RouteView {
    pub method: &'static str,
    pub route: &'static str,
    pub variant: &'static str,
    pub active: i64,
    /// Requests finished in the window.
    pub requests: u64,
    /// Estimated from the histogram buckets, as Prometheus' `histogram_quantile` does.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Bucket counts (not cumulative, `+Inf` last) per label set, all statuses together.
type Buckets = HashMap<RouteKey, Vec<u64>>;

/// One stream's memory: what the figures were, to turn counters into rates and windows.
pub struct Sampler {
    telemetry: Arc<Telemetry>,
    busy_before: Option<(Instant, Vec<Duration>)>,
    latency_history: VecDeque<(Instant, Buckets)>,
}

impl Sampler {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self {
            telemetry,
            busy_before: None,
            latency_history: VecDeque::new(),
        }
    }

    pub fn sample(&mut self) -> Snapshot {
        let watchdog = &self.telemetry.watchdog;
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let in_flight = self.telemetry.in_flight.pending();
        Snapshot {
            at_ms,
            lag_ms: ms(self.telemetry.heartbeat.lag_now()),
            stall_threshold_ms: ms(watchdog.threshold()),
            workers: self.workers(),
            stalls: self.stalls(),
            blocking: self.blocking(),
            in_flight_total: in_flight.len(),
            in_flight: in_flight
                .into_iter()
                .take(IN_FLIGHT_LISTED)
                .map(|request| InFlightView {
                    method: request.method,
                    route: request.route,
                    variant: request.variant,
                    request_id: request.request_id,
                    age_ms: ms(request.age),
                })
                .collect(),
            routes: self.routes(),
        }
    }

    /// Busy share per worker since the last sample. Tokio adds a poll's time to the worker's
    /// busy total only when the poll ends, so a worker blocked in one long poll would read
    /// idle; the watchdog's view of the running poll says otherwise.
    fn workers(&mut self) -> Vec<WorkerView> {
        let Some(runtime) = self.telemetry.runtime() else {
            return Vec::new();
        };
        let metrics = runtime.metrics();
        let now = Instant::now();
        let busy: Vec<Duration> = (0..metrics.num_workers())
            .map(|w| metrics.worker_total_busy_duration(w))
            .collect();
        let running: HashMap<_, _> = self
            .telemetry
            .watchdog
            .running_polls()
            .into_iter()
            .collect();
        let before = self.busy_before.replace((now, busy.clone()));
        busy.iter()
            .enumerate()
            .map(|(w, total)| {
                let poll = metrics
                    .worker_thread_id(w)
                    .and_then(|thread| running.get(&thread).copied())
                    .unwrap_or_default();
                let share = match &before {
                    Some((then, totals)) => {
                        let elapsed = now.duration_since(*then);
                        let worked = total.saturating_sub(totals[w]);
                        if poll >= elapsed {
                            1.0
                        } else {
                            (worked.as_secs_f64() / elapsed.as_secs_f64().max(1e-9)).min(1.0)
                        }
                    }
                    None => 0.0,
                };
                WorkerView {
                    worker: w,
                    busy: share,
                    poll_ms: ms(poll),
                }
            })
            .collect()
    }

    fn stalls(&self) -> Vec<StallView> {
        let mut stalls: Vec<StallView> = self
            .telemetry
            .watchdog
            .stalls()
            .into_iter()
            .rev()
            .map(|(stall, length, victims)| StallView {
                in_progress: stall.ended_ns.is_none(),
                worker: stall.worker,
                route: stall.route,
                variant: stall.variant,
                request_id: stall.request_id,
                trace_id: stall.culprit.map(|ids| ids.trace_id.to_string()),
                length_ms: ms(length),
                cause: stall.cause.as_str(),
                victims: victims
                    .into_iter()
                    .map(|victim| VictimView {
                        route: victim.route,
                        variant: victim.variant,
                        request_id: victim.request_id,
                        delayed_ms: ms(victim.delayed),
                    })
                    .collect(),
            })
            .collect();
        // In progress first; each group newest first (the log is in order of start).
        stalls.sort_by_key(|stall| !stall.in_progress);
        let in_progress = stalls.iter().filter(|s| s.in_progress).count();
        stalls.truncate(in_progress + RECENT_STALLS);
        stalls
    }

    fn blocking(&self) -> BlockingView {
        let (threads, idle, queue_depth) = self.telemetry.runtime().map_or((0, 0, 0), |runtime| {
            let metrics = runtime.metrics();
            (
                metrics.num_blocking_threads(),
                metrics.num_idle_blocking_threads(),
                metrics.blocking_queue_depth(),
            )
        });
        BlockingView {
            threads,
            idle,
            queue_depth,
            call_sites: crate::blocking::call_sites()
                .into_iter()
                .map(|site| CallSiteView {
                    call_site: site.call_site,
                    in_flight: site.in_flight,
                    recent_max_wait_ms: ms(site.recent_max_wait),
                })
                .collect(),
        }
    }

    fn routes(&mut self) -> Vec<RouteView> {
        let now = Instant::now();
        let figures = self.telemetry.http.snapshot();
        let current: Buckets = figures
            .iter()
            .map(|route| {
                let mut buckets = vec![0; REQUEST_BUCKETS.len() + 1];
                for (_, histogram) in &route.durations {
                    for (sum, count) in buckets.iter_mut().zip(histogram.buckets) {
                        *sum += count;
                    }
                }
                (route.key, buckets)
            })
            .collect();
        while self
            .latency_history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > LATENCY_WINDOW)
        {
            self.latency_history.pop_front();
        }
        let empty = Vec::new();
        let mut routes: Vec<RouteView> = figures
            .iter()
            .filter_map(|route| {
                let now_buckets = current.get(&route.key)?;
                let then = self
                    .latency_history
                    .front()
                    .and_then(|(_, then)| then.get(&route.key))
                    .unwrap_or(&empty);
                let window: Vec<u64> = now_buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.saturating_sub(then.get(i).copied().unwrap_or(0)))
                    .collect();
                let requests = window.iter().sum();
                (requests > 0 || route.active > 0).then(|| RouteView {
                    method: route.key.method,
                    route: route.key.route,
                    variant: route.key.variant,
                    active: route.active,
                    requests,
                    p50_ms: quantile(&window, 0.5).map(|s| s * 1000.0),
                    p99_ms: quantile(&window, 0.99).map(|s| s * 1000.0),
                })
            })
            .collect();
        self.latency_history.push_back((now, current));
        routes.sort_by_key(|r| (r.route, r.variant, r.method));
        routes
    }
}

/// The `q` quantile of a histogram (per-bucket counts over [`REQUEST_BUCKETS`], `+Inf` last),
/// in seconds, interpolated within its bucket as Prometheus' `histogram_quantile` does; one
/// in the `+Inf` bucket reads as the largest finite bound.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (seen + count) as f64 >= rank {
            let Some(&upper) = REQUEST_BUCKETS.get(i) else {
                return REQUEST_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { REQUEST_BUCKETS[i - 1] };
            let within = (rank - seen as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        seen += count;
    }
    REQUEST_BUCKETS.last().copied()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(seconds: f64) -> usize {
        REQUEST_BUCKETS.partition_point(|&le| le < seconds)
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut buckets = vec![0; REQUEST_BUCKETS.len() + 1];
        assert_eq!(quantile(&buckets, 0.5), None);
        // 99 fast requests and one slow one.
        let fast = bucket_of(0.002);
        let slow = bucket_of(1.5);
        buckets[fast] = 99;
        buckets[slow] = 1;
        let p50 = quantile(&buckets, 0.5).expect("some");
        let lower = if fast == 0 {
            0.0
        } else {
            REQUEST_BUCKETS[fast - 1]
        };
        assert!(p50 > lower && p50 <= REQUEST_BUCKETS[fast], "{p50}");
        let p99 = quantile(&buckets, 0.99).expect("some");
        assert!(
            p99 <= REQUEST_BUCKETS[fast],
            "the 99th of 100 is still fast: {p99}"
        );
        let p999 = quantile(&buckets, 0.999).expect("some");
        assert!(p999 > REQUEST_BUCKETS[slow - 1], "{p999}");
        let mut beyond = vec![0; REQUEST_BUCKETS.len() + 1];
        *beyond.last_mut().expect("+Inf") = 3;
        assert_eq!(quantile(&beyond, 0.5), REQUEST_BUCKETS.last().copied());
    }
}
