//! OTLP trace export that can never slow a request down.
//!
//! The SDK's batch processor drops spans silently when its queue is full. stallscope needs to
//! *count* what it drops, so it has its own small processor: `on_end` does a non-blocking
//! `try_send` into a bounded queue (full queue → span dropped and counted), and an exporter
//! thread with a runtime of its own drains the queue in batches. A slow, absent or failing
//! collector therefore costs requests nothing: at worst spans are dropped, and
//! `stallscope_otel_spans_dropped_total` says how many and why.
//!
//! Configuration is the standard `OTEL_*` environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; export is off when neither is set),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the default, or `http/protobuf`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`, and the batch settings
//! `OTEL_BSP_MAX_QUEUE_SIZE` (2048), `OTEL_BSP_SCHEDULE_DELAY` (5000 ms),
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use tokio::sync::mpsc;

use super::metric_names::{OTEL_SPANS_DROPPED, OTEL_SPANS_EXPORTED};

/// Where and how to export, read from the environment.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    pub endpoint: String,
    /// The endpoint came from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: OTLP/HTTP uses it as
    /// given, where the base `OTEL_EXPORTER_OTLP_ENDPOINT` gets `/v1/traces` appended.
    pub per_signal: bool,
    /// What the environment asked for that could not be done as asked, said once logging
    /// is up (a warning now would go nowhere).
    pub warnings: Vec<String>,
    pub protocol: Protocol,
    pub max_queue_size: usize,
    pub schedule_delay: Duration,
    pub max_batch_size: usize,
}

impl OtlpSettings {
    /// `None` when no endpoint is configured: export is off.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let per_signal = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = per_signal
            .clone()
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
        let mut warnings = Vec::new();
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            Some("http/protobuf") => Protocol::HttpBinary,
            Some("grpc") | None => Protocol::Grpc,
            // An OTLP/HTTP receiver takes protobuf on the same path: closer to what was asked
            // than gRPC against an HTTP port.
            Some("http/json") => {
                warnings.push(
                    "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported; sending http/protobuf to the same endpoint (OTLP/HTTP receivers accept both)".to_owned(),
                );
                Protocol::HttpBinary
            }
            Some(other) => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not an OTLP protocol (grpc, http/protobuf); using grpc"
                ));
                Protocol::Grpc
            }
        };
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        Some(Self {
            endpoint,
            per_signal: per_signal.is_some(),
            warnings,
            protocol,
            max_queue_size: usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048))
                .unwrap_or(2048)
                .max(1),
            schedule_delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000).max(1)),
            max_batch_size: usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
                .unwrap_or(512)
                .max(1),
        })
    }
}

/// Every `reason` label of `stallscope_otel_spans_dropped_total`.
pub const DROP_REASONS: [&str; 3] = [DROPPED_QUEUE_FULL, DROPPED_EXPORT_FAILED, DROPPED_SHUT_DOWN];
const DROPPED_QUEUE_FULL: &str = "queue_full";
const DROPPED_EXPORT_FAILED: &str = "export_failed";
const DROPPED_SHUT_DOWN: &str = "shut_down";

/// Says out loud that spans are being lost, without flooding the log: the first loss at once,
/// then at most one WARN per [`LOSS_WARN_EVERY`] with how many were lost since, by reason
/// (the counter `stallscope_otel_spans_dropped_total` has the exact totals).
struct LossReporter {
    state: Mutex<LossState>,
}

#[derive(Default)]
struct LossState {
    last_warned: Option<Instant>,
    /// Lost since the last warning, per entry of [`DROP_REASONS`].
    unreported: [u64; 3],
    last_error: Option<String>,
}

const LOSS_WARN_EVERY: Duration = Duration::from_secs(10);

static LOSSES: LossReporter = LossReporter {
    state: Mutex::new(LossState {
        last_warned: None,
        unreported: [0; 3],
        last_error: None,
    }),
};

impl LossReporter {
    fn lost(&self, reason: &'static str, count: u64, error: Option<String>) {
        metrics::counter!(OTEL_SPANS_DROPPED, "reason" => reason).increment(count);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(slot) = DROP_REASONS.iter().position(|r| *r == reason) {
            state.unreported[slot] += count;
        }
        if error.is_some() {
            state.last_error = error;
        }
        let first = state.last_warned.is_none();
        if state
            .last_warned
            .is_some_and(|t| t.elapsed() < LOSS_WARN_EVERY)
        {
            return;
        }
        state.last_warned = Some(Instant::now());
        let [queue_full, export_failed, shut_down] = std::mem::take(&mut state.unreported);
        let error = state.last_error.take().unwrap_or_default();
        drop(state);
        tracing::warn!(
            queue_full,
            export_failed,
            shut_down,
            error,
            "spans are being dropped ({} since {}): the trace backend will miss them",
            queue_full + export_failed + shut_down,
            if first {
                "start-up"
            } else {
                "the last warning"
            }
        );
    }
}

/// Which service a span is exported as: the service itself, or its in-process upstream.
#[derive(Debug, Clone, Copy)]
enum Service {
    Main = 0,
    Upstream = 1,
}

enum Message {
    Span(Box<SpanData>, Service),
    /// The provider's resource (`service.name`, `OTEL_RESOURCE_ATTRIBUTES`, …): the exporter
    /// attaches it to every batch, which is how a trace UI knows which service sent a span.
    Resource(Box<Resource>),
    /// Export everything queued so far, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The span processor described in the module docs.
#[derive(Debug)]
pub struct QueueingProcessor {
    /// `None` once shut down. `try_send` on a Tokio channel needs no runtime, so `on_end`
    /// works from any thread and never waits.
    queue: Mutex<Option<mpsc::Sender<Message>>>,
    /// The thread an in-process upstream serves on: spans that end there leave as the
    /// upstream's (`{service.name}-upstream`), like a standalone upstream's.
    upstream_thread: Option<&'static str>,
    exporter_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Spans handed to the exporter thread and not yet exported or dropped: at the shutdown
    /// deadline, the spans lost at exit.
    pending: Arc<AtomicU64>,
}

/// Holds the exporter thread's task back until dropped: the subscriber (with tokio-console's
/// layer, which only sees tasks spawned after it is installed) must exist first.
pub struct ExportGate(#[allow(dead_code)] std::sync::mpsc::SyncSender<()>);

impl QueueingProcessor {
    /// Builds the OTLP exporter for `settings` and starts the exporter thread, which spawns
    /// its exporting task once the returned gate is dropped.
    pub fn start(
        settings: &OtlpSettings,
        upstream_thread: Option<&'static str>,
    ) -> anyhow::Result<(Self, ExportGate)> {
        let (gate, gate_opened) = std::sync::mpsc::sync_channel::<()>(0);
        let (queue, receiver) = mpsc::channel(settings.max_queue_size);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The tonic channel must be created inside a runtime.
        let exporter = runtime.block_on(async { build_exporter(settings) })?;
        let (delay, batch) = (settings.schedule_delay, settings.max_batch_size);
        let pending = Arc::new(AtomicU64::new(0));
        let exported = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name("otel-exporter".into())
            .spawn(move || {
                // Nothing is ever sent: the gate opens when its sender is dropped.
                let _ = gate_opened.recv();
                runtime.block_on(async move {
                    // A named task, so tokio-console shows what this thread does.
                    match tokio::task::Builder::new()
                        .name("otlp-span-exporter")
                        .spawn(export_loop(receiver, exporter, delay, batch, exported))
                    {
                        Ok(task) => {
                            let _ = task.await;
                        }
                        Err(err) => tracing::error!(%err, "could not start the span exporter"),
                    }
                });
            })?;
        Ok((
            Self {
                queue: Mutex::new(Some(queue)),
                upstream_thread,
                exporter_thread: Mutex::new(Some(thread)),
                pending,
            },
            ExportGate(gate),
        ))
    }

    fn sender(&self) -> Option<mpsc::Sender<Message>> {
        self.queue.lock().ok().and_then(|q| q.clone())
    }
}

fn build_exporter(settings: &OtlpSettings) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let exporter = match settings.protocol {
        Protocol::HttpBinary => {
            // As the OTLP exporter spec says: the per-signal variable is the full URL, the
            // base one gets the signal's path.
            let endpoint = if settings.per_signal {
                settings.endpoint.clone()
            } else {
                format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .build()?
        }
        _ => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .build()?,
    };
    Ok(exporter)
}

async fn export_loop(
    mut receiver: mpsc::Receiver<Message>,
    mut exporter: opentelemetry_otlp::SpanExporter,
    delay: Duration,
    max_batch: usize,
    pending: Arc<AtomicU64>,
) {
    let exporter = &mut Exporter {
        inner: &mut exporter,
        pending: &pending,
    };
    // One batch and one resource per service: a batch goes out under its own resource.
    let mut batches: [Vec<SpanData>; 2] = [Vec::new(), Vec::new()];
    let mut resources: [Resource; 2] = [
        Resource::builder_empty().build(),
        Resource::builder_empty().build(),
    ];
    let mut deadline = tokio::time::Instant::now() + delay;
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(Message::Span(span, service))) => {
                let batch = &mut batches[service as usize];
                batch.push(*span);
                if batch.len() >= max_batch {
                    exporter.export(&resources[service as usize], batch).await;
                    deadline = tokio::time::Instant::now() + delay;
                }
            }
            Ok(Some(Message::Resource(resource))) => {
                let upstream = upstream_resource(&resource);
                resources = [*resource, upstream];
            }
            Ok(Some(Message::Flush(done))) => {
                exporter.export_all(&resources, &mut batches).await;
                let _ = done.send(());
            }
            Err(_elapsed) => {
                exporter.export_all(&resources, &mut batches).await;
                deadline = tokio::time::Instant::now() + delay;
            }
            Ok(None) => {
                exporter.export_all(&resources, &mut batches).await;
                let _ = exporter.inner.shutdown();
                return;
            }
        }
    }
}

/// The service's resource under the upstream's name: `{service.name}-upstream`, the other
/// attributes (`OTEL_RESOURCE_ATTRIBUTES`) as they are.
fn upstream_resource(service: &Resource) -> Resource {
    let name = service
        .get(&opentelemetry::Key::new("service.name"))
        .map_or_else(|| "unknown_service".to_owned(), |v| v.to_string());
    let attributes = service
        .iter()
        .filter(|(key, _)| key.as_str() != "service.name")
        .map(|(key, value)| opentelemetry::KeyValue::new(key.clone(), value.clone()));
    Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(format!("{name}-upstream"))
        .build()
}

/// The OTLP exporter, and the count of spans it still owes.
struct Exporter<'a> {
    inner: &'a mut opentelemetry_otlp::SpanExporter,
    pending: &'a AtomicU64,
}

impl Exporter<'_> {
    async fn export_all(&mut self, resources: &[Resource; 2], batches: &mut [Vec<SpanData>; 2]) {
        for (resource, batch) in resources.iter().zip(batches.iter_mut()) {
            self.export(resource, batch).await;
        }
    }

    async fn export(&mut self, resource: &Resource, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        self.inner.set_resource(resource);
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        let result = self.inner.export(spans).await;
        self.pending.fetch_sub(count, Ordering::Relaxed);
        match result {
            Ok(()) => metrics::counter!(OTEL_SPANS_EXPORTED).increment(count),
            Err(err) => LOSSES.lost(DROPPED_EXPORT_FAILED, count, Some(err.to_string())),
        }
    }
}

impl SpanProcessor for QueueingProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let Some(queue) = self.sender() else {
            LOSSES.lost(DROPPED_SHUT_DOWN, 1, None);
            return;
        };
        let service = match self.upstream_thread {
            Some(name) if std::thread::current().name() == Some(name) => Service::Upstream,
            _ => Service::Main,
        };
        // Counted before it is sent, so the exporter never subtracts a span not yet added.
        self.pending.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(Message::Span(Box::new(span), service)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                LOSSES.lost(DROPPED_QUEUE_FULL, 1, None);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                LOSSES.lost(DROPPED_SHUT_DOWN, 1, None);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_until(Instant::now() + FLUSH_TIMEOUT)
    }

    /// The provider calls this once, while it is built and before any span exists, so the
    /// queue is empty and the resource reaches the exporter ahead of every span.
    fn set_resource(&mut self, resource: &Resource) {
        if let Some(queue) = self.sender()
            && queue
                .try_send(Message::Resource(Box::new(resource.clone())))
                .is_err()
        {
            tracing::warn!("could not hand the resource to the span exporter");
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        let flushed = self.flush_until(deadline);
        // Dropping the only sender ends the export loop once the queue is drained.
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        let thread = self.exporter_thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        let lost = self.pending.swap(0, Ordering::Relaxed);
        if lost > 0 {
            metrics::counter!(OTEL_SPANS_DROPPED, "reason" => DROPPED_SHUT_DOWN).increment(lost);
            tracing::warn!(
                lost,
                timeout_ms = timeout.as_millis(),
                "{lost} spans were still queued or being exported at the shutdown deadline and are lost"
            );
        }
        flushed
    }
}

impl QueueingProcessor {
    /// Exports everything queued so far, waiting no later than `deadline`. Flushing is for
    /// shutdown, never for the request path: waiting for room in the queue is fine.
    fn flush_until(&self, deadline: Instant) -> OTelSdkResult {
        let timeout = || OTelSdkError::Timeout(deadline.saturating_duration_since(Instant::now()));
        let queue = self.sender().ok_or(OTelSdkError::AlreadyShutdown)?;
        let (done, flushed) = std::sync::mpsc::sync_channel(1);
        let mut message = Message::Flush(done);
        loop {
            match queue.try_send(message) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(timeout()),
            }
        }
        flushed
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| timeout())
    }
}

const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
