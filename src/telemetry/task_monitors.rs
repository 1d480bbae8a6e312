//! One tokio-metrics `TaskMonitor` per `(route template, variant)`.
//!
//! Keys come from route templates and the lesson's own variant names (anything else is
//! `invalid`), never from raw paths, so the number of monitors — and of label values — is
//! bounded by the code, whatever clients send.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio_metrics::TaskMonitor;

use super::exposition::TaskFigures;

pub struct TaskMonitors {
    slow_poll_threshold: Duration,
    /// Written once per new key, read on every request: a read lock does not serialise
    /// the workers.
    monitors: RwLock<BTreeMap<(&'static str, &'static str), TaskMonitor>>,
}

impl TaskMonitors {
    pub fn new(slow_poll_threshold: Duration) -> Self {
        Self {
            slow_poll_threshold,
            monitors: RwLock::new(BTreeMap::new()),
        }
    }

    /// The monitor for `(route, variant)`, created on first use. `TaskMonitor` is a handle:
    /// clones share their counters.
    pub fn get(&self, route: &'static str, variant: &'static str) -> TaskMonitor {
        if let Some(monitor) = self
            .monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(route, variant))
        {
            return monitor.clone();
        }
        let mut monitors = self
            .monitors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        monitors
            .entry((route, variant))
            .or_insert_with(|| {
                let mut builder = TaskMonitor::builder();
                builder.with_slow_poll_threshold(self.slow_poll_threshold);
                builder.build()
            })
            .clone()
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
