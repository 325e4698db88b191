//! The phone pages as HTML: message pages (expired, done, taken, open in
//! WeChat…), the final page of a ticket and the confirm page. What to show
//! is decided by the handlers and providers; this only renders it.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::AppState;
use super::headers::page_response;
use super::phone::csrf_token;
use super::view::rfc3339;
use crate::config::Settings;
use crate::providers::Notice;
use crate::templates::{Lang, Texts};
use crate::ticket::{Provider, Status, Ticket};
use crate::useragent;

/// Whether pages show the development banner.
pub fn dev_mode(settings: &Settings) -> bool {
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

impl From<Notice> for Message {
    fn from(notice: Notice) -> Self {
        match notice {
            Notice::Expired => Message::Expired,
            Notice::Taken => Message::Taken,
            Notice::Forbidden => Message::Forbidden,
            Notice::OpenInWechat => Message::OpenInWechat,
            Notice::Retry => Message::Retry,
            Notice::Rescan => Message::Rescan,
        }
    }
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
