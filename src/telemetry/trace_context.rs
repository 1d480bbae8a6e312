//! W3C trace context in and out: `traceparent` on incoming requests, outgoing calls and
//! responses.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
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

/// A span's OpenTelemetry identity, read once per request.
#[derive(Debug, Clone, Copy)]
pub struct SpanIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl SpanIds {
    /// `span`'s ids, when it has a valid OpenTelemetry span.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let otel = context.span();
        let span_context = otel.span_context();
        span_context.is_valid().then(|| Self {
            trace_id: span_context.trace_id(),
            span_id: span_context.span_id(),
            sampled: span_context.is_sampled(),
        })
    }

    /// The W3C `traceparent` naming this span, for response headers.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let flags = if self.sampled { "01" } else { "00" };
        HeaderValue::from_str(&format!("00-{}-{}-{flags}", self.trace_id, self.span_id)).ok()
    }
}
