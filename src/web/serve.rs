//! The accept loop: HTTP/1.1 connections served by hyper with the timeouts
//! and buffer sizes a public login service needs, which `axum::serve` does
//! not expose: a header read timeout (slowloris: a client that trickles its
//! headers is cut off), small per-connection buffers, and an accept loop
//! that survives running out of file descriptors instead of spinning.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a stopping server waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `service` on `listener` until `stopped` turns true, then drain.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    header_read_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        // hyper's minimum; our requests are small (bodies ≤ 64 KiB are read
        // through it in pieces).
        .max_buf_size(8 * 1024);
    // Every connection task holds a sender; when all are dropped the
    // receiver sees the end: that is "all connections done".
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE/ENFILE and friends: wait for sockets to close
                // rather than spinning on accept.
                metrics::counter!("qrlogin_accept_errors_total").increment(1);
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = Connection {
            service: RefCell::new(service.clone()),
            peer,
        };
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (alive, mut stopped) = (alive.clone(), stopped.clone());
        tokio::spawn(async move {
            let _alive = alive;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopped.wait_for(|s| *s) => {}
            }
            // Finish the request in flight, take no more on this connection.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    drop(alive);
    // Upgraded sockets have left hyper; they close themselves with 1012 on
    // the same signal. Requests in flight get a moment to finish.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, all_done.recv()).await;
}

/// One connection's service: the stack cloned once for the connection, not
/// once a request (`oneshot` on a clone is what hyper's `&self` calls would
/// otherwise take). HTTP/1.1 asks for one answer at a time and the stack's
/// services are always ready, so `call` goes straight in: a layer that
/// tracks readiness (a concurrency limit, a buffer) would need `poll_ready`
/// called here first.
struct Connection<S> {
    service: RefCell<S>,
    peer: SocketAddr,
}

impl<S> hyper::service::Service<Request<Incoming>> for Connection<S>
where
    S: tower::Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = S::Future;

    fn call(&self, mut request: Request<Incoming>) -> S::Future {
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(self.peer));
        self.service.borrow_mut().call(request)
    }
}
