//! Which database a `DATABASE_URL` names, and the connection string each driver wants.

use super::OpenError;

/// The three backends behind one query code path. The names are metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// The OpenTelemetry `db.system.name` value.
    pub fn db_system(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
            Backend::Mysql => "mysql",
        }
    }

    /// Parses `DATABASE_URL`: the backend, and what to hand its driver (for SQLite the file
    /// path, for the servers the URL unchanged).
    pub fn from_url(url: &str) -> Result<(Self, String), OpenError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            // `sqlite://stallscope.db` is relative, `sqlite:///var/lib/x.db` absolute.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(OpenError::InvalidUrl(
                    "a sqlite:// URL needs a file path, e.g. sqlite://stallscope.db".into(),
                ));
            }
            if path.contains(":memory:") || path.contains("mode=memory") {
                return Err(OpenError::InvalidUrl(
                    "in-memory SQLite is not supported: every pooled connection would see its own empty database; use a file".into(),
                ));
            }
            return Ok((Backend::Sqlite, path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok((Backend::Postgres, url.to_owned()));
        }
        if url.starts_with("mysql://") {
            return Ok((Backend::Mysql, url.to_owned()));
        }
        // Never echo the URL: it may carry a password.
        let scheme: String = url
            .split(':')
            .next()
            .unwrap_or_default()
            .chars()
            .take(20)
            .collect();
        Err(OpenError::InvalidUrl(format!(
            "unsupported database URL scheme `{scheme}`; use sqlite://PATH, postgres://… or mysql://…"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        let parsed = |url: &str| Backend::from_url(url).ok();
        assert_eq!(
            parsed("sqlite://stallscope.db"),
            Some((Backend::Sqlite, "stallscope.db".into()))
        );
        assert_eq!(
            parsed("sqlite:///tmp/x.db"),
            Some((Backend::Sqlite, "/tmp/x.db".into()))
        );
        assert_eq!(
            parsed("postgres://u:p@127.0.0.1:5432/db").map(|(b, _)| b),
            Some(Backend::Postgres)
        );
        assert_eq!(
            parsed("postgresql://127.0.0.1/db").map(|(b, _)| b),
            Some(Backend::Postgres)
        );
        assert_eq!(
            parsed("mysql://root@127.0.0.1:3306/db").map(|(b, _)| b),
            Some(Backend::Mysql)
        );
    }

    #[test]
    fn rejects_the_rest_without_echoing_secrets() {
        for url in [
            "sqlite://",
            "sqlite://:memory:",
            "oracle://scott:tiger@db/x",
            "",
        ] {
            match Backend::from_url(url) {
                Err(OpenError::InvalidUrl(message)) => {
                    assert!(!message.contains("tiger"), "{message}")
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }
}
