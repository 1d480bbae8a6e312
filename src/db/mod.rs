//! The data layer of the database lessons: one `users` table on SQLite, PostgreSQL or MySQL,
//! picked by `DATABASE_URL`, reached through an async pool (diesel-async) and a sync pool
//! (diesel). [`queries`] holds every query, written once for all three backends.

mod backend;
pub mod login_limits;
pub mod metric_names;
mod migration_lock;
pub mod models;
pub mod password;
pub mod pool;
pub mod queries;
pub mod schema;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use diesel::Connection;
use diesel::mysql::MysqlConnection;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::ManagerConfig;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

pub use backend::Backend;
use pool::{AsyncManager, AsyncPool, ObservedSpawn, SyncPool};

use crate::config::DatabaseArgs;
use crate::error::AppError;

/// SQLite through diesel-async: the sync connection, run on the blocking pool per query.
pub type AsyncSqliteConnection = SyncConnectionWrapper<SqliteConnection, ObservedSpawn>;

/// The async pool, whichever the backend. [`queries`] matches on it once per query and
/// writes the query once for all arms (the `databases` lesson).
pub enum AnyPool {
    Postgres(AsyncPool<AsyncManager<AsyncPgConnection>>),
    Mysql(AsyncPool<AsyncManager<AsyncMysqlConnection>>),
    Sqlite(AsyncPool<AsyncManager<AsyncSqliteConnection>>),
}

/// The sync pool, whichever the backend.
pub enum AnySyncPool {
    Postgres(SyncPool<diesel::r2d2::ConnectionManager<PgConnection>>),
    Mysql(SyncPool<diesel::r2d2::ConnectionManager<MysqlConnection>>),
    Sqlite(SyncPool<diesel::r2d2::ConnectionManager<SqliteConnection>>),
}

/// The database handle in `AppState`; cheap to clone.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    pool: AnyPool,
    sync: AnySyncPool,
    acquire_timeout: Duration,
    query_timeout: Duration,
}

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Why the database could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid DATABASE_URL: {0}")]
    InvalidUrl(String),
    #[error("could not connect to {backend} to run migrations: {detail}")]
    Connect {
        backend: &'static str,
        detail: String,
    },
    #[error("migrations failed on {backend}: {detail}")]
    Migrate {
        backend: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Pool(#[from] DbError),
}

/// What a query can fail with, before a handler adds its context.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached, or no connection came free in time: 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint rejected the write: the field whose value is taken (`username` or
    /// `email`). The handler says 409.
    #[error("the {0} is already taken")]
    Duplicate(&'static str),
    /// Anything else: a bug or an unexpected database state, 500.
    #[error("query failed: {0}")]
    Query(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                DbError::Duplicate(taken_field(info.constraint_name(), info.message()))
            }
            // The connection died under the query (the server went away mid-request).
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => DbError::Unavailable(info.message().to_owned()),
            other => {
                let message = other.to_string();
                if is_connection_lost(&message) {
                    DbError::Unavailable(message)
                } else {
                    DbError::Query(message)
                }
            }
        }
    }
}

/// Which field a unique violation is about. PostgreSQL names the constraint
/// (`users_email_key`); MySQL and MariaDB put the key's name in the message ("Duplicate entry
/// … for key 'users_email_key'"); SQLite names the column ("UNIQUE constraint failed:
/// users.email"). Anything else is the username's, the table's other unique value.
fn taken_field(constraint: Option<&str>, message: &str) -> &'static str {
    if constraint.unwrap_or(message).contains("email") {
        "email"
    } else {
        "username"
    }
}

/// Whether a driver's error message says the server went away under the query. A server
/// stopped mid-query reaches diesel as an error of kind `Unknown` (PostgreSQL's
/// `admin_shutdown`, the MySQL client's "lost connection", an I/O error in the async MySQL
/// driver), and diesel exposes neither SQLSTATE nor errno, so the drivers' messages are
/// matched: these are unavailability (503), not a bug (500).
fn is_connection_lost(message: &str) -> bool {
    const SIGNS: &[&str] = &[
        // PostgreSQL: 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
        // and libpq's and tokio-postgres' own words for a dropped socket.
        "terminating connection due to administrator command",
        "terminating connection because of crash of another server process",
        "the database system is shutting down",
        "the database system is starting up",
        "server closed the connection unexpectedly",
        "connection to server was lost",
        "could not receive data from server",
        "connection closed",
        // MySQL and MariaDB (client errors 2006, 2013; server error 1053) and the async driver.
        "lost connection to server during query",
        "lost connection to mysql server",
        "server has gone away",
        "server shutdown in progress",
        "input/output error",
        "broken pipe",
        "connection reset by peer",
    ];
    let message = message.to_ascii_lowercase();
    SIGNS.iter().any(|sign| message.contains(sign))
}

/// What a client is told when the database cannot serve its request.
pub const DB_UNAVAILABLE: &str =
    "the database is unreachable or has no free connection; try again after Retry-After seconds";

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(cause) => {
                // The driver's words (addresses, users, server versions) go to the log only.
                tracing::warn!(%cause, "the database is unavailable");
                AppError::Unavailable(DB_UNAVAILABLE.into())
            }
            DbError::Duplicate(field) => {
                AppError::Conflict(format!("the {field} is already taken"))
            }
            DbError::Query(detail) => AppError::Database(detail),
        }
    }
}

impl Database {
    /// Parses the URL, applies pending migrations over a sync connection, and builds both
    /// pools (they connect lazily). Blocking: call it before the runtime starts, or on the
    /// blocking pool.
    pub fn open(args: &DatabaseArgs) -> Result<Self, OpenError> {
        metric_names::describe();
        let (backend, url) = Backend::from_url(&args.database_url)?;
        let size = args.db_pool_size;
        let timeout = args.acquire_timeout();
        let pool_size = usize::try_from(size).unwrap_or(usize::MAX);
        let (pool, sync) = match backend {
            Backend::Postgres => {
                migrate::<PgConnection>(
                    backend,
                    &url,
                    POSTGRES_MIGRATIONS,
                    migration_lock::postgres,
                )?;
                (
                    AnyPool::Postgres(AsyncPool::new(
                        backend,
                        AsyncManager::<AsyncPgConnection>::new(url.clone()),
                        pool_size,
                        timeout,
                        args.query_timeout(),
                    )?),
                    AnySyncPool::Postgres(SyncPool::new(backend, &url, size, timeout, None)),
                )
            }
            Backend::Mysql => {
                migrate::<MysqlConnection>(backend, &url, MYSQL_MIGRATIONS, migration_lock::mysql)?;
                (
                    AnyPool::Mysql(AsyncPool::new(
                        backend,
                        AsyncManager::<AsyncMysqlConnection>::new(url.clone()),
                        pool_size,
                        timeout,
                        args.query_timeout(),
                    )?),
                    AnySyncPool::Mysql(SyncPool::new(backend, &url, size, timeout, None)),
                )
            }
            Backend::Sqlite => {
                migrate::<SqliteConnection>(
                    backend,
                    &url,
                    SQLITE_MIGRATIONS,
                    sqlite::prepare_connection,
                )?;
                (
                    AnyPool::Sqlite(AsyncPool::new(
                        backend,
                        AsyncManager::new_with_config(url.clone(), sqlite_async_setup()),
                        pool_size,
                        timeout,
                        args.query_timeout(),
                    )?),
                    AnySyncPool::Sqlite(SyncPool::new(
                        backend,
                        &url,
                        size,
                        timeout,
                        Some(Box::new(SqliteSetup)),
                    )),
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                pool,
                sync,
                acquire_timeout: timeout,
                query_timeout: args.query_timeout(),
            }),
        })
    }

    /// `--db-query-timeout-ms`.
    pub fn query_timeout(&self) -> Duration {
        self.inner.query_timeout
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    pub fn sync_pool(&self) -> &AnySyncPool {
        &self.inner.sync
    }

    /// `SELECT 1` through the *sync* pool on a blocking thread, bounded by the acquire
    /// timeout (for `/readyz`). Sync connections belong to no runtime, so the front door's
    /// thread can ping while the service runtime is stalled; an async PostgreSQL or MySQL
    /// connection is driven by a task on the runtime that opened it, and would wait for it.
    pub async fn ping(&self) -> Result<(), DbError> {
        let limit = self.inner.acquire_timeout;
        let db = self.clone();
        let ping = crate::telemetry::blocking::run_blocking("db/readiness-ping", move || {
            queries::ping_blocking(&db)
        });
        match tokio::time::timeout(limit, ping).await {
            Ok(Ok(answered)) => answered,
            Ok(Err(failed)) => Err(DbError::Unavailable(format!("the ping failed: {failed}"))),
            Err(_) => Err(DbError::Unavailable(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }
}

/// Applies pending migrations over one short-lived sync connection, after `prepare` (which
/// takes the backend's migration lock, see [`migration_lock`], or sets SQLite up).
fn migrate<C>(
    backend: Backend,
    url: &str,
    migrations: EmbeddedMigrations,
    prepare: fn(&mut C) -> diesel::QueryResult<()>,
) -> Result<(), OpenError>
where
    C: Connection + MigrationHarness<C::Backend>,
{
    let name = backend.as_str();
    let mut conn = C::establish(url).map_err(|err| OpenError::Connect {
        backend: name,
        detail: err.to_string(),
    })?;
    prepare(&mut conn).map_err(|err| OpenError::Connect {
        backend: name,
        detail: err.to_string(),
    })?;
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|err| OpenError::Migrate {
            backend: name,
            detail: err.to_string(),
        })?;
    for version in applied {
        tracing::info!(backend = name, %version, "applied migration");
    }
    Ok(())
}

/// New async SQLite connections get the same preparation as sync ones, on the blocking pool.
fn sqlite_async_setup() -> ManagerConfig<AsyncSqliteConnection> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move {
            let mut conn = AsyncSqliteConnection::establish(&url).await?;
            conn.spawn_blocking(sqlite::prepare_connection)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    config
}

/// r2d2's hook for the same preparation on sync SQLite connections.
#[derive(Debug)]
struct SqliteSetup;

impl r2d2::CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        sqlite::prepare_connection(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn unknown(message: &str) -> DbError {
        Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned())).into()
    }

    #[test]
    fn a_server_stopped_under_the_query_is_unavailable() {
        // Messages seen from PostgreSQL 15 and MariaDB stopped mid-query.
        for message in [
            "terminating connection due to administrator command",
            "Lost connection to server during query",
            "Input/output error: Input/output error: connection closed",
            "MySQL server has gone away",
        ] {
            assert!(
                matches!(unknown(message), DbError::Unavailable(_)),
                "{message}"
            );
        }
    }

    #[test]
    fn other_database_errors_stay_query_errors() {
        for message in [
            "relation \"users\" does not exist",
            "syntax error at or near \"SELEC\"",
            "value too long for type character varying(64)",
        ] {
            assert!(matches!(unknown(message), DbError::Query(_)), "{message}");
        }
        assert!(matches!(DbError::from(Error::NotFound), DbError::Query(_)));
        assert!(matches!(
            DbError::from(Error::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                Box::new("duplicate key".to_owned())
            )),
            DbError::Duplicate("username")
        ));
        for message in [
            "UNIQUE constraint failed: users.email",
            "Duplicate entry 'a@example.com' for key 'users_email_key'",
        ] {
            assert_eq!(taken_field(None, message), "email", "{message}");
        }
        assert_eq!(
            taken_field(Some("users_email_key"), "duplicate key value"),
            "email"
        );
        assert_eq!(
            taken_field(None, "UNIQUE constraint failed: users.username"),
            "username"
        );
    }
}
