//! Synchronous code on Tokio's blocking pool, observed.
//!
//! Call [`run_blocking`] instead of bare `tokio::task::spawn_blocking`, naming the call site. That is what makes blocking-pool
//! saturation visible: per call site, how long jobs queued for a thread (above zero only when
//! the pool is at `--max-blocking-threads`), how long they ran, and how many are in flight.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        call_site_waited(call_site, waited);
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
        with_call_site(call_site, |site| site.in_flight += 1);
        Self(call_site)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(BLOCKING_IN_FLIGHT, "call_site" => self.0).decrement(1.0);
        with_call_site(self.0, |site| {
            site.in_flight = site.in_flight.saturating_sub(1)
        });
    }
}

/// A call site's figures for the live feed: what `/metrics` has as histograms, as the
/// current values a page shows (the recorder's histograms cannot be read back).
#[derive(Debug, Clone, PartialEq)]
pub struct CallSiteFigures {
    pub call_site: &'static str,
    /// Jobs submitted and not finished (queued or running).
    pub in_flight: u64,
    /// The longest queue wait of a job that started in the last [`WAIT_WINDOW`].
    pub recent_max_wait: Duration,
    window_started: Option<Instant>,
}

/// How far back [`CallSiteFigures::recent_max_wait`] looks.
pub const WAIT_WINDOW: Duration = Duration::from_secs(10);

/// Every call site seen, in order of first use. A blocking job already costs a thread
/// hand-over; one uncontended lock beside it is noise.
static CALL_SITES: Mutex<Vec<CallSiteFigures>> = Mutex::new(Vec::new());

fn with_call_site(call_site: &'static str, update: impl FnOnce(&mut CallSiteFigures)) {
    let Ok(mut sites) = CALL_SITES.lock() else {
        return;
    };
    let index = match sites.iter().position(|s| s.call_site == call_site) {
        Some(index) => index,
        None => {
            sites.push(CallSiteFigures {
                call_site,
                in_flight: 0,
                recent_max_wait: Duration::ZERO,
                window_started: None,
            });
            sites.len() - 1
        }
    };
    update(&mut sites[index]);
}

fn call_site_waited(call_site: &'static str, waited: Duration) {
    with_call_site(call_site, |site| {
        let now = Instant::now();
        match site.window_started {
            Some(started) if now.duration_since(started) < WAIT_WINDOW => {
                site.recent_max_wait = site.recent_max_wait.max(waited);
            }
            _ => {
                site.window_started = Some(now);
                site.recent_max_wait = waited;
            }
        }
    });
}

/// Every call site's figures now.
pub fn call_sites() -> Vec<CallSiteFigures> {
    let Ok(sites) = CALL_SITES.lock() else {
        return Vec::new();
    };
    sites
        .iter()
        .map(|site| {
            let mut site = site.clone();
            if site
                .window_started
                .is_none_or(|started| started.elapsed() >= WAIT_WINDOW * 2)
            {
                site.recent_max_wait = Duration::ZERO;
            }
            site
        })
        .collect()
}
