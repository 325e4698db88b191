//! The HTTP side of the WeChat redirect flows: the callbacks WeChat sends
//! browsers to. Pages only; the flow itself is in
//! `providers::wechat::oauth`. Every outcome is a page or a redirect, never
//! a JSON error or a 500: the reader is a person in a browser.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::pages::{
    PageQuery, confirm_page, final_page, message_page, new_phone_cookie, page_lang, page_response,
    phone_binding, phone_cookie,
};
use crate::providers::wechat::oauth::{
    self, Callback, OAUTH_CALLBACK, PhoneOutcome, WEB_CALLBACK, WebOutcome,
};
use crate::ticket::Provider;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(OAUTH_CALLBACK, get(oauth_callback))
        .route(WEB_CALLBACK, get(web_callback))
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
    let (phone, set_cookie) = match phone_cookie(&headers) {
        Some(phone) => (phone, None),
        None => {
            let (phone, cookie) = new_phone_cookie(&app.settings);
            (phone, Some(cookie))
        }
    };
    let binding = phone_binding(&phone);
    let mut response = match oauth::phone_callback(&app, &callback, &binding).await {
        PhoneOutcome::Confirm(ticket) => confirm_page(&app, lang, &ticket, &phone, false),
        PhoneOutcome::Final(ticket) => final_page(&app, lang, ticket.as_ref()),
        PhoneOutcome::Message(message) => message_page(&app, lang, message, None),
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /wechat/web/callback?code&state`: the computer's browser, back from
/// WeChat's QR page; on success it returns to the login page.
async fn web_callback(
    State(app): State<AppState>,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
    page: PageQuery,
    headers: HeaderMap,
) -> Response {
    let lang = page_lang(page.lang(), &headers);
    match oauth::web_callback(&app, &callback_of(query)).await {
        WebOutcome::BackToLogin => {
            let location = format!("/?provider={}", Provider::WechatWeb.as_str());
            let mut response = page_response(StatusCode::FOUND, String::new());
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/")),
            );
            response.into_response()
        }
        WebOutcome::Message(message) => message_page(&app, lang, message, None),
    }
}
