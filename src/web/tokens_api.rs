//! What backends ask about tokens: introspection (RFC 7662-style) and the
//! public keys (JWKS) to verify them offline.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::trusted_api::Trusted;
use super::{AppState, Json, RawBody};
use crate::engine::Error as DomainError;
use crate::error::{ErrorBody, Result};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens/introspect", post(introspect_token))
        .route("/.well-known/jwks.json", get(get_jwks))
}

#[derive(Deserialize, ToSchema)]
pub struct IntrospectBody {
    token: Value,
}

/// RFC 7662-style, for backends that prefer asking to verifying: the claims
/// of a valid token with `"active": true`, else only `"active": false`. Any
/// garbage in (not JSON, no token, a forged or expired token) is simply not
/// active, never an error page. The body is JSON `{"token": "…"}`, or the
/// RFC's form encoding `token=…`.
#[utoipa::path(post, path = "/api/v1/tokens/introspect", tag = "tokens",
    security(("api_key" = [])), request_body = IntrospectBody,
    responses((status = 200, description = "RFC 7662-style: `{\"active\": true, …claims}` or `{\"active\": false}`", body = Object),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody)))]
pub async fn introspect_token(
    _: Trusted,
    State(app): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Json<Value> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = if is_form {
        url::form_urlencoded::parse(&body)
            .find(|(name, _)| name == "token")
            .map(|(_, token)| token.into_owned())
    } else {
        serde_json::from_slice::<IntrospectBody>(&body)
            .ok()
            .and_then(|b| b.token.as_str().map(str::to_owned))
    };
    match token.and_then(|token| app.engine.tokens().verify(&token).ok()) {
        Some(mut claims) => {
            claims.insert("active".into(), Value::Bool(true));
            Json(Value::Object(claims))
        }
        None => Json(serde_json::json!({ "active": false })),
    }
}

/// The public keys. Verifiers may cache them for five minutes: a new key
/// is announced by a token naming an unknown `kid`, on which they refetch.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "public keys (asymmetric algorithms)", body = Object),
        (status = 404, description = "HS256: no public keys", body = ErrorBody)))]
pub async fn get_jwks(State(app): State<AppState>) -> Result<Response> {
    let jwks = app.engine.tokens().jwks().ok_or(DomainError::NotFound)?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(jwks.clone()),
    )
        .into_response())
}
