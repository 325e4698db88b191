//! The Mini Program's JSON API: scan a ticket with a `wx.login` code, then
//! confirm or deny it with the `scan_token` the scan answered. Handlers
//! only; the flow is in `providers::wechat::miniprogram`.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;

use super::view::StateView;
use super::{AppState, Json, TicketPath};
use crate::error::Result;
use crate::providers::wechat::miniprogram::{self, Scanned};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    scan_token: String,
}

async fn scan_with_miniprogram(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ScanBody>,
) -> Result<Json<Scanned>> {
    Ok(Json(miniprogram::scan(&app, &id, &body.code).await?))
}

/// The Mini Program learns the outcome, never the token (that goes to the
/// browser holding the secret).
fn status_only(ticket: &crate::ticket::Ticket) -> StateView {
    let mut view = StateView::of(Some(ticket));
    view.token = None;
    view.token_type = None;
    view.expires_in = None;
    view
}

async fn confirm_with_miniprogram(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<TokenBody>,
) -> Result<Json<StateView>> {
    let ticket = miniprogram::confirm(&app, &id, &body.scan_token).await?;
    Ok(Json(status_only(&ticket)))
}

async fn deny_with_miniprogram(
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<TokenBody>,
) -> Result<Json<StateView>> {
    let ticket = miniprogram::deny(&app, &id, &body.scan_token).await?;
    Ok(Json(status_only(&ticket)))
}
