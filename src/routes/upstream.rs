//! Lesson 3: calling another service. The tutorial's aiohttp-vs-requests lesson.
//!
//! Waiting on a socket is waiting, like sleeping: an async client (reqwest) parks the task
//! while the upstream thinks; a synchronous client (ureq, Python's `requests`) blocks the
//! worker polling the handler for the whole round trip.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::lesson_request::{Chosen, LessonVariant, WaitMs};
use super::problems::{BadMs, StallDemosBusy, StallDemosOff, UnknownVariant};
use super::report::{WorkDone, WorkReport};
use super::variant::lesson_variants;
use crate::blocking::run_blocking;
use crate::error::{AppError, ProblemDoc};
use crate::state::{AppState, UpstreamClients};

lesson_variants! {
    /// Which HTTP client calls the slow upstream, and where.
    pub enum UpstreamVariant for "upstream" {
        Async = "async" {
            stalls: false,
            teaches: "reqwest awaits the socket: like aiohttp, the worker serves others while the upstream is slow",
        },
        Blocking = "blocking" {
            stalls: true,
            teaches: "a synchronous client (ureq) in async code blocks the worker for the whole round trip: like requests in async def",
        },
        SpawnBlocking = "spawn-blocking" {
            stalls: false,
            teaches: "the same synchronous client on the blocking pool: like requests in a plain def route",
        },
    }
}

/// Ask the slow upstream to take `ms` milliseconds, with the client `{variant}` names.
#[utoipa::path(
    get,
    path = "/upstream/{variant}",
    operation_id = "upstream",
    tag = "upstream",
    params(
        ("variant" = inline(UpstreamVariant), Path, description = "Which client calls the upstream, and where: `blocking` is the stalling one"),
        ("ms" = Option<u64>, Query, description = "How long the upstream takes, in milliseconds (0 to `--max-sleep-ms`; default one second)"),
    ),
    responses(
        (status = 200, description = "The upstream answered", body = WorkReport),
        BadMs,
        UnknownVariant,
        StallDemosOff,
        StallDemosBusy,
        (status = 502, description = "The upstream failed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 504, description = "The upstream timed out", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn handler(
    State(state): State<AppState>,
    Chosen { variant, .. }: Chosen<UpstreamVariant>,
    WaitMs(ms): WaitMs,
) -> Result<Json<WorkReport>, AppError> {
    let report = variant.report(json!({ "ms": ms }));
    let clients = &state.upstream;
    let done = match variant {
        UpstreamVariant::Async => call_async(clients, ms).await?,
        UpstreamVariant::Blocking => call_blocking(clients, ms).await?,
        UpstreamVariant::SpawnBlocking => call_spawn_blocking(clients, ms).await?,
    };
    Ok(Json(report.finish(done)))
}

/// Correct: reqwest sends, then parks the task until bytes arrive.
async fn call_async(clients: &UpstreamClients, ms: u64) -> Result<WorkDone, AppError> {
    let body = clients.call_async(ms).await?;
    Ok(WorkDone::here_with(body))
}

/// The bug: ureq's `call()` blocks this thread, and this thread is a runtime worker.
#[allow(clippy::unused_async)] // async on purpose: it is the lesson's stalling `async fn`.
async fn call_blocking(clients: &UpstreamClients, ms: u64) -> Result<WorkDone, AppError> {
    let body = clients.call_sync(ms)?;
    Ok(WorkDone::here_with(body))
}

/// Correct for a sync-only client: the call blocks a blocking-pool thread instead.
async fn call_spawn_blocking(clients: &UpstreamClients, ms: u64) -> Result<WorkDone, AppError> {
    let clients = clients.clone();
    run_blocking("upstream/spawn-blocking", move || {
        let body = clients.call_sync(ms)?;
        Ok(WorkDone::here_with(body))
    })
    .await?
}
