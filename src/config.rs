//! One configuration, read once from flags and `STALLSCOPE_*` environment variables.
//!
//! Every flag has an environment variable of the same name (`--max-sleep-ms` is
//! `STALLSCOPE_MAX_SLEEP_MS`); a flag wins over its variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser};

/// How the hand-built Tokio runtime is shaped.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Runtime worker threads. `1` behaves like a single event loop (uvicorn's default).
    /// Defaults to the number of CPUs.
    #[arg(long, env = "STALLSCOPE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Upper bound of the blocking pool (`spawn_blocking`, `block_in_place` hand-offs).
    #[arg(long, env = "STALLSCOPE_MAX_BLOCKING_THREADS", default_value_t = 512,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_blocking_threads: u16,

    /// Smallest bucket edge of the runtime's poll-time histogram, in microseconds.
    #[arg(long, env = "STALLSCOPE_POLL_HISTOGRAM_MIN_US", default_value_t = 10)]
    pub poll_histogram_min_us: u64,

    /// Largest bucket edge of the runtime's poll-time histogram, in milliseconds; slower polls
    /// land in the last bucket.
    #[arg(
        long,
        env = "STALLSCOPE_POLL_HISTOGRAM_MAX_MS",
        default_value_t = 10_000
    )]
    pub poll_histogram_max_ms: u64,
}

impl RuntimeArgs {
    /// Worker count after applying the default.
    pub fn worker_threads(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(available_cpus)
    }
}

/// The CPUs this process may use (at least 1).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

/// Caps that keep any single request bounded, whatever the client asks for.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest `ms` accepted by `/sleep/*` and `/upstream/*`.
    #[arg(long, env = "STALLSCOPE_MAX_SLEEP_MS", default_value_t = DEFAULT_MAX_SLEEP_MS)]
    pub max_sleep_ms: u64,

    /// Largest `iterations` accepted by `/cpu/*` (SHA-256 rounds; the default keeps one
    /// request under ~10 s on a current x86-64 core with SHA extensions: ~20 M rounds/s).
    #[arg(
        long,
        env = "STALLSCOPE_MAX_CPU_ITERATIONS",
        default_value_t = DEFAULT_MAX_CPU_ITERATIONS
    )]
    pub max_cpu_iterations: u64,

    /// Refuse the variants that stall a worker (`/sleep/blocking`, `/cpu/inline`, …: those the
    /// lessons mark as stalling) with a 403, for a service others can reach.
    #[arg(long, env = "STALLSCOPE_NO_STALL_DEMOS", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_stall_demos: bool,

    /// Requests of one lesson's stalling variants served at once; more get a 503 with
    /// `Retry-After`. Room for the experiment's `workers + 1`, far from a flood.
    #[arg(long, env = "STALLSCOPE_STALL_DEMO_CAP", default_value_t = DEFAULT_STALL_DEMO_CAP,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub stall_demo_cap: u32,

    /// Requests served at once, all routes together; more get a 503 with `Retry-After`.
    #[arg(long, env = "STALLSCOPE_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    /// How long a request to a route that is not a lesson (users, login, health, docs) may
    /// take before it is answered 504. Lessons wait on purpose and have their own bounds.
    #[arg(long, env = "STALLSCOPE_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,

    /// `POST /login` attempts per username per minute (ten seconds' worth at once, at least
    /// three); more get a 429 with `Retry-After`.
    #[arg(long, env = "STALLSCOPE_LOGIN_LIMIT_PER_USERNAME", default_value_t = crate::db::login_limits::PER_USERNAME_PER_MINUTE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_limit_per_username: u32,

    /// `POST /login` attempts per client address per minute, the same way.
    #[arg(long, env = "STALLSCOPE_LOGIN_LIMIT_PER_CLIENT", default_value_t = crate::db::login_limits::PER_CLIENT_PER_MINUTE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_limit_per_client: u32,
}

/// `--max-sleep-ms`'s default.
pub const DEFAULT_MAX_SLEEP_MS: u64 = 10_000;
/// `--max-cpu-iterations`'s default.
pub const DEFAULT_MAX_CPU_ITERATIONS: u64 = 200_000_000;
/// `--stall-demo-cap`'s default.
pub const DEFAULT_STALL_DEMO_CAP: u32 = 16;
/// `--max-in-flight`'s default: far above what a few file descriptors' worth of connections
/// ask of an async route, low enough to bound memory.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16_384;
/// `--request-timeout-ms`'s default.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;

impl Default for LimitArgs {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            max_sleep_ms: DEFAULT_MAX_SLEEP_MS,
            max_cpu_iterations: DEFAULT_MAX_CPU_ITERATIONS,
            no_stall_demos: false,
            stall_demo_cap: DEFAULT_STALL_DEMO_CAP,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            login_limit_per_username: crate::db::login_limits::PER_USERNAME_PER_MINUTE,
            login_limit_per_client: crate::db::login_limits::PER_CLIENT_PER_MINUTE,
        }
    }
}

/// The range a lesson's query parameter accepts, and its value when a request leaves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u64,
    pub max: u64,
    pub default: u64,
}

/// `ms` when a request leaves it out: the tutorial's one-second `time.sleep(1)`.
pub const DEFAULT_MS: u64 = 1_000;

/// `iterations` when a request leaves it out: about one second of hashing on a current
/// x86-64 core (~20 M SHA-256 rounds/s), so the CPU lesson reads like the sleep lesson.
pub const DEFAULT_CPU_ITERATIONS: u64 = 20_000_000;

impl LimitArgs {
    /// `ms` of the waiting lessons (sleep, upstream, db): 0 to `--max-sleep-ms`.
    pub fn ms(&self) -> Bounds {
        Bounds {
            min: 0,
            max: self.max_sleep_ms,
            default: DEFAULT_MS.min(self.max_sleep_ms),
        }
    }

    /// `iterations` of the CPU lesson: 1 to `--max-cpu-iterations`.
    pub fn cpu_iterations(&self) -> Bounds {
        Bounds {
            min: 1,
            max: self.max_cpu_iterations.max(1),
            default: DEFAULT_CPU_ITERATIONS.clamp(1, self.max_cpu_iterations.max(1)),
        }
    }
}

/// Where the `/upstream/*` lessons send their requests.
#[derive(Debug, Clone, Args)]
pub struct UpstreamClientArgs {
    /// Base URL of the slow upstream (it must serve `GET /slow?ms=N`). When unset, stallscope
    /// starts its own on a separate OS thread with its own runtime, on an ephemeral port.
    #[arg(long, env = "STALLSCOPE_UPSTREAM_URL")]
    pub upstream_url: Option<String>,

    /// Give up on an upstream call after this many milliseconds (answered with 504).
    #[arg(long, env = "STALLSCOPE_UPSTREAM_TIMEOUT_MS", default_value_t = 15_000)]
    pub upstream_timeout_ms: u64,
}

impl UpstreamClientArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STALLSCOPE_BIND", default_value = "127.0.0.1:3000")]
    pub bind: SocketAddr,

    /// After SIGINT/SIGTERM the process is gone within this: in-flight requests get all but
    /// a fifth of it (at most 5 s), which is left for flushing queued spans. Requests still
    /// unanswered then are named in the log and the exit status is 1.
    #[arg(long, env = "STALLSCOPE_SHUTDOWN_DEADLINE_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub shutdown_deadline_ms: u64,

    /// A trace UI's address for one trace, with `{trace_id}` where the id goes (Jaeger:
    /// `http://localhost:16686/trace/{trace_id}`): the live page links each stall to its
    /// culprit's trace. Only useful with an OTLP exporter.
    #[arg(long, env = "STALLSCOPE_TRACE_URL")]
    pub trace_url: Option<String>,

    /// Client connections open at once; more are closed as they arrive. Default: the
    /// open-file limit less 128, so the process never runs out of descriptors for the
    /// connections it has.
    #[arg(long, env = "STALLSCOPE_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// A request's head (request line and headers) must arrive within this, and a kept-alive
    /// connection is closed after this long idle.
    #[arg(long, env = "STALLSCOPE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub header_read_timeout_ms: u64,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub upstream: UpstreamClientArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

impl ServeArgs {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The settings `stallscope serve` would use with no flags (environment variables still
    /// apply). The experiment and the tests start from these and change what they need.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Defaults::parse_from(["stallscope"]).serve
    }
}

/// Thresholds and intervals of the stall detectors and the metrics endpoint.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// A poll that holds a worker longer than this is a stall: the watchdog reports it while
    /// it is still running.
    #[arg(long, env = "STALLSCOPE_STALL_THRESHOLD_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_threshold_ms: u64,

    /// How often the watchdog thread looks at the workers.
    #[arg(long, env = "STALLSCOPE_WATCHDOG_SCAN_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watchdog_scan_ms: u64,

    /// Polls longer than this count as slow in the per-variant task monitors. tokio-metrics
    /// defaults to 50 µs, which flags ordinary JSON encoding; 1 ms is long enough that a slow
    /// poll always means real blocking or heavy CPU, and short enough to catch it early.
    #[arg(long, env = "STALLSCOPE_SLOW_POLL_THRESHOLD_US", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub slow_poll_threshold_us: u64,

    /// The executor-lag canary's tick.
    #[arg(long, env = "STALLSCOPE_CANARY_INTERVAL_MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub canary_interval_ms: u64,

    /// Turn off the route layer, the task-poll hooks, the canary and the watchdog: the bare
    /// router, for the overhead benchmark in `bench/` only.
    #[arg(long, env = "STALLSCOPE_NO_INSTRUMENTATION", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_instrumentation: bool,

    /// Serve tokio-console's gRPC API (bind: `TOKIO_CONSOLE_BIND`, default 127.0.0.1:6669).
    /// Off by default: it records every poll, wake and spawn.
    #[arg(long, env = "STALLSCOPE_CONSOLE", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub console: bool,

    /// Also serve `/metrics` on this address, from a thread and runtime of its own, so it can
    /// be scraped while the service runtime is stalled.
    #[arg(long, env = "STALLSCOPE_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
}

impl TelemetryArgs {
    /// The telemetry crate's settings from these flags; what only the app knows (its routes'
    /// variants, its histograms) is added by `stallscope::telemetry_settings`.
    pub fn settings(&self) -> stallscope_telemetry::Settings {
        stallscope_telemetry::Settings {
            stall_threshold: Duration::from_millis(self.stall_threshold_ms),
            watchdog_scan_interval: Duration::from_millis(self.watchdog_scan_ms),
            slow_poll_threshold: Duration::from_micros(self.slow_poll_threshold_us),
            canary_interval: Duration::from_millis(self.canary_interval_ms),
            enabled: !self.no_instrumentation,
            ..stallscope_telemetry::Settings::default()
        }
    }
}

/// Where the database lessons and `/users` keep their data.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (the embedded default: a file, no server), `postgres://…` or
    /// `mysql://…`. The backend follows from the scheme; migrations run at start-up.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://stallscope.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Connections per pool. There are two pools: the async one (diesel-async, used by the
    /// `async` and `raw` variants and `/users`) and the sync one (diesel, used by the
    /// `blocking` and `spawn-blocking` variants); each gets this many.
    #[arg(long, env = "STALLSCOPE_DB_POOL_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// Give up waiting for a pooled connection (or for a new one to connect) after this many
    /// milliseconds; the request is answered 503.
    #[arg(long, env = "STALLSCOPE_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,

    /// Give up on an async query, checkout included, after this many milliseconds (plus the
    /// wait a database lesson asks for); the request is answered 503. A frozen database then
    /// costs requests this long, not forever. The blocking variants' sync queries cannot be
    /// cut short: they hold their thread until the database answers (their lesson).
    #[arg(long, env = "STALLSCOPE_DB_QUERY_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_query_timeout_ms: u64,
}

impl DatabaseArgs {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.db_query_timeout_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Address for the slow upstream to listen on.
    #[arg(
        long,
        env = "STALLSCOPE_UPSTREAM_BIND",
        default_value = "127.0.0.1:3001"
    )]
    pub bind: SocketAddr,
}
