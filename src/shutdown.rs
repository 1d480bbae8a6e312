//! Stopping on time, whatever the runtime is doing.
//!
//! The lessons stall the service's workers on purpose, and a stalled worker runs no signal
//! handler and fires no timer. So signals are awaited on a thread of their own, with a
//! runtime of its own, and the one shutdown deadline is kept by plain threads: requests get
//! [`Deadline::drain_until`], queued spans the rest, and if the process is somehow still
//! here at the deadline (plus a moment) it exits anyway, naming what it abandons.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::telemetry::in_flight::InFlightRequests;

/// How long after SIGINT/SIGTERM the process may take, in all.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    total: Duration,
}

/// The end of a shutdown: what the caller should still do, by when.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Queued spans may be flushed until then; the process exits after.
    pub flush_until: Instant,
    /// Requests still unanswered when draining had to stop.
    pub abandoned: usize,
}

/// What the signal thread and the server tell the thread that waits on both.
pub enum Event {
    Signal(Instant),
    Served(anyhow::Result<()>),
}

impl Deadline {
    pub fn new(total: Duration) -> Self {
        Self { total }
    }

    /// Span flushing's share of the deadline: a fifth, at most 5 s. A collector that takes
    /// longer is not answering, and the spans it would lose are counted.
    fn flush_share(self) -> Duration {
        (self.total / 5).min(Duration::from_secs(5))
    }

    /// When requests must be answered by, for a signal at `signalled`.
    pub fn drain_until(self, signalled: Instant) -> Instant {
        signalled + self.total - self.flush_share()
    }

    /// When the process must be gone, for a signal at `signalled`.
    pub fn exit_by(self, signalled: Instant) -> Instant {
        signalled + self.total
    }
}

/// How long past the deadline the backstop waits for the orderly path before exiting
/// itself: the orderly path ends at the deadline, so this only fires when it hangs.
const BACKSTOP_SLACK: Duration = Duration::from_millis(500);

/// Waits for SIGINT/SIGTERM on a thread of its own: cancels `shutdown` and sends
/// [`Event::Signal`]. A second signal, or the deadline passing while the process is still
/// here, exits at once with status 1 after naming the requests in flight.
pub fn spawn_signal_thread(
    shutdown: CancellationToken,
    events: Sender<Event>,
    deadline: Deadline,
    in_flight: Arc<InFlightRequests>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("shutdown-signals".into())
        .spawn(move || {
            // A named task, so tokio-console shows what this thread waits for.
            runtime.block_on(async {
                match tokio::task::Builder::new()
                    .name("signal-listener")
                    .spawn(wait_for_signal())
                {
                    Ok(listener) => {
                        let _ = listener.await;
                    }
                    Err(_) => wait_for_signal().await,
                }
            });
            let signalled = Instant::now();
            tracing::info!(
                deadline_ms = deadline.total.as_millis(),
                "shutdown signal received; draining in-flight requests (a second signal exits at once)"
            );
            shutdown.cancel();
            let _ = events.send(Event::Signal(signalled));
            let exit_by = tokio::time::Instant::from_std(deadline.exit_by(signalled) + BACKSTOP_SLACK);
            let reason = runtime.block_on(async {
                tokio::select! {
                    () = wait_for_signal() => "a second signal arrived",
                    () = tokio::time::sleep_until(exit_by) => "the shutdown deadline passed",
                }
            });
            name_abandoned(&in_flight, reason);
            std::process::exit(1);
        })?;
    Ok(())
}

/// Logs the requests still in flight (oldest first, at most 20 named) and returns how many.
pub fn name_abandoned(in_flight: &InFlightRequests, reason: &str) -> usize {
    const NAMED: usize = 20;
    let pending = in_flight.pending();
    if pending.is_empty() {
        tracing::warn!("{reason}: exiting now");
        return 0;
    }
    tracing::error!(
        in_flight = pending.len(),
        "{reason}: exiting with requests unanswered"
    );
    for request in pending.iter().take(NAMED) {
        tracing::error!(
            variant = request.variant,
            request_id = %request.request_id,
            "abandoned in flight: {} {} after {:.1} s",
            request.method,
            request.route,
            request.age.as_secs_f64()
        );
    }
    if pending.len() > NAMED {
        tracing::error!("… and {} more", pending.len() - NAMED);
    }
    pending.len()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_the_deadline_less_the_flush_share() {
        let now = Instant::now();
        let default = Deadline::new(Duration::from_secs(25));
        assert_eq!(default.drain_until(now), now + Duration::from_secs(20));
        assert_eq!(default.exit_by(now), now + Duration::from_secs(25));
        let short = Deadline::new(Duration::from_secs(3));
        assert_eq!(short.drain_until(now), now + Duration::from_millis(2400));
    }
}
