//! The OpenAPI 3.1 document of the JSON API, generated from the handlers'
//! annotations and the wire types themselves, served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{
    browser_api, miniprogram, oidc, ops, poll, qr_cache, tokens_api, trusted_api, wechat, ws,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "qrlogin", description = "QR-code login: tickets, WebSocket push, long-poll, trusted API, tokens."),
    paths(
        browser_api::create_ticket, qr_cache::get_qr_png, qr_cache::get_qr_svg, ws::upgrade_ws,
        poll::poll_ticket, trusted_api::get_ticket, trusted_api::scan_ticket,
        trusted_api::confirm_ticket, trusted_api::deny_ticket, tokens_api::introspect_token,
        tokens_api::get_jwks, wechat::redeem_web_code,
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

// The domain's types derive nothing for OpenAPI: each schema is that of a
// mirror here, which must keep the domain type's fields, serde renames and
// doc comments (the document test and `/openapi.json` show a drift).

/// Where a ticket is in its life. `Confirmed`, `Denied`, `Expired` are final.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // only its schema is used
enum Status {
    Pending,
    Scanned,
    Confirmed,
    Denied,
    Expired,
}

impl PartialSchema for crate::ticket::Status {
    fn schema() -> RefOr<Schema> {
        <Status as PartialSchema>::schema()
    }
}

impl ToSchema for crate::ticket::Status {}

/// What the browser may show about the person who scanned.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // only its schema is used
struct UserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nickname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    avatar: Option<String>,
}

impl PartialSchema for crate::ticket::UserInfo {
    fn schema() -> RefOr<Schema> {
        <UserInfo as PartialSchema>::schema()
    }
}

impl ToSchema for crate::ticket::UserInfo {}

pub async fn serve_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Error answers several endpoints document alike, each set stated once:
/// a status, its description, and the contract's `ErrorBody`.
fn error_responses(
    answers: &[(&str, &str)],
) -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    answers
        .iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", body)
                .build();
            ((*status).to_owned(), RefOr::T(response))
        })
        .collect()
}

/// The refusals of the trusted API's scan and confirm.
pub struct TrustedChangeErrors;

impl utoipa::IntoResponses for TrustedChangeErrors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&[
            ("400", "bad input"),
            ("401", "missing or wrong secret / API key"),
            ("404", "unknown or expired ticket"),
            ("409", "the ticket's state does not allow it"),
        ])
    }
}

/// The refusals of the QR images (PNG and SVG).
pub struct QrErrors;

impl utoipa::IntoResponses for QrErrors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&[
            ("400", "bad input"),
            ("404", "unknown or expired ticket"),
            ("429", "too many renders (Retry-After)"),
        ])
    }
}
