//! What the instrumentation costs per request in user space, without sockets or a load
//! generator: `GET /hello` sent straight into the real router (`tower::ServiceExt::oneshot`),
//! bare (`--no-instrumentation`) versus instrumented, on a runtime built like the service's.
//! (Its task-poll hooks are installed too, but a task sending requests in a loop is polled
//! once for all of them: this measures the route layer, not the hooks.)
//!
//! `cargo bench --bench route_layer` drives the router from one task, then from one task per
//! worker at once (two workers share every label set's instruments, as they do in the
//! service), alternating the sides over several rounds, and prints the median CPU time per
//! request (into docs/benchmarks.md too). Contention shows as the gap between the two rows.
//! `bench/overhead.sh` measures the whole service; this isolates the route layer's share,
//! which is small enough to drown in that benchmark's noise.
//!
//! `-- --only bare|instrumented [tasks …]` runs one side alone, to profile it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use stallscope::config::ServeArgs;
use stallscope::db::Database;
use stallscope::telemetry::Telemetry;
use stallscope::{AppState, app};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const REQUESTS_PER_TASK: u32 = 200_000;
const ROUNDS: usize = 7;
/// Runtime workers, as `bench/overhead.sh` runs the service.
const WORKERS: u16 = 2;

struct Side {
    name: &'static str,
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn side(name: &'static str, instrumented: bool) -> anyhow::Result<Side> {
    let mut args = ServeArgs::defaults();
    args.telemetry.no_instrumentation = !instrumented;
    args.runtime.workers = Some(WORKERS);
    let dir = tempfile::tempdir()?;
    args.database.database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let telemetry = Telemetry::new(stallscope::telemetry_settings(
        &args.telemetry,
        &args.limits,
    ));
    let runtime = stallscope::runtime::build(&args.runtime, telemetry.watchdog())?;
    let db = Database::open(&args.database)?;
    let state = AppState::new(
        args.limits,
        "http://127.0.0.1:9".to_owned(),
        Duration::from_secs(1),
        CancellationToken::new(),
        telemetry,
        db,
    )?;
    Ok(Side {
        name,
        runtime,
        router: app(state),
        _dir: dir,
    })
}

/// CPU time of every thread of this process so far, in nanoseconds (`/proc/self/task/*/
/// schedstat`): steadier than wall time on a shared machine, where time stolen by neighbours
/// counts in wall time but not here.
fn process_cpu_ns() -> anyhow::Result<u64> {
    let mut total = 0;
    for thread in std::fs::read_dir("/proc/self/task")? {
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(thread?.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse::<u64>()?;
    }
    Ok(total)
}

/// CPU nanoseconds per request, each of `tasks` tasks sending `REQUESTS_PER_TASK` in a loop.
fn run(side: &Side, tasks: usize) -> anyhow::Result<f64> {
    let started = process_cpu_ns()?;
    side.runtime.block_on(async {
        let mut running = Vec::new();
        for _ in 0..tasks {
            let router = side.router.clone();
            running.push(tokio::spawn(async move {
                for _ in 0..REQUESTS_PER_TASK {
                    let request = Request::get("/hello").body(Body::empty())?;
                    let response = router.clone().oneshot(request).await?;
                    response.into_body().collect().await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in running {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    let requests = f64::from(REQUESTS_PER_TASK) * tasks as f64;
    Ok((process_cpu_ns()? - started) as f64 / requests)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `cargo bench --bench route_layer -- [--only bare|instrumented] [tasks …]`: `--only` runs
/// one side (to profile it alone); tasks default to one, then one per worker.
fn main() -> anyhow::Result<()> {
    let mut only = None;
    let mut task_counts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => only = args.next(),
            "--bench" => {} // what `cargo bench` passes
            count => task_counts.push(count.parse::<usize>()?),
        }
    }
    let defaults = task_counts.is_empty();
    if defaults {
        task_counts = vec![1, usize::from(WORKERS)];
    }
    let mut rows = Vec::new();
    for tasks in task_counts {
        let mut sides = Vec::new();
        for (name, instrumented) in [("bare", false), ("instrumented", true)] {
            if only.as_deref().is_none_or(|only| only == name) {
                sides.push(side(name, instrumented)?);
            }
        }
        let mut figures: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
        for _ in 0..ROUNDS {
            for (side, figures) in sides.iter().zip(&mut figures) {
                figures.push(run(side, tasks)?);
            }
        }
        let medians: Vec<f64> = figures.into_iter().map(median).collect();
        for (side, ns) in sides.iter().zip(&medians) {
            println!(
                "{tasks} task(s) {:>13}: {ns:7.0} ns of CPU per request",
                side.name
            );
        }
        if let [bare, instrumented] = medians[..] {
            println!(
                "{tasks} task(s)  instrumented − bare: {:+.0} ns of CPU per request",
                instrumented - bare
            );
            rows.push(format!(
                "| {tasks} | {bare:.0} ns | {instrumented:.0} ns | {:+.0} ns |",
                instrumented - bare
            ));
        }
    }
    if defaults && only.is_none() {
        write_table(&rows)?;
    }
    Ok(())
}

/// The results, between the markers in docs/benchmarks.md.
fn write_table(rows: &[String]) -> anyhow::Result<()> {
    const START: &str = "<!-- route-layer:start -->";
    const END: &str = "<!-- route-layer:end -->";
    let table = format!(
        "{START}\n`GET /hello` into the router, {REQUESTS_PER_TASK} requests per task, median of \
         {ROUNDS} rounds, release build, CPU time of the whole process per request:\n\n\
         | tasks at once | bare | instrumented | instrumentation |\n|---:|---:|---:|---:|\n\
         {}\n{END}",
        rows.join("\n")
    );
    println!("{table}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/benchmarks.md");
    if let Ok(text) = std::fs::read_to_string(path)
        && let (Some(a), Some(b)) = (text.find(START), text.find(END))
    {
        let updated = format!("{}{table}{}", &text[..a], &text[b + END.len()..]);
        std::fs::write(path, updated)?;
    }
    Ok(())
}
