//! The adoption example works as promised: while its `/slow` handler blocks a worker, the
//! watchdog has already named the route (a stall in progress, counted under `/slow`).

#[path = "../examples/adopt.rs"]
mod adopt;

use std::time::{Duration, Instant};

use stallscope_telemetry::{Settings, Telemetry};

#[test]
fn the_watchdog_names_the_blocking_route_while_it_blocks() {
    let telemetry = Telemetry::new(Settings::default());
    let runtime = adopt::runtime(&telemetry, 1).expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listener");
    let addr = listener.local_addr().expect("address");
    let serving = std::sync::Arc::clone(&telemetry);
    std::thread::spawn(move || {
        runtime.block_on(async move {
            serving.start().expect("telemetry starts");
            axum::serve(listener, adopt::app(&serving)).await
        })
    });
    // The client on a thread of its own: the service's only worker is about to block.
    let sent = Instant::now();
    let client = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        answer
    });
    let stalled = r#"stallscope_stalls_total{route="/slow",variant="none",cause="code"} 1"#;
    let in_progress = r#"stallscope_stalls_in_progress{route="/slow",variant="none"} 1"#;
    loop {
        let metrics = telemetry.render();
        if metrics.contains(stalled) && metrics.contains(in_progress) {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_millis(1_200),
            "no stall named while /slow blocks:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!client.is_finished(), "named while still blocking");
    let answer = client.join().expect("client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
