//! The static client: the widget (at its plain URL, and at a pinned one
//! that never changes, with its SRI hash for the embed snippet) and the
//! login page's scripts and styles, all compiled into the binary.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
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
