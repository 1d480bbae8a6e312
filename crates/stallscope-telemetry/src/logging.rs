//! The one tracing subscriber, built once: logs, OpenTelemetry traces and tokio-console, each
//! layer with a filter of its own.
//!
//! | layer | filter | on |
//! |---|---|---|
//! | logs on stderr (human; JSON with `STALLSCOPE_LOG_FORMAT=json`) | `RUST_LOG` (default `info`) | always |
//! | OpenTelemetry spans | `STALLSCOPE_TRACE_FILTER` (default `info`) | only when an OTLP endpoint is set |
//! | tokio-console | its own (`tokio`/`runtime` targets) | `--console` / `STALLSCOPE_CONSOLE=1` |
//!
//! Log lines name the request they belong to from its [`RequestContext`] (human lines with an
//! `HTTP request{…}:` prefix, JSON lines with `request_id`, `trace_id`, `span_id`), never from
//! the server span, which exists only for the exporter; so a log line, a trace and a response
//! (`traceparent` header) can be joined, and logs read the same with or without an exporter.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use nu_ansi_term::Style;

use super::otlp::{OtlpSettings, QueueingProcessor};
use super::request_context::{self, RequestContext};
use super::route_layer::SERVER_SPAN;
use super::span_ids::trace_id_hex;

/// What `main` asks of the subscriber.
#[derive(Debug, Clone)]
pub struct TracingOptions {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub default_service_name: &'static str,
    /// Start the tokio-console server (`TOKIO_CONSOLE_BIND`, default 127.0.0.1:6669).
    pub console: bool,
    /// Log filter when `RUST_LOG` is unset.
    pub default_log_filter: &'static str,
    /// The thread an in-process upstream serves on, if one runs: spans that end there are
    /// exported as a service of their own (`{service.name}-upstream`), as a standalone
    /// upstream's are.
    pub upstream_thread: Option<&'static str>,
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
    /// Exports the spans still queued, waiting no later than `until`, and stops the exporter;
    /// spans the collector has not taken by then are counted and logged as lost.
    pub fn shutdown(self, until: std::time::Instant) {
        if self.exporting
            && let Err(err) = self
                .provider
                .shutdown_with_timeout(until.saturating_duration_since(std::time::Instant::now()))
        {
            tracing::warn!("flushing spans at shutdown did not finish: {err}");
        }
    }
}

/// `service.instance.id` tells replicas' spans apart (OpenTelemetry's resource conventions).
/// A deployment names it in `OTEL_RESOURCE_ATTRIBUTES` (the pod's name, from the downward
/// API), which the SDK's environment detector reads; otherwise each process gets a random
/// UUID, as the conventions recommend, so two replicas never share one.
fn generated_instance_id(resource_attributes: Option<String>) -> Option<String> {
    let named = resource_attributes.is_some_and(|attributes| {
        attributes
            .split(',')
            .any(|pair| pair.split('=').next().map(str::trim) == Some("service.instance.id"))
    });
    (!named).then(|| uuid::Uuid::new_v4().to_string())
}

/// Installs the global subscriber. Call once, first.
pub fn init(options: &TracingOptions) -> TracingGuard {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(options.default_service_name);
    }
    if let Some(id) = generated_instance_id(std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok()) {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", id));
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let otlp = OtlpSettings::from_env();
    let mut export_error = None;
    let mut export_gate = None;
    if let Some(settings) = &otlp {
        match QueueingProcessor::start(settings, options.upstream_thread) {
            Ok((processor, gate)) => {
                provider = provider.with_span_processor(processor);
                export_gate = Some(gate);
            }
            Err(err) => export_error = Some(format!("{err:#}")),
        }
    }
    // Without an exporter nothing reads an OpenTelemetry span, so its layer is not installed
    // (a fifth of the CPU of a zero-work request, docs/benchmarks.md); the route layer makes
    // the trace ids itself, so responses, logs and outgoing calls still name a trace.
    let exporting = otlp.is_some() && export_error.is_none();
    let provider = provider.build();
    let tracer = provider.tracer("stallscope");

    let json = std::env::var("STALLSCOPE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(options.default_log_filter));
    let logs = log_layer(
        LogFormat {
            json,
            ansi: std::io::stderr().is_terminal(),
        },
        std::io::stderr,
        SystemTime,
        log_filter,
    );
    let trace_filter = EnvFilter::try_from_env("STALLSCOPE_TRACE_FILTER")
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The layers go in as one list, not as optional layers: an absent `Option` layer answers
    // "interested" for every call site, which keeps alive the spans every per-layer filter
    // turned away (the server span without an exporter would be built for nothing).
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![logs];
    if exporting {
        layers.push(
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
                // `target` (the Rust module) is no OpenTelemetry attribute; nothing reads it.
                .with_target(false)
                .with_context_activation(false)
                .with_filter(trace_filter)
                .boxed(),
        );
    }
    if options.console {
        layers.push(
            console_subscriber::ConsoleLayer::builder()
                .with_default_env()
                .spawn()
                .boxed(),
        );
    }
    let installed = tracing_subscriber::registry().with(layers).try_init();
    if installed.is_err() {
        eprintln!("stallscope: a tracing subscriber was already installed; keeping it");
    }
    // The exporting task starts now, where tokio-console's layer sees it.
    drop(export_gate);
    for warning in otlp.iter().flat_map(|settings| &settings.warnings) {
        tracing::warn!("{warning}");
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

// Why formatters of our own and no span per request: tracing-subscriber's own, with the server
// span made for every request, measured 0.57 × bare and 0.78 × the conventional stack against
// this design's 0.86 and 1.23 (docs/benchmarks.md).

/// How log lines look.
#[derive(Debug, Clone, Copy)]
struct LogFormat {
    json: bool,
    /// Human lines with ANSI colours.
    ansi: bool,
}

/// The log layer: lines in `format` to `writer`, filtered by `filter`. Logs never see the
/// server span (made only for the exporter): they print the request's context instead
/// ([`HumanLines`], [`JsonWithTraceIds`]), the same with or without an exporter.
fn log_layer<S, W, T>(
    format: LogFormat,
    writer: W,
    timer: T,
    filter: EnvFilter,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    T: FormatTime + Send + Sync + 'static,
{
    let filter = filter.and(filter_fn(|meta| !is_server_span(meta)));
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if format.json {
        layer
            .fmt_fields(SpanFieldsForLogs { json: true })
            .event_format(JsonWithTraceIds)
            .with_filter(filter)
            .boxed()
    } else {
        layer
            .with_ansi(format.ansi)
            .fmt_fields(SpanFieldsForLogs { json: false })
            .event_format(HumanLines::new(timer))
            .with_filter(filter)
            .boxed()
    }
}

/// The route layer's server span: for the exporter only, never for logs. (Asked once per
/// call site: filters of this kind are cached.)
fn is_server_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.name() == SERVER_SPAN && meta.target().ends_with("::route_layer")
}

/// How the log layer formats the fields of the spans it sees (child spans inside a request:
/// blocking-pool jobs, queries, outgoing calls; the server span never reaches it). The fmt
/// layer formats a span's fields the moment the span is created (and again at every
/// `record`), whether or not a line is ever logged inside it, and those spans carry
/// attributes only a trace backend reads (`otel.*`, `network.*`, …). Human logs keep what helps
/// a reader and skip the rest; JSON logs print only the request's ids (see
/// [`JsonWithTraceIds`]), so there span fields are not formatted at all. The fmt
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
/// an ANSI styler even with colours off (when the request's server span still reached the log
/// layer, that was 3.6 % of the service's CPU on a zero-work endpoint; now it is every child
/// span of a request). Anything else goes to the default formatter.
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

/// Human log lines as tracing-subscriber's default (`Full`) format writes them, with the
/// request the line belongs to (see [`request_context`]) where a request span's context
/// used to be:
///
/// `2026-11-23T10:00:00.000000Z  WARN HTTP request{http.request.method="GET" http.route="/db/{variant}/sleep" url.path="/db/blocking/sleep" stallscope.variant="blocking" stallscope.request_id="req-0000002a" trace_id="4bf9…"}:db.query{…}: stallscope::db: message`
///
/// Everything after the prefix is the default format's (child spans, target, fields), so a line
/// outside any request is exactly the default line; tests hold both forms to the default
/// formatter's output, ANSI colours included.
struct HumanLines<T> {
    timer: T,
    /// The default format minus timestamp and level, which come before the prefix.
    rest: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl<T> HumanLines<T> {
    fn new(timer: T) -> Self {
        Self {
            timer,
            rest: tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false),
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for HumanLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let dimmed = style(ansi, Style::new().dimmed());
        write!(writer, "{}", dimmed.prefix())?;
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        write!(writer, "{} ", dimmed.suffix())?;
        write!(writer, "{} ", FmtLevel(*event.metadata().level(), ansi))?;
        request_context::with_current(|request| match request {
            Some(request) => {
                let in_child_span = ctx.event_scope().is_some_and(|mut s| s.next().is_some());
                write_request_prefix(&mut writer, request, !in_child_span)
            }
            None => Ok(()),
        })?;
        self.rest.format_event(ctx, writer, event)
    }
}

fn style(ansi: bool, style: Style) -> Style {
    if ansi { style } else { Style::new() }
}

/// `HTTP request{fields}:` as the default format writes a span with these fields (and a space
/// when no child span follows).
fn write_request_prefix(
    writer: &mut Writer<'_>,
    request: &RequestContext,
    then_space: bool,
) -> fmt::Result {
    let ansi = writer.has_ansi_escapes();
    let (bold, dimmed, italic) = (
        style(ansi, Style::new().bold()),
        style(ansi, Style::new().dimmed()),
        style(ansi, Style::new().italic()),
    );
    let path = request.path();
    let trace_id = trace_id_hex(request.ids.trace_id);
    // Hex digits are always UTF-8; the fallback cannot happen.
    let trace_id = std::str::from_utf8(&trace_id).unwrap_or_default();
    // Name, value, and whether the value is a string (quoted like `{:?}`; the trace id is
    // written bare, as `trace_id = %id` event fields are).
    let fields: [(&str, &str, bool); 6] = [
        ("http.request.method", request.method, true),
        ("http.route", request.route, true),
        ("url.path", path, true),
        ("stallscope.variant", request.variant, true),
        ("stallscope.request_id", request.request_id(), true),
        ("trace_id", trace_id, false),
    ];
    write!(writer, "{}{}", bold.paint(SERVER_SPAN), bold.paint("{"))?;
    for (i, (name, value, quoted)) in fields.into_iter().enumerate() {
        let separator = if i == 0 { "" } else { " " };
        if !quoted {
            write!(
                writer,
                "{separator}{}{}{value}",
                italic.paint(name),
                dimmed.paint("=")
            )?;
        } else if !ansi && needs_no_escaping(value) {
            // What `{:?}` writes for such a value, without going through it.
            for part in [separator, name, "=\"", value, "\""] {
                writer.write_str(part)?;
            }
        } else {
            write!(
                writer,
                "{separator}{}{}{value:?}",
                italic.paint(name),
                dimmed.paint("=")
            )?;
        }
    }
    write!(writer, "{}{}", bold.paint("}"), dimmed.paint(":"))?;
    if then_space {
        writer.write_char(' ')?;
    }
    Ok(())
}

/// A level as the default format writes it: five columns, coloured with ANSI.
struct FmtLevel(tracing::Level, bool);

impl fmt::Display for FmtLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use nu_ansi_term::Color;
        let (text, color) = match self.0 {
            tracing::Level::TRACE => ("TRACE", Color::Purple),
            tracing::Level::DEBUG => ("DEBUG", Color::Blue),
            tracing::Level::INFO => (" INFO", Color::Green),
            tracing::Level::WARN => (" WARN", Color::Yellow),
            tracing::Level::ERROR => ("ERROR", Color::Red),
        };
        if self.1 {
            write!(f, "{}", color.paint(text))
        } else {
            f.pad(text)
        }
    }
}

/// One JSON object per line: timestamp, level, target, the event's fields, the innermost
/// span's name, and the `request_id`, `trace_id` and `span_id` of the request it belongs to.
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
        use tracing_log::NormalizeEvent;
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        // A line from a library logging through the `log` crate arrives with target `log` and
        // its real target among `log.*` fields: report it as it was written.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert("target".into(), Value::String(metadata.target().into()));
        let mut fields = JsonFields(BTreeMap::new());
        event.record(&mut fields);
        for (key, value) in fields.0 {
            line.insert(key, value);
        }
        let innermost = ctx
            .event_scope()
            .and_then(|mut scope| scope.next().map(|span| span.name()));
        request_context::with_current(|request| {
            if let Some(name) = innermost.or(request.map(|_| SERVER_SPAN)) {
                line.insert("span".into(), Value::String(name.into()));
            }
            if let Some(request) = request {
                line.entry("request_id")
                    .or_insert_with(|| Value::String(request.request_id().to_owned()));
                line.entry("trace_id")
                    .or_insert_with(|| Value::String(request.ids.trace_id.to_string()));
                line.entry("span_id")
                    .or_insert_with(|| Value::String(request.ids.span_id.to_string()));
            }
        });
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonFields(BTreeMap<String, Value>);

impl JsonFields {
    /// Keeps `value` unless the field is a `log` record's metadata (`log.target`, …), which
    /// the line's own `target` already says.
    fn keep(&mut self, field: &Field, value: impl FnOnce() -> Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().into(), value());
        }
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.keep(field, || serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.keep(field, || serde_json::json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.keep(field, || serde_json::json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.keep(field, || Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, || Value::String(value.into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.keep(field, || Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A timestamp that does not change, so lines can be compared.
    struct FixedTime;

    impl FormatTime for FixedTime {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-11-23T10:00:00.000000Z")
        }
    }

    type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

    /// What `layer` (made with a capturing writer) writes while `scenario` runs.
    fn captured(layer: impl FnOnce(Captured) -> BoxedLayer, scenario: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(layer(captured.clone()));
        tracing::subscriber::with_default(subscriber, scenario);
        let bytes = captured.0.lock().expect("captured").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    fn ours(format: LogFormat) -> impl FnOnce(Captured) -> BoxedLayer {
        move |writer| {
            log_layer(
                format,
                move || writer.clone(),
                FixedTime,
                EnvFilter::new("trace"),
            )
        }
    }

    /// tracing-subscriber's own human format, with the service's field formatter.
    fn default_format(ansi: bool) -> impl FnOnce(Captured) -> BoxedLayer {
        move |writer| {
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(ansi)
                .with_timer(FixedTime)
                .fmt_fields(SpanFieldsForLogs { json: false })
                .boxed()
        }
    }

    /// Events at every level, outside spans and inside nested child spans.
    fn some_events() {
        tracing::error!(code = 3u64, "failed: {}", "why");
        tracing::warn!(path = "/a b", "warned");
        tracing::info!("plain");
        let query = tracing::info_span!("db.query", db.system = "sqlite", db.operation = "SELECT");
        query.in_scope(|| {
            tracing::debug!(rows = 2u64, "inside a child span");
            tracing::info_span!("blocking").in_scope(|| tracing::trace!("two deep"));
        });
    }

    #[test]
    fn human_lines_outside_requests_are_the_default_format() {
        for ansi in [false, true] {
            let ours = captured(ours(LogFormat { json: false, ansi }), some_events);
            let default = captured(default_format(ansi), some_events);
            assert_eq!(ours, default, "ansi: {ansi}");
            assert_eq!(ours.lines().count(), 5, "{ours}");
        }
    }

    #[test]
    fn human_lines_in_a_request_read_as_inside_a_request_span() {
        let request = super::request_context::tests::sample("req-0000002a");
        for ansi in [false, true] {
            let ours = captured(ours(LogFormat { json: false, ansi }), || {
                let _in_request = request_context::enter(Some(Arc::clone(&request)));
                some_events();
            });
            // The same events inside a span with the request's fields, by the default format.
            let default = captured(default_format(ansi), || {
                tracing::info_span!(
                    "HTTP request",
                    http.request.method = "GET",
                    http.route = "/sleep/{variant}",
                    url.path = "/sleep/blocking",
                    stallscope.variant = "blocking",
                    stallscope.request_id = "req-0000002a",
                    trace_id = %request.ids.trace_id,
                )
                .in_scope(some_events);
            });
            assert_eq!(ours, default, "ansi: {ansi}");
        }
        let plain = captured(
            ours(LogFormat {
                json: false,
                ansi: false,
            }),
            || {
                let _in_request = request_context::enter(Some(Arc::clone(&request)));
                tracing::info!("hello");
            },
        );
        assert_eq!(
            plain,
            "2026-11-23T10:00:00.000000Z  INFO HTTP request{http.request.method=\"GET\" \
             http.route=\"/sleep/{variant}\" url.path=\"/sleep/blocking\" \
             stallscope.variant=\"blocking\" stallscope.request_id=\"req-0000002a\" \
             trace_id=4bf92f3577b34da6a3ce929d0e0e4736}: \
             stallscope_telemetry::logging::tests: hello\n"
        );
    }

    /// The route layer's request start, under the log layer alone (no exporter) and with an
    /// OpenTelemetry layer too: no server span without the exporter, and either way one
    /// request prefix per line, never the server span's own fields.
    #[test]
    fn logs_name_the_request_once_with_or_without_a_server_span() {
        use axum::body::Body;
        use opentelemetry::trace::TracerProvider as _;
        let request = axum::extract::Request::builder()
            .uri("/sleep/blocking?ms=1")
            .body(Body::empty())
            .expect("request");
        let scenario = || {
            let crate::route_layer::Begun { context, span, .. } = crate::route_layer::begin_request(
                &request,
                "GET /sleep/{variant}",
                "/sleep/{variant}",
                "blocking",
                "GET",
            );
            let _in_request = request_context::enter(Some(Arc::clone(&context)));
            let _span = span.as_ref().map(tracing::Span::enter);
            tracing::info!(exported = span.is_some(), "hello");
            (context.ids, span.is_some())
        };
        for exporting in [false, true] {
            let captured_logs = Captured::default();
            let writer = captured_logs.clone();
            let logs = ours(LogFormat {
                json: false,
                ansi: false,
            })(writer);
            let provider = SdkTracerProvider::builder().build();
            // Layers as `init` installs them: one list.
            let mut layers = vec![logs];
            if exporting {
                layers.push(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("test"))
                        .boxed(),
                );
            }
            let subscriber = tracing_subscriber::registry().with(layers);
            let (ids, had_span) = tracing::subscriber::with_default(subscriber, scenario);
            assert_eq!(had_span, exporting, "a server span only for the exporter");
            assert_eq!(ids.sampled, exporting, "ids from the exported span");
            let line =
                String::from_utf8(captured_logs.0.lock().expect("logs").clone()).expect("utf-8");
            assert_eq!(line.matches("HTTP request{").count(), 1, "{line}");
            assert!(
                line.contains(&format!("trace_id={}", ids.trace_id)),
                "{line}"
            );
            assert!(!line.contains("otel."), "{line}");
            assert!(line.contains(&format!("exported={exporting}")), "{line}");
        }
    }

    #[test]
    fn json_lines_carry_the_requests_ids() {
        let request = super::request_context::tests::sample("req-0000002a");
        let json = LogFormat {
            json: true,
            ansi: false,
        };
        let text = captured(ours(json), || {
            tracing::info!("outside");
            let _in_request = request_context::enter(Some(Arc::clone(&request)));
            tracing::warn!("inside");
            tracing::info_span!("db.query", db.system = "sqlite").in_scope(|| {
                tracing::info!(request_id = "own", "in a child span");
            });
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["message"], "outside");
        for absent in ["trace_id", "span_id", "request_id", "span"] {
            assert!(lines[0].get(absent).is_none(), "{absent}: {}", lines[0]);
        }
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["span"], "HTTP request");
        assert_eq!(lines[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[1]["span_id"], "00f067aa0ba902b7");
        assert_eq!(lines[1]["request_id"], "req-0000002a");
        assert_eq!(lines[2]["span"], "db.query");
        assert_eq!(lines[2]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[2]["request_id"], "own", "an event's own field wins");
        assert!(
            lines[2].get("db.system").is_none(),
            "span fields stay out of JSON"
        );
    }

    /// A library logging through the `log` crate: both formats name its own target and leave
    /// out the `log.*` fields the bridge adds.
    #[test]
    fn log_crate_lines_keep_their_target_in_both_formats() {
        fn library_line() {
            let record = tracing_log::log::Record::builder()
                .args(format_args!("pool connection closed"))
                .level(tracing_log::log::Level::Warn)
                .target("r2d2::pool")
                .module_path_static(Some("r2d2::pool"))
                .file_static(Some("pool.rs"))
                .line(Some(42))
                .build();
            tracing_log::format_trace(&record).expect("forwarded");
        }
        let json = captured(
            ours(LogFormat {
                json: true,
                ansi: false,
            }),
            library_line,
        );
        let line: Value = serde_json::from_str(json.trim()).expect("one JSON line");
        assert_eq!(line["target"], "r2d2::pool", "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["message"], "pool connection closed", "{line}");
        let keys: Vec<&String> = line.as_object().expect("object").keys().collect();
        assert!(keys.iter().all(|k| !k.starts_with("log.")), "{line}");
        let human = captured(
            ours(LogFormat {
                json: false,
                ansi: false,
            }),
            library_line,
        );
        assert!(
            human.contains("r2d2::pool: pool connection closed"),
            "{human}"
        );
        assert!(!human.contains("log.target"), "{human}");
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
    fn human_logs_skip_trace_only_attributes_of_child_spans() {
        let text = captured(
            ours(LogFormat {
                json: false,
                ansi: false,
            }),
            || {
                tracing::info_span!(
                    "HTTP client request",
                    otel.kind = "client",
                    network.protocol.version = "1.1",
                    http.route = "/slow",
                )
                .in_scope(|| tracing::warn!("inside"));
            },
        );
        assert!(text.contains(r#"http.route="/slow""#), "{text}");
        for hidden in ["otel.kind", "network.protocol"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        assert!(text.contains("inside"), "{text}");
    }

    #[test]
    fn instance_ids_are_generated_unless_the_deployment_names_one() {
        let a = generated_instance_id(None).expect("generated");
        let b = generated_instance_id(Some("deployment.environment.name=ci".into()));
        assert_ne!(Some(a.clone()), b, "each process its own");
        assert_eq!(a.len(), 36, "a UUID: {a}");
        let named = "k8s.pod.name=web-0, service.instance.id=web-0".to_owned();
        assert_eq!(generated_instance_id(Some(named)), None);
    }
}
