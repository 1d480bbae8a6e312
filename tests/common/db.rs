//! Fresh databases for the database tests, on each of the three backends.
//!
//! SQLite needs nothing: a file in a temporary directory. PostgreSQL and MySQL come from the
//! throwaway servers `scripts/db-servers.sh` starts (`scripts/test` does it) and announces in
//! `STALLSCOPE_TEST_POSTGRES_URL` / `STALLSCOPE_TEST_MYSQL_URL`. Each test creates a database
//! of its own on that server (and drops it after), so tests running side by side never see
//! each other's rows and every test also exercises the migrations on an empty database.
//!
//! Without a server URL a test **skips with a printed reason** on a developer's machine, and
//! **fails** in CI (`CI=true`), where a silently skipped backend would be a hole in coverage.

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::Connection;
use diesel::connection::SimpleConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
        }
    }

    fn url_variable(self) -> &'static str {
        match self {
            Kind::Sqlite => "",
            Kind::Postgres => "STALLSCOPE_TEST_POSTGRES_URL",
            Kind::Mysql => "STALLSCOPE_TEST_MYSQL_URL",
        }
    }

    /// The script that stops and starts this backend's throwaway server (`stop` | `start`).
    pub fn ctl_variable(self) -> &'static str {
        match self {
            Kind::Sqlite => "",
            Kind::Postgres => "STALLSCOPE_TEST_POSTGRES_CTL",
            Kind::Mysql => "STALLSCOPE_TEST_MYSQL_CTL",
        }
    }
}

/// `Some(value)` of a server variable; `None` (after saying why) when it is unset outside CI.
/// Panics in CI.
pub fn server_setting(variable: &str, test: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{test}: {variable} is not set, and CI=true: run the tests through scripts/test, which starts the database servers (scripts/db-servers.sh)"
        ),
        _ => {
            eprintln!(
                "SKIPPED {test}: {variable} is not set (scripts/test starts throwaway PostgreSQL and MariaDB servers and sets it; or run `source scripts/db-servers.sh && db_servers_start`)"
            );
            None
        }
    }
}

/// A fresh, empty database; dropped (server) or deleted (SQLite) when this is dropped.
pub struct TestDb {
    pub kind: Kind,
    /// What to give stallscope as `DATABASE_URL`.
    pub url: String,
    server: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new database of `kind`, or `None` when its server is not configured (see module docs).
    pub fn fresh(kind: Kind, test: &str) -> Option<Self> {
        if kind == Kind::Sqlite {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("users.db").display());
            return Some(Self {
                kind,
                url,
                server: None,
                _dir: Some(dir),
            });
        }
        let server_url = server_setting(kind.url_variable(), test)?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "stallscope_t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(kind, &server_url, &format!("CREATE DATABASE {name}"));
        Some(Self {
            kind,
            url: with_database(&server_url, &name),
            server: Some((server_url, name)),
            _dir: None,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server_url, name)) = &self.server {
            let drop_sql = match self.kind {
                Kind::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS {name}"),
            };
            // Best effort: a server stopped by a failed fault test must not turn one failure
            // into a panic during unwinding.
            if let Err(err) = try_admin(self.kind, server_url, &drop_sql) {
                eprintln!("could not drop test database {name}: {err}");
            }
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

fn admin(kind: Kind, url: &str, sql: &str) {
    try_admin(kind, url, sql).unwrap_or_else(|err| panic!("{sql} on {}: {err}", kind.name()));
}

fn try_admin(kind: Kind, url: &str, sql: &str) -> Result<(), String> {
    let run = |conn: &mut dyn SimpleConnection| conn.batch_execute(sql).map_err(|e| e.to_string());
    match kind {
        Kind::Postgres => {
            let mut conn = diesel::PgConnection::establish(url).map_err(|e| e.to_string())?;
            run(&mut conn)
        }
        Kind::Mysql => {
            let mut conn = diesel::MysqlConnection::establish(url).map_err(|e| e.to_string())?;
            run(&mut conn)
        }
        Kind::Sqlite => Ok(()),
    }
}
