//! The command line: `stallscope [serve] | experiment | upstream`, each subcommand's flags
//! defined where they are used (`config`, `experiment`).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{ServeArgs, UpstreamArgs};
use crate::experiment::ExperimentArgs;
use crate::server::RunningService;

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
    Serve(Box<ServeArgs>),
    /// Run the tutorial's concurrent-request lesson and print who got serialised.
    Experiment(crate::experiment::ExperimentArgs),
    /// Run only the slow upstream that the `/upstream/*` lessons call.
    Upstream(UpstreamArgs),
}

/// Runs the experiment and prints the result; the entry point of the subcommand.
pub fn run_experiment(args: &ExperimentArgs) -> anyhow::Result<()> {
    let in_process = match &args.url {
        Some(_) => None,
        None => Some(start_in_process(args)?),
    };
    let target = match (&args.url, &in_process) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(service)) => service.base_url(),
        (None, None) => bail!("no target"),
    };
    // The client gets a runtime of its own on this thread: the service's runtime may be
    // stalled on purpose, and the stopwatch must keep running.
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not build the client runtime")?;
    let report = client_runtime.block_on(crate::experiment::measure(args, target))?;
    drop(in_process);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::experiment::render_table(&report));
    }
    Ok(())
}

fn start_in_process(args: &ExperimentArgs) -> anyhow::Result<RunningService> {
    let mut serve = ServeArgs::defaults();
    serve.bind = "127.0.0.1:0".parse()?;
    serve.shutdown_deadline_ms = 1_000;
    serve.runtime.workers = Some(args.workers);
    serve.limits.max_cpu_iterations = u64::MAX;
    serve.upstream.upstream_url = None;
    serve.upstream.upstream_timeout_ms = 30_000;
    serve.telemetry.metrics_bind = None;
    RunningService::start(&serve)
}
