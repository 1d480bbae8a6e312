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
        // `00-{trace id}-{span id}-{flags}`, written into a stack buffer a word of hex at a
        // time: it runs for every response, and a growing `String` checked and encoded each
        // character.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        text[3..35].copy_from_slice(&trace_id_hex(self.trace_id));
        let span_id = u64::from_be_bytes(self.span_id.to_bytes());
        text[36..52].copy_from_slice(&hex_of_word(span_id));
        if self.sampled {
            text[54] = b'1';
        }
        super::id_header::id_value(&text)
    }
}

/// The sixteen lower-case hex digits of `word`, most significant first (`{word:016x}`),
/// computed eight digits at a time in a `u64` (one byte per digit).
pub fn hex_of_word(word: u64) -> [u8; 16] {
    let mut hex = [0; 16];
    hex[..8].copy_from_slice(&hex_of_half((word >> 32) as u32));
    hex[8..].copy_from_slice(&hex_of_half(word as u32));
    hex
}

/// The eight hex digits of `half`, most significant first.
fn hex_of_half(half: u32) -> [u8; 8] {
    const fn repeat(byte: u8) -> u64 {
        u64::from_ne_bytes([byte; 8])
    }
    // Spread the eight nibbles out, one per byte, keeping their order.
    let mut v = u64::from(half);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & repeat(0x0f);
    // Each byte is now 0..=15: digits are '0' + v, letters 'a' - 10 + v, 39 further on.
    // (v + 6) >> 4 is 1 exactly for the letters; no byte carries into the next.
    let letters = ((v + repeat(6)) >> 4) & repeat(1);
    (v + repeat(b'0') + letters * 39).to_be_bytes()
}

/// The 32 lower-case hex digits of `trace_id`, its `Display` form (`traceparent`, logs).
pub fn trace_id_hex(trace_id: TraceId) -> [u8; 32] {
    let trace_id = u128::from_be_bytes(trace_id.to_bytes());
    let mut hex = [0; 32];
    hex[..16].copy_from_slice(&hex_of_word((trace_id >> 64) as u64));
    hex[16..].copy_from_slice(&hex_of_word(trace_id as u64));
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_formatter() {
        for word in [
            0,
            1,
            9,
            10,
            15,
            0xdead_beef,
            0x0123_4567_89ab_cdef,
            u64::MAX,
        ] {
            assert_eq!(hex_of_word(word), *format!("{word:016x}").as_bytes());
        }
        // Every digit value in every position.
        for position in 0..16 {
            for digit in 0..16u64 {
                let word = (digit << (4 * position)) | 0x1000_0000_0000_0001;
                assert_eq!(hex_of_word(word), *format!("{word:016x}").as_bytes());
            }
        }
    }

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

    #[test]
    fn trace_id_hex_is_the_display_form() {
        for hex in [
            "0af7651916cd43dd8448eb211c80319c",
            "00000000000000000000000000000001",
            "ffffffffffffffff0000000000000000",
        ] {
            let trace_id = TraceId::from_hex(hex).expect("trace id");
            assert_eq!(trace_id_hex(trace_id), *trace_id.to_string().as_bytes());
            assert_eq!(trace_id_hex(trace_id), *hex.as_bytes());
        }
    }
}
