//! Helpers shared by the integration tests: a real service on an ephemeral port and
//! concurrent requests timed from a client on a different runtime.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Instant;

use futures::future::join_all;
use stallscope::config::ServeArgs;
use stallscope::server::RunningService;

/// Service settings for tests: loopback, ephemeral port, `workers` workers.
pub fn serve_args(workers: u16) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.bind = "127.0.0.1:0".parse().expect("literal address");
    args.shutdown_grace_ms = 2_000;
    args.runtime.workers = Some(workers);
    args.runtime.max_blocking_threads = 64;
    args.limits.max_cpu_iterations = 1_000_000_000;
    args.upstream.upstream_url = None;
    args.upstream.upstream_timeout_ms = 10_000;
    args
}

/// Starts the real service (own thread, own runtime) and waits until it answers.
pub async fn start(args: &ServeArgs) -> RunningService {
    let service = RunningService::start(args).expect("service starts");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{}/healthz", service.base_url()))
            .send()
            .await
            .is_ok()
        {
            return service;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("service did not become healthy");
}

/// Sends `n` GETs to `url` at once, each on its own connection; returns each completion
/// time in ms (sorted) after checking every answer is 200.
pub async fn completion_times(url: &str, n: usize) -> Vec<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let start = Instant::now();
    let requests = (0..n).map(|_| async {
        let response = client.get(url).send().await.expect("request sent");
        let status = response.status();
        let body = response.text().await.expect("body read");
        assert_eq!(status, 200, "{url}: {body}");
        start.elapsed().as_secs_f64() * 1000.0
    });
    let mut times = join_all(requests).await;
    times.sort_by(f64::total_cmp);
    times
}
