//! The HTML pages a person sees: the desktop login page and the phone
//! pages the QR opens (`/m/{ticket}`, its confirm and deny forms). Each
//! handler asks the ticket's provider what to show and renders its answer;
//! cookies and CSRF are `phone`'s, the HTML `render`'s.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::headers::{login_page_csp, page_response};
use super::lang::page_lang;
use super::phone::{csrf_ok, new_phone_cookie, phone_binding, phone_cookie, phone_or_new};
use super::render::{Message, confirm_page, dev_mode, final_page, message_page};
use super::{AppState, TicketPath};
use crate::providers::Notice;
use crate::providers::dev::{self, Opened};
use crate::providers::wechat::{mp, oauth};
use crate::templates::{Lang, Texts};
use crate::ticket::{Provider, Status, Ticket, TicketId, TransitionError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(show_login_page))
        .route("/m/{ticket}", get(show_phone_page))
        .route("/m/{ticket}/confirm", post(confirm_from_phone))
        .route("/m/{ticket}/deny", post(deny_from_phone))
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
    ticket: Arc<Ticket>,
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
                None => match new_phone_cookie(&app.settings) {
                    Some((phone, header)) => (phone, Some(header)),
                    None => return message_page(&app, lang, Message::Retry, None),
                },
            };
            let providers = app.providers();
            if oauth::bind_opener(&providers, &ticket, &phone_binding(&phone))
                .await
                .is_err()
            {
                return message_page(&app, lang, Message::Retry, None);
            }
            let Some(url) = oauth::authorize_url(&providers, &ticket.id) else {
                return message_page(&app, lang, Message::Retry, None);
            };
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
    ticket: Arc<Ticket>,
    key: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    use crate::providers::wechat::mp::{LinkOutcome, Phone, open_link};
    let current = phone_cookie(&app.settings, headers).map(|phone| Phone {
        binding: phone_binding(&phone),
        cookie: (phone, None),
    });
    // Drawn now, set only if this opening redeems the link.
    let Some((phone, set_cookie)) = new_phone_cookie(&app.settings) else {
        return message_page(&app, lang, Message::Retry, None);
    };
    let fresh = Phone {
        binding: phone_binding(&phone),
        cookie: (phone, Some(set_cookie)),
    };
    match open_link(&app.providers(), &ticket, key, current, fresh).await {
        LinkOutcome::Confirm {
            cookie: (phone, set_cookie),
            ..
        } => {
            let mut response = confirm_page(&app, lang, &ticket, &phone, false);
            if let Some(cookie) = set_cookie {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        LinkOutcome::Notice(Notice::OpenInWechat) => {
            let svg = format!("/api/v1/tickets/{}/qr.svg", ticket.id);
            message_page(&app, lang, Message::OpenInWechat, Some(&svg))
        }
        LinkOutcome::Notice(notice) => message_page(&app, lang, notice.into(), None),
        LinkOutcome::Final => final_page(&app, lang, Some(&ticket)),
    }
}

/// The dev provider: opening the page is the scan; the phone is bound by
/// its cookie.
async fn show_dev_page(
    app: AppState,
    lang: Lang,
    ticket: Arc<Ticket>,
    headers: &HeaderMap,
) -> Response {
    let Some((phone, set_cookie)) = phone_or_new(&app.settings, headers) else {
        return message_page(&app, lang, Message::Retry, None);
    };
    let mut response = match dev::open(&app.engine, ticket, &phone_binding(&phone)).await {
        Opened::Confirm(ticket) => confirm_page(&app, lang, &ticket, &phone, true),
        Opened::Taken => message_page(&app, lang, Message::Taken, None),
        Opened::Expired => return message_page(&app, lang, Message::Expired, None),
        Opened::Final(ticket) => final_page(&app, lang, Some(&ticket)),
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
) -> Result<(Arc<Ticket>, String), Response> {
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
        let mine = phone_binding(&phone);
        return match mp::answer_binding(&app.providers(), &ticket, &mine).await {
            Ok(binding) => Ok((ticket, binding)),
            Err(_) => Err(message_page(app, lang, Message::Retry, None)),
        };
    }
    Ok((ticket, phone_binding(&phone)))
}

fn outcome_page(
    app: &AppState,
    lang: Lang,
    result: crate::engine::Result<Arc<Ticket>>,
) -> Response {
    use crate::engine::Error;
    match result {
        Ok(t) => final_page(app, lang, Some(&t)),
        Err(Error::Forbidden(_) | Error::Transition(TransitionError::NotScanner)) => {
            message_page(app, lang, Message::Taken, None)
        }
        Err(Error::Transition(TransitionError::Invalid(..)) | Error::TicketNotFound) => {
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
        Provider::Dev => dev::confirm(&app.engine, &ticket, binding, form.name.as_deref()).await,
        _ => crate::providers::confirm_from_phone(&app.providers(), &ticket, binding).await,
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
    result: crate::engine::Result<Arc<Ticket>>,
) -> crate::engine::Result<Arc<Ticket>> {
    use crate::engine::Error;
    match result {
        Err(Error::Transition(TransitionError::Invalid(..))) => match app.engine.get(id).await {
            Ok(Some(t)) if t.status.is_terminal() => Ok(t),
            _ => Err(Error::TicketNotFound),
        },
        other => other,
    }
}
