//! One tokio-metrics task monitor per `(route template, variant)`.
//!
//! Keys come from route templates and the lesson's own variant names (anything else is
//! `invalid`), never from raw paths, so the number of monitors — and of label values — is
//! bounded by the code, whatever clients send.
//!
//! A tokio-metrics monitor updates half a dozen counters per request future, so each
//! variant's monitor is split into per-thread shards (see [`super::shards`]), summed when
//! `/metrics` is scraped: exactly what a single monitor would have counted.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio_metrics::{Instrumented, TaskMetrics, TaskMonitorCore};

use super::shards::{Padded, SHARDS, this_threads_shard};

/// Cumulative tokio-metrics task figures for one `(route, variant)` monitor.
pub struct TaskFigures<'a> {
    pub route: &'a str,
    pub variant: &'a str,
    pub metrics: tokio_metrics::TaskMetrics,
}

pub struct TaskMonitors {
    slow_poll_threshold: Duration,
    /// Written once per new key, read when a new label set first appears and at scrapes.
    /// Monitors are leaked: there are as many as the code has lesson variants, and a
    /// `&'static` lets each request future hold one without a shared reference count.
    monitors: RwLock<BTreeMap<(&'static str, &'static str), &'static VariantMonitor>>,
}

/// The task monitor of one `(route, variant)`: tokio-metrics monitors, one per shard.
pub struct VariantMonitor {
    shards: [Padded<TaskMonitorCore>; SHARDS],
}

impl VariantMonitor {
    fn new(slow_poll_threshold: Duration) -> Self {
        Self {
            shards: std::array::from_fn(|_| {
                Padded(TaskMonitorCore::with_slow_poll_threshold(
                    slow_poll_threshold,
                ))
            }),
        }
    }

    /// `future`, monitored by this thread's shard.
    pub fn instrument<F>(&'static self, future: F) -> Instrumented<F, &'static TaskMonitorCore> {
        self.shards[this_threads_shard()].0.instrument(future)
    }

    /// What the shards counted since they were made, summed.
    pub fn cumulative(&self) -> TaskMetrics {
        self.shards
            .iter()
            .map(|shard| shard.0.cumulative())
            .fold(TaskMetrics::default(), |total, shard| sum(&total, &shard))
    }
}

/// Two monitors' cumulative figures as one monitor would have counted them: every figure is
/// a sum, but for the longest idle.
fn sum(a: &TaskMetrics, b: &TaskMetrics) -> TaskMetrics {
    let mut total = *a;
    macro_rules! add {
        ($($figure:ident),* $(,)?) => { $(total.$figure += b.$figure;)* };
    }
    add!(
        instrumented_count,
        dropped_count,
        first_poll_count,
        total_first_poll_delay,
        total_idled_count,
        total_idle_duration,
        total_scheduled_count,
        total_scheduled_duration,
        total_poll_count,
        total_poll_duration,
        total_fast_poll_count,
        total_fast_poll_duration,
        total_slow_poll_count,
        total_slow_poll_duration,
        total_short_delay_count,
        total_short_delay_duration,
        total_long_delay_count,
        total_long_delay_duration,
    );
    total.max_idle_duration = total.max_idle_duration.max(b.max_idle_duration);
    total
}

impl TaskMonitors {
    pub fn new(slow_poll_threshold: Duration) -> Self {
        Self {
            slow_poll_threshold,
            monitors: RwLock::new(BTreeMap::new()),
        }
    }

    /// The monitor for `(route, variant)`, created on first use.
    pub fn get(&self, route: &'static str, variant: &'static str) -> &'static VariantMonitor {
        if let Some(&monitor) = self
            .monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(route, variant))
        {
            return monitor;
        }
        let mut monitors = self
            .monitors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        monitors
            .entry((route, variant))
            .or_insert_with(|| Box::leak(Box::new(VariantMonitor::new(self.slow_poll_threshold))))
    }

    /// Cumulative figures of every monitor, in key order.
    pub fn snapshot(&self) -> Vec<TaskFigures<'static>> {
        let monitors = self
            .monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        monitors
            .iter()
            .map(|(&(route, variant), monitor)| TaskFigures {
                route,
                variant,
                metrics: monitor.cumulative(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::tests::shards_taken_by;

    /// Futures instrumented on several threads land in several shards; the sum is what one
    /// monitor would have counted, slow polls included.
    #[test]
    fn shards_sum_to_what_one_monitor_counts() {
        let threshold = Duration::from_millis(5);
        let monitors = TaskMonitors::new(threshold);
        let monitor = monitors.get("/sleep/{variant}", "blocking");
        let reference: &'static TaskMonitorCore = Box::leak(Box::new(
            TaskMonitorCore::with_slow_poll_threshold(threshold),
        ));
        let shards = shards_taken_by(SHARDS + 1, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let work = || async {
                    std::thread::sleep(Duration::from_millis(10)); // one slow poll
                    tokio::task::yield_now().await; // then a fast one
                };
                monitor.instrument(work()).await;
                reference.instrument(work()).await;
            });
        });
        assert!(
            shards.len() > 1,
            "threads take different shards: {shards:?}"
        );
        let (total, one) = (monitor.cumulative(), reference.cumulative());
        assert_eq!(total.instrumented_count, (SHARDS + 1) as u64);
        assert_eq!(total.instrumented_count, one.instrumented_count);
        assert_eq!(total.dropped_count, one.dropped_count);
        assert_eq!(total.first_poll_count, one.first_poll_count);
        assert_eq!(total.total_poll_count, one.total_poll_count);
        assert_eq!(total.total_slow_poll_count, one.total_slow_poll_count);
        assert_eq!(total.total_slow_poll_count, (SHARDS + 1) as u64);
        assert_eq!(total.total_scheduled_count, one.total_scheduled_count);
        assert!(total.total_slow_poll_duration >= threshold * (SHARDS as u32 + 1));
    }

    #[test]
    fn one_monitor_per_route_and_variant() {
        let monitors = TaskMonitors::new(Duration::from_millis(1));
        let a = monitors.get("/cpu/{variant}", "rayon");
        assert!(std::ptr::eq(a, monitors.get("/cpu/{variant}", "rayon")));
        assert!(!std::ptr::eq(a, monitors.get("/cpu/{variant}", "inline")));
        assert_eq!(monitors.snapshot().len(), 2);
    }
}
