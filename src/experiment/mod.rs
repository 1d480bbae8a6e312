//! `stallscope experiment`: the tutorial's lesson as one command.
//!
//! For every variant of every lesson it fires C concurrent requests that each ask for D ms of
//! work and notes when each one completes. Parallel variants finish together at about D;
//! a stalling variant finishes one request after another, so its slowest takes about C × D
//! on one worker.

mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub use report::{Verdict, render_table};

use crate::config::available_cpus;
use crate::routes;
use crate::routes::cpu::CpuVariant;
use crate::routes::db::DbVariant;
use crate::routes::sleep::SleepVariant;
use crate::routes::upstream::UpstreamVariant;
use crate::telemetry::watchdog::Watchdog;

#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    /// Measure a running stallscope at this URL instead of starting one in-process.
    #[arg(long)]
    pub url: Option<String>,

    /// Workers of the in-process service (with --url: the target's worker count, used only
    /// for the default concurrency). One worker is one event loop, as in the tutorial.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Concurrent requests per variant; defaults to workers + 1, the fewest that can show a
    /// stall on a multi-thread runtime.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,

    /// Work per request in milliseconds (CPU work is calibrated to take about this long).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub ms: u64,

    /// Which lesson to run.
    #[arg(long, value_enum, default_value_t = LessonChoice::All)]
    pub lesson: LessonChoice,

    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LessonChoice {
    Sleep,
    Cpu,
    Upstream,
    Db,
    All,
}

impl LessonChoice {
    fn lessons(self) -> Vec<Lesson> {
        match self {
            LessonChoice::Sleep => vec![Lesson::Sleep],
            LessonChoice::Cpu => vec![Lesson::Cpu],
            LessonChoice::Upstream => vec![Lesson::Upstream],
            LessonChoice::Db => vec![Lesson::Db],
            LessonChoice::All => vec![Lesson::Sleep, Lesson::Cpu, Lesson::Upstream, Lesson::Db],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lesson {
    Sleep,
    Cpu,
    Upstream,
    Db,
}

impl Lesson {
    /// This lesson in the registry (`routes::LESSONS`).
    fn declared(self) -> &'static routes::Lesson {
        let name = match self {
            Lesson::Sleep => SleepVariant::LESSON,
            Lesson::Cpu => CpuVariant::LESSON,
            Lesson::Upstream => UpstreamVariant::LESSON,
            Lesson::Db => DbVariant::LESSON,
        };
        routes::lesson(name).unwrap_or_else(|| unreachable!("{name} is in routes::LESSONS"))
    }

    pub fn name(self) -> &'static str {
        self.declared().name
    }

    /// The lesson called `name` (`sleep`, `cpu`, `upstream`, `db`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Lesson::Sleep, Lesson::Cpu, Lesson::Upstream, Lesson::Db]
            .into_iter()
            .find(|lesson| lesson.name() == name)
    }

    /// The route template the experiment sends this lesson's requests to (as metrics name it).
    pub fn route(self) -> &'static str {
        self.declared().routes[0]
    }

    pub fn variants(self) -> impl Iterator<Item = &'static str> {
        self.declared().variants.iter().map(|v| v.name)
    }

    /// The variants that hold a worker while they work, and so should come out serialised.
    pub fn stalls(self, variant: &str) -> bool {
        self.declared().stalls(variant)
    }
}

/// The whole run, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct ExperimentReport {
    pub target: String,
    pub workers: u16,
    pub concurrency: u16,
    pub ms: u64,
    /// The CPU lesson's work per request (calibrated to about `ms`), if it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuCalibration>,
    pub lessons: Vec<LessonResult>,
}

#[derive(Debug, Serialize)]
pub struct LessonResult {
    pub lesson: Lesson,
    /// What a perfectly parallel run's slowest request would take, in ms: D, or for CPU work
    /// one request's solo time × ⌈C / cores⌉, since no fix makes more cores.
    pub parallel_ms: f64,
    pub variants: Vec<VariantResult>,
}

#[derive(Debug, Serialize)]
pub struct VariantResult {
    pub variant: &'static str,
    /// When each request completed, ms after they were all sent, fastest first.
    pub completions_ms: Vec<f64>,
    pub slowest_ms: f64,
    /// Slowest completion divided by `parallel_ms`: ~1 parallel, ~C serialised.
    pub slowdown: f64,
    pub verdict: Verdict,
    /// Whether the lesson says this variant stalls (the verdict should agree).
    pub expected_to_stall: bool,
    /// Whether the verdict says what the lesson expects ([`Verdict::agrees_with_lesson`]).
    pub agrees_with_lesson: bool,
    /// Stalls the target's watchdog reported for this variant during the run (from its
    /// `/metrics`; `null` if it could not be read).
    pub watchdog_stalls: Option<u64>,
    /// Failed requests, if any, with their status or error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Each request, in sending order: when it was sent and answered (ms after the first).
    pub timeline: Vec<RequestTiming>,
    /// The stalls the target's watchdog saw during the batch, when the experiment runs
    /// inside the service (the live page).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<TimelineStall>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RequestTiming {
    pub sent_ms: f64,
    /// `None` if it failed.
    pub done_ms: Option<f64>,
}

/// A stall on the experiment's clock (ms after the batch began).
#[derive(Debug, Clone, Serialize)]
pub struct TimelineStall {
    pub worker: String,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// Every chosen lesson against `target`, with the CPU lesson calibrated first.
pub async fn measure(args: &ExperimentArgs, target: String) -> anyhow::Result<ExperimentReport> {
    let concurrency = args.concurrency.unwrap_or(args.workers.saturating_add(1));
    let lessons = args.lesson.lessons();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    wait_until_ready(&client, &target).await?;

    let cpu = if lessons.contains(&Lesson::Cpu) {
        Some(calibrate_cpu(&client, &target, args.ms).await?)
    } else {
        None
    };

    let total: usize = lessons.iter().map(|l| l.variants().count()).sum();
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((total * usize::from(concurrency)) as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} requests  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let plan = Plan {
        concurrency,
        ms: args.ms,
        cpu,
    };
    let mut results = Vec::new();
    for lesson in lessons {
        results.push(run_lesson(&client, &target, lesson, &plan, &progress, None).await);
    }
    progress.finish_and_clear();
    Ok(ExperimentReport {
        target,
        workers: args.workers,
        concurrency,
        ms: args.ms,
        cpu,
        lessons: results,
    })
}

/// How each variant's batch is sent.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests at once.
    pub concurrency: u16,
    /// Work per request.
    pub ms: u64,
    /// The CPU lesson's calibrated work, needed when it runs.
    pub cpu: Option<CpuCalibration>,
}

/// Every variant of `lesson`, one batch after another. With the target's `watchdog` (the live
/// page runs the experiment inside the service), each variant also lists the stalls it caused.
pub async fn run_lesson(
    client: &reqwest::Client,
    target: &str,
    lesson: Lesson,
    plan: &Plan,
    progress: &ProgressBar,
    watchdog: Option<&Watchdog>,
) -> LessonResult {
    let concurrency = plan.concurrency;
    let parallel_ms = match lesson {
        Lesson::Cpu => {
            let solo_ms = plan.cpu.map_or(plan.ms as f64, |c| c.solo_ms);
            solo_ms * usize::from(concurrency).div_ceil(available_cpus()) as f64
        }
        _ => plan.ms as f64,
    };
    let mut variants = Vec::new();
    for variant in lesson.variants() {
        progress.set_message(format!("{}/{variant}", lesson.name()));
        let url = match lesson {
            Lesson::Cpu => format!(
                "{target}/cpu/{variant}?iterations={}",
                plan.cpu.map_or(1, |c| c.iterations)
            ),
            // The database waits D ms itself (pg_sleep, SLEEP(), or SQLite's
            // stallscope_sleep): the database lesson's equivalent of /sleep.
            Lesson::Db => format!("{target}/db/{variant}/sleep?ms={}", plan.ms),
            _ => format!("{target}/{}/{variant}?ms={}", lesson.name(), plan.ms),
        };
        let route = lesson.route();
        let stalls_before = watchdog_stalls(client, target, route, variant).await;
        let clock_before = watchdog.map(Watchdog::now_ns);
        let batch = fire(client, &url, concurrency, progress).await;
        let stalls = match (watchdog, clock_before) {
            (Some(watchdog), Some(since)) => stalls_since(watchdog, since, route, variant),
            _ => Vec::new(),
        };
        let stalls_after = watchdog_stalls(client, target, route, variant).await;
        let completions_ms = batch.completions_ms;
        let slowest_ms = completions_ms.iter().copied().fold(0.0, f64::max);
        let slowdown = slowest_ms / yardstick_ms(lesson, parallel_ms, &completions_ms);
        let watchdog_stalls = stalls_after
            .zip(stalls_before)
            .map(|(after, before)| after.saturating_sub(before));
        let verdict = Verdict::judge(slowdown, batch.errors.is_empty(), watchdog_stalls);
        let expected_to_stall = lesson.stalls(variant);
        variants.push(VariantResult {
            variant,
            completions_ms,
            slowest_ms,
            slowdown,
            verdict,
            expected_to_stall,
            agrees_with_lesson: verdict.agrees_with_lesson(expected_to_stall),
            watchdog_stalls,
            errors: batch.errors,
            timeline: batch.timeline,
            stalls,
        });
        // Let stragglers (sleeping blocking threads, closing sockets) settle.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    LessonResult {
        lesson,
        parallel_ms,
        variants,
    }
}

/// The stalls of `route`/`variant` that began after `since` on the watchdog's clock, in ms
/// from then.
fn stalls_since(watchdog: &Watchdog, since: u64, route: &str, variant: &str) -> Vec<TimelineStall> {
    let ms_after = |ns: u64| ns.saturating_sub(since) as f64 / 1e6;
    watchdog
        .stalls()
        .into_iter()
        .filter(|(stall, _, _)| {
            stall.started_ns >= since && stall.route == route && stall.variant == variant
        })
        .map(|(stall, length, _)| TimelineStall {
            worker: stall.worker,
            start_ms: ms_after(stall.started_ns),
            end_ms: ms_after(stall.started_ns) + length.as_secs_f64() * 1000.0,
        })
        .collect()
}

/// `stallscope_stalls_total{route, variant}` as the target's `/metrics` reports it now;
/// `None` for a target without one (a peer such as the FastAPI app in `bench/peers/`), whose
/// slow batches must not be judged "no worker was blocked".
async fn watchdog_stalls(
    client: &reqwest::Client,
    target: &str,
    route: &str,
    variant: &str,
) -> Option<u64> {
    let text = client
        .get(format!("{target}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let route_label = format!("route=\"{route}\"");
    let variant_label = format!("variant=\"{variant}\"");
    Some(
        text.lines()
            .filter(|line| line.starts_with("stallscope_stalls_total{"))
            .filter(|line| line.contains(&route_label) && line.contains(&variant_label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// What one batch of requests did.
struct Batch {
    /// Each success's completion, ms after the batch began, fastest first.
    completions_ms: Vec<f64>,
    errors: Vec<String>,
    timeline: Vec<RequestTiming>,
}

/// Sends `n` requests at once and notes when each was sent and answered.
async fn fire(client: &reqwest::Client, url: &str, n: u16, progress: &ProgressBar) -> Batch {
    let start = Instant::now();
    let requests = (0..n).map(|_| async {
        let sent_ms = start.elapsed().as_secs_f64() * 1000.0;
        let outcome = match client.get(url).send().await {
            Ok(response) if response.status().is_success() => {
                // Read the body so completion means "the client has the answer".
                match response.bytes().await {
                    Ok(_) => Ok(start.elapsed().as_secs_f64() * 1000.0),
                    Err(err) => Err(format!("reading the body failed: {err}")),
                }
            }
            Ok(response) => Err(format!("HTTP {}", response.status())),
            Err(err) => Err(err.to_string()),
        };
        progress.inc(1);
        (sent_ms, outcome)
    });
    let mut batch = Batch {
        completions_ms: Vec::new(),
        errors: Vec::new(),
        timeline: Vec::new(),
    };
    for (sent_ms, outcome) in join_all(requests).await {
        let done_ms = match outcome {
            Ok(ms) => {
                batch.completions_ms.push(ms);
                Some(ms)
            }
            Err(err) => {
                batch.errors.push(err);
                None
            }
        };
        batch.timeline.push(RequestTiming { sent_ms, done_ms });
    }
    batch.completions_ms.sort_by(f64::total_cmp);
    batch
}

pub async fn wait_until_ready(client: &reqwest::Client, target: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(format!("{target}/healthz")).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            _ if Instant::now() > deadline => bail!("{target}/healthz did not answer within 10 s"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// How much CPU work makes one request take about D ms on the target.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuCalibration {
    /// SHA-256 rounds per request.
    pub iterations: u64,
    /// What one request of `iterations` rounds took alone, in ms: the yardstick for the
    /// concurrent run, since a busy or throttled machine rarely hits D exactly.
    pub solo_ms: f64,
}

/// Finds how many SHA-256 rounds take about `ms` on the target, by asking the target itself
/// (so a debug build, a slow CPU or a remote machine are all measured as they are), then
/// times one request of that size alone.
pub async fn calibrate_cpu(
    client: &reqwest::Client,
    target: &str,
    ms: u64,
) -> anyhow::Result<CpuCalibration> {
    let mut iterations: u64 = 10_000;
    loop {
        let elapsed_ms = time_cpu_request(client, target, iterations).await?;
        // Measure at least 100 ms so timer noise does not dominate, then scale linearly.
        if elapsed_ms >= 100.0 || iterations >= 1 << 40 {
            let per_ms = iterations as f64 / elapsed_ms.max(0.001);
            let iterations = ((per_ms * ms as f64) as u64).max(1);
            let solo_ms = time_cpu_request(client, target, iterations).await?;
            return Ok(CpuCalibration {
                iterations,
                solo_ms,
            });
        }
        iterations *= 4;
    }
}

/// What a parallel finish of this variant's requests would be. For sleeps, upstream calls and
/// database waits that is the requested duration. CPU work is timed by calibration, and a
/// shared machine's speed drifts (a VM's second vCPU comes and goes): if this variant's
/// fastest request beat the calibrated solo time, the machine is faster now, and the yardstick
/// follows it — otherwise a stalling pair on a fast moment ([163, 327] ms against a solo time
/// of 288 ms measured on a slow one) would pass for parallel. A slower machine can only make a
/// pair look *more* serialised, never less.
fn yardstick_ms(lesson: Lesson, parallel_ms: f64, completions_ms: &[f64]) -> f64 {
    let fastest = completions_ms.iter().copied().fold(f64::INFINITY, f64::min);
    match lesson {
        Lesson::Cpu if fastest.is_finite() && fastest > 0.0 => {
            let rounds = completions_ms.len().div_ceil(available_cpus()).max(1) as f64;
            parallel_ms.min(fastest * rounds)
        }
        _ => parallel_ms,
    }
}

/// The server-side time of one `/cpu/spawn-blocking` request.
async fn time_cpu_request(
    client: &reqwest::Client,
    target: &str,
    iterations: u64,
) -> anyhow::Result<f64> {
    let url = format!("{target}/cpu/spawn-blocking?iterations={iterations}");
    let response = client.get(&url).send().await?.error_for_status()?;
    let body: serde_json::Value = response.json().await?;
    body["elapsed_ms"]
        .as_f64()
        .context("the CPU endpoint answered without elapsed_ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_yardstick_follows_a_machine_that_got_faster_but_never_slower() {
        let solo = 288.0;
        // Faster now than at calibration: the stalling pair is judged against its own speed
        // (times the rounds the cores need for two requests: 1 on two or more cores).
        let rounds = 2usize.div_ceil(available_cpus()) as f64;
        let stalled = [163.0, 327.0];
        let faster = yardstick_ms(Lesson::Cpu, solo, &stalled);
        assert!((faster - solo.min(163.0 * rounds)).abs() < 1e-9, "{faster}");
        if rounds == 1.0 {
            assert!(327.0 / faster >= report::SERIALISED_AT);
        }
        // Slower now: the calibrated yardstick stays.
        assert_eq!(yardstick_ms(Lesson::Cpu, solo, &[400.0, 410.0]), solo);
        // A parallel pair is still parallel against its own speed.
        let parallel = [170.0, 175.0];
        assert!(175.0 / yardstick_ms(Lesson::Cpu, solo, &parallel) < report::SERIALISED_AT);
        // Other lessons are timed by the requested duration, exactly.
        assert_eq!(yardstick_ms(Lesson::Sleep, 300.0, &[150.0, 300.0]), 300.0);
    }
}
