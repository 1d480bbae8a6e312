//! Lesson 6 as an API: CRUD on `users` through diesel models awaited with diesel-async (the
//! tutorial's tortoise ORM), plus `POST /login`.
//!
//! Passwords are hashed with argon2id on the blocking pool (see [`crate::db::password`]) and
//! never leave the service: responses carry [`UserView`], which has no hash field; the
//! password is never logged, traced or put in a metric label.
//!
//! Bodies are read as raw JSON first and then checked field by field, so one 422 lists
//! *every* failing field (a typed `Json<T>` would stop at the first serde error).

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::Observed;
use super::account_fields::{
    CreateUser, EMAIL_RULE, Login, USERNAME_RULE, UpdateUser, is_email, is_registrable_username,
    password_problem,
};
use super::params::QueryParams;
use super::problems::{
    BadId, BodyTooLarge, DatabaseUnreachable, DatabaseUnreachableOrHasherBusy, NoSuchUser, NotJson,
};
use crate::db::models::{NewUser, UserChanges, UserView, now};
use crate::db::{DbError, queries};
use crate::error::{AppError, FieldError, ProblemDoc};
use crate::state::AppState;

/// Largest JSON body `/users` and `/login` accept. A user is three short strings; anything
/// near this is not a user.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Most users one page may hold.
pub const MAX_PAGE: u64 = 100;
const DEFAULT_PAGE: u64 = 20;

/// `/users`, `/users/{id}` and `/login`, with their body limit.
pub fn router(observed: &Observed) -> Router<AppState> {
    Router::new()
        .route("/users", observed.post(create).merge(observed.get(list)))
        .route(
            "/users/{id}",
            observed
                .get(fetch)
                .merge(observed.patch(update))
                .merge(observed.delete(remove)),
        )
        .route("/login", observed.post(login))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// A page of users. `next_cursor` is the `cursor` for the next page; absent on the last.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<UserView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// What a successful login answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResult {
    pub user: UserView,
}

/// Create a user: `{"username", "email", "password"}`.
#[utoipa::path(post, path = "/users", tag = "users", operation_id = "create_user",
    request_body(content = CreateUser, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `Location` names the new user", body = UserView),
        (status = 400, description = "Not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Username or email taken (the problem says which)", body = ProblemDoc, content_type = "application/problem+json"),
        BodyTooLarge,
        NotJson,
        (status = 422, description = "Invalid fields, all listed in `invalid_fields`", body = ProblemDoc, content_type = "application/problem+json"),
        DatabaseUnreachableOrHasherBusy,
    ))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, AppError> {
    let mut fields = Fields::parse(body, &["username", "email", "password"])?;
    let username = fields
        .required("username")
        .filter(|u| check_username(&mut fields, u));
    let email = fields
        .required("email")
        .filter(|e| check_email(&mut fields, e));
    let password = fields
        .required("password")
        .filter(|p| check_password(&mut fields, p));
    fields.finish()?;
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(AppError::Internal(
            "validation passed without all fields".into(),
        ));
    };
    let password_hash = state.passwords.hash(password).await?;
    let at = now();
    let new = NewUser {
        username: &username,
        email: &email,
        password_hash: &password_hash,
        created_at: at,
        updated_at: at,
    };
    let user = queries::insert_user(&state.db, new)
        .await
        .map_err(|err| match err {
            DbError::Duplicate("email") => {
                AppError::Conflict("an account with this email already exists".into())
            }
            DbError::Duplicate(_) => {
                AppError::Conflict(format!("the username `{username}` is already taken"))
            }
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/users/{}", user.id))],
        Json(UserView::from(&user)),
    ))
}

/// One user by id.
#[utoipa::path(get, path = "/users/{id}", tag = "users", operation_id = "get_user",
    params(("id" = i64, Path, minimum = 1, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        BadId,
        NoSuchUser,
        DatabaseUnreachable,
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    let user = queries::get_user(&state.db, id)
        .await?
        .ok_or_else(|| no_such_user(id))?;
    Ok(Json(UserView::from(&user)))
}

/// Users by id, a page at a time (`limit` 1–100, default 20; `cursor`: the previous page's
/// `next_cursor`), or the one user named `username`.
#[utoipa::path(get, path = "/users", tag = "users", operation_id = "list_users",
    params(
        ("username" = Option<String>, Query, description = "Exact username: the page holds that user or nobody"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100, description = "Users per page, 1 to 100 (default 20)"),
        ("cursor" = Option<i64>, Query, minimum = 0, description = "Only users with a larger id: the previous page's next_cursor"),
    ),
    responses(
        (status = 200, description = "A page", body = UserPage),
        (status = 400, description = "Bad limit or cursor", body = ProblemDoc, content_type = "application/problem+json"),
        DatabaseUnreachable,
    ))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<UserPage>, AppError> {
    let params = QueryParams::parse(query.as_deref());
    // Validated whatever else is given: a bad `limit` beside a `username` is still a 400.
    let limit = params.optional_u64("limit", 1, MAX_PAGE, DEFAULT_PAGE)?;
    let cursor = params.optional_u64("cursor", 0, i64::MAX.unsigned_abs(), 0)?;
    if let Some(username) = params.text("username") {
        // A name that could never be registered matches nobody, without asking the database:
        // PostgreSQL refuses a NUL byte (a 500 otherwise), MariaDB's collation ignores
        // trailing spaces (`alice ` would find `alice`).
        let found = if is_registrable_username(username) {
            queries::find_user(&state.db, username).await?
        } else {
            None
        };
        return Ok(Json(UserPage {
            users: found.iter().map(UserView::from).collect(),
            next_cursor: None,
        }));
    }
    let (limit, cursor) = (to_i64(limit), to_i64(cursor));
    // One extra row says whether another page exists, without a COUNT.
    let mut users = queries::list_users(&state.db, cursor, limit + 1).await?;
    let more = users.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        users.last().map(|u| u.id)
    } else {
        None
    };
    Ok(Json(UserPage {
        users: users.iter().map(UserView::from).collect(),
        next_cursor,
    }))
}

/// Change a user's `email` and/or `password` (the username is fixed).
#[utoipa::path(patch, path = "/users/{id}", tag = "users", operation_id = "update_user",
    params(("id" = i64, Path, minimum = 1, description = "The user's id")),
    request_body(content = UpdateUser, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated user", body = UserView),
        (status = 400, description = "Bad id or not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        NoSuchUser,
        BodyTooLarge,
        NotJson,
        (status = 409, description = "The email belongs to another account", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, all listed", body = ProblemDoc, content_type = "application/problem+json"),
        DatabaseUnreachableOrHasherBusy,
    ))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    let mut fields = Fields::parse(body, &["email", "password"])?;
    let email = fields
        .optional("email")
        .filter(|e| check_email(&mut fields, e));
    let password = fields
        .optional("password")
        .filter(|p| check_password(&mut fields, p));
    if email.is_none() && password.is_none() && fields.errors.is_empty() {
        fields.fail("body", "give at least one of `email`, `password`");
    }
    fields.finish()?;
    let password_hash = match password {
        Some(password) => Some(state.passwords.hash(password).await?),
        None => None,
    };
    let changes = UserChanges {
        email,
        password_hash,
        updated_at: now(),
    };
    let user = queries::update_user(&state.db, id, changes)
        .await?
        .ok_or_else(|| no_such_user(id))?;
    Ok(Json(UserView::from(&user)))
}

/// Delete a user.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", operation_id = "delete_user",
    params(("id" = i64, Path, minimum = 1, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        BadId,
        NoSuchUser,
        DatabaseUnreachable,
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = parse_id(&id)?;
    if queries::delete_user(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_user(id))
    }
}

/// Check a username and password: `{"username", "password"}`.
///
/// Whether the user exists or not, the same work happens in the same order (one lookup, one
/// argon2 verification, against a dummy hash when there is no user), and both failures get
/// the same 401: neither the answer nor its timing says which usernames exist.
#[utoipa::path(post, path = "/login", tag = "users", operation_id = "login",
    request_body(content = Login, content_type = "application/json"),
    responses(
        (status = 200, description = "The password matches", body = LoginResult),
        (status = 400, description = "Not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username or password", body = ProblemDoc, content_type = "application/problem+json"),
        BodyTooLarge,
        NotJson,
        (status = 422, description = "Missing or unknown fields", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts for this username or from this address: retry after `Retry-After` seconds", body = ProblemDoc, content_type = "application/problem+json"),
        DatabaseUnreachableOrHasherBusy,
    ))]
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<LoginResult>, AppError> {
    let mut fields = Fields::parse(body, &["username", "password"])?;
    let username = fields.required("username");
    let password = fields.required("password");
    fields.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(AppError::Internal(
            "validation passed without all fields".into(),
        ));
    };
    // Before any hashing: a flood is turned away for the price of a map lookup.
    let client = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    state.login_limits.attempt(&username, client)?;
    // As in `list`: a name no one can have is looked up nowhere; the password is still
    // checked against a dummy hash, so the answer takes as long as for a real name.
    let user = if is_registrable_username(&username) {
        queries::find_user(&state.db, &username).await?
    } else {
        None
    };
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    if state.passwords.verify(password, stored).await?
        && let Some(user) = user
    {
        return Ok(Json(LoginResult {
            user: UserView::from(&user),
        }));
    }
    Err(AppError::Unauthorized)
}

/// A user id from the path: a positive whole number.
pub fn parse_id(raw: &str) -> Result<i64, AppError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(AppError::InvalidPathParameter {
            name: "id",
            detail: format!(
                "`{}` is not a user id; ids are whole numbers from 1",
                raw.chars().take(40).collect::<String>()
            ),
        }),
    }
}

fn no_such_user(id: i64) -> AppError {
    AppError::NotFound(format!("there is no user with id {id}"))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A JSON object body being validated; collects every failing field.
struct Fields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// The body as a JSON object, or the right 400/413/415/422. Fields outside `allowed` are
    /// errors too (a PATCH of `username` must not be silently ignored).
    fn parse(body: Result<Json<Value>, JsonRejection>, allowed: &[&str]) -> Result<Self, AppError> {
        let Json(value) = body.map_err(rejection)?;
        let Value::Object(object) = value else {
            return Err(AppError::Validation {
                fields: vec![FieldError::new("body", "must be a JSON object")],
            });
        };
        let errors = object
            .keys()
            .filter(|key| !allowed.contains(&key.as_str()))
            .map(|key| {
                FieldError::new(
                    key.chars().take(64).collect::<String>(),
                    format!("unknown field; allowed: {}", allowed.join(", ")),
                )
            })
            .collect();
        Ok(Self { object, errors })
    }

    fn fail(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }

    /// A string field that must be present.
    fn required(&mut self, field: &str) -> Option<String> {
        if !self.object.contains_key(field) {
            self.fail(field, "is required");
            return None;
        }
        self.optional(field)
    }

    /// A string field that may be absent.
    fn optional(&mut self, field: &str) -> Option<String> {
        match self.object.remove(field) {
            None => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => {
                self.fail(field, "must be a string");
                None
            }
        }
    }

    fn finish(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation {
                fields: self.errors,
            })
        }
    }
}

/// Maps axum's JSON extractor failures onto problem documents.
fn rejection(rejection: JsonRejection) -> AppError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: BODY_LIMIT },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(
            "the body must be JSON, sent with `Content-Type: application/json`".into(),
        ),
        _ => AppError::BadJson(rejection.body_text()),
    }
}

fn check_username(fields: &mut Fields, username: &str) -> bool {
    let valid = is_registrable_username(username);
    if !valid {
        fields.fail("username", USERNAME_RULE);
    }
    valid
}

fn check_email(fields: &mut Fields, email: &str) -> bool {
    let valid = is_email(email);
    if !valid {
        fields.fail("email", EMAIL_RULE);
    }
    valid
}

fn check_password(fields: &mut Fields, password: &str) -> bool {
    match password_problem(password) {
        Some(problem) => {
            fields.fail("password", problem);
            false
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: Value, allowed: &[&str]) -> Fields {
        Fields::parse(Ok(Json(body)), allowed)
            .unwrap_or_else(|err| panic!("expected an object: {err}"))
    }

    fn failing(fields: Fields) -> Vec<String> {
        match fields.finish() {
            Err(AppError::Validation { fields }) => fields.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn every_failing_field_is_listed_and_passwords_never_echoed() {
        let mut f = fields(
            serde_json::json!({"username": "x", "email": 5, "password": "short", "admin": true}),
            &["username", "email", "password"],
        );
        let _ = f.required("username").filter(|u| check_username(&mut f, u));
        let _ = f.required("email");
        let _ = f.required("password").filter(|p| check_password(&mut f, p));
        let err = f.finish().expect_err("invalid");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("short"), "{text}");
        let AppError::Validation { fields: listed } = err else {
            panic!("expected validation")
        };
        let mut names: Vec<_> = listed.into_iter().map(|f| f.field).collect();
        names.sort();
        assert_eq!(names, ["admin", "email", "password", "username"]);

        let mut f = fields(serde_json::json!({}), &["username", "email", "password"]);
        for name in ["username", "email", "password"] {
            assert!(f.required(name).is_none());
        }
        assert_eq!(failing(f), ["username", "email", "password"]);
    }

    #[test]
    fn ids_are_positive_whole_numbers() {
        assert_eq!(parse_id("42").ok(), Some(42));
        for bad in ["0", "-1", "abc", "1 OR 1=1", "99999999999999999999"] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}
