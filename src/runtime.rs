//! The hand-built Tokio runtime.
//!
//! `#[tokio::main]` hides the knobs this project is about: how many workers there are (one
//! worker is a single event loop, like uvicorn's), how big the blocking pool may grow, and
//! the poll-time histogram that shows how long each task poll held a worker.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::{Builder, HistogramConfiguration, LogHistogram, Runtime};

use crate::config::RuntimeArgs;
use crate::telemetry::watchdog::Watchdog;

/// Prefix of every thread the service runtime starts: workers and blocking-pool threads share
/// it (Tokio starts workers through the same spawner), so `thread` fields in responses and logs
/// read `stallscope-rt-N`.
pub const THREAD_PREFIX: &str = "stallscope-rt";

/// Builds the multi-threaded runtime the service runs on, with the stall watchdog's
/// task-poll hooks installed when there is a watchdog.
///
/// It is always the multi-thread flavour, even with one worker: `block_in_place` only works
/// there, and the lessons compare it with the other fixes on equal terms.
pub fn build(args: &RuntimeArgs, watchdog: Option<&Arc<Watchdog>>) -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(args.worker_threads())
        .max_blocking_threads(usize::from(args.max_blocking_threads))
        .thread_name_fn(|| {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            format!("{THREAD_PREFIX}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
        })
        .enable_all()
        .enable_metrics_poll_time_histogram()
        .metrics_poll_time_histogram_configuration(poll_histogram(args));
    if let Some(watchdog) = watchdog {
        watchdog.install_hooks(&mut builder);
    }
    builder.build()
}

/// Power-of-two buckets from `--poll-histogram-min-us` to `--poll-histogram-max-ms`: about
/// twenty buckets, few enough to export, fine enough to tell 1 ms from 100 ms.
fn poll_histogram(args: &RuntimeArgs) -> HistogramConfiguration {
    let min = Duration::from_micros(args.poll_histogram_min_us.max(1));
    let max = Duration::from_millis(args.poll_histogram_max_ms.max(1)).max(min * 2);
    HistogramConfiguration::log(
        LogHistogram::builder()
            .precision_exact(0)
            .min_value(min)
            .max_value(max),
    )
}

pub use crate::telemetry::watchdog::current_thread_name;
