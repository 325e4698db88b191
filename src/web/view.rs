//! What a browser is told about its ticket: the WebSocket frame and, without
//! `type`, the long-poll body. Typed, so the wire shape lives in one place.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ticket::{Status, Ticket, UserInfo, now_ms};
use crate::token::seal::Opener;
use crate::useragent;

/// The browser's view of a ticket.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StateView {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Instead of `token` for a ticket created with `seal`: the JWT as a
    /// compact JWE only the browser's key opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A WebSocket text frame, as serde would write it. `StateView::frame_json`
/// writes the same text by hand; this is what its test holds it to.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame<'a> {
    State(&'a StateView),
}

impl StateView {
    /// The view of `ticket` now, without any token (for whoever is not the
    /// browser: a backend, the phone side); `None` (gone) reads as expired.
    pub fn of(ticket: Option<&Ticket>) -> Self {
        let Some(t) = ticket else {
            return Self::bare(Status::Expired);
        };
        let status = t.status_at(now_ms());
        let mut view = Self::bare(status);
        if matches!(status, Status::Pending | Status::Scanned) {
            view.expires_at = Some(rfc3339(t.expires_at));
        }
        if matches!(status, Status::Scanned | Status::Confirmed) {
            view.user = t.user.clone();
        }
        view
    }

    /// The view the browser that presented the ticket's secret gets: with
    /// the token once confirmed. A token sealed to the browser's key goes
    /// out as stored; any other is opened (`Ticket::open_token`) for the
    /// secret just presented — the store alone could not open it.
    pub fn for_browser(ticket: Option<&Ticket>, opener: &Opener) -> Self {
        let mut view = Self::of(ticket);
        let Some(t) = ticket.filter(|_| view.status == Status::Confirmed) else {
            return view;
        };
        let Some(token) = &t.token else {
            return view;
        };
        match t.open_token(opener) {
            None => view.sealed_token = token.sealed.jwe().map(str::to_owned),
            Some(Ok(jwt)) => view.token = Some(jwt),
            Some(Err(_)) => {
                tracing::error!(ticket = t.id.short(), "a stored token did not open");
                return view;
            }
        }
        view.token_type = Some("Bearer");
        view.expires_in = Some(token.expires_in);
        view
    }

    fn bare(status: Status) -> Self {
        Self {
            status,
            expires_at: None,
            user: None,
            token: None,
            sealed_token: None,
            token_type: None,
            expires_in: None,
        }
    }

    /// The WebSocket text frame: the text `Frame::State` serialises to,
    /// written by hand so that the token is copied rather than escaped.
    /// serde_json looks at a string one byte at a time, and a token's
    /// ~500 characters were most of a confirm's frame (profile in
    /// docs/performance.md); [`crate::json::string`] checks them in one pass the
    /// compiler vectorises. Strings and numbers cannot fail to serialise;
    /// were it ever to fail, the socket says so (1011) rather than send an
    /// empty frame.
    pub fn frame_json(&self) -> serde_json::Result<String> {
        let tokens = self.token.as_ref().map_or(0, String::len)
            + self.sealed_token.as_ref().map_or(0, String::len);
        let mut out = String::with_capacity(160 + tokens);
        out.push_str(r#"{"type":"state","status":""#);
        out.push_str(self.status.as_str());
        out.push('"');
        if let Some(at) = &self.expires_at {
            out.push_str(r#","expires_at":"#);
            crate::json::string(&mut out, at)?;
        }
        if let Some(user) = &self.user {
            out.push_str(r#","user":"#);
            out.push_str(&serde_json::to_string(user)?);
        }
        if let Some(token) = &self.token {
            out.push_str(r#","token":"#);
            crate::json::string(&mut out, token)?;
        }
        if let Some(token) = &self.sealed_token {
            out.push_str(r#","sealed_token":"#);
            crate::json::string(&mut out, token)?;
        }
        if let Some(kind) = self.token_type {
            out.push_str(r#","token_type":"#);
            crate::json::string(&mut out, kind)?;
        }
        if let Some(secs) = self.expires_in {
            out.push_str(r#","expires_in":"#);
            crate::json::unsigned(&mut out, secs);
        }
        out.push('}');
        Ok(out)
    }
}

/// Unix milliseconds as RFC 3339 UTC (second precision).
pub fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The requester as a phone app (the Mini Program, a product's own app via
/// the trusted `scan`) shows it before a confirm.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequesterView {
    pub ip: String,
    pub user_agent: String,
    pub created_at: String,
    pub browser: String,
    pub os: String,
    /// One readable line, e.g. "Chrome on Windows 10".
    pub device: String,
}

impl RequesterView {
    pub fn of(ticket: &Ticket) -> Self {
        let (browser, os) = useragent::describe(&ticket.requester.user_agent);
        Self {
            ip: ticket.requester.ip.clone(),
            user_agent: ticket.requester.user_agent.clone(),
            created_at: rfc3339(ticket.created_at),
            device: useragent::device(&ticket.requester.user_agent),
            browser,
            os,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Scanned {
    pub scan_token: String,
    pub requester: RequesterView,
}

/// The token goes to the browser that holds the secret, never to whoever
/// confirmed.
pub fn without_token(mut view: StateView) -> StateView {
    view.token = None;
    view.sealed_token = None;
    view.token_type = None;
    view.expires_in = None;
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Pending),
            Just(Status::Scanned),
            Just(Status::Confirmed),
            Just(Status::Denied),
            Just(Status::Expired),
        ]
    }

    /// Tokens as they are, and strings with everything JSON must escape.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_.-]{0,600}",
            "\\PC{0,40}",
            "[\"\\\\\\x00-\\x1f\\x7f a\u{e9}\u{2028}]{0,20}"
        ]
    }

    proptest! {
        #[test]
        fn the_frame_written_by_hand_is_what_serde_writes(
            status in any_status(),
            expires_at in proptest::option::of(any_text()),
            nickname in proptest::option::of(any_text()),
            with_user in any::<bool>(),
            token in proptest::option::of(any_text()),
            sealed_token in proptest::option::of(any_text()),
            token_type in proptest::option::of(Just("Bearer")),
            expires_in in proptest::option::of(any::<u64>()),
        ) {
            let view = StateView {
                status,
                expires_at,
                user: with_user.then_some(UserInfo { nickname, avatar: None }),
                token,
                sealed_token,
                token_type,
                expires_in,
            };
            let by_hand = view.frame_json().unwrap();
            prop_assert_eq!(&by_hand, &serde_json::to_string(&Frame::State(&view)).unwrap());
            let _: serde_json::Value = serde_json::from_str(&by_hand).unwrap();
        }
    }
}
