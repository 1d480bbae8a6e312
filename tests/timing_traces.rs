//! Traces against a real OTLP receiver (`fake-opentelemetry-collector`, in this process) and
//! the real binary: the span tree across the upstream call, poll statistics and stall events,
//! a dead collector that costs requests nothing, and logs that join their traces.

mod common;

use std::time::{Duration, Instant};

use common::ServiceProcess;
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Export quickly so tests do not wait for the default 5 s batch delay.
const FAST_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

/// Spans received until `done` holds for them (or 10 s pass).
async fn collect_until(
    collector: &mut FakeCollectorServer,
    done: impl Fn(&[ExportedSpan]) -> bool,
) -> Vec<ExportedSpan> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut spans = Vec::new();
    while !done(&spans) && Instant::now() < deadline {
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(500))
                .await,
        );
    }
    spans
}

fn has_variant(spans: &[ExportedSpan], variant: &str) -> bool {
    spans.iter().any(|s| {
        s.attributes
            .get("stallscope.variant")
            .is_some_and(|v| v.contains(variant))
    })
}

fn has_name(spans: &[ExportedSpan], name: &str) -> bool {
    spans.iter().any(|s| s.name == name)
}

fn find<'a>(spans: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span named {name:?} in {:#?}", names(spans)))
}

fn names(spans: &[ExportedSpan]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn attribute<'a>(span: &'a ExportedSpan, key: &str) -> &'a str {
    span.attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{} has no {key}: {:#?}", span.name, span.attributes))
}

fn number(span: &ExportedSpan, key: &str) -> f64 {
    let raw = attribute(span, key);
    raw.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {raw:?} is not a number"))
}

#[tokio::test]
async fn upstream_call_is_one_trace_across_client_and_upstream() {
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let service = ServiceProcess::start_with_env(
        &["--workers", "2"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    let http = reqwest::Client::builder()
        .user_agent("stallscope-test/1.0")
        .build()
        .expect("client");
    let response = http
        .get(format!("{}/upstream/async?ms=20", service.base_url))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let traceparent = response
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("traceparent response header")
        .to_owned();

    let spans = collect_until(&mut collector, |s| {
        has_name(s, "GET /upstream/{variant}") && has_name(s, "GET") && has_name(s, "GET /slow")
    })
    .await;
    let server = find(&spans, "GET /upstream/{variant}");
    let client = find(&spans, "GET");
    let upstream = find(&spans, "GET /slow");
    assert_eq!(server.kind, "SPAN_KIND_SERVER", "{server:#?}");
    assert_eq!(client.kind, "SPAN_KIND_CLIENT");
    assert_eq!(upstream.kind, "SPAN_KIND_SERVER");
    assert_eq!(client.trace_id, server.trace_id, "one trace");
    assert_eq!(
        upstream.trace_id, server.trace_id,
        "the upstream joined through traceparent"
    );
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(upstream.parent_span_id, client.span_id);
    assert!(
        traceparent.contains(&server.trace_id),
        "{traceparent} names the trace"
    );
    // The ids reach the logs without passing through the span's fields, so they are not
    // repeated as attributes of the span they identify.
    for redundant in ["trace_id", "span_id"] {
        assert!(
            !server.attributes.contains_key(redundant),
            "{redundant} is an attribute: {:?}",
            server.attributes
        );
    }
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/upstream/{variant}"),
        ("http.response.status_code", "200"),
        ("url.path", "/upstream/async"),
        ("stallscope.variant", "async"),
    ] {
        assert!(
            attribute(server, key).contains(value),
            "{key}: {:?}",
            server.attributes
        );
    }
    assert!(
        attribute(client, "url.full").contains("/slow?ms=20"),
        "{:?}",
        client.attributes
    );
    assert!(attribute(client, "http.response.status_code").contains("200"));
    assert!(number(server, "stallscope.poll.count") >= 2.0);
    // Typed as an OTLP backend indexes them: numbers as numbers, so that
    // `http.response.status_code >= 500` or `stallscope.poll.longest_ms > 100` can match.
    for (span, key, kind) in [
        (server, "http.response.status_code", "IntValue(200)"),
        (server, "stallscope.poll.count", "IntValue("),
        (server, "stallscope.poll.longest_ms", "DoubleValue("),
        (server, "stallscope.poll.busy_ms", "DoubleValue("),
        (client, "http.response.status_code", "IntValue(200)"),
        (client, "server.port", "IntValue("),
        (client, "server.address", "StringValue(\"127.0.0.1\")"),
        (server, "http.request.method", "StringValue(\"GET\")"),
    ] {
        assert!(
            attribute(span, key).contains(kind),
            "{}: {key} should be {kind}…, is {}",
            span.name,
            attribute(span, key)
        );
    }
    assert!(
        !server.attributes.contains_key("error.type"),
        "a 200 is no error"
    );
    // The HTTP server conventions' request attributes.
    let port = service.base_url.rsplit(':').next().expect("a port");
    for (key, value) in [
        ("url.query", "StringValue(\"ms=20\")".to_owned()),
        ("server.address", "StringValue(\"127.0.0.1\")".to_owned()),
        ("server.port", format!("IntValue({port})")),
        ("client.address", "StringValue(\"127.0.0.1\")".to_owned()),
        (
            "user_agent.original",
            "StringValue(\"stallscope-test/1.0\")".to_owned(),
        ),
    ] {
        assert!(
            attribute(server, key).contains(&value),
            "{key} should be {value}: {:?}",
            server.attributes
        );
    }
    for span in [server, client, upstream] {
        assert!(
            !span.attributes.contains_key("target"),
            "{}: `target` is no OpenTelemetry attribute: {:?}",
            span.name,
            span.attributes
        );
    }

    // A path no route matches has no `http.route` at all (not a made-up value).
    let missing = reqwest::get(format!("{}/no-such-lesson", service.base_url))
        .await
        .expect("answer");
    assert_eq!(missing.status(), 404);
    let is_missing = |s: &ExportedSpan| {
        s.kind == "SPAN_KIND_SERVER" && attribute_is(s, "url.path", "/no-such-lesson")
    };
    let spans = collect_until(&mut collector, |s| s.iter().any(is_missing)).await;
    let unmatched = spans
        .iter()
        .find(|s| is_missing(s))
        .expect("the unmatched request's span");
    assert_eq!(unmatched.name, "GET");
    assert!(
        !unmatched.attributes.contains_key("http.route"),
        "{:?}",
        unmatched.attributes
    );
}

fn attribute_is(span: &ExportedSpan, key: &str, value: &str) -> bool {
    span.attributes
        .get(key)
        .is_some_and(|v| v.contains(&format!("\"{value}\"")))
}

/// Failures are marked the way the semantic conventions say: a 5xx server span has ERROR
/// status and `error.type` (the status code); a client call that timed out has ERROR status
/// and `error.type="timeout"`, and no status code, since none came back. CPU work's span
/// carries its iteration count once, as an integer.
#[tokio::test]
async fn failures_carry_error_type_and_counts_are_integers() {
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let service = ServiceProcess::start_with_env(
        &["--workers", "2", "--upstream-timeout-ms", "100"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    let timed_out = reqwest::get(format!("{}/upstream/async?ms=400", service.base_url))
        .await
        .expect("answer");
    assert_eq!(timed_out.status(), 504);
    let hashed = reqwest::get(format!("{}/cpu/rayon?iterations=1000", service.base_url))
        .await
        .expect("answer");
    assert_eq!(hashed.status(), 200);
    let spans = collect_until(&mut collector, |s| {
        has_name(s, "GET /upstream/{variant}") && has_name(s, "GET") && has_name(s, "cpu.sha256")
    })
    .await;
    let server = find(&spans, "GET /upstream/{variant}");
    let client = find(&spans, "GET");
    assert!(attribute(server, "http.response.status_code").contains("IntValue(504)"));
    assert!(
        attribute(server, "error.type").contains("\"504\""),
        "{:?}",
        server.attributes
    );
    assert!(
        format!("{:?}", server.status).contains("STATUS_CODE_ERROR"),
        "{:?}",
        server.status
    );
    assert!(
        attribute(client, "error.type").contains("\"timeout\""),
        "{:?}",
        client.attributes
    );
    assert!(!client.attributes.contains_key("http.response.status_code"));
    assert!(
        format!("{:?}", client.status).contains("STATUS_CODE_ERROR"),
        "{:?}",
        client.status
    );
    let cpu = find(&spans, "cpu.sha256");
    assert!(
        attribute(cpu, "stallscope.iterations").contains("IntValue(1000)"),
        "{:?}",
        cpu.attributes
    );
    assert!(
        !cpu.attributes.contains_key("iterations"),
        "recorded twice: {:?}",
        cpu.attributes
    );
}

#[tokio::test]
async fn blocking_poll_shows_in_the_span_with_a_stall_event() {
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let service = ServiceProcess::start_with_env(
        &["--workers", "1"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    for variant in ["async", "blocking", "block-in-place"] {
        let status = reqwest::get(format!("{}/sleep/{variant}?ms=300", service.base_url))
            .await
            .expect("answer")
            .status();
        assert_eq!(status, 200);
    }
    let spans = collect_until(&mut collector, |s| {
        has_variant(s, "blocking") && has_variant(s, "async") && has_variant(s, "block-in-place")
    })
    .await;
    let by_variant = |variant: &str| {
        spans
            .iter()
            .find(|s| {
                s.attributes
                    .get("stallscope.variant")
                    .is_some_and(|v| v.contains(variant))
            })
            .unwrap_or_else(|| panic!("no {variant} span in {:#?}", names(&spans)))
    };
    let blocking = by_variant("blocking");
    assert!(
        number(blocking, "stallscope.poll.longest_ms") >= 250.0,
        "{:#?}",
        blocking.attributes
    );
    let stall = blocking
        .events
        .iter()
        .find(|e| e.name == "executor.stall")
        .unwrap_or_else(|| panic!("no executor.stall event: {:#?}", blocking.events));
    assert!(
        stall
            .attributes
            .get("stallscope.worker")
            .is_some_and(|w| w.contains("stallscope-rt-"))
    );

    let healthy = by_variant("async");
    assert!(
        number(healthy, "stallscope.poll.longest_ms") < 50.0,
        "{:#?}",
        healthy.attributes
    );
    assert!(healthy.events.iter().all(|e| e.name != "executor.stall"));

    // block_in_place holds its task 300 ms but hands its worker off first: not a long poll
    // of the worker (the query `stallscope.poll.longest_ms > 100` must not find it), but
    // time handed off.
    let handed_off = by_variant("block-in-place");
    assert!(
        number(handed_off, "stallscope.poll.longest_ms") < 50.0,
        "{:#?}",
        handed_off.attributes
    );
    assert!(
        number(handed_off, "stallscope.poll.handed_off_ms") >= 250.0,
        "{:#?}",
        handed_off.attributes
    );
    assert!(number(blocking, "stallscope.poll.handed_off_ms") < 1.0);
}

/// A victim names its culprit: an async sleep in flight while a blocking one holds the only
/// worker gets the overlap and the culprit's trace id (the one in the culprit's own
/// `traceparent` response header) on its span, and a link to the culprit's span; a request
/// that overlapped no stall has neither.
#[tokio::test]
async fn a_victim_span_names_the_stall_that_delayed_it() {
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let mut service = ServiceProcess::start_with_env(
        &["--workers", "1"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    let client = reqwest::Client::new();
    let base = service.base_url.clone();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    let quiet = get("/sleep/async?ms=50").await.expect("answer");
    assert_eq!(quiet.status(), 200);
    let victim = tokio::spawn(get("/sleep/async?ms=300"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let culprit = get("/sleep/blocking?ms=1000").await.expect("answer");
    let victim = victim.await.expect("joined").expect("answer");
    assert_eq!(victim.status(), 200);
    let culprit_trace = culprit.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .split('-')
        .nth(1)
        .expect("a trace id")
        .to_owned();
    let victim_trace = victim.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let victim_id = victim.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let spans = collect_until(&mut collector, |s| {
        s.iter().filter(|s| s.kind.contains("SERVER")).count() >= 3
    })
    .await;
    let server_span = |trace: &str| {
        spans
            .iter()
            .find(|s| s.kind.contains("SERVER") && trace.contains(&s.trace_id))
            .unwrap_or_else(|| panic!("no server span of trace {trace}: {:#?}", names(&spans)))
    };
    let victim_span = server_span(&victim_trace);
    assert!(
        number(victim_span, "stallscope.stall.overlap_ms") >= 500.0,
        "{:#?}",
        victim_span.attributes
    );
    assert!(
        attribute(victim_span, "stallscope.stall.culprit_trace_id").contains(&culprit_trace),
        "{:#?}",
        victim_span.attributes
    );
    assert!(
        victim_span
            .links
            .iter()
            .any(|l| l.trace_id == culprit_trace),
        "a link to the culprit's span: {:#?}",
        victim_span.links
    );
    let culprit_span = server_span(&culprit_trace);
    assert!(
        !culprit_span
            .attributes
            .contains_key("stallscope.stall.overlap_ms"),
        "the culprit is not its own victim: {:#?}",
        culprit_span.attributes
    );
    let quiet_trace = quiet.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let quiet_span = server_span(&quiet_trace);
    for key in [
        "stallscope.stall.overlap_ms",
        "stallscope.stall.culprit_trace_id",
    ] {
        assert!(
            !quiet_span.attributes.contains_key(key),
            "{key} on a request that overlapped no stall"
        );
    }
    // The victim's own log line names the culprit, in the victim's request context.
    let logs: Vec<String> = service.drain_logs().into_iter().map(|(_, l)| l).collect();
    assert!(
        logs.iter().any(|l| l.contains("this request overlapped")
            && l.contains(&victim_id)
            && l.contains(&culprit_trace)
            && l.contains("/sleep/{variant} (blocking)")),
        "no victim log line for {victim_id}: {logs:#?}"
    );
    let scrape = service.scrape().await;
    assert_eq!(
        scrape.value(
            "stallscope_stall_victims_total",
            &[
                ("culprit_route", "/sleep/{variant}"),
                ("culprit_variant", "blocking")
            ]
        ),
        1.0,
        "{}",
        scrape.text
    );
}

/// A stand-in upstream that answers `/slow` and keeps the trace headers of each call.
async fn recording_upstream() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(move |headers: HeaderMap| {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            record
                .lock()
                .expect("lock")
                .push((header("traceparent"), header("tracestate")));
            async { axum::Json(serde_json::json!({ "slept_ms": 0 })) }
        }),
    );
    (serve_on_loopback(app).await, seen)
}

/// Serves `app` on a free loopback port for the rest of the test; its base URL.
async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A caller's sampled trace stays sampled, with its `tracestate`, on the response and on the
/// call to the upstream, whether or not this service exports spans: downstream services that
/// follow the parent's decision keep the trace. An unsampled caller stays unsampled.
#[tokio::test]
async fn the_callers_sampling_decision_and_tracestate_travel_downstream() {
    let _serial = SERIAL.lock().await;
    let collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for exporting in [false, true] {
        let (upstream, seen) = recording_upstream().await;
        let env: Vec<(&str, &str)> = if exporting {
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT]
        } else {
            Vec::new()
        };
        let service = ServiceProcess::start_with_env(&["--upstream-url", &upstream], &env).await;
        for flags in ["01", "00"] {
            let response = reqwest::Client::new()
                .get(format!("{}/upstream/async?ms=0", service.base_url))
                .header(
                    "traceparent",
                    format!("00-{trace}-00f067aa0ba902b7-{flags}"),
                )
                .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status(), 200);
            let answered = response.headers()["traceparent"]
                .to_str()
                .expect("ascii")
                .to_owned();
            assert!(
                answered.contains(trace) && answered.ends_with(&format!("-{flags}")),
                "exporting={exporting}: response {answered}, caller's flags {flags}"
            );
            let (traceparent, tracestate) = seen.lock().expect("lock").pop().expect("a call");
            assert!(
                traceparent.contains(trace) && traceparent.ends_with(&format!("-{flags}")),
                "exporting={exporting}: the upstream got {traceparent}, caller's flags {flags}"
            );
            assert_eq!(
                tracestate, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
                "exporting={exporting}, flags {flags}"
            );
        }
    }
}

#[tokio::test]
async fn dead_collector_costs_requests_nothing_and_drops_are_counted() {
    let _serial = SERIAL.lock().await;
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let mut service = ServiceProcess::start_with_env(
        &["--workers", "2"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &closed), FAST_EXPORT],
    )
    .await;
    // Every drop reason is a series from the first scrape, so the alert's `rate()` sees the
    // very first drop.
    let before = service.scrape().await;
    assert_eq!(
        before.series("stallscope_otel_spans_dropped_total"),
        3,
        "queue_full, export_failed and shut_down exist before any drop"
    );
    assert_eq!(before.series("stallscope_otel_spans_exported_total"), 1);
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = Instant::now();
        let status = client
            .get(format!("{}/sleep/async?ms=20", service.base_url))
            .send()
            .await
            .expect("answer")
            .status();
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(120),
        "a dead collector slowed a request to {slowest:?}"
    );
    let mut dropped = 0.0;
    for _ in 0..50 {
        dropped = service.scrape().await.value(
            "stallscope_otel_spans_dropped_total",
            &[("reason", "export_failed")],
        );
        if dropped >= 30.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 30.0, "dropped spans counted: {dropped}");

    // Said out loud, but not once per batch: one WARN at the first loss, then at most one
    // every 10 s, with the count lost since the last.
    let drops = |service: &mut ServiceProcess| -> Vec<String> {
        service
            .drain_logs()
            .into_iter()
            .map(|(_, l)| l)
            .filter(|l| l.contains("WARN") && l.contains("spans are being dropped"))
            .collect()
    };
    let first = drops(&mut service);
    assert_eq!(
        first.len(),
        1,
        "one warning for the first losses: {first:#?}"
    );
    assert!(first[0].contains("since start-up") && first[0].contains("export_failed="));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut later = Vec::new();
    while later.is_empty() && Instant::now() < deadline {
        let _ = client
            .get(format!("{}/sleep/async?ms=1", service.base_url))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        later = drops(&mut service);
    }
    assert_eq!(later.len(), 1, "the next warning, 10 s on: {later:#?}");
    assert!(later[0].contains("since the last warning"), "{}", later[0]);
}

#[tokio::test]
async fn json_logs_carry_the_exported_trace_id() {
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    // A dead upstream, so the request logs an error inside its span.
    let dead_upstream = format!("http://127.0.0.1:{}", common::free_port());
    let mut service = ServiceProcess::start_with_env(
        &["--workers", "1", "--upstream-url", &dead_upstream],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            FAST_EXPORT,
            ("STALLSCOPE_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let status = reqwest::get(format!("{}/upstream/async?ms=1", service.base_url))
        .await
        .expect("answer")
        .status();
    assert_eq!(status, 502);
    let status = reqwest::get(format!("{}/sleep/blocking?ms=150", service.base_url))
        .await
        .expect("answer")
        .status();
    assert_eq!(status, 200);
    let spans = collect_until(&mut collector, |s| {
        has_variant(s, "blocking") && has_name(s, "GET /upstream/{variant}")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines: Vec<serde_json::Value> = service
        .drain_logs()
        .into_iter()
        .map(|(_, line)| serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();

    let failed = find(&spans, "GET /upstream/{variant}");
    let error_line = lines
        .iter()
        .find(|l| l["level"] == "ERROR" && l["message"] == "request failed")
        .unwrap_or_else(|| panic!("no error line in {lines:#?}"));
    assert_eq!(
        error_line["trace_id"],
        failed.trace_id.as_str(),
        "{error_line}"
    );
    assert_eq!(
        error_line["span_id"],
        failed.span_id.as_str(),
        "{error_line}"
    );

    let stalled = spans
        .iter()
        .find(|s| {
            s.attributes
                .get("stallscope.variant")
                .is_some_and(|v| v.contains("blocking"))
        })
        .expect("blocking span");
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("no stall warning in {lines:#?}"));
    assert_eq!(warning["trace_id"], stalled.trace_id.as_str(), "{warning}");
    assert_eq!(warning["span_id"], stalled.span_id.as_str(), "{warning}");
    assert!(
        warning["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{warning}"
    );
    // The watchdog's closing line names the same request, the same way.
    let ended = lines
        .iter()
        .find(|l| l["message"] == "stall ended")
        .unwrap_or_else(|| panic!("no `stall ended` line in {lines:#?}"));
    for field in ["trace_id", "span_id", "request_id"] {
        assert_eq!(ended[field], warning[field], "{field}: {ended}");
    }
}

/// The users API as traces and logs see it: each query has a client span with `db.system.name`
/// and `db.operation.name` inside the request's trace, and no password or hash appears anywhere
/// in exported spans or in the logs, even at `debug`.
#[tokio::test]
async fn database_spans_and_no_secrets_in_traces_or_logs() {
    const PASSWORD: &str = "correct-horse-battery-staple-42";
    const NEW_PASSWORD: &str = "tr0ub4dor-and-3-more-words";
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let mut service = ServiceProcess::start_with_env(
        &["--workers", "2"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            FAST_EXPORT,
            ("STALLSCOPE_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
            ("STALLSCOPE_TRACE_FILTER", "trace"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let base = &service.base_url;
    let created: serde_json::Value = client
        .post(format!("{base}/users"))
        .json(&serde_json::json!({"username": "ada", "email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("created user");
    let id = created["id"].as_i64().expect("id");
    for (method, path, body) in [
        (
            "POST",
            "/login".to_owned(),
            serde_json::json!({"username": "ada", "password": PASSWORD}),
        ),
        (
            "POST",
            "/login".to_owned(),
            serde_json::json!({"username": "ada", "password": "wrong-password"}),
        ),
        (
            "PATCH",
            format!("/users/{id}"),
            serde_json::json!({"password": NEW_PASSWORD}),
        ),
        ("GET", format!("/users/{id}"), serde_json::Value::Null),
        (
            "GET",
            "/users?username=ada".to_owned(),
            serde_json::Value::Null,
        ),
        (
            "GET",
            format!("/db/async/users/{id}"),
            serde_json::Value::Null,
        ),
        (
            "GET",
            format!("/db/spawn-blocking/users/{id}"),
            serde_json::Value::Null,
        ),
    ] {
        let request = client.request(method.parse().expect("method"), format!("{base}{path}"));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let response = request.send().await.expect("answer");
        assert!(
            response.status().as_u16() < 500,
            "{method} {path}: {}",
            response.status()
        );
    }
    let spans = collect_until(&mut collector, |s| {
        s.iter().filter(|s| s.name.starts_with("user_")).count() >= 6 && has_name(s, "POST /users")
    })
    .await;

    let create = find(&spans, "POST /users");
    let insert = spans
        .iter()
        .find(|s| {
            s.attributes
                .get("db.operation.name")
                .is_some_and(|v| v.contains("user_insert"))
        })
        .unwrap_or_else(|| panic!("no insert span in {:#?}", names(&spans)));
    assert_eq!(
        insert.trace_id, create.trace_id,
        "the query belongs to the request's trace"
    );
    assert_eq!(insert.kind, "SPAN_KIND_CLIENT");
    assert!(attribute(insert, "db.system.name").contains("sqlite"));
    for deprecated in ["db.system", "db.operation"] {
        assert!(
            !insert.attributes.contains_key(deprecated),
            "{deprecated}: {:?}",
            insert.attributes
        );
    }

    let exported = format!("{spans:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs: String = service
        .drain_logs()
        .into_iter()
        .map(|(_, line)| line + "\n")
        .collect();
    assert!(logs.contains("\"level\":\"DEBUG\""), "debug logging was on");
    for secret in [PASSWORD, NEW_PASSWORD, "$argon2"] {
        assert!(
            !exported.contains(secret),
            "{secret} leaked into an exported span"
        );
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}

/// Spans still queued when SIGTERM arrives are exported before the process exits (the batch
/// delay is a minute here, so only the shutdown flush can deliver them).
#[tokio::test]
async fn queued_spans_are_flushed_on_graceful_shutdown() {
    let _serial = SERIAL.lock().await;
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let service = ServiceProcess::start_with_env(
        &["--workers", "1"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;
    let status = reqwest::get(format!("{}/sleep/async?ms=1", service.base_url))
        .await
        .expect("answer")
        .status();
    assert_eq!(status, 200);
    assert!(
        collector
            .exported_spans(1, Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing is exported before the batch delay"
    );
    service.sigterm();
    let spans = collect_until(&mut collector, |s| has_name(s, "GET /sleep/{variant}")).await;
    assert!(
        has_name(&spans, "GET /sleep/{variant}"),
        "{:#?}",
        names(&spans)
    );
}

/// A collector that accepts connections and never answers: SIGTERM still ends the process
/// within the shutdown deadline (not the exporter's own 10 s timeout on top of it), and the
/// spans it could not hand over are counted in the log.
#[tokio::test]
async fn a_black_hole_collector_cannot_hold_shutdown_past_the_deadline() {
    let _serial = SERIAL.lock().await;
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let endpoint = format!("http://{}", black_hole.local_addr().expect("address"));
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = black_hole.accept().await {
            connections.push(connection);
        }
    });
    let deadline_ms = 2_000;
    let mut service = ServiceProcess::start_with_env(
        &[
            "--workers",
            "1",
            "--shutdown-deadline-ms",
            &deadline_ms.to_string(),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;
    for _ in 0..5 {
        let status = reqwest::get(format!("{}/sleep/async?ms=1", service.base_url))
            .await
            .expect("answer")
            .status();
        assert_eq!(status, 200);
    }
    let (status, took) = service.terminate().await;
    assert!(
        took <= Duration::from_millis(deadline_ms + 1_000),
        "exited {took:?} after SIGTERM with a {deadline_ms} ms deadline"
    );
    assert!(status.success(), "every request was answered: {status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lost: Vec<String> = service
        .drain_logs()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains("WARN") && l.contains("at the shutdown deadline and are lost"))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:#?}");
    let count: u64 = lost[0]
        .split_whitespace()
        .find_map(|field| field.strip_prefix("lost="))
        .and_then(|n| n.parse().ok())
        .expect("lost=N");
    assert!(count >= 5, "the five requests' spans at least: {}", lost[0]);
    held.abort();
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` posts protobuf to `{endpoint}/v1/traces`. The
/// receiver here is a minimal OTLP/HTTP endpoint: it checks the method, path and content
/// type, and that the body decodes as an OTLP trace request naming the request's span.
/// An OTLP/HTTP receiver answering POSTs at `path`: its base URL, and each body received with
/// its content type.
async fn otlp_http_receiver(
    path: &'static str,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let (bodies, received) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let receiver = axum::Router::new().route(
        path,
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let bodies = bodies.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = bodies.send((content_type, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    (serve_on_loopback(receiver).await, received)
}

/// The per-signal endpoint is the full URL, used as given (the OTLP exporter spec); asked for
/// `http/json`, which it cannot send, the service says so in its log and sends protobuf to the
/// same OTLP/HTTP endpoint rather than gRPC to an HTTP port.
#[tokio::test]
async fn the_per_signal_endpoint_is_used_verbatim_and_http_json_is_answered_out_loud() {
    let _serial = SERIAL.lock().await;
    let (base, mut received) = otlp_http_receiver("/custom/traces").await;
    let endpoint = format!("{base}/custom/traces");
    let mut service = ServiceProcess::start_with_env(
        &["--workers", "1"],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            FAST_EXPORT,
        ],
    )
    .await;
    let status = reqwest::get(format!("{}/sleep/async?ms=1", service.base_url))
        .await
        .expect("answer")
        .status();
    assert_eq!(status, 200);
    let (content_type, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("an export to /custom/traces within 10 s")
        .expect("receiver open");
    assert_eq!(content_type, "application/x-protobuf");
    assert!(!body.is_empty());
    let logs: Vec<String> = service.drain_logs().into_iter().map(|(_, l)| l).collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("http/json is not supported")),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn http_protobuf_export_posts_to_v1_traces() {
    let _serial = SERIAL.lock().await;
    let (endpoint, mut received) = otlp_http_receiver("/v1/traces").await;
    let service = ServiceProcess::start_with_env(
        &["--workers", "1"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "stallscope-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci"),
            FAST_EXPORT,
        ],
    )
    .await;
    let status = reqwest::get(format!("{}/upstream/async?ms=1", service.base_url))
        .await
        .expect("answer")
        .status();
    assert_eq!(status, 200);
    // The resource travels with every batch: without `service.name` a trace UI cannot tell
    // which service sent the spans. The in-process upstream's spans leave as a service of
    // their own, as a standalone upstream's would.
    let mut service_of = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(service_of.contains_key("GET /upstream/{variant}")
        && service_of.contains_key("GET /slow"))
    {
        let (content_type, body) = tokio::time::timeout_at(deadline.into(), received.recv())
            .await
            .expect("an OTLP/HTTP export within 10 s")
            .expect("receiver open");
        assert_eq!(content_type, "application/x-protobuf");
        use prost::Message;
        let request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )
            .expect("an OTLP ExportTraceServiceRequest");
        for resource_spans in &request.resource_spans {
            let attributes = resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let value = |key: &str| {
                attributes
                    .iter()
                    .find(|a| a.key == key)
                    .and_then(|a| a.value.as_ref()?.value.as_ref())
                    .map(|v| format!("{v:?}"))
            };
            let service = value("service.name").expect("every batch names its service");
            assert!(
                value("service.instance.id").is_some(),
                "replicas' spans are told apart: {attributes:?}"
            );
            assert!(
                value("deployment.environment.name").is_some(),
                "OTEL_RESOURCE_ATTRIBUTES reach the collector: {attributes:?}"
            );
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                service_of.insert(span.name.clone(), service.clone());
            }
        }
    }
    assert!(
        service_of["GET /upstream/{variant}"].contains("\"stallscope-test\""),
        "{service_of:?}"
    );
    assert!(
        service_of["GET /slow"].contains("\"stallscope-test-upstream\""),
        "{service_of:?}"
    );
}

/// Without an exporter spans are not recorded, but they keep their ids: every response still
/// names its trace, an incoming trace is still joined, and the flags say "not sampled".
#[tokio::test]
async fn without_an_exporter_responses_still_name_the_trace() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start_with_env(&["--workers", "1"], &[]).await;
    let client = reqwest::Client::new();
    let traceparent = |response: &reqwest::Response| -> Vec<String> {
        response
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("a traceparent response header")
            .split('-')
            .map(str::to_owned)
            .collect()
    };
    let fresh = client
        .get(format!("{}/hello", service.base_url))
        .send()
        .await
        .expect("answer");
    let parts = traceparent(&fresh);
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert_eq!((parts[0].as_str(), parts[3].as_str()), ("00", "00"));
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{parts:?}");
    assert!(parts[1].chars().any(|c| c != '0'), "a valid trace id");

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let joined = client
        .get(format!("{}/hello", service.base_url))
        .header(
            "traceparent",
            format!("00-{caller_trace}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .expect("answer");
    let parts = traceparent(&joined);
    assert_eq!(parts[1], caller_trace, "the caller's trace is joined");
    assert_ne!(parts[2], "00f067aa0ba902b7", "with a span of its own");
}

/// One row of the attribute table in docs/traces-and-logs.md.
struct Documented {
    attribute: String,
    /// Where it appears: `server`, `client`, `db query`, `blocking`, `cpu`, or
    /// `executor.stall event`.
    on: Vec<String>,
    /// `string`, `int` or `double`.
    kind: String,
}

/// The attribute table as the docs print it, read from the Markdown itself so the two cannot
/// drift apart.
fn documented_attributes() -> Vec<Documented> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/traces-and-logs.md"
    ))
    .expect("docs/traces-and-logs.md");
    let rows: Vec<Documented> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| Attribute | Span | Type |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Documented {
                attribute: cells[1].trim_matches('`').to_owned(),
                on: cells[2]
                    .split(',')
                    .map(|s| s.trim().replace('`', ""))
                    .collect(),
                kind: cells[3].to_owned(),
            }
        })
        .collect();
    assert!(rows.len() > 30, "the attribute table was not found");
    rows
}

/// The OTLP value type of an attribute as decoded from the wire (`ExportedSpan` keeps the
/// decoded `AnyValue`'s Debug form: `Some(AnyValue { value: Some(IntValue(200)) })`).
fn otlp_type(decoded: &str) -> &'static str {
    for (variant, kind) in [
        ("IntValue(", "int"),
        ("DoubleValue(", "double"),
        ("StringValue(", "string"),
        ("BoolValue(", "bool"),
        ("ArrayValue(", "array"),
    ] {
        if decoded.contains(variant) {
            return kind;
        }
    }
    "unknown"
}

/// Which spans (or events) `on` names, by kind and name.
fn where_documented<'a>(
    spans: &'a [ExportedSpan],
    on: &str,
) -> Vec<&'a std::collections::BTreeMap<String, String>> {
    let kind = |s: &ExportedSpan, k: &str| s.kind == k;
    match on {
        "server" => spans
            .iter()
            .filter(|s| kind(s, "SPAN_KIND_SERVER"))
            .map(|s| &s.attributes)
            .collect(),
        "client" => spans
            .iter()
            .filter(|s| kind(s, "SPAN_KIND_CLIENT") && s.attributes.contains_key("url.full"))
            .map(|s| &s.attributes)
            .collect(),
        "db query" => spans
            .iter()
            .filter(|s| s.attributes.contains_key("db.system.name"))
            .map(|s| &s.attributes)
            .collect(),
        "blocking" => spans
            .iter()
            .filter(|s| s.name.starts_with("blocking "))
            .map(|s| &s.attributes)
            .collect(),
        "cpu" => spans
            .iter()
            .filter(|s| s.name == "cpu.sha256")
            .map(|s| &s.attributes)
            .collect(),
        "executor.stall event" => spans
            .iter()
            .flat_map(|s| &s.events)
            .filter(|e| e.name == "executor.stall")
            .map(|e| &e.attributes)
            .collect(),
        other => panic!("the docs name a span kind this test does not know: {other}"),
    }
}

/// Requests that between them produce every documented attribute: a query string and a user
/// agent, a stall with a victim, `block_in_place`, CPU work on the blocking pool, an upstream
/// call that answers and one that times out (504), and the database lessons' statements.
async fn exercise_every_documented_attribute(base: &str) {
    let client = reqwest::Client::builder()
        .user_agent("stallscope-typed-test/1")
        .build()
        .expect("client");
    let get = |path: &str| {
        let request = client.get(format!("{base}{path}"));
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    assert_eq!(get("/sleep/async?ms=1&probe=typed").await, 200);
    // The victim must be in flight before the stall begins: once the only worker is held,
    // no new request even gets read.
    let victim = tokio::spawn(get("/sleep/async?ms=300"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get("/sleep/blocking?ms=400").await, 200, "the culprit");
    assert_eq!(victim.await.expect("victim"), 200);
    for (path, status) in [
        ("/sleep/block-in-place?ms=50", 200),
        ("/cpu/spawn-blocking?iterations=1000", 200),
        ("/upstream/async?ms=1", 200),
        ("/upstream/async?ms=2000", 504),
        ("/db/async/sleep?ms=1", 200),
        ("/db/raw/sleep?ms=1", 200),
    ] {
        assert_eq!(get(path).await, status, "{path}");
    }
}

/// Every attribute of the docs' table, received and decoded over real OTLP as a backend
/// would: present where the docs say, and of the documented type on every span that has it.
fn assert_documented_types(spans: &[ExportedSpan], transport: &str) {
    let mut failures = Vec::new();
    for row in documented_attributes() {
        for on in &row.on {
            let carriers = where_documented(spans, on);
            let values: Vec<&String> = carriers
                .iter()
                .filter_map(|attributes| attributes.get(&row.attribute))
                .collect();
            if values.is_empty() {
                failures.push(format!("{}: no {on} span has it", row.attribute));
            }
            for value in values {
                if otlp_type(value) != row.kind {
                    failures.push(format!(
                        "{} on {on}: documented {}, received {value}",
                        row.attribute, row.kind
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "over {transport}:\n{}",
        failures.join("\n")
    );
}

fn every_documented_attribute_arrived(spans: &[ExportedSpan]) -> bool {
    documented_attributes().iter().all(|row| {
        row.on.iter().all(|on| {
            where_documented(spans, on)
                .iter()
                .any(|attributes| attributes.contains_key(&row.attribute))
        })
    })
}

#[tokio::test]
async fn documented_attributes_arrive_typed_over_grpc_and_http() {
    let _serial = SERIAL.lock().await;
    let flags = ["--workers", "1", "--upstream-timeout-ms", "300"];

    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let service = ServiceProcess::start_with_env(
        &flags,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    exercise_every_documented_attribute(&service.base_url).await;
    // Until every row is there and both database lessons' statements (the last requests).
    let spans = collect_until(&mut collector, |spans| {
        every_documented_attribute_arrived(spans)
            && ["\"sleep\"", "\"sleep_raw\""].iter().all(|operation| {
                spans.iter().any(|s| {
                    s.attributes.contains_key("db.query.text")
                        && s.attributes
                            .get("db.operation.name")
                            .is_some_and(|o| o.contains(operation))
                })
            })
    })
    .await;
    assert_documented_types(&spans, "gRPC");
    // The statements with their placeholders, never the bound values.
    let statements: Vec<(&str, &str)> = spans
        .iter()
        .filter_map(|s| {
            Some((
                s.attributes.get("db.operation.name")?.as_str(),
                s.attributes.get("db.query.text")?.as_str(),
            ))
        })
        .collect();
    for (operation, statement) in [
        ("sleep_raw", "\"SELECT stallscope_sleep(?)\""),
        ("sleep", "stallscope_sleep(?)"),
    ] {
        assert!(
            statements
                .iter()
                .any(|(o, t)| o.contains(&format!("\"{operation}\"")) && t.contains(statement)),
            "{operation}: {statements:#?}"
        );
    }
    drop(service);

    let (base, mut received) = otlp_http_receiver("/v1/traces").await;
    let service = ServiceProcess::start_with_env(
        &flags,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            FAST_EXPORT,
        ],
    )
    .await;
    exercise_every_documented_attribute(&service.base_url).await;
    let mut spans = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !every_documented_attribute_arrived(&spans) && Instant::now() < deadline {
        let Ok(Some((_, body))) = tokio::time::timeout_at(deadline.into(), received.recv()).await
        else {
            break;
        };
        use prost::Message;
        let request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )
            .expect("an OTLP ExportTraceServiceRequest");
        spans.extend(
            request
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .map(ExportedSpan::from),
        );
    }
    assert_documented_types(&spans, "OTLP/HTTP");
}
