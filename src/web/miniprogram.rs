//! The Mini Program's JSON API: scan a ticket with a `wx.login` code, then
//! confirm or deny it with the `scan_token` the scan answered. Handlers
//! only; the flow is in `providers::wechat::miniprogram`.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;

use super::view::{RequesterView, Scanned, StateView, without_token};
use super::{AppState, Json, TicketPath};
use crate::error::ErrorBody;
use crate::error::Result;
use crate::providers::wechat::miniprogram;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/miniprogram/tickets/{ticket}/scan",
            post(scan_with_miniprogram),
        )
        .route(
            "/api/v1/miniprogram/tickets/{ticket}/confirm",
            post(confirm_with_miniprogram),
        )
        .route(
            "/api/v1/miniprogram/tickets/{ticket}/deny",
            post(deny_with_miniprogram),
        )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MiniprogramScan {
    /// The code from `wx.login`.
    code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanToken {
    /// The `scan_token` the scan answered.
    scan_token: String,
}

#[utoipa::path(post, path = "/api/v1/miniprogram/tickets/{ticket}/scan", tag = "miniprogram",
    params(("ticket" = String, Path)), request_body = MiniprogramScan,
    responses((status = 200, description = "scanned; show the requester, then confirm or deny", body = Scanned),
        (status = 400, description = "bad or used wx.login code (errcode named)", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "already scanned or finished", body = ErrorBody),
        (status = 429, description = "WeChat quota, or QRLOGIN_RATE_MINIPROGRAM (Retry-After)", body = ErrorBody),
        (status = 502, description = "WeChat failed", body = ErrorBody)))]
pub async fn scan_with_miniprogram(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<MiniprogramScan>,
) -> Result<Json<Scanned>> {
    let scan = miniprogram::scan(&app.providers(), &id, &body.code).await?;
    Ok(Json(Scanned {
        scan_token: scan.scan_token,
        requester: RequesterView::of(&scan.ticket),
    }))
}

#[utoipa::path(post, path = "/api/v1/miniprogram/tickets/{ticket}/confirm", tag = "miniprogram",
    params(("ticket" = String, Path)), request_body = ScanToken,
    responses((status = 200, description = "confirmed", body = StateView),
        (status = 401, description = "forged scan_token", body = ErrorBody),
        (status = 403, description = "another ticket's scan_token", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "already finished", body = ErrorBody),
        (status = 429, description = "QRLOGIN_RATE_MINIPROGRAM (Retry-After)", body = ErrorBody)))]
pub async fn confirm_with_miniprogram(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ScanToken>,
) -> Result<Json<StateView>> {
    let ticket = miniprogram::confirm(&app.providers(), &id, &body.scan_token).await?;
    // The Mini Program learns the outcome, never the token.
    Ok(Json(without_token(StateView::of(Some(&ticket)))))
}

#[utoipa::path(post, path = "/api/v1/miniprogram/tickets/{ticket}/deny", tag = "miniprogram",
    params(("ticket" = String, Path)), request_body = ScanToken,
    responses((status = 200, description = "denyed", body = StateView),
        (status = 401, description = "forged scan_token", body = ErrorBody),
        (status = 403, description = "another ticket's scan_token", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "already finished", body = ErrorBody),
        (status = 429, description = "QRLOGIN_RATE_MINIPROGRAM (Retry-After)", body = ErrorBody)))]
pub async fn deny_with_miniprogram(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ScanToken>,
) -> Result<Json<StateView>> {
    let ticket = miniprogram::deny(&app.providers(), &id, &body.scan_token).await?;
    // The Mini Program learns the outcome, never the token.
    Ok(Json(without_token(StateView::of(Some(&ticket)))))
}
