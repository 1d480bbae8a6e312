//! The one way this service runs synchronous code on Tokio's blocking pool: every variant
//! that offloads work names its call site, so blocking-pool saturation shows per call site
//! (queue wait, run time, jobs in flight; see `stallscope_telemetry::blocking`).

use crate::error::AppError;

/// Runs `work` on the blocking pool and waits for it without holding a worker. A panic
/// inside `work` becomes [`AppError::Internal`].
pub async fn run_blocking<T, F>(call_site: &'static str, work: F) -> Result<T, AppError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    stallscope_telemetry::blocking::run_blocking(call_site, work)
        .await
        .map_err(|err| AppError::Internal(format!("{call_site}: blocking task failed: {err}")))
}
