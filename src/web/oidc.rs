//! The OpenID Provider's HTTP edge: discovery, authorize (the QR login page
//! for one authorization request, and the two calls its script makes),
//! token and userinfo. The rules live in `crate::oidc`; this module turns
//! requests into its calls and its answers into RFC 6749 responses.
//!
//! Every route answers 404 `not_found` while no clients are configured.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::headers::page_response;
use super::lang::page_lang;
use super::{AppState, ClientIp, Json, RawBody, bearer};
use crate::engine::Error as DomainError;
use crate::error::{ErrorBody, Result};
use crate::oidc::{Client, CompleteError, Completion, OAuthError, Provider, RedeemError, Refusal};
use crate::templates::Texts;
use crate::ticket::{Provider as Idp, TicketId};
use crate::token::seal::Opener;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/authorize", get(authorize_get).post(authorize_post))
        .route("/oauth2/authorize/{request}", get(resume))
        .route("/oauth2/authorize/{request}/tickets", post(create_ticket))
        .route("/oauth2/authorize/{request}/complete", post(complete))
        .route("/oauth2/token", post(token))
        .route("/oauth2/userinfo", get(userinfo_get).post(userinfo_post))
        .route(
            "/static/oidc.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, super::static_files::JAVASCRIPT),
                        (header::CACHE_CONTROL, "public, max-age=300"),
                    ],
                    include_str!("../../static/oidc.js"),
                )
            }),
        )
}

/// The pairs of a form body, in order (repeats kept, so they can be refused).
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn provider(app: &AppState) -> Result<&Provider> {
    app.oidc.as_deref().ok_or(DomainError::NotFound.into())
}

#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oidc",
    responses((status = 200, description = "OpenID Connect discovery document", body = Object),
        (status = 404, description = "no OIDC clients configured", body = ErrorBody)))]
pub async fn discovery(State(app): State<AppState>) -> Result<Response> {
    let p = provider(&app)?;
    let doc = p.discovery(app.engine.tokens());
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(doc),
    )
        .into_response())
}

#[utoipa::path(get, path = "/oauth2/authorize", tag = "oidc",
    params(("client_id" = String, Query), ("redirect_uri" = String, Query),
        ("response_type" = String, Query, description = "code"),
        ("scope" = String, Query, description = "must include openid"),
        ("state" = Option<String>, Query), ("nonce" = Option<String>, Query),
        ("code_challenge" = Option<String>, Query, description = "S256; required for public clients"),
        ("code_challenge_method" = Option<String>, Query, description = "S256"),
        ("prompt" = Option<String>, Query, description = "none answers login_required"),
        ("provider" = Option<String>, Query, description = "an enabled provider")),
    responses((status = 200, description = "the QR login page (HTML)", content_type = "text/html", body = String),
        (status = 303, description = "an RFC 6749 error redirect to the registered redirect_uri, with state and iss"),
        (status = 400, description = "unknown client or unregistered redirect_uri: an HTML error page, no redirect", content_type = "text/html", body = String)))]
pub async fn authorize_get(
    State(app): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(app, params, headers).await
}

async fn authorize_post(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    let params = form_pairs(&body);
    authorize(app, params, headers).await
}

/// The login page of one authorization request: the same template as
/// `/`, with the request's id for the page's script.
#[derive(Serialize)]
struct AuthorizePage<'a> {
    lang: &'static str,
    t: &'static Texts,
    dev: bool,
    provider: &'a str,
    oidc_request: &'a str,
}

async fn authorize(
    app: AppState,
    params: Vec<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let p = provider(&app)?;
    let lang_param = params
        .iter()
        .find(|(k, _)| k == "ui_locales" || k == "lang")
        .map(|(_, v)| v.split(' ').next().unwrap_or("").to_owned());
    let lang = page_lang(lang_param.as_deref(), &headers);
    let settings = &app.settings;
    let enabled = |name: &str| {
        name.parse::<Idp>()
            .is_ok_and(|idp| settings.providers.contains(&idp))
    };
    let request = match p.validate(&params, enabled) {
        Ok(request) => request,
        Err(Refusal::Page(why)) => return Ok(error_page(lang.texts(), lang.tag(), &why.0)),
        Err(Refusal::Redirect(to)) => return Ok(Redirect::to(&to).into_response()),
    };
    let id = p.save_request(app.engine.records(), &request).await?;
    Ok(login_page(&app, lang, &id, request.provider.as_deref()))
}

/// The login page of a stored request again: where a provider that
/// navigates the whole page away (WeChat's website QR at top level) brings
/// the browser back; the client resumes its ticket from session storage.
async fn resume(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let p = provider(&app)?;
    let lang = page_lang(None, &headers);
    let stored = match raw.parse::<TicketId>() {
        Ok(id) => p.request(app.engine.records(), &id).await?.map(|r| (id, r)),
        Err(_) => None,
    };
    let Some((id, request)) = stored else {
        return Ok(error_page(
            lang.texts(),
            lang.tag(),
            "this login request is unknown or has expired; go back to the application and start again",
        ));
    };
    Ok(login_page(&app, lang, &id, request.provider.as_deref()))
}

fn login_page(
    app: &AppState,
    lang: crate::templates::Lang,
    id: &TicketId,
    provider: Option<&str>,
) -> Response {
    let provider_name = provider
        .map(str::to_owned)
        .unwrap_or_else(|| app.settings.default_provider().as_str().to_owned());
    let page = AuthorizePage {
        lang: lang.tag(),
        t: lang.texts(),
        dev: app.settings.providers.contains(&Idp::Dev),
        provider: &provider_name,
        oidc_request: id.as_str(),
    };
    page_response(StatusCode::OK, app.templates.render("login.html", page))
}

/// An authorization error that cannot be redirected: HTML, 400, no QR.
fn error_page(t: &Texts, lang: &str, why: &str) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<link rel=\"stylesheet\" href=\"/static/qrlogin.css\">\n</head>\n\
         <body class=\"desktop\">\n<main>\n<section class=\"card oidc-error\">\n\
         <h1>Login request refused</h1>\n<p class=\"lead\">{why}</p>\n\
         <p>The application that sent you here is not set up to log in through this service. \
         Go back to it and try again, or tell its administrator.</p>\n</section>\n</main>\n</body>\n</html>\n",
        title = esc(t.title),
        why = esc(why),
    );
    page_response(StatusCode::BAD_REQUEST, html)
}

fn request_id(raw: &str) -> Result<TicketId> {
    raw.parse()
        .map_err(|_| DomainError::Invalid(CompleteError::UnknownRequest.to_string()).into())
}

/// A ticket for an authorization request: the ordinary ticket creation
/// (same body, same answer), then the record that binds the ticket to the
/// request, so only its holder can finish this request.
#[utoipa::path(post, path = "/oauth2/authorize/{request}/tickets", tag = "oidc",
    params(("request" = String, Path, description = "the authorization request's id (from its page)")),
    request_body(content = Option<super::browser_api::CreateTicket>, description = "as POST /api/v1/tickets"),
    responses((status = 201, description = "a new pending ticket bound to the request", body = super::browser_api::TicketCreated),
        (status = 400, description = "unknown or expired authorization request", body = ErrorBody)))]
pub async fn create_ticket(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response> {
    let p = provider(&app)?;
    let request = request_id(&raw)?;
    let store = app.engine.records();
    if p.request(store, &request).await?.is_none() {
        return Err(DomainError::Invalid(CompleteError::UnknownRequest.to_string()).into());
    }
    // A request's ticket is never sealed to a browser key: its token is
    // read here at completion (with the secret), never by the page.
    let body = without_seal(body)?;
    let (status, Json(created)) =
        super::browser_api::create_ticket(State(app.clone()), ip, headers, body).await?;
    let value = serde_json::to_value(&created)
        .map_err(|e| DomainError::Invalid(format!("ticket answer: {e}")))?;
    let ticket = value
        .get("ticket")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<TicketId>().ok())
        .ok_or(DomainError::Unavailable)?;
    p.bind_ticket(store, &request, &ticket).await?;
    Ok((status, axum::Json(value)).into_response())
}

/// The creation body without `seal` (checked as JSON by the creation itself).
fn without_seal(body: RawBody) -> Result<RawBody> {
    if body.0.iter().all(u8::is_ascii_whitespace) {
        return Ok(body);
    }
    let mut value: Value = super::json_body(&body.0)?;
    if let Some(object) = value.as_object_mut() {
        object.remove("seal");
    }
    serde_json::to_vec(&value)
        .map(|bytes| RawBody(bytes.into()))
        .map_err(|e| DomainError::Invalid(format!("invalid JSON body: {e}")).into())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    ticket: String,
}

/// Where the page goes once its ticket is final. Only the holder of the
/// ticket's secret gets an answer, only for the request the ticket was made
/// for, and only once per request.
#[utoipa::path(post, path = "/oauth2/authorize/{request}/complete", tag = "oidc",
    params(("request" = String, Path)),
    request_body = CompleteBody,
    security(("secret" = [])),
    responses((status = 200, description = "`{\"redirect_to\", \"status\"}`: the authorization response URL", body = Object),
        (status = 401, description = "missing or wrong secret", body = ErrorBody),
        (status = 403, description = "the ticket was not made for this request", body = ErrorBody),
        (status = 409, description = "the ticket is not final yet, or the request was completed", body = ErrorBody)))]
pub async fn complete(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CompleteBody>,
) -> Result<Response> {
    let p = provider(&app)?;
    let request = request_id(&raw)?;
    let secret = bearer(&headers).ok_or(DomainError::Unauthorized(
        "Authorization: Bearer {secret} is required",
    ))?;
    let id: TicketId = body
        .ticket
        .parse()
        .map_err(|_| DomainError::TicketNotFound)?;
    let ticket = app.engine.require(&id).await?;
    if !ticket.secret_hash.matches(secret) {
        return Err(DomainError::Unauthorized("wrong secret for this ticket").into());
    }
    let opener = Opener::from_secret(secret).map_err(|_| DomainError::Unavailable)?;
    let done = p
        .complete(
            app.engine.records(),
            app.engine.tokens(),
            &request,
            &ticket,
            &opener,
        )
        .await
        .map_err(|e| match e {
            CompleteError::Store(s) => DomainError::from(s),
            CompleteError::NotBound => {
                DomainError::Forbidden("this ticket was not made for this authorization request")
            }
            CompleteError::UnknownRequest => DomainError::Invalid(e.to_string()),
            CompleteError::NotFinished | CompleteError::AlreadyCompleted => {
                DomainError::WrongState(e.to_string())
            }
        })?;
    let (to, status) = match done {
        Completion::Code(to) => (to, "confirmed"),
        Completion::Denied(to) => (to, "denied"),
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "redirect_to": to, "status": status })),
    )
        .into_response())
}

/// An RFC 6749 §5.2 error: `error`, `error_description`, and the
/// contract's `message`.
fn oauth_error(status: StatusCode, e: &OAuthError, basic: bool) -> Response {
    let body = json!({
        "error": e.code,
        "error_description": e.description,
        "message": e.description,
    });
    let mut response = (status, axum::Json(body)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED && basic {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"qrlogin\""),
        );
    }
    response
}

fn token_outcome(outcome: &'static str) {
    metrics::counter!("qrlogin_oidc_token_requests_total", "outcome" => outcome).increment(1);
}

/// Client credentials of a token request (RFC 6749 §2.3.1).
struct Credentials {
    id: String,
    secret: Option<String>,
    basic: bool,
}

fn credentials(
    headers: &HeaderMap,
    form: &[(String, String)],
) -> std::result::Result<Credentials, OAuthError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim().to_owned());
    if let Some(encoded) = basic {
        if field("client_secret").is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                "use one client authentication method, not Basic and a form secret",
            ));
        }
        let bad = || OAuthError::new("invalid_client", "unreadable Basic credentials");
        let decoded = STANDARD.decode(encoded).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
        // RFC 6749 §2.3.1: both halves are form-urlencoded first.
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let id = decode(id);
        if let Some(form_id) = field("client_id") {
            if form_id != id {
                return Err(OAuthError::new(
                    "invalid_request",
                    "client_id differs from the Basic credentials",
                ));
            }
        }
        return Ok(Credentials {
            id,
            secret: Some(decode(secret)),
            basic: true,
        });
    }
    let id = field("client_id")
        .ok_or_else(|| OAuthError::new("invalid_client", "no client authentication"))?;
    Ok(Credentials {
        id,
        secret: field("client_secret"),
        basic: false,
    })
}

/// The client that these credentials authenticate, or `invalid_client`.
fn authenticate<'a>(
    p: &'a Provider,
    creds: &Credentials,
) -> std::result::Result<&'a Client, OAuthError> {
    let refused = || OAuthError::new("invalid_client", "client authentication failed");
    let client = p.clients.get(&creds.id).ok_or_else(refused)?;
    match (&creds.secret, client.is_public()) {
        (None, true) => Ok(client),
        (Some(secret), false) if client.secret_matches(secret) => Ok(client),
        _ => Err(refused()),
    }
}

#[utoipa::path(post, path = "/oauth2/token", tag = "oidc",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "grant_type=authorization_code, code, redirect_uri, code_verifier; client_id (public) or client authentication"),
    responses((status = 200, description = "access_token, token_type, expires_in, id_token, scope", body = Object),
        (status = 400, description = "RFC 6749 §5.2 error (invalid_grant, invalid_request, unsupported_grant_type)", body = Object),
        (status = 401, description = "invalid_client", body = Object),
        (status = 429, description = "the client's quota is spent (Retry-After)", body = ErrorBody)))]
pub async fn token(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    let p = provider(&app)?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bad_request = |text: &str| {
        token_outcome("invalid_request");
        Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            &OAuthError::new("invalid_request", text),
            false,
        ))
    };
    if !is_form {
        return bad_request("the body must be application/x-www-form-urlencoded");
    }
    let form = form_pairs(&body);
    let mut names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return bad_request(&format!("{} is repeated", w[0]));
    }
    let creds = match credentials(&headers, &form) {
        Ok(c) => c,
        Err(e) => {
            let status = if e.code == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            token_outcome(e.code);
            return Ok(oauth_error(status, &e, true));
        }
    };
    // The quota is drawn before the secret is checked, so guessing a
    // client's secret is as slow as its quota (per caller address).
    if p.clients.get(&creds.id).is_some() {
        if let Err(retry_after) = p.check_rate(&creds.id, ip) {
            token_outcome("rate_limited");
            return Err(DomainError::RateLimited {
                message: "too many token requests for this client, slow down",
                retry_after,
            }
            .into());
        }
    }
    let client = match authenticate(p, &creds) {
        Ok(c) => c,
        Err(e) => {
            token_outcome("invalid_client");
            return Ok(oauth_error(StatusCode::UNAUTHORIZED, &e, creds.basic));
        }
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        Some("authorization_code") => {}
        None => return bad_request("grant_type is missing"),
        Some(_) => {
            token_outcome("unsupported_grant_type");
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                &OAuthError::new(
                    "unsupported_grant_type",
                    "only authorization_code is served",
                ),
                false,
            ));
        }
    }
    let (Some(code), Some(redirect_uri)) = (field("code"), field("redirect_uri")) else {
        return bad_request("code and redirect_uri are required");
    };
    let redeemed = p
        .redeem(
            app.engine.records(),
            app.engine.tokens(),
            client,
            code,
            redirect_uri,
            field("code_verifier"),
        )
        .await;
    match redeemed {
        Ok(tokens) => {
            token_outcome("issued");
            Ok((
                [
                    (header::CACHE_CONTROL, "no-store"),
                    (header::PRAGMA, "no-cache"),
                ],
                axum::Json(tokens),
            )
                .into_response())
        }
        Err(RedeemError::OAuth(e)) => {
            token_outcome(e.code);
            Ok(oauth_error(StatusCode::BAD_REQUEST, &e, false))
        }
        Err(RedeemError::Store(e)) => {
            token_outcome("unavailable");
            Err(e.into())
        }
        Err(RedeemError::Sign(e)) => {
            tracing::error!(error = %e, "ID token signing failed");
            token_outcome("unavailable");
            Err(DomainError::Unavailable.into())
        }
    }
}

#[utoipa::path(get, path = "/oauth2/userinfo", tag = "oidc", security(("access_token" = [])),
    responses((status = 200, description = "sub, and with profile name and picture", body = Object),
        (status = 401, description = "RFC 6750 error (WWW-Authenticate)", body = Object)))]
pub async fn userinfo_get(state: State<AppState>, headers: HeaderMap) -> Result<Response> {
    userinfo(state, headers).await
}

#[utoipa::path(post, path = "/oauth2/userinfo", tag = "oidc", security(("access_token" = [])),
    responses((status = 200, description = "sub, and with profile name and picture", body = Object),
        (status = 401, description = "RFC 6750 error (WWW-Authenticate)", body = Object)))]
pub async fn userinfo_post(state: State<AppState>, headers: HeaderMap) -> Result<Response> {
    userinfo(state, headers).await
}

/// RFC 6750 §3: a missing token gets a bare challenge, a bad one
/// `invalid_token`.
async fn userinfo(State(app): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let p = provider(&app)?;
    let challenge = |error: Option<&str>| {
        let value = match error {
            Some(e) => format!("Bearer realm=\"qrlogin\", error=\"{e}\""),
            None => "Bearer realm=\"qrlogin\"".to_owned(),
        };
        let body = json!({
            "error": error.unwrap_or("invalid_request"),
            "message": "a valid access token is required (Authorization: Bearer …)",
        });
        let mut r = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    };
    let Some(token) = bearer(&headers) else {
        return Ok(challenge(None));
    };
    match p.userinfo(token) {
        Ok(info) => Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(info)).into_response()),
        Err(_) => Ok(challenge(Some("invalid_token"))),
    }
}
