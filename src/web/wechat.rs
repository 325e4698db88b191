//! The HTTP side of the WeChat redirect flows: the callbacks WeChat sends
//! browsers to, and the `wechat-web` redemption. The flow itself is in
//! `providers::wechat::oauth`. Every callback outcome is a page or a
//! redirect, never a JSON error or a 500: the reader is a person in a
//! browser. The redemption is JSON API, with the contract's errors.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::headers::page_response;
use super::lang::page_lang;
use super::pages::PageQuery;
use super::phone::{phone_binding, phone_or_new};
use super::render::{Message, confirm_page, final_page, message_page};
use super::view::StateView;
use super::{AppState, Json, TicketPath, bearer};
use crate::error::{ErrorBody, Result};
use crate::providers::wechat::oauth::{
    self, Callback, OAUTH_CALLBACK, PhoneOutcome, WEB_CALLBACK, WebOutcome,
};
use crate::templates::{Lang, Texts};
use crate::ticket::Provider;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(OAUTH_CALLBACK, get(oauth_callback))
        .route(WEB_CALLBACK, get(web_callback))
        .route("/api/v1/tickets/{ticket}/wechat-web", post(redeem_web_code))
}

/// An unparsable query is simply a callback without code or state.
fn callback_of(
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Callback {
    query.map(|Query(q)| q).unwrap_or_default()
}

/// `GET /wechat/oauth/callback?code&state`: the phone, back from WeChat.
async fn oauth_callback(
    State(app): State<AppState>,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
    page: PageQuery,
    headers: HeaderMap,
) -> Response {
    let lang = page_lang(page.lang(), &headers);
    let callback = callback_of(query);
    let Some((phone, set_cookie)) = phone_or_new(&app.settings, &headers) else {
        return message_page(&app, lang, Message::Retry, None);
    };
    let binding = phone_binding(&phone);
    let mut response = match oauth::phone_callback(&app.providers(), &callback, &binding).await {
        PhoneOutcome::Confirm(ticket) => confirm_page(&app, lang, &ticket, &phone, false),
        PhoneOutcome::Final(ticket) => final_page(&app, lang, ticket.as_deref()),
        PhoneOutcome::Notice(notice) => message_page(&app, lang, notice.into(), None),
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /wechat/web/callback?code&state`: a browser back from WeChat's QR
/// page. It may not be the browser that made the ticket (a forwarded
/// link), so nothing changes here: a live state gets the hand-off page,
/// whose script gives `code` and `state` to the login page (see
/// `handoff_page`); anything else an "expired" page.
async fn web_callback(
    State(app): State<AppState>,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
    page: PageQuery,
    headers: HeaderMap,
) -> Response {
    let lang = page_lang(page.lang(), &headers);
    match oauth::web_callback(&app.providers(), &callback_of(query)).await {
        WebOutcome::HandOff => handoff_page(&app, lang),
        WebOutcome::Notice(notice) => message_page(&app, lang, notice.into(), None),
    }
}

#[derive(Serialize)]
struct HandoffPage<'a> {
    lang: &'static str,
    t: &'static Texts,
    dev: bool,
    origins: &'a str,
    login: &'a str,
}

/// The origins a hand-off may post to: the service's own and
/// `QRLOGIN_ALLOWED_ORIGINS`, never `*` (a `*` there allows any Origin for
/// CORS, but a code is never posted to whoever frames the callback).
fn handoff_origins(app: &AppState) -> Vec<String> {
    let own = std::iter::once(app.settings.http.public_url());
    own.chain(app.settings.http.allowed_origins.iter().cloned())
        .filter_map(|o| url::Url::parse(o.trim_end_matches('/')).ok())
        .map(|u| u.origin())
        .filter(url::Origin::is_tuple)
        .map(|o| o.ascii_serialization())
        .fold(Vec::new(), |mut all, o| {
            if !all.contains(&o) {
                all.push(o);
            }
            all
        })
}

/// The hand-off page. Its static script (the CSP forbids inline script)
/// reads `code` and `state` from the URL: inside WeChat's iframe it posts
/// them to the parent, addressed to each allowed origin (a browser
/// delivers only to the one that matches the parent); at top level it goes
/// back to the login page with them in the fragment, which is never sent
/// to a server, so the code reaches no log or `Referer`. The page may be
/// framed only by those same origins and sends no referrer.
fn handoff_page(app: &AppState, lang: Lang) -> Response {
    let origins = handoff_origins(app);
    let login = format!("/?provider={}", Provider::WechatWeb.as_str());
    let joined = origins.join(" ");
    let page = HandoffPage {
        lang: lang.tag(),
        t: lang.texts(),
        dev: app.settings.providers.contains(&Provider::Dev),
        origins: &joined,
        login: &login,
    };
    let mut response = page_response(
        StatusCode::OK,
        app.templates.render("wechat_handoff.html", page),
    );
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         frame-ancestors 'self' {joined}; base-uri 'none'; form-action 'none'"
    );
    let h = response.headers_mut();
    h.remove(header::X_FRAME_OPTIONS);
    match HeaderValue::from_str(&csp) {
        Ok(csp) => {
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        // Origins come from validated settings; should one not fit a
        // header, keep the page's default policy (never framed).
        Err(_) => {
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
    }
    response
}

/// `{"code": …, "state": …}`: what WeChat's callback handed the page.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The `code` WeChat's callback carried.
    code: String,
    /// The `state` it came back with (the one in the ticket's
    /// `authorize_url`): a code is redeemed only for the ticket it was
    /// issued to.
    #[serde(default)]
    state: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/wechat-web", tag = "browser",
    params(("ticket" = String, Path)), security(("secret" = [])), request_body = RedeemBody,
    responses((status = 200, description = "confirmed; the token arrives on the socket / poll", body = StateView),
        (status = 400, description = "bad input, or WeChat refused the code (scan again)", body = ErrorBody),
        (status = 401, description = "missing or wrong secret", body = ErrorBody),
        (status = 403, description = "the code came back with another ticket's state", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "the ticket is no longer pending", body = ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = ErrorBody),
        (status = 502, description = "WeChat answered with an error or not at all", body = ErrorBody)))]
pub async fn redeem_web_code(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    headers: HeaderMap,
    Json(body): Json<RedeemBody>,
) -> Result<Json<StateView>> {
    let ticket = oauth::redeem_web_code(
        &app.providers(),
        &id,
        bearer(&headers),
        &body.code,
        body.state.as_deref().unwrap_or(""),
    )
    .await?;
    Ok(Json(super::view::without_token(StateView::of(Some(
        &ticket,
    )))))
}
