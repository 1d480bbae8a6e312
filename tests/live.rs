//! The live page's stream over real connections: served through the front door, gone when
//! its client goes, and never in the way of shutdown.

mod common;

use std::time::{Duration, Instant};

use common::SnapshotStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stream_leaves_no_task_behind_and_shutdown_ends_open_streams() {
    let service = common::start(&common::serve_args(1)).await;
    let url = format!("{}/live/stream", service.base_url());
    // The health checks' connections close; then the front door is at rest.
    let settle = |expected: usize| {
        let service = &service;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while service.front_door_tasks() != expected && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            service.front_door_tasks()
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = service.front_door_tasks();
    assert!(baseline >= 1, "the accept loop runs on the front door");

    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = client.get(&url).send().await.expect("stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = SnapshotStream::new(response);
        stream.next(Duration::from_secs(5)).await;
        let second = stream.next(Duration::from_secs(5)).await;
        assert!(
            second["workers"].as_array().is_some_and(|w| w.len() == 1),
            "{second}"
        );
        streams.push(stream);
    }
    assert!(
        service.front_door_tasks() >= baseline + 3,
        "each open stream is served on the front door ({} tasks, baseline {baseline})",
        service.front_door_tasks()
    );
    drop(streams);
    assert_eq!(
        settle(baseline).await,
        baseline,
        "closed streams leave no task behind"
    );

    // An open stream must not keep a stopping service waiting.
    let mut open = SnapshotStream::new(client.get(&url).send().await.expect("stream opens"));
    open.next(Duration::from_secs(5)).await;
    let stopped = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        drop(service);
        started.elapsed()
    });
    let took = tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the service stops with a stream open")
        .expect("join");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    assert!(
        open.ends_within(Duration::from_secs(2)).await,
        "the stream ended when the service stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_connections_are_closed_after_each_answer_and_other_paths_are_kept_alive() {
    let service = common::start(&common::serve_args(1)).await;
    let client = reqwest::Client::new();
    let page = client
        .get(service.base_url() + "/")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a page connection serves one request, so a browser never sends a lesson down it"
    );
    let hello = client
        .get(service.base_url() + "/hello")
        .send()
        .await
        .expect("hello");
    assert_eq!(hello.status(), 200);
    assert!(
        hello.headers().get("connection").is_none(),
        "{:?}",
        hello.headers()
    );
}
