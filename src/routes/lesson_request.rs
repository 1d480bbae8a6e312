//! What every lesson handler starts with, as extractors: the `{variant}` segment parsed into
//! the lesson's variants, and the bounded amount of work asked for. A handler's own code is
//! then only its variants' difference.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::admission::{self, StallDemoSlot};
use super::params::QueryParams;
use super::report::{PendingReport, WorkReport};
use crate::error::AppError;
use crate::state::AppState;

/// A lesson's variant enum, as `lesson_variants!` declares it.
pub trait LessonVariant: std::str::FromStr<Err = AppError> + Copy + Send + 'static {
    /// The lesson (the first path segment): `sleep`, `cpu`, `upstream`, `db`.
    const LESSON: &'static str;
    /// The variant's URL name.
    fn name(self) -> &'static str;
    /// What it teaches, in one line.
    fn teaches(self) -> &'static str;
    /// Whether it holds a worker while it works (the registry's `stalls`).
    fn stalls(self) -> bool;

    /// Starts this request's report: the clock, and the worker polling the handler.
    fn report(self, requested: serde_json::Value) -> PendingReport {
        WorkReport::begin(Self::LESSON, self.name(), self.teaches(), requested)
    }
}

/// The route's `{variant}` segment as the lesson's variant; an unknown one is a 404 listing
/// the valid ones. A stalling one is a 403 when the service refuses them (`--no-stall-demos`)
/// and otherwise takes one of its lesson's slots (`--stall-demo-cap`, a 503 when all are
/// taken), held until the handler finishes: bind the extractor whole (`chosen: Chosen<V>`)
/// or with `Chosen { variant, .. }` in the handler's arguments, never drop it early.
pub struct Chosen<V> {
    pub variant: V,
    /// `Some` for a stalling variant.
    pub slot: Option<StallDemoSlot>,
}

impl<V: LessonVariant> FromRequestParts<AppState> for Chosen<V> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|err| AppError::Internal(format!("path parameters unreadable: {err}")))?;
        let given = params
            .iter()
            .find_map(|(name, value)| (name == "variant").then_some(value))
            .ok_or_else(|| AppError::Internal("this route has no `{variant}` segment".into()))?;
        let variant: V = given.parse()?;
        if !variant.stalls() {
            return Ok(Chosen {
                variant,
                slot: None,
            });
        }
        if state.limits.no_stall_demos {
            admission::count_stall_demos_off();
            return Err(AppError::StallDemosOff {
                path: parts.uri.path().chars().take(200).collect(),
            });
        }
        let slot = state.admission.stall_demo_slot(V::LESSON)?;
        Ok(Chosen {
            variant,
            slot: Some(slot),
        })
    }
}

/// An extractor of one bounded whole-number query parameter, its bounds from the limits.
macro_rules! bounded_query_param {
    ($(#[doc = $doc:literal])* $name:ident = $param:literal within $bounds:ident) => {
        $(#[doc = $doc])*
        pub struct $name(pub u64);

        impl FromRequestParts<AppState> for $name {
            type Rejection = AppError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
                QueryParams::parse(parts.uri.query())
                    .within($param, state.limits.$bounds())
                    .map($name)
            }
        }
    };
}

bounded_query_param! {
    /// `?ms=`: how long the waiting lessons wait, within `--max-sleep-ms` (default one second).
    WaitMs = "ms" within ms
}

bounded_query_param! {
    /// `?iterations=`: the CPU lesson's SHA-256 rounds, within `--max-cpu-iterations`.
    Iterations = "iterations" within cpu_iterations
}
