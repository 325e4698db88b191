//! The browser's WebSocket: authenticated before the upgrade, then one small
//! task per socket that sends the current state and every change until the
//! ticket ends.
//!
//! Cost per waiting browser is what bounds an instance, so a socket holds
//! only tiny buffers, its waiter registration and one timer (the earlier of
//! the next ping and the ticket's expiry).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::time::{Instant, sleep_until};

use super::limits::Slot;
use super::view::StateView;
use super::{AppState, ClientIp, TicketPath};
use crate::error::{Error, ErrorBody, Result};
use crate::ticket::TicketId;

/// The subprotocol we speak; the secret rides in a second one.
pub const PROTOCOL: &str = "qrlogin.v1";
const SECRET_PREFIX: &str = "secret.";
/// Largest client frame: clients send nothing but pongs and closes.
const MAX_CLIENT_MESSAGE: usize = 1024;

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
    let allowed = &app.settings.allowed_origins;
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let ours = app.settings.public_url();
    if ours.eq_ignore_ascii_case(origin) {
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
        return Err(Error::Forbidden("this Origin may not open sockets"));
    }
    let ticket = app.engine.require(&id).await?;
    let secret = offered_secret(&headers)
        .ok_or(Error::Unauthorized("offer the subprotocol secret.{secret}"))?;
    if !ticket.secret_hash.matches(secret) {
        return Err(Error::Unauthorized("wrong secret"));
    }
    if app.engine.hub.waiters_of(&id) >= app.settings.max_sockets_per_ticket {
        return Err(Error::RateLimited {
            message: "too many sockets for this ticket",
            retry_after: 5,
        });
    }
    let upgrade =
        upgrade.map_err(|e| Error::BadRequest(format!("not a WebSocket upgrade: {e}")))?;
    let slot = app
        .limits
        .open_sockets
        .take(ip, "too many open sockets, retry shortly")?;
    Ok(upgrade
        .protocols([PROTOCOL])
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| session(app, id, socket, slot)))
}

/// Counts open sockets for as long as it lives.
struct OpenSocket;

impl OpenSocket {
    fn new() -> Self {
        metrics::gauge!("qrlogin_sockets_open").increment(1.0);
        OpenSocket
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("qrlogin_sockets_open").decrement(1.0);
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
    metrics::histogram!("qrlogin_push_latency_seconds").record(ms as f64 / 1000.0);
}

async fn session(app: AppState, id: TicketId, socket: WebSocket, _slot: Slot) {
    let _open = OpenSocket::new();
    let (mut tx, mut rx) = socket.split();
    // Registered before the first read: nothing can slip between.
    let mut waiter = app.engine.hub.watch(&id);
    let mut shutdown = app.shutdown.clone();
    let ping_base = Duration::from_secs(app.settings.ws_ping_interval);
    let mut next_ping = Instant::now() + ping_interval(ping_base);
    let mut last_heard = Instant::now();
    let mut sent: Option<StateView> = None;
    let mut expires_at: Option<Instant> = None;
    let mut need_read = true;

    loop {
        if need_read {
            need_read = false;
            match app.engine.get(&id).await {
                Ok(ticket) => {
                    let view = StateView::of(ticket.as_ref());
                    expires_at = ticket
                        .as_ref()
                        .filter(|t| !t.status.is_terminal())
                        .map(|t| {
                            let left = t.expires_at.saturating_sub(crate::ticket::now_ms());
                            Instant::now() + Duration::from_millis(left)
                        });
                    if sent.as_ref() != Some(&view) {
                        let terminal = view.status.is_terminal();
                        if tx
                            .send(Message::Text(view.frame_json().into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        if let (Some(_), Some(t)) = (&sent, &ticket) {
                            record_push_latency(t.updated_at);
                        }
                        if terminal {
                            let _ = tx.send(close(1000, "")).await;
                            return;
                        }
                        sent = Some(view);
                    }
                }
                // The store is unreachable: keep the socket and look again soon.
                Err(_) => expires_at = Some(Instant::now() + Duration::from_secs(1)),
            }
        }
        let deadline = expires_at.map_or(next_ping, |e| e.min(next_ping));
        tokio::select! {
            _ = waiter.changed() => need_read = true,
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                if now >= next_ping {
                    if now.duration_since(last_heard) > ping_base * 3 {
                        return; // the peer is gone without a close
                    }
                    if tx.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    next_ping = now + ping_interval(ping_base);
                }
                if expires_at.is_some_and(|e| now >= e) {
                    need_read = true;
                }
            }
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                let _ = tx.send(close(1012, "service restarting")).await;
                return;
            }
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
        assert_eq!(v.frame_json(), r#"{"type":"state","status":"expired"}"#);
    }
}
