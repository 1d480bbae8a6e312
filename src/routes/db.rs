//! Lessons 4–6 as stalls: a database query, four ways.
//!
//! Waiting on a database is waiting on a socket (lesson 3). An async driver (diesel-async:
//! tokio-postgres, mysql_async) parks the task while the database works; a sync driver
//! (diesel over libpq or libmysqlclient) blocks the thread that called it for the checkout
//! and the whole round trip. `GET /db/{variant}/sleep?ms=N` makes the database itself wait
//! (`pg_sleep`, `SLEEP()`, and on SQLite a registered function) so the difference is as
//! plain as in lesson 1; `GET /db/{variant}/users/{id}` is the everyday query.
//!
//! On SQLite, diesel-async has no truly async driver: its `SyncConnectionWrapper` runs the
//! sync connection on the blocking pool per query, so there `async` and `raw` are really
//! `spawn-blocking` under the hood (and still do not stall).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;

use super::lesson_request::{Chosen, LessonVariant, WaitMs};
use super::problems::{
    BadId, BadMs, DatabaseUnreachableOrDemosBusy, StallDemosOff, UnknownVariant,
};
use super::report::{WorkDone, WorkReport};
use super::variant::lesson_variants;
use crate::blocking::run_blocking;
use crate::db::models::{User, UserView};
use crate::db::{Database, queries};
use crate::error::{AppError, ProblemDoc};
use crate::state::AppState;

lesson_variants! {
    /// The ways to run a query from an async handler.
    pub enum DbVariant for "db" {
        Async = "async" {
            stalls: false,
            teaches: "diesel-async awaits the database: like an async ORM (tortoise), the worker serves others meanwhile",
        },
        Raw = "raw" {
            stalls: false,
            teaches: "hand-written SQL through diesel-async's sql_query, parameters bound: like aiomysql, and just as non-blocking",
        },
        Blocking = "blocking" {
            stalls: true,
            teaches: "a sync diesel connection in async code blocks the worker for the checkout and the whole query: like a sync driver in async def",
        },
        SpawnBlocking = "spawn-blocking" {
            stalls: false,
            teaches: "the same sync diesel connection on the blocking pool: like a sync driver in a plain def route",
        },
    }
}

/// Look up user `{id}` the way `{variant}` does.
#[utoipa::path(
    get,
    path = "/db/{variant}/users/{id}",
    operation_id = "db_user",
    tag = "db",
    params(
        ("variant" = inline(DbVariant), Path, description = "How to query: `blocking` is the stalling one"),
        ("id" = i64, Path, minimum = 1, description = "The user's id", example = 1),
    ),
    responses(
        (status = 200, description = "Found; `output.user` is the user (never the password hash)", body = WorkReport),
        BadId,
        (status = 404, description = "Unknown variant or no such user", body = ProblemDoc, content_type = "application/problem+json"),
        StallDemosOff,
        DatabaseUnreachableOrDemosBusy,
    )
)]
pub async fn user(
    State(state): State<AppState>,
    Chosen { variant, .. }: Chosen<DbVariant>,
    Path((_variant, id)): Path<(String, String)>,
) -> Result<Json<WorkReport>, AppError> {
    let id = super::users::parse_id(&id)?;
    let report = variant.report(json!({ "user_id": id }));
    let db = &state.db;
    let (found, thread) = match variant {
        DbVariant::Async => user_async(db, id).await?,
        DbVariant::Raw => user_raw(db, id).await?,
        DbVariant::Blocking => user_blocking(db, id).await?,
        DbVariant::SpawnBlocking => user_spawn_blocking(db, id).await?,
    };
    let user = found.ok_or_else(|| AppError::NotFound(format!("there is no user with id {id}")))?;
    let done = WorkDone {
        thread,
        output: Some(json!({
            "backend": db.backend().as_str(),
            "user": UserView::from(&user),
        })),
    };
    Ok(Json(report.finish(done)))
}

/// Make the database wait `ms` milliseconds, queried the way `{variant}` does.
#[utoipa::path(
    get,
    path = "/db/{variant}/sleep",
    operation_id = "db_sleep",
    tag = "db",
    params(
        ("variant" = inline(DbVariant), Path, description = "How to query: `blocking` is the stalling one"),
        ("ms" = Option<u64>, Query, description = "How long the database waits, in milliseconds (0 to `--max-sleep-ms`; default one second)"),
    ),
    responses(
        (status = 200, description = "The database waited", body = WorkReport),
        BadMs,
        UnknownVariant,
        StallDemosOff,
        DatabaseUnreachableOrDemosBusy,
    )
)]
pub async fn sleep(
    State(state): State<AppState>,
    Chosen { variant, .. }: Chosen<DbVariant>,
    WaitMs(ms): WaitMs,
) -> Result<Json<WorkReport>, AppError> {
    let report = variant.report(json!({ "ms": ms }));
    let db = &state.db;
    let thread = match variant {
        DbVariant::Async => sleep_async(db, ms).await?,
        DbVariant::Raw => sleep_raw(db, ms).await?,
        DbVariant::Blocking => sleep_blocking(db, ms).await?,
        DbVariant::SpawnBlocking => sleep_spawn_blocking(db, ms).await?,
    };
    let done = WorkDone {
        thread,
        output: Some(json!({ "backend": db.backend().as_str() })),
    };
    Ok(Json(report.finish(done)))
}

/// The thread a variant's query waited on: the handler's worker for the in-handler variants
/// (whether it blocked there or merely awaited), a blocking-pool thread for `spawn-blocking`.
type Thread = String;

/// Correct: the query builder, awaited through diesel-async. Checkout and round trip are
/// futures; while the database works, the worker runs other tasks.
async fn user_async(db: &Database, id: i64) -> Result<(Option<User>, Thread), AppError> {
    let user = queries::get_user(db, id).await?;
    Ok((user, WorkDone::here().thread))
}

/// Correct: hand-written SQL, the id bound as a parameter, awaited through diesel-async.
async fn user_raw(db: &Database, id: i64) -> Result<(Option<User>, Thread), AppError> {
    let user = queries::get_user_raw(db, id).await?;
    Ok((user, WorkDone::here().thread))
}

/// The bug: the same query on a sync diesel connection, called right here. `first()` blocks
/// this thread (a runtime worker) for the pool checkout and the whole round trip.
#[allow(clippy::unused_async)] // async on purpose: it is the lesson's stalling `async fn`.
async fn user_blocking(db: &Database, id: i64) -> Result<(Option<User>, Thread), AppError> {
    let user = queries::get_user_sync(db, id)?;
    Ok((user, WorkDone::here().thread))
}

/// Correct for a sync-only driver: the sync query runs on the blocking pool; the handler
/// awaits its result.
async fn user_spawn_blocking(db: &Database, id: i64) -> Result<(Option<User>, Thread), AppError> {
    let query = {
        let db = db.clone();
        run_blocking("db/spawn-blocking", move || {
            let user = queries::get_user_sync(&db, id)?;
            Ok((user, WorkDone::here().thread))
        })
    };
    within_query_timeout(db, 0, query).await??
}

/// Correct: `pg_sleep` / `SLEEP()` awaited through diesel-async.
async fn sleep_async(db: &Database, ms: u64) -> Result<Thread, AppError> {
    queries::sleep(db, ms).await?;
    Ok(WorkDone::here().thread)
}

/// Correct: the same delay as hand-written SQL with a bound parameter.
async fn sleep_raw(db: &Database, ms: u64) -> Result<Thread, AppError> {
    queries::sleep_raw(db, ms).await?;
    Ok(WorkDone::here().thread)
}

/// The bug: the worker sits in a blocking socket read (or, on SQLite, in the sleeping SQL
/// function itself) until the database answers. With one worker, nothing else runs.
#[allow(clippy::unused_async)]
async fn sleep_blocking(db: &Database, ms: u64) -> Result<Thread, AppError> {
    queries::sleep_sync(db, ms)?;
    Ok(WorkDone::here().thread)
}

/// Correct for a sync-only driver: a blocking-pool thread waits instead of the worker.
async fn sleep_spawn_blocking(db: &Database, ms: u64) -> Result<Thread, AppError> {
    let query = {
        let db = db.clone();
        run_blocking("db/spawn-blocking", move || {
            queries::sleep_sync(&db, ms)?;
            Ok(WorkDone::here().thread)
        })
    };
    within_query_timeout(db, ms, query).await??
}

/// A sync query handed to the blocking pool, awaited within the query timeout (plus the
/// `ms` the lesson asked the database to wait): past it the request is answered 503. The
/// thread itself waits on, since a sync driver cannot be interrupted; the pool's size bounds
/// how many can.
async fn within_query_timeout<T>(
    db: &Database,
    ms: u64,
    query: impl Future<Output = T>,
) -> Result<T, AppError> {
    let limit = db.query_timeout() + std::time::Duration::from_millis(ms);
    tokio::time::timeout(limit, query).await.map_err(|_| {
        AppError::Unavailable(format!(
            "{} gave no answer within {} ms (--db-query-timeout-ms)",
            db.backend().as_str(),
            limit.as_millis()
        ))
    })
}
