//! Operations endpoints: liveness, readiness (the store answers) and
//! Prometheus metrics (on the main listener, or alone on its own).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// The operations routes of the main listener; `/metrics` only when it
/// has no listener of its own (QRLOGIN_METRICS_BIND).
pub fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/openapi.json", get(super::openapi::serve_openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        router.route("/metrics", get(render_metrics))
    } else {
        router
    }
}

/// The QRLOGIN_METRICS_BIND listener: `/metrics` and nothing else, so an
/// operator can keep it on a private address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .fallback(|| async { crate::error::Error::NotFound })
        .method_not_allowed_fallback(|| async { crate::error::Error::MethodNotAllowed })
        .with_state(state)
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
