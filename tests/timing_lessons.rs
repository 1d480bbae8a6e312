//! The tutorial's lesson, asserted: with one worker, two concurrent requests to a stalling
//! variant finish one after the other, and to a correct variant together.
//!
//! Timing-sensitive: these tests run one at a time (a nextest test group, and a lock for
//! plain `cargo test`), and their margins are wide (parallel < 1.5 × D, serialised ≥ 1.8 × D).

mod common;

use common::{completion_times, serve_args, start};
use tokio::sync::Mutex;

/// One timing test at a time, also under plain `cargo test`.
static SERIAL: Mutex<()> = Mutex::const_new(());

const D: f64 = 300.0;

fn assert_parallel(what: &str, times: &[f64], parallel_ms: f64) {
    let slowest = times.iter().copied().fold(0.0, f64::max);
    assert!(
        slowest < 1.5 * parallel_ms,
        "{what} should run in parallel: completions {times:?} ms, parallel ≈ {parallel_ms} ms"
    );
}

fn assert_serialised(what: &str, times: &[f64], parallel_ms: f64) {
    let slowest = times.iter().copied().fold(0.0, f64::max);
    assert!(
        slowest >= 1.8 * parallel_ms,
        "{what} should be serialised: completions {times:?} ms, parallel ≈ {parallel_ms} ms"
    );
}

async fn check_lesson(path_for: impl Fn(&str) -> String, parallel: &[&str], stalling: &[&str]) {
    let _serial = SERIAL.lock().await;
    let service = start(&serve_args(1)).await;
    for variant in parallel {
        let url = format!("{}{}", service.base_url(), path_for(variant));
        let times = completion_times(&url, 2).await;
        assert_parallel(&url, &times, D);
    }
    for variant in stalling {
        let url = format!("{}{}", service.base_url(), path_for(variant));
        let times = completion_times(&url, 2).await;
        assert_serialised(&url, &times, D);
    }
}

#[tokio::test]
async fn sleep_lesson_with_one_worker() {
    check_lesson(
        |v| format!("/sleep/{v}?ms={D}"),
        &["async", "spawn-blocking", "block-in-place"],
        &["blocking"],
    )
    .await;
}

#[tokio::test]
async fn upstream_lesson_with_one_worker() {
    check_lesson(
        |v| format!("/upstream/{v}?ms={D}"),
        &["async", "spawn-blocking"],
        &["blocking"],
    )
    .await;
}

#[tokio::test]
async fn cpu_lesson_with_one_worker() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cores >= 2,
        "the CPU lesson needs two cores to show parallel hashing"
    );
    let _serial = SERIAL.lock().await;
    let service = start(&serve_args(1)).await;
    let client = reqwest::Client::new();
    let cpu = stallscope::experiment::calibrate_cpu(&client, &service.base_url(), D as u64)
        .await
        .expect("calibration");
    let url_for = |variant: &str| {
        format!(
            "{}/cpu/{variant}?iterations={}",
            service.base_url(),
            cpu.iterations
        )
    };
    for variant in ["spawn-blocking", "rayon"] {
        let url = url_for(variant);
        assert_parallel(&url, &completion_times(&url, 2).await, cpu.solo_ms);
    }
    let url = url_for("inline");
    assert_serialised(&url, &completion_times(&url, 2).await, cpu.solo_ms);
}

/// The experiment command end to end, as a user runs it: the real binary, `--json`, and a
/// verdict per variant that matches the lesson.
#[tokio::test]
async fn experiment_json_verdicts() {
    let _serial = SERIAL.lock().await;
    // The in-process service keeps the db lesson's SQLite file in the working directory.
    let workdir = tempfile::tempdir().expect("temp dir");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_stallscope"))
        .args(["experiment", "--json", "--ms", "300", "--workers", "1"])
        .current_dir(workdir.path())
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("experiment runs");
    assert!(
        output.status.success(),
        "experiment failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("experiment --json prints JSON");
    assert_eq!(
        report["concurrency"], 2,
        "default concurrency is workers + 1"
    );
    let lessons = report["lessons"].as_array().expect("lessons");
    let names: Vec<&str> = lessons
        .iter()
        .filter_map(|l| l["lesson"].as_str())
        .collect();
    assert_eq!(names, ["sleep", "cpu", "upstream", "db"]);
    let mut serialised = Vec::new();
    for lesson in lessons {
        for variant in lesson["variants"].as_array().expect("variants") {
            let name = format!(
                "{}/{}",
                lesson["lesson"].as_str().unwrap_or("?"),
                variant["variant"].as_str().unwrap_or("?")
            );
            assert_eq!(
                variant["completions_ms"].as_array().map(Vec::len),
                Some(2),
                "{name}"
            );
            let stalls = variant["watchdog_stalls"].as_u64();
            if variant["expected_to_stall"] == true {
                assert!(
                    stalls >= Some(1),
                    "{name}: the watchdog saw no stall: {variant}"
                );
            } else {
                assert_eq!(stalls, Some(0), "{name}: {variant}");
            }
            match variant["verdict"].as_str() {
                Some("serialised") => serialised.push(name),
                Some("parallel") => {}
                other => panic!("{name}: unexpected verdict {other:?}: {variant}"),
            }
        }
    }
    assert_eq!(
        serialised,
        [
            "sleep/blocking",
            "cpu/inline",
            "upstream/blocking",
            "db/blocking"
        ],
        "only the stalling variants are serialised"
    );
}
