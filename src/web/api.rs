//! The JSON API: tickets and their QR images for browsers, the trusted API
//! for product backends, and token introspection.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;

use super::view::{StateView, rfc3339};
use super::{AppState, ClientIp, Json, RawBody, TicketPath, bearer, poll, user_agent, ws};
use crate::error::{Error, Result};
use crate::qr;
use crate::ticket::{Identity, Provider, Requester, TicketId, UserInfo};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tickets", post(create_ticket))
        .route("/api/v1/tickets/{ticket}", get(get_ticket))
        .route("/api/v1/tickets/{ticket}/qr.png", get(get_qr_png))
        .route("/api/v1/tickets/{ticket}/qr.svg", get(get_qr_svg))
        .route("/api/v1/tickets/{ticket}/ws", get(ws::upgrade_ws))
        .route("/api/v1/tickets/{ticket}/poll", post(poll::poll_ticket))
        .route("/api/v1/tickets/{ticket}/scan", post(scan_ticket))
        .route("/api/v1/tickets/{ticket}/confirm", post(confirm_ticket))
        .route("/api/v1/tickets/{ticket}/deny", post(deny_ticket))
        .route("/api/v1/tokens/introspect", post(introspect_token))
        .route("/.well-known/jwks.json", get(get_jwks))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTicket {
    #[serde(default)]
    provider: Option<String>,
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
            .ok_or_else(|| Error::BadRequest(format!("provider {name:?} is not enabled")))?,
    };
    let id = TicketId::generate();
    let prepared = crate::providers::prepare(&app, provider, &id).await?;
    let requester = Requester {
        ip: ip.to_string(),
        user_agent: user_agent(&headers),
    };
    let (ticket, secret) = app
        .engine
        .create(id, provider, prepared.qr_content, requester)
        .await?;
    let base = format!("/api/v1/tickets/{}", ticket.id);
    let created = TicketCreated {
        ticket: ticket.id.to_string(),
        secret: secret.expose().to_owned(),
        status: "pending",
        provider: provider.as_str(),
        qr_content: ticket.qr_content,
        qr_png: format!("{base}/qr.png"),
        qr_svg: format!("{base}/qr.svg"),
        ws: format!("{base}/ws"),
        poll: format!("{base}/poll"),
        expires_in: app.engine.ttl_secs(),
        expires_at: rfc3339(ticket.expires_at),
        authorize_url: prepared.authorize_url,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Deserialize, IntoParams)]
pub struct QrQuery {
    /// Image side in pixels (64 to 1024; default 256).
    size: Option<u32>,
    /// `wxacode`: the Mini Program code WeChat makes (PNG route only).
    kind: Option<String>,
}

/// The image cache's size slot of a Mini Program code (real sizes are
/// never 0), so a page reloading it does not spend WeChat's quota.
const WXACODE_SLOT: u32 = 0;

#[utoipa::path(get, path = "/api/v1/tickets/{ticket}/qr.png", tag = "browser",
    params(("ticket" = String, Path), QrQuery),
    responses((status = 200, description = "PNG of qr_content", content_type = "image/png", body = Vec<u8>),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody)))]
pub async fn get_qr_png(
    state: State<AppState>,
    path: TicketPath,
    query: Query<QrQuery>,
) -> Result<Response> {
    qr_image(state, path, query, true).await
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket}/qr.svg", tag = "browser",
    params(("ticket" = String, Path), QrQuery),
    responses((status = 200, description = "SVG of qr_content", content_type = "image/svg+xml", body = String),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody)))]
pub async fn get_qr_svg(
    state: State<AppState>,
    path: TicketPath,
    query: Query<QrQuery>,
) -> Result<Response> {
    qr_image(state, path, query, false).await
}

/// The QR of a live ticket. Rendered once per ticket and size, then served
/// from a short-lived cache: a login page reloading its image costs nothing.
async fn qr_image(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Query(q): Query<QrQuery>,
    png: bool,
) -> Result<Response> {
    let ticket = app.engine.require(&id).await?;
    match q.kind.as_deref() {
        None | Some("" | "qr") => {}
        Some("wxacode") if png => return wxacode_image(&app, &ticket).await,
        Some(_) => {
            return Err(Error::BadRequest("kind is qr, or wxacode on qr.png".into()));
        }
    }
    let size = qr::clamp_size(q.size);
    let key = (id, size, png);
    let bytes = match app.qr_cache.get(&key) {
        Some(bytes) => bytes,
        None => {
            let rendered = if png {
                qr::png(&ticket.qr_content, size).map(bytes::Bytes::from)
            } else {
                qr::svg(&ticket.qr_content, size).map(bytes::Bytes::from)
            };
            let bytes = rendered.map_err(|e| Error::BadRequest(e.to_string()))?;
            app.qr_cache.insert(key, bytes.clone());
            bytes
        }
    };
    let content_type = if png { "image/png" } else { "image/svg+xml" };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response())
}

/// The Mini Program code of a `miniprogram` ticket, as WeChat made it.
async fn wxacode_image(app: &AppState, ticket: &crate::ticket::Ticket) -> Result<Response> {
    use crate::providers::wechat::miniprogram;
    let key = (ticket.id.clone(), WXACODE_SLOT, true);
    let bytes = match app.qr_cache.get(&key) {
        Some(bytes) => bytes,
        None => {
            let bytes = miniprogram::wxacode(app, ticket).await?;
            app.qr_cache.insert(key, bytes.clone());
            bytes
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, miniprogram::image_type(&bytes)),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response())
}

/// Proof that the caller holds the API key.
pub struct Trusted;

impl axum::extract::FromRequestParts<AppState> for Trusted {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Self> {
        let Some(key) = app.settings.api_key.as_deref() else {
            return Err(Error::Unauthorized(
                "the trusted API is off: QRLOGIN_API_KEY is not set",
            ));
        };
        match bearer(&parts.headers) {
            Some(given) if bool::from(given.as_bytes().ct_eq(key.as_bytes())) => Ok(Trusted),
            Some(_) => Err(Error::Unauthorized("wrong API key")),
            None => Err(Error::Unauthorized(
                "missing Authorization: Bearer <API key>",
            )),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StatusOnly {
    status: &'static str,
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket}", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "the status, never the token", body = StatusOnly),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody)))]
pub async fn get_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
) -> Result<Json<StatusOnly>> {
    let ticket = app.engine.require(&id).await?;
    Ok(Json(StatusOnly {
        status: ticket.status_at(crate::ticket::now_ms()).as_str(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    user: Option<UserInfo>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    sub: String,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    user: Option<UserInfo>,
}

fn check_sub(sub: &str) -> Result<()> {
    if sub.is_empty() || sub.len() > 256 {
        return Err(Error::BadRequest("sub must be 1 to 256 characters".into()));
    }
    Ok(())
}

fn check_user(user: &Option<UserInfo>) -> Result<()> {
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > 1024);
    if user
        .as_ref()
        .is_some_and(|u| too_long(&u.nickname) || too_long(&u.avatar))
    {
        return Err(Error::BadRequest(
            "user fields must be at most 1024 characters".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/scan", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])), request_body = ScanBody,
    responses((status = 200, description = "scanned", body = StateView),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "the ticket's state does not allow it", body = ErrorBody)))]
pub async fn scan_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ScanBody>,
) -> Result<Json<StateView>> {
    if let Some(sub) = &body.sub {
        check_sub(sub)?;
    }
    check_user(&body.user)?;
    let ticket = app
        .engine
        .scan(&id, body.sub.map(|s| format!("app:{s}")), body.user, None)
        .await?;
    Ok(Json(without_token(StateView::of(Some(&ticket)))))
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/confirm", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])), request_body = ConfirmBody,
    responses((status = 200, description = "confirmed; the JWT goes to the browser only", body = StateView),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "the ticket's state does not allow it", body = ErrorBody)))]
pub async fn confirm_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ConfirmBody>,
) -> Result<Json<StateView>> {
    check_sub(&body.sub)?;
    check_user(&body.user)?;
    if body
        .claims
        .as_ref()
        .is_some_and(|c| serde_json::to_vec(c).map_or(true, |v| v.len() > 8 * 1024))
    {
        return Err(Error::BadRequest(
            "claims must be at most 8 KiB of JSON".into(),
        ));
    }
    let subject = Identity {
        sub: body.sub,
        idp: "app".into(),
        ..Identity::default()
    };
    let ticket = app
        .engine
        .confirm(&id, None, &subject, body.user, body.claims.as_ref())
        .await?;
    Ok(Json(without_token(StateView::of(Some(&ticket)))))
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/deny", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "denied", body = StateView),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "the ticket's state does not allow it", body = ErrorBody)))]
pub async fn deny_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
) -> Result<Json<StateView>> {
    let ticket = app.engine.deny(&id, None).await?;
    Ok(Json(StateView::of(Some(&ticket))))
}

/// The token goes to the browser that holds the secret, never to whoever
/// confirmed.
fn without_token(mut view: StateView) -> StateView {
    view.token = None;
    view.token_type = None;
    view.expires_in = None;
    view
}

#[derive(Deserialize, ToSchema)]
pub struct IntrospectBody {
    token: Value,
}

/// RFC 7662-style: any garbage in is simply not active.
#[utoipa::path(post, path = "/api/v1/tokens/introspect", tag = "tokens",
    security(("api_key" = [])), request_body = IntrospectBody,
    responses((status = 200, description = "RFC 7662-style: `{\"active\": true, …claims}` or `{\"active\": false}`", body = Object),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody)))]
pub async fn introspect_token(
    _: Trusted,
    State(app): State<AppState>,
    RawBody(body): RawBody,
) -> Json<Value> {
    let claims = serde_json::from_slice::<IntrospectBody>(&body)
        .ok()
        .and_then(|b| b.token.as_str().map(str::to_owned))
        .and_then(|token| app.engine.tokens.verify(&token).ok());
    match claims {
        Some(mut claims) => {
            claims.insert("active".into(), Value::Bool(true));
            Json(Value::Object(claims))
        }
        None => Json(serde_json::json!({ "active": false })),
    }
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "public keys (asymmetric algorithms)", body = Object),
        (status = 404, description = "HS256: no public keys", body = ErrorBody)))]
pub async fn get_jwks(State(app): State<AppState>) -> Result<Response> {
    let jwks = app.engine.tokens.jwks().ok_or(Error::NotFound)?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(jwks),
    )
        .into_response())
}
