//! One configuration, read once from flags and `STALLSCOPE_*` environment variables.
//!
//! Every flag has an environment variable of the same name (`--max-sleep-ms` is
//! `STALLSCOPE_MAX_SLEEP_MS`); a flag wins over its variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stallscope",
    version,
    about = "Make executor stalls visible: sync and CPU-heavy code inside async handlers, measured",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// `stallscope` with no subcommand is `stallscope serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(ServeArgs),
    /// Run the tutorial's concurrent-request lesson and print who got serialised.
    Experiment(crate::experiment::ExperimentArgs),
    /// Run only the slow upstream that the `/upstream/*` lessons call.
    Upstream(UpstreamArgs),
}

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
    #[arg(long, env = "STALLSCOPE_MAX_SLEEP_MS", default_value_t = 10_000)]
    pub max_sleep_ms: u64,

    /// Largest `iterations` accepted by `/cpu/*` (SHA-256 rounds; the default keeps one
    /// request under ~10 s on a current x86-64 core with SHA extensions: ~20 M rounds/s).
    #[arg(
        long,
        env = "STALLSCOPE_MAX_CPU_ITERATIONS",
        default_value_t = 200_000_000
    )]
    pub max_cpu_iterations: u64,
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

    /// After SIGINT/SIGTERM, wait this long for in-flight requests before exiting anyway.
    #[arg(long, env = "STALLSCOPE_SHUTDOWN_GRACE_MS", default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub upstream: UpstreamClientArgs,
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
