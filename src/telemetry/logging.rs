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
use opentelemetry_sdk::trace::Sampler;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::otlp::{OtlpSettings, QueueingProcessor};

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
    if otlp.is_none() || export_error.is_some() {
        // Nothing would ever read a recorded span: keep the ids (responses and JSON logs
        // still name a trace, and `traceparent` still propagates it, flagged "not sampled"),
        // skip recording the attributes and building the span data at its end.
        provider = provider.with_sampler(Sampler::AlwaysOff);
    }
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
            .event_format(JsonWithTraceIds)
            .with_filter(log_filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
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
        .with(TraceIdCapture)
        .with(logs)
        .with(
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
                .with_filter(trace_filter),
        )
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
        exporting: otlp.is_some(),
    }
}

/// A span's trace and span id as recorded by the route layer (`trace_id`, `span_id` fields).
#[derive(Debug, Clone, Default)]
struct TraceIds {
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl Visit for TraceIds {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => self.trace_id = Some(value.to_owned()),
            "span_id" => self.span_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "trace_id" | "span_id") {
            self.record_str(field, format!("{value:?}").trim_matches('"'));
        }
    }
}

/// Keeps `trace_id`/`span_id` span fields where the JSON formatter can find them.
struct TraceIdCapture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceIdCapture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut ids = TraceIds::default();
        attrs.record(&mut ids);
        if (ids.trace_id.is_some() || ids.span_id.is_some())
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut recorded = TraceIds::default();
        values.record(&mut recorded);
        if recorded.trace_id.is_none() && recorded.span_id.is_none() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            match extensions.get_mut::<TraceIds>() {
                Some(ids) => {
                    ids.trace_id = recorded.trace_id.or(ids.trace_id.take());
                    ids.span_id = recorded.span_id.or(ids.span_id.take());
                }
                None => extensions.insert(recorded),
            }
        }
    }
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
                if let Some(ids) = span.extensions().get::<TraceIds>() {
                    if let Some(trace_id) = &ids.trace_id {
                        line.entry("trace_id")
                            .or_insert_with(|| Value::String(trace_id.clone()));
                    }
                    if let Some(span_id) = &ids.span_id {
                        line.entry("span_id")
                            .or_insert_with(|| Value::String(span_id.clone()));
                    }
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
