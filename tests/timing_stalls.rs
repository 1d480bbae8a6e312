//! The stall detectors against the real binary: the watchdog names the culprit while it
//! blocks, the canary sees the lag, task monitors blame the right variant, the blocking pool
//! shows saturation, and labels stay bounded.
//!
//! Timing-sensitive: run alone (nextest group `timing`; plain `cargo test` runs test
//! binaries one after another, and a lock serialises the tests inside this one).

mod common;

use std::time::{Duration, Instant};

use std::sync::{Arc, mpsc};

use common::{ServiceProcess, SnapshotStream, completion_times};
use stallscope::config::ServeArgs;
use stallscope::telemetry::request_context::RequestContext;
use stallscope::telemetry::span_ids::SpanIds;
use stallscope::telemetry::stall_log::StallReport;
use stallscope::telemetry::watchdog::Watchdog;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

const ROUTE: &str = "/sleep/{variant}";

#[tokio::test]
async fn blocking_sleep_is_caught_while_it_stalls_and_async_sleep_is_not() {
    let _serial = SERIAL.lock().await;
    let mut service = ServiceProcess::start(&["--workers", "1"]).await;

    // The healthy variant first: two overlapping 300 ms sleeps raise nothing.
    completion_times(&format!("{}/sleep/async?ms=300", service.base_url), 2).await;
    let after_async = service.scrape().await;
    assert_eq!(
        after_async.value("stallscope_stalls_total", &[]),
        0.0,
        "{}",
        after_async.text
    );
    assert_eq!(
        after_async.value("stallscope_task_slow_polls_total", &[("variant", "async")]),
        0.0
    );
    assert_eq!(
        after_async.histogram_above("stallscope_executor_lag_seconds", 0.25),
        0.0,
        "async sleeping must not delay the canary"
    );
    assert!(
        after_async
            .histogram("stallscope_executor_lag_seconds", &[])
            .0
            > 10.0,
        "the canary ticks"
    );
    service.drain_logs();

    // The bug: a 300 ms std::thread::sleep on the only worker.
    let sent = Instant::now();
    let request = tokio::spawn(reqwest::get(format!(
        "{}/sleep/blocking?ms=300",
        service.base_url
    )));
    let (seen_at, warning) = loop {
        let (at, line) = tokio::time::timeout(Duration::from_secs(5), service.logs.recv())
            .await
            .expect("a log line within 5 s")
            .expect("the log stream is open");
        if line.contains("WARN") && line.contains("executor stall") {
            break (at, line);
        }
    };
    let detection = seen_at - sent;
    assert!(
        detection < Duration::from_millis(300),
        "the watchdog must report while the 300 ms poll still runs; took {detection:?}: {warning}"
    );
    assert!(
        detection >= Duration::from_millis(100),
        "not before the threshold: {detection:?}"
    );
    for needle in [
        ROUTE,
        "variant=\"blocking\"",
        "worker=stallscope-rt-",
        "request_id=",
        "span_id=",
    ] {
        assert!(
            warning.contains(needle),
            "`{needle}` missing from: {warning}"
        );
    }
    let response = request.await.expect("task").expect("answer");
    assert_eq!(response.status(), 200);

    // The response leaves inside the stalling poll, so the client can hold it a moment before
    // the poll ends and the watchdog counts the stall over: wait for that moment.
    let mut after = service.scrape().await;
    for _ in 0..50 {
        // The stall's length is recorded last, after the in-progress gauge comes down.
        let (recorded, _) = after.histogram(
            "stallscope_stall_duration_seconds",
            &[("route", ROUTE), ("variant", "blocking")],
        );
        if recorded >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = service.scrape().await;
    }
    let stalls = |variant| {
        after.value(
            "stallscope_stalls_total",
            &[("route", ROUTE), ("variant", variant)],
        )
    };
    assert_eq!(stalls("blocking"), 1.0, "{}", after.text);
    assert_eq!(stalls("async"), 0.0);
    assert_eq!(
        after.value("stallscope_stalls_in_progress", &[]),
        0.0,
        "the stall ended"
    );
    let (stall_count, stall_seconds) = after.histogram(
        "stallscope_stall_duration_seconds",
        &[("route", ROUTE), ("variant", "blocking")],
    );
    assert_eq!(stall_count, 1.0);
    assert!(
        stall_seconds >= 0.29,
        "full stall length recorded: {stall_seconds}"
    );
    assert!(
        after.histogram_above("stallscope_executor_lag_seconds", 0.25) >= 1.0,
        "the canary waited ≥ 250 ms behind the blocked worker:\n{}",
        after.text
    );
    assert!(
        after.value(
            "stallscope_task_slow_polls_total",
            &[("variant", "blocking")]
        ) >= 1.0
    );
    assert_eq!(
        after.value("stallscope_task_slow_polls_total", &[("variant", "async")]),
        0.0
    );
    assert!(
        after.value(
            "stallscope_task_slow_poll_duration_seconds_total",
            &[("variant", "blocking")]
        ) >= 0.29
    );
}

/// The stalls-in-progress gauge is live: scraped (from the admin listener) during a stall
/// it reads 1.
#[tokio::test]
async fn stalls_in_progress_is_visible_during_the_stall() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "1"]).await;
    let request = tokio::spawn(reqwest::get(format!(
        "{}/cpu/inline?iterations=200000000",
        service.base_url
    )));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let during = service.scrape().await;
    request.abort();
    assert_eq!(
        during.value(
            "stallscope_stalls_in_progress",
            &[("route", "/cpu/{variant}"), ("variant", "inline")]
        ),
        1.0,
        "{}",
        during.text
    );
}

#[tokio::test]
async fn saturated_blocking_pool_shows_queue_wait() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "1", "--max-blocking-threads", "2"]).await;
    let url = format!("{}/sleep/spawn-blocking?ms=300", service.base_url);
    let load = tokio::spawn(async move { completion_times(&url, 6).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let during = service.scrape().await;
    let times = load.await.expect("load");
    let after = service.scrape().await;

    assert!(
        times.last().copied().unwrap_or_default() >= 850.0,
        "6 jobs on 2 threads take three rounds: {times:?}"
    );
    assert_eq!(
        during.value("stallscope_runtime_blocking_threads", &[]),
        2.0,
        "{}",
        during.text
    );
    assert_eq!(
        during.value(
            "stallscope_blocking_in_flight",
            &[("call_site", "sleep/spawn-blocking")]
        ),
        6.0
    );
    assert!(during.value("stallscope_runtime_blocking_queue_depth", &[]) >= 3.0);
    let (jobs, waited) = after.histogram(
        "stallscope_blocking_queue_wait_seconds",
        &[("call_site", "sleep/spawn-blocking")],
    );
    assert_eq!(jobs, 6.0);
    // Two jobs wait ~300 ms and two ~600 ms: ~1.8 s in all.
    assert!(waited > 1.0, "queue wait recorded: {waited} s");
    assert_eq!(
        after.value(
            "stallscope_blocking_in_flight",
            &[("call_site", "sleep/spawn-blocking")]
        ),
        0.0
    );
    assert_eq!(
        after.value("stallscope_stalls_total", &[]),
        0.0,
        "offloading is not stalling"
    );
}

#[tokio::test]
async fn labels_stay_bounded_under_random_paths() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&[]).await;
    let client = reqwest::Client::new();
    for i in 0..1000u32 {
        let path = match i % 4 {
            0 => format!("/random/{i}/{}", i * 7919),
            1 => format!("/sleep/variant-{i}?ms=0"),
            2 => format!("/users/{i}"),
            _ => format!("/cpu/x{i}?iterations=1"),
        };
        let status = client
            .get(format!("{}{path}", service.base_url))
            .send()
            .await
            .expect("answer")
            .status();
        assert_eq!(status, 404, "{path}");
    }
    let scrape = service.scrape().await;
    let routes: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "http_server_request_duration_seconds")
        .filter_map(|s| s.labels.get("http_route").cloned())
        .collect();
    assert!(
        routes.iter().all(|r| [
            "unmatched",
            "/healthz",
            "/sleep/{variant}",
            "/cpu/{variant}",
            // A real route since the users API: unknown ids are its 404s, under its template.
            "/users/{id}",
        ]
        .contains(&r.as_str())),
        "{routes:?}"
    );
    assert!(
        scrape.series("http_server_request_duration_seconds") <= 6,
        "{}",
        scrape.text
    );
    assert!(scrape.series("stallscope_task_polls_total") <= 6);
    assert_eq!(
        scrape.value(
            "stallscope_task_instrumented_total",
            &[("route", "/sleep/{variant}"), ("variant", "invalid")]
        ),
        250.0
    );
    assert!(scrape.text.len() < 64 * 1024, "the exposition stays small");
}

/// `/metrics` is valid Prometheus text and `promtool check metrics` has nothing to say.
#[tokio::test]
async fn metrics_pass_promtool() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "2"]).await;
    for path in [
        "/sleep/blocking?ms=150",
        "/sleep/spawn-blocking?ms=5",
        "/cpu/rayon?iterations=10",
        "/upstream/async?ms=5",
        "/nope",
    ] {
        reqwest::get(format!("{}{path}", service.base_url))
            .await
            .expect("answer");
    }
    let text = reqwest::get(format!("{}/metrics", service.base_url))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    common::Scrape::parse(&text);
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut promtool = match promtool {
        Ok(child) => child,
        Err(err) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("promtool is required in CI (apt-get install prometheus): {err}")
        }
        Err(err) => {
            eprintln!(
                "skipping the promtool half: promtool not found ({err}); scripts/ci-setup.sh installs it"
            );
            return;
        }
    };
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let output = promtool.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n---\n{text}"
    );
}

/// Executor lag counts what a stall swallowed: a 1 s stall on the only worker delays about a
/// hundred 10 ms canary ticks, and the histogram records each of them (not just the one tick
/// that finally ran), so the lag percentiles move; the max-lag gauge shows the stall at the
/// next scrape, whatever the scrape interval.
#[tokio::test]
async fn a_one_second_stall_moves_the_executor_lag() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "1"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = service.scrape().await;
    let slow_before = before.histogram_above("stallscope_executor_lag_seconds", 0.1);
    let response = reqwest::get(format!("{}/sleep/blocking?ms=1000", service.base_url))
        .await
        .expect("answered");
    assert!(response.status().is_success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = service.scrape().await;
    let slow = after.histogram_above("stallscope_executor_lag_seconds", 0.1) - slow_before;
    assert!(
        slow >= 50.0,
        "a 1 s stall must add ≥ 50 lag samples ≥ 0.1 s, added {slow}:\n{}",
        after.text
    );
    let max = after.value("stallscope_executor_lag_max_seconds", &[]);
    assert!(max >= 0.9, "max lag since the last scrape: {max}");
    // Read by a scrape, the max starts over.
    let next = service.scrape().await;
    assert!(next.value("stallscope_executor_lag_max_seconds", &[]) < 0.5);
}

/// A busy-loop process, ended when dropped.
struct Hog(std::process::Child);

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The thread id of `pid`'s thread named `name`.
fn thread_named(pid: u32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name)
        })
        .map(|task| task.file_name().to_string_lossy().into_owned())
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Host delay told apart from code that blocks: the only worker thread, pinned to CPU 0 at the
/// lowest priority beside a busy loop, is runnable but rarely running, so ~40 ms of hashing
/// takes seconds: a stall with `cause="host"`. A `std::thread::sleep` on that worker, still
/// sharing CPU 0 with the busy loop, does not wait for a CPU while it sleeps: `cause="code"`.
#[tokio::test]
async fn a_worker_kept_off_the_cpu_is_host_delay_and_a_sleep_is_code() {
    if !std::path::Path::new("/proc/thread-self/schedstat").exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs on Linux with schedstat"
        );
        eprintln!("skipped: no per-thread scheduler statistics on this system");
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut service = ServiceProcess::start(&["--workers", "1"]).await;
    let client = reqwest::Client::new();
    // How many rounds make ~40 ms of CPU in this build, measured on the idle worker.
    let probe: serde_json::Value = client
        .get(format!("{}/cpu/inline?iterations=5000", service.base_url))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("a work report");
    let probe_ms = probe["elapsed_ms"].as_f64().expect("elapsed_ms").max(0.01);
    let iterations = ((5_000.0 * 40.0 / probe_ms) as u64).clamp(1, 5_000_000);

    let pid = service.child.id().expect("running");
    let worker = thread_named(pid, "stallscope-rt-0").expect("the worker thread");
    run("taskset", &["-p", "-c", "0", &worker]);
    run("renice", &["-n", "19", "-p", &worker]);
    let _hog = Hog(std::process::Command::new("taskset")
        .args(["-c", "0", "sh", "-c", "while :; do :; done"])
        .spawn()
        .expect("a busy loop"));
    service.drain_logs();
    // Counted from here: on a busy machine the probe itself may have crossed the threshold.
    let before = service.scrape().await;

    let starved = client
        .get(format!(
            "{}/cpu/inline?iterations={iterations}",
            service.base_url
        ))
        .send()
        .await
        .expect("answered");
    assert!(starved.status().is_success());
    // Back to an even share of CPU 0 beside the busy loop, so the sleep's poll reaches its
    // sleep within a few milliseconds: not running while asleep is not waiting for a CPU.
    run("renice", &["-n", "0", "-p", &worker]);
    let slept = client
        .get(format!("{}/sleep/blocking?ms=300", service.base_url))
        .send()
        .await
        .expect("answered");
    assert!(slept.status().is_success());

    let scrape = service.scrape().await;
    let stalls = |route: &str, variant: &str, cause: &str| {
        let labels = [("route", route), ("variant", variant), ("cause", cause)];
        scrape.value("stallscope_stalls_total", &labels)
            - before.value("stallscope_stalls_total", &labels)
    };
    assert_eq!(
        stalls("/cpu/{variant}", "inline", "host"),
        1.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        stalls("/cpu/{variant}", "inline", "code"),
        0.0,
        "{}",
        scrape.text
    );
    assert_eq!(stalls(ROUTE, "blocking", "code"), 1.0, "{}", scrape.text);
    assert_eq!(stalls(ROUTE, "blocking", "host"), 0.0, "{}", scrape.text);
    let logs: Vec<String> = service.drain_logs().into_iter().map(|(_, l)| l).collect();
    assert!(
        logs.iter().any(|l| l.contains("executor stall")
            && l.contains("(inline)")
            && l.contains("cause: host")),
        "{logs:#?}"
    );
}

/// `block_in_place` hands its worker to another thread before it blocks, so however long it
/// takes, the executor keeps running: never a stall. Durations around the threshold matter
/// most: a poll that ends between two watchdog scans is judged when it ends, and must be
/// judged the same way (20 requests each, four at a time, on one worker).
#[tokio::test]
async fn block_in_place_is_never_counted_as_a_stall() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "1", "--stall-threshold-ms", "100"]).await;
    let client = reqwest::Client::new();
    for ms in [95, 100, 105, 300] {
        for _batch in 0..5 {
            let requests = (0..4).map(|_| {
                client
                    .get(format!("{}/sleep/block-in-place?ms={ms}", service.base_url))
                    .send()
            });
            for response in futures::future::join_all(requests).await {
                assert!(response.expect("answered").status().is_success());
            }
        }
    }
    let scrape = service.scrape().await;
    let stalls = scrape.value(
        "stallscope_stalls_total",
        &[("route", ROUTE), ("variant", "block-in-place")],
    );
    assert_eq!(
        stalls, 0.0,
        "block-in-place counted as stalls:\n{}",
        scrape.text
    );
    // The detector is not simply off: the same durations without the hand-off are stalls.
    for ms in [105, 300] {
        let response = client
            .get(format!("{}/sleep/blocking?ms={ms}", service.base_url))
            .send()
            .await
            .expect("answered");
        assert!(response.status().is_success());
    }
    let scrape = service.scrape().await;
    let stalls = scrape.value(
        "stallscope_stalls_total",
        &[("route", ROUTE), ("variant", "blocking")],
    );
    assert_eq!(stalls, 2.0, "{}", scrape.text);
}

// The watchdog on its own, in-process, with a shorter threshold.

fn one_worker_runtime(watchdog: &Arc<Watchdog>) -> tokio::runtime::Runtime {
    let mut args = ServeArgs::defaults().runtime;
    args.workers = Some(1);
    stallscope::runtime::build(&args, Some(watchdog)).expect("runtime")
}

/// The latency promise: a stall is reported after the threshold and within
/// threshold + 2 scan intervals (plus a generous margin for a busy CI machine), while the
/// poll is still running, naming the request it belongs to.
#[test]
fn watchdog_reports_a_request_stall_while_it_runs() {
    let _serial = SERIAL.blocking_lock();
    let threshold = Duration::from_millis(50);
    let scan = Duration::from_millis(5);
    let watchdog = Watchdog::new(threshold);
    let runtime = one_worker_runtime(&watchdog);
    watchdog.spawn_scanner(scan).expect("scanner");
    let (reports, reported) = mpsc::channel();
    let tag = Arc::new(RequestContext {
        route: "/test/{variant}",
        variant: "blocking",
        request_id: stallscope::telemetry::request_context::InlineText::truncated("t-1"),
        method: "GET",
        path: stallscope::telemetry::request_context::InlineText::truncated("/test/blocking"),
        ids: SpanIds::for_request(None, None),
        trace_state: None,
        on_stall: Some(Box::new(move |report: &StallReport| {
            let _ = reports.send((Instant::now(), report.clone()));
        })),
    });
    let hooks = Arc::clone(&watchdog);
    let (stall_started, stall_ended) = runtime.block_on(async move {
        tokio::spawn(async move {
            hooks.tag_current_poll(&tag);
            let started = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            (started, Instant::now())
        })
        .await
        .expect("task")
    });
    let (at, report) = reported
        .recv_timeout(Duration::from_secs(1))
        .expect("reported");
    let latency = at - stall_started;
    assert!(at < stall_ended, "reported while the poll still ran");
    assert!(latency >= threshold, "{latency:?}");
    assert!(
        latency < threshold + 2 * scan + Duration::from_millis(50),
        "detection took {latency:?}"
    );
    assert!(
        report
            .worker
            .starts_with(stallscope::runtime::THREAD_PREFIX)
    );
    assert!(reported.try_recv().is_err(), "one report per stall");
}

#[test]
fn watchdog_reports_background_tasks_once_and_ignores_short_polls() {
    let _serial = SERIAL.blocking_lock();
    let watchdog = Watchdog::new(Duration::from_millis(40));
    let runtime = one_worker_runtime(&watchdog);
    // Short polls: many, none reported.
    runtime.block_on(async {
        for _ in 0..50 {
            tokio::spawn(async { std::thread::sleep(Duration::from_millis(1)) })
                .await
                .expect("task");
        }
    });
    assert_eq!(watchdog.scan(), 0);

    let stalled = runtime.spawn(async { std::thread::sleep(Duration::from_millis(250)) });
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(watchdog.scan(), 1, "found while it runs");
    assert_eq!(watchdog.scan(), 0, "reported only once");
    runtime.block_on(stalled).expect("task");
    assert_eq!(watchdog.scan(), 0, "nothing left once it ended");
}

/// `block_in_place` hands the worker to another thread before blocking: a long poll, but the
/// executor keeps running, so it is not a stall (the watchdog asks the runtime which threads
/// hold its workers).
#[test]
fn watchdog_does_not_blame_block_in_place() {
    let _serial = SERIAL.blocking_lock();
    let watchdog = Watchdog::new(Duration::from_millis(40));
    let runtime = one_worker_runtime(&watchdog);
    watchdog.attach(runtime.handle().clone());
    let task = runtime.spawn(async {
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(250)));
    });
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(watchdog.scan(), 0, "block_in_place is not a stall");
    // The same long poll without the hand-off is one.
    runtime.block_on(task).expect("task");
    let stalled = runtime.spawn(async { std::thread::sleep(Duration::from_millis(250)) });
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(watchdog.scan(), 1);
    runtime.block_on(stalled).expect("task");
}

/// SIGTERM while the only worker sleeps in a 10 s blocking request: no signal handler or timer
/// of the service runtime can run, yet the process is gone within the shutdown deadline plus
/// a second, exits non-zero, and names the request it abandoned. (With two workers and two
/// such requests the second is sometimes never picked up by the free worker within 5 s, so
/// this test holds one; see the closing note of the session that wrote it.)
#[tokio::test]
async fn sigterm_with_a_stalled_worker_exits_by_the_deadline_naming_the_request() {
    let _serial = SERIAL.lock().await;
    let deadline_ms = 3_000;
    let mut service = ServiceProcess::start(&[
        "--workers",
        "1",
        "--shutdown-deadline-ms",
        &deadline_ms.to_string(),
    ])
    .await;
    let url = format!("{}/sleep/blocking?ms=10000", service.base_url);
    let held = tokio::spawn(
        reqwest::Client::new()
            .get(&url)
            .header("x-request-id", "held-0")
            .send(),
    );
    {
        let id = "request_id=held-0";
        let sent = Instant::now();
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|l: &String| l.contains("executor stall") && l.contains(id))
        {
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "held-0 never stalled:\n{}",
                seen.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen.extend(service.drain_logs().into_iter().map(|(_, l)| l));
        }
    }
    let (status, took) = service.terminate().await;
    assert!(
        took <= Duration::from_millis(deadline_ms + 1_000),
        "exited {took:?} after SIGTERM with a {deadline_ms} ms deadline"
    );
    assert!(!status.success(), "abandoning requests is not a clean exit");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log: String = service
        .drain_logs()
        .into_iter()
        .map(|(_, l)| l + "\n")
        .collect();
    assert!(
        log.lines().any(|l| l.contains("abandoned in flight")
            && l.contains("held-0")
            && l.contains("/sleep/{variant}")
            && l.contains("blocking")),
        "held-0 not named:\n{log}"
    );
    held.abort();
}

/// A second SIGTERM while requests drain: the process exits at once, status 1, naming them.
#[tokio::test]
async fn a_second_signal_exits_at_once_naming_the_requests() {
    let _serial = SERIAL.lock().await;
    let mut service = ServiceProcess::start(&["--workers", "1"]).await;
    let pending = tokio::spawn(
        reqwest::Client::new()
            .get(format!("{}/sleep/async?ms=9000", service.base_url))
            .header("x-request-id", "draining-0")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    service.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = service.terminate().await;
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} after the second signal"
    );
    assert!(!status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log: Vec<String> = service.drain_logs().into_iter().map(|(_, l)| l).collect();
    assert!(
        log.iter().any(|l| l.contains("a second signal arrived"))
            && log
                .iter()
                .any(|l| l.contains("abandoned in flight") && l.contains("draining-0")),
        "{log:#?}"
    );
    pending.abort();
}

/// The live page's stream keeps coming while the only worker is blocked: the front door
/// serves it on a runtime of its own. During a 2.5 s blocking sleep it names the stall (route,
/// variant, request id) with a length that grows, the lag grows with it, and a request that
/// waited behind the stall is listed as its victim afterwards.
#[tokio::test]
async fn the_live_stream_names_a_stall_while_the_only_worker_is_blocked() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "1"]).await;
    let response = reqwest::get(format!("{}/live/stream", service.base_url))
        .await
        .expect("the stream opens");
    assert_eq!(response.status(), 200);
    let mut stream = SnapshotStream::new(response);
    let client = reqwest::Client::new();
    // In flight first (awaiting a 300 ms timer), then held up by the stall: its victim. A
    // request that arrives during the stall is not one yet: nothing reads it until the
    // worker is free, so its own time starts after the stall.
    let victim = tokio::spawn(
        client
            .get(format!("{}/sleep/async?ms=300", service.base_url))
            .header("x-request-id", "live-victim")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    let culprit = tokio::spawn(
        client
            .get(format!("{}/sleep/blocking?ms=2500", service.base_url))
            .header("x-request-id", "live-culprit")
            .send(),
    );
    let mut during = Vec::new();
    while sent.elapsed() < Duration::from_millis(2_200) {
        let snapshot = stream.next(Duration::from_secs(2)).await;
        during.push((sent.elapsed(), snapshot));
    }
    let in_stall: Vec<&serde_json::Value> = during
        .iter()
        .filter(|(at, _)| *at >= Duration::from_millis(600))
        .map(|(_, s)| s)
        .collect();
    assert!(
        in_stall.len() >= 4,
        "at 4 a second, 1.6 s of stall carry about 6 snapshots; got {}",
        in_stall.len()
    );
    let lengths: Vec<f64> = in_stall
        .iter()
        .filter_map(|s| {
            s["stalls"].as_array()?.iter().find(|stall| {
                stall["in_progress"] == true
                    && stall["route"] == ROUTE
                    && stall["variant"] == "blocking"
                    && stall["request_id"] == "live-culprit"
            })?["length_ms"]
                .as_f64()
        })
        .collect();
    assert!(
        lengths.len() >= 3 && lengths.windows(2).all(|w| w[1] > w[0]),
        "the stall is named in progress with a growing length: {lengths:?}"
    );
    let lag = in_stall
        .last()
        .and_then(|s| s["lag_ms"].as_f64())
        .expect("lag");
    assert!(lag >= 1_000.0, "the lag grows with the stall: {lag} ms");
    let busy = in_stall.last().expect("snapshot")["workers"][0]["busy"]
        .as_f64()
        .expect("busy");
    assert!(busy > 0.99, "the held worker reads busy: {busy}");

    culprit.await.expect("task").expect("answer");
    victim.await.expect("task").expect("answer");
    // The victim is listed beside its culprit once it has its answer.
    let deadline = Instant::now() + Duration::from_secs(3);
    let victims = loop {
        let snapshot = stream.next(Duration::from_secs(2)).await;
        let victims = snapshot["stalls"].as_array().and_then(|stalls| {
            stalls
                .iter()
                .find(|s| s["request_id"] == "live-culprit" && s["in_progress"] == false)
                .map(|s| s["victims"].clone())
        });
        if let Some(victims) = victims.filter(|v| v.as_array().is_some_and(|v| !v.is_empty())) {
            break victims;
        }
        assert!(
            Instant::now() < deadline,
            "no victim listed for the ended stall"
        );
    };
    let victim = victims
        .as_array()
        .and_then(|v| v.iter().find(|v| v["request_id"] == "live-victim"))
        .unwrap_or_else(|| panic!("the in-flight async sleep is the stall's victim: {victims}"));
    assert_eq!(
        (&victim["route"], &victim["variant"]),
        (&ROUTE.into(), &"async".into())
    );
    assert!(
        victim["delayed_ms"].as_f64().expect("delayed") >= 1_500.0,
        "{victim}"
    );
}

/// Saturation, as the issue "safe to expose" puts it: 20 inline CPU requests and 50 blocking
/// sleeps against caps of 3 per lesson on two workers. The admitted ones hold both workers;
/// the excess is refused with 503 + `Retry-After` naming the cap; and `/healthz`, `/readyz`
/// and `/metrics` answer within 100 ms throughout, because the front door serves them on a
/// thread the stalls cannot reach.
#[tokio::test]
async fn saturated_stall_demos_are_refused_and_probes_still_answer() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&["--workers", "2", "--stall-demo-cap", "3"]).await;
    let base = service.base_url.clone();
    // A connection per request, as probes and a crowd of clients use them.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut load = tokio::task::JoinSet::new();
    for i in 0..70 {
        let (lesson, url) = if i < 20 {
            ("cpu", format!("{base}/cpu/inline?iterations=1000000"))
        } else {
            ("sleep", format!("{base}/sleep/blocking?ms=1000"))
        };
        let client = client.clone();
        load.spawn(async move {
            let response = client.get(&url).send().await.expect("an answer");
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            (
                lesson,
                status,
                retry_after,
                response.text().await.unwrap_or_default(),
            )
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slowest = (Duration::ZERO, "");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let started = Instant::now();
            let status = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("the probe answers")
                .status();
            assert_eq!(status, 200, "{path}");
            if started.elapsed() > slowest.0 {
                slowest = (started.elapsed(), path);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest.0 < Duration::from_millis(100),
        "the slowest probe, {}, took {:?} while the demos saturated the service",
        slowest.1,
        slowest.0
    );
    let mut outcomes = std::collections::BTreeMap::new();
    while let Some(joined) = load.join_next().await {
        let (lesson, status, retry_after, body) = joined.expect("request task");
        match status {
            200 => {}
            503 => {
                assert!(retry_after, "a 503 says when to retry: {body}");
                assert!(body.contains("--stall-demo-cap"), "{body}");
            }
            other => panic!("{lesson}: {other} {body}"),
        }
        *outcomes.entry((lesson, status)).or_insert(0) += 1;
    }
    for lesson in ["cpu", "sleep"] {
        assert!(
            outcomes.get(&(lesson, 200)).is_some_and(|n| *n >= 3)
                && outcomes.contains_key(&(lesson, 503)),
            "{lesson}: some admitted, some refused: {outcomes:?}"
        );
    }
    let refused: u32 = outcomes
        .iter()
        .filter(|((_, status), _)| *status == 503)
        .map(|(_, n)| *n)
        .sum();
    let scrape = service.scrape().await;
    assert_eq!(
        scrape.value(
            "stallscope_requests_refused_total",
            &[("reason", "stall_demo_cap")]
        ),
        f64::from(refused)
    );
}

/// Opens a connection and sends `head` (half a request), leaving it open.
async fn half_sent(base_url: &str, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream.write_all(head.as_bytes()).await.expect("sends");
    stream
}

/// Whether the server closes `stream` within `within` (anything it writes first, such as a
/// 408, is read and ignored).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Slowloris, with the open-file limit at 1 024: 500 connections that send half a request
/// (half of them stop inside the request line, which the front door waits for, half inside
/// the headers, which hyper reads) are closed by the header-read timeout, and `/hello` answers
/// throughout on a fresh connection.
#[tokio::test]
async fn half_sent_requests_are_closed_by_the_header_read_timeout() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        &["--workers", "2", "--header-read-timeout-ms", "1500"],
        &[],
    )
    .await;
    let scrape = service.scrape().await;
    assert_eq!(
        scrape.value("stallscope_connection_cap", &[]),
        1024.0 - 128.0,
        "the cap leaves 128 descriptors below the limit"
    );
    let timed_out_before = scrape.value("stallscope_connections_timed_out_total", &[]);
    let mut slow = Vec::new();
    for i in 0..500 {
        let head = if i % 2 == 0 {
            "GET /hel"
        } else {
            "GET /hello HTTP/1.1\r\nHost: slow\r\nX-Slow: "
        };
        slow.push(half_sent(&service.base_url, head).await);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let started = Instant::now();
    let hello = client
        .get(format!("{}/hello", service.base_url))
        .send()
        .await
        .expect("/hello answers beside 500 slow connections");
    assert_eq!(hello.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    let mut still_open = 0;
    for stream in &mut slow {
        if !closed_within(stream, Duration::from_secs(3)).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "every half-sent request is closed by the timeout"
    );
    let scrape = service.scrape().await;
    assert!(
        scrape.value("stallscope_connections_timed_out_total", &[]) - timed_out_before >= 500.0,
        "{}",
        scrape.text
    );
    let hello = client
        .get(format!("{}/hello", service.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(hello.status(), 200);
}

/// `--max-connections`: past the cap a connection is closed as it arrives (and counted); the
/// cap frees as connections close.
#[tokio::test]
async fn connections_past_the_cap_are_closed_as_they_arrive() {
    let _serial = SERIAL.lock().await;
    let service = ServiceProcess::start(&[
        "--workers",
        "2",
        "--max-connections",
        "5",
        "--header-read-timeout-ms",
        "1000",
    ])
    .await;
    // The start-up probe's connection may still be closing: let it go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(half_sent(&service.base_url, "").await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = half_sent(&service.base_url, "GET /hello HTTP/1.1\r\n\r\n").await;
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)).await,
        "the sixth connection is closed at once"
    );
    let scrape = service.scrape().await;
    assert!(scrape.value("stallscope_connections_refused_total", &[]) >= 1.0);
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(3)).await,
            "silent ones time out"
        );
    }
    let hello = reqwest::get(format!("{}/hello", service.base_url))
        .await
        .expect("answers once the silent ones are gone");
    assert_eq!(hello.status(), 200);
}
