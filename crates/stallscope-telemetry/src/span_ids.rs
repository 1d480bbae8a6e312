//! A span's W3C identity (trace id, span id, sampled flag) as the route layer, the watchdog
//! and the logs carry it, and its `traceparent` text.

use axum::http::HeaderValue;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

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

    /// The ids of a request: its server span's when there is one and the OpenTelemetry layer
    /// gave it ids (an exporter is configured), else made here — the caller's trace id (from
    /// `parent`, the extracted `traceparent`) or a new one, and a new span id. Sampled as the
    /// caller decided (nothing is recorded here, but services downstream that follow the
    /// parent's decision must not lose the trace); a trace started here is not sampled.
    pub fn for_request(
        span: Option<&tracing::Span>,
        parent: Option<&opentelemetry::Context>,
    ) -> Self {
        if let Some(ids) = span.and_then(Self::of) {
            return ids;
        }
        let generator = RandomIdGenerator::default();
        let caller = parent
            .map(|context| context.span().span_context().clone())
            .filter(|caller| caller.trace_id() != TraceId::INVALID);
        Self {
            trace_id: caller
                .as_ref()
                .map_or_else(|| generator.new_trace_id(), |c| c.trace_id()),
            span_id: generator.new_span_id(),
            sampled: caller.is_some_and(|c| c.is_sampled()),
        }
    }

    /// These ids as an OpenTelemetry span context: what a span link to this span names.
    pub fn span_context(&self) -> opentelemetry::trace::SpanContext {
        use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            false,
            TraceState::default(),
        )
    }

    /// The W3C `traceparent` naming this span, for response headers.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let flags = if self.sampled { "01" } else { "00" };
        HeaderValue::try_from(format!("00-{}-{}-{flags}", self.trace_id, self.span_id)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_matches_the_ids_display_form() {
        let ids = SpanIds {
            trace_id: TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id"),
            span_id: SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            sampled: true,
        };
        let expected = format!("00-{}-{}-01", ids.trace_id, ids.span_id);
        assert_eq!(ids.traceparent().expect("valid header"), expected.as_str());
        assert_eq!(
            expected,
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        let unsampled = SpanIds {
            sampled: false,
            ..ids
        };
        assert!(
            unsampled
                .traceparent()
                .expect("valid header")
                .to_str()
                .is_ok_and(|v| v.ends_with("-00"))
        );
    }
}
