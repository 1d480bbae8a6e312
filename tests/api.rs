//! The HTTP contract without timing: bad input, error mapping, docs. Uses the real router
//! through `tower::ServiceExt::oneshot`, as axum's own examples do.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use stallscope::config::{LimitArgs, ServeArgs};
use stallscope::db::Database;
use stallscope::telemetry::Telemetry;
use stallscope::{AppState, app};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const MAX_SLEEP_MS: u64 = 10_000;
const MAX_CPU_ITERATIONS: u64 = 5_000_000;

/// A fresh SQLite database in a temporary directory, removed when the `TempDir` drops.
fn sqlite_database() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = ServeArgs::defaults().database;
    args.database_url = format!("sqlite://{}", dir.path().join("api.db").display());
    let db = Database::open(&args).expect("SQLite opens");
    (db, dir)
}

/// The real router and the directory of its database. Used as `test_app().router()` inside
/// one statement, the temporary keeps the database until the request has been answered.
struct TestApp {
    router: Router,
    _dir: tempfile::TempDir,
}

impl TestApp {
    fn new(state: AppState, dir: tempfile::TempDir) -> Self {
        Self {
            router: app(state),
            _dir: dir,
        }
    }

    fn router(&self) -> Router {
        self.router.clone()
    }
}

fn app_with_upstream(upstream_url: &str, timeout: Duration) -> TestApp {
    let limits = LimitArgs {
        max_sleep_ms: MAX_SLEEP_MS,
        max_cpu_iterations: MAX_CPU_ITERATIONS,
        ..LimitArgs::default()
    };
    app_with_limits(limits, upstream_url, timeout)
}

fn app_with_limits(limits: LimitArgs, upstream_url: &str, timeout: Duration) -> TestApp {
    let (db, dir) = sqlite_database();
    let telemetry = Telemetry::new(stallscope::telemetry_settings(
        &ServeArgs::defaults().telemetry,
        &limits,
    ));
    let state = AppState::new(
        limits,
        upstream_url.to_owned(),
        timeout,
        CancellationToken::new(),
        telemetry,
        db,
    )
    .expect("state");
    TestApp::new(state, dir)
}

/// An app whose upstream is a closed port: lesson calls that reach it fail with 502.
fn test_app() -> TestApp {
    app_with_upstream("http://127.0.0.1:9", Duration::from_secs(2))
}

async fn call(app: Router, method: Method, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

async fn problem(app: Router, uri: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = call(app, Method::GET, uri).await;
    assert_eq!(
        content_type, "application/problem+json",
        "{uri} answered {status} with {content_type}"
    );
    let doc: Value = serde_json::from_slice(&body).expect("problem is JSON");
    assert_eq!(doc["status"], status.as_u16(), "{uri}: {doc}");
    assert_eq!(doc["type"], "about:blank");
    assert!(doc["title"].is_string());
    (status, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_problems_naming_the_parameter_and_range() {
    let sleep_range = format!("from 0 to {MAX_SLEEP_MS}");
    let cpu_range = format!("from 1 to {MAX_CPU_ITERATIONS}");
    let too_long = format!("ms={}", MAX_SLEEP_MS + 1);
    let too_many = format!("iterations={}", MAX_CPU_ITERATIONS + 1);
    let cases: Vec<(String, &str, &str, &str)> = [
        ("/sleep/blocking", "ms=abc", "ms", "not a whole number"),
        ("/sleep/spawn-blocking", "ms=-1", "ms", "negative"),
        (
            "/sleep/block-in-place",
            "ms=1e3",
            "ms",
            "not a whole number",
        ),
        ("/sleep/async", too_long.as_str(), "ms", "out of range"),
        ("/sleep/async", "ms=", "ms", "not a whole number"),
        (
            "/sleep/async",
            "ms=18446744073709551616",
            "ms",
            "not a whole number",
        ),
        ("/cpu/rayon", "iterations=0", "iterations", "out of range"),
        (
            "/cpu/spawn-blocking",
            "iterations=-3",
            "iterations",
            "negative",
        ),
        (
            "/cpu/inline",
            too_many.as_str(),
            "iterations",
            "out of range",
        ),
        ("/upstream/async", "ms=x", "ms", "not a whole number"),
        (
            "/upstream/blocking",
            too_long.as_str(),
            "ms",
            "out of range",
        ),
    ]
    .into_iter()
    .map(|(path, query, param, reason)| (format!("{path}?{query}"), param, reason, path))
    .collect();
    for (uri, param, reason, path) in cases {
        let (status, doc) = problem(test_app().router(), &uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {doc}");
        assert_eq!(doc["parameter"], param, "{uri}: {doc}");
        let detail = doc["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{uri}: {detail}");
        let range = if param == "iterations" {
            &cpu_range
        } else {
            &sleep_range
        };
        assert!(detail.contains(range.as_str()), "{uri} ({path}): {detail}");
    }
}

/// Left out, `ms` is the tutorial's one second and `iterations` the ~1 s default, or the cap
/// when `--max-cpu-iterations` is lower: what the OpenAPI document states as defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_lesson_parameters_take_their_documented_defaults() {
    let (status, _, body) = call(test_app().router(), Method::GET, "/sleep/async").await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(report["requested"]["ms"], 1_000, "{report}");
    // A debug build hashes slowly: a low cap keeps this quick, and shows the default is capped.
    let low_cap = LimitArgs {
        max_sleep_ms: MAX_SLEEP_MS,
        max_cpu_iterations: 1_000,
        ..LimitArgs::default()
    };
    let app = app_with_limits(low_cap, "http://127.0.0.1:9", Duration::from_secs(2));
    let (status, _, body) = call(app.router(), Method::GET, "/cpu/rayon").await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(report["requested"]["iterations"], 1_000, "{report}");
    let uncapped = LimitArgs {
        max_sleep_ms: MAX_SLEEP_MS,
        max_cpu_iterations: u64::MAX,
        ..LimitArgs::default()
    };
    assert_eq!(
        uncapped.cpu_iterations().default,
        stallscope::config::DEFAULT_CPU_ITERATIONS
    );
}

#[tokio::test]
async fn unknown_variants_are_404_problems_listing_the_valid_ones() {
    for (uri, valid) in [
        (
            "/sleep/turbo?ms=1",
            vec!["async", "blocking", "spawn-blocking", "block-in-place"],
        ),
        (
            "/cpu/gpu?iterations=1",
            vec!["inline", "spawn-blocking", "rayon"],
        ),
        (
            "/upstream/grpc?ms=1",
            vec!["async", "blocking", "spawn-blocking"],
        ),
    ] {
        let (status, doc) = problem(test_app().router(), uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        let listed: Vec<&str> = doc["valid_variants"]
            .as_array()
            .expect("valid_variants")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listed, valid, "{uri}");
        for variant in valid {
            assert!(doc["detail"].as_str().unwrap_or_default().contains(variant));
        }
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let (status, doc) = problem(test_app().router(), "/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("/no/such/route")
    );

    let (status, content_type, _) =
        call(test_app().router(), Method::POST, "/sleep/async?ms=1").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(content_type, "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_answers_with_a_work_report() {
    let upstream = stallscope::upstream::start_in_background("127.0.0.1:0".parse().expect("addr"))
        .expect("upstream");
    let cases = [
        ("/sleep/async?ms=5", "sleep", "async"),
        ("/sleep/blocking?ms=5", "sleep", "blocking"),
        ("/sleep/spawn-blocking?ms=5", "sleep", "spawn-blocking"),
        ("/sleep/block-in-place?ms=5", "sleep", "block-in-place"),
        ("/cpu/inline?iterations=10", "cpu", "inline"),
        ("/cpu/spawn-blocking?iterations=10", "cpu", "spawn-blocking"),
        ("/cpu/rayon?iterations=10", "cpu", "rayon"),
        ("/upstream/async?ms=5", "upstream", "async"),
        ("/upstream/blocking?ms=5", "upstream", "blocking"),
        (
            "/upstream/spawn-blocking?ms=5",
            "upstream",
            "spawn-blocking",
        ),
    ];
    for (uri, work, variant) in cases {
        let app = app_with_upstream(&upstream.base_url(), Duration::from_secs(5));
        let (status, content_type, body) = call(app.router(), Method::GET, uri).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(content_type, "application/json");
        let report: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(report["work"], work, "{uri}");
        assert_eq!(report["variant"], variant, "{uri}");
        assert!(report["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
        assert!(report["lesson"].as_str().is_some_and(|l| !l.is_empty()));
        let work_thread = report["work_thread"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Where the work ran is the lesson: check each variant reports the right pool.
        match variant {
            "rayon" => assert!(
                work_thread.starts_with("rayon-cpu-"),
                "{uri}: {work_thread}"
            ),
            "inline" | "blocking" | "async" | "block-in-place" => {
                assert_eq!(report["work_thread"], report["handler_thread"], "{uri}")
            }
            _ => assert_ne!(report["work_thread"], report["handler_thread"], "{uri}"),
        }
    }
    let (_, _, body) = call(test_app().router(), Method::GET, "/cpu/inline?iterations=1").await;
    let report: Value = serde_json::from_slice(&body).expect("JSON");
    // SHA-256 of 32 zero bytes: proves the work really ran.
    assert_eq!(report["output"]["digest_prefix"], "66687aadf862bd77");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_502_and_timeouts_to_504() {
    for variant in ["async", "blocking", "spawn-blocking"] {
        let uri = format!("/upstream/{variant}?ms=10");
        let (status, doc) = problem(test_app().router(), &uri).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{uri}: {doc}");
    }
    let upstream = stallscope::upstream::start_in_background("127.0.0.1:0".parse().expect("addr"))
        .expect("upstream");
    for variant in ["async", "blocking", "spawn-blocking"] {
        let app = app_with_upstream(&upstream.base_url(), Duration::from_millis(100));
        let uri = format!("/upstream/{variant}?ms=1000");
        let (status, doc) = problem(app.router(), &uri).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{uri}: {doc}");
        assert!(
            doc["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("100 ms")
        );
    }
}

#[tokio::test]
async fn health_and_baseline() {
    let (status, _, body) = call(test_app().router(), Method::GET, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, br#"{"status":"ok"}"#);
    let (status, _, body) = call(test_app().router(), Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = call(test_app().router(), Method::GET, "/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"Hello, world!");
}

#[tokio::test]
async fn readyz_fails_once_shutdown_begins() {
    let shutdown = CancellationToken::new();
    let limits = LimitArgs {
        max_sleep_ms: 1,
        max_cpu_iterations: 1,
        ..LimitArgs::default()
    };
    let (db, dir) = sqlite_database();
    let state = AppState::new(
        limits,
        "http://127.0.0.1:9".into(),
        Duration::from_secs(1),
        shutdown.clone(),
        Telemetry::new(stallscope::telemetry_settings(
            &ServeArgs::defaults().telemetry,
            &LimitArgs::default(),
        )),
        db,
    )
    .expect("state");
    shutdown.cancel();
    let (status, doc) = problem(TestApp::new(state, dir).router(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
}

#[tokio::test]
async fn openapi_describes_every_lesson_and_docs_are_served_offline() {
    let (status, _, body) = call(test_app().router(), Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_slice(&body).expect("OpenAPI is JSON");
    for path in [
        "/sleep/{variant}",
        "/cpu/{variant}",
        "/upstream/{variant}",
        "/db/{variant}/users/{id}",
        "/db/{variant}/sleep",
        "/users",
        "/users/{id}",
        "/healthz",
        "/readyz",
        "/hello",
    ] {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    for (path, method) in [
        ("/users", "post"),
        ("/users/{id}", "patch"),
        ("/users/{id}", "delete"),
        ("/login", "post"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    let (status, _, body) = call(test_app().router(), Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK, "/ is the live page");
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains("href=\"/docs/\""),
        "the live page links the docs: {page}"
    );
    let (status, _, body) = call(test_app().router(), Method::GET, "/docs/").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("cdn"),
        "the docs page must not load assets from a CDN"
    );
    // The assets come from the binary, not the network.
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let (status, _, body) = call(test_app().router(), Method::GET, asset).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(!body.is_empty(), "{asset}");
    }
    let (_, _, body) = call(
        test_app().router(),
        Method::GET,
        "/docs/swagger-initializer.js",
    )
    .await;
    assert!(String::from_utf8_lossy(&body).contains("/openapi.json"));
}

/// Swagger UI's "Try it out" → Execute must work in one click on every lesson: operation ids
/// unique (Swagger mixes up operations that share one), variants a dropdown of the real names
/// with one preselected, numeric parameters with the bounds the handlers enforce and a
/// default, and every status a lesson can answer documented.
#[tokio::test]
async fn openapi_operations_are_unique_and_lessons_run_in_one_click() {
    use stallscope::routes::upstream::UpstreamVariant;
    use stallscope::routes::{cpu::CpuVariant, db::DbVariant, sleep::SleepVariant};

    let (_, _, body) = call(test_app().router(), Method::GET, "/openapi.json").await;
    let spec: Value = serde_json::from_slice(&body).expect("OpenAPI is JSON");
    let mut ids = std::collections::BTreeSet::new();
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        }
    }
    assert!(operations >= 15, "{operations} operations");

    let lessons: [(&str, &[&str], &str, &[&str]); 5] = [
        (
            "/sleep/{variant}",
            SleepVariant::NAMES,
            "ms",
            &["200", "400", "404", "500"],
        ),
        (
            "/cpu/{variant}",
            CpuVariant::NAMES,
            "iterations",
            &["200", "400", "404", "500"],
        ),
        (
            "/upstream/{variant}",
            UpstreamVariant::NAMES,
            "ms",
            &["200", "400", "404", "500", "502", "504"],
        ),
        (
            "/db/{variant}/sleep",
            DbVariant::NAMES,
            "ms",
            &["200", "400", "404", "500", "503"],
        ),
        (
            "/db/{variant}/users/{id}",
            DbVariant::NAMES,
            "id",
            &["200", "400", "404", "500", "503"],
        ),
    ];
    for (path, names, numeric, statuses) in lessons {
        let operation = &spec["paths"][path]["get"];
        let parameters = operation["parameters"].as_array().expect("parameters");
        let parameter = |name: &str| {
            parameters
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path} has no parameter {name}"))
        };
        let variant = &parameter("variant")["schema"];
        let listed: Vec<&str> = variant["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: variant is not an enum: {variant}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listed, names, "{path}");
        assert_eq!(
            variant["default"], names[0],
            "{path}: no preselected variant"
        );
        // The description names the stalling variant the registry declares, and no other.
        let lesson = stallscope::routes::LESSONS
            .iter()
            .find(|l| l.routes.contains(&path))
            .unwrap_or_else(|| panic!("{path} is no lesson route"));
        let described = parameter("variant")["description"]
            .as_str()
            .unwrap_or_default();
        for declared in lesson.variants {
            assert_eq!(
                described.contains(&format!("`{}` is the stalling one", declared.name)),
                declared.stalls,
                "{path}: {described}"
            );
        }
        if numeric != "id" {
            let (max, default) = if numeric == "ms" {
                (MAX_SLEEP_MS, 1_000)
            } else {
                (
                    MAX_CPU_ITERATIONS,
                    MAX_CPU_ITERATIONS.min(stallscope::config::DEFAULT_CPU_ITERATIONS),
                )
            };
            let param = parameter(numeric);
            assert_ne!(param["required"], true, "{path}: {numeric} has a default");
            let schema = &param["schema"];
            assert_eq!(schema["maximum"], max, "{path}: {schema}");
            assert_eq!(schema["default"], default, "{path}: {schema}");
            assert!(schema["minimum"].is_u64(), "{path}: {schema}");
        }
        for status in statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{path} does not document {status}"
            );
        }
    }
}

/// Every response names its request: the client's `x-request-id` when it is a short printable
/// token (echoed as sent), a new `req-…` id otherwise; and a `traceparent` naming the trace,
/// the caller's when the request carried one.
#[tokio::test]
async fn responses_carry_the_request_id_and_traceparent() {
    let app = test_app();
    let send = |id: Option<&str>, traceparent: Option<&str>| {
        let mut request = Request::builder().uri("/hello");
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = request.body(Body::empty()).expect("request");
        let router = app.router();
        async move {
            let response = router.oneshot(request).await.expect("infallible");
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            (header("x-request-id"), header("traceparent"))
        }
    };
    let generated = |id: &Option<String>| {
        id.as_deref().is_some_and(|id| {
            id.strip_prefix("req-")
                .is_some_and(|hex| hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    };

    let (id, traceparent) = send(Some("k6-vu3-iter42"), None).await;
    assert_eq!(id.as_deref(), Some("k6-vu3-iter42"), "echoed as sent");
    let traceparent = traceparent.expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16));

    let (first, _) = send(None, None).await;
    let (second, _) = send(None, None).await;
    assert!(
        generated(&first) && generated(&second),
        "{first:?} {second:?}"
    );
    assert_ne!(first, second, "each request its own id");

    for unusable in ["has space", &"x".repeat(65)] {
        let (id, _) = send(Some(unusable), None).await;
        assert!(generated(&id), "{unusable:?} replaced, got {id:?}");
    }

    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, traceparent) = send(None, Some(caller)).await;
    let traceparent = traceparent.expect("a traceparent");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "joins the caller's trace: {traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "with a span of its own"
    );
}

/// The live page is the binary's own: its HTML, script and styles, with the lessons (from the
/// registry and the lessons doc) in its configuration, and nothing loaded from elsewhere.
#[tokio::test]
async fn the_live_page_and_its_assets_come_from_the_binary() {
    let (status, headers, body) = call(test_app().router(), Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.starts_with("text/html"), "{headers}");
    let page = String::from_utf8_lossy(&body);
    for external in ["http://", "https://", "//cdn"] {
        let found: Vec<&str> = page
            .match_indices(external)
            .map(|(i, _)| &page[i..(i + 40).min(page.len())])
            .collect();
        assert!(found.is_empty(), "the page refers outside: {found:?}");
    }
    let config_start = page
        .find(r#"<script id="config" type="application/json">"#)
        .expect("config");
    let config = &page[config_start..];
    let config = &config[config.find('>').expect(">") + 1..config.find("</script>").expect("end")];
    let config: Value = serde_json::from_str(config).expect("the page's config is JSON");
    let lessons: Vec<&str> = config["lessons"]
        .as_array()
        .expect("lessons")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(lessons, ["sleep", "cpu", "upstream", "db"]);
    let blocking = &config["lessons"][0]["variants"][1];
    assert_eq!(blocking["name"], "blocking");
    assert_eq!(blocking["stalls"], true);
    assert!(
        blocking["fastapi"]
            .as_str()
            .expect("FastAPI code")
            .contains("async def async_sleep"),
        "{blocking}"
    );
    for (asset, kind) in [
        ("/live/page.js", "text/javascript"),
        ("/live/page.css", "text/css"),
    ] {
        let (status, content_type, body) = call(test_app().router(), Method::GET, asset).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        assert!(!body.is_empty(), "{asset}");
    }
    // Without a listening address (this router is called directly) a run cannot start: 503,
    // never a hang or a 500; an unknown lesson is a 404 naming the real ones.
    let (status, _, body) =
        call(test_app().router(), Method::POST, "/live/lessons/sleep/run").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = call(test_app().router(), Method::POST, "/live/lessons/nap/run").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("sleep, cpu, upstream, db"));
    let (status, _, _) = call(
        test_app().router(),
        Method::POST,
        "/live/lessons/sleep/run?ms=0",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "ms is at least 1");
}

/// `--no-stall-demos`: every variant the registry marks as stalling answers 403 naming
/// the flag, on every route of its lesson; the others still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalling_variants_can_be_switched_off() {
    let limits = LimitArgs {
        max_sleep_ms: MAX_SLEEP_MS,
        max_cpu_iterations: MAX_CPU_ITERATIONS,
        no_stall_demos: true,
        ..LimitArgs::default()
    };
    let app = app_with_limits(limits, "http://127.0.0.1:9", Duration::from_secs(1));
    let mut refused = Vec::new();
    for lesson in stallscope::routes::LESSONS {
        for route in lesson.routes {
            for variant in lesson.variants {
                let uri = route
                    .replace("{variant}", variant.name)
                    .replace("{id}", "1")
                    + "?ms=1&iterations=1";
                let (status, _, body) = call(app.router(), Method::GET, &uri).await;
                let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                if variant.stalls {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {doc}");
                    let detail = doc["detail"].as_str().unwrap_or_default();
                    assert!(detail.contains("--no-stall-demos"), "{uri}: {doc}");
                    refused.push(uri);
                } else {
                    assert_ne!(status, StatusCode::FORBIDDEN, "{uri}: {doc}");
                }
            }
        }
    }
    assert_eq!(
        refused.len(),
        5,
        "blocking sleep, inline cpu, blocking upstream, blocking db ×2: {refused:?}"
    );
    let (status, _, _) = call(app.router(), Method::GET, "/sleep/async?ms=1").await;
    assert_eq!(status, StatusCode::OK);
    // The live page shows the same variants switched off, and only those.
    let (status, _, page) = call(app.router(), Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).expect("utf-8");
    let (stalling, all) = stallscope::routes::LESSONS
        .iter()
        .flat_map(|lesson| lesson.variants)
        .fold((0, 0), |(s, a), v| (s + usize::from(v.stalls), a + 1));
    assert_eq!(page.matches("\"disabled\":true").count(), stalling);
    assert_eq!(page.matches("\"disabled\":false").count(), all - stalling);
}

/// `--max-in-flight`: a request past the cap is a 503 problem with `Retry-After` at once,
/// not a wait; the slot frees when the request in flight is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_cap_get_503_at_once() {
    let limits = LimitArgs {
        max_in_flight: 1,
        ..LimitArgs::default()
    };
    let app = app_with_limits(limits, "http://127.0.0.1:9", Duration::from_secs(1));
    let first = tokio::spawn(call(app.router(), Method::GET, "/sleep/async?ms=600"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let response = app
        .router()
        .oneshot(Request::get("/hello").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "refused at once"
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, doc) = problem(app.router(), "/metrics").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        doc["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--max-in-flight")),
        "{doc}"
    );
    let (status, _, _) = first.await.expect("task");
    assert_eq!(status, StatusCode::OK);
    let (status, _, metrics) = call(app.router(), Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "the slot is free again");
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains("stallscope_requests_refused_total{reason=\"in_flight_cap\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("stallscope_in_flight_cap 1"), "{metrics}");
}

/// `--request-timeout-ms`: a route that is not a lesson answers 504 when it takes longer;
/// lessons keep their own bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_are_not_lessons_time_out_with_504() {
    let limits = LimitArgs {
        request_timeout_ms: 1,
        ..LimitArgs::default()
    };
    let app = app_with_limits(limits, "http://127.0.0.1:9", Duration::from_secs(1));
    // A sign-up hashes its password for tens of milliseconds.
    let request = Request::post("/users")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"username":"slow_one","email":"slow@example.com","password":"a long enough secret"}"#,
        ))
        .expect("request");
    let response = app.router().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let doc: Value = serde_json::from_slice(&body).expect("problem");
    assert!(
        doc["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--request-timeout-ms")),
        "{doc}"
    );
    let (status, _, _) = call(app.router(), Method::GET, "/sleep/async?ms=50").await;
    assert_eq!(status, StatusCode::OK, "lessons have no request timeout");
}
