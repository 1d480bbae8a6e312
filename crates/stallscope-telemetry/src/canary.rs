//! The executor-lag canary: a task that asks to wake every 10 ms and records how late it
//! actually ran.
//!
//! A healthy runtime wakes it within a millisecond (the timer's resolution). When a poll
//! hogs the worker the canary is queued on, the canary runs only after that poll returns,
//! and the lateness is the time any ready task would have waited. It is the Rust
//! counterpart of Go's `/sched/latencies`, Node's `monitorEventLoopDelay` and asyncio's
//! slow-callback warning.
//!
//! A stall swallows the ticks it delays: one tick late by a second stands for the hundred
//! that never fired. Recording that one sample alone would make a one-second stall one
//! sample among thousands a minute, invisible in any percentile (coordinated omission). So
//! each late tick also records the lateness every missed tick would have had (L − I,
//! L − 2I, … while > 0), as HdrHistogram's `recordValueWithExpectedInterval` does, and the
//! largest lateness since the last scrape is kept for a gauge: one stall shows at any scrape
//! interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::metric_names::EXECUTOR_LAG;

/// At most this many samples for one late tick (100 s of missed 10 ms ticks): a stall of an
/// hour should not take the canary seconds to account for.
const MAX_SAMPLES_PER_TICK: usize = 10_000;

/// The largest lateness the canary has seen since it was last read (`take`).
#[derive(Debug, Default)]
pub struct LagMax(AtomicU64);

impl LagMax {
    fn observe(&self, late: Duration) {
        let nanos = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_max(nanos, Ordering::Relaxed);
    }

    /// The largest lateness since the previous `take`, and starts over.
    pub fn take(&self) -> Duration {
        Duration::from_nanos(self.0.swap(0, Ordering::Relaxed))
    }
}

/// When the canary last ran and how late, for the live feed, which must show the lag growing
/// *during* a stall: the canary cannot say anything until the stall ends, but how long it
/// has been overdue can be read from any thread.
#[derive(Debug)]
pub struct Heartbeat {
    origin: std::time::Instant,
    interval: Duration,
    /// Nanoseconds after `origin` at which the canary last ran.
    last_ran_ns: AtomicU64,
    last_late_ns: AtomicU64,
}

impl Heartbeat {
    pub fn new(interval: Duration) -> Self {
        Self {
            origin: std::time::Instant::now(),
            interval,
            last_ran_ns: AtomicU64::new(0),
            last_late_ns: AtomicU64::new(0),
        }
    }

    fn beat(&self, late: Duration) {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ran_ns.store(now, Ordering::Relaxed);
        let late = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.last_late_ns.store(late, Ordering::Relaxed);
    }

    /// The executor's lag as of now: how late the canary last ran, or how overdue it is if
    /// that is more (a stall in progress). Zero before the canary first runs.
    pub fn lag_now(&self) -> Duration {
        let last_ran = self.last_ran_ns.load(Ordering::Relaxed);
        if last_ran == 0 {
            return Duration::ZERO;
        }
        let due = Duration::from_nanos(last_ran) + self.interval;
        let overdue = self.origin.elapsed().saturating_sub(due);
        overdue.max(Duration::from_nanos(
            self.last_late_ns.load(Ordering::Relaxed),
        ))
    }
}

/// Spawns the canary on the current runtime, as a named task (visible in tokio-console).
pub fn spawn(
    interval: Duration,
    max: Arc<LagMax>,
    heartbeat: Arc<Heartbeat>,
) -> std::io::Result<()> {
    tokio::task::Builder::new()
        .name("executor-lag-canary")
        .spawn(run(interval, max, heartbeat))?;
    Ok(())
}

async fn run(interval: Duration, max: Arc<LagMax>, heartbeat: Arc<Heartbeat>) {
    let lag = metrics::histogram!(EXECUTOR_LAG);
    loop {
        let due = Instant::now() + interval;
        tokio::time::sleep_until(due).await;
        let late = Instant::now().saturating_duration_since(due);
        max.observe(late);
        heartbeat.beat(late);
        for sample in lateness_samples(late, interval) {
            lag.record(sample.as_secs_f64());
        }
    }
}

/// The samples one tick late by `late` stands for: its own lateness, then that of each tick
/// that should have fired while it waited (`late − interval`, `late − 2 × interval`, …, all
/// above zero).
pub fn lateness_samples(late: Duration, interval: Duration) -> impl Iterator<Item = Duration> {
    let missed =
        std::iter::successors(late.checked_sub(interval), move |l| l.checked_sub(interval))
            .take_while(move |l| !l.is_zero() && !interval.is_zero());
    std::iter::once(late)
        .chain(missed)
        .take(MAX_SAMPLES_PER_TICK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn an_on_time_tick_is_one_sample() {
        let samples: Vec<_> = lateness_samples(Duration::from_micros(300), TICK).collect();
        assert_eq!(samples, [Duration::from_micros(300)]);
        assert_eq!(lateness_samples(Duration::ZERO, TICK).count(), 1);
    }

    #[test]
    fn a_late_tick_stands_for_the_ticks_it_swallowed() {
        let samples: Vec<_> = lateness_samples(Duration::from_millis(35), TICK).collect();
        let ms: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [35, 25, 15, 5]);
        // One second on a 10 ms tick: about a hundred samples, most of them long.
        let second: Vec<_> = lateness_samples(Duration::from_secs(1), TICK).collect();
        assert_eq!(second.len(), 100);
        assert_eq!(second.iter().filter(|l| l.as_secs_f64() >= 0.1).count(), 91);
    }

    #[test]
    fn samples_are_bounded_and_a_zero_interval_adds_none() {
        assert_eq!(
            lateness_samples(Duration::from_secs(3_600), TICK).count(),
            MAX_SAMPLES_PER_TICK
        );
        assert_eq!(
            lateness_samples(Duration::from_secs(1), Duration::ZERO).count(),
            1
        );
    }

    #[test]
    fn the_heartbeat_shows_a_stall_while_it_lasts() {
        let heartbeat = Heartbeat::new(TICK);
        assert_eq!(heartbeat.lag_now(), Duration::ZERO, "not run yet");
        heartbeat.beat(Duration::from_micros(200));
        assert!(heartbeat.lag_now() < Duration::from_millis(5));
        // Nobody runs the canary for 60 ms: it is overdue by about 50.
        std::thread::sleep(Duration::from_millis(60));
        let lag = heartbeat.lag_now();
        assert!(lag >= Duration::from_millis(45), "{lag:?}");
    }

    #[test]
    fn the_max_is_the_largest_since_the_last_take() {
        let max = LagMax::default();
        max.observe(Duration::from_millis(3));
        max.observe(Duration::from_millis(900));
        max.observe(Duration::from_millis(4));
        assert_eq!(max.take(), Duration::from_millis(900));
        assert_eq!(max.take(), Duration::ZERO);
    }
}
