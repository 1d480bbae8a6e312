//! The one layer every request passes through on its way to a handler: it resolves the
//! bounded labels (route template, variant), instruments the handler future with the
//! variant's task monitor, tags each poll for the stall watchdog, and records the HTTP
//! metrics of the OpenTelemetry semantic conventions. Handlers know nothing of it.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use tokio_metrics::TaskMonitorCore;
use tower::{Layer, Service};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Telemetry;
use super::clock::Stamp;
pub use super::http_metrics::UNMATCHED_ROUTE;
use super::http_metrics::{RouteInstruments, RouteKey, span_name};
use super::id_header;
use super::in_flight::Ticket;
use super::in_request::InRequest;
use super::metric_names::{REFUSED_IN_FLIGHT_CAP, REQUESTS_REFUSED, STALL_VICTIMS};
use super::poll_stats::{Measured, PollStats};
use super::request_context::{self, InlineText, MAX_PATH, MAX_REQUEST_ID, RequestContext};
use super::span_ids::{self, SpanIds};
use super::stall_log::Exposure;
use super::stall_log::{StallCallback, StallReport};
use super::trace_context;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The name of every request's server span (the span's `otel.name` is `{method} {route}`).
pub const SERVER_SPAN: &str = "HTTP request";

/// `variant` of routes without variants, and of unknown variant names.
pub const NO_VARIANT: &str = "none";
pub const INVALID_VARIANT: &str = "invalid";

/// The route layer, as a tower [`Layer`]: the service wraps each handler in it through
/// `Handler::layer`, or a router takes it as a whole (`Router::layer`); requests are labelled
/// by their `MatchedPath` either way.
///
/// Hand-written rather than `axum::middleware::from_fn`, which boxes every request's future
/// and clones the inner service per request: on a zero-work endpoint those two allocations
/// and the copy of a large future into the box were a good part of the layer's cost.
#[derive(Clone)]
pub struct ObserveLayer {
    telemetry: Arc<Telemetry>,
}

impl ObserveLayer {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            telemetry: Arc::clone(&self.telemetry),
        }
    }
}

/// The service [`ObserveLayer`] wraps each route in.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObservedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Stamp::now();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED_ROUTE, |m| intern(m.as_str()));
        let variant = self.telemetry.variants().label(route, request.uri().path());
        let method = method_label(request.method());
        let telemetry = &self.telemetry;
        let instruments = telemetry.http.get(
            RouteKey {
                route,
                variant,
                method,
            },
            &telemetry.tasks,
            &telemetry.watchdog,
        );
        let Begun {
            context,
            span,
            request_id,
        } = begin_request(&request, &instruments.span_name, route, variant, method);
        let listed = telemetry.in_flight.enter(&context, started);
        // Past the in-flight cap the handler is never called: the answer is a 503, counted
        // and traced like any other.
        let inner = listed.is_some().then(|| {
            let handler = InRequest::new(
                self.inner.call(request),
                Arc::clone(&context),
                Some(&instruments.watchdog),
            );
            // Poll statistics go on a sampled span only: nothing else reads them.
            let measured = Measured::new(handler, span.is_some() && context.ids.sampled);
            instruments.monitor.instrument(measured)
        });
        if inner.is_none() {
            metrics::counter!(REQUESTS_REFUSED, "reason" => REFUSED_IN_FLIGHT_CAP).increment(1);
        }
        let in_flight = InFlight::enter(instruments, listed);
        ObservedResponse {
            inner,
            overloaded_detail: telemetry.settings.overloaded_detail,
            span,
            context,
            started,
            finish: Some((in_flight, request_id)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request on its way through [`Observe`]: the handler's future, monitored by its
    /// variant's task monitor, tagged for the watchdog, inside the server span when there
    /// is one; the response gets the request's ids and its duration is recorded.
    pub struct ObservedResponse<F> {
        // `None` for a request refused at the in-flight cap.
        #[pin]
        inner: Option<tokio_metrics::Instrumented<Measured<InRequest<F>>, &'static TaskMonitorCore>>,
        overloaded_detail: &'static str,
        span: Option<Span>,
        context: Arc<RequestContext>,
        started: Stamp,
        // The request in flight and its `x-request-id`; `None` once the response is out.
        finish: Option<(InFlight, HeaderValue)>,
    }
}

impl<F> Future for ObservedResponse<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _in_span = this.span.as_ref().map(Span::enter);
        let (result, stats) = match this.inner.as_pin_mut() {
            Some(inner) => std::task::ready!(inner.poll(cx)),
            None => (Ok(overloaded(this.overloaded_detail)), PollStats::default()),
        };
        let Ok(mut response) = result;
        // Ends the request in `http.server.active_requests` (dropping it); a request dropped
        // before it got here (the client went away) ends there when the future is dropped.
        if let Some((in_flight, request_id)) = this.finish.take() {
            // One clock read serves the duration and the stall lookup.
            let ended = Stamp::now();
            in_flight.instruments.record_duration(
                response.status().as_u16(),
                std::time::Duration::from_nanos(this.started.nanos_until(ended)),
            );
            let exposure =
                in_flight
                    .instruments
                    .watchdog
                    .exposure(*this.started, ended, this.context.ids);
            if let Some(exposure) = &exposure {
                in_flight
                    .instruments
                    .watchdog
                    .record_victim(this.context, exposure);
                name_the_culprit(this.span.as_ref(), this.context, exposure);
            }
            finish_request(
                this.span.as_ref(),
                this.context,
                request_id,
                &mut response,
                &stats,
            );
        }
        Poll::Ready(Ok(response))
    }
}

/// A request's instruments, counting it in `http.server.active_requests` and listing it
/// among the requests in flight until dropped, however its future ends: finished, or dropped
/// mid-way because the client hung up.
pub struct InFlight {
    instruments: &'static RouteInstruments,
    _listed: Option<Ticket>,
}

impl InFlight {
    fn enter(instruments: &'static RouteInstruments, listed: Option<Ticket>) -> Self {
        instruments.active.increment();
        Self {
            instruments,
            _listed: listed,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instruments.active.decrement();
    }
}

/// The answer to a request refused at the in-flight cap: an RFC 9457 problem with
/// `Retry-After`, as the app's own 503s are.
fn overloaded(detail: &str) -> Response {
    let problem = serde_json::json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
    });
    let mut response = (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(problem),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    );
    response
}

/// What [`begin_request`] makes.
pub struct Begun {
    pub context: Arc<RequestContext>,
    /// The server span, when an exporter will read one.
    pub span: Option<Span>,
    /// The response's `x-request-id`: the client's value itself (shared, not copied), or the
    /// one made for the request.
    pub request_id: HeaderValue,
}

/// A request's [`RequestContext`], and its server span when an exporter will read one.
///
/// The span carries the HTTP semantic-convention attributes and joins the caller's trace when
/// the request has a `traceparent`. Without an OpenTelemetry layer (no exporter) no layer
/// wants it — logs print the context instead — so it is not made at all: the registry entry,
/// field formatting and close it cost were most of the instrumentation's cost per request.
/// The ids are then made here (the caller's trace id or a new one, a new span id).
pub fn begin_request(
    request: &Request,
    name: &str,
    route: &'static str,
    variant: &'static str,
    method: &'static str,
) -> Begun {
    let (client_request_id, has_traceparent) = caller_headers(request.headers());
    let request_id = request_id(client_request_id);
    let path = InlineText::truncated(request.uri().path());
    let span = tracing::info_span!(
        SERVER_SPAN,
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        url.path = path.as_str(),
        url.query = tracing::field::Empty,
        url.scheme = "http",
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        client.address = tracing::field::Empty,
        user_agent.original = tracing::field::Empty,
        network.protocol.version = protocol_version(request.version()),
        stallscope.variant = variant,
        stallscope.request_id = request_id.to_str().unwrap_or(""),
        stallscope.poll.count = tracing::field::Empty,
        stallscope.poll.longest_ms = tracing::field::Empty,
        stallscope.poll.busy_ms = tracing::field::Empty,
        stallscope.poll.scheduled_wait_ms = tracing::field::Empty,
        stallscope.poll.handed_off_ms = tracing::field::Empty,
        stallscope.stall.overlap_ms = tracing::field::Empty,
        stallscope.stall.culprit_trace_id = tracing::field::Empty,
    );
    let span = (!span.is_disabled()).then_some(span);
    if let Some(span) = &span {
        record_request_attributes(span, request, route);
    }
    let parent = has_traceparent.then(|| trace_context::extract(request.headers()));
    if let (Some(span), Some(parent)) = (&span, &parent) {
        let _ = span.set_parent(parent.clone());
    }
    let ids = SpanIds::for_request(span.as_ref(), parent.as_ref());
    let on_stall = span
        .as_ref()
        .filter(|_| ids.sampled)
        .map(|span| stall_event_on(span.clone()));
    let trace_state = has_traceparent
        .then(|| request.headers().get(trace_context::TRACESTATE))
        .flatten()
        .filter(|state| state.len() <= trace_context::MAX_TRACESTATE)
        .cloned();
    let context = Arc::new(RequestContext {
        route,
        variant,
        method,
        path,
        request_id: InlineText::truncated(request_id.to_str().unwrap_or("")),
        ids,
        trace_state,
        on_stall,
    });
    Begun {
        context,
        span,
        request_id,
    }
}

/// The HTTP server span attributes of the semantic conventions that a request may or may not
/// have: `http.route` (absent when no route matched), `url.query`, `server.address` and
/// `server.port` (from `Host`), `client.address` (the peer) and `user_agent.original`. Only an
/// exported span pays for them. Client-supplied text is cut to [`MAX_PATH`] bytes.
fn record_request_attributes(span: &Span, request: &Request, route: &'static str) {
    use axum::extract::ConnectInfo;
    use axum::http::header::{HOST, USER_AGENT};
    if route != UNMATCHED_ROUTE {
        span.record("http.route", route);
    }
    if let Some(query) = request.uri().query() {
        span.record(
            "url.query",
            InlineText::<MAX_PATH>::truncated(query).as_str(),
        );
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok())
        .or_else(|| request.uri().authority().cloned());
    if let Some(authority) = host {
        span.record("server.address", authority.host());
        if let Some(port) = authority.port_u16() {
            span.record("server.port", i64::from(port));
        }
    }
    if let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
    {
        span.record("client.address", peer.ip().to_string().as_str());
    }
    if let Some(agent) = request
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.record(
            "user_agent.original",
            InlineText::<MAX_PATH>::truncated(agent).as_str(),
        );
    }
}

/// The request's ids on the response (`x-request-id`, `traceparent`) and, on a sampled span,
/// its outcome.
fn finish_request(
    span: Option<&Span>,
    context: &RequestContext,
    request_id: HeaderValue,
    response: &mut Response,
    stats: &PollStats,
) {
    if let Some(span) = span {
        record_outcome(span, context.ids, response.status(), stats);
    }
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, request_id);
    if let Some(traceparent) = context.ids.traceparent() {
        headers.insert(trace_context::TRACEPARENT, traceparent);
    }
}

/// A request that lived through another's stall says so: on its span (how long, whose trace,
/// a link to it), in `stallscope_stall_victims_total`, and in a log line of its own.
///
/// A delay of this kind is invisible in the request's own poll statistics: while the worker
/// is blocked no timer fires and no socket is read, so the victim is not woken late, it is
/// woken after the stall — `stallscope.poll.scheduled_wait_ms` stays near zero.
fn name_the_culprit(span: Option<&Span>, context: &Arc<RequestContext>, exposure: &Exposure) {
    let culprit = &exposure.culprit;
    let overlap_ms = exposure.overlap.as_secs_f64() * 1000.0;
    metrics::counter!(
        STALL_VICTIMS,
        "culprit_route" => culprit.route,
        "culprit_variant" => culprit.variant
    )
    .increment(1);
    let culprit_trace_id = culprit
        .culprit
        .map(|ids| ids.trace_id.to_string())
        .unwrap_or_default();
    if let Some(span) = span.filter(|_| context.ids.sampled) {
        span.record("stallscope.stall.overlap_ms", overlap_ms);
        if let Some(ids) = culprit.culprit {
            span.record(
                "stallscope.stall.culprit_trace_id",
                culprit_trace_id.as_str(),
            );
            span.add_link(ids.span_context());
        }
    }
    let _in_request = request_context::enter(Some(Arc::clone(context)));
    tracing::info!(
        overlap_ms,
        culprit_route = culprit.route,
        culprit_variant = culprit.variant,
        culprit_worker = %culprit.worker,
        culprit_trace_id = %culprit_trace_id,
        "this request overlapped {overlap_ms:.0} ms of a stall: {} ({}) held worker {}",
        culprit.route,
        culprit.variant,
        culprit.worker,
    );
}

/// Puts the watchdog's `executor.stall` event on the request's span. Only a sampled span keeps
/// events, so unsampled requests get no callback: no boxed closure and span clone per request
/// for nothing.
fn stall_event_on(span: Span) -> StallCallback {
    Box::new(move |report: &StallReport| {
        span.add_event(
            "executor.stall",
            vec![
                KeyValue::new("stallscope.worker", report.worker.clone()),
                KeyValue::new(
                    "stallscope.stall.elapsed_ms",
                    report.elapsed.as_secs_f64() * 1000.0,
                ),
                KeyValue::new("stallscope.stall.cause", report.cause.as_str()),
                KeyValue::new(
                    "stallscope.stall.cpu_wait_ms",
                    report.cpu_wait.as_secs_f64() * 1000.0,
                ),
            ],
        );
    })
}

/// `network.protocol.version` as the semantic conventions spell it.
fn protocol_version(version: axum::http::Version) -> &'static str {
    use axum::http::Version;
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// Status and poll statistics, once the response exists. Only a sampled span keeps them (no
/// log line is written in the span after this), so an unsampled one skips the work.
fn record_outcome(span: &Span, ids: SpanIds, status: StatusCode, stats: &PollStats) {
    if !ids.sampled {
        return;
    }
    // Integers as i64: tracing-opentelemetry records unsigned fields through `Debug`, as text
    // a backend cannot compare (`http.response.status_code >= 500` would find nothing).
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    span.record(
        "stallscope.poll.count",
        i64::try_from(stats.polls).unwrap_or(i64::MAX),
    );
    span.record("stallscope.poll.longest_ms", ms(stats.longest));
    span.record("stallscope.poll.busy_ms", ms(stats.busy));
    span.record("stallscope.poll.handed_off_ms", ms(stats.handed_off));
    span.record(
        "stallscope.poll.scheduled_wait_ms",
        ms(stats.scheduled_wait),
    );
}

/// Server spans (and poll statistics) without metrics or watchdog, for the slow upstream.
pub async fn trace_only(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |m| intern(m.as_str()));
    let method = method_label(request.method());
    let name = span_name(method, route);
    let Begun {
        context,
        span,
        request_id,
    } = begin_request(&request, &name, route, NO_VARIANT, method);
    let handler = Measured::new(
        InRequest::new(next.run(request), Arc::clone(&context), None),
        context.ids.sampled,
    );
    let (mut response, stats) = match &span {
        Some(span) => handler.instrument(span.clone()).await,
        None => handler.await,
    };
    finish_request(span.as_ref(), &context, request_id, &mut response, &stats);
    response
}

/// Route templates as `&'static str`: there are as many as the router has routes, so each
/// is leaked once and reused. Each thread remembers the ones it has seen, so a request takes
/// no lock.
fn intern(template: &str) -> &'static str {
    thread_local! {
        static SEEN: std::cell::RefCell<HashSet<&'static str>> = Default::default();
    }
    if let Some(known) = SEEN.with_borrow(|seen| seen.get(template).copied()) {
        return known;
    }
    static TEMPLATES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let interned = {
        let mut templates = TEMPLATES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let templates = templates.get_or_insert_with(HashSet::new);
        match templates.get(template) {
            Some(&known) => known,
            None => {
                let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
                templates.insert(leaked);
                leaked
            }
        }
    };
    SEEN.with_borrow_mut(|seen| seen.insert(interned));
    interned
}

/// The routes whose metrics carry a `variant` label, and its values: one path parameter per
/// route, declared by the app, bounded to the values it lists (anything else is `invalid`;
/// routes not declared are `none`).
#[derive(Clone, Default)]
pub struct RouteVariants {
    /// Route template → (which `/`-separated segment holds the parameter, its values).
    routes: HashMap<&'static str, (usize, Vec<&'static str>)>,
}

impl RouteVariants {
    /// Labels `route`'s requests by its `{parameter}` segment, one of `values`.
    ///
    /// # Panics
    /// If `route` has no `{parameter}` segment: a programming error, found at start-up.
    #[must_use]
    pub fn declare(
        mut self,
        route: &'static str,
        parameter: &str,
        values: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let placeholder = format!("{{{parameter}}}");
        let position = route
            .split('/')
            .position(|segment| segment == placeholder)
            .unwrap_or_else(|| panic!("route {route} has no {placeholder} segment"));
        self.routes
            .insert(route, (position, values.into_iter().collect()));
        self
    }

    /// The `variant` label of a request to `route` at `path`.
    pub fn label(&self, route: &str, path: &str) -> &'static str {
        let Some((position, values)) = self.routes.get(route) else {
            return NO_VARIANT;
        };
        path.split('/')
            .nth(*position)
            .and_then(|given| values.iter().copied().find(|value| *value == given))
            .unwrap_or(INVALID_VARIANT)
    }
}

/// Known methods by name, anything else `_OTHER` (OpenTelemetry's rule, bounded labels).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The caller's `x-request-id`, and whether it sent a `traceparent`, found in one pass over
/// the request's few headers: two lookups would hash both names on every request.
fn caller_headers(headers: &HeaderMap) -> (Option<&HeaderValue>, bool) {
    let (mut request_id, mut traceparent) = (None, false);
    for (name, value) in headers {
        if name == REQUEST_ID {
            request_id = request_id.or(Some(value));
        } else if name == trace_context::TRACEPARENT {
            traceparent = true;
        }
    }
    (request_id, traceparent)
}

/// The client's `x-request-id` when it is short printable ASCII (shared with the request, not
/// copied), else a new one.
fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    client
        .filter(|id| {
            let id = id.as_bytes();
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| generated_request_id(next_request_number()))
}

/// Request numbers, unique in the process. Each thread takes a block of them at a time, so
/// the workers do not pass one counter's cache line back and forth on every request; ids are
/// therefore unique and increasing per thread, not in arrival order.
fn next_request_number() -> u64 {
    const BLOCK: u64 = 1024;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        /// The next number of this thread's block, and the block's end.
        static BLOCK_LEFT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    BLOCK_LEFT
        .try_with(|left| {
            let (mut next, mut end) = left.get();
            if next == end {
                next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
                end = next + BLOCK;
            }
            left.set((next + 1, end));
            next
        })
        // Only while this thread's locals are being destroyed.
        .unwrap_or_else(|_| NEXT_BLOCK.fetch_add(1, Ordering::Relaxed))
}

/// `req-` and at least eight hex digits of `n` (`format!("req-{n:08x}")` for the first four
/// billion, without the formatting machinery: it runs for every request).
fn generated_request_id(n: u64) -> HeaderValue {
    // Leading zero bytes go, but never the last four: eight digits at least.
    let skip = n.to_be_bytes()[..4].iter().take_while(|&&b| b == 0).count();
    let mut id = *b"req-0000000000000000";
    let end = id.len() - 2 * skip;
    id[4..end].copy_from_slice(&span_ids::hex_of_word(n)[2 * skip..]);
    // Hex digits and `req-`: always ASCII, so never the fallback.
    id_header::id_value(&id[..end]).unwrap_or_else(|| HeaderValue::from_static("req-invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_labels_are_bounded() {
        let variants = RouteVariants::default()
            .declare("/sleep/{variant}", "variant", ["async", "blocking"])
            .declare("/db/{variant}/users/{id}", "variant", ["async"]);
        assert_eq!(
            variants.label("/sleep/{variant}", "/sleep/blocking"),
            "blocking"
        );
        assert_eq!(
            variants.label("/sleep/{variant}", "/sleep/x1234"),
            INVALID_VARIANT
        );
        assert_eq!(
            variants.label("/db/{variant}/users/{id}", "/db/async/users/7"),
            "async"
        );
        assert_eq!(variants.label("/hello", "/hello"), NO_VARIANT);
        assert_eq!(variants.label(UNMATCHED_ROUTE, "/a/b/c"), NO_VARIANT);
    }

    #[test]
    fn generated_request_ids_are_eight_hex_digits_or_more() {
        for n in [0, 1, 0xab, 0xdead_beef, 0xffff_ffff] {
            assert_eq!(generated_request_id(n), format!("req-{n:08x}").as_str());
        }
        assert_eq!(generated_request_id(0x1_0000_0000), "req-0100000000");
        assert_eq!(generated_request_id(u64::MAX), "req-ffffffffffffffff");
    }

    /// The values of `metric`'s samples for `route`, from the service's `/metrics` document.
    fn route_samples(telemetry: &Telemetry, metric: &str, route: &str) -> Vec<f64> {
        let (prefix, label) = (format!("{metric}{{"), format!("http_route=\"{route}\""));
        telemetry
            .render()
            .lines()
            .filter(|line| line.starts_with(&prefix) && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect()
    }

    /// `http_server_active_requests` of `route`.
    fn active_requests(telemetry: &Telemetry, route: &str) -> Option<f64> {
        route_samples(telemetry, "http_server_active_requests", route)
            .first()
            .copied()
    }

    /// A client that hangs up drops its request's future mid-way: the request must still
    /// leave `http.server.active_requests`, or the gauge creeps up with every timeout.
    #[tokio::test]
    async fn a_request_dropped_midway_leaves_the_active_requests_gauge() {
        use axum::body::Body;
        use std::time::Duration;
        use tower::ServiceExt;
        const ROUTE: &str = "/test/dropped-midway";
        let telemetry = Telemetry::new(crate::Settings::default());
        let app = axum::Router::new()
            .route(
                ROUTE,
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            )
            .layer(ObserveLayer::new(Arc::clone(&telemetry)));
        let request = Request::builder()
            .uri(ROUTE)
            .body(Body::empty())
            .expect("request");
        let in_flight = tokio::spawn(app.oneshot(request));
        let mut seen = None;
        for _ in 0..100 {
            seen = active_requests(&telemetry, ROUTE);
            if seen == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen, Some(1.0), "counted while it runs");
        in_flight.abort();
        assert!(in_flight.await.is_err_and(|err| err.is_cancelled()));
        assert_eq!(
            active_requests(&telemetry, ROUTE),
            Some(0.0),
            "and not after"
        );
    }

    #[test]
    fn interned_templates_are_reused() {
        let a = intern("/cpu/{variant}");
        let b = intern(&String::from("/cpu/{variant}"));
        assert!(std::ptr::eq(a, b));
    }
}
