//! The connection pools, and the gauges and histograms that watch them.
//!
//! There are two pools per service, on purpose:
//! - the **async** pool (deadpool, through diesel-async): `AsyncPgConnection`,
//!   `AsyncMysqlConnection`, or diesel-async's `SyncConnectionWrapper` around SQLite. Used by
//!   the `async` and `raw` variants and by `/users`;
//! - the **sync** pool (r2d2, plain diesel): `PgConnection` (libpq), `MysqlConnection`
//!   (libmysqlclient), `SqliteConnection`. Used by the `blocking` variant, inline (the bug),
//!   and by `spawn-blocking`, on the blocking pool (the fix).
//!
//! Every checkout is a [`Lease`]: when it is dropped the connection goes back and the pool's
//! in-use / idle gauges are published again, so `/metrics` always shows the latest state.

use std::error::Error;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use deadpool::managed::{Manager, Object, PoolError};
use diesel::r2d2::{ConnectionManager, ManageConnection, PooledConnection, R2D2Connection};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures::future::BoxFuture;

use super::metric_names::{
    DB_POOL_ACQUIRE_WAIT, DB_POOL_CONNECTIONS, DB_POOL_MAX_CONNECTIONS, DB_QUERY_DURATION,
};
use super::{Backend, DbError};
use crate::blocking::run_blocking;

/// Which of the two pools a figure belongs to (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum PoolKind {
    Async,
    Sync,
}

impl PoolKind {
    fn as_str(self) -> &'static str {
        match self {
            PoolKind::Async => "async",
            PoolKind::Sync => "sync",
        }
    }
}

/// Publishes a pool's current figures as gauges.
type Publish = Arc<dyn Fn() + Send + Sync>;

fn publish_figures(backend: Backend, kind: PoolKind, max: usize, total: usize, idle: usize) {
    let (backend, pool) = (backend.as_str(), kind.as_str());
    let in_use = total.saturating_sub(idle);
    metrics::gauge!(DB_POOL_CONNECTIONS, "backend" => backend, "pool" => pool, "state" => "in_use")
        .set(in_use as f64);
    metrics::gauge!(DB_POOL_CONNECTIONS, "backend" => backend, "pool" => pool, "state" => "idle")
        .set(idle as f64);
    metrics::gauge!(DB_POOL_MAX_CONNECTIONS, "backend" => backend, "pool" => pool).set(max as f64);
}

fn record_acquire_wait(backend: Backend, kind: PoolKind, started: Instant) {
    metrics::histogram!(DB_POOL_ACQUIRE_WAIT, "backend" => backend.as_str(), "pool" => kind.as_str())
        .record(started.elapsed().as_secs_f64());
}

/// The client span of one query, following the OpenTelemetry database conventions (the
/// stable names of v1.33: `db.system.name`, `db.operation.name`, `db.query.text`). The
/// lessons' statements are recorded with their placeholders ([`record_statement`]); bound
/// values never are (the users' ones hold passwords).
pub fn query_span(backend: Backend, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db query",
        otel.name = %format!("{operation} {}", backend.db_system()),
        otel.kind = "client",
        db.system.name = backend.db_system(),
        db.operation.name = operation,
        db.query.text = tracing::field::Empty,
    )
}

/// Puts `sql` on the current query span as `db.query.text`.
pub fn record_statement(sql: &str) {
    tracing::Span::current().record("db.query.text", sql);
}

/// `query`'s SQL as the `DB` backend is sent it: placeholders only, the bound values go
/// separately and are never in the text. Rendered only when a span will carry it.
pub fn statement_of<DB, Q>(query: &Q) -> Option<String>
where
    DB: diesel::backend::Backend + Default,
    DB::QueryBuilder: Default,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    use diesel::query_builder::QueryBuilder;
    if tracing::Span::current().is_disabled() {
        return None;
    }
    let mut sql = DB::QueryBuilder::default();
    query.to_sql(&mut sql, &DB::default()).ok()?;
    Some(sql.finish())
}

/// Records one query's duration (`operation` is a literal: a bounded label).
pub fn record_query(backend: Backend, operation: &'static str, started: Instant) {
    metrics::histogram!(DB_QUERY_DURATION, "backend" => backend.as_str(), "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}

/// A checked-out connection. Derefs to the connection; returning it republishes the gauges.
pub struct Lease<O> {
    conn: Option<O>,
    publish: Publish,
}

impl<O: Deref> Deref for Lease<O> {
    type Target = O::Target;
    fn deref(&self) -> &O::Target {
        // `conn` is only `None` inside `drop`.
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("lease used after release"))
    }
}

impl<O: DerefMut> DerefMut for Lease<O> {
    fn deref_mut(&mut self) -> &mut O::Target {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("lease used after release"))
    }
}

impl<O> Drop for Lease<O> {
    fn drop(&mut self) {
        drop(self.conn.take());
        (self.publish)();
    }
}

/// The async pool of one backend.
pub struct AsyncPool<M: Manager> {
    pub backend: Backend,
    /// How long a query may take, checkout included (`--db-query-timeout-ms`).
    pub query_timeout: Duration,
    inner: deadpool::managed::Pool<M>,
    publish: Publish,
}

/// diesel-async's manager for connection type `C`.
pub type AsyncManager<C> = AsyncDieselConnectionManager<C>;

impl<M> AsyncPool<M>
where
    M: Manager + 'static,
    M::Error: std::fmt::Display,
{
    pub fn new(
        backend: Backend,
        manager: M,
        size: usize,
        acquire_timeout: Duration,
        query_timeout: Duration,
    ) -> Result<Self, DbError> {
        // One timeout for all three phases: waiting for a free slot, connecting a new
        // connection, and pinging an idle one before handing it out (the ping is how a
        // connection broken by a database restart is noticed and replaced).
        let inner = deadpool::managed::Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .recycle_timeout(Some(acquire_timeout))
            .build()
            .map_err(|err| DbError::Unavailable(format!("could not build the pool: {err}")))?;
        let watched = inner.clone();
        let publish: Publish = Arc::new(move || {
            let status = watched.status();
            publish_figures(
                backend,
                PoolKind::Async,
                status.max_size,
                status.size,
                status.available,
            );
        });
        publish();
        Ok(Self {
            backend,
            query_timeout,
            inner,
            publish,
        })
    }

    /// Waits (asynchronously) for a connection: at most the acquire timeout.
    pub async fn acquire(&self) -> Result<Lease<Object<M>>, DbError> {
        let started = Instant::now();
        let conn = self.inner.get().await;
        record_acquire_wait(self.backend, PoolKind::Async, started);
        let conn = conn.map_err(|err| match err {
            PoolError::Timeout(_) => DbError::Unavailable(format!(
                "no {} connection within the acquire timeout",
                self.backend.as_str()
            )),
            PoolError::Backend(err) => DbError::Unavailable(format!(
                "could not connect to {}: {err}",
                self.backend.as_str()
            )),
            other => DbError::Unavailable(other.to_string()),
        })?;
        (self.publish)();
        Ok(Lease {
            conn: Some(conn),
            publish: Arc::clone(&self.publish),
        })
    }
}

/// The sync pool of one backend.
pub struct SyncPool<M: ManageConnection> {
    pub backend: Backend,
    inner: r2d2::Pool<M>,
    publish: Publish,
}

impl<C> SyncPool<ConnectionManager<C>>
where
    C: R2D2Connection + 'static,
{
    pub fn new(
        backend: Backend,
        url: &str,
        size: u32,
        acquire_timeout: Duration,
        customizer: Option<Box<dyn r2d2::CustomizeConnection<C, diesel::r2d2::Error>>>,
    ) -> Self {
        let mut builder = r2d2::Pool::builder()
            .max_size(size)
            // No idle connections kept open in the background: r2d2 would otherwise start
            // connecting at build time and keep retrying (and logging) while a server is down.
            .min_idle(Some(0))
            .connection_timeout(acquire_timeout)
            .test_on_check_out(true);
        if let Some(customizer) = customizer {
            builder = builder.connection_customizer(customizer);
        }
        // `build_unchecked`: connect lazily, so a database that is down at this moment makes
        // requests fail with 503 rather than the pool fail to exist.
        let inner = builder.build_unchecked(ConnectionManager::new(url));
        let watched = inner.clone();
        let publish: Publish = Arc::new(move || {
            let state = watched.state();
            publish_figures(
                backend,
                PoolKind::Sync,
                watched.max_size() as usize,
                state.connections as usize,
                state.idle_connections as usize,
            );
        });
        publish();
        Self {
            backend,
            inner,
            publish,
        }
    }

    /// **Blocks the calling thread** until a connection is free or the acquire timeout
    /// passes. Called inline in an async handler, that thread is a runtime worker.
    pub fn acquire_blocking(
        &self,
    ) -> Result<Lease<PooledConnection<ConnectionManager<C>>>, DbError> {
        let started = Instant::now();
        let conn = self.inner.get();
        record_acquire_wait(self.backend, PoolKind::Sync, started);
        let conn = conn.map_err(|err| {
            DbError::Unavailable(format!(
                "no {} connection within the acquire timeout: {err}",
                self.backend.as_str()
            ))
        })?;
        (self.publish)();
        Ok(Lease {
            conn: Some(conn),
            publish: Arc::clone(&self.publish),
        })
    }
}

/// How diesel-async's `SyncConnectionWrapper` reaches the blocking pool here: through
/// [`run_blocking`], like every other offload, so SQLite's "async" queries show up in
/// `stallscope_blocking_*{call_site="db/sqlite-connection"}`.
///
/// The wrapper keeps its SQLite connection behind an `Arc<Mutex<_>>` that each query's
/// blocking job holds while it runs. If a request is cancelled mid-query and its connection
/// went back to the pool while the job still held that `Arc`, the pool's next health check
/// would find the connection shared and panic. diesel-async's own Tokio spawner avoids that by
/// waiting for the job in `Drop`; [`FinishOnDrop`] does the same.
pub struct ObservedSpawn;

impl SpawnBlocking for ObservedSpawn {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        let job = async move {
            run_blocking("db/sqlite-connection", task)
                .await
                .map_err(|err| Box::new(err) as Box<dyn Error + Send + Sync + 'static>)
        };
        Box::pin(FinishOnDrop(Some(Box::pin(job))))
    }

    fn get_runtime() -> Self {
        ObservedSpawn
    }
}

/// A future that, if dropped before it completes, finishes anyway (see [`ObservedSpawn`]).
struct FinishOnDrop<F: Future>(Option<Pin<Box<F>>>);

impl<F: Future> Future for FinishOnDrop<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(inner) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let output = inner.as_mut().poll(cx);
        if output.is_ready() {
            self.0 = None;
        }
        output
    }
}

impl<F: Future> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        let Some(unfinished) = self.0.take() else {
            return;
        };
        // Waiting blocks this thread, so hand the worker's queue over first
        // (`block_in_place`); a current-thread runtime cannot do that, and there the job is
        // simply left to finish on its own.
        if let Ok(handle) = tokio::runtime::Handle::try_current()
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| {
                handle.block_on(unfinished);
            });
        }
    }
}
