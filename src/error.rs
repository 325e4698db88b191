//! The one error type of the HTTP edge. Each variant renders the contract's
//! `{"error": code, "message": text}` with its status; internal causes are
//! logged where they happen and never shown to clients. The domain's own
//! `engine::Error` becomes one of these here, and only here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::Error as DomainError;
use crate::store::StoreError;
use crate::ticket::TransitionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `bad_request`: the input is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401 `unauthorized`: a missing or wrong secret or API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403 `forbidden`: authenticated but not allowed (a foreign Origin, another phone).
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 `ticket_not_found`: unknown or already expired.
    #[error("unknown or expired ticket")]
    TicketNotFound,
    /// 404 `not_found`: no such path.
    #[error("no such endpoint")]
    NotFound,
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 409 `invalid_transition`: the ticket's state does not allow it.
    #[error("{0}")]
    InvalidTransition(String),
    /// 413 `payload_too_large`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 429 `rate_limited`, with `Retry-After` seconds.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after: u64,
    },
    /// 503 `over_capacity`: a configured cap is reached.
    #[error("{0}")]
    OverCapacity(&'static str),
    /// 503 `unavailable`: the store cannot be reached; retry shortly.
    #[error("the ticket store is unavailable, retry shortly")]
    Unavailable,
    /// 503 `unavailable`: the request took longer than QRLOGIN_REQUEST_TIMEOUT.
    #[error("the request took too long, retry shortly")]
    Timeout,
    /// 502 `upstream_error`: WeChat answered with an error or not at all.
    #[error("{0}")]
    Upstream(String),
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
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::TicketNotFound | Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::InvalidTransition(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::OverCapacity(_) | Error::Unavailable | Error::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::TicketNotFound => "ticket_not_found",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::InvalidTransition(_) => "invalid_transition",
            Error::PayloadTooLarge => "payload_too_large",
            Error::RateLimited { .. } => "rate_limited",
            Error::OverCapacity(_) => "over_capacity",
            Error::Unavailable | Error::Timeout => "unavailable",
            Error::Upstream(_) => "upstream_error",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Error::RateLimited { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        response
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => Error::BadRequest(m),
            DomainError::Unauthorized(m) => Error::Unauthorized(m),
            DomainError::Forbidden(m) => Error::Forbidden(m),
            DomainError::TicketNotFound => Error::TicketNotFound,
            DomainError::NotFound => Error::NotFound,
            DomainError::WrongState(m) => Error::InvalidTransition(m),
            DomainError::Transition(TransitionError::NotScanner) => {
                Error::Forbidden("this ticket was scanned by another device")
            }
            DomainError::Transition(TransitionError::Unsealable) => {
                tracing::error!("a confirmed token could not be sealed; nothing was stored");
                Error::Unavailable
            }
            DomainError::Transition(t) => Error::InvalidTransition(t.to_string()),
            DomainError::RateLimited {
                message,
                retry_after,
            } => Error::RateLimited {
                message,
                retry_after,
            },
            DomainError::OverCapacity(m) => Error::OverCapacity(m),
            DomainError::Unavailable => Error::Unavailable,
            DomainError::Upstream(m) => Error::Upstream(m),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
