//! Admission control: what keeps the service answering while its own stall demos run, and
//! while a client asks for more than it can serve.
//!
//! - Each lesson's stalling variants get `--stall-demo-cap` slots, counted twice over. At the
//!   front door ([`Admission::gate`]): a connection whose first request is a stall demo takes
//!   one while it is open. This is the count that matters: such a request holds a worker, so
//!   the ones behind it wait unread, where no handler can count them; the door sees them
//!   arrive. In the handler ([`StallDemoSlot`], taken by the `Chosen` extractor): requests
//!   running, which catches stall demos sent later on a kept-alive connection. Past either,
//!   a 503 with `Retry-After`, at once. The experiment's `workers + 1` requests fit; fifty
//!   ten-second blocking sleeps do not.
//! - All routes together take `--max-in-flight` requests at once; past it a 503 at once rather
//!   than a queue (a queue in front of stalled workers only grows). The telemetry's route
//!   layer keeps it: it already lists every request in flight, so the cap is one comparison
//!   under a lock it takes anyway (`Settings::max_in_flight`); tower's concurrency limit and
//!   load-shed on every route cost more (docs/benchmarks.md, 2026-11-30, night).
//! - Routes that wait on a dependency and are not lessons (users, login, docs) get
//!   `--request-timeout-ms` (504): nothing there waits on purpose, so a request that takes
//!   that long is stuck.
//!
//! None of this can keep a worker free while the demos hold them: probes and `/metrics` stay
//! answerable because the front door serves them on its own thread ([`super::is_probe_path`]).

use std::sync::Arc;
use std::time::Duration;

use axum::BoxError;
use axum::error_handling::HandleErrorLayer;
use axum::extract::MatchedPath;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::timeout::TimeoutLayer;

use super::LESSONS;
use crate::config::LimitArgs;
use crate::error::AppError;
use crate::telemetry::front_door::Gate;
use crate::telemetry::metric_names::{REFUSED_IN_FLIGHT_CAP, REQUESTS_REFUSED};

/// Requests of each lesson's stalling variants running now.
pub const STALL_DEMOS_RUNNING: &str = "stallscope_stall_demos_running";
/// `--stall-demo-cap`, per lesson.
pub const STALL_DEMO_CAP: &str = "stallscope_stall_demo_cap";
/// `--max-in-flight`.
pub const IN_FLIGHT_CAP: &str = "stallscope_in_flight_cap";

/// Every `reason` of [`REQUESTS_REFUSED`].
pub const REFUSED_STALL_DEMOS_OFF: &str = "stall_demos_off";
pub const REFUSED_STALL_DEMO_CAP: &str = "stall_demo_cap";
pub const REFUSED_TIMED_OUT: &str = "timed_out";

/// The service's admission state, shared by every request.
pub struct Admission {
    stall_demo_cap: u32,
    /// One semaphore per lesson, in [`LESSONS`] order: requests running.
    running: Vec<Arc<Semaphore>>,
    /// The same at the front door: connections that opened with a stall demo.
    at_the_door: Vec<Arc<Semaphore>>,
    request_timeout: Duration,
}

impl Admission {
    pub fn new(limits: &LimitArgs) -> Self {
        let cap = limits.stall_demo_cap;
        describe(limits);
        let per_lesson = || {
            LESSONS
                .iter()
                .map(|_| Arc::new(Semaphore::new(cap as usize)))
                .collect()
        };
        Self {
            stall_demo_cap: cap,
            running: per_lesson(),
            at_the_door: per_lesson(),
            request_timeout: Duration::from_millis(limits.request_timeout_ms),
        }
    }

    /// One of `lesson`'s stall-demo slots, held until the returned slot is dropped; a 503 at
    /// once when all are taken.
    pub fn stall_demo_slot(&self, lesson: &'static str) -> Result<StallDemoSlot, AppError> {
        let slots = LESSONS
            .iter()
            .position(|l| l.name == lesson)
            .and_then(|i| self.running.get(i));
        let Some(slots) = slots else {
            return Err(AppError::Internal(format!(
                "no stall-demo slots for `{lesson}`"
            )));
        };
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => {
                metrics::gauge!(STALL_DEMOS_RUNNING, "lesson" => lesson).increment(1.0);
                Ok(StallDemoSlot {
                    lesson,
                    _permit: permit,
                })
            }
            Err(_) => {
                refused(REFUSED_STALL_DEMO_CAP);
                Err(AppError::StallDemosBusy {
                    lesson,
                    cap: self.stall_demo_cap,
                })
            }
        }
    }

    /// The front door's count of stall demos (see the module's docs); refusals are answered
    /// on the door's thread by the same problem the handler would give.
    pub fn gate(&self) -> Gate {
        let cap = self.stall_demo_cap;
        Gate {
            classify: stall_demo_lesson,
            slots: self.at_the_door.clone(),
            refused: axum::Router::new()
                .fallback(move |uri: axum::http::Uri| refused_at_the_door(uri, cap)),
        }
    }

    /// `--request-timeout-ms` as a layer for a handler, answering 504 past it.
    pub fn timed_layer(&self) -> TimedLayer {
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(answer as Answer))
            .layer(TimeoutLayer::new(self.request_timeout))
    }
}

/// The stack [`Admission::timed_layer`] builds.
pub type TimedLayer = ServiceBuilder<
    Stack<TimeoutLayer, Stack<HandleErrorLayer<Answer, (Option<MatchedPath>,)>, Identity>>,
>;

/// How a timeout becomes a problem response. A plain function, so the layer's type can be
/// named (the problem names the flag; `/metrics` has the timeouts' count).
pub type Answer = fn(Option<MatchedPath>, BoxError) -> std::future::Ready<AppError>;

fn answer(route: Option<MatchedPath>, err: BoxError) -> std::future::Ready<AppError> {
    std::future::ready(if err.is::<tower::timeout::error::Elapsed>() {
        refused(REFUSED_TIMED_OUT);
        tracing::warn!(
            http.route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            "request timed out"
        );
        AppError::TimedOut
    } else {
        AppError::Internal(format!("admission failed: {err}"))
    })
}

fn refused(reason: &'static str) {
    metrics::counter!(REQUESTS_REFUSED, "reason" => reason).increment(1);
}

/// The index in [`LESSONS`] of the lesson whose stalling variant `path` asks for, if any.
fn stall_demo_lesson(path: &str) -> Option<usize> {
    LESSONS.iter().position(|lesson| {
        lesson.routes.iter().any(|route| {
            let mut given = path.split('/');
            let mut stalls = false;
            let matched = route
                .split('/')
                .all(|template| match (template, given.next()) {
                    ("{variant}", Some(variant)) => {
                        stalls = lesson.stalls(variant);
                        true
                    }
                    ("{id}", Some(id)) => !id.is_empty(),
                    (literal, Some(segment)) => literal == segment,
                    (_, None) => false,
                });
            matched && stalls && given.next().is_none()
        })
    })
}

async fn refused_at_the_door(uri: axum::http::Uri, cap: u32) -> AppError {
    let lesson = stall_demo_lesson(uri.path()).and_then(|i| LESSONS.get(i));
    refused(REFUSED_STALL_DEMO_CAP);
    AppError::StallDemosBusy {
        lesson: lesson.map_or("", |l| l.name),
        cap,
    }
}

/// Holds one of a lesson's stall-demo slots while its request runs.
pub struct StallDemoSlot {
    lesson: &'static str,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StallDemoSlot {
    fn drop(&mut self) {
        metrics::gauge!(STALL_DEMOS_RUNNING, "lesson" => self.lesson).decrement(1.0);
    }
}

/// Descriptions, the caps as gauges, and every series at zero from the first scrape (so an
/// alert's `rate()` sees the first refusal).
fn describe(limits: &LimitArgs) {
    metrics::describe_counter!(
        REQUESTS_REFUSED,
        "Requests answered 503/504/403 by admission control, by reason"
    );
    metrics::describe_gauge!(
        STALL_DEMOS_RUNNING,
        "Requests of a lesson's stalling variants running now"
    );
    metrics::describe_gauge!(
        STALL_DEMO_CAP,
        "Requests of a lesson's stalling variants allowed at once (--stall-demo-cap)"
    );
    metrics::describe_gauge!(
        IN_FLIGHT_CAP,
        "Requests allowed in flight at once, all routes (--max-in-flight)"
    );
    for reason in [
        REFUSED_STALL_DEMOS_OFF,
        REFUSED_STALL_DEMO_CAP,
        REFUSED_IN_FLIGHT_CAP,
        REFUSED_TIMED_OUT,
    ] {
        metrics::counter!(REQUESTS_REFUSED, "reason" => reason).increment(0);
    }
    for lesson in LESSONS {
        metrics::gauge!(STALL_DEMOS_RUNNING, "lesson" => lesson.name).increment(0.0);
        metrics::gauge!(STALL_DEMO_CAP, "lesson" => lesson.name)
            .set(f64::from(limits.stall_demo_cap));
    }
    metrics::gauge!(IN_FLIGHT_CAP).set(f64::from(limits.max_in_flight));
}

/// Counts a stalling variant refused by `--no-stall-demos`.
pub fn count_stall_demos_off() {
    refused(REFUSED_STALL_DEMOS_OFF);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lessons_stall_demo_slots_are_shared_by_its_stalling_variants_only() {
        let admission = Admission::new(&LimitArgs {
            stall_demo_cap: 2,
            ..LimitArgs::default()
        });
        let first = admission.stall_demo_slot("sleep").expect("a slot");
        let second = admission.stall_demo_slot("sleep").expect("a slot");
        assert!(matches!(
            admission.stall_demo_slot("sleep"),
            Err(AppError::StallDemosBusy {
                lesson: "sleep",
                cap: 2
            })
        ));
        // Another lesson has slots of its own.
        let cpu = admission
            .stall_demo_slot("cpu")
            .expect("the cpu lesson's own slot");
        drop(first);
        let third = admission.stall_demo_slot("sleep").expect("a freed slot");
        drop((second, third, cpu));
    }

    #[test]
    fn the_door_knows_a_stall_demo_by_its_path() {
        let lesson = |path| stall_demo_lesson(path).map(|i| LESSONS[i].name);
        assert_eq!(lesson("/sleep/blocking"), Some("sleep"));
        assert_eq!(lesson("/cpu/inline"), Some("cpu"));
        assert_eq!(lesson("/upstream/blocking"), Some("upstream"));
        assert_eq!(lesson("/db/blocking/sleep"), Some("db"));
        assert_eq!(lesson("/db/blocking/users/7"), Some("db"));
        for calm in [
            "/sleep/async",
            "/sleep/spawn-blocking",
            "/cpu/rayon",
            "/db/async/users/7",
            "/sleep/blocking/more",
            "/sleep",
            "/hello",
            "/",
        ] {
            assert_eq!(lesson(calm), None, "{calm}");
        }
    }
}
