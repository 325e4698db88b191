//! The one error type of the HTTP edge. It wraps the domain's refusal
//! (`engine::Error`) and adds only what the edge alone can get wrong (a
//! method, a body's size, the request's time). Each renders the contract's
//! `{"error": code, "message": text}` with its status, mapped here and only
//! here; internal causes are logged where they happen and never shown to
//! clients.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::Error as DomainError;
use crate::store::StoreError;
use crate::ticket::TransitionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the domain refused (a bad input is `DomainError::Invalid`, the
    /// contract's `bad_request`), mapped by `Error::parts`.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 413 `payload_too_large`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 503 `unavailable`: the request took longer than QRLOGIN_REQUEST_TIMEOUT.
    #[error("the request took too long, retry shortly")]
    Timeout,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A snake_case code (`bad_request`, `unauthorized`, `ticket_not_found`, …).
    pub error: &'static str,
    /// Human text.
    pub message: String,
}

impl Error {
    /// The status, the contract's code and the message clients see.
    fn parts(&self) -> (StatusCode, &'static str, Cow<'_, str>) {
        use DomainError as D;
        let text = || Cow::Owned(self.to_string());
        match self {
            Error::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", text())
            }
            Error::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", text()),
            Error::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", text()),
            Error::Domain(e) => match e {
                D::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request", text()),
                D::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", text()),
                D::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", text()),
                D::Transition(TransitionError::NotScanner) => (
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this ticket was scanned by another device".into(),
                ),
                D::TicketNotFound => (StatusCode::NOT_FOUND, "ticket_not_found", text()),
                D::NotFound => (StatusCode::NOT_FOUND, "not_found", text()),
                // Nothing was stored; the client sees the store's retry.
                D::Transition(TransitionError::Unsealable) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    DomainError::Unavailable.to_string().into(),
                ),
                D::WrongState(_) | D::Transition(TransitionError::Invalid(..)) => {
                    (StatusCode::CONFLICT, "invalid_transition", text())
                }
                D::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", text()),
                D::OverCapacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "over_capacity", text()),
                D::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", text()),
                D::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_error", text()),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Domain(DomainError::Transition(TransitionError::Unsealable)) = self {
            tracing::error!("a confirmed token could not be sealed; nothing was stored");
        }
        let (status, code, message) = self.parts();
        let body = ErrorBody {
            error: code,
            message: message.into_owned(),
        };
        let mut response = (status, Json(body)).into_response();
        // 503s pass in a moment (a store back, an instance caught up): a
        // second, so clients that honour it spread out instead of hammering.
        let retry_after = match self {
            Error::Domain(DomainError::RateLimited { retry_after, .. }) => Some(retry_after.max(1)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
