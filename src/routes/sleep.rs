//! Lesson 1: waiting. The FastAPI tutorial's `time.sleep(1)` inside `async def`.
//!
//! Two concurrent one-second requests to the stalling variant finish at 1 s and 2 s: the
//! sleeping handler holds its worker thread, and nothing else scheduled on that worker can
//! run until it wakes. The other three variants finish both at 1 s.

use std::time::Duration;

use axum::Json;
use serde_json::json;

use super::lesson_request::{Chosen, LessonVariant, WaitMs};
use super::problems::{BadMs, StallDemosBusy, StallDemosOff, UnknownVariant};
use super::report::{WorkDone, WorkReport};
use super::variant::lesson_variants;
use crate::blocking::run_blocking;
use crate::error::AppError;

lesson_variants! {
    /// The ways to wait `ms` milliseconds inside an async handler.
    pub enum SleepVariant for "sleep" {
        Async = "async" {
            stalls: false,
            teaches: "tokio::time::sleep yields the worker: like asyncio.sleep, waits overlap",
        },
        Blocking = "blocking" {
            stalls: true,
            teaches: "std::thread::sleep in async code holds the worker: like time.sleep in async def, requests queue behind it",
        },
        SpawnBlocking = "spawn-blocking" {
            stalls: false,
            teaches: "spawn_blocking moves the sleep to the blocking pool: like a plain def route on FastAPI's thread pool",
        },
        BlockInPlace = "block-in-place" {
            stalls: false,
            teaches: "block_in_place hands this worker's queue to a new thread first, so other tasks keep running (multi-thread runtime only)",
        },
    }
}

/// Sleep `ms` milliseconds the way `{variant}` does.
#[utoipa::path(
    get,
    path = "/sleep/{variant}",
    operation_id = "sleep",
    tag = "sleep",
    params(
        ("variant" = inline(SleepVariant), Path, description = "How to wait: `blocking` is the stalling one"),
        ("ms" = Option<u64>, Query, description = "How long to sleep, in milliseconds (0 to `--max-sleep-ms`; default one second)"),
    ),
    responses((status = 200, description = "Slept", body = WorkReport), BadMs, UnknownVariant, StallDemosOff, StallDemosBusy)
)]
pub async fn handler(
    Chosen { variant, .. }: Chosen<SleepVariant>,
    WaitMs(ms): WaitMs,
) -> Result<Json<WorkReport>, AppError> {
    let report = variant.report(json!({ "ms": ms }));
    let duration = Duration::from_millis(ms);
    let done = match variant {
        SleepVariant::Async => sleep_async(duration).await,
        SleepVariant::Blocking => sleep_blocking(duration).await,
        SleepVariant::SpawnBlocking => sleep_spawn_blocking(duration).await?,
        SleepVariant::BlockInPlace => sleep_block_in_place(duration).await,
    };
    Ok(Json(report.finish(done)))
}

/// Correct: the timer parks this task and frees the worker for every other task until it
/// fires. Thousands of these can wait at once on one worker.
async fn sleep_async(duration: Duration) -> WorkDone {
    tokio::time::sleep(duration).await;
    WorkDone::here()
}

/// The bug: `std::thread::sleep` never returns to the executor, so the worker polling this
/// future is frozen for the whole duration. Tasks queued on that worker (new connections,
/// other requests, timers) wait; with one worker, the whole service waits.
#[allow(clippy::unused_async)] // async on purpose: it is the lesson's stalling `async fn`.
async fn sleep_blocking(duration: Duration) -> WorkDone {
    std::thread::sleep(duration);
    WorkDone::here()
}

/// Correct for code that must block: the sleep runs on a blocking-pool thread and the
/// handler just awaits its result. The pool grows up to `--max-blocking-threads`; past that,
/// calls queue (watch `call_site` queue wait once telemetry is on).
async fn sleep_spawn_blocking(duration: Duration) -> Result<WorkDone, AppError> {
    run_blocking("sleep/spawn-blocking", move || {
        std::thread::sleep(duration);
        WorkDone::here()
    })
    .await
}

/// Also correct, with caveats: `block_in_place` first hands this worker's run queue to a
/// fresh thread, then blocks right here. Other tasks keep running, but everything else inside
/// *this* task (a `join!`, a `select!`) is stuck too, and it panics on a current-thread
/// runtime.
#[allow(clippy::unused_async)]
async fn sleep_block_in_place(duration: Duration) -> WorkDone {
    tokio::task::block_in_place(|| {
        std::thread::sleep(duration);
        WorkDone::here()
    })
}
