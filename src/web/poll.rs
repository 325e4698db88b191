//! The long-poll fallback for browsers whose WebSockets are blocked: answer
//! at once when the state differs from what the browser last saw, else wait
//! for a change, the ticket's expiry or the wait limit.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use tokio::time::{Instant, sleep_until};

use super::view::StateView;
use super::{AppState, Json, RawBody, TicketPath, bearer};
use crate::error::{Error, Result};
use crate::ticket::{Status, now_ms};

/// Default wait when `?wait=` is absent, in seconds.
pub const DEFAULT_WAIT: u64 = 25;

#[derive(Deserialize)]
pub struct PollQuery {
    wait: Option<String>,
}

#[derive(Deserialize, Default)]
struct PollBody {
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

pub async fn poll_ticket(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
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
