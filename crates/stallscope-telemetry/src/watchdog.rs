//! The live stall watchdog: names the route that is blocking a worker *while it blocks*.
//!
//! Every runtime worker owns a [`Slot`]. Tokio's task-poll hooks (`on_before_task_poll`,
//! `on_after_task_poll`, `tokio_unstable`) stamp the slot when a poll starts and clear it
//! when it ends; the route layer adds which request the poll belongs to. A plain OS thread,
//! outside the runtime so a stalled runtime cannot stall it, scans the slots every few ms. A
//! poll running past the threshold is reported once, right away: a WARN event, a counter, a
//! gauge of stalls in progress. When the poll finally ends, its full length goes into a
//! histogram.
//!
//! Detection latency is at most threshold + one scan interval (plus scheduling noise of the
//! watchdog thread itself): the poll is seen on the first scan after it crosses the threshold.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::TaskMeta;

use super::clock::Stamp;
use super::cpu_wait::{Cause, ThreadStat, Throttling, WaitSample};
use super::metric_names::{STALL_DURATION, STALLS, STALLS_IN_PROGRESS};
use super::request_context::RequestContext;
use super::span_ids::SpanIds;
use super::stall_log::{Exposure, PollKey, Stall, StallLog, StallReport, Victim};

/// Label values used for polls that belong to no HTTP request (background tasks).
pub const NON_REQUEST_ROUTE: &str = "task";
pub const NON_REQUEST_VARIANT: &str = "none";

/// A poll must have run this long before the watchdog samples its thread's CPU wait (a few
/// reads of `/proc`): healthy polls take microseconds and are never sampled.
const SAMPLE_AFTER: Duration = Duration::from_millis(1);

/// One worker's current poll.
struct Slot {
    worker: String,
    thread: std::thread::ThreadId,
    /// Incremented at every poll start; tells one poll from the next.
    seq: AtomicU64,
    /// Nanoseconds since the watchdog's epoch when the current poll started; 0 = idle.
    started_ns: AtomicU64,
    task_id: AtomicU64,
    /// The request the route layer tagged the current poll with, taken when the poll ends.
    request: Mutex<Option<Arc<RequestContext>>>,
    /// Whether `request` holds a tag: written by the slot's own thread only, so the end of
    /// a poll that no request tagged (most of them: connections, background tasks) skips the
    /// lock.
    tagged: AtomicBool,
    /// The `seq` of the poll the watchdog reported, 0 if none; the lock orders the report
    /// against the poll's end so "in progress" never goes negative or leaks.
    reported_seq: Mutex<u64>,
    /// The `seq` of a poll seen running after its thread gave the worker away
    /// (`block_in_place`): long, but not holding a worker, so not a stall.
    handed_off_seq: AtomicU64,
    /// The thread's scheduler statistics (Linux), to tell host delay from blocking code.
    stat: Option<ThreadStat>,
    /// The thread's CPU wait when the watchdog first saw poll `seq` running.
    wait_baseline: Mutex<Option<(u64, WaitSample)>>,
}

impl Slot {
    /// The request the poll that just ended was tagged with, if any; clears the tag.
    fn take_request(&self) -> Option<Arc<RequestContext>> {
        if !self.tagged.load(Ordering::Relaxed) {
            return None;
        }
        self.tagged.store(false, Ordering::Relaxed);
        self.request
            .lock()
            .ok()
            .and_then(|mut request| request.take())
    }
}

/// The watchdog shared by the runtime hooks, the route layer and the scanning thread.
pub struct Watchdog {
    epoch: Stamp,
    threshold: Duration,
    slots: Mutex<Vec<Weak<Slot>>>,
    stopped: AtomicBool,
    /// The runtime whose workers the slots belong to; tells which threads hold a worker now.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Stalls in progress and recently ended, for the requests they delayed.
    stalls: StallLog,
    /// The cgroup's CPU throttling counter, if the process has one.
    throttling: Option<Throttling>,
    /// Where each live task was spawned, by task id.
    spawn_sites: Mutex<HashMap<u64, &'static Location<'static>>>,
}

thread_local! {
    /// This thread's slot, registered with the watchdog of the runtime that first polls here.
    static SLOT: RefCell<Option<Arc<Slot>>> = const { RefCell::new(None) };
}

impl Watchdog {
    pub fn new(threshold: Duration) -> Arc<Self> {
        Arc::new(Self {
            epoch: Stamp::now(),
            threshold,
            slots: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            runtime: std::sync::OnceLock::new(),
            stalls: StallLog::default(),
            throttling: Throttling::detect(),
            spawn_sites: Mutex::default(),
        })
    }

    /// Lets the watchdog ask `runtime` which threads hold its workers right now. Without it,
    /// every long poll counts as a stall, `block_in_place` included.
    pub fn attach(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// Threads holding a worker right now (`None`: unknown, assume all do).
    fn worker_threads(&self) -> Option<Vec<std::thread::ThreadId>> {
        let metrics = self.runtime.get()?.metrics();
        Some(
            (0..metrics.num_workers())
                .filter_map(|w| metrics.worker_thread_id(w))
                .collect(),
        )
    }

    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Now on the clock stalls are stamped with ([`Stall::started_ns`]).
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Stamp::now())
    }

    fn ns_at(&self, stamp: Stamp) -> u64 {
        // +1 keeps 0 free to mean "idle"; u64 nanoseconds last 584 years.
        // The time-stamp counter, not `Instant`: this runs twice per task poll (see `clock`).
        self.epoch.nanos_until(stamp).saturating_add(1)
    }

    /// Remembers `slot`'s CPU wait so far, once per poll `seq`.
    fn sample_wait_baseline(&self, slot: &Slot, seq: u64, now: u64) {
        let Some(stat) = &slot.stat else { return };
        let Ok(mut baseline) = slot.wait_baseline.lock() else {
            return;
        };
        if baseline.is_some_and(|(sampled, _)| sampled == seq) {
            return;
        }
        *baseline = WaitSample::take(now, stat, self.throttling.as_ref()).map(|w| (seq, w));
    }

    /// Why poll `seq` of `slot` has taken so long, as of `now`: see [`super::cpu_wait`].
    /// `from_its_thread`: called by the slot's own thread (its poll just ended). Without
    /// scheduler statistics (or a baseline) it is taken for code.
    fn cause_of(
        &self,
        slot: &Slot,
        seq: u64,
        now: u64,
        from_its_thread: bool,
    ) -> (Cause, Duration) {
        let baseline = slot
            .wait_baseline
            .lock()
            .ok()
            .and_then(|b| *b)
            .filter(|(sampled, _)| *sampled == seq);
        let (Some((_, before)), Some(stat)) = (baseline, &slot.stat) else {
            return (Cause::Code, Duration::ZERO);
        };
        let runnable = if from_its_thread {
            None
        } else {
            stat.runnable()
        };
        WaitSample::take(now, stat, self.throttling.as_ref())
            .map_or((Cause::Code, Duration::ZERO), |after| {
                before.cause_until(&after, runnable)
            })
    }

    /// The stalls (of other requests or tasks) in progress at some point between `started`
    /// and `ended`, seen from a request with ids `own`: see [`StallLog::overlap`].
    pub fn exposure(&self, started: Stamp, ended: Stamp, own: SpanIds) -> Option<Exposure> {
        self.stalls
            .overlap(self.ns_at(started), self.ns_at(ended), own)
    }

    /// A request that overlapped stalls ended: it is listed beside its culprit in the live
    /// feed ([`Self::stalls`]).
    pub fn record_victim(&self, victim: &RequestContext, exposure: &Exposure) {
        self.stalls.victim(Victim {
            stall_started_ns: exposure.culprit.started_ns,
            stall_worker: exposure.culprit.worker.clone(),
            route: victim.route,
            variant: victim.variant,
            request_id: victim.request_id().to_owned(),
            delayed: exposure.overlap,
        });
    }

    /// The stalls in progress and recently ended, oldest first, each with its victims and
    /// its length so far (in progress) or in full.
    pub fn stalls(&self) -> Vec<(Stall, Duration, Vec<Victim>)> {
        let now = self.now_ns();
        self.stalls
            .listing()
            .into_iter()
            .map(|(stall, victims)| {
                let length = stall
                    .ended_ns
                    .unwrap_or(now)
                    .saturating_sub(stall.started_ns);
                (stall, Duration::from_nanos(length), victims)
            })
            .collect()
    }

    /// How long the poll running on each thread has been running (zero when idle), for the
    /// live feed's busy figures: a worker blocked in one poll reports nothing to Tokio's
    /// busy counters until the poll ends.
    pub fn running_polls(&self) -> Vec<(std::thread::ThreadId, Duration)> {
        let now = self.now_ns();
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        slots
            .iter()
            .filter_map(Weak::upgrade)
            .map(|slot| {
                let started = slot.started_ns.load(Ordering::Acquire);
                let running = if started == 0 {
                    0
                } else {
                    now.saturating_sub(started)
                };
                (slot.thread, Duration::from_nanos(running))
            })
            .collect()
    }

    fn with_slot<R>(&self, f: impl FnOnce(&Slot) -> R) -> R {
        SLOT.with(|cell| {
            let mut cell = cell.borrow_mut();
            let slot = cell.get_or_insert_with(|| {
                let slot = Arc::new(Slot {
                    worker: current_thread_name(),
                    thread: std::thread::current().id(),
                    seq: AtomicU64::new(0),
                    started_ns: AtomicU64::new(0),
                    task_id: AtomicU64::new(0),
                    request: Mutex::new(None),
                    tagged: AtomicBool::new(false),
                    reported_seq: Mutex::new(0),
                    handed_off_seq: AtomicU64::new(0),
                    stat: ThreadStat::current(),
                    wait_baseline: Mutex::new(None),
                });
                if let Ok(mut slots) = self.slots.lock() {
                    slots.push(Arc::downgrade(&slot));
                }
                slot
            });
            f(slot)
        })
    }

    /// Runtime hook: a task was spawned at `meta.spawned_at()`. Kept per task, so a report of
    /// a background task's stall can say where it came from; a spawn is far rarer than a poll,
    /// which now carries only the task id.
    pub fn task_spawned(&self, meta: &TaskMeta<'_>) {
        if let Ok(mut sites) = self.spawn_sites.lock() {
            sites.insert(task_id_u64(meta), meta.spawned_at());
        }
    }

    /// Runtime hook: the task ended.
    pub fn task_terminated(&self, meta: &TaskMeta<'_>) {
        if let Ok(mut sites) = self.spawn_sites.lock() {
            sites.remove(&task_id_u64(meta));
        }
    }

    /// `file:line` where task `task_id` was spawned, or `unknown`.
    fn spawn_site(&self, task_id: u64) -> String {
        self.spawn_sites
            .lock()
            .ok()
            .and_then(|sites| sites.get(&task_id).copied())
            .map_or_else(
                || "unknown".to_owned(),
                |location| format!("{}:{}", location.file(), location.line()),
            )
    }

    /// Runtime hook: a task poll starts on this thread.
    pub fn before_poll(self: &Arc<Self>, meta: &TaskMeta<'_>) {
        let task_id = task_id_u64(meta);
        let now = self.now_ns();
        self.with_slot(|slot| {
            // Only this thread writes `seq`: a load and a store, no locked instruction.
            let seq = slot.seq.load(Ordering::Relaxed) + 1;
            slot.seq.store(seq, Ordering::Release);
            slot.task_id.store(task_id, Ordering::Relaxed);
            slot.started_ns.store(now, Ordering::Release);
        });
    }

    /// Runtime hook: the task poll on this thread ended.
    pub fn after_poll(self: &Arc<Self>) {
        let now = self.now_ns();
        self.with_slot(|slot| {
            let started = slot.started_ns.swap(0, Ordering::AcqRel);
            let request = slot.take_request();
            if started == 0 {
                return;
            }
            let elapsed = Duration::from_nanos(now.saturating_sub(started));
            if elapsed < self.threshold {
                return;
            }
            let (route, variant) = labels(request.as_deref());
            let seq = slot.seq.load(Ordering::Acquire);
            // Under the lock a scan reports under: the poll is either reported (and in the
            // stall log) before this, or never.
            let reported = slot.reported_seq.lock();
            let was_reported = reported.as_ref().is_ok_and(|r| **r == seq);
            // block_in_place: this thread gave its worker to another thread, which ran the
            // executor meanwhile. A scan may have seen it (`handed_off_seq`); one that ended
            // between two scans is told by the runtime no longer counting this thread as a
            // worker's. Either way the executor was never blocked: not a stall.
            if !was_reported
                && (slot.handed_off_seq.load(Ordering::Acquire) == seq
                    || self
                        .worker_threads()
                        .is_some_and(|workers| !workers.contains(&slot.thread)))
            {
                return;
            }
            let (cause, cpu_wait) = self.cause_of(slot, seq, now, true);
            self.stalls.ended(poll_key(slot, seq), now, || {
                stall_of(slot, started, request.as_deref(), cause)
            });
            drop(reported);
            if was_reported {
                metrics::gauge!(STALLS_IN_PROGRESS, "route" => route, "variant" => variant)
                    .decrement(1.0);
            } else {
                // Ended between two scans: count it now so the counter stays exact.
                metrics::counter!(STALLS, "route" => route, "variant" => variant, "cause" => cause.as_str())
                    .increment(1);
            }
            metrics::histogram!(STALL_DURATION, "route" => route, "variant" => variant)
                .record(elapsed.as_secs_f64());
            tracing::info!(
                worker = %slot.worker,
                route,
                variant,
                request_id = %request.as_ref().map_or("", |r| r.request_id()),
                trace_id = %TraceIdField(request.as_ref().map(|r| r.ids.trace_id)),
                span_id = %request.as_ref().map(|r| r.ids.span_id.to_string()).unwrap_or_default(),
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                cause = cause.as_str(),
                cpu_wait_ms = cpu_wait.as_secs_f64() * 1000.0,
                "stall ended"
            );
        });
    }

    /// Route layer: the poll running on this thread belongs to `tag`.
    pub fn tag_current_poll(&self, tag: &Arc<RequestContext>) {
        self.with_slot(|slot| {
            if let Ok(mut request) = slot.request.lock() {
                *request = Some(Arc::clone(tag));
                slot.tagged.store(true, Ordering::Relaxed);
            }
        });
    }

    /// One pass over the slots: report every poll past the threshold not reported yet.
    /// Returns how many new stalls it reported.
    pub fn scan(&self) -> usize {
        let now = self.now_ns();
        let threshold_ns = u64::try_from(self.threshold.as_nanos()).unwrap_or(u64::MAX);
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(mut slots) => {
                slots.retain(|slot| slot.strong_count() > 0);
                slots.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return 0,
        };
        let workers = self.worker_threads();
        let mut reported = 0;
        for slot in slots {
            let seq = slot.seq.load(Ordering::Acquire);
            let started = slot.started_ns.load(Ordering::Acquire);
            let running_ns = now.saturating_sub(started);
            if started == 0 {
                continue;
            }
            if Duration::from_nanos(running_ns) >= SAMPLE_AFTER {
                self.sample_wait_baseline(&slot, seq, now);
            }
            if running_ns < threshold_ns {
                continue;
            }
            if workers.as_ref().is_some_and(|w| !w.contains(&slot.thread)) {
                // This thread handed its worker to another thread (`block_in_place`): the
                // executor keeps running, so this long poll stalls only its own task.
                slot.handed_off_seq.store(seq, Ordering::Release);
                continue;
            }
            let Ok(mut reported_seq) = slot.reported_seq.lock() else {
                continue;
            };
            // Re-check under the lock: the poll may have ended, or a new one begun.
            if *reported_seq == seq
                || slot.started_ns.load(Ordering::Acquire) == 0
                || slot.seq.load(Ordering::Acquire) != seq
            {
                continue;
            }
            *reported_seq = seq;
            let request = slot.request.lock().ok().and_then(|r| r.clone());
            let (route, variant) = labels(request.as_deref());
            let (cause, cpu_wait) = self.cause_of(&slot, seq, now, false);
            metrics::counter!(STALLS, "route" => route, "variant" => variant, "cause" => cause.as_str())
                .increment(1);
            metrics::gauge!(STALLS_IN_PROGRESS, "route" => route, "variant" => variant)
                .increment(1.0);
            self.stalls.began(
                poll_key(&slot, seq),
                stall_of(&slot, started, request.as_deref(), cause),
            );
            drop(reported_seq);
            let elapsed = Duration::from_nanos(running_ns);
            let report = StallReport {
                worker: slot.worker.clone(),
                elapsed,
                cause,
                cpu_wait,
            };
            // Said in the message too: a host delay must not read like a handler's bug.
            let why = match cause {
                Cause::Code => String::new(),
                Cause::Host => format!(
                    " (cause: host: the worker thread waited {} ms of it for a CPU)",
                    cpu_wait.as_millis()
                ),
            };
            match &request {
                Some(tag) => {
                    tracing::warn!(
                        worker = %report.worker,
                        route,
                        variant,
                        request_id = %tag.request_id(),
                        trace_id = %tag.ids.trace_id,
                        span_id = %tag.ids.span_id,
                        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                        cause = cause.as_str(),
                        cpu_wait_ms = cpu_wait.as_secs_f64() * 1000.0,
                        "executor stall: a poll of {route} ({variant}) has held worker {} for {} ms and is still running{why}",
                        report.worker,
                        elapsed.as_millis()
                    );
                    if let Some(on_stall) = &tag.on_stall {
                        on_stall(&report);
                    }
                }
                None => {
                    let spawned_at = self.spawn_site(slot.task_id.load(Ordering::Relaxed));
                    tracing::warn!(
                        worker = %report.worker,
                        task_id = slot.task_id.load(Ordering::Relaxed),
                        spawned_at = %spawned_at,
                        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                        cause = cause.as_str(),
                        cpu_wait_ms = cpu_wait.as_secs_f64() * 1000.0,
                        "executor stall: task {} spawned at {spawned_at} has held worker {} for {} ms and is still running{why}",
                        slot.task_id.load(Ordering::Relaxed),
                        report.worker,
                        elapsed.as_millis()
                    );
                }
            }
            reported += 1;
        }
        reported
    }

    /// Starts the scanning thread; it stops when [`Watchdog::stop`] is called or the
    /// watchdog is dropped.
    pub fn spawn_scanner(self: &Arc<Self>, interval: Duration) -> std::io::Result<()> {
        let watchdog = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("stall-watchdog".into())
            .spawn(move || {
                // Deadline-paced, so time spent scanning does not stretch the interval.
                let mut next = Instant::now();
                loop {
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                    let Some(watchdog) = watchdog.upgrade() else {
                        return;
                    };
                    if watchdog.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    watchdog.scan();
                }
            })?;
        Ok(())
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// A trace id for log fields: hex, or empty when the request has none.
struct TraceIdField(Option<opentelemetry::trace::TraceId>);

impl std::fmt::Display for TraceIdField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(trace_id) => write!(f, "{trace_id}"),
            None => Ok(()),
        }
    }
}

/// The stall log's record of a poll of `slot` that began at `started`, still in progress.
fn stall_of(slot: &Slot, started: u64, request: Option<&RequestContext>, cause: Cause) -> Stall {
    let (route, variant) = labels(request);
    Stall {
        started_ns: started,
        ended_ns: None,
        worker: slot.worker.clone(),
        route,
        variant,
        culprit: request.map(|r| r.ids),
        request_id: request.map(|r| r.request_id().to_owned()),
        cause,
    }
}

/// A poll's identity in the stall log: its worker slot (by address) and its sequence number.
fn poll_key(slot: &Slot, seq: u64) -> PollKey {
    (std::ptr::from_ref(slot) as usize, seq)
}

fn labels(request: Option<&RequestContext>) -> (&'static str, &'static str) {
    request.map_or((NON_REQUEST_ROUTE, NON_REQUEST_VARIANT), |tag| {
        (tag.route, tag.variant)
    })
}

/// Tokio exposes a task id only as `Display`/`Hash`; hashing it through this hasher yields
/// the id's `u64` without allocating on every poll.
fn task_id_u64(meta: &TaskMeta<'_>) -> u64 {
    id_u64(meta.id())
}

fn id_u64(id: tokio::task::Id) -> u64 {
    struct Capture(u64);
    impl Hasher for Capture {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 << 8) | u64::from(b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
    let mut capture = Capture(0);
    id.hash(&mut capture);
    capture.finish()
}

/// The name of the thread running right now (`"unnamed"` for anonymous threads).
pub fn current_thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

impl Watchdog {
    /// Installs the task-poll hooks that tell this watchdog which task each worker is
    /// polling. Needs `--cfg tokio_unstable`.
    pub fn install_hooks(self: &Arc<Self>, builder: &mut tokio::runtime::Builder) {
        let (before, after) = (Arc::clone(self), Arc::clone(self));
        let (spawned, terminated) = (Arc::clone(self), Arc::clone(self));
        builder
            .on_task_spawn(move |meta| spawned.task_spawned(meta))
            .on_task_terminate(move |meta| terminated.task_terminated(meta))
            .on_before_task_poll(move |meta| before.before_poll(meta))
            .on_after_task_poll(move |_| after.after_poll());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_spawn_site_is_known_while_it_lives() {
        let watchdog = Watchdog::new(Duration::from_millis(40));
        let mut builder = tokio::runtime::Builder::new_current_thread();
        watchdog.install_hooks(&mut builder);
        let runtime = builder.build().expect("runtime");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let line = line!() + 1;
        let task = runtime.spawn(async move { released.await.ok() });
        let id = id_u64(task.id());
        assert_eq!(watchdog.spawn_site(id), format!("{}:{line}", file!()));
        release.send(()).expect("the task waits");
        runtime.block_on(task).expect("the task ends");
        drop(runtime);
        assert_eq!(watchdog.spawn_site(id), "unknown", "forgotten when it ends");
    }
}
