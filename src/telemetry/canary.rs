//! The executor-lag canary: a task that asks to wake every 10 ms and records how late it
//! actually ran.
//!
//! A healthy runtime wakes it within a millisecond (the timer's resolution). When a poll
//! hogs the worker the canary is queued on, the canary runs only after that poll returns,
//! and the lateness is the time any ready task would have waited. It is the Rust
//! counterpart of Go's `/sched/latencies`, Node's `monitorEventLoopDelay` and asyncio's
//! slow-callback warning.

use std::time::Duration;

use tokio::time::Instant;

use super::metric_names::EXECUTOR_LAG;

/// Spawns the canary on the current runtime, as a named task (visible in tokio-console).
pub fn spawn(interval: Duration) -> std::io::Result<()> {
    tokio::task::Builder::new()
        .name("executor-lag-canary")
        .spawn(run(interval))?;
    Ok(())
}

async fn run(interval: Duration) {
    let lag = metrics::histogram!(EXECUTOR_LAG);
    loop {
        let due = Instant::now() + interval;
        tokio::time::sleep_until(due).await;
        lag.record(Instant::now().saturating_duration_since(due).as_secs_f64());
    }
}
