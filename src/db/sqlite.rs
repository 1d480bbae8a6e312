//! What every SQLite connection needs before the lessons can use it.
//!
//! SQLite has no server-side `SLEEP()`, so the database-side delay of `/db/{variant}/sleep`
//! is a SQL function registered on each connection: `stallscope_sleep(ms)` puts the thread
//! *running the query* to sleep. That thread is the point of the lesson: with a sync
//! connection called inline it is a runtime worker (the stall); through diesel-async's
//! `SyncConnectionWrapper` it is a blocking-pool thread (no stall).

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel::{QueryResult, define_sql_function};

define_sql_function! {
    /// Sleeps `ms` milliseconds (0 to 60 000) on the thread running the query, returns `ms`.
    fn stallscope_sleep(ms: diesel::sql_types::BigInt) -> diesel::sql_types::BigInt;
}

/// Runs on every new connection, sync or wrapped.
pub fn prepare_connection(conn: &mut SqliteConnection) -> QueryResult<()> {
    // busy_timeout first: many pooled connections write one file, and without it a writer
    // that finds the file locked fails at once (SQLITE_BUSY) instead of waiting its turn.
    // WAL lets readers run while one writer writes.
    conn.batch_execute(
        "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
    )?;
    // Nondeterministic: it has a side effect (time passes), so SQLite must call it every time.
    stallscope_sleep_utils::register_nondeterministic_impl(conn, |ms: i64| {
        let ms = ms.clamp(0, 60_000);
        std::thread::sleep(Duration::from_millis(ms.unsigned_abs()));
        ms
    })
}
