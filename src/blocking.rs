//! The one way this service runs synchronous code on Tokio's blocking pool.
//!
//! Every variant that offloads work calls [`run_blocking`] instead of bare
//! `tokio::task::spawn_blocking`, naming its call site, so the pool's use can be measured per
//! call site in one place.

use crate::error::AppError;

/// Runs `work` on the blocking pool and waits for it without holding a worker.
///
/// `call_site` names the caller (e.g. `"sleep/spawn-blocking"`). A panic inside `work`
/// becomes [`AppError::Internal`], never a crashed worker.
pub async fn run_blocking<T, F>(call_site: &'static str, work: F) -> Result<T, AppError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| AppError::Internal(format!("{call_site}: blocking task failed: {err}")))
}
