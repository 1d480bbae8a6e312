//! Serving the connections the front door hands over, with the timeouts `axum::serve` does not
//! set: axum gives hyper no timer, so a client that sends half a request keeps its connection
//! (and a file descriptor) forever. This is axum's serve-with-hyper example with hyper's
//! `header_read_timeout`, which also closes a kept-alive connection that stays idle that long
//! (hyper starts the same clock whenever it waits for a request's head).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::metric_names::CONNECTIONS_TIMED_OUT;

/// Serves every connection `listener` yields with `app` until `shutdown` is cancelled, then
/// waits for the connections' requests in flight to be answered (the caller bounds how long).
/// Each request carries `ConnectInfo<SocketAddr>` of its peer, as `axum::serve` gives it.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    L: Listener<Addr = SocketAddr>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = connection.await
                && timed_out(&*err)
            {
                metrics::counter!(CONNECTIONS_TIMED_OUT).increment(1);
            }
        });
    }
    graceful.shutdown().await;
}

/// Whether hyper closed the connection because a request's head took too long to arrive.
fn timed_out(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}
