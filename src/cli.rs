//! The command line: `stallscope [serve] | experiment | upstream`, each subcommand's flags
//! defined where they are used (`config`, `experiment`).

use clap::{Parser, Subcommand};

use crate::config::{ServeArgs, UpstreamArgs};

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
