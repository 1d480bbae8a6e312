//! Per-request poll statistics: how often a request's future was polled, its longest single
//! poll, its total busy time, and how long it waited in a run queue after being woken.
//!
//! They end up as attributes on the request's server span, so a trace UI can answer
//! "which requests had a poll longer than 100 ms?" (`stallscope.poll.longest_ms > 100`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub polls: u64,
    pub longest: Duration,
    pub busy: Duration,
    /// Time between a wake-up and the poll it caused, summed.
    pub scheduled_wait: Duration,
}

/// Wraps a future, timing each poll and each wake-to-poll delay.
pub struct Measured<F> {
    inner: Pin<Box<F>>,
    clock: Arc<WakeClock>,
    waker: Waker,
    stats: Arc<Mutex<PollStats>>,
}

impl<F: Future> Measured<F> {
    /// `stats` is updated as the future runs; read it once the future is done.
    pub fn new(inner: F, stats: Arc<Mutex<PollStats>>) -> Self {
        let clock = Arc::new(WakeClock {
            woken_at_ns: AtomicU64::new(0),
            inner: Mutex::new(None),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&clock)),
            clock,
            stats,
        }
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let woken = self.clock.woken_at_ns.swap(0, Ordering::AcqRel);
        self.clock.register(cx.waker());
        let waker = self.waker.clone();
        let result = self.inner.as_mut().poll(&mut Context::from_waker(&waker));
        let took = started.elapsed();
        if let Ok(mut stats) = self.stats.lock() {
            stats.polls += 1;
            stats.busy += took;
            stats.longest = stats.longest.max(took);
            if woken != 0 {
                stats.scheduled_wait +=
                    Duration::from_nanos(nanos_since_epoch(started).saturating_sub(woken));
            }
        }
        result
    }
}

/// The waker handed to the inner future: notes when it was woken, then wakes the real one.
struct WakeClock {
    woken_at_ns: AtomicU64,
    inner: Mutex<Option<Waker>>,
}

impl WakeClock {
    fn register(&self, waker: &Waker) {
        if let Ok(mut inner) = self.inner.lock() {
            match inner.as_ref() {
                Some(current) if current.will_wake(waker) => {}
                _ => *inner = Some(waker.clone()),
            }
        }
    }
}

impl Wake for WakeClock {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Keep the first wake-up since the last poll: that is when the wait began.
        let now = nanos_since_epoch(Instant::now()).max(1);
        let _ = self
            .woken_at_ns
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
        if let Ok(inner) = self.inner.lock()
            && let Some(waker) = inner.as_ref()
        {
            waker.wake_by_ref();
        }
    }
}

fn nanos_since_epoch(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_polls_and_finds_the_longest() {
        let stats = Arc::new(Mutex::new(PollStats::default()));
        Measured::new(
            async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                std::thread::sleep(Duration::from_millis(30));
                tokio::task::yield_now().await;
            },
            Arc::clone(&stats),
        )
        .await;
        let stats = *stats.lock().expect("stats");
        assert_eq!(stats.polls, 3, "{stats:?}");
        assert!(stats.longest >= Duration::from_millis(30), "{stats:?}");
        assert!(stats.longest < Duration::from_millis(200), "{stats:?}");
        assert!(stats.busy >= stats.longest);
    }
}
