//! Starting and stopping the service: in the foreground (`stallscope serve`) or on a thread
//! of its own (the experiment and the tests), always on the hand-built runtime.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::state::AppState;
use crate::upstream::BackgroundUpstream;

/// Everything the service needs before its runtime starts.
struct Prepared {
    state: AppState,
    shutdown: CancellationToken,
    /// Keeps the in-process upstream alive as long as the service.
    upstream: Option<BackgroundUpstream>,
}

fn prepare(args: &ServeArgs) -> anyhow::Result<Prepared> {
    let (upstream, base_url) = match &args.upstream.upstream_url {
        Some(url) => (None, url.clone()),
        None => {
            let upstream = BackgroundUpstream::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                .context("could not start the in-process slow upstream")?;
            let url = upstream.base_url();
            tracing::info!(%url, "started the in-process slow upstream on its own thread");
            (Some(upstream), url)
        }
    };
    let shutdown = CancellationToken::new();
    let state = AppState::new(
        args.limits.clone(),
        base_url,
        args.upstream.timeout(),
        shutdown.clone(),
    )?;
    Ok(Prepared {
        state,
        shutdown,
        upstream,
    })
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish for up to
/// `grace` before returning anyway.
async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let app = crate::app(state);
    let drained =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = drained => result,
        () = grace_over => {
            tracing::warn!(grace_ms = grace.as_millis(), "in-flight requests outlived the shutdown grace period; exiting anyway");
            Ok(())
        }
    }
}

/// `stallscope serve`: runs until SIGINT or SIGTERM, drains, and returns.
pub fn run_foreground(args: &ServeArgs) -> anyhow::Result<()> {
    let prepared = prepare(args)?;
    let runtime = crate::runtime::build(&args.runtime).context("could not build the runtime")?;
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("could not listen on {}", args.bind))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            workers = args.runtime.worker_threads(),
            "stallscope is serving; open /docs for the API"
        );
        let shutdown = prepared.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining in-flight requests");
            shutdown.cancel();
        });
        serve(listener, prepared.state, prepared.shutdown, grace)
            .await
            .context("the server failed")
    });
    drop(prepared.upstream);
    // Blocking-pool threads still sleeping for a stalled request must not hold up exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The service running on a thread of its own, with its own runtime, until dropped.
///
/// The experiment and the integration tests use this so that their HTTP client runs on a
/// *different* runtime: a stalled service must not also stall the stopwatch.
pub struct RunningService {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _upstream: Option<BackgroundUpstream>,
}

impl RunningService {
    /// Builds the runtime, binds `args.bind` (use port 0 for an ephemeral port) and serves.
    pub fn start(args: &ServeArgs) -> anyhow::Result<Self> {
        let prepared = prepare(args)?;
        let runtime =
            crate::runtime::build(&args.runtime).context("could not build the runtime")?;
        let listener = std::net::TcpListener::bind(args.bind)
            .with_context(|| format!("could not listen on {}", args.bind))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let grace = Duration::from_millis(args.shutdown_grace_ms);
        let (state, shutdown) = (prepared.state, prepared.shutdown.clone());
        let thread = std::thread::Builder::new()
            .name("stallscope-service".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    serve(listener, state, shutdown, grace).await
                });
                if let Err(err) = result {
                    tracing::error!(%err, "the in-process service failed");
                }
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            shutdown: prepared.shutdown,
            thread: Some(thread),
            _upstream: prepared.upstream,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Begins graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
