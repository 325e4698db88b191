//! The browser's JSON API: create a ticket (its provider prepares what the
//! QR holds), then wait for it on the WebSocket (`ws`) or the long-poll
//! (`poll`); its QR images are `qr_cache`'s.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::view::rfc3339;
use super::{AppState, ClientIp, Json, RawBody, poll, qr_cache, user_agent, ws};
use crate::engine::Error as DomainError;
use crate::error::{ErrorBody, Result};
use crate::ticket::{Provider, Requester, TicketId};
use crate::token::seal::PublicJwk;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tickets", post(create_ticket))
        .route("/api/v1/tickets/{ticket}/qr.png", get(qr_cache::get_qr_png))
        .route("/api/v1/tickets/{ticket}/qr.svg", get(qr_cache::get_qr_svg))
        .route("/api/v1/tickets/{ticket}/ws", get(ws::upgrade_ws))
        .route("/api/v1/tickets/{ticket}/poll", post(poll::poll_ticket))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTicket {
    #[serde(default)]
    provider: Option<String>,
    /// The browser's P-256 public key as a JWK: the token is then sealed to
    /// it and sent as `sealed_token`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    seal: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketCreated {
    ticket: String,
    secret: String,
    status: &'static str,
    provider: &'static str,
    qr_content: String,
    qr_png: String,
    qr_svg: String,
    ws: String,
    poll: String,
    expires_in: u64,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorize_url: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tickets", tag = "browser",
    request_body(content = Option<CreateTicket>, description = "optional; `{}` or empty"),
    responses((status = 201, description = "a new pending ticket", body = TicketCreated),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 413, description = "body over 64 KiB", body = ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = ErrorBody),
        (status = 503, description = "over capacity or store unavailable", body = ErrorBody)))]
pub async fn create_ticket(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: RawBody,
) -> Result<(StatusCode, Json<TicketCreated>)> {
    // An empty body means `{}`: a browser may post nothing at all.
    let request: CreateTicket = body.json_or_default()?;
    let provider = match request.provider.as_deref() {
        None => app.settings.default_provider(),
        Some(name) => name
            .parse::<Provider>()
            .ok()
            .filter(|p| app.settings.providers.contains(p))
            .ok_or_else(|| DomainError::Invalid(format!("provider {name:?} is not enabled")))?,
    };
    // Checked before anything is prepared with WeChat: a bad key costs nothing.
    let seal = match &request.seal {
        None | Some(Value::Null) => None,
        Some(jwk) => {
            Some(PublicJwk::from_jwk(jwk).map_err(|e| DomainError::Invalid(format!("seal: {e}")))?)
        }
    };
    let id = TicketId::generate();
    let prepared = crate::providers::prepare(&app.providers(), provider, &id).await?;
    let requester = Requester {
        ip: ip.to_string(),
        user_agent: user_agent(&headers),
    };
    let (ticket, secret) = app
        .engine
        .create(id, provider, prepared.qr_content, requester, seal)
        .await?;
    // Joined, not formatted: `format!` was a visible part of a setup's cost.
    let base = ["/api/v1/tickets/", ticket.id.as_str()].concat();
    let under = |tail: &str| [base.as_str(), tail].concat();
    let created = TicketCreated {
        ticket: ticket.id.as_str().to_owned(),
        secret: secret.expose().to_owned(),
        status: "pending",
        provider: provider.as_str(),
        qr_content: ticket.qr_content,
        qr_png: under("/qr.png"),
        qr_svg: under("/qr.svg"),
        ws: under("/ws"),
        poll: under("/poll"),
        expires_in: app.engine.ttl_secs(),
        expires_at: rfc3339(ticket.expires_at),
        authorize_url: prepared.authorize_url,
    };
    Ok((StatusCode::CREATED, Json(created)))
}
