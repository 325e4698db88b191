//! HTML pages: the desktop login page, the static client, and the phone
//! pages of the `dev` provider (and the pages every provider shares:
//! expired, done, cancelled).
//!
//! A phone is recognised by a random `qrl_phone` cookie (`__Host-qrl_phone`
//! when the public URL is https, so no sibling host can plant one). Its
//! value is always one the service drew itself: nothing taken from a URL (a
//! one-time link's key, a `state`) ever becomes a cookie, so nobody who
//! handed a phone a link knows its cookie. The ticket is bound to the phone
//! that opened it first (`scanned_by`), and every form carries a CSRF token
//! derived from the ticket and that cookie, so neither a bare POST nor
//! another phone can confirm.

use axum::Router;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::view::rfc3339;
use super::{AppState, TicketPath};
use crate::config::Settings;
use crate::templates::{Lang, Texts};
use crate::ticket::{Identity, Provider, Status, Ticket, TicketId, UserInfo};
use crate::useragent;

const PHONE_COOKIE: &str = "qrl_phone";
/// The cookie's name over https: `__Host-` makes browsers take it only with
/// `Secure`, `Path=/` and no `Domain`, from this very host.
const HOST_PHONE_COOKIE: &str = "__Host-qrl_phone";

fn https(settings: &Settings) -> bool {
    settings.public_url().starts_with("https://")
}

/// The phone cookie's name for this deployment.
pub fn phone_cookie_name(settings: &Settings) -> &'static str {
    if https(settings) {
        HOST_PHONE_COOKIE
    } else {
        PHONE_COOKIE
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(show_login_page))
        .route(
            "/static/qrlogin.js",
            get(|| static_file(JAVASCRIPT, WIDGET)),
        )
        .route(
            "/static/login.js",
            get(|| static_file(JAVASCRIPT, include_str!("../../static/login.js"))),
        )
        .route(
            "/static/wechat-handoff.js",
            get(|| static_file(JAVASCRIPT, include_str!("../../static/wechat-handoff.js"))),
        )
        .route(&widget_path(), get(serve_versioned_widget))
        .route("/static/qrlogin.json", get(describe_widget))
        .route(
            "/static/qrlogin.css",
            get(|| {
                static_file(
                    "text/css; charset=utf-8",
                    include_str!("../../static/qrlogin.css"),
                )
            }),
        )
        .route("/m/{ticket}", get(show_phone_page))
        .route("/m/{ticket}/confirm", post(confirm_from_phone))
        .route("/m/{ticket}/deny", post(deny_from_phone))
}

/// The scripts' media type. The charset is named because a classic script
/// is decoded in the *host page's* encoding when its response names none:
/// on a page in GBK or windows-1252 the widget's "…" and its Chinese
/// texts came out as mojibake.
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

async fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The widget's bytes, as every route serves them.
const WIDGET: &str = include_str!("../../static/qrlogin.js");

/// The widget's pinned URL: the version and a hash of the bytes, so its
/// bytes never change under it (an edit is a new URL even without a new
/// release: it is served `immutable`), and a product page can pin it with
/// an SRI hash.
pub fn widget_path() -> String {
    let digest = sha2::Sha256::digest(WIDGET.as_bytes());
    format!(
        "/static/qrlogin.v{}-{}.js",
        env!("CARGO_PKG_VERSION"),
        hex::encode(&digest[..6])
    )
}

/// The SRI value (`sha384-…`) of the bytes `widget_path()` serves,
/// computed from the embedded file, so it cannot drift from them.
pub fn widget_integrity() -> String {
    use base64::Engine as _;
    let digest = sha2::Sha384::digest(WIDGET.as_bytes());
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

async fn serve_versioned_widget() -> Response {
    (
        [
            (header::CONTENT_TYPE, JAVASCRIPT),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            // Loaded by pages on other origins with `crossorigin` (SRI
            // needs a CORS-readable response).
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        WIDGET,
    )
        .into_response()
}

/// Where the pinned widget is and its SRI hash, for the embed snippet.
async fn describe_widget() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        axum::Json(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "url": widget_path(),
            "integrity": widget_integrity(),
        })),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    lang: Option<String>,
    provider: Option<String>,
    /// The one-time key of a `wechat-mp` confirm link.
    k: Option<String>,
}

/// A page's query: malformed or with a parameter given twice, the answer
/// is an HTML page (400) in the browser's language, like every page error.
impl FromRequestParts<AppState> for PageQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        super::query_of(&parts.uri).map_err(|_| {
            let lang = page_lang(None, &parts.headers);
            message_page(app, lang, Message::BadLink, None)
        })
    }
}

impl PageQuery {
    /// `?lang=`, if given.
    pub fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }
}

/// The page language from `?lang=` and `Accept-Language`.
pub fn page_lang(query: Option<&str>, headers: &HeaderMap) -> Lang {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Lang::choose(query, accept)
}

/// Headers every page carries: no inline script, never framed, and (since
/// phone URLs carry a ticket) no referrer.
pub fn page_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
             connect-src 'self' ws: wss:; frame-src https://open.weixin.qq.com; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Serialize)]
struct LoginPage<'a> {
    lang: &'static str,
    t: &'static Texts,
    dev: bool,
    provider: &'a str,
}

async fn show_login_page(
    State(app): State<AppState>,
    q: PageQuery,
    headers: HeaderMap,
) -> Response {
    let lang = page_lang(q.lang.as_deref(), &headers);
    let provider = q
        .provider
        .as_deref()
        .and_then(|p| p.parse::<Provider>().ok())
        .filter(|p| app.settings.providers.contains(p))
        .unwrap_or_else(|| app.settings.default_provider());
    let page = LoginPage {
        lang: lang.tag(),
        t: lang.texts(),
        dev: dev_mode(&app.settings),
        provider: provider.as_str(),
    };
    let mut response = page_response(StatusCode::OK, app.templates.render("login.html", page));
    if let Some(csp) = login_page_csp(&app) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The login page's policy: as every page's, except that it frames
/// WeChat's QR page (wherever `QRLOGIN_WECHAT_OPEN_BASE` points) and, once
/// the person approved, our own `wechat-web` callback inside that frame.
fn login_page_csp(app: &AppState) -> Option<HeaderValue> {
    let open = url::Url::parse(&app.wechat.open_url("/")).ok()?.origin();
    let open = if open.is_tuple() {
        open.ascii_serialization()
    } else {
        String::new()
    };
    HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
         connect-src 'self' ws: wss:; frame-src 'self' {open}; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'self'"
    ))
    .ok()
}

fn dev_mode(settings: &Settings) -> bool {
    settings.providers.contains(&Provider::Dev)
}

/// What a message page says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message {
    Expired,
    Done,
    Denied,
    Taken,
    Forbidden,
    OpenInWechat,
    OpenInMiniprogram,
    OpenInApp,
    Retry,
    Rescan,
    BadLink,
}

#[derive(Serialize)]
struct MessagePage<'a> {
    lang: &'static str,
    t: &'static Texts,
    dev: bool,
    kind: &'static str,
    heading: &'static str,
    body: &'static str,
    qr_svg: Option<&'a str>,
}

/// A phone message page. `qr_svg` shows the code again (for "open this in
/// WeChat" pages).
pub fn message_page(
    app: &AppState,
    lang: Lang,
    message: Message,
    qr_svg: Option<&str>,
) -> Response {
    let t = lang.texts();
    let (kind, heading, body, status) = match message {
        Message::Expired => (
            "expired",
            t.expired_heading,
            t.expired_body,
            StatusCode::NOT_FOUND,
        ),
        Message::Done => ("done", t.done_heading, t.done_body, StatusCode::OK),
        Message::Denied => ("denied", t.denied_heading, t.denied_body, StatusCode::OK),
        Message::Taken => ("taken", t.taken_heading, t.taken_body, StatusCode::CONFLICT),
        Message::Forbidden => (
            "forbidden",
            t.forbidden_heading,
            t.forbidden_body,
            StatusCode::FORBIDDEN,
        ),
        Message::OpenInWechat => ("wechat", t.wechat_heading, t.wechat_body, StatusCode::OK),
        Message::OpenInMiniprogram => (
            "miniprogram",
            t.miniprogram_heading,
            t.miniprogram_body,
            StatusCode::OK,
        ),
        Message::OpenInApp => ("app", t.app_heading, t.app_body, StatusCode::OK),
        Message::Retry => (
            "retry",
            t.retry_heading,
            t.retry_body,
            StatusCode::BAD_GATEWAY,
        ),
        Message::Rescan => (
            "rescan",
            t.rescan_heading,
            t.rescan_body,
            StatusCode::BAD_REQUEST,
        ),
        Message::BadLink => (
            "bad-link",
            t.bad_link_heading,
            t.bad_link_body,
            StatusCode::BAD_REQUEST,
        ),
    };
    let page = MessagePage {
        lang: lang.tag(),
        t,
        dev: dev_mode(&app.settings),
        kind,
        heading,
        body,
        qr_svg,
    };
    page_response(status, app.templates.render("phone_message.html", page))
}

/// The page for a ticket that is finished or gone.
pub fn final_page(app: &AppState, lang: Lang, ticket: Option<&Ticket>) -> Response {
    let message = match ticket.map(|t| t.status_at(crate::ticket::now_ms())) {
        Some(Status::Confirmed) => Message::Done,
        Some(Status::Denied) => Message::Denied,
        _ => Message::Expired,
    };
    message_page(app, lang, message, None)
}

/// The phone cookie from the request, if any (under this deployment's name
/// only: over https a plain `qrl_phone`, which any sibling host could set,
/// is ignored).
pub fn phone_cookie(settings: &Settings, headers: &HeaderMap) -> Option<String> {
    let name = phone_cookie_name(settings);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty() && v.len() <= 64)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` for a fresh phone id.
pub fn new_phone_cookie(settings: &Settings) -> (String, HeaderValue) {
    let id = crate::ticket::Secret::generate().expose().to_owned();
    let cookie = phone_cookie_header(settings, &id);
    (id, cookie)
}

/// A `Set-Cookie` making `id` the phone's cookie. `id` is always a value
/// the service drew (`Secret::generate`), never one from a request.
pub fn phone_cookie_header(settings: &Settings, id: &str) -> HeaderValue {
    let secure = if https(settings) { "; Secure" } else { "" };
    let name = phone_cookie_name(settings);
    let value = format!("{name}={id}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The binding stored as `scanned_by` for a phone cookie (a hash: the store
/// never holds the cookie itself).
pub fn phone_binding(phone: &str) -> String {
    format!(
        "phone:{}",
        hex::encode(&Sha256::digest(phone.as_bytes())[..16])
    )
}

/// The CSRF token of `ticket`'s forms on `phone`.
pub fn csrf_token(app: &AppState, ticket: &TicketId, phone: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&app.page_key).unwrap_or_else(|_| unreachable_hmac());
    mac.update(ticket.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(phone.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC takes keys of any length; this is never reached.
    <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap_or_else(|_| unreachable_hmac())
}

fn csrf_ok(app: &AppState, ticket: &TicketId, phone: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    csrf_token(app, ticket, phone)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

#[derive(Serialize)]
struct RequesterView {
    browser: String,
    os: String,
    ip: String,
    asked_at: String,
    asked_at_text: String,
}

impl RequesterView {
    fn of(ticket: &Ticket) -> Self {
        let (browser, os) = useragent::describe(&ticket.requester.user_agent);
        let asked_at = rfc3339(ticket.created_at);
        let asked_at_text = asked_at.replace('T', " ").replace('Z', " UTC");
        Self {
            browser,
            os,
            ip: ticket.requester.ip.clone(),
            asked_at,
            asked_at_text,
        }
    }
}

#[derive(Serialize)]
struct ConfirmPage<'a> {
    lang: &'static str,
    t: &'static Texts,
    dev: bool,
    requester: RequesterView,
    csrf: String,
    ask_name: bool,
    name: &'a str,
    confirm_action: String,
    deny_action: String,
}

/// The confirm page for `ticket` on `phone`.
pub fn confirm_page(
    app: &AppState,
    lang: Lang,
    ticket: &Ticket,
    phone: &str,
    ask_name: bool,
) -> Response {
    let nickname = ticket
        .user
        .as_ref()
        .and_then(|u| u.nickname.as_deref())
        .unwrap_or("");
    let page = ConfirmPage {
        lang: lang.tag(),
        t: lang.texts(),
        dev: dev_mode(&app.settings),
        requester: RequesterView::of(ticket),
        csrf: csrf_token(app, &ticket.id, phone),
        ask_name,
        name: nickname,
        confirm_action: format!("/m/{}/confirm", ticket.id),
        deny_action: format!("/m/{}/deny", ticket.id),
    };
    page_response(
        StatusCode::OK,
        app.templates.render("phone_confirm.html", page),
    )
}

/// `GET /m/{ticket}`: what the QR opens.
async fn show_phone_page(
    State(app): State<AppState>,
    path: Result<TicketPath, crate::error::Error>,
    q: PageQuery,
    headers: HeaderMap,
) -> Response {
    let lang = page_lang(q.lang.as_deref(), &headers);
    let Ok(TicketPath(id)) = path else {
        return message_page(&app, lang, Message::Expired, None);
    };
    let ticket = match app.engine.get(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return message_page(&app, lang, Message::Expired, None),
        Err(_) => return message_page(&app, lang, Message::Retry, None),
    };
    match ticket.provider {
        Provider::Dev => show_dev_page(app, lang, ticket, &headers).await,
        Provider::Miniprogram => message_page(&app, lang, Message::OpenInMiniprogram, None),
        // The app's QR never points here; whoever types the path learns
        // only where to scan, and nothing on this page confirms.
        Provider::App => message_page(&app, lang, Message::OpenInApp, None),
        Provider::WechatOauth => show_oauth_page(app, lang, ticket, &headers).await,
        Provider::WechatMp => show_mp_link(app, lang, ticket, q.k.as_deref(), &headers).await,
        Provider::WechatWeb => {
            let svg = format!("/api/v1/tickets/{}/qr.svg", ticket.id);
            message_page(&app, lang, Message::OpenInWechat, Some(&svg))
        }
    }
}

/// `wechat-oauth`: inside WeChat's browser a pending ticket goes to WeChat's
/// authorization (which comes back to `/wechat/oauth/callback`); elsewhere
/// the page says to scan with WeChat and shows the code again.
async fn show_oauth_page(
    app: AppState,
    lang: Lang,
    ticket: Ticket,
    headers: &HeaderMap,
) -> Response {
    let in_wechat = super::user_agent(headers)
        .to_ascii_lowercase()
        .contains("micromessenger");
    if !in_wechat {
        let svg = format!("/api/v1/tickets/{}/qr.svg", ticket.id);
        return message_page(&app, lang, Message::OpenInWechat, Some(&svg));
    }
    let cookie = phone_cookie(&app.settings, headers);
    let binding = cookie.clone().map(|phone| (phone_binding(&phone), phone));
    match ticket.status_at(crate::ticket::now_ms()) {
        Status::Pending => {
            // The phone is known (its cookie set, and bound as the ticket's
            // opener) before it leaves for WeChat, so that a refusal coming
            // back can be told from a bare GET.
            let (phone, set_cookie) = match cookie {
                Some(phone) => (phone, None),
                None => {
                    let (phone, header) = new_phone_cookie(&app.settings);
                    (phone, Some(header))
                }
            };
            if crate::providers::wechat::oauth::bind_opener(&app, &ticket, &phone_binding(&phone))
                .await
                .is_err()
            {
                return message_page(&app, lang, Message::Retry, None);
            }
            let url = crate::providers::wechat::oauth::authorize_url(&app, &ticket.id);
            let mut response = page_response(StatusCode::FOUND, String::new());
            match HeaderValue::from_str(&url) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                    if let Some(cookie) = set_cookie {
                        response.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    response
                }
                Err(_) => message_page(&app, lang, Message::Retry, None),
            }
        }
        Status::Scanned => match binding {
            Some((binding, phone)) if ticket.scanned_by.as_deref() == Some(binding.as_str()) => {
                confirm_page(&app, lang, &ticket, &phone, false)
            }
            _ => message_page(&app, lang, Message::Taken, None),
        },
        _ => final_page(&app, lang, Some(&ticket)),
    }
}

/// `wechat-mp`: the one-time link of the passive reply (`?k=`) shows the
/// confirm page once, to the phone that opens it first; see
/// `providers::wechat::mp`.
async fn show_mp_link(
    app: AppState,
    lang: Lang,
    ticket: Ticket,
    key: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    use crate::providers::wechat::mp::{LinkOutcome, open_link};
    let cookie = phone_cookie(&app.settings, headers);
    match open_link(&app, &ticket, key, cookie.as_deref()).await {
        LinkOutcome::Confirm { phone, new_cookie } => {
            let mut response = confirm_page(&app, lang, &ticket, &phone, false);
            if new_cookie {
                response.headers_mut().append(
                    header::SET_COOKIE,
                    phone_cookie_header(&app.settings, &phone),
                );
            }
            response
        }
        LinkOutcome::Message(Message::OpenInWechat) => {
            let svg = format!("/api/v1/tickets/{}/qr.svg", ticket.id);
            message_page(&app, lang, Message::OpenInWechat, Some(&svg))
        }
        LinkOutcome::Message(message) => message_page(&app, lang, message, None),
        LinkOutcome::Final => final_page(&app, lang, Some(&ticket)),
    }
}

/// The dev provider: opening the page is the scan; the phone is bound by
/// its cookie.
async fn show_dev_page(app: AppState, lang: Lang, ticket: Ticket, headers: &HeaderMap) -> Response {
    let (phone, set_cookie) = match phone_cookie(&app.settings, headers) {
        Some(phone) => (phone, None),
        None => {
            let (phone, cookie) = new_phone_cookie(&app.settings);
            (phone, Some(cookie))
        }
    };
    let binding = phone_binding(&phone);
    let ticket = match ticket.status_at(crate::ticket::now_ms()) {
        Status::Pending => match app
            .engine
            .scan(&ticket.id, Some(binding.clone()), None, None)
            .await
        {
            Ok(t) => t,
            // Someone else got there first; show what they left.
            Err(_) => match app.engine.get(&ticket.id).await {
                Ok(Some(t)) => t,
                _ => return message_page(&app, lang, Message::Expired, None),
            },
        },
        _ => ticket,
    };
    let mut response = match ticket.status_at(crate::ticket::now_ms()) {
        Status::Scanned if ticket.scanned_by.as_deref() == Some(binding.as_str()) => {
            confirm_page(&app, lang, &ticket, &phone, true)
        }
        Status::Scanned | Status::Pending => message_page(&app, lang, Message::Taken, None),
        _ => final_page(&app, lang, Some(&ticket)),
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: Option<String>,
}

/// The phone's answer, checked: the cookie's phone must be the scanner and
/// the form must carry that phone's CSRF token.
async fn phone_answer(
    app: &AppState,
    lang: Lang,
    path: Result<TicketPath, crate::error::Error>,
    headers: &HeaderMap,
    form: &PhoneForm,
) -> Result<(Ticket, String), Response> {
    let Ok(TicketPath(id)) = path else {
        return Err(message_page(app, lang, Message::Expired, None));
    };
    let ticket = match app.engine.get(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Err(message_page(app, lang, Message::Expired, None)),
        Err(_) => return Err(message_page(app, lang, Message::Retry, None)),
    };
    let Some(phone) = phone_cookie(&app.settings, headers) else {
        return Err(message_page(app, lang, Message::Forbidden, None));
    };
    if !csrf_ok(app, &id, &phone, &form.csrf) {
        return Err(message_page(app, lang, Message::Forbidden, None));
    }
    if ticket.provider == Provider::WechatMp {
        return match crate::providers::wechat::mp::answer_binding(app, &ticket, &phone).await {
            Ok(binding) => Ok((ticket, binding)),
            Err(_) => Err(message_page(app, lang, Message::Retry, None)),
        };
    }
    Ok((ticket, phone_binding(&phone)))
}

fn outcome_page(app: &AppState, lang: Lang, result: crate::error::Result<Ticket>) -> Response {
    use crate::error::Error;
    match result {
        Ok(t) => final_page(app, lang, Some(&t)),
        Err(Error::Forbidden(_)) => message_page(app, lang, Message::Taken, None),
        Err(Error::InvalidTransition(_)) | Err(Error::TicketNotFound) => {
            message_page(app, lang, Message::Expired, None)
        }
        Err(_) => message_page(app, lang, Message::Retry, None),
    }
}

async fn confirm_from_phone(
    State(app): State<AppState>,
    path: Result<TicketPath, crate::error::Error>,
    q: PageQuery,
    headers: HeaderMap,
    form: Result<Form<PhoneForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = page_lang(q.lang.as_deref(), &headers);
    let Ok(Form(form)) = form else {
        return message_page(&app, lang, Message::Forbidden, None);
    };
    let (ticket, binding) = match phone_answer(&app, lang, path, &headers, &form).await {
        Ok(ok) => ok,
        Err(page) => return page,
    };
    let result = match ticket.provider {
        Provider::Dev => {
            let name: String = form
                .name
                .as_deref()
                .unwrap_or("")
                .trim()
                .chars()
                .take(64)
                .collect();
            let name = if name.is_empty() {
                "dev user".to_owned()
            } else {
                name
            };
            let subject = Identity {
                sub: format!("dev:{name}"),
                idp: "dev".into(),
                ..Identity::default()
            };
            let user = UserInfo {
                nickname: Some(name),
                avatar: None,
            };
            app.engine
                .confirm(&ticket.id, Some(binding), &subject, Some(user), None)
                .await
        }
        _ => crate::providers::confirm_from_phone(&app, &ticket, binding).await,
    };
    let after = after_change(&app, &ticket.id, result).await;
    outcome_page(&app, lang, after)
}

async fn deny_from_phone(
    State(app): State<AppState>,
    path: Result<TicketPath, crate::error::Error>,
    q: PageQuery,
    headers: HeaderMap,
    form: Result<Form<PhoneForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = page_lang(q.lang.as_deref(), &headers);
    let Ok(Form(form)) = form else {
        return message_page(&app, lang, Message::Forbidden, None);
    };
    let (ticket, binding) = match phone_answer(&app, lang, path, &headers, &form).await {
        Ok(ok) => ok,
        Err(page) => return page,
    };
    let result = app.engine.deny(&ticket.id, Some(binding)).await;
    let after = after_change(&app, &ticket.id, result).await;
    outcome_page(&app, lang, after)
}

/// On a refused change, the page shows the ticket as it now is (a second
/// tap on Confirm shows "Logged in", not an error).
async fn after_change(
    app: &AppState,
    id: &TicketId,
    result: crate::error::Result<Ticket>,
) -> crate::error::Result<Ticket> {
    match result {
        Err(crate::error::Error::InvalidTransition(_)) => match app.engine.get(id).await {
            Ok(Some(t)) if t.status.is_terminal() => Ok(t),
            _ => Err(crate::error::Error::TicketNotFound),
        },
        other => other,
    }
}
