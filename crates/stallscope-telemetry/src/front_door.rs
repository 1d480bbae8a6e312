//! One listening port, two runtimes: connections that ask for a few paths (a live page and
//! its stream) are served on a thread and runtime of their own, which stalled service workers
//! cannot hold up; every other connection goes to the service runtime's `axum::serve`.
//!
//! Why not one router: a task on a stalled runtime is not polled, whatever it serves, and a
//! socket registered with that runtime's I/O driver is not read. A page meant to show a stall
//! *while it happens* must be served, socket and all, elsewhere. Why not a second port: the
//! page would need its address, a CORS rule and a second port mapping wherever it runs.
//!
//! The front thread accepts, peeks at each connection's first request line without reading
//! it, and hands the socket over: to its own `axum::serve` for a front path, to the service
//! ([`HandedConnections`], an [`axum::serve::Listener`]) otherwise. A connection is placed
//! once, by its first request, so front responses say `Connection: close`: a browser then
//! never sends a service request down a front connection (which would run a handler on the
//! front thread). A connection that sends nothing for [`PEEK_FOR`] goes to the service, which
//! applies its own timeouts.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a new connection may take to send its request line before it is handed to the
/// service undecided.
pub const PEEK_FOR: Duration = Duration::from_secs(10);
/// How much of the request line is peeked at: method, path, the start of the version.
const PEEK_BYTES: usize = 512;

/// Where a connection's first request line says it belongs.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    Front,
    Service,
    /// The request line has not all arrived yet.
    Undecided,
}

/// The front thread; dropping it waits for it to finish (after `shutdown` is cancelled).
pub struct FrontDoor {
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl FrontDoor {
    /// Tasks alive on the front runtime: the accept loop, its server, and one per open front
    /// connection. A closed page must bring this back down.
    pub fn alive_tasks(&self) -> usize {
        self.runtime.metrics().num_alive_tasks()
    }
}

/// Connections the front door has placed, as an `axum::serve` listener: the service's (give
/// it to `axum::serve` on the service runtime instead of a `TcpListener`; wrap it in
/// `.tap_io(|_| ())` to keep `ConnectInfo<SocketAddr>`, which axum provides for tapped
/// listeners), and, inside the front thread, the front's own.
pub struct HandedConnections {
    handed: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local_addr: SocketAddr,
}

/// Accepts on `listener` from a new thread called `name`; requests whose path `is_front`
/// accepts (on a connection's first request) are served by `front` there, all others go to
/// the returned [`HandedConnections`]. Both stop when `shutdown` is cancelled: the front
/// thread stops accepting and drains its own connections (`front` must end long-lived
/// responses on `shutdown` too).
///
/// ```no_run
/// use axum::{Router, routing::get, serve::ListenerExt};
/// use stallscope_telemetry::{Settings, Telemetry, front_door, live};
/// use tokio_util::sync::CancellationToken;
///
/// let telemetry = Telemetry::new(Settings::default());
/// let shutdown = CancellationToken::new();
/// // The live feed on the front door's runtime: it keeps streaming while the app stalls.
/// let front = live::router(telemetry.clone(), shutdown.clone());
/// let listener = std::net::TcpListener::bind("127.0.0.1:3000")?;
/// let (connections, _door) = front_door::open(
///     "front-door", listener, front, |path| path.starts_with("/live/"), shutdown.clone(),
/// )?;
/// let app = Router::new().route("/slow", get(|| async { std::thread::sleep(std::time::Duration::from_secs(1)) }));
/// tokio::runtime::Runtime::new()?.block_on(async {
///     telemetry.start()?;
///     axum::serve(connections.tap_io(|_: &mut tokio::net::TcpStream| {}), app)
///         .with_graceful_shutdown(shutdown.cancelled_owned())
///         .await
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open(
    name: &str,
    listener: std::net::TcpListener,
    front: Router,
    is_front: fn(&str) -> bool,
    shutdown: CancellationToken,
) -> io::Result<(HandedConnections, FrontDoor)> {
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (to_service, handed) = mpsc::channel(256);
    let stop = shutdown.clone();
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, front, is_front, to_service, stop).await,
                    Err(err) => tracing::error!(%err, "the front door could not listen"),
                }
            });
        })?;
    Ok((
        HandedConnections { handed, local_addr },
        FrontDoor {
            thread: Some(thread),
            shutdown,
            runtime: handle,
        },
    ))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    front: Router,
    is_front: fn(&str) -> bool,
    to_service: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let (to_front, front_handed) = mpsc::channel(64);
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let front = front.layer(axum::middleware::map_response(close_after));
    let front_server = tokio::spawn(
        axum::serve(
            HandedConnections {
                handed: front_handed,
                local_addr,
            },
            front,
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait for some to close, as
                    // axum's own accept loop does, rather than spinning.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let (to_front, to_service) = (to_front.clone(), to_service.clone());
        tokio::spawn(async move {
            let placement = place(&stream, is_front).await;
            let Ok(stream) = stream.into_std() else {
                return;
            };
            // A closed channel means the server is stopping: the connection just closes.
            let _ = match placement {
                Placement::Front => to_front.send((stream, peer)).await,
                Placement::Service | Placement::Undecided => to_service.send((stream, peer)).await,
            };
        });
    }
    drop(listener);
    let _ = front_server.await;
}

/// Peeks at `stream` until its first request line says where it belongs, or [`PEEK_FOR`]
/// passes.
async fn place(stream: &TcpStream, is_front: fn(&str) -> bool) -> Placement {
    let mut head = [0u8; PEEK_BYTES];
    let give_up = tokio::time::Instant::now() + PEEK_FOR;
    loop {
        let peeked = match tokio::time::timeout_at(give_up, stream.peek(&mut head)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Placement::Undecided,
        };
        match placement(&head[..peeked], is_front) {
            Placement::Undecided if peeked < PEEK_BYTES => {
                // Part of a request line: peeking again would return at once with the same
                // bytes, so give the rest a moment to arrive.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tokio::time::Instant::now() >= give_up {
                    return Placement::Undecided;
                }
            }
            Placement::Undecided => return Placement::Service,
            decided => return decided,
        }
    }
}

/// `METHOD SP target SP …`: the target's path decides.
fn placement(head: &[u8], is_front: fn(&str) -> bool) -> Placement {
    let Some(method_end) = head.iter().position(|&b| b == b' ') else {
        return if head.len() < 16 && head.iter().all(u8::is_ascii_uppercase) {
            Placement::Undecided
        } else {
            Placement::Service
        };
    };
    let target = &head[method_end + 1..];
    let Some(target_end) = target.iter().position(|&b| b == b' ' || b == b'\r') else {
        return Placement::Undecided;
    };
    let Ok(target) = std::str::from_utf8(&target[..target_end]) else {
        return Placement::Service;
    };
    let path = target.split('?').next().unwrap_or(target);
    if is_front(path) {
        Placement::Front
    } else {
        Placement::Service
    }
}

/// One request per front connection: see the module's docs.
async fn close_after(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

impl axum::serve::Listener for HandedConnections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.handed.recv().await else {
                // The front door stopped: no more connections, ever. `axum::serve` stops
                // on its own shutdown signal, never on its listener.
                return std::future::pending().await;
            };
            // Registered with the runtime this runs on: the service's, or the front's.
            match TcpStream::from_std(stream) {
                Ok(stream) => return (stream, peer),
                Err(err) => tracing::warn!(%err, "a handed-over connection was lost"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(path: &str) -> bool {
        path == "/" || path.starts_with("/live/")
    }

    #[test]
    fn the_first_request_line_places_a_connection() {
        for (head, expected) in [
            ("GET / HTTP/1.1\r\n", Placement::Front),
            ("GET /live/stream HTTP/1.1\r\nHost: x\r\n", Placement::Front),
            (
                "POST /live/lessons/sleep?x=1 HTTP/1.1\r\n",
                Placement::Front,
            ),
            ("GET /sleep/blocking?ms=1 HTTP/1.1\r\n", Placement::Service),
            ("GET /docs/ HTTP/1.1\r\n", Placement::Service),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Placement::Service),
            ("GE", Placement::Undecided),
            ("GET /live/str", Placement::Undecided),
            ("\x16\x03\x01\x02\x00", Placement::Service),
        ] {
            assert_eq!(placement(head.as_bytes(), live), expected, "{head:?}");
        }
    }
}
