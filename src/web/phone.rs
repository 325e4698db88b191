//! The phone's identity on the service's own pages: a cookie and the CSRF
//! token of each form.
//!
//! A phone is recognised by a random `qrl_phone` cookie (`__Host-qrl_phone`
//! when the public URL is https, so no sibling host can plant one). Its
//! value is always one the service drew itself: nothing taken from a URL (a
//! one-time link's key, a `state`) ever becomes a cookie, so nobody who
//! handed a phone a link knows its cookie. The ticket is bound to the phone
//! that opened it first (`scanned_by`, the cookie's binding), and every form
//! carries a CSRF token derived from the ticket and that cookie, so neither
//! a bare POST nor another phone can confirm. Providers see only bindings.

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::Mac;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::config::Settings;
use crate::ticket::TicketId;

const PHONE_COOKIE: &str = "qrl_phone";
/// The cookie's name over https: `__Host-` makes browsers take it only with
/// `Secure`, `Path=/` and no `Domain`, from this very host.
const HOST_PHONE_COOKIE: &str = "__Host-qrl_phone";

fn https(settings: &Settings) -> bool {
    settings.http.public_url().starts_with("https://")
}

/// The phone cookie's name for this deployment.
pub fn phone_cookie_name(settings: &Settings) -> &'static str {
    if https(settings) {
        HOST_PHONE_COOKIE
    } else {
        PHONE_COOKIE
    }
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

/// A fresh phone id and the `Set-Cookie` that gives it to the phone; none
/// (logged) if the header cannot be made, which the page then treats as a
/// failure to retry, never as a phone without a cookie.
pub fn new_phone_cookie(settings: &Settings) -> Option<(String, HeaderValue)> {
    let id = crate::ticket::Secret::generate().expose().to_owned();
    let cookie = phone_cookie_header(settings, &id)?;
    Some((id, cookie))
}

/// The phone's cookie, or else a fresh one with the `Set-Cookie` that
/// gives it to the phone; none (logged) as for `new_phone_cookie`.
pub fn phone_or_new(
    settings: &Settings,
    headers: &HeaderMap,
) -> Option<(String, Option<HeaderValue>)> {
    match phone_cookie(settings, headers) {
        Some(phone) => Some((phone, None)),
        None => new_phone_cookie(settings).map(|(phone, cookie)| (phone, Some(cookie))),
    }
}

/// A `Set-Cookie` making `id` the phone's cookie. `id` is always a value
/// the service drew (`Secret::generate`), never one from a request.
fn phone_cookie_header(settings: &Settings, id: &str) -> Option<HeaderValue> {
    let secure = if https(settings) { "; Secure" } else { "" };
    let name = phone_cookie_name(settings);
    let value = format!("{name}={id}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&value)
        .inspect_err(|e| tracing::error!(error = %e, "cannot make the phone cookie header"))
        .ok()
}

/// The binding stored as `scanned_by` for a phone cookie (a hash: the store
/// never holds the cookie itself).
pub fn phone_binding(phone: &str) -> String {
    format!(
        "phone:{}",
        hex::encode(&Sha256::digest(phone.as_bytes())[..16])
    )
}

/// The CSRF token of `ticket`'s forms on `phone`: an HMAC under the
/// process's page key, prepared once at start (`Shared::page_mac`).
pub fn csrf_token(app: &AppState, ticket: &TicketId, phone: &str) -> String {
    let mut mac = app.page_mac.clone();
    mac.update(ticket.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(phone.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn csrf_ok(app: &AppState, ticket: &TicketId, phone: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    csrf_token(app, ticket, phone)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}
