//! The binary as users run it: defaults, graceful shutdown, the standalone upstream.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the binary in `workdir`, where its default database (`sqlite://stallscope.db`, a
/// file in the working directory) is created.
fn spawn(workdir: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stallscope"))
        .args(args)
        .current_dir(workdir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts")
}

async fn wait_healthy(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became healthy");
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// SIGTERM while a request is in flight: the request still completes, then the process
/// exits 0, and no new connection is accepted after. (Its log also shows the start-up line.)
#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let workdir = tempfile::tempdir().expect("temp dir");
    let child = spawn(workdir.path(), &["--bind", &bind, "--workers", "1"]);
    let base = format!("http://{bind}");
    wait_healthy(&format!("{base}/healthz")).await;

    let in_flight = tokio::spawn({
        let url = format!("{base}/sleep/async?ms=700");
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    sigterm(&child);

    let status = in_flight
        .await
        .expect("task")
        .expect("in-flight request answered");
    assert_eq!(status, 200);
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits after draining")
        .expect("wait");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("draining"), "{log}");
    // The start-up line gives URLs a terminal makes clickable, not bare paths.
    assert!(
        log.contains(&format!(
            "open {base}/ to watch stalls live and run the lessons; API docs at {base}/docs"
        )),
        "{log}"
    );
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
}

/// `STALLSCOPE_*` variables configure the service like flags do.
#[tokio::test]
async fn environment_configures_bind_and_limits() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let workdir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(env!("CARGO_BIN_EXE_stallscope"))
        .arg("serve")
        .current_dir(workdir.path())
        .env_remove("DATABASE_URL")
        .env("STALLSCOPE_BIND", &bind)
        .env("STALLSCOPE_MAX_SLEEP_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let base = format!("http://{bind}");
    wait_healthy(&format!("{base}/healthz")).await;
    let response = reqwest::get(format!("{base}/sleep/async?ms=51"))
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    let body = response.text().await.expect("body");
    assert!(body.contains("from 0 to 50"), "{body}");
    drop(child);
    assert!(
        workdir.path().join("stallscope.db").is_file(),
        "with no DATABASE_URL the service keeps its users in ./stallscope.db"
    );
}

/// `stallscope upstream` serves the slow endpoint alone (docker-compose runs it this way).
#[tokio::test]
async fn standalone_upstream_serves_slow_requests() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let workdir = tempfile::tempdir().expect("temp dir");
    let child = spawn(workdir.path(), &["upstream", "--bind", &bind]);
    wait_healthy(&format!("http://{bind}/healthz")).await;
    let started = std::time::Instant::now();
    let body = reqwest::get(format!("http://{bind}/slow?ms=200"))
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(body, r#"{"slept_ms":200}"#);
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("exits")
        .expect("wait")
        .status;
    assert!(status.success());
}

/// `--console` with tokio-console's port taken, or a malformed `TOKIO_CONSOLE_BIND`: a clear
/// error and a failed exit at start-up, not a panic (console-subscriber's own behaviour) and not
/// a service silently running without the console the user asked for.
#[tokio::test]
async fn console_bind_problems_are_reported_at_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken_addr = taken.local_addr().expect("address").to_string();
    let workdir = tempfile::tempdir().expect("temp dir");
    for (bind, expected) in [
        (taken_addr.as_str(), "tokio-console cannot listen on"),
        ("not an address", "is not a HOST:PORT address"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_stallscope"))
            .args(["serve", "--bind", "127.0.0.1:0", "--console"])
            .current_dir(workdir.path())
            .env_remove("DATABASE_URL")
            .env("TOKIO_CONSOLE_BIND", bind)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(10), output)
            .await
            .expect("exits at once")
            .expect("binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bind}: {stderr}");
        assert!(stderr.contains(expected), "{bind}: {stderr}");
        assert!(stderr.contains("TOKIO_CONSOLE_BIND"), "{bind}: {stderr}");
        assert!(!stderr.contains("panicked"), "{bind}: {stderr}");
    }
    drop(taken);
}
