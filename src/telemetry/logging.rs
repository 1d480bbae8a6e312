//! The one tracing subscriber, built once: logs, OpenTelemetry traces and tokio-console, each
//! layer with a filter of its own.
//!
//! | layer | filter | on |
//! |---|---|---|
//! | logs on stderr (human; JSON with `STALLSCOPE_LOG_FORMAT=json`) | `RUST_LOG` (default `info`) | always |
//! | OpenTelemetry spans | `STALLSCOPE_TRACE_FILTER` (default `info`) | always (ids for logs and headers); exported only when an OTLP endpoint is set |
//! | tokio-console | its own (`tokio`/`runtime` targets) | `--console` / `STALLSCOPE_CONSOLE=1` |
//!
//! JSON log lines carry `trace_id` and `span_id` of the request they belong to, so a log line,
//! a trace and a response (`traceparent` header) can be joined.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::otlp::{OtlpSettings, QueueingProcessor};
use super::trace_context::{SpanIds, push_hex};

/// What `main` asks of the subscriber.
#[derive(Debug, Clone)]
pub struct TracingOptions {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub default_service_name: &'static str,
    /// Start the tokio-console server (`TOKIO_CONSOLE_BIND`, default 127.0.0.1:6669).
    pub console: bool,
    /// Log filter when `RUST_LOG` is unset.
    pub default_log_filter: &'static str,
}

/// Where tokio-console's server would listen: `TOKIO_CONSOLE_BIND` or console-subscriber's
/// default, checked before the console layer starts. console-subscriber itself panics on a
/// malformed `TOKIO_CONSOLE_BIND`, and on a taken port its server thread panics while the
/// service runs on without the console the user asked for; this turns both into a clear
/// error at start-up.
pub fn check_console_bind() -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let bind = std::env::var("TOKIO_CONSOLE_BIND").unwrap_or_else(|_| "127.0.0.1:6669".into());
    let addr = bind
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            format!("TOKIO_CONSOLE_BIND={bind:?} is not a HOST:PORT address such as 127.0.0.1:6669")
        })?;
    std::net::TcpListener::bind(addr).map(drop).map_err(|err| {
        format!(
            "tokio-console cannot listen on {addr} ({err}): stop what holds the port or set \
             TOKIO_CONSOLE_BIND to another HOST:PORT"
        )
    })
}

/// Flushes and stops span export when the service stops.
pub struct TracingGuard {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl TracingGuard {
    /// Exports every span still queued (bounded wait) and stops the exporter.
    pub fn shutdown(self) {
        if self.exporting
            && let Err(err) = self.provider.shutdown()
        {
            eprintln!("stallscope: flushing spans at shutdown failed: {err}");
        }
    }
}

/// Installs the global subscriber and the W3C trace-context propagator. Call once, first.
pub fn init(options: &TracingOptions) -> TracingGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(options.default_service_name);
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let otlp = OtlpSettings::from_env();
    let mut export_error = None;
    if let Some(settings) = &otlp {
        match QueueingProcessor::start(settings) {
            Ok(processor) => provider = provider.with_span_processor(processor),
            Err(err) => export_error = Some(format!("{err:#}")),
        }
    }
    // Without an exporter nothing would ever read an OpenTelemetry span, so the layer that
    // builds them is not installed at all: it copied every attribute of every span into owned
    // strings and started and ended a span per request, about a fifth of the service's own CPU
    // on a zero-work endpoint (docs/benchmarks.md). The route layer then makes the trace ids
    // itself (`trace_context::SpanIds::for_request`), so responses, logs and outgoing calls
    // still name a trace, flagged "not sampled".
    let exporting = otlp.is_some() && export_error.is_none();
    let provider = provider.build();
    let tracer = provider.tracer("stallscope");

    let json = std::env::var("STALLSCOPE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let log_filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(options.default_log_filter))
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(SpanFieldsForLogs { json: true })
            .event_format(JsonWithTraceIds)
            .with_filter(log_filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(SpanFieldsForLogs { json: false })
            .with_filter(log_filter())
            .boxed()
    };
    let trace_filter = EnvFilter::try_from_env("STALLSCOPE_TRACE_FILTER")
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let console = options.console.then(|| {
        console_subscriber::ConsoleLayer::builder()
            .with_default_env()
            .spawn()
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(exporting.then(|| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // Each of these costs every span something, and none says anything here: the
                // route layer measures busy and idle time per poll itself
                // (`stallscope.poll.*`), a task hops threads so one thread name would
                // mislead, every server span is made at the same line of the route layer,
                // and nothing reads OpenTelemetry's thread-local current context.
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_context_activation(false)
                .with_filter(trace_filter)
        }))
        .with(console)
        .try_init();
    if installed.is_err() {
        eprintln!("stallscope: a tracing subscriber was already installed; keeping it");
    }
    match (&otlp, export_error) {
        (Some(settings), None) => tracing::info!(
            endpoint = %settings.endpoint,
            protocol = ?settings.protocol,
            "exporting traces over OTLP"
        ),
        (Some(_), Some(err)) => {
            tracing::error!(%err, "OTLP export is configured but could not start; traces stay local")
        }
        (None, _) => tracing::debug!("no OTEL_EXPORTER_OTLP_ENDPOINT: traces are not exported"),
    }
    if options.console {
        tracing::info!("tokio-console server enabled (TOKIO_CONSOLE_BIND, default 127.0.0.1:6669)");
    }
    TracingGuard {
        provider,
        exporting,
    }
}

/// How the log layer formats fields. The fmt layer formats a span's fields the moment the span
/// is created (and again at every `record`), whether or not a line is ever logged inside it,
/// and the server span of every request carries a dozen attributes that only a trace backend
/// reads. Human logs keep what helps a reader (method, route, path, variant, request and
/// trace id) and skip the rest; JSON logs print only the trace and span ids of the enclosing
/// span (see [`JsonWithTraceIds`]), so there span fields are not formatted at all. The fmt
/// layer formats events' fields with the same formatter, so an event field with a trace-only
/// name is left out too (no event of stallscope's uses one).
struct SpanFieldsForLogs {
    json: bool,
}

/// Fields only a trace backend reads: left out of human logs.
fn is_trace_only(name: &str) -> bool {
    name.starts_with("otel.")
        || name.starts_with("network.")
        || name.starts_with("stallscope.poll.")
        || matches!(name, "url.scheme" | "http.response.status_code")
}

impl<'writer> FormatFields<'writer> for SpanFieldsForLogs {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if self.json {
            return Ok(());
        }
        let mut visitor = HumanFields::new(writer, true);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if self.json {
            return Ok(());
        }
        let is_empty = current.fields.is_empty();
        let mut visitor = HumanFields::new(current.as_writer(), is_empty);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields exactly as tracing-subscriber's default formatter does (`name=value`,
/// space-separated), except the trace-only ones, which it skips.
///
/// A plain string field (a route, a variant, an id) it writes itself: the default formatter
/// escapes every string character by character through `{:?}` and paints every name through
/// an ANSI styler even with colours off, and the request's span formats a handful of them for
/// every request — 3.6 % of the service's CPU on a zero-work endpoint. Anything else goes to
/// the default formatter.
struct HumanFields<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl<'w> HumanFields<'w> {
    fn new(writer: Writer<'w>, is_empty: bool) -> Self {
        Self {
            writer,
            is_empty,
            result: Ok(()),
        }
    }

    /// Whether `field` is left out: trace-only, or log-record metadata (`log.*`, which the
    /// default formatter skips too).
    fn skips(&self, field: &Field) -> bool {
        self.result.is_err() || is_trace_only(field.name()) || field.name().starts_with("log.")
    }

    /// Lets the default formatter write one field, continuing this line.
    fn with_default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.skips(field) {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }
}

macro_rules! with_default_formatter {
    ($($method:ident($type:ty)),* $(,)?) => {
        $(fn $method(&mut self, field: &Field, value: $type) {
            self.with_default(field, |visitor| visitor.$method(field, value));
        })*
    };
}

impl Visit for HumanFields<'_> {
    with_default_formatter!(
        record_f64(f64),
        record_i64(i64),
        record_u64(u64),
        record_i128(i128),
        record_u128(u128),
        record_bool(bool),
        record_error(&(dyn std::error::Error + 'static)),
        record_debug(&dyn fmt::Debug),
    );

    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        let plain = name != "message"
            && !name.starts_with("r#")
            && !self.writer.has_ansi_escapes()
            && needs_no_escaping(value);
        if !plain {
            self.with_default(field, |visitor| visitor.record_str(field, value));
            return;
        }
        if self.skips(field) {
            return;
        }
        let separator = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = [separator, name, "=\"", value, "\""]
            .into_iter()
            .try_for_each(|part| self.writer.write_str(part));
    }
}

/// Whether `{:?}` of `text` is `text` in double quotes: printable ASCII but `"` and `\`.
fn needs_no_escaping(text: &str) -> bool {
    text.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// Lets the logs name `span`'s trace: the JSON formatter prints the ids of the enclosing
/// server span, human logs show `trace_id=…` in the span's context.
///
/// Recording the ids as span fields would do the same through every layer — each formatting
/// two hex ids, the OpenTelemetry layer adding them as redundant attributes — which measured
/// 4 % of the service's CPU on a zero-work endpoint (docs/benchmarks.md). Instead they go
/// straight into the span's registry entry, once.
pub fn attach_trace_ids(span: &tracing::Span, ids: SpanIds) {
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let Some(data) = registry.span(id) else {
            return;
        };
        let mut extensions = data.extensions_mut();
        if let Some(fields) = extensions.get_mut::<FormattedFields<SpanFieldsForLogs>>()
            && !fields.fields.is_empty()
        {
            // Human logs: the fmt layer formatted the span's fields already (in JSON mode it
            // formats none, and the formatter reads the ids below instead).
            fields.fields.push_str(" trace_id=");
            push_hex(&mut fields.fields, &ids.trace_id.to_bytes());
        }
        extensions.insert(ids);
    });
}

/// The ids of the request `span` belongs to: those [`attach_trace_ids`] gave `span` or its
/// nearest ancestor. How outgoing calls name the caller's trace when no OpenTelemetry layer is
/// installed.
pub fn request_ids(span: &tracing::Span) -> Option<SpanIds> {
    let mut found = None;
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        found = registry
            .span(id)?
            .scope()
            .find_map(|span| span.extensions().get::<SpanIds>().copied());
        Some(())
    });
    found
}

/// One JSON object per line: timestamp, level, target, the event's fields, the innermost
/// span's name, and the `trace_id`/`span_id` of the request it belongs to.
struct JsonWithTraceIds;

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().into()),
        );
        let mut fields = JsonFields(BTreeMap::new());
        event.record(&mut fields);
        for (key, value) in fields.0 {
            line.insert(key, value);
        }
        if let Some(scope) = ctx.event_scope() {
            let mut spans = scope.peekable();
            if let Some(innermost) = spans.peek() {
                line.insert("span".into(), Value::String(innermost.name().into()));
            }
            for span in spans {
                if let Some(ids) = span.extensions().get::<SpanIds>() {
                    line.entry("trace_id")
                        .or_insert_with(|| Value::String(ids.trace_id.to_string()));
                    line.entry("span_id")
                        .or_insert_with(|| Value::String(ids.span_id.to_string()));
                    break;
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonFields(BTreeMap<String, Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), serde_json::json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), serde_json::json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};
    use std::sync::{Arc, Mutex};

    /// Everything the layer writes, for assertions.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_inside_a_server_like_span(json: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(SpanFieldsForLogs { json });
        let subscriber = tracing_subscriber::registry().with(if json {
            layer.event_format(JsonWithTraceIds).boxed()
        } else {
            layer.boxed()
        });
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "HTTP request",
                otel.kind = "server",
                http.route = "/sleep/{variant}",
                network.protocol.version = "1.1",
                stallscope.poll.count = tracing::field::Empty,
            );
            attach_trace_ids(
                &span,
                SpanIds {
                    trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
                        .expect("trace id"),
                    span_id: SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
                    sampled: false,
                },
            );
            span.record("stallscope.poll.count", 3);
            span.in_scope(|| tracing::warn!("inside"));
        });
        let bytes = captured.0.lock().expect("captured").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    /// A span (with fields recorded at creation and later) and an event inside it, with string
    /// fields set to `value` among fields of other types, formatted by a human fmt layer with
    /// `fields`.
    fn human_line_with<N>(fields: N, value: &str) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                http.route = "/sleep/{variant}",
                url.path = value,
                attempt = 2u64,
                late = tracing::field::Empty,
                note = tracing::field::Empty,
            );
            span.record("late", true);
            span.record("note", value);
            span.in_scope(|| {
                tracing::warn!(
                    url.path = value,
                    count = 3u64,
                    delta = -4i64,
                    ok = false,
                    ratio = 1.5,
                    given = ?Some(value),
                    r#type = value,
                    "event {value}"
                );
            });
        });
        let bytes = captured.0.lock().expect("captured").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    #[test]
    fn string_fields_print_exactly_as_the_default_formatter_prints_them() {
        for value in [
            "/sleep/blocking",
            "",
            "with space and {braces}",
            "quote\"inside",
            "back\\slash",
            "new\nline",
            "tab\tand\u{7f}del",
            "ünïcode",
            "\u{1b}[31mred",
        ] {
            let ours = human_line_with(SpanFieldsForLogs { json: false }, value);
            let default =
                human_line_with(tracing_subscriber::fmt::format::DefaultFields::new(), value);
            assert_eq!(ours, default, "{value:?}");
        }
    }

    #[test]
    fn human_logs_keep_what_a_reader_needs_and_skip_trace_only_attributes() {
        let line = log_inside_a_server_like_span(false);
        assert!(line.contains(r#"http.route="/sleep/{variant}""#), "{line}");
        assert!(line.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{line}");
        for hidden in ["otel.kind", "network.protocol", "stallscope.poll"] {
            assert!(!line.contains(hidden), "{hidden} in {line}");
        }
        assert!(line.contains("inside"), "{line}");
    }

    #[test]
    fn json_logs_carry_the_span_ids_without_formatting_span_fields() {
        let line = log_inside_a_server_like_span(true);
        let value: Value = serde_json::from_str(line.trim()).expect("one JSON object");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(value["span_id"], "00f067aa0ba902b7");
        assert_eq!(value["message"], "inside");
        assert_eq!(value["span"], "HTTP request");
    }
}
