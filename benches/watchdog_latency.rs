//! How long after a poll crosses the stall threshold does the watchdog report it?
//!
//! `cargo bench --bench watchdog_latency` runs 30 stalls of 200 ms on a one-worker runtime
//! with the default threshold (100 ms) and scan interval (5 ms), and records when each was
//! reported relative to the moment it crossed the threshold. The promise is
//! threshold + 2 scan intervals; the table goes to docs/benchmarks.md.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use stallscope::config::ServeArgs;
use stallscope::telemetry::request_context::{InlineText, RequestContext};
use stallscope::telemetry::span_ids::SpanIds;
use stallscope::telemetry::stall_log::StallReport;
use stallscope::telemetry::watchdog::Watchdog;

const STALLS: usize = 30;
const STALL: Duration = Duration::from_millis(200);

fn main() -> anyhow::Result<()> {
    let defaults = ServeArgs::defaults();
    let settings = defaults.telemetry.settings();
    let (threshold, scan) = (settings.stall_threshold, settings.watchdog_scan_interval);
    let watchdog = Watchdog::new(threshold);
    let mut runtime_args = defaults.runtime;
    runtime_args.workers = Some(1);
    let runtime = stallscope::runtime::build(&runtime_args, Some(&watchdog))?;
    watchdog.spawn_scanner(scan)?;

    let mut late_by = Vec::with_capacity(STALLS);
    for i in 0..STALLS {
        let (reports, reported) = mpsc::channel::<Instant>();
        let tag = Arc::new(RequestContext {
            route: "/bench",
            variant: "blocking",
            request_id: InlineText::truncated(&format!("bench-{i}")),
            method: "GET",
            path: InlineText::truncated("/bench"),
            ids: SpanIds::for_request(None, None),
            trace_state: None,
            on_stall: Some(Box::new(move |_: &StallReport| {
                let _ = reports.send(Instant::now());
            })),
        });
        let hooks = Arc::clone(&watchdog);
        let started = runtime.block_on(async move {
            tokio::spawn(async move {
                hooks.tag_current_poll(&tag);
                let started = Instant::now();
                std::thread::sleep(STALL);
                started
            })
            .await
        })?;
        let at = reported.recv_timeout(Duration::from_secs(2))?;
        late_by.push((at - started).saturating_sub(threshold));
        std::thread::sleep(Duration::from_millis(20));
    }
    late_by.sort();
    let pick = |q: f64| late_by[((late_by.len() - 1) as f64 * q).round() as usize];
    let (p50, p95, max) = (pick(0.5), pick(0.95), pick(1.0));
    let bound = 2 * scan;
    let table = format!(
        "<!-- watchdog:start -->\n\
         {STALLS} stalls of {} ms, threshold {} ms, scan every {} ms, one worker, release build. \
         Latency after the threshold was crossed:\n\n\
         | p50 | p95 | max | promise (2 scans) |\n|---:|---:|---:|---:|\n\
         | {:.1} ms | {:.1} ms | {:.1} ms | {} ms ({}) |\n\
         <!-- watchdog:end -->",
        STALL.as_millis(),
        threshold.as_millis(),
        scan.as_millis(),
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        bound.as_millis(),
        if max <= bound {
            "met"
        } else {
            "NOT met at max"
        },
    );
    println!("{table}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/benchmarks.md");
    if let Ok(text) = std::fs::read_to_string(path)
        && let (Some(a), Some(b)) = (
            text.find("<!-- watchdog:start -->"),
            text.find("<!-- watchdog:end -->"),
        )
    {
        let updated = format!(
            "{}{table}{}",
            &text[..a],
            &text[b + "<!-- watchdog:end -->".len()..]
        );
        std::fs::write(path, updated)?;
    }
    Ok(())
}
