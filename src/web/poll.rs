//! The long-poll fallback for browsers whose WebSockets are blocked: answer
//! at once when the state differs from what the browser last saw, else wait
//! for a change, the ticket's expiry or the wait limit.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use tokio::time::{Instant, sleep_until};

use super::limits::Kind;
use super::view::StateView;
use super::{AppState, ClientIp, Json, Query, RawBody, TicketPath, bearer};
use crate::engine::Error as DomainError;
use crate::engine::Watch;
use crate::error::{ErrorBody, Result};
use crate::ticket::{Status, now_ms};

/// Default wait when `?wait=` is absent, in seconds.
pub const DEFAULT_WAIT: u64 = 25;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct PollQuery {
    /// Seconds to wait for a change (default 25, at most QRLOGIN_POLL_MAX_WAIT).
    pub wait: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct PollBody {
    /// The last status seen.
    #[serde(default)]
    status: Option<String>,
}

/// What a poll asks, from its query and body: how long to wait and the
/// status the browser last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRequest {
    /// Seconds, already capped at `max_wait`.
    pub wait: u64,
    pub seen: Option<Status>,
}

impl PollRequest {
    /// `?wait=` (whole seconds, capped at `max_wait`) and the optional body
    /// `{"status": …}`; anything else is a `BadRequest`.
    pub fn parse(query: &PollQuery, body: &RawBody, max_wait: u64) -> Result<Self> {
        let wait = match query.wait.as_deref() {
            None => DEFAULT_WAIT,
            Some(w) => w
                .parse::<u64>()
                .map_err(|_| DomainError::Invalid("wait must be whole seconds".into()))?,
        }
        .min(max_wait);
        let seen = match body.json_or_default::<PollBody>()?.status {
            None => None,
            Some(s) => Some(
                s.parse::<Status>()
                    .map_err(|_| DomainError::Invalid(format!("unknown status {s:?}")))?,
            ),
        };
        Ok(Self { wait, seen })
    }
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
    let PollRequest { wait, seen } =
        PollRequest::parse(&query, &body, app.settings.limits.poll_max_wait.as_secs())?;
    let secret = bearer(&headers).ok_or(DomainError::Unauthorized(
        "missing Authorization: Bearer <secret>",
    ))?;
    let Watch {
        mut waiter,
        ticket,
        opener,
    } = app.engine.watch(&id, secret).await?;
    // Counted with the ticket's sockets and the IP's other polls, before
    // the wait, in one step.
    let _pass = app.limits.waiting.admit(Kind::Poll, &id, ip)?;
    let _waiting = Waiting::new();
    let give_up = Instant::now() + Duration::from_secs(wait);
    let expiry = Instant::now() + Duration::from_millis(ticket.expires_at.saturating_sub(now_ms()));
    let mut current = Some(ticket);
    loop {
        let view = StateView::for_browser(current.as_deref(), &opener);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use proptest::prelude::*;

    fn parse(wait: Option<&str>, body: &[u8], max_wait: u64) -> Result<PollRequest> {
        let query = PollQuery {
            wait: wait.map(str::to_owned),
        };
        PollRequest::parse(&query, &RawBody(body.to_vec().into()), max_wait)
    }

    proptest! {
        #[test]
        fn any_query_and_body_is_a_request_or_a_bad_request(
            wait in proptest::option::of("\\PC{0,24}"),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            max_wait in 0u64..1000,
        ) {
            match parse(wait.as_deref(), &body, max_wait) {
                Ok(request) => prop_assert!(request.wait <= max_wait),
                Err(e) => prop_assert!(matches!(e, Error::Domain(DomainError::Invalid(_)))),
            }
        }

        #[test]
        fn wait_and_status_round_trip(
            wait in proptest::option::of(any::<u64>()),
            seen in proptest::option::of(0usize..Status::ALL.len()),
            max_wait in 0u64..1000,
            blank in "[ \t\r\n]{0,4}",
        ) {
            let body = match seen {
                Some(i) => format!("{blank}{{\"status\":\"{}\"}}{blank}", Status::ALL[i].as_str()),
                None => blank,
            };
            let request = parse(wait.map(|w| w.to_string()).as_deref(), body.as_bytes(), max_wait).unwrap();
            prop_assert_eq!(request.wait, wait.unwrap_or(DEFAULT_WAIT).min(max_wait));
            prop_assert_eq!(request.seen, seen.map(|i| Status::ALL[i]));
        }
    }

    #[test]
    fn odd_waits_and_statuses_are_bad_requests() {
        for (wait, body) in [
            (Some("-1"), ""),
            (Some("1.5"), ""),
            (Some(""), ""),
            (Some("18446744073709551616"), ""),
            (None, r#"{"status":"PENDING"}"#),
            (None, r#"{"status":1}"#),
        ] {
            assert!(
                matches!(
                    parse(wait, body.as_bytes(), 60),
                    Err(Error::Domain(DomainError::Invalid(_)))
                ),
                "{wait:?} {body}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_a_bad_request_even_in_an_ignored_field() {
        // Found by the poll_body fuzzer: serde_json skips an ignored
        // field's string without looking at its bytes.
        let body = b"{\"note\":\"scann\xfeed\",\"status\":\"scanned\"}";
        assert!(matches!(
            parse(None, body, 60),
            Err(Error::Domain(DomainError::Invalid(_)))
        ));
        assert!(parse(None, br#"{"note":"ok","status":"scanned"}"#, 60).is_ok());
    }
}
