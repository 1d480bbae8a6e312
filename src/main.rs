use clap::Parser;

use stallscope::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    stallscope::telemetry::init_logging();
    let result = match &cli.command {
        None => stallscope::server::run_foreground(&cli.serve),
        Some(Command::Serve(args)) => stallscope::server::run_foreground(args),
        Some(Command::Experiment(args)) => stallscope::experiment::run(args),
        Some(Command::Upstream(args)) => run_upstream(args.bind),
    };
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
    runtime.block_on(stallscope::server::wait_for_signal());
    drop(upstream);
    Ok(())
}
