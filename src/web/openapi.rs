//! The OpenAPI 3.1 document of the JSON API, generated from the handlers'
//! annotations and the wire types themselves, served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, miniprogram, oidc, ops, poll, wechat, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "qrlogin", description = "QR-code login: tickets, WebSocket push, long-poll, trusted API, tokens."),
    paths(
        api::create_ticket, api::get_qr_png, api::get_qr_svg, ws::upgrade_ws, poll::poll_ticket,
        api::get_ticket, api::scan_ticket, api::confirm_ticket, api::deny_ticket,
        api::introspect_token, api::get_jwks, wechat::redeem_web_code,
        miniprogram::scan_with_miniprogram, miniprogram::confirm_with_miniprogram,
        miniprogram::deny_with_miniprogram,
        ops::healthz, ops::readyz, ops::render_metrics,
        oidc::discovery, oidc::authorize_get, oidc::create_ticket, oidc::complete,
        oidc::token, oidc::userinfo_get, oidc::userinfo_post,
    ),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// Two bearer schemes: the browser's secret and the backends' API key.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        components.add_security_scheme("secret", bearer("the ticket's secret (browser side)"));
        components.add_security_scheme("api_key", bearer("QRLOGIN_API_KEY (trusted backends)"));
        components.add_security_scheme("access_token", bearer("an OpenID Connect access token"));
    }
}

pub async fn serve_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
