//! The HTTP surface: one module per lesson, plus health and docs.

pub mod account_fields;
pub mod admission;
pub mod cpu;
pub mod db;
pub mod health;
pub mod lesson_request;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod problems;
pub mod report;
pub mod sleep;
pub mod upstream;
pub mod users;
pub mod variant;

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::http::Uri;
use axum::routing::{MethodFilter, MethodRouter};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::AppError;
use crate::state::AppState;
use crate::telemetry::{RouteVariants, Telemetry, route_layer};

/// Route templates of the lessons, as they appear in metrics and spans.
pub const SLEEP_ROUTE: &str = "/sleep/{variant}";
pub const CPU_ROUTE: &str = "/cpu/{variant}";
pub const UPSTREAM_ROUTE: &str = "/upstream/{variant}";
pub const DB_USER_ROUTE: &str = "/db/{variant}/users/{id}";
pub const DB_SLEEP_ROUTE: &str = "/db/{variant}/sleep";

/// A lesson: its name, the routes that take its variants, and the variants.
#[derive(Debug)]
pub struct Lesson {
    pub name: &'static str,
    /// The first is the one the experiment sends its requests to.
    pub routes: &'static [&'static str],
    pub variants: &'static [variant::Variant],
}

impl Lesson {
    /// Whether `variant` of this lesson stalls (unknown names do not).
    pub fn stalls(&self, variant: &str) -> bool {
        self.variants.iter().any(|v| v.name == variant && v.stalls)
    }
}

/// Every lesson, from the variant declarations in its module.
pub const LESSONS: &[Lesson] = &[
    Lesson {
        name: sleep::SleepVariant::LESSON,
        routes: &[SLEEP_ROUTE],
        variants: sleep::SleepVariant::VARIANTS,
    },
    Lesson {
        name: cpu::CpuVariant::LESSON,
        routes: &[CPU_ROUTE],
        variants: cpu::CpuVariant::VARIANTS,
    },
    Lesson {
        name: upstream::UpstreamVariant::LESSON,
        routes: &[UPSTREAM_ROUTE],
        variants: upstream::UpstreamVariant::VARIANTS,
    },
    Lesson {
        name: db::DbVariant::LESSON,
        routes: &[DB_SLEEP_ROUTE, DB_USER_ROUTE],
        variants: db::DbVariant::VARIANTS,
    },
];

/// The lesson called `name`.
pub fn lesson(name: &str) -> Option<&'static Lesson> {
    LESSONS.iter().find(|lesson| lesson.name == name)
}

/// The lesson routes' `{variant}` segments, as the telemetry's bounded `variant` label.
pub fn route_variants() -> RouteVariants {
    LESSONS
        .iter()
        .flat_map(|lesson| lesson.routes.iter().map(move |route| (*route, lesson)))
        .fold(RouteVariants::default(), |variants, (route, lesson)| {
            variants.declare(route, "variant", lesson.variants.iter().map(|v| v.name))
        })
}

/// All routes, with `state` applied, each handler behind admission control and the
/// telemetry route layer.
pub fn router(state: AppState) -> Router {
    let observed = Observed::new(&state);
    let router = Router::new()
        .route("/healthz", observed.get_untimed(health::healthz))
        .route("/readyz", observed.get_untimed(health::readyz))
        .route("/hello", observed.get_untimed(health::hello))
        .route("/metrics", observed.get_untimed(metrics::metrics))
        .route(SLEEP_ROUTE, observed.get_untimed(sleep::handler))
        .route(CPU_ROUTE, observed.get_untimed(cpu::handler))
        .route(UPSTREAM_ROUTE, observed.get_untimed(upstream::handler))
        .route(DB_USER_ROUTE, observed.get_untimed(db::user))
        .route(DB_SLEEP_ROUTE, observed.get_untimed(db::sleep))
        .merge(users::router(&observed))
        .merge(observed.router(
            SwaggerUi::new("/docs").url("/openapi.json", openapi::document(&state.limits)),
        ));
    observed
        .fallbacks(router, not_found, method_not_allowed)
        .with_state(state)
}

/// The paths the front door answers on its own thread when a connection starts with them
/// (see [`crate::server`]): probes and scrapes must answer while the demos hold every worker.
/// The same routes on the service router answer them on connections it already has.
pub fn is_probe_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The probe routes as the front door serves them: without the route layer or admission
/// control (they are not lessons, and a saturated service must still answer them).
pub fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .route("/metrics", axum::routing::get(metrics::metrics))
}

/// How every handler goes into the router: wrapped in the telemetry route layer (which also
/// keeps the in-flight cap), with `--request-timeout-ms` inside it for the routes that wait on
/// a dependency, or as it is under `--no-instrumentation` (the bare router of the overhead
/// benchmark).
///
/// The layers wrap each *handler* (`Handler::layer`), not the router: `Router::layer` boxes
/// every route a second time, a sixth of the instrumentation's cost (docs/benchmarks.md).
#[derive(Clone)]
pub struct Observed {
    telemetry: Option<route_layer::ObserveLayer>,
    timed: admission::TimedLayer,
}

impl Observed {
    pub fn new(state: &AppState) -> Self {
        let telemetry: &Arc<Telemetry> = &state.telemetry;
        Self {
            telemetry: telemetry
                .enabled()
                .then(|| route_layer::ObserveLayer::new(Arc::clone(telemetry))),
            timed: state.admission.timed_layer(),
        }
    }

    /// `handler` for the requests `filter` lets through, within `--request-timeout-ms` (504).
    pub fn on<H, T>(&self, filter: MethodFilter, handler: H) -> MethodRouter<AppState>
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let timed = handler.layer(self.timed.clone());
        match &self.telemetry {
            Some(layer) => axum::routing::on(filter, timed.layer(layer.clone())),
            None => axum::routing::on(filter, timed),
        }
    }

    /// A `GET` handler without a request timeout: the lessons (they wait on purpose, within
    /// their own bounds) and the routes that never wait (`/hello`, probes, `/metrics`), where
    /// a timer per request would be the baseline's largest cost.
    pub fn get_untimed<H: Handler<T, AppState>, T: 'static>(
        &self,
        handler: H,
    ) -> MethodRouter<AppState> {
        match &self.telemetry {
            Some(layer) => axum::routing::get(handler.layer(layer.clone())),
            None => axum::routing::get(handler),
        }
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(&self, handler: H) -> MethodRouter<AppState> {
        self.on(MethodFilter::GET, handler)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(&self, handler: H) -> MethodRouter<AppState> {
        self.on(MethodFilter::POST, handler)
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(&self, handler: H) -> MethodRouter<AppState> {
        self.on(MethodFilter::PATCH, handler)
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        &self,
        handler: H,
    ) -> MethodRouter<AppState> {
        self.on(MethodFilter::DELETE, handler)
    }

    /// A router made elsewhere (the API docs), observed as a whole: its handlers are not ours
    /// to wrap, and it is not on any hot path.
    pub fn router(&self, router: impl Into<Router<AppState>>) -> Router<AppState> {
        let router = router.into().layer(self.timed.clone());
        match &self.telemetry {
            Some(layer) => router.layer(layer.clone()),
            None => router,
        }
    }

    /// `router` with its fallbacks: `not_found` for unknown paths, `method_not_allowed` for
    /// known paths asked with another method.
    pub fn fallbacks<N, NT, M, MT>(
        &self,
        router: Router<AppState>,
        not_found: N,
        method_not_allowed: M,
    ) -> Router<AppState>
    where
        N: Handler<NT, AppState>,
        NT: 'static,
        M: Handler<MT, AppState>,
        MT: 'static,
    {
        match &self.telemetry {
            Some(layer) => router
                .fallback(not_found.layer(layer.clone()))
                .method_not_allowed_fallback(method_not_allowed.layer(layer.clone())),
            None => router
                .fallback(not_found)
                .method_not_allowed_fallback(method_not_allowed),
        }
    }
}

async fn not_found(uri: Uri) -> AppError {
    AppError::RouteNotFound {
        path: uri.path().chars().take(200).collect(),
    }
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
