//! The JSON API: tickets and their QR images for browsers, the trusted API
//! for product backends, and token introspection.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;

use super::view::{StateView, rfc3339};
use super::{AppState, ClientIp, Json, Query, RawBody, TicketPath, bearer, poll, user_agent, ws};
use crate::error::{Error, Result};
use crate::providers::wechat::miniprogram::RequesterView;
use crate::qr;
use crate::ticket::{Identity, Provider, Requester, TicketId, UserInfo};
use crate::token::seal::PublicJwk;

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
            .ok_or_else(|| Error::BadRequest(format!("provider {name:?} is not enabled")))?,
    };
    // Checked before anything is prepared with WeChat: a bad key costs nothing.
    let seal = match &request.seal {
        None | Some(Value::Null) => None,
        Some(jwk) => {
            Some(PublicJwk::from_jwk(jwk).map_err(|e| Error::BadRequest(format!("seal: {e}")))?)
        }
    };
    let id = TicketId::generate();
    let prepared = crate::providers::prepare(&app, provider, &id).await?;
    let requester = Requester {
        ip: ip.to_string(),
        user_agent: user_agent(&headers),
    };
    let (ticket, secret) = app
        .engine
        .create(id, provider, prepared.qr_content, requester, seal)
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
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 429, description = "too many renders (Retry-After)", body = ErrorBody)))]
pub async fn get_qr_png(
    state: State<AppState>,
    path: TicketPath,
    ip: ClientIp,
    query: Query<QrQuery>,
) -> Result<Response> {
    qr_image(state, path, ip, query, true).await
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket}/qr.svg", tag = "browser",
    params(("ticket" = String, Path), QrQuery),
    responses((status = 200, description = "SVG of qr_content", content_type = "image/svg+xml", body = String),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 429, description = "too many renders (Retry-After)", body = ErrorBody)))]
pub async fn get_qr_svg(
    state: State<AppState>,
    path: TicketPath,
    ip: ClientIp,
    query: Query<QrQuery>,
) -> Result<Response> {
    qr_image(state, path, ip, query, false).await
}

/// The QR of a live ticket. Rendered once per ticket and size, then served
/// from a short-lived cache: a login page reloading its image costs nothing,
/// and only renders draw on the client's QRLOGIN_RATE_RENDERS.
async fn qr_image(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    ClientIp(ip): ClientIp,
    Query(q): Query<QrQuery>,
    png: bool,
) -> Result<Response> {
    let ticket = app.engine.require(&id).await?;
    match q.kind.as_deref() {
        None | Some("" | "qr") => {}
        Some("wxacode") if png => return wxacode_image(&app, &ticket, ip).await,
        Some(_) => {
            return Err(Error::BadRequest("kind is qr, or wxacode on qr.png".into()));
        }
    }
    let size = qr::clamp_size(q.size);
    let key = (id, size, png);
    let bytes = match app.qr_cache.get(&key) {
        Some(bytes) => bytes,
        None => {
            app.limits.check_render(ip)?;
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
async fn wxacode_image(
    app: &AppState,
    ticket: &crate::ticket::Ticket,
    ip: std::net::IpAddr,
) -> Result<Response> {
    use crate::providers::wechat::miniprogram;
    let key = (ticket.id.clone(), WXACODE_SLOT, true);
    let bytes = match app.qr_cache.get(&key) {
        Some(bytes) => bytes,
        None => {
            app.limits.check_render(ip)?;
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

/// A trusted API body as its handler takes it: JSON that must be of the
/// type, then the handler's checks. The handlers get the JSON through the
/// `Json` extractor (the same `serde_json` parse; it skips the UTF-8 check
/// of `json_body`, which changes nothing here: these types deny unknown
/// fields, so every string is read, and checked, by serde_json); this is the
/// whole of what they do with the bytes, public so the fuzz targets and
/// property tests exercise exactly that.
pub fn parse_trusted<T: DeserializeOwned + CheckedBody>(bytes: &[u8]) -> Result<T> {
    let body: T = super::json_body(bytes)?;
    body.check()?;
    Ok(body)
}

/// A body with limits beyond its JSON shape.
pub trait CheckedBody {
    /// `BadRequest` naming the first limit broken.
    fn check(&self) -> Result<()>;
}

impl CheckedBody for ScanBody {
    fn check(&self) -> Result<()> {
        if let Some(sub) = &self.sub {
            check_sub(sub)?;
        }
        check_user(&self.user)
    }
}

impl CheckedBody for ConfirmBody {
    fn check(&self) -> Result<()> {
        check_sub(&self.sub)?;
        check_user(&self.user)?;
        if self
            .claims
            .as_ref()
            .is_some_and(|c| serde_json::to_vec(c).map_or(true, |v| v.len() > MAX_CLAIMS))
        {
            return Err(Error::BadRequest(
                "claims must be at most 8 KiB of JSON".into(),
            ));
        }
        Ok(())
    }
}

/// Extra token claims a trusted backend may send at confirm, as JSON bytes.
pub const MAX_CLAIMS: usize = 8 * 1024;

impl ConfirmBody {
    /// Who the token will name: the backend's own user id.
    pub fn subject(&self) -> Identity {
        Identity {
            sub: self.sub.clone(),
            idp: "app".into(),
            ..Identity::default()
        }
    }

    /// The extra claims the backend asked for.
    pub fn claims(&self) -> Option<&Map<String, Value>> {
        self.claims.as_ref()
    }
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
    responses((status = 200, description = "scanned, with the computer that asked", body = ScanAnswer),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "the ticket's state does not allow it", body = ErrorBody)))]
pub async fn scan_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ScanBody>,
) -> Result<Json<ScanAnswer>> {
    body.check()?;
    let ticket = app
        .engine
        .scan(&id, body.sub.map(|s| format!("app:{s}")), body.user, None)
        .await?;
    Ok(Json(ScanAnswer {
        state: without_token(StateView::of(Some(&ticket))),
        requester: RequesterView::of(&ticket),
    }))
}

/// The trusted `scan` answer: the state, and which computer asked, so the
/// app can show it before the person confirms (QRLJacking).
#[derive(Serialize, ToSchema)]
pub struct ScanAnswer {
    #[serde(flatten)]
    state: StateView,
    requester: RequesterView,
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
    body.check()?;
    let subject = body.subject();
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
pub fn without_token(mut view: StateView) -> StateView {
    view.token = None;
    view.sealed_token = None;
    view.token_type = None;
    view.expires_in = None;
    view
}

#[derive(Deserialize, ToSchema)]
pub struct IntrospectBody {
    token: Value,
}

/// RFC 7662-style, for backends that prefer asking to verifying: the claims
/// of a valid token with `"active": true`, else only `"active": false`. Any
/// garbage in (not JSON, no token, a forged or expired token) is simply not
/// active, never an error page. The body is JSON `{"token": "…"}`, or the
/// RFC's form encoding `token=…`.
#[utoipa::path(post, path = "/api/v1/tokens/introspect", tag = "tokens",
    security(("api_key" = [])), request_body = IntrospectBody,
    responses((status = 200, description = "RFC 7662-style: `{\"active\": true, …claims}` or `{\"active\": false}`", body = Object),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody)))]
pub async fn introspect_token(
    _: Trusted,
    State(app): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Json<Value> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = if is_form {
        url::form_urlencoded::parse(&body)
            .find(|(name, _)| name == "token")
            .map(|(_, token)| token.into_owned())
    } else {
        serde_json::from_slice::<IntrospectBody>(&body)
            .ok()
            .and_then(|b| b.token.as_str().map(str::to_owned))
    };
    match token.and_then(|token| app.engine.tokens.verify(&token).ok()) {
        Some(mut claims) => {
            claims.insert("active".into(), Value::Bool(true));
            Json(Value::Object(claims))
        }
        None => Json(serde_json::json!({ "active": false })),
    }
}

/// The public keys. Verifiers may cache them for five minutes: a new key
/// is announced by a token naming an unknown `kid`, on which they refetch.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "public keys (asymmetric algorithms)", body = Object),
        (status = 404, description = "HS256: no public keys", body = ErrorBody)))]
pub async fn get_jwks(State(app): State<AppState>) -> Result<Response> {
    let jwks = app.engine.tokens.jwks().ok_or(Error::NotFound)?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(jwks.clone()),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_bytes_are_a_body_or_a_bad_request(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for result in [
                parse_trusted::<ScanBody>(&bytes).map(|_| ()),
                parse_trusted::<ConfirmBody>(&bytes).map(|_| ()),
            ] {
                prop_assert!(matches!(result, Ok(()) | Err(Error::BadRequest(_))));
            }
        }

        #[test]
        fn confirm_bodies_round_trip(
            sub in "\\PC{1,64}",
            claims in proptest::option::of(proptest::collection::btree_map("\\PC{0,8}", json_value(), 0..6)),
            nickname in proptest::option::of("\\PC{0,40}"),
        ) {
            let claims: Option<Map<String, Value>> = claims.map(|c| c.into_iter().collect());
            let json = serde_json::json!({
                "sub": sub, "claims": claims, "user": {"nickname": nickname},
            });
            let body = parse_trusted::<ConfirmBody>(json.to_string().as_bytes()).unwrap();
            prop_assert_eq!(body.subject().sub, sub);
            prop_assert_eq!(body.subject().idp, "app");
            prop_assert_eq!(body.claims(), claims.as_ref());
            prop_assert_eq!(body.user.and_then(|u| u.nickname), nickname);
        }

        #[test]
        fn limits_are_bad_requests(extra in 0usize..64) {
            let long_sub = serde_json::json!({"sub": "x".repeat(257 + extra)}).to_string();
            prop_assert!(matches!(parse_trusted::<ConfirmBody>(long_sub.as_bytes()), Err(Error::BadRequest(_))));
            prop_assert!(matches!(parse_trusted::<ScanBody>(long_sub.as_bytes()), Err(Error::BadRequest(_))));
            let big = serde_json::json!({"sub": "u", "claims": {"k": "v".repeat(MAX_CLAIMS + extra)}}).to_string();
            prop_assert!(matches!(parse_trusted::<ConfirmBody>(big.as_bytes()), Err(Error::BadRequest(_))));
        }
    }

    #[test]
    fn numeric_claims_reach_the_token_exactly() {
        // Found by the trusted_json fuzzer: a 117-digit number came back
        // from the token's JSON one ulp off (serde_json's default parser).
        let body = format!(r#"{{"sub":"u","claims":{{"n":1{}}}}}"#, "3".repeat(116));
        let parsed = parse_trusted::<ConfirmBody>(body.as_bytes()).unwrap();
        let claims = parsed.claims().unwrap();
        let again: Map<String, Value> =
            serde_json::from_slice(&serde_json::to_vec(claims).unwrap()).unwrap();
        assert_eq!(&again, claims);
    }

    #[test]
    fn unknown_fields_and_an_empty_sub_are_refused() {
        for body in [
            r#"{"sub":"u","extra":1}"#,
            r#"{"sub":""}"#,
            r#"{"claims":{}}"#,
            "",
        ] {
            assert!(
                matches!(
                    parse_trusted::<ConfirmBody>(body.as_bytes()),
                    Err(Error::BadRequest(_))
                ),
                "{body}"
            );
        }
        assert!(parse_trusted::<ScanBody>(b"{}").is_ok());
        assert!(parse_trusted::<ScanBody>(br#"{"sub":""}"#).is_err());
    }
}
