//! The accept loop: HTTP/1.1 connections served by hyper with the timeouts
//! and buffer sizes a public login service needs, which `axum::serve` does
//! not expose: a header read timeout (slowloris: a client that trickles its
//! headers is cut off), small per-connection buffers, and an accept loop
//! that survives running out of file descriptors instead of spinning.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a stopping server waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `router` on `listener` until `stopped` turns true, then drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
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
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
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
