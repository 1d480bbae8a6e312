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

    /// The service is shutting down or a dependency is not ready.
    #[error("not ready: {0}")]
    Unavailable(String),

    /// A bug on our side (a panicked blocking task, say). Never caused by input.
    #[error("internal error: {0}")]
    Internal(String),
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
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let problem = ProblemDoc {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            parameter: match &self {
                AppError::InvalidParameter { name, .. } => Some(name),
                _ => None,
            },
            valid_variants: match &self {
                AppError::UnknownVariant { valid, .. } => Some(valid),
                _ => None,
            },
        };
        let mut response = (status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(err: tokio::task::JoinError) -> Self {
        AppError::Internal(format!("background task failed: {err}"))
    }
}
