//! Shared state handed to every handler.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::LimitArgs;
use crate::db::Database;
use crate::db::login_limits::LoginLimits;
use crate::db::password::Passwords;
use crate::error::AppError;
use crate::routes::admission::Admission;
use crate::telemetry::{Telemetry, trace_context};
use tracing::Instrument;

/// Everything handlers share, behind one `Arc`.
///
/// axum clones the state for every request (each extractor and handler takes its own), so
/// a clone should be one reference count: cloning the fields one by one was ten-odd counts
/// shared between the workers, and a lock (`CancellationToken::clone` takes one).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What [`AppState`] holds. Fields that work leaves the request with (to the blocking pool,
/// to rayon) are handles of their own, cloned only there.
pub struct SharedState {
    pub limits: Arc<LimitArgs>,
    pub upstream: UpstreamClients,
    /// rayon pool for the CPU lesson, one thread per core.
    pub cpu_pool: Arc<rayon::ThreadPool>,
    /// Cancelled when shutdown begins: `/readyz` turns 503 and the server drains.
    pub shutdown: CancellationToken,
    pub telemetry: Arc<Telemetry>,
    /// The database lessons' pools (see [`crate::db`]).
    pub db: Database,
    /// argon2id hashing for `/users` and `/login`, on the blocking pool.
    pub passwords: Passwords,
    /// Login attempts per username and per client address.
    pub login_limits: LoginLimits,
    /// The live page's settings, known once the service listens.
    pub page: PageSettings,
    /// The caps on stall demos and on requests in flight (`crate::routes::admission`).
    pub admission: Admission,
}

impl AppState {
    /// Builds the state; the rayon pool starts its threads here.
    pub fn new(
        limits: LimitArgs,
        upstream_base_url: String,
        upstream_timeout: Duration,
        shutdown: CancellationToken,
        telemetry: Arc<Telemetry>,
        db: Database,
    ) -> Result<Self, StateError> {
        let cpu_pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("rayon-cpu-{i}"))
            .build()?;
        let login_limits = LoginLimits::new(
            limits.login_limit_per_username,
            limits.login_limit_per_client,
        );
        Ok(Self(Arc::new(SharedState {
            admission: Admission::new(&limits),
            limits: Arc::new(limits),
            upstream: UpstreamClients::new(upstream_base_url, upstream_timeout)?,
            cpu_pool: Arc::new(cpu_pool),
            shutdown,
            telemetry,
            db,
            passwords: Passwords::new(),
            login_limits,
            page: PageSettings::default(),
        })))
    }
}

/// What the live page (`crate::page`) learns only once the service listens.
#[derive(Debug, Default)]
pub struct PageSettings {
    /// The service's own URL, which the page's experiments send their requests to.
    pub own_url: OnceLock<String>,
    /// A trace UI's URL with `{trace_id}` in it (`--trace-url`), for links from stalls.
    pub trace_url: OnceLock<String>,
    /// Whether one of the page's experiments is running (one at a time).
    pub experiment_running: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not start the rayon pool: {0}")]
    Rayon(#[from] rayon::ThreadPoolBuildError),
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// The two HTTP clients of the upstream lesson, pointed at one slow upstream.
#[derive(Clone)]
pub struct UpstreamClients {
    /// Async client (the aiohttp of this port).
    pub http: reqwest::Client,
    /// Synchronous client (the `requests` of this port).
    pub sync: ureq::Agent,
    base_url: Arc<str>,
    /// `server.address` and `server.port` of the client spans, parsed from `base_url` once.
    server: (Arc<str>, u16),
    timeout: Duration,
}

impl UpstreamClients {
    fn new(base_url: String, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        let sync: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        let server = reqwest::Url::parse(&base_url)
            .ok()
            .and_then(|url| Some((url.host_str()?.into(), url.port_or_known_default()?)))
            .unwrap_or_else(|| ("unknown".into(), 0));
        Ok(Self {
            http,
            sync,
            base_url: base_url.trim_end_matches('/').into(),
            server,
            timeout,
        })
    }

    /// `GET {base}/slow?ms=N`.
    pub fn slow_url(&self, ms: u64) -> String {
        format!("{}/slow?ms={ms}", self.base_url)
    }

    /// A client span for one call, its `traceparent` headers, and the URL.
    fn client_span(&self, ms: u64) -> (tracing::Span, http::HeaderMap, String) {
        let url = self.slow_url(ms);
        let span = tracing::info_span!(
            "HTTP client request",
            otel.name = "GET",
            otel.kind = "client",
            http.request.method = "GET",
            url.full = %url,
            server.address = &*self.server.0,
            server.port = i64::from(self.server.1),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let mut headers = http::HeaderMap::new();
        trace_context::inject(&span, &mut headers);
        (span, headers, url)
    }

    /// One async round trip with reqwest; the task waits without holding its worker.
    pub async fn call_async(&self, ms: u64) -> Result<Value, AppError> {
        let (span, headers, url) = self.client_span(ms);
        let mut status = None;
        let result = async {
            let response = self
                .http
                .get(url)
                .headers(headers)
                .send()
                .await
                .map_err(|err| self.reqwest_error(err))?;
            status = Some(response.status().as_u16());
            response
                .error_for_status()
                .map_err(|err| self.reqwest_error(err))?
                .json()
                .await
                .map_err(|err| self.reqwest_error(err))
        }
        .instrument(span.clone())
        .await;
        record_outcome(&span, status, result.as_ref().err());
        result
    }

    /// One synchronous round trip; blocks the calling thread until it is done.
    pub fn call_sync(&self, ms: u64) -> Result<Value, AppError> {
        let (span, headers, url) = self.client_span(ms);
        let _entered = span.enter();
        let mut answered = None;
        let mut call = || {
            let mut request = self.sync.get(&url);
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            // ureq reports 4xx/5xx as errors; with this off the status is recorded first.
            let mut response = request
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .map_err(|err| self.ureq_error(err))?;
            let status = response.status();
            answered = Some(status.as_u16());
            if status.is_client_error() || status.is_server_error() {
                return Err(AppError::UpstreamFailed(format!(
                    "the upstream answered {status}"
                )));
            }
            let text = response
                .body_mut()
                .read_to_string()
                .map_err(|err| self.ureq_error(err))?;
            serde_json::from_str(&text).map_err(|err| {
                AppError::UpstreamFailed(format!("the upstream sent invalid JSON: {err}"))
            })
        };
        let result = call();
        record_outcome(&span, answered, result.as_ref().err());
        result
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Maps a reqwest failure: timeouts are 504, everything else 502.
    pub fn reqwest_error(&self, err: reqwest::Error) -> AppError {
        if err.is_timeout() {
            AppError::UpstreamTimeout {
                timeout_ms: self.timeout_ms(),
            }
        } else {
            AppError::UpstreamFailed(describe_chain(&err))
        }
    }

    fn ureq_error(&self, err: ureq::Error) -> AppError {
        match err {
            ureq::Error::Timeout(_) => AppError::UpstreamTimeout {
                timeout_ms: self.timeout_ms(),
            },
            other => AppError::UpstreamFailed(describe_chain(&other)),
        }
    }
}

/// A client span's outcome, once: `http.response.status_code` as an integer (a `u16` would
/// arrive as text: tracing-opentelemetry records unsigned fields through `Debug`), and for a
/// failed call ERROR status with `error.type`: the status code when the upstream answered
/// one, `timeout` when it did not answer in time, `_OTHER` when the connection failed.
fn record_outcome(span: &tracing::Span, status: Option<u16>, failure: Option<&AppError>) {
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    let Some(failure) = failure else { return };
    span.record("otel.status_code", "ERROR");
    let error_type = match (failure, status) {
        (AppError::UpstreamTimeout { .. }, _) => "timeout".to_owned(),
        (_, Some(status)) if status >= 400 => status.to_string(),
        _ => "_OTHER".to_owned(),
    };
    span.record("error.type", error_type.as_str());
}

/// `err: cause: cause…`, since reqwest's top-level message alone rarely says what failed.
fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
