//! Operations endpoints: liveness, readiness (the store answers and the
//! change subscription is live) and Prometheus metrics (on the main
//! listener, or alone on its own).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use crate::engine::Readiness;

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
        .fallback(|| async { crate::error::Error::from(crate::engine::Error::NotFound) })
        .method_not_allowed_fallback(|| async { crate::error::Error::MethodNotAllowed })
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the store answers and, with Redis, this instance's change subscription is live", body = String), (status = 503, description = "store or subscription unavailable", body = String)))]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    // Both, because an instance whose store answers but whose subscription
    // is down would take traffic and leave its sockets waiting for pushes
    // (until the once-a-second re-read catches up).
    match app.engine.readiness().await {
        Readiness::StoreDown => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
        Readiness::SubscriptionDown => {
            (StatusCode::SERVICE_UNAVAILABLE, "change subscription down")
        }
        Readiness::Ready => (StatusCode::OK, "ready"),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn render_metrics(State(app): State<AppState>) -> impl IntoResponse {
    if let Ok(live) = app.engine.live_count().await {
        metrics::gauge!("qrlogin_tickets_live").set(live as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
