//! Every query of the database lessons, each written once for SQLite, PostgreSQL and MySQL.
//!
//! This is the Rust form of the tutorial's `databases` lesson (one async API over several
//! database kinds). diesel-async's connection types share no object-safe trait, so instead of
//! `dyn Connection` the macros below check out a connection of whichever backend the service
//! runs on and paste the *same* query into each arm; the compiler checks it against all
//! three backends. Only the database-side sleep and the hand-written SQL of the `raw` variant
//! need a per-backend arm, because the dialects really differ there.
//!
//! Every query uses bound parameters: user input never becomes SQL text.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Double};
use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
use diesel::{OptionalExtension, QueryResult, define_sql_function};

use super::models::{NewUser, User, UserChanges};
use super::pool::{query_span, record_query, record_statement, statement_of};
use super::schema::users;
use super::sqlite::stallscope_sleep;
use super::{AnyPool, AnySyncPool, Database, DbError};
use tracing::Instrument;

define_sql_function! {
    /// PostgreSQL's `pg_sleep(seconds)`. It returns `void`, a type diesel does not model, so
    /// it is only ever `execute`d, never loaded: the declared `Integer` is never read.
    fn pg_sleep(seconds: Double) -> diesel::sql_types::Integer;
}

define_sql_function! {
    /// MySQL's `SLEEP(seconds)`, which returns 0.
    #[sql_name = "SLEEP"]
    fn mysql_sleep(seconds: Double) -> diesel::sql_types::Integer;
}

/// Runs `$body` on a connection checked out of one backend's async pool and times it, all
/// within the pool's query timeout (plus `allowing`, the wait a lesson asks the database for):
/// past it the query is dropped and the answer is 503, so a frozen database costs a request
/// that long, not forever. `$body` is an expression of type `QueryResult<T>` that may use
/// `.await` and `?`.
macro_rules! run_async {
    ($pool:expr, $operation:literal, |$conn:ident| $body:expr) => {
        run_async!($pool, $operation, allowing Duration::ZERO, |$conn| $body)
    };
    ($pool:expr, $operation:literal, allowing $extra:expr, |$conn:ident| $body:expr) => {{
        let pool = $pool;
        let limit = pool.query_timeout + $extra;
        let query = async {
            let mut lease = pool.acquire().await?;
            let $conn = &mut *lease;
            let started = Instant::now();
            let result: QueryResult<_> = async move { $body }
                .instrument(query_span(pool.backend, $operation))
                .await;
            record_query(pool.backend, $operation, started);
            result.map_err(DbError::from)
        };
        match tokio::time::timeout(limit, query).await {
            Ok(answered) => answered,
            Err(_) => Err(DbError::Unavailable(format!(
                "{} gave no answer within {} ms (--db-query-timeout-ms)",
                pool.backend.as_str(),
                limit.as_millis()
            ))),
        }
    }};
}

/// The same query on whichever async connection the service has.
macro_rules! on_async_conn {
    ($db:expr, $operation:literal, |$conn:ident| $body:expr) => {{
        use diesel_async::RunQueryDsl;
        match $db.pool() {
            AnyPool::Postgres(pool) => run_async!(pool, $operation, |$conn| $body),
            AnyPool::Mysql(pool) => run_async!(pool, $operation, |$conn| $body),
            AnyPool::Sqlite(pool) => run_async!(pool, $operation, |$conn| $body),
        }
    }};
}

/// The sync twin of [`run_async`]: checkout and query both block the calling thread.
/// `$body` is an expression of type `QueryResult<T>`.
macro_rules! run_sync {
    ($pool:expr, $operation:literal, |$conn:ident| $body:expr) => {{
        let pool = $pool;
        let mut lease = pool.acquire_blocking()?;
        let $conn = &mut *lease;
        let started = Instant::now();
        let result: QueryResult<_> = query_span(pool.backend, $operation).in_scope(|| $body);
        record_query(pool.backend, $operation, started);
        result.map_err(DbError::from)
    }};
}

macro_rules! on_sync_conn {
    ($db:expr, $operation:literal, |$conn:ident| $body:expr) => {{
        use diesel::RunQueryDsl;
        match $db.sync_pool() {
            AnySyncPool::Postgres(pool) => run_sync!(pool, $operation, |$conn| $body),
            AnySyncPool::Mysql(pool) => run_sync!(pool, $operation, |$conn| $body),
            AnySyncPool::Sqlite(pool) => run_sync!(pool, $operation, |$conn| $body),
        }
    }};
}

/// Records `query`'s statement on the current query span, for the backend of `conn` (an
/// async connection).
fn record_async<C, Q>(_conn: &C, query: &Q)
where
    C: diesel_async::AsyncConnectionCore,
    C::Backend: Default,
    <C::Backend as diesel::backend::Backend>::QueryBuilder: Default,
    Q: diesel::query_builder::QueryFragment<C::Backend>,
{
    if let Some(sql) = statement_of::<C::Backend, _>(query) {
        record_statement(&sql);
    }
}

/// [`record_async`] for a sync connection.
fn record_sync<C, Q>(_conn: &C, query: &Q)
where
    C: diesel::Connection,
    C::Backend: Default,
    <C::Backend as diesel::backend::Backend>::QueryBuilder: Default,
    Q: diesel::query_builder::QueryFragment<C::Backend>,
{
    if let Some(sql) = statement_of::<C::Backend, _>(query) {
        record_statement(&sql);
    }
}

/// `SELECT 1` over a sync connection: is the database there? **Blocks the calling thread.**
pub fn ping_blocking(db: &Database) -> Result<(), DbError> {
    on_sync_conn!(db, "ping", |conn| diesel::sql_query("SELECT 1")
        .execute(conn)
        .map(drop))
}

/// Inserts a user and reads the row back. Two statements rather than `INSERT … RETURNING`,
/// because MySQL has no `RETURNING`; the username is unique, so it finds the row just written.
pub async fn insert_user(db: &Database, new: NewUser<'_>) -> Result<User, DbError> {
    on_async_conn!(db, "user_insert", |conn| {
        diesel::insert_into(users::table)
            .values(&new)
            .execute(conn)
            .await?;
        users::table
            .filter(users::username.eq(new.username))
            .select(User::as_select())
            .first(conn)
            .await
    })
}

/// The user with `id`, if any (the `async` variant's query).
pub async fn get_user(db: &Database, id: i64) -> Result<Option<User>, DbError> {
    on_async_conn!(db, "user_get", |conn| {
        let query = users::table.find(id).select(User::as_select()).limit(1);
        record_async(conn, &query);
        query.get_result(conn).await.optional()
    })
}

/// The user named `username`, if any. Bound, never interpolated: `x' OR '1'='1` is just a
/// name that no one has.
pub async fn find_user(db: &Database, username: &str) -> Result<Option<User>, DbError> {
    on_async_conn!(db, "user_find", |conn| users::table
        .filter(users::username.eq(username))
        .select(User::as_select())
        .first(conn)
        .await
        .optional())
}

/// Up to `limit` users with an id above `after`, by id: keyset pagination, so a page costs
/// the same however deep it is, and rows inserted meanwhile never shift the pages.
pub async fn list_users(db: &Database, after: i64, limit: i64) -> Result<Vec<User>, DbError> {
    on_async_conn!(db, "user_list", |conn| users::table
        .filter(users::id.gt(after))
        .order(users::id.asc())
        .limit(limit)
        .select(User::as_select())
        .load(conn)
        .await)
}

/// Applies `changes` to user `id` and reads the row back; `None` if there is no such user.
/// (The row is read back rather than trusting the affected-row count, which MySQL reports as
/// "rows changed", not "rows matched".)
pub async fn update_user(
    db: &Database,
    id: i64,
    changes: UserChanges,
) -> Result<Option<User>, DbError> {
    on_async_conn!(db, "user_update", |conn| {
        diesel::update(users::table.find(id))
            .set(&changes)
            .execute(conn)
            .await?;
        users::table
            .find(id)
            .select(User::as_select())
            .first(conn)
            .await
            .optional()
    })
}

/// Deletes user `id`; whether there was one.
pub async fn delete_user(db: &Database, id: i64) -> Result<bool, DbError> {
    on_async_conn!(db, "user_delete", |conn| diesel::delete(
        users::table.find(id)
    )
    .execute(conn)
    .await
    .map(|deleted| deleted > 0))
}

/// A delay inside the database, through the query builder. Each backend spells it its own
/// way; the waiting happens in the database (or, for SQLite, on the thread running the query).
pub async fn sleep(db: &Database, ms: u64) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    let wait = Duration::from_millis(ms);
    let seconds = ms as f64 / 1000.0;
    let millis = i64::try_from(ms).unwrap_or(i64::MAX);
    match db.pool() {
        AnyPool::Postgres(pool) => run_async!(pool, "sleep", allowing wait, |conn| {
            let query = diesel::select(pg_sleep(seconds));
            record_async(conn, &query);
            query.execute(conn).await.map(drop)
        }),
        AnyPool::Mysql(pool) => run_async!(pool, "sleep", allowing wait, |conn| {
            let query = diesel::select(mysql_sleep(seconds));
            record_async(conn, &query);
            query.execute(conn).await.map(drop)
        }),
        AnyPool::Sqlite(pool) => run_async!(pool, "sleep", allowing wait, |conn| {
            let query = diesel::select(stallscope_sleep(millis));
            record_async(conn, &query);
            query.execute(conn).await.map(drop)
        }),
    }
}

/// The `raw` variant (the aiomysql lesson): hand-written SQL through diesel-async's
/// `sql_query`, the id **bound** as a parameter. Only the placeholder differs: PostgreSQL
/// numbers them (`$1`), MySQL and SQLite use `?`.
pub async fn get_user_raw(db: &Database, id: i64) -> Result<Option<User>, DbError> {
    let sql = match db.backend() {
        super::Backend::Postgres => {
            "SELECT id, username, email, password_hash, created_at, updated_at FROM users WHERE id = $1"
        }
        super::Backend::Mysql | super::Backend::Sqlite => {
            "SELECT id, username, email, password_hash, created_at, updated_at FROM users WHERE id = ?"
        }
    };
    on_async_conn!(db, "user_get_raw", |conn| {
        record_statement(sql);
        diesel::sql_query(sql)
    }
    .bind::<BigInt, _>(id)
    .get_result::<User>(conn)
    .await
    .optional())
}

/// The `raw` variant's database-side delay, as hand-written SQL with a bound duration.
pub async fn sleep_raw(db: &Database, ms: u64) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    let wait = Duration::from_millis(ms);
    let seconds = ms as f64 / 1000.0;
    let millis = i64::try_from(ms).unwrap_or(i64::MAX);
    let sql = match db.backend() {
        super::Backend::Postgres => "SELECT pg_sleep($1)",
        super::Backend::Mysql => "SELECT SLEEP(?)",
        super::Backend::Sqlite => "SELECT stallscope_sleep(?)",
    };
    match db.pool() {
        AnyPool::Postgres(pool) => run_async!(pool, "sleep_raw", allowing wait, |conn| {
            record_statement(sql);
            diesel::sql_query(sql)
                .bind::<Double, _>(seconds)
                .execute(conn)
                .await
                .map(drop)
        }),
        AnyPool::Mysql(pool) => run_async!(pool, "sleep_raw", allowing wait, |conn| {
            record_statement(sql);
            diesel::sql_query(sql)
                .bind::<Double, _>(seconds)
                .execute(conn)
                .await
                .map(drop)
        }),
        AnyPool::Sqlite(pool) => run_async!(pool, "sleep_raw", allowing wait, |conn| {
            record_statement(sql);
            diesel::sql_query(sql)
                .bind::<BigInt, _>(millis)
                .execute(conn)
                .await
                .map(drop)
        }),
    }
}

/// [`get_user`] on a **sync** connection: the same query builder code, but `first()` blocks
/// the calling thread for the checkout and the whole round trip.
pub fn get_user_sync(db: &Database, id: i64) -> Result<Option<User>, DbError> {
    on_sync_conn!(db, "user_get", |conn| {
        let query = users::table.find(id).select(User::as_select()).limit(1);
        record_sync(conn, &query);
        query.get_result(conn).optional()
    })
}

/// [`sleep`] on a **sync** connection: the calling thread waits out the whole delay.
pub fn sleep_sync(db: &Database, ms: u64) -> Result<(), DbError> {
    use diesel::RunQueryDsl;
    let seconds = ms as f64 / 1000.0;
    let millis = i64::try_from(ms).unwrap_or(i64::MAX);
    match db.sync_pool() {
        AnySyncPool::Postgres(pool) => run_sync!(pool, "sleep", |conn| {
            let query = diesel::select(pg_sleep(seconds));
            record_sync(conn, &query);
            query.execute(conn).map(drop)
        }),
        AnySyncPool::Mysql(pool) => run_sync!(pool, "sleep", |conn| {
            let query = diesel::select(mysql_sleep(seconds));
            record_sync(conn, &query);
            query.execute(conn).map(drop)
        }),
        AnySyncPool::Sqlite(pool) => run_sync!(pool, "sleep", |conn| {
            let query = diesel::select(stallscope_sleep(millis));
            record_sync(conn, &query);
            query.execute(conn).map(drop)
        }),
    }
}
