//! The security headers of every HTML page, and the login page's own
//! Content-Security-Policy (it frames WeChat's QR page).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;

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

/// The login page's policy: as every page's, except that it frames
/// WeChat's QR page (wherever `QRLOGIN_WECHAT_OPEN_BASE` points) and, once
/// the person approved, our own `wechat-web` callback inside that frame.
pub fn login_page_csp(app: &AppState) -> Option<HeaderValue> {
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
