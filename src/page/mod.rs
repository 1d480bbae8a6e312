//! The live page at `/`: watch a stall happen, get named and hurt its neighbours, and run each
//! lesson's experiment from a button — in a browser, with nothing but the service running.
//!
//! Everything the page needs is embedded in the binary (HTML, CSS, script: no CDN). Its data
//! comes from the telemetry crate's live feed (`/live/stream`, Server-Sent Events). The server
//! hands connections for these paths to the front door's own thread and runtime
//! ([`crate::telemetry::front_door`], [`is_page_path`]), so the page keeps updating while the
//! lessons hold every service worker; the same routes on the service router answer the rare
//! request that arrives on a connection the service already had.

mod snippets;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde::Serialize;

use crate::error::AppError;
use crate::experiment::{self, Lesson, LessonResult, Plan};
use crate::routes::{LESSONS, params::QueryParams};
use crate::state::AppState;

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// Whether a request for `path` is the page's: the front door serves those connections on its
/// own runtime.
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path.starts_with("/live/")
}

/// The page's routes (unobserved: they are not lessons, and mostly run off the service
/// runtime).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/live/page.js", get(script))
        .route("/live/page.css", get(style))
        .route("/live/stream", get(stream))
        .route("/live/lessons/{lesson}/run", post(run_lesson))
}

/// What the page's script is given: the lessons (from the registry and the lessons doc) and
/// the service's shape.
#[derive(Serialize)]
struct PageConfig {
    workers: usize,
    stall_threshold_ms: f64,
    trace_url: Option<String>,
    default_ms: u64,
    default_concurrency: usize,
    lessons: Vec<LessonConfig>,
}

#[derive(Serialize)]
struct LessonConfig {
    name: &'static str,
    route: &'static str,
    variants: Vec<VariantConfig>,
}

#[derive(Serialize)]
struct VariantConfig {
    name: &'static str,
    stalls: bool,
    /// Refused by this service (`--no-stall-demos`).
    disabled: bool,
    teaches: &'static str,
    rust: Option<String>,
    fastapi: Option<String>,
}

fn workers(state: &AppState) -> usize {
    state
        .telemetry
        .runtime()
        .map_or(1, |runtime| runtime.metrics().num_workers())
}

async fn index(State(state): State<AppState>) -> Html<String> {
    let workers = workers(&state);
    let config = PageConfig {
        workers,
        stall_threshold_ms: state.telemetry.watchdog.threshold().as_secs_f64() * 1000.0,
        trace_url: state.page.trace_url.get().cloned(),
        default_ms: DEFAULT_MS,
        default_concurrency: workers + 1,
        lessons: LESSONS
            .iter()
            .map(|lesson| LessonConfig {
                name: lesson.name,
                route: lesson.routes[0],
                variants: lesson
                    .variants
                    .iter()
                    .map(|variant| {
                        let (rust, fastapi) = snippets::of(lesson.name, variant.name);
                        VariantConfig {
                            name: variant.name,
                            stalls: variant.stalls,
                            disabled: variant.stalls && state.limits.no_stall_demos,
                            teaches: variant.teaches,
                            rust,
                            fastapi,
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    // `<` escaped so no text in the config can close the script element it sits in.
    let json = serde_json::to_string(&config)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    Html(PAGE_HTML.replace("{{CONFIG}}", &json))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
}

async fn stream(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::live::stream(state.telemetry.clone(), state.shutdown.clone())
}

/// `stallscope experiment`'s default work per request.
const DEFAULT_MS: u64 = 1_000;
/// Concurrency a page may ask for: enough to show any worker count here, few enough that a
/// click cannot flood the service.
const MAX_CONCURRENCY: u64 = 64;

/// The service's one experiment slot, taken until dropped: two runs at once would each see
/// the other's stalls.
struct ExperimentSlot(AppState);

impl ExperimentSlot {
    fn take(state: &AppState) -> Option<Self> {
        let running = &state.page.experiment_running;
        (!running.swap(true, Ordering::AcqRel)).then(|| Self(state.clone()))
    }
}

impl Drop for ExperimentSlot {
    fn drop(&mut self) {
        self.0
            .page
            .experiment_running
            .store(false, Ordering::Release);
    }
}

#[derive(Serialize)]
struct LessonRun {
    workers: usize,
    concurrency: u16,
    ms: u64,
    #[serde(flatten)]
    result: LessonResult,
}

/// `POST /live/lessons/{lesson}/run?ms=&concurrency=`: the experiment of one lesson, as
/// `stallscope experiment --lesson` runs it, with each request's timeline and the stalls the
/// watchdog saw.
async fn run_lesson(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<LessonRun>, AppError> {
    let lesson = Lesson::from_name(&name).ok_or_else(|| {
        AppError::NotFound(format!(
            "no lesson `{}`: the lessons are {}",
            name.chars().take(40).collect::<String>(),
            LESSONS
                .iter()
                .map(|l| l.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let workers = workers(&state);
    let params = QueryParams::parse(query.as_deref());
    let max_ms = state.limits.ms().max;
    let ms = params.optional_u64("ms", 1, max_ms.clamp(1, 10_000), DEFAULT_MS.min(max_ms))?;
    let concurrency = params.optional_u64("concurrency", 1, MAX_CONCURRENCY, workers as u64 + 1)?;
    let concurrency = u16::try_from(concurrency).unwrap_or(u16::MAX);
    let target = state.page.own_url.get().cloned().ok_or_else(|| {
        AppError::Unavailable("the service does not know its own address yet".into())
    })?;
    let slot = ExperimentSlot::take(&state).ok_or_else(|| {
        AppError::Conflict(
            "another experiment is running: wait for its result, then run this one".into(),
        )
    })?;
    let watchdog = state.telemetry.watchdog.clone();
    let (done, result) = tokio::sync::oneshot::channel();
    // On a thread and runtime of its own, as `stallscope experiment` runs its client: the
    // stopwatch must not stop when the lesson stalls the service.
    let spawned = std::thread::Builder::new()
        .name("lesson-experiment".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let client = reqwest::Client::builder()
                            .pool_max_idle_per_host(0)
                            .timeout(Duration::from_secs(120))
                            .build()?;
                        experiment::wait_until_ready(&client, &target).await?;
                        let cpu = match lesson {
                            Lesson::Cpu => {
                                Some(experiment::calibrate_cpu(&client, &target, ms).await?)
                            }
                            _ => None,
                        };
                        let plan = Plan {
                            concurrency,
                            ms,
                            cpu,
                        };
                        let hidden = indicatif::ProgressBar::hidden();
                        Ok(experiment::run_lesson(
                            &client,
                            &target,
                            lesson,
                            &plan,
                            &hidden,
                            Some(&watchdog),
                        )
                        .await)
                    })
                });
            // Free before answering, so the page's next click finds the slot open.
            drop(slot);
            let _ = done.send(outcome);
        });
    // A thread that never started dropped its closure, and the slot with it.
    if let Err(err) = spawned {
        return Err(AppError::Internal(format!(
            "could not start the experiment: {err}"
        )));
    }
    let outcome = result
        .await
        .map_err(|_| AppError::Internal("the experiment ended without a result".into()))?;
    let result =
        outcome.map_err(|err| AppError::Unavailable(format!("the experiment failed: {err:#}")))?;
    Ok(Json(LessonRun {
        workers,
        concurrency,
        ms,
        result,
    }))
}
