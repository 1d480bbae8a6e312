//! W3C trace context in and out: `traceparent` on incoming requests, outgoing calls and
//! responses.

use axum::http::{HeaderMap, HeaderName};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The longest `tracestate` passed on: W3C's limit for what a vendor must propagate.
pub const MAX_TRACESTATE: usize = 512;

/// W3C trace context is the one format stallscope speaks, so it is used directly rather than
/// through OpenTelemetry's global propagator (a no-op until something installs one: an app built
/// in a test, without `logging::init`, would silently ignore callers' traces).
fn w3c() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// The caller's trace context, if its headers carry one.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    w3c().extract(&HeaderExtractor(headers))
}

/// Writes `span`'s context into outgoing `headers` (`traceparent`, `tracestate`). Without
/// an OpenTelemetry layer (no exporter), the ids of the request this thread works for stand
/// in, with the caller's sampling decision and `tracestate`: the callee joins the caller's
/// trace, both logs name it, and a sampled trace stays sampled downstream.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        w3c().inject_context(&context, &mut HeaderInjector(headers));
        return;
    }
    super::request_context::with_current(|request| {
        let Some(request) = request else { return };
        if let Some(traceparent) = request.ids.traceparent() {
            headers.insert(TRACEPARENT, traceparent);
        }
        if let Some(state) = &request.trace_state {
            headers.insert(TRACESTATE, state.clone());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_ids::SpanIds;
    use axum::http::HeaderValue;
    use opentelemetry::trace::{SpanId, TraceId};

    /// Runs `f` under a subscriber like the service's without an exporter: a registry and
    /// no OpenTelemetry layer.
    fn without_an_otel_layer(f: impl FnOnce()) {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn without_an_otel_layer_requests_get_ids_and_join_the_callers_trace() {
        without_an_otel_layer(|| {
            let span = tracing::info_span!("HTTP request");
            for span in [Some(&span), None] {
                let fresh = SpanIds::for_request(span, None);
                assert_ne!(fresh.trace_id, TraceId::INVALID);
                assert_ne!(fresh.span_id, SpanId::INVALID);
                assert!(!fresh.sampled, "nothing records the span");
                let other = SpanIds::for_request(span, None);
                assert_ne!(fresh.trace_id, other.trace_id, "each request its own trace");

                let mut headers = HeaderMap::new();
                headers.insert(
                    TRACEPARENT,
                    HeaderValue::from_static(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                );
                let parent = extract(&headers);
                let joined = SpanIds::for_request(span, Some(&parent));
                assert_eq!(
                    joined.trace_id,
                    TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id")
                );
                assert_ne!(
                    joined.span_id,
                    SpanId::from_hex("00f067aa0ba902b7").expect("span id")
                );
                assert!(joined.sampled, "the caller's sampling decision is kept");
                headers.insert(
                    TRACEPARENT,
                    HeaderValue::from_static(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                    ),
                );
                let unsampled = SpanIds::for_request(span, Some(&extract(&headers)));
                assert!(
                    !unsampled.sampled,
                    "and so is a caller's decision not to sample"
                );
            }
        });
    }

    #[test]
    fn without_an_otel_layer_outgoing_calls_carry_the_requests_trace() {
        use crate::request_context;
        without_an_otel_layer(|| {
            let request = request_context::tests::sample("req-1");
            let ids = request.ids;
            let _entered = request_context::enter(Some(request));
            let client = tracing::info_span!("HTTP client request");
            let mut headers = HeaderMap::new();
            inject(&client, &mut headers);
            assert_eq!(
                headers.get(TRACEPARENT).expect("a traceparent"),
                ids.traceparent().expect("header").as_bytes()
            );
        });
        without_an_otel_layer(|| {
            // Outside any request there is no trace to pass on.
            let mut headers = HeaderMap::new();
            inject(&tracing::info_span!("background"), &mut headers);
            assert!(headers.get(TRACEPARENT).is_none());
        });
    }
}
