//! A ticket's QR images (PNG, SVG, or the Mini Program code WeChat makes),
//! rendered once per ticket and size, then served from a short-lived cache:
//! a login page reloading its image costs nothing, and only renders draw on
//! the client's QRLOGIN_RATE_RENDERS.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::openapi::QrErrors;
use super::{AppState, ClientIp, Query, TicketPath};
use crate::engine::Error as DomainError;
use crate::error::Result;
use crate::qr;
use crate::ticket::TicketId;

/// Rendered images by (ticket, size, PNG?).
pub type QrCache = moka::sync::Cache<(TicketId, u32, bool), bytes::Bytes>;

/// At most 32 MiB of images, each kept as long as a ticket lives.
pub fn new_cache(ticket_ttl: Duration) -> QrCache {
    moka::sync::Cache::builder()
        .max_capacity(32 * 1024 * 1024)
        .weigher(|_, v: &bytes::Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
        .time_to_live(ticket_ttl)
        .build()
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
        QrErrors))]
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
        QrErrors))]
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
            return Err(DomainError::Invalid("kind is qr, or wxacode on qr.png".into()).into());
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
            let bytes = rendered.map_err(|e| DomainError::Invalid(e.to_string()))?;
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
            let bytes = miniprogram::wxacode(&app.providers(), ticket).await?;
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
