//! The trusted API for product backends (`Authorization: Bearer
//! QRLOGIN_API_KEY`): read a ticket's status, scan, confirm or deny it for
//! a person the backend vouches for. The token always goes to the browser.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::openapi::TrustedChangeErrors;
use super::view::{RequesterView, StateView, without_token};
use super::{AppState, Json, TicketPath, bearer};
use crate::engine::Error as DomainError;
use crate::error::{Error, ErrorBody, Result};
use crate::ticket::{Identity, UserInfo};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tickets/{ticket}", get(get_ticket))
        .route("/api/v1/tickets/{ticket}/scan", post(scan_ticket))
        .route("/api/v1/tickets/{ticket}/confirm", post(confirm_ticket))
        .route("/api/v1/tickets/{ticket}/deny", post(deny_ticket))
}

/// Proof that the caller holds the API key.
pub struct Trusted;

impl axum::extract::FromRequestParts<AppState> for Trusted {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Self> {
        let Some(key) = app.settings.api_key.as_deref() else {
            return Err(DomainError::Unauthorized(
                "the trusted API is off: QRLOGIN_API_KEY is not set",
            )
            .into());
        };
        match bearer(&parts.headers) {
            Some(given) if bool::from(given.as_bytes().ct_eq(key.as_bytes())) => Ok(Trusted),
            Some(_) => Err(DomainError::Unauthorized("wrong API key").into()),
            None => {
                Err(DomainError::Unauthorized("missing Authorization: Bearer <API key>").into())
            }
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StatusOnly {
    status: &'static str,
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket}", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "the status, never the token", body = StatusOnly),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody)))]
pub async fn get_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
) -> Result<Json<StatusOnly>> {
    let ticket = app.engine.require(&id).await?;
    Ok(Json(StatusOnly {
        status: ticket.status_at(crate::ticket::now_ms()).as_str(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    user: Option<UserInfo>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    sub: String,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    user: Option<UserInfo>,
}

/// A trusted API body as its handler takes it: JSON that must be of the
/// type, then the handler's checks. The handlers get the JSON through the
/// `Json` extractor (the same `serde_json` parse; it skips the UTF-8 check
/// of `json_body`, which changes nothing here: these types deny unknown
/// fields, so every string is read, and checked, by serde_json); this is the
/// whole of what they do with the bytes, public so the fuzz targets and
/// property tests exercise exactly that.
pub fn parse_trusted<T: DeserializeOwned + CheckedBody>(bytes: &[u8]) -> Result<T> {
    let body: T = super::json_body(bytes)?;
    body.check()?;
    Ok(body)
}

/// A body with limits beyond its JSON shape.
pub trait CheckedBody {
    /// `BadRequest` naming the first limit broken.
    fn check(&self) -> Result<()>;
}

impl CheckedBody for ScanBody {
    fn check(&self) -> Result<()> {
        if let Some(sub) = &self.sub {
            check_sub(sub)?;
        }
        check_user(&self.user)
    }
}

impl CheckedBody for ConfirmBody {
    fn check(&self) -> Result<()> {
        check_sub(&self.sub)?;
        check_user(&self.user)?;
        if self
            .claims
            .as_ref()
            .is_some_and(|c| serde_json::to_vec(c).map_or(true, |v| v.len() > MAX_CLAIMS))
        {
            return Err(DomainError::Invalid("claims must be at most 8 KiB of JSON".into()).into());
        }
        Ok(())
    }
}

/// Extra token claims a trusted backend may send at confirm, as JSON bytes.
pub const MAX_CLAIMS: usize = 8 * 1024;

impl ConfirmBody {
    /// Who the token will name: the backend's own user id.
    pub fn subject(&self) -> Identity {
        Identity {
            sub: self.sub.clone(),
            idp: "app".into(),
            ..Identity::default()
        }
    }

    /// The extra claims the backend asked for.
    pub fn claims(&self) -> Option<&Map<String, Value>> {
        self.claims.as_ref()
    }
}

fn check_sub(sub: &str) -> Result<()> {
    if sub.is_empty() || sub.len() > 256 {
        return Err(DomainError::Invalid("sub must be 1 to 256 characters".into()).into());
    }
    Ok(())
}

fn check_user(user: &Option<UserInfo>) -> Result<()> {
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > 1024);
    if user
        .as_ref()
        .is_some_and(|u| too_long(&u.nickname) || too_long(&u.avatar))
    {
        return Err(
            DomainError::Invalid("user fields must be at most 1024 characters".into()).into(),
        );
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/scan", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])), request_body = ScanBody,
    responses((status = 200, description = "scanned, with the computer that asked", body = ScanAnswer),
        TrustedChangeErrors))]
pub async fn scan_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ScanBody>,
) -> Result<Json<ScanAnswer>> {
    body.check()?;
    let ticket = app
        .engine
        .scan(&id, body.sub.map(|s| format!("app:{s}")), body.user, None)
        .await?;
    Ok(Json(ScanAnswer {
        state: without_token(StateView::of(Some(&ticket))),
        requester: RequesterView::of(&ticket),
    }))
}

/// The trusted `scan` answer: the state, and which computer asked, so the
/// app can show it before the person confirms (QRLJacking).
#[derive(Serialize, ToSchema)]
pub struct ScanAnswer {
    #[serde(flatten)]
    state: StateView,
    requester: RequesterView,
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/confirm", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])), request_body = ConfirmBody,
    responses((status = 200, description = "confirmed; the JWT goes to the browser only", body = StateView),
        TrustedChangeErrors))]
pub async fn confirm_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
    Json(body): Json<ConfirmBody>,
) -> Result<Json<StateView>> {
    body.check()?;
    let subject = body.subject();
    let ticket = app
        .engine
        .confirm(&id, None, &subject, body.user, body.claims.as_ref())
        .await?;
    Ok(Json(without_token(StateView::of(Some(&ticket)))))
}

#[utoipa::path(post, path = "/api/v1/tickets/{ticket}/deny", tag = "trusted",
    params(("ticket" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "denied", body = StateView),
        (status = 401, description = "missing or wrong secret / API key", body = ErrorBody),
        (status = 404, description = "unknown or expired ticket", body = ErrorBody),
        (status = 409, description = "the ticket's state does not allow it", body = ErrorBody)))]
pub async fn deny_ticket(
    _: Trusted,
    State(app): State<AppState>,
    TicketPath(id): TicketPath,
) -> Result<Json<StateView>> {
    let ticket = app.engine.deny(&id, None).await?;
    Ok(Json(StateView::of(Some(&ticket))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_bytes_are_a_body_or_a_bad_request(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for result in [
                parse_trusted::<ScanBody>(&bytes).map(|_| ()),
                parse_trusted::<ConfirmBody>(&bytes).map(|_| ()),
            ] {
                prop_assert!(matches!(result, Ok(()) | Err(Error::Domain(DomainError::Invalid(_)))));
            }
        }

        #[test]
        fn confirm_bodies_round_trip(
            sub in "\\PC{1,64}",
            claims in proptest::option::of(proptest::collection::btree_map("\\PC{0,8}", json_value(), 0..6)),
            nickname in proptest::option::of("\\PC{0,40}"),
        ) {
            let claims: Option<Map<String, Value>> = claims.map(|c| c.into_iter().collect());
            let json = serde_json::json!({
                "sub": sub, "claims": claims, "user": {"nickname": nickname},
            });
            let body = parse_trusted::<ConfirmBody>(json.to_string().as_bytes()).unwrap();
            prop_assert_eq!(body.subject().sub, sub);
            prop_assert_eq!(body.subject().idp, "app");
            prop_assert_eq!(body.claims(), claims.as_ref());
            prop_assert_eq!(body.user.and_then(|u| u.nickname), nickname);
        }

        #[test]
        fn limits_are_bad_requests(extra in 0usize..64) {
            let long_sub = serde_json::json!({"sub": "x".repeat(257 + extra)}).to_string();
            prop_assert!(matches!(parse_trusted::<ConfirmBody>(long_sub.as_bytes()), Err(Error::Domain(DomainError::Invalid(_)))));
            prop_assert!(matches!(parse_trusted::<ScanBody>(long_sub.as_bytes()), Err(Error::Domain(DomainError::Invalid(_)))));
            let big = serde_json::json!({"sub": "u", "claims": {"k": "v".repeat(MAX_CLAIMS + extra)}}).to_string();
            prop_assert!(matches!(parse_trusted::<ConfirmBody>(big.as_bytes()), Err(Error::Domain(DomainError::Invalid(_)))));
        }
    }

    #[test]
    fn numeric_claims_reach_the_token_exactly() {
        // Found by the trusted_json fuzzer: a 117-digit number came back
        // from the token's JSON one ulp off (serde_json's default parser).
        let body = format!(r#"{{"sub":"u","claims":{{"n":1{}}}}}"#, "3".repeat(116));
        let parsed = parse_trusted::<ConfirmBody>(body.as_bytes()).unwrap();
        let claims = parsed.claims().unwrap();
        let again: Map<String, Value> =
            serde_json::from_slice(&serde_json::to_vec(claims).unwrap()).unwrap();
        assert_eq!(&again, claims);
    }

    #[test]
    fn unknown_fields_and_an_empty_sub_are_refused() {
        for body in [
            r#"{"sub":"u","extra":1}"#,
            r#"{"sub":""}"#,
            r#"{"claims":{}}"#,
            "",
        ] {
            assert!(
                matches!(
                    parse_trusted::<ConfirmBody>(body.as_bytes()),
                    Err(Error::Domain(DomainError::Invalid(_)))
                ),
                "{body}"
            );
        }
        assert!(parse_trusted::<ScanBody>(b"{}").is_ok());
        assert!(parse_trusted::<ScanBody>(br#"{"sub":""}"#).is_err());
    }
}
