//! One replica at a time applies migrations. Replicas started together (a Deployment's
//! rollout, `docker compose up --scale`) would otherwise all find the same migrations pending
//! and race to create the same tables: one wins, the others fail to start.
//!
//! Each lock is taken on the short-lived connection that runs the migrations and belongs to
//! its session, so the server releases it when that connection closes, whatever happened.
//! The replicas that waited then find nothing pending. SQLite needs none: its write lock
//! already lets one migration transaction run at a time.

use diesel::mysql::MysqlConnection;
use diesel::pg::PgConnection;
use diesel::sql_types::{Integer, Nullable};
use diesel::{QueryResult, QueryableByName, RunQueryDsl, sql_query};

/// How long a replica waits for another's migrations before it gives up (MySQL's GET_LOCK
/// needs a bound; PostgreSQL's advisory lock waits as long as the holder's session lives).
const WAIT_SECONDS: u32 = 300;

/// PostgreSQL: a session-level advisory lock. Its key only has to differ from other
/// applications' keys in the same database: the bytes of "stallsco" as a number.
pub fn postgres(conn: &mut PgConnection) -> QueryResult<()> {
    const KEY: i64 = i64::from_be_bytes(*b"stallsco");
    sql_query(format!("SELECT pg_advisory_lock({KEY})"))
        .execute(conn)
        .map(drop)
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Nullable<Integer>)]
    locked: Option<i32>,
}

/// MySQL and MariaDB: a named lock. Lock names are server-wide, so the database's name is
/// part of it: two databases on one server migrate independently.
pub fn mysql(conn: &mut MysqlConnection) -> QueryResult<()> {
    let query = format!(
        "SELECT GET_LOCK(CONCAT('stallscope.migrations.', DATABASE()), {WAIT_SECONDS}) AS locked"
    );
    match sql_query(query).get_result::<Locked>(conn)?.locked {
        Some(1) => Ok(()),
        _ => Err(diesel::result::Error::QueryBuilderError(
            format!("another replica held the migration lock for over {WAIT_SECONDS} s").into(),
        )),
    }
}
