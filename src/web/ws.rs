//! The browser's WebSocket: authenticated before the upgrade, then one small
//! task per socket that sends the current state and every change until the
//! ticket ends.
//!
//! Cost per waiting browser is what bounds an instance, so a socket holds
//! only tiny buffers, its waiter registration and one timer (the earlier of
//! the next ping and the ticket's expiry).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;
use rand::Rng;
use tokio::time::{Instant, sleep_until};

use super::limits::{Kind, Pass};
use super::view::StateView;
use super::{AppState, ClientIp, TicketPath};
use crate::engine::Error as DomainError;
use crate::engine::Watch;
use crate::error::{ErrorBody, Result};
use crate::hub::Waiter;
use crate::ticket::Ticket;
use crate::token::seal::Opener;

/// The subprotocol we speak; the secret rides in a second one.
pub const PROTOCOL: &str = "qrlogin.v1";
const SECRET_PREFIX: &str = "secret.";
/// Largest client frame: clients send nothing but pongs and closes.
const MAX_CLIENT_MESSAGE: usize = 1024;
/// tungstenite's read chunk, allocated once per socket: clients only send
/// pongs and closes (a few bytes), so a small chunk is plenty; a larger
/// frame is simply read in several chunks. 128 rather than 256: the
/// allocator's own class, and 128 bytes less per waiting browser.
const READ_BUFFER: usize = 128;
/// Frames are queued up to this many bytes before a write: the final state
/// and the close frame after it leave in one write (one syscall, one TCP
/// segment) instead of two. Every `send` still flushes, so nothing waits.
const WRITE_BUFFER: usize = 4 * 1024;

/// The secret offered as `secret.{secret}` in `Sec-WebSocket-Protocol`.
fn offered_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(SECRET_PREFIX))
}

/// Whether `Origin` may open sockets: a listed origin, or our own.
pub fn origin_allowed(app: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        // Not a browser (browsers always send Origin on WebSockets).
        return true;
    };
    let allowed = &app.settings.http.allowed_origins;
    if allowed.iter().any(|a| a == "*") || super::origin_in(allowed, origin) {
        return true;
    }
    // The public URL may carry a path; its origin is what browsers send.
    let ours =
        url::Url::parse(&app.settings.http.public_url()).map(|u| u.origin().ascii_serialization());
    if ours.is_ok_and(|ours| super::origin_in(&[ours], origin)) {
        return true;
    }
    // Same origin as the Host the page was served from.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    allowed.is_empty()
        && origin
            .split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host))
}

/// The WebSocket: offer subprotocols `qrlogin.v1` and `secret.{secret}`;
/// text frames `{"type":"state",…}` follow (see StateView).
#[utoipa::path(get, path = "/api/v1/tickets/{ticket}/ws", tag = "browser",
    params(("ticket" = String, Path),
        ("Sec-WebSocket-Protocol" = String, Header, description = "qrlogin.v1, secret.{secret}")),
    responses((status = 101, description = "upgraded; first frame is the current state"),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = ErrorBody)))]
pub async fn upgrade_ws(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    if !origin_allowed(&app, &headers) {
        if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
            super::note_refused_origin(origin.to_str().unwrap_or("(not text)"));
        }
        return Err(DomainError::Forbidden("this Origin may not open sockets").into());
    }
    let Some(secret) = offered_secret(&headers) else {
        // An unknown ticket is a 404 before a missing secret is a 401.
        app.engine.require(&id).await?;
        return Err(DomainError::Unauthorized("offer the subprotocol secret.{secret}").into());
    };
    // Registered before the ticket is read: nothing can slip between. The
    // socket keeps the opener of its token (32 bytes), not the secret.
    let Watch { waiter, opener, .. } = app.engine.watch(&id, secret).await?;
    let upgrade =
        upgrade.map_err(|e| DomainError::Invalid(format!("not a WebSocket upgrade: {e}")))?;
    // Counted here, before the upgrade is answered, in the same step as the
    // caps are checked: concurrent upgrades cannot all pass a check made
    // before any of them is counted.
    let pass = app.limits.waiting.admit(Kind::Socket, &id, ip)?;
    Ok(upgrade
        .protocols([PROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            // A task of its own, with the socket boxed: axum's upgrade task
            // keeps the stream in several places of its state and finishes
            // here, so a waiting browser holds far less (docs/performance.md).
            tokio::spawn(session(app, waiter, opener, Box::new(socket), pass));
            std::future::ready(())
        }))
}

/// The socket metrics' handles, looked up in the recorder once: the
/// `metrics` macros look theirs up on every call, about 640 instructions
/// of a confirm for these two (docs/performance.md). The first socket
/// opens after `Application::build` has installed the recorder.
fn sockets_open() -> &'static metrics::Gauge {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| metrics::gauge!("qrlogin_sockets_open"))
}

fn push_latency() -> &'static metrics::Histogram {
    static HISTOGRAM: OnceLock<metrics::Histogram> = OnceLock::new();
    HISTOGRAM.get_or_init(|| metrics::histogram!("qrlogin_push_latency_seconds"))
}

/// Counts open sockets for as long as it lives.
struct OpenSocket;

impl OpenSocket {
    fn new() -> Self {
        sockets_open().increment(1.0);
        OpenSocket
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        sockets_open().decrement(1.0);
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// One ping interval with ±10 % jitter, so sockets opened together do not
/// ping together forever.
fn ping_interval(base: Duration) -> Duration {
    let jitter = rand::rng().random_range(0.9..1.1);
    base.mul_f64(jitter)
}

/// Time from a change committed to its frame written, for the
/// `qrlogin_push_latency_seconds` histogram.
pub fn record_push_latency(changed_at_ms: u64) {
    let ms = crate::ticket::now_ms().saturating_sub(changed_at_ms);
    push_latency().record(ms as f64 / 1000.0);
}

/// What one read of the store means for the socket.
struct Look {
    frame: String,
    terminal: bool,
    /// When a live ticket expires (then we look again).
    expires_at: Option<Instant>,
    /// When the ticket last changed (for the push-latency histogram).
    changed_at: Option<u64>,
}

/// Built apart from the session so that no `Ticket` or `StateView` is held
/// across an `.await`: whatever a session holds across one is held by every
/// idle socket for as long as it waits.
fn look(ticket: Option<&Ticket>, opener: &Opener) -> serde_json::Result<Look> {
    let view = StateView::for_browser(ticket, opener);
    Ok(Look {
        terminal: view.status.is_terminal(),
        expires_at: ticket.filter(|t| !t.status.is_terminal()).map(|t| {
            let left = t.expires_at.saturating_sub(crate::ticket::now_ms());
            Instant::now() + Duration::from_millis(left)
        }),
        frame: view.frame_json()?,
        changed_at: ticket.map(|t| t.updated_at),
    })
}

/// A fingerprint of a frame, to send each distinct one once without keeping
/// its text.
fn fingerprint(frame: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    frame.hash(&mut h);
    h.finish()
}

enum Event {
    Changed,
    Timer,
    Incoming(Option<std::result::Result<Message, axum::Error>>),
}

/// One socket. Kept lean on purpose (an idle socket is this future plus
/// tungstenite's buffers): the socket is not split (no shared lock, no
/// second half), events are gathered by one `select!` and handled after
/// its futures are gone, only a fingerprint of the last frame is kept, the
/// ticket id is the waiter's, and the stop comes as a wake-up of the waiter
/// rather than as a future of its own (984 → 704 bytes, docs/performance.md).
async fn session(
    app: AppState,
    mut waiter: Waiter,
    opener: Opener,
    mut socket: Box<WebSocket>,
    _pass: Pass,
) {
    let _open = OpenSocket::new();
    // Read from the settings where needed rather than kept: every byte
    // this future holds, each waiting browser holds.
    let mut next_ping = Instant::now() + ping_interval(app.settings.limits.ws_ping_interval);
    let mut last_heard = Instant::now();
    let mut sent: Option<u64> = None;
    let mut expires_at: Option<Instant> = None;
    let mut need_read = true;

    loop {
        // The stop is told by a wake-up of every waiter (`wake_all_waiters`),
        // read here: set before that wake, so no socket misses it.
        if *app.shutdown.borrow() {
            let _ = socket.send(close(1012, "service restarting")).await;
            return;
        }
        if need_read {
            need_read = false;
            // In a statement of its own: the ticket read is dropped here, not
            // kept in this future's state across the sends below, where every
            // waiting browser would pay for it.
            // Read as gone by the hub just now: what a read would find.
            let looked = if waiter.gone() {
                Ok(look(None, &opener))
            } else {
                app.engine
                    .get(waiter.id())
                    .await
                    .map(|t| look(t.as_deref(), &opener))
            };
            match looked {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot serialise a state frame");
                    let _ = socket.send(close(1011, "internal error")).await;
                    return;
                }
                Ok(Ok(Look {
                    frame,
                    terminal,
                    expires_at: expiry,
                    changed_at,
                })) => {
                    expires_at = expiry;
                    // A final frame is sent once and the socket ends: it
                    // needs no fingerprint, and hashing one that carries a
                    // token is a visible part of a confirm's cost.
                    let print = (!terminal).then(|| fingerprint(&frame));
                    if terminal || sent != print {
                        let frame = Message::Text(frame.into());
                        if terminal {
                            // The final state and the close in one write.
                            if socket.feed(frame).await.is_ok() {
                                let _ = socket.send(close(1000, "")).await;
                            }
                            if let (Some(_), Some(at)) = (sent, changed_at) {
                                record_push_latency(at);
                            }
                            return;
                        }
                        if socket.send(frame).await.is_err() {
                            return;
                        }
                        if let (Some(_), Some(at)) = (sent, changed_at) {
                            record_push_latency(at);
                        }
                        sent = print;
                    }
                }
                // The store is unreachable: keep the socket and look again
                // in about a second, spread so that the sockets an outage
                // failed together do not retry together.
                Err(_) => {
                    let again = Duration::from_millis(rand::rng().random_range(500..1500));
                    expires_at = Some(Instant::now() + again);
                }
            }
        }
        let deadline = expires_at.map_or(next_ping, |e| e.min(next_ping));
        let event = tokio::select! {
            _ = waiter.changed() => Event::Changed,
            _ = sleep_until(deadline) => Event::Timer,
            // Cancel-safe: a partly read frame stays in tungstenite's buffer.
            incoming = socket.recv() => Event::Incoming(incoming),
        };
        match event {
            Event::Changed => need_read = true,
            Event::Timer => {
                let now = Instant::now();
                if now >= next_ping {
                    if now.duration_since(last_heard) > app.settings.limits.ws_ping_interval * 3 {
                        return; // the peer is gone without a close
                    }
                    if socket
                        .send(Message::Ping(Default::default()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    next_ping = now + ping_interval(app.settings.limits.ws_ping_interval);
                }
                if expires_at.is_some_and(|e| now >= e) {
                    need_read = true;
                }
            }
            Event::Incoming(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => return,
            Event::Incoming(Some(Ok(_))) => last_heard = Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Status;

    #[test]
    fn secret_is_read_from_the_offered_subprotocols() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-protocol",
            "qrlogin.v1, secret.abc_-1".parse().unwrap(),
        );
        assert_eq!(offered_secret(&headers), Some("abc_-1"));
        headers.insert("sec-websocket-protocol", "qrlogin.v1".parse().unwrap());
        assert_eq!(offered_secret(&headers), None);
    }

    #[test]
    fn terminal_frames_say_their_status() {
        let v = StateView::of(None);
        assert_eq!(v.status, Status::Expired);
        assert_eq!(
            v.frame_json().unwrap(),
            r#"{"type":"state","status":"expired"}"#
        );
    }
}
