//! The JSON every lesson endpoint answers with.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::runtime::current_thread_name;

/// What one request did, where, and what it teaches.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkReport {
    /// The kind of work (the lesson's first path segment): `sleep`, `cpu`, `upstream` or `db`.
    pub work: &'static str,
    /// Variant name, e.g. `blocking`.
    pub variant: &'static str,
    /// The work asked for, e.g. `{"ms": 300}` or `{"iterations": 100000}`.
    #[schema(value_type = Object)]
    pub requested: Value,
    /// Wall time spent inside the handler, in milliseconds.
    pub elapsed_ms: f64,
    /// Thread that first polled the handler: always a runtime worker.
    pub handler_thread: String,
    /// Thread that did the work: a runtime worker, a blocking-pool thread or a rayon thread.
    pub work_thread: String,
    /// What the work produced (the CPU lesson's digest, the upstream's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// One line: what this variant shows.
    pub lesson: &'static str,
}

/// A report whose clock is running; [`PendingReport::finish`] stops it.
pub struct PendingReport {
    work: &'static str,
    variant: &'static str,
    lesson: &'static str,
    requested: Value,
    started: Instant,
    handler_thread: String,
}

impl WorkReport {
    /// Starts the clock for one request and notes the worker thread polling the handler.
    pub fn begin(
        work: &'static str,
        variant: &'static str,
        lesson: &'static str,
        requested: Value,
    ) -> PendingReport {
        PendingReport {
            work,
            variant,
            lesson,
            requested,
            started: Instant::now(),
            handler_thread: current_thread_name(),
        }
    }
}

impl PendingReport {
    pub fn finish(self, done: WorkDone) -> WorkReport {
        WorkReport {
            work: self.work,
            variant: self.variant,
            requested: self.requested,
            elapsed_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            handler_thread: self.handler_thread,
            work_thread: done.thread,
            output: done.output,
            lesson: self.lesson,
        }
    }
}

/// What a variant's work hands back: where it ran and what it produced.
#[derive(Debug)]
pub struct WorkDone {
    pub thread: String,
    pub output: Option<Value>,
}

impl WorkDone {
    /// Work that produced nothing but time; records the current thread.
    pub fn here() -> Self {
        Self {
            thread: current_thread_name(),
            output: None,
        }
    }

    /// Work that produced `output`; records the current thread.
    pub fn here_with(output: Value) -> Self {
        Self {
            thread: current_thread_name(),
            output: Some(output),
        }
    }
}
