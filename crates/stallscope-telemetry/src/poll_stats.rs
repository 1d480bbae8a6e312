//! Per-request poll statistics: how often a request's future was polled, its longest single
//! poll that held a worker, its total busy time, the time spent in polls that handed their
//! worker off (`block_in_place`), and how long it waited in a run queue after being woken.
//!
//! They end up as attributes on the request's server span, so a trace UI can answer
//! "which requests held a worker for more than 100 ms?" (`stallscope.poll.longest_ms > 100`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub polls: u64,
    /// The longest poll that held its worker throughout.
    pub longest: Duration,
    pub busy: Duration,
    /// Time in polls whose thread gave its worker to another thread (`block_in_place`): long,
    /// but the executor kept running.
    pub handed_off: Duration,
    /// Time between a wake-up and the poll it caused, summed.
    pub scheduled_wait: Duration,
}

pin_project_lite::pin_project! {
    /// Wraps a future, timing each poll and each wake-to-poll delay; resolves to the inner
    /// output and the statistics. The statistics live in the wrapper itself (only the poll
    /// that owns it writes them), so measuring costs no lock.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        // `None`: not measuring (nothing will read the statistics).
        clock: Option<(Arc<WakeClock>, Waker)>,
        stats: PollStats,
    }
}

impl<F: Future> Measured<F> {
    /// Measures `inner` when `measure` is set; otherwise polls it untouched (no clock reads,
    /// no wrapped waker) and resolves to empty statistics.
    pub fn new(inner: F, measure: bool) -> Self {
        let clock = measure.then(|| {
            let clock = Arc::new(WakeClock {
                woken_at_ns: AtomicU64::new(0),
                inner: AtomicWaker::new(),
            });
            let waker = Waker::from(Arc::clone(&clock));
            (clock, waker)
        });
        Self {
            inner,
            clock,
            stats: PollStats::default(),
        }
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = (F::Output, PollStats);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some((clock, waker)) = this.clock else {
            return this.inner.poll(cx).map(|output| (output, *this.stats));
        };
        let started = Instant::now();
        let woken = clock.woken_at_ns.swap(0, Ordering::AcqRel);
        clock.inner.register(cx.waker());
        let result = this.inner.poll(&mut Context::from_waker(waker));
        let took = started.elapsed();
        let stats = this.stats;
        stats.polls += 1;
        stats.busy += took;
        if took >= HANDOFF_CHECK_AFTER && !holds_a_worker() {
            stats.handed_off += took;
        } else {
            stats.longest = stats.longest.max(took);
        }
        if woken != 0 {
            stats.scheduled_wait +=
                Duration::from_nanos(nanos_since_epoch(started).saturating_sub(woken));
        }
        result.map(|output| (output, *stats))
    }
}

/// Polls shorter than this are not asked whether they handed their worker off: a healthy
/// poll takes microseconds, and the question costs a look at every worker.
const HANDOFF_CHECK_AFTER: Duration = Duration::from_millis(1);

/// Whether this thread holds one of its runtime's workers now. After `block_in_place` it does
/// not until its poll returns: the worker went on on another thread.
fn holds_a_worker() -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return true;
    };
    let metrics = runtime.metrics();
    let this = std::thread::current().id();
    match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => {
            (0..metrics.num_workers()).any(|w| metrics.worker_thread_id(w) == Some(this))
        }
        _ => true,
    }
}

/// The waker handed to the inner future: notes when it was woken, then wakes the real one.
struct WakeClock {
    woken_at_ns: AtomicU64,
    inner: AtomicWaker,
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
        self.inner.wake();
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
        let work = || async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            std::thread::sleep(Duration::from_millis(30));
            tokio::task::yield_now().await;
        };
        let ((), unmeasured) = Measured::new(work(), false).await;
        assert_eq!(unmeasured.polls, 0, "not measured: {unmeasured:?}");
        let ((), stats) = Measured::new(work(), true).await;
        assert_eq!(stats.polls, 3, "{stats:?}");
        assert!(stats.longest >= Duration::from_millis(30), "{stats:?}");
        assert!(stats.longest < Duration::from_millis(200), "{stats:?}");
        assert!(stats.busy >= stats.longest);
        assert_eq!(stats.handed_off, Duration::ZERO, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_poll_that_handed_its_worker_off_is_not_the_longest() {
        let work = async {
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(40)));
            tokio::task::yield_now().await;
        };
        let ((), stats) = Measured::new(work, true).await;
        assert!(stats.handed_off >= Duration::from_millis(40), "{stats:?}");
        assert!(stats.longest < Duration::from_millis(20), "{stats:?}");
    }
}
