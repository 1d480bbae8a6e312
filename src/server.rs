//! Starting and stopping the service: in the foreground (`stallscope serve`) or on a thread
//! of its own (the experiment and the tests), always on the hand-built runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::shutdown::{Deadline, Event, Stopped};
use crate::state::AppState;
use crate::telemetry::Telemetry;
use crate::telemetry::background::BackgroundServer;
use crate::telemetry::front_door::{self, FrontDoor, HandedConnections};

/// Everything the service needs before its runtime starts.
struct Prepared {
    state: AppState,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Runtime,
    /// Keep the in-process upstream and the admin listener alive as long as the service.
    helpers: Vec<BackgroundServer>,
}

fn prepare(args: &ServeArgs) -> anyhow::Result<Prepared> {
    let mut helpers = Vec::new();
    let base_url = match &args.upstream.upstream_url {
        Some(url) => url.clone(),
        None => {
            let upstream =
                crate::upstream::start_in_background(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .context("could not start the in-process slow upstream")?;
            let url = upstream.base_url();
            tracing::info!(%url, "started the in-process slow upstream on its own thread");
            helpers.push(upstream);
            url
        }
    };
    let telemetry = Telemetry::new(crate::telemetry_settings(&args.telemetry, &args.limits));
    if let Some(bind) = args.telemetry.metrics_bind {
        let admin = crate::telemetry::metrics_endpoint::serve_in_background(&telemetry, bind)
            .with_context(|| format!("could not serve /metrics on {bind}"))?;
        let url = browsable_url(admin.addr());
        tracing::info!("serving {url}/metrics from its own thread");
        helpers.push(admin);
    }
    let runtime = crate::runtime::build(&args.runtime, telemetry.watchdog())
        .context("could not build the runtime")?;
    let shutdown = CancellationToken::new();
    // Migrations run here, before the runtime starts, on this (ordinary) thread.
    let db = crate::db::Database::open(&args.database).context("could not open the database")?;
    tracing::info!(
        backend = db.backend().as_str(),
        "database ready: migrations applied"
    );
    let state = AppState::new(
        args.limits.clone(),
        base_url,
        args.upstream.timeout(),
        shutdown.clone(),
        telemetry,
        db,
    )?;
    Ok(Prepared {
        state,
        shutdown,
        runtime,
        helpers,
    })
}

/// Accepts on `listener` through the front door: the live page's connections, probes' and
/// scrapes' are served on the door's own thread and runtime, every other one goes to the
/// returned connections for [`serve`]. Tells the page the service's own address and the trace UI's.
fn open_front_door(
    listener: std::net::TcpListener,
    state: &AppState,
    args: &ServeArgs,
) -> anyhow::Result<(HandedConnections, FrontDoor)> {
    let own_url = browsable_url(listener.local_addr()?);
    let _ = state.page.own_url.set(own_url);
    if let Some(trace_url) = &args.trace_url {
        let _ = state.page.trace_url.set(trace_url.clone());
    }
    let front = crate::page::routes()
        .merge(crate::routes::probes())
        .with_state(state.clone());
    let rules = front_door::DoorRules {
        front,
        is_front: is_front_path,
        gate: Some(state.admission.gate()),
        max_connections: args
            .max_connections
            .map_or_else(front_door::connections_within_file_limit, |cap| {
                cap as usize
            }),
        header_read_timeout: args.header_read_timeout(),
    };
    front_door::open("stallscope-front", listener, rules, state.shutdown.clone())
        .context("could not start the front door")
}

/// What the front door serves itself: the live page, and `/healthz`, `/readyz`, `/metrics`,
/// which must answer while lessons hold every service worker.
fn is_front_path(path: &str) -> bool {
    crate::page::is_page_path(path) || crate::routes::is_probe_path(path)
}

/// Serves until `shutdown` is cancelled and every in-flight request is answered. How long
/// that may take is the caller's to bound: with stalled workers no timer in here would fire.
async fn serve(
    connections: HandedConnections,
    state: AppState,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    state.telemetry.start()?;
    let app = crate::app(state);
    crate::telemetry::serve::serve(connections, app, header_read_timeout, shutdown).await;
    Ok(())
}

/// `stallscope serve`: runs until SIGINT or SIGTERM, then drains within the shutdown
/// deadline ([`crate::shutdown`]) and says by when the caller must have flushed spans.
pub fn run_foreground(args: &ServeArgs) -> anyhow::Result<Stopped> {
    let Prepared {
        state,
        shutdown,
        runtime,
        helpers,
    } = prepare(args)?;
    let deadline = Deadline::new(Duration::from_millis(args.shutdown_deadline_ms));
    let in_flight = Arc::clone(&state.telemetry.in_flight);
    let listener = std::net::TcpListener::bind(args.bind)
        .with_context(|| format!("could not listen on {}", args.bind))?;
    let base = browsable_url(listener.local_addr()?);
    let (connections, front_door) = open_front_door(listener, &state, args)?;
    let header_read_timeout = args.header_read_timeout();
    tracing::info!(
        workers = args.runtime.worker_threads(),
        "stallscope is serving: open {base}/ to watch stalls live and run the lessons; API docs at {base}/docs, metrics at {base}/metrics"
    );
    let (events, received) = std::sync::mpsc::channel();
    crate::shutdown::spawn_signal_thread(
        shutdown.clone(),
        events.clone(),
        deadline,
        Arc::clone(&in_flight),
    )?;
    // The accept loop runs on a thread of its own, as `block_on` runs a future, not as a
    // task on a worker: spawned on a worker, it sat behind a stalled poll there, and a second
    // worker parked away from the I/O driver never took it over.
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("stallscope-accept".into())
        .spawn(move || {
            let served = handle
                .block_on(serve(connections, state, header_read_timeout, shutdown))
                .context("the server failed");
            let _ = events.send(Event::Served(served));
        })?;
    // This thread keeps the time: the runtime's own timers stop when its workers stall.
    let signalled = match received.recv() {
        Ok(Event::Signal(at)) => at,
        Ok(Event::Served(served)) => {
            served?;
            anyhow::bail!("the server stopped without a shutdown signal");
        }
        Err(_) => anyhow::bail!("the server and the signal thread are both gone"),
    };
    let drain_until = deadline.drain_until(signalled);
    let drained = loop {
        match received.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
            Ok(Event::Served(served)) => break Some(served),
            Ok(Event::Signal(_)) => {}
            Err(_) => break None,
        }
    };
    let stopped = match drained {
        Some(served) => {
            served?;
            drop(front_door);
            drop(helpers);
            // Blocking-pool threads still sleeping for a stalled request must not hold up exit.
            runtime.shutdown_timeout(Duration::from_millis(500));
            Stopped {
                flush_until: deadline.exit_by(signalled),
                abandoned: 0,
            }
        }
        None => {
            let abandoned = crate::shutdown::name_abandoned(
                &in_flight,
                "in-flight requests outlived the drain time",
            );
            // Stalled workers cannot be joined, nor can a helper serving a slow request:
            // the process exits around them.
            std::mem::forget(helpers);
            std::mem::forget(front_door);
            runtime.shutdown_background();
            Stopped {
                flush_until: deadline.exit_by(signalled),
                abandoned,
            }
        }
    };
    Ok(stopped)
}

/// `http://HOST:PORT` for a listening address, as a person would paste it into a browser: a
/// wildcard address (`0.0.0.0`, `[::]`) is reachable on loopback, which a browser can open.
pub fn browsable_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The service running on a thread of its own, with its own runtime, until dropped.
///
/// The experiment and the integration tests use this so that their HTTP client runs on a
/// *different* runtime: a stalled service must not also stall the stopwatch.
pub struct RunningService {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    front_door: Option<FrontDoor>,
    _helpers: Vec<BackgroundServer>,
}

impl RunningService {
    /// Builds the runtime, binds `args.bind` (use port 0 for an ephemeral port) and serves.
    pub fn start(args: &ServeArgs) -> anyhow::Result<Self> {
        let Prepared {
            state,
            shutdown,
            runtime,
            helpers,
        } = prepare(args)?;
        let listener = std::net::TcpListener::bind(args.bind)
            .with_context(|| format!("could not listen on {}", args.bind))?;
        let addr = listener.local_addr()?;
        let (connections, front_door) = open_front_door(listener, &state, args)?;
        let drain = Deadline::new(Duration::from_millis(args.shutdown_deadline_ms));
        let header_read_timeout = args.header_read_timeout();
        let service_shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("stallscope-service".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    let served = serve(
                        connections,
                        state,
                        header_read_timeout,
                        service_shutdown.clone(),
                    );
                    // In-process, nothing stalls this runtime for long: its own timer will do.
                    let give_up = async {
                        service_shutdown.cancelled().await;
                        let now = Instant::now();
                        tokio::time::sleep_until(drain.drain_until(now).into()).await;
                    };
                    tokio::select! {
                        served = served => served,
                        () = give_up => {
                            tracing::warn!("in-flight requests outlived the drain time; stopping anyway");
                            Ok(())
                        }
                    }
                });
                if let Err(err) = result {
                    tracing::error!(%err, "the in-process service failed");
                }
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            shutdown,
            thread: Some(thread),
            front_door: Some(front_door),
            _helpers: helpers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tasks alive on the front door's runtime (see [`FrontDoor::alive_tasks`]).
    pub fn front_door_tasks(&self) -> usize {
        self.front_door.as_ref().map_or(0, FrontDoor::alive_tasks)
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
        drop(self.front_door.take());
    }
}

#[cfg(test)]
mod tests {
    use super::browsable_url;

    #[test]
    fn listening_addresses_become_urls_a_browser_opens() {
        for (addr, url) in [
            ("127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("0.0.0.0:3000", "http://127.0.0.1:3000"),
            ("[::]:8080", "http://[::1]:8080"),
            ("[::1]:8080", "http://[::1]:8080"),
            ("192.0.2.7:80", "http://192.0.2.7:80"),
        ] {
            let addr = addr.parse().expect("a socket address");
            assert_eq!(browsable_url(addr), url);
        }
    }
}
