//! W3C trace context in and out: `traceparent` on incoming requests, outgoing calls and
//! responses.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The caller's trace context, if its headers carry one.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes `span`'s context into outgoing `headers` (`traceparent`, `tracestate`).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// `span`'s ids as (trace id, span id) hex strings, when it has a valid OpenTelemetry span.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// The `traceparent` value naming `span`, for response headers.
pub fn traceparent(span: &tracing::Span) -> Option<HeaderValue> {
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    headers.remove(TRACEPARENT)
}
