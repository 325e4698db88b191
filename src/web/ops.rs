//! Operations endpoints: liveness, readiness (the store answers) and
//! Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(super::openapi::serve_openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the store answers", body = String), (status = 503, description = "store unavailable", body = String)))]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    match app.engine.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn render_metrics(State(app): State<AppState>) -> impl IntoResponse {
    if let Ok(live) = app.engine.store.live_count().await {
        metrics::gauge!("qrlogin_tickets_live").set(live as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
