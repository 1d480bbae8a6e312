//! Synchronous code on Tokio's blocking pool, observed.
//!
//! Call [`run_blocking`] instead of bare `tokio::task::spawn_blocking`, naming the call site. That is what makes blocking-pool
//! saturation visible: per call site, how long jobs queued for a thread (above zero only when
//! the pool is at `--max-blocking-threads`), how long they ran, and how many are in flight.

use std::time::Instant;

use tokio::task::JoinError;

use crate::metric_names::{BLOCKING_IN_FLIGHT, BLOCKING_QUEUE_WAIT, BLOCKING_RUN};
use crate::request_context;

/// Runs `work` on the blocking pool and waits for it without holding a worker.
///
/// `call_site` names the caller (e.g. `"sleep/spawn-blocking"`); it is a metric label, so it
/// must be a literal. A panic inside `work` comes back as the [`JoinError`], never a crashed
/// worker.
pub async fn run_blocking<T, F>(call_site: &'static str, work: F) -> Result<T, JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let submitted = Instant::now();
    let in_flight = InFlight::enter(call_site);
    // Created here, in the request's context, so the job's span is the request's child.
    let span = tracing::info_span!(
        "blocking",
        otel.name = %format!("blocking {call_site}"),
        stallscope.call_site = call_site,
        stallscope.blocking.queue_wait_ms = tracing::field::Empty,
        stallscope.blocking.run_ms = tracing::field::Empty,
    );
    // The blocking thread knows nothing of the request: carry it over.
    tokio::task::spawn_blocking(request_context::carried(move || {
        // Moved in here so the gauge drops when the job ends, even if the awaiting request
        // was cancelled long before.
        let _in_flight = in_flight;
        let _entered = span.enter();
        let waited = submitted.elapsed();
        metrics::histogram!(BLOCKING_QUEUE_WAIT, "call_site" => call_site)
            .record(waited.as_secs_f64());
        span.record(
            "stallscope.blocking.queue_wait_ms",
            waited.as_secs_f64() * 1000.0,
        );
        let started = Instant::now();
        let output = work();
        let ran = started.elapsed();
        metrics::histogram!(BLOCKING_RUN, "call_site" => call_site).record(ran.as_secs_f64());
        span.record("stallscope.blocking.run_ms", ran.as_secs_f64() * 1000.0);
        output
    }))
    .await
}

/// Counts a job in `stallscope_blocking_in_flight` from submission until it is dropped.
struct InFlight(&'static str);

impl InFlight {
    fn enter(call_site: &'static str) -> Self {
        metrics::gauge!(BLOCKING_IN_FLIGHT, "call_site" => call_site).increment(1.0);
        Self(call_site)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(BLOCKING_IN_FLIGHT, "call_site" => self.0).decrement(1.0);
    }
}
