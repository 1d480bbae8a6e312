//! One error type for every handler, rendered as RFC 9457 `application/problem+json`.
//!
//! Handlers return `Result<_, AppError>`; the variant alone decides the status code, so a
//! handler can never answer 500 for bad input by accident.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A query parameter is missing, malformed or outside its allowed range.
    #[error("invalid query parameter `{name}`: {detail}")]
    InvalidParameter { name: &'static str, detail: String },

    /// `/{lesson}/{variant}` named a variant this lesson does not have.
    #[error("unknown {lesson} variant `{given}`")]
    UnknownVariant {
        lesson: &'static str,
        given: String,
        valid: &'static [&'static str],
    },

    /// No route matches the path.
    #[error("no route for `{path}`")]
    RouteNotFound { path: String },

    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,

    /// The upstream answered with an error or could not be reached.
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),

    /// The upstream did not answer in time.
    #[error("upstream timed out after {timeout_ms} ms")]
    UpstreamTimeout { timeout_ms: u64 },

    /// A stalling variant on a service started with `--no-stall-demos`.
    #[error(
        "`{path}` stalls a worker, and this service refuses the stalling variants (--no-stall-demos)"
    )]
    StallDemosOff { path: String },

    /// A lesson's stalling variants already hold all their slots (`--stall-demo-cap`).
    #[error(
        "{cap} requests of the {lesson} lesson's stalling variants are already running (--stall-demo-cap); try again in a moment"
    )]
    StallDemosBusy { lesson: &'static str, cap: u32 },

    /// Too many login attempts for one username or from one address.
    #[error("too many login attempts {what}; try again in {retry_after_secs} s")]
    TooManyRequests {
        what: &'static str,
        retry_after_secs: u64,
    },

    /// A route that is not a lesson took longer than `--request-timeout-ms`.
    #[error("the request took longer than --request-timeout-ms allows and was abandoned")]
    TimedOut,

    /// The service is shutting down or a dependency is not ready.
    #[error("not ready: {0}")]
    Unavailable(String),

    /// A bug on our side (a panicked blocking task, say). Never caused by input.
    #[error("internal error: {0}")]
    Internal(String),

    /// A path segment (an id) is malformed.
    #[error("invalid path parameter `{name}`: {detail}")]
    InvalidPathParameter { name: &'static str, detail: String },

    /// A JSON body parsed but some of its fields are missing or invalid; lists every one.
    #[error("{} invalid field(s): {}", fields.len(), field_names(fields))]
    Validation { fields: Vec<FieldError> },

    /// The body is not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    BadJson(String),

    /// The body is not declared as `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),

    /// The body is over the route's size limit.
    #[error("the body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },

    /// The resource does not exist (a user id, say).
    #[error("{0}")]
    NotFound(String),

    /// The write conflicts with existing data (a taken username).
    #[error("{0}")]
    Conflict(String),

    /// The credentials are wrong. Deliberately one message for "no such user" and "wrong
    /// password".
    #[error("invalid username or password")]
    Unauthorized,

    /// A query failed for a reason other than bad input or an unreachable database. The
    /// details go to the log only: database messages can quote stored values.
    #[error("database error: {0}")]
    Database(String),
}

/// One failing field of a JSON body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name in the request body.
    pub field: String,
    /// What is wrong with it (never its value: it may be a password).
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn field_names(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| f.field.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The RFC 9457 body. `type` stays `about:blank`, so `title` is the status phrase.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// Always `about:blank`: the status code says it all.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status code's reason phrase.
    pub title: &'static str,
    pub status: u16,
    /// What went wrong and how to fix the request.
    pub detail: String,
    /// The query parameter at fault, for 400s about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<&'static str>,
    /// The lesson's variants, for 404s about an unknown one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_variants: Option<&'static [&'static str]>,
    /// Every failing field, for 422s about a JSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_fields: Option<Vec<FieldError>>,
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            AppError::UnknownVariant { .. } | AppError::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            AppError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            AppError::Unavailable(_) | AppError::StallDemosBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            AppError::Internal(_) | AppError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::InvalidPathParameter { .. } | AppError::BadJson(_) => StatusCode::BAD_REQUEST,
            AppError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::StallDemosOff { .. } => StatusCode::FORBIDDEN,
        }
    }

    fn detail(&self) -> String {
        match self {
            AppError::UnknownVariant {
                lesson,
                given,
                valid,
            } => format!(
                "`{given}` is not a {lesson} variant; use one of: {}",
                valid.join(", ")
            ),
            AppError::RouteNotFound { path } => {
                format!("no route matches `{path}`; see /docs for the API")
            }
            AppError::Database(_) => {
                "the database reported an unexpected error; it has been logged".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// `Retry-After` on every 503.
pub const RETRY_AFTER_SECONDS: &str = "1";

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let retry_after = match &self {
            AppError::TooManyRequests {
                retry_after_secs, ..
            } => Some(HeaderValue::from(*retry_after_secs)),
            _ => None,
        };
        let problem = ProblemDoc {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            parameter: match &self {
                AppError::InvalidParameter { name, .. }
                | AppError::InvalidPathParameter { name, .. } => Some(name),
                _ => None,
            },
            valid_variants: match &self {
                AppError::UnknownVariant { valid, .. } => Some(valid),
                _ => None,
            },
            invalid_fields: match self {
                AppError::Validation { fields } => Some(fields),
                _ => None,
            },
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, seconds);
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            // A dependency down or the service draining: worth asking again, not at once.
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(err: tokio::task::JoinError) -> Self {
        AppError::Internal(format!("background task failed: {err}"))
    }
}
