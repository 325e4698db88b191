//! The long-poll fallback for browsers whose WebSockets are blocked: answer
//! at once when the state differs from what the browser last saw, else wait
//! for a change, the ticket's expiry or the wait limit.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use tokio::time::{Instant, sleep_until};

use super::view::StateView;
use super::{AppState, ClientIp, Json, RawBody, TicketPath, bearer};
use crate::error::{Error, ErrorBody, Result};
use crate::ticket::{Status, now_ms};

/// Default wait when `?wait=` is absent, in seconds.
pub const DEFAULT_WAIT: u64 = 25;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct PollQuery {
    /// Seconds to wait for a change (default 25, at most QRLOGIN_POLL_MAX_WAIT).
    wait: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct PollBody {
    /// The last status seen.
    #[serde(default)]
    status: Option<String>,
}

/// Counts waiting long-polls for as long as it lives.
struct Waiting;

impl Waiting {
    fn new() -> Self {
        metrics::gauge!("qrlogin_polls_waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("qrlogin_polls_waiting").decrement(1.0);
    }
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/poll", tag = "browser",
    params(("ticket" = String, Path), PollQuery), security(("secret" = [])),
    request_body(content = Option<PollBody>, description = "optional"),
    responses((status = 200, description = "the current state (as the WebSocket frame, without `type`)", body = StateView),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = ErrorBody)))]
pub async fn poll_ticket(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    ClientIp(ip): ClientIp,
    Query(query): Query<PollQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Json<StateView>> {
    let wait = match query.wait.as_deref() {
        None => DEFAULT_WAIT,
        Some(w) => w
            .parse::<u64>()
            .map_err(|_| Error::BadRequest("wait must be whole seconds".into()))?,
    }
    .min(app.settings.poll_max_wait);
    let seen = match body.json_or_default::<PollBody>()?.status {
        None => None,
        Some(s) => Some(
            s.parse::<Status>()
                .map_err(|_| Error::BadRequest(format!("unknown status {s:?}")))?,
        ),
    };
    let secret = bearer(&headers).ok_or(Error::Unauthorized(
        "missing Authorization: Bearer <secret>",
    ))?;
    let mut waiter = app.engine.hub.watch(&id);
    let ticket = app.engine.require(&id).await?;
    if !ticket.secret_hash.matches(secret) {
        return Err(Error::Unauthorized("wrong secret"));
    }
    let _slot = app
        .limits
        .waiting_polls
        .take(ip, "too many long-polls waiting, retry shortly")?;
    let _waiting = Waiting::new();
    let give_up = Instant::now() + Duration::from_secs(wait);
    let expiry = Instant::now() + Duration::from_millis(ticket.expires_at.saturating_sub(now_ms()));
    let mut current = Some(ticket);
    loop {
        let view = StateView::of(current.as_ref());
        if Some(view.status) != seen || Instant::now() >= give_up {
            return Ok(Json(view));
        }
        let deadline = if view.status.is_terminal() {
            give_up
        } else {
            give_up.min(expiry)
        };
        tokio::select! {
            _ = waiter.changed() => {}
            _ = sleep_until(deadline) => {}
        }
        current = app.engine.get(&id).await?;
    }
}
