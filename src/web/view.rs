//! What a browser is told about its ticket: the WebSocket frame and, without
//! `type`, the long-poll body. Typed, so the wire shape lives in one place.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ticket::{Status, Ticket, UserInfo, now_ms};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A WebSocket text frame.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame<'a> {
    State(&'a StateView),
}

impl StateView {
    /// The view of `ticket` now; `None` (gone) reads as expired.
    pub fn of(ticket: Option<&Ticket>) -> Self {
        let Some(t) = ticket else {
            return Self::bare(Status::Expired);
        };
        let status = t.status_at(now_ms());
        let mut view = Self::bare(status);
        match status {
            Status::Pending | Status::Scanned => view.expires_at = Some(rfc3339(t.expires_at)),
            Status::Confirmed => {
                if let Some(token) = &t.token {
                    view.token = Some(token.token.clone());
                    view.token_type = Some("Bearer");
                    view.expires_in = Some(token.expires_in);
                }
            }
            Status::Denied | Status::Expired => {}
        }
        if matches!(status, Status::Scanned | Status::Confirmed) {
            view.user = t.user.clone();
        }
        view
    }

    fn bare(status: Status) -> Self {
        Self {
            status,
            expires_at: None,
            user: None,
            token: None,
            token_type: None,
            expires_in: None,
        }
    }

    pub fn frame_json(&self) -> String {
        serde_json::to_string(&Frame::State(self)).unwrap_or_default()
    }
}

/// Unix milliseconds as RFC 3339 UTC (second precision).
pub fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}
