//! Lesson 2: computing. CPU-bound work inside an async handler.
//!
//! Hashing never awaits, so an `async fn` that hashes for a second holds its worker for a
//! second, exactly like `time.sleep`. Moving it off the worker fixes the stall but not the
//! physics: N CPU-bound requests still need N free cores to finish together.

use axum::Json;
use axum::extract::State;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::lesson_request::{Chosen, Iterations, LessonVariant};
use super::problems::{BadIterations, StallDemosBusy, StallDemosOff, UnknownVariant};
use super::report::{WorkDone, WorkReport};
use super::variant::lesson_variants;
use crate::blocking::run_blocking;
use crate::error::AppError;
use crate::state::AppState;
use crate::telemetry::request_context;

lesson_variants! {
    /// Where the hashing runs.
    pub enum CpuVariant for "cpu" {
        Inline = "inline" {
            stalls: true,
            teaches: "CPU work in async code never yields: the worker is busy and every task queued on it waits",
        },
        SpawnBlocking = "spawn-blocking" {
            stalls: false,
            teaches: "spawn_blocking runs the hashing off the workers; fine for occasional work, but the pool is sized for waiting, not for cores",
        },
        Rayon = "rayon" {
            stalls: false,
            teaches: "a rayon pool sized to the cores runs the hashing; a oneshot channel brings the result back to async code",
        },
    }
}

/// The work itself: `iterations` rounds of SHA-256, each hashing the previous digest.
/// Chaining stops the compiler from skipping rounds; the digest proves they ran.
pub fn sha256_chain(iterations: u64) -> [u8; 32] {
    let mut digest = [0u8; 32];
    for _ in 0..iterations {
        digest = Sha256::digest(digest).into();
    }
    digest
}

// `skip_all`: the argument would be recorded a second time, as `iterations`; an integer
// field as i64, since unsigned ones reach OpenTelemetry as text.
#[tracing::instrument(
    name = "cpu.sha256",
    level = "info",
    skip_all,
    fields(stallscope.iterations = i64::try_from(iterations).unwrap_or(i64::MAX))
)]
fn hash_and_report(iterations: u64) -> WorkDone {
    let digest = sha256_chain(iterations);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    WorkDone::here_with(json!({ "digest_prefix": hex }))
}

/// Hash `iterations` times the way `{variant}` does.
#[utoipa::path(
    get,
    path = "/cpu/{variant}",
    operation_id = "cpu",
    tag = "cpu",
    params(
        ("variant" = inline(CpuVariant), Path, description = "Where to hash: `inline` is the stalling one"),
        ("iterations" = Option<u64>, Query, description = "SHA-256 rounds (1 to `--max-cpu-iterations`; the default takes about a second on a current x86-64 core)"),
    ),
    responses((status = 200, description = "Hashed", body = WorkReport), BadIterations, UnknownVariant, StallDemosOff, StallDemosBusy)
)]
pub async fn handler(
    State(state): State<AppState>,
    Chosen { variant, .. }: Chosen<CpuVariant>,
    Iterations(iterations): Iterations,
) -> Result<Json<WorkReport>, AppError> {
    let report = variant.report(json!({ "iterations": iterations }));
    let done = match variant {
        CpuVariant::Inline => hash_inline(iterations).await,
        CpuVariant::SpawnBlocking => hash_on_blocking_pool(iterations).await?,
        CpuVariant::Rayon => hash_on_rayon(&state.cpu_pool, iterations).await?,
    };
    Ok(Json(report.finish(done)))
}

/// The bug: the hashing runs inside the future's `poll`, so this worker does nothing else
/// until it is done.
#[allow(clippy::unused_async)] // async on purpose: it is the lesson's stalling `async fn`.
async fn hash_inline(iterations: u64) -> WorkDone {
    hash_and_report(iterations)
}

/// Correct, with a caveat: the blocking pool may start hundreds of threads, so a burst of
/// CPU work oversubscribes the cores instead of queueing for them.
async fn hash_on_blocking_pool(iterations: u64) -> Result<WorkDone, AppError> {
    run_blocking("cpu/spawn-blocking", move || hash_and_report(iterations)).await
}

/// Correct for CPU work: rayon's pool has one thread per core, so a burst queues there
/// (bounded CPU use) while the async handler awaits a oneshot and its worker stays free.
async fn hash_on_rayon(pool: &rayon::ThreadPool, iterations: u64) -> Result<WorkDone, AppError> {
    let (tx, rx) = oneshot::channel();
    // rayon threads know nothing of the request: carry it over, so the work shows up in the
    // request's trace and logs.
    pool.spawn(request_context::carried(move || {
        // The receiver is gone only if the client hung up; nothing to do then.
        let _ = tx.send(hash_and_report(iterations));
    }));
    rx.await
        .map_err(|_| AppError::Internal("the rayon task ended without an answer".into()))
}
