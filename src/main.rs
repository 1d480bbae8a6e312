use std::time::{Duration, Instant};

use clap::Parser;

use stallscope::cli::{Cli, Command};

use stallscope::telemetry::logging::{self, TracingOptions};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let serve = match &cli.command {
        None => Some(&cli.serve),
        Some(Command::Serve(args)) => Some(&**args),
        _ => None,
    };
    let console = serve.is_some_and(|args| args.telemetry.console);
    if console && let Err(err) = logging::check_console_bind() {
        eprintln!("stallscope: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let tracing = logging::init(&TracingOptions {
        default_service_name: match cli.command {
            Some(Command::Upstream(_)) => "stallscope-upstream",
            _ => "stallscope",
        },
        console,
        default_log_filter: match cli.command {
            // The experiment prints a table; stall warnings would only interleave with it.
            Some(Command::Experiment(_)) => "error",
            _ => "info",
        },
        // `serve` starts the slow upstream in-process unless it is given one.
        upstream_thread: serve
            .filter(|args| args.upstream.upstream_url.is_none())
            .map(|_| stallscope::upstream::THREAD_NAME),
    });
    // Spans still queued are flushed for up to this long (serve: what its deadline leaves).
    let mut flush_until = Instant::now() + Duration::from_secs(5);
    let result = match (&cli.command, serve) {
        (_, Some(args)) => stallscope::server::run_foreground(args).and_then(|stopped| {
            flush_until = stopped.flush_until;
            match stopped.abandoned {
                0 => Ok(()),
                n => Err(anyhow::anyhow!(
                    "requests still in flight at the shutdown deadline: {n} (named in the log above)"
                )),
            }
        }),
        (Some(Command::Experiment(args)), _) => stallscope::cli::run_experiment(args),
        (Some(Command::Upstream(args)), _) => run_upstream(args.bind),
        (Some(Command::Serve(_)) | None, None) => Ok(()),
    };
    tracing.shutdown(flush_until);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stallscope: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `stallscope upstream`: the slow upstream alone, until SIGINT/SIGTERM.
fn run_upstream(bind: std::net::SocketAddr) -> anyhow::Result<()> {
    let upstream = stallscope::upstream::start_in_background(bind)?;
    tracing::info!(addr = %upstream.addr(), "slow upstream serving GET /slow?ms=N");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stallscope::shutdown::wait_for_signal());
    drop(upstream);
    Ok(())
}
