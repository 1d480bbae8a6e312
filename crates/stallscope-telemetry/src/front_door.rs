//! One listening port, two runtimes: connections that ask for a few paths (a live page and
//! its stream) are served on a thread and runtime of their own, which stalled service workers
//! cannot hold up; every other connection goes to the service runtime's server
//! ([`crate::serve::serve`]).
//!
//! Why not one router: a task on a stalled runtime is not polled, whatever it serves, and a
//! socket registered with that runtime's I/O driver is not read. A page meant to show a stall
//! *while it happens* must be served, socket and all, elsewhere. Why not a second port: the
//! page would need its address, a CORS rule and a second port mapping wherever it runs.
//!
//! The front thread accepts, peeks at each connection's first request line without reading
//! it, and hands the socket over: to its own server for a front path, to the service
//! ([`HandedConnections`], an [`axum::serve::Listener`]) otherwise. A connection is placed
//! once, by its first request, so front responses say `Connection: close`: a browser then
//! never sends a service request down a front connection (which would run a handler on the
//! front thread).
//!
//! The door also keeps connections bounded: at most [`DoorRules::max_connections`] open at
//! once (more are closed as they arrive, so the process never runs out of file descriptors
//! for the ones it has), and a connection whose first request line has not arrived within
//! [`DoorRules::header_read_timeout`] is closed; after that, hyper's own header-read timeout
//! ([`crate::serve`]) covers the rest of each request's head and idle kept-alive connections.
//!
//! The door can also count requests the service could not count itself ([`Gate`]): a request
//! that will stall a worker waits, unread, for a free worker, so a cap counted in the handler
//! never sees the queue behind it. At the door, a connection whose first request is such a
//! request takes one of its kind's slots for as long as it stays open ([`DoorStream`]), or is
//! answered by the gate's `refused` router on the front thread.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::metric_names::{
    CONNECTION_CAP, CONNECTIONS_OPEN, CONNECTIONS_REFUSED, CONNECTIONS_TIMED_OUT,
};

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

/// What the door serves itself, and how it keeps connections bounded.
pub struct DoorRules {
    /// Serves the connections whose first request path `is_front` accepts, on the door's thread.
    pub front: Router,
    pub is_front: fn(&str) -> bool,
    /// Requests counted at the door, if any.
    pub gate: Option<Gate>,
    /// Connections open at once, all kinds; more are closed as they arrive.
    pub max_connections: usize,
    /// How long a request's head (request line and headers) may take to arrive, and how long
    /// a kept-alive connection may stay idle.
    pub header_read_timeout: Duration,
}

/// Leaves room below the open-file limit for everything else the process opens (database
/// connections, log files, the blocking pool's work) when sizing the connection cap.
pub const RESERVED_FILES: u64 = 128;

/// A connection cap that keeps the process below its open-file limit: the soft limit less
/// [`RESERVED_FILES`] (at least 16).
pub fn connections_within_file_limit() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX)
}

/// Requests counted at the door: `classify` names the slots a connection's first request
/// path takes (an index into `slots`), if any. A connection that finds them all taken is
/// served by `refused` on the front thread (which should answer 503 with `Retry-After`).
pub struct Gate {
    pub classify: fn(&str) -> Option<usize>,
    pub slots: Vec<Arc<Semaphore>>,
    pub refused: Router,
}

/// A [`Gate`] at work on the front thread, its refusals' server running.
#[derive(Clone)]
struct OpenGate {
    classify: fn(&str) -> Option<usize>,
    slots: Arc<Vec<Arc<Semaphore>>>,
    to_refused: mpsc::Sender<Handed>,
}

impl OpenGate {
    /// The slot a connection whose first request is for `path` takes (`None`: not counted
    /// here), or where it goes when its slots are all taken.
    fn admit(
        &self,
        path: Option<&str>,
    ) -> Result<Option<OwnedSemaphorePermit>, &mpsc::Sender<Handed>> {
        let Some(slots) = path.and_then(self.classify).and_then(|i| self.slots.get(i)) else {
            return Ok(None);
        };
        Arc::clone(slots)
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| &self.to_refused)
    }
}

/// A connection handed to a server, holding its place under the connection cap and the gate
/// slot its first request took (if any) until it closes. Reads and writes go straight to the
/// socket.
pub struct DoorStream {
    stream: TcpStream,
    _held: Held,
}

/// What a connection holds at the door while it is open.
struct Held {
    _connection: OpenConnection,
    _slot: Option<OwnedSemaphorePermit>,
}

/// One place under the connection cap, counted in `stallscope_connections_open`.
struct OpenConnection(#[allow(dead_code)] OwnedSemaphorePermit);

impl OpenConnection {
    fn take(places: &Arc<Semaphore>) -> Option<Self> {
        let place = Arc::clone(places).try_acquire_owned().ok()?;
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        Some(Self(place))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

impl AsyncRead for DoorStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DoorStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A placed connection on its way to a server: the std socket (registered with the runtime
/// that serves it), its peer, and what it holds at the door.
type Handed = (std::net::TcpStream, SocketAddr, Held);

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

/// Connections the front door has placed, as an `axum::serve::Listener`: the service's (give
/// it to [`crate::serve::serve`] on the service runtime instead of a `TcpListener`; each
/// request then carries `ConnectInfo<SocketAddr>`), and, inside the front thread, the front's
/// own.
pub struct HandedConnections {
    handed: mpsc::Receiver<Handed>,
    local_addr: SocketAddr,
}

/// Accepts on `listener` from a new thread called `name`; requests whose path `rules.is_front`
/// accepts (on a connection's first request) are served by `rules.front` there, all others go
/// to the returned [`HandedConnections`] (serve them with [`crate::serve::serve`]), after
/// taking their slot at the gate if it has one for them. Both stop when `shutdown` is
/// cancelled: the front thread stops accepting and drains its own connections (`front` must
/// end long-lived responses on `shutdown` too).
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use stallscope_telemetry::{Settings, Telemetry, front_door, live, serve};
/// use tokio_util::sync::CancellationToken;
///
/// let telemetry = Telemetry::new(Settings::default());
/// let shutdown = CancellationToken::new();
/// // The live feed on the front door's runtime: it keeps streaming while the app stalls.
/// let front = live::router(telemetry.clone(), shutdown.clone());
/// let listener = std::net::TcpListener::bind("127.0.0.1:3000")?;
/// let rules = front_door::DoorRules {
///     front,
///     is_front: |path| path.starts_with("/live/"),
///     gate: None,
///     max_connections: front_door::connections_within_file_limit(),
///     header_read_timeout: Duration::from_secs(10),
/// };
/// let (connections, _door) = front_door::open("front-door", listener, rules, shutdown.clone())?;
/// let app = Router::new().route("/slow", get(|| async { std::thread::sleep(std::time::Duration::from_secs(1)) }));
/// tokio::runtime::Runtime::new()?.block_on(async {
///     telemetry.start()?;
///     serve::serve(connections, app, Duration::from_secs(10), shutdown).await;
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open(
    name: &str,
    listener: std::net::TcpListener,
    rules: DoorRules,
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
                    Ok(listener) => {
                        accept_loop(listener, rules, to_service, stop).await;
                    }
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
    rules: DoorRules,
    to_service: mpsc::Sender<Handed>,
    shutdown: CancellationToken,
) {
    let DoorRules {
        front,
        is_front,
        gate,
        max_connections,
        header_read_timeout,
    } = rules;
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // The front's own servers: the page's routes, and the gate's refusals.
    let serve_here = |router: Router| {
        let (to, handed) = mpsc::channel::<Handed>(64);
        let router = router.layer(axum::middleware::map_response(close_after));
        let server = tokio::spawn(crate::serve::serve(
            HandedConnections { handed, local_addr },
            router,
            header_read_timeout,
            shutdown.clone(),
        ));
        (to, server)
    };
    let (to_front, front_server) = serve_here(front);
    let (gate, refused) = match gate {
        Some(Gate {
            classify,
            slots,
            refused,
        }) => {
            let (to_refused, refused_server) = serve_here(refused);
            let gate = OpenGate {
                classify,
                slots: Arc::new(slots),
                to_refused,
            };
            (Some(gate), Some(refused_server))
        }
        None => (None, None),
    };
    metrics::gauge!(CONNECTION_CAP).set(max_connections as f64);
    let places = Arc::new(Semaphore::new(max_connections));
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
        let Some(connection) = OpenConnection::take(&places) else {
            // Closed at once: a client at the cap learns it now, not after a timeout.
            metrics::counter!(CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let (to_front, to_service) = (to_front.clone(), to_service.clone());
        let gate = gate.clone();
        tokio::spawn(async move {
            let (placement, path) = place(&stream, is_front, header_read_timeout).await;
            if placement == Placement::Undecided {
                // No request line within the header-read timeout: a slow or silent client.
                metrics::counter!(CONNECTIONS_TIMED_OUT).increment(1);
                return;
            }
            let Ok(stream) = stream.into_std() else {
                return;
            };
            let held = |slot| Held {
                _connection: connection,
                _slot: slot,
            };
            // A closed channel means the server is stopping: the connection just closes.
            let _ = match placement {
                Placement::Front => to_front.send((stream, peer, held(None))).await,
                _ => match gate.as_ref().map_or(Ok(None), |g| g.admit(path.as_deref())) {
                    Ok(slot) => to_service.send((stream, peer, held(slot))).await,
                    Err(to_refused) => to_refused.send((stream, peer, held(None))).await,
                },
            };
        });
    }
    drop(listener);
    let _ = front_server.await;
    if let Some(refused) = refused {
        let _ = refused.await;
    }
}

/// Peeks at `stream` until its first request line says where it belongs, or `within` passes
/// ([`Placement::Undecided`]); with the path when the line was read.
async fn place(
    stream: &TcpStream,
    is_front: fn(&str) -> bool,
    within: Duration,
) -> (Placement, Option<String>) {
    let mut head = [0u8; PEEK_BYTES];
    let give_up = tokio::time::Instant::now() + within;
    loop {
        let peeked = match tokio::time::timeout_at(give_up, stream.peek(&mut head)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return (Placement::Undecided, None),
        };
        let path = request_path(&head[..peeked]);
        match placement(&head[..peeked], is_front) {
            Placement::Undecided if peeked < PEEK_BYTES => {
                // Part of a request line: peeking again would return at once with the same
                // bytes, so give the rest a moment to arrive.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tokio::time::Instant::now() >= give_up {
                    return (Placement::Undecided, None);
                }
            }
            Placement::Undecided => return (Placement::Service, None),
            decided => return (decided, path.map(str::to_owned)),
        }
    }
}

/// The path of a complete `METHOD SP target SP` request line, without its query.
fn request_path(head: &[u8]) -> Option<&str> {
    let method_end = head.iter().position(|&b| b == b' ')?;
    let target = &head[method_end + 1..];
    let target_end = target.iter().position(|&b| b == b' ' || b == b'\r')?;
    let target = std::str::from_utf8(&target[..target_end]).ok()?;
    target.split('?').next()
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
    if !target.iter().any(|&b| b == b' ' || b == b'\r') {
        return Placement::Undecided;
    }
    let Some(path) = request_path(head) else {
        return Placement::Service;
    };
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
    type Io = DoorStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (DoorStream, SocketAddr) {
        loop {
            let Some((stream, peer, held)) = self.handed.recv().await else {
                // The front door stopped: no more connections, ever. The server stops on its
                // own shutdown signal, never on its listener.
                return std::future::pending().await;
            };
            // Registered with the runtime this runs on: the service's, or the front's.
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    return (
                        DoorStream {
                            stream,
                            _held: held,
                        },
                        peer,
                    );
                }
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
