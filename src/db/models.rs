//! Rows of `users`, and the one type that may leave the service.
//!
//! [`User`] carries the password hash and deliberately has no `Serialize`: a handler cannot
//! put it in a response by accident. Responses use [`UserView`], which has no hash field at
//! all. `User`'s `Debug` redacts the hash, so it cannot reach a log line either.

use chrono::{NaiveDateTime, SecondsFormat, Timelike, Utc};
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::schema::users;

/// A full row. `QueryableByName` lets the `raw` variant's hand-written SQL load it too.
#[derive(Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What `POST /users` inserts.
#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What `PATCH /users/{id}` may change; `None` fields are left alone.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub updated_at: NaiveDateTime,
}

/// A user as the API shows it: never the password, never the hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub email: String,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
    pub updated_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            created_at: rfc3339(user.created_at),
            updated_at: rfc3339(user.updated_at),
        }
    }
}

fn rfc3339(at: NaiveDateTime) -> String {
    at.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now, in UTC, cut to microseconds: the finest precision PostgreSQL and MySQL keep, so a
/// timestamp reads back the same on every backend.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    let micros = now.nanosecond() / 1_000 * 1_000;
    now.with_nanosecond(micros).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_view_never_show_the_hash() {
        let user = User {
            id: 7,
            username: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$v=19$secret-hash".into(),
            created_at: now(),
            updated_at: now(),
        };
        let debug = format!("{user:?}");
        assert!(!debug.contains("secret-hash"), "{debug}");
        let json = serde_json::to_string(&UserView::from(&user)).unwrap_or_default();
        assert!(json.contains("alice@example.com"), "{json}");
        assert!(
            !json.contains("argon2") && !json.contains("password"),
            "{json}"
        );
    }

    #[test]
    fn timestamps_are_utc_microseconds() {
        let at = now();
        assert_eq!(at.nanosecond() % 1_000, 0);
        let text = rfc3339(at);
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(text.split('.').nth(1).map(str::len), Some(7), "{text}");
    }
}
