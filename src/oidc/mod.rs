//! qrlogin as an OpenID Provider (OpenID Connect Core 1.0, code flow; RFC
//! 6749, RFC 7636 PKCE, RFC 9207 `iss`), so any relying party that speaks
//! OpenID Connect logs its users in by QR without code of its own.
//!
//! The flow over the existing login, in the order it runs:
//! 1. `/oauth2/authorize` checks the request ([`AuthRequest::validate`]),
//!    stores it under a random id ([`Provider::save_request`]) and shows the
//!    usual QR login page for that id.
//! 2. The page creates tickets *for that request*: the store records which
//!    request each ticket was made for ([`Provider::bind_ticket`]), so a
//!    ticket made elsewhere can never finish this request.
//! 3. When the phone confirms (or denies), the page — the only holder of
//!    the ticket's secret — asks for the redirect ([`Provider::complete`]):
//!    a single-use code bound to client, redirect URI, PKCE challenge and
//!    nonce, kept in the store (hashed) for at most 60 s, so any instance
//!    redeems it.
//! 4. `/oauth2/token` spends the code once ([`Provider::redeem`]) and
//!    answers an ID token and an RFC 9068 access token, both signed with
//!    the service's asymmetric key and verifiable from its JWKS.
//!
//! Everything lives in the ticket store's small values, like the other
//! one-time markers, so several instances behind a balancer behave as one.

pub mod clients;

use std::num::NonZeroU32;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::store::{StoreError, TicketStore};
use crate::ticket::{Ticket, TicketId, now_ms};
use crate::token::seal::Opener;
use crate::token::{Tokens, Verifier};

pub use clients::{Client, Clients};

/// How long an authorization request waits for a login: long enough for a
/// few expired QR codes to be replaced on the page.
pub const REQUEST_TTL: Duration = Duration::from_secs(15 * 60);

/// Longest `state` and `nonce` kept (they are echoed, so they are bounded).
const MAX_ECHOED: usize = 1024;

/// Scopes this provider understands; others are ignored (RFC 6749 §3.3).
const SCOPES: &[&str] = &["openid", "profile"];

/// An RFC 6749 error of the authorization or token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// Why an authorization request gets no redirect at all: the redirect URI
/// cannot be trusted, so the person sees a page (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRedirect(pub String);

/// A checked authorization request, as stored until it completes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    /// The granted scopes, space-separated (`openid`, maybe `profile`).
    pub scope: String,
    /// The `provider=` the page starts with, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// What a code stands for until it is redeemed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    scope: String,
    sub: String,
    idp: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    picture: Option<String>,
    /// Unix seconds of the confirmation.
    auth_time: u64,
    /// Unix milliseconds after which the code is refused even if the store
    /// still holds it.
    expires_at: u64,
}

/// The tokens of one redeemed code.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
    pub scope: String,
}

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    auth_time: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    azp: &'a str,
    idp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    picture: Option<&'a str>,
}

/// RFC 9068 §2.2's claims, plus what userinfo answers (so userinfo needs
/// no store read and works on any instance).
#[derive(Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    auth_time: u64,
    jti: &'a str,
    client_id: &'a str,
    scope: &'a str,
    idp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    picture: Option<&'a str>,
}

/// Where the browser goes when a request completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// `redirect_uri?code=…&state=…&iss=…`
    Code(String),
    /// `redirect_uri?error=access_denied&state=…&iss=…`
    Denied(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompleteError {
    #[error("unknown or expired authorization request; start the login again")]
    UnknownRequest,
    #[error("this ticket was not made for this authorization request")]
    NotBound,
    #[error("the ticket is neither confirmed nor denied")]
    NotFinished,
    #[error("this authorization request was already completed")]
    AlreadyCompleted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Provider {
    pub clients: Clients,
    issuer: String,
    /// `aud` of access tokens: the userinfo endpoint, the one resource here.
    userinfo_audience: String,
    access_verifier: Verifier,
    token_limit: DefaultKeyedRateLimiter<String>,
    token_checks: std::sync::atomic::AtomicU32,
    code_ttl_ms: u64,
    ticket_ttl: Duration,
}

impl Provider {
    /// The provider of `settings`, `None` when no clients file is set.
    /// Settings problems (HS256, a bad file) are reported by
    /// `Settings::parse` before this runs; here they are errors again.
    pub fn from_settings(settings: &Settings, tokens: &Tokens) -> Result<Option<Self>, String> {
        let Some(path) = &settings.oidc.clients_file else {
            return Ok(None);
        };
        let clients = Clients::load(path).map_err(|e| {
            format!(
                "QRLOGIN_OIDC_CLIENTS_FILE: {}: {}",
                path.display(),
                e.join("; ")
            )
        })?;
        let key = tokens.signing_key();
        if key.public_key().is_none() {
            return Err(
                "QRLOGIN_OIDC_CLIENTS_FILE needs QRLOGIN_JWT_ALG RS256, ES256 or EdDSA, not HS256"
                    .into(),
            );
        }
        let issuer = tokens.issuer().trim_end_matches('/').to_owned();
        let userinfo_audience = format!("{issuer}/oauth2/userinfo");
        let mut access_verifier = Verifier::new(issuer.clone(), userinfo_audience.clone());
        access_verifier.add_key(
            key.kid(),
            key.algorithm(),
            key.decoding_key().map_err(|e| e.to_string())?,
        );
        let rate = NonZeroU32::new(settings.oidc.token_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new((rate.get() / 6).max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(Some(Self {
            clients,
            issuer,
            userinfo_audience,
            access_verifier,
            token_limit: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            token_checks: std::sync::atomic::AtomicU32::new(0),
            code_ttl_ms: settings.oidc.code_ttl.as_secs().min(60) * 1000,
            ticket_ttl: settings.tickets.ttl,
        }))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery document (OpenID Connect Discovery 1.0 §3).
    pub fn discovery(&self, tokens: &Tokens) -> Value {
        let i = &self.issuer;
        let alg = crate::token::jwk::jwk_alg(tokens.algorithm());
        serde_json::json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/oauth2/authorize"),
            "token_endpoint": format!("{i}/oauth2/token"),
            "userinfo_endpoint": format!("{i}/oauth2/userinfo"),
            "jwks_uri": format!("{i}/.well-known/jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            "scopes_supported": SCOPES,
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "idp", "name", "picture"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "claims_parameter_supported": false,
        })
    }

    /// `redirect_uri` with the authorization response's parameters, always
    /// with `state` (when sent) and `iss` (RFC 9207).
    pub fn redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        params: &[(&str, &str)],
    ) -> String {
        let Ok(mut url) = url::Url::parse(redirect_uri) else {
            // Registered URIs are checked at start; unreachable in practice.
            return redirect_uri.to_owned();
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.issuer);
        }
        url.into()
    }

    /// The error redirect of a request whose client and redirect URI are good.
    pub fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        e: &OAuthError,
    ) -> String {
        self.redirect(
            redirect_uri,
            state,
            &[("error", e.code), ("error_description", &e.description)],
        )
    }

    /// Check an authorization request's parameters (OpenID Connect Core
    /// §3.1.2.2). `Refusal::Page`: no redirect may be made;
    /// `Refusal::Redirect`: an error redirect to the (registered) redirect
    /// URI with the `state`.
    pub fn validate(
        &self,
        params: &[(String, String)],
        enabled_provider: impl Fn(&str) -> bool,
    ) -> Result<AuthRequest, Refusal> {
        let mut seen: Map<String, Value> = Map::new();
        let mut repeated = None;
        for (k, v) in params {
            if seen.insert(k.clone(), Value::String(v.clone())).is_some() && repeated.is_none() {
                repeated = Some(k.clone());
            }
        }
        let get = |name: &str| {
            seen.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let client_id = get("client_id")
            .ok_or_else(|| Refusal::Page(NoRedirect("the request names no client_id".into())))?;
        if repeated.as_deref() == Some("client_id") || repeated.as_deref() == Some("redirect_uri") {
            return Err(Refusal::Page(NoRedirect(
                "client_id or redirect_uri is repeated".into(),
            )));
        }
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| Refusal::Page(NoRedirect("this client is not registered".into())))?;
        let redirect_uri = get("redirect_uri")
            .ok_or_else(|| Refusal::Page(NoRedirect("the request names no redirect_uri".into())))?;
        if !client.has_redirect_uri(redirect_uri) {
            return Err(Refusal::Page(NoRedirect(
                "this redirect_uri is not registered for this client".into(),
            )));
        }
        // From here on, errors go back to the client with its state.
        let state = get("state").map(|s| s.chars().take(MAX_ECHOED).collect::<String>());
        let refuse = |code, text: &str| {
            Refusal::Redirect(self.error_redirect(
                redirect_uri,
                state.as_deref(),
                &OAuthError::new(code, text),
            ))
        };
        if let Some(name) = &repeated {
            return Err(refuse("invalid_request", &format!("{name} is repeated")));
        }
        match get("response_type") {
            None => return Err(refuse("invalid_request", "response_type is missing")),
            Some("code") => {}
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "only response_type=code is served",
                ));
            }
        }
        let requested = get("scope").unwrap_or("");
        if !requested.split(' ').any(|s| s == "openid") {
            return Err(refuse("invalid_scope", "scope must include openid"));
        }
        if get("request").is_some() {
            return Err(refuse(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if get("request_uri").is_some() {
            return Err(refuse(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        if get("response_mode").is_some_and(|m| m != "query") {
            return Err(refuse(
                "invalid_request",
                "only response_mode=query is served",
            ));
        }
        let challenge = get("code_challenge");
        match (challenge, get("code_challenge_method")) {
            (Some(_), Some("S256")) => {}
            (Some(_), _) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
            (None, Some(_)) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                ));
            }
            (None, None) if client.is_public() => {
                return Err(refuse(
                    "invalid_request",
                    "a public client must send a PKCE code_challenge (S256)",
                ));
            }
            (None, None) => {}
        }
        if let Some(c) = challenge {
            // base64url of a SHA-256: 43 characters.
            if c.len() != 43 || !c.bytes().all(is_unreserved) {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge is not an S256 challenge",
                ));
            }
        }
        let nonce = get("nonce");
        if nonce.is_some_and(|n| n.len() > MAX_ECHOED) {
            return Err(refuse("invalid_request", "nonce is too long"));
        }
        if get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none")) {
            // No session is kept here: every login is a scan.
            return Err(refuse(
                "login_required",
                "this provider keeps no session; a login needs a scan",
            ));
        }
        let scope = SCOPES
            .iter()
            .filter(|s| requested.split(' ').any(|r| r == **s))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(AuthRequest {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            state,
            nonce: nonce.map(str::to_owned),
            code_challenge: challenge.map(str::to_owned),
            scope,
            provider: get("provider")
                .filter(|p| enabled_provider(p))
                .map(str::to_owned),
        })
    }

    /// Store a checked request; answers its id (the page's handle on it).
    pub async fn save_request(
        &self,
        store: &dyn TicketStore,
        request: &AuthRequest,
    ) -> Result<TicketId, StoreError> {
        let id = TicketId::generate();
        let value = serde_json::to_string(request)
            .map_err(|e| StoreError::Unavailable(format!("encoding a request: {e}")))?;
        store.put(&request_key(&id), &value, REQUEST_TTL).await?;
        metrics::counter!("qrlogin_oidc_authorizations_total", "client" => request.client_id.clone(), "outcome" => "started")
            .increment(1);
        Ok(id)
    }

    /// The stored request `id`, if it is still waiting.
    pub async fn request(
        &self,
        store: &dyn TicketStore,
        id: &TicketId,
    ) -> Result<Option<AuthRequest>, StoreError> {
        Ok(store
            .get_value(&request_key(id))
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Record that `ticket` was made for request `request` (and for no
    /// other: the record lives as long as the ticket can be read).
    pub async fn bind_ticket(
        &self,
        store: &dyn TicketStore,
        request: &TicketId,
        ticket: &TicketId,
    ) -> Result<(), StoreError> {
        let ttl = self.ticket_ttl
            + Duration::from_millis(crate::ticket::FINAL_STATE_GRACE_MS)
            + Duration::from_secs(5);
        store.put(&binding_key(ticket), request.as_str(), ttl).await
    }

    /// The page a browser returns to after a provider navigated it away
    /// (`/oauth2/authorize/{request}`), when `ticket` was made for an
    /// authorization request; `None` for ordinary tickets (back to `/`).
    pub async fn return_path(
        &self,
        store: &dyn TicketStore,
        ticket: &TicketId,
    ) -> Result<Option<String>, StoreError> {
        Ok(store
            .get_value(&binding_key(ticket))
            .await?
            .map(|request| format!("/oauth2/authorize/{request}")))
    }

    /// Finish request `request_id` with `ticket`, whose secret the caller
    /// has already checked. At most once per request; a confirmed ticket
    /// yields a code, a denied one `access_denied`.
    pub async fn complete(
        &self,
        store: &dyn TicketStore,
        tokens: &Tokens,
        request_id: &TicketId,
        ticket: &Ticket,
        opener: &Opener,
    ) -> Result<Completion, CompleteError> {
        let bound = store.get_value(&binding_key(&ticket.id)).await?;
        if bound.as_deref() != Some(request_id.as_str()) {
            return Err(CompleteError::NotBound);
        }
        let Some(request) = self.request(store, request_id).await? else {
            return Err(match store.get_value(&done_key(request_id)).await? {
                Some(_) => CompleteError::AlreadyCompleted,
                None => CompleteError::UnknownRequest,
            });
        };
        let now = now_ms();
        let status = ticket.status_at(now);
        if !matches!(
            status,
            crate::ticket::Status::Confirmed | crate::ticket::Status::Denied
        ) {
            return Err(CompleteError::NotFinished);
        }
        if !store
            .put_new(&done_key(request_id), "1", REQUEST_TTL)
            .await?
        {
            return Err(CompleteError::AlreadyCompleted);
        }
        let _ = store.remove_value(&request_key(request_id)).await;
        let client = request.client_id.clone();
        if status == crate::ticket::Status::Denied {
            metrics::counter!("qrlogin_oidc_authorizations_total", "client" => client, "outcome" => "denied")
                .increment(1);
            return Ok(Completion::Denied(self.error_redirect(
                &request.redirect_uri,
                request.state.as_deref(),
                &OAuthError::new("access_denied", "the login was refused on the phone"),
            )));
        }
        // Who confirmed, as the service's own token says: one source of
        // truth for `sub` and `idp` whatever the provider. It is stored
        // sealed to the ticket's secret, which the caller presented (the
        // tickets of a request are never sealed to a browser key).
        let claims = ticket
            .open_token(opener)
            .and_then(Result::ok)
            .and_then(|jwt| tokens.verify(&jwt).ok())
            .ok_or(CompleteError::NotFinished)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let user = ticket.user.clone().unwrap_or_default();
        let grant = CodeGrant {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            scope: request.scope.clone(),
            sub: text("sub").unwrap_or_default(),
            idp: text("idp").unwrap_or_default(),
            name: user.nickname,
            picture: user.avatar,
            auth_time: ticket.updated_at / 1000,
            expires_at: now + self.code_ttl_ms,
        };
        let code = TicketId::generate();
        let value = serde_json::to_string(&grant)
            .map_err(|e| StoreError::Unavailable(format!("encoding a code: {e}")))?;
        store
            .put(
                &code_key(code.as_str()),
                &value,
                Duration::from_millis(self.code_ttl_ms),
            )
            .await?;
        metrics::counter!("qrlogin_oidc_authorizations_total", "client" => client, "outcome" => "completed")
            .increment(1);
        Ok(Completion::Code(self.redirect(
            &request.redirect_uri,
            request.state.as_deref(),
            &[("code", code.as_str())],
        )))
    }

    /// The token endpoint's per-client quota: Ok, or the seconds to wait.
    ///
    /// Keyed by client *and* caller address: an outsider who sends bad
    /// secrets for a client id spends only their own address's share, not
    /// the relying party's (whose backend calls from its own addresses).
    pub fn check_rate(&self, client_id: &str, ip: std::net::IpAddr) -> Result<(), u64> {
        // Forget idle callers now and then, so the table tracks active ones.
        if self
            .token_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 4096
            == 4095
        {
            self.token_limit.retain_recent();
            self.token_limit.shrink_to_fit();
        }
        let key = format!("{client_id} {}", crate::ip::ip_key(ip));
        self.token_limit.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Spend `code` for the authenticated `client` and sign its tokens.
    /// The code is spent by the first attempt that reaches it, valid or
    /// not, on any instance (`put_new` is the one atomic step).
    pub async fn redeem(
        &self,
        store: &dyn TicketStore,
        tokens: &Tokens,
        client: &Client,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<TokenResponse, RedeemError> {
        let invalid = |text: &str| RedeemError::OAuth(OAuthError::new("invalid_grant", text));
        if code.len() > 64 {
            return Err(invalid("unknown, expired or spent code"));
        }
        let key = code_key(code);
        let grant: CodeGrant = match store.get_value(&key).await? {
            Some(v) => serde_json::from_str(&v).map_err(|_| invalid("unreadable code"))?,
            None => {
                if store.get_value(&spent_key(code)).await?.is_some() {
                    tracing::warn!(client = %client.id, "an authorization code was presented twice");
                }
                return Err(invalid("unknown, expired or spent code"));
            }
        };
        let ttl = Duration::from_millis(self.code_ttl_ms + 1000);
        if !store.put_new(&spent_key(code), "1", ttl).await? {
            tracing::warn!(client = %client.id, "an authorization code was presented twice");
            return Err(invalid("unknown, expired or spent code"));
        }
        let _ = store.remove_value(&key).await;
        if now_ms() >= grant.expires_at {
            return Err(invalid("unknown, expired or spent code"));
        }
        if grant.client_id != client.id {
            return Err(invalid("the code was issued to another client"));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(invalid(
                "redirect_uri differs from the authorization request's",
            ));
        }
        match (&grant.code_challenge, verifier) {
            (Some(challenge), Some(v)) => {
                if !(43..=128).contains(&v.len()) || !v.bytes().all(is_unreserved) {
                    return Err(RedeemError::OAuth(OAuthError::new(
                        "invalid_request",
                        "code_verifier must be 43 to 128 unreserved characters",
                    )));
                }
                let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
                if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                    return Err(invalid("code_verifier does not match the code_challenge"));
                }
            }
            (Some(_), None) => return Err(invalid("code_verifier is missing")),
            // RFC 9700 §4.8.2: a verifier for a code issued without a
            // challenge is an injection attempt.
            (None, Some(_)) => return Err(invalid("the code was issued without a code_challenge")),
            (None, None) if client.is_public() => {
                return Err(invalid("a public client must use PKCE"));
            }
            (None, None) => {}
        }
        self.sign(tokens, &grant).map_err(RedeemError::Sign)
    }

    fn sign(&self, tokens: &Tokens, grant: &CodeGrant) -> Result<TokenResponse, String> {
        let now = now_ms() / 1000;
        let ttl = tokens.ttl();
        let profile = grant.scope.split(' ').any(|s| s == "profile");
        let name = grant.name.as_deref().filter(|_| profile);
        let picture = grant.picture.as_deref().filter(|_| profile);
        let id_jti = TicketId::generate();
        let id_token = tokens
            .sign_claims(
                "JWT",
                &IdTokenClaims {
                    iss: &self.issuer,
                    sub: &grant.sub,
                    aud: &grant.client_id,
                    exp: now + ttl,
                    iat: now,
                    auth_time: grant.auth_time,
                    jti: id_jti.as_str(),
                    nonce: grant.nonce.as_deref(),
                    azp: &grant.client_id,
                    idp: &grant.idp,
                    name,
                    picture,
                },
            )
            .map_err(|e| e.to_string())?;
        let at_jti = TicketId::generate();
        let access_token = tokens
            .sign_claims(
                "at+jwt",
                &AccessTokenClaims {
                    iss: &self.issuer,
                    sub: &grant.sub,
                    aud: &self.userinfo_audience,
                    exp: now + ttl,
                    iat: now,
                    auth_time: grant.auth_time,
                    jti: at_jti.as_str(),
                    client_id: &grant.client_id,
                    scope: &grant.scope,
                    idp: &grant.idp,
                    name,
                    picture,
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            id_token,
            scope: grant.scope.clone(),
        })
    }

    /// The userinfo answer for an access token (RFC 9068 §4: `typ` must be
    /// `at+jwt`, so neither an ID token nor the service's JWT passes).
    pub fn userinfo(&self, access_token: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(access_token).map_err(|_| "malformed token")?;
        if header.typ.as_deref() != Some("at+jwt") {
            return Err("not an access token".into());
        }
        let claims = self
            .access_verifier
            .verify(access_token)
            .map_err(|e| e.to_string())?;
        let mut out = Map::new();
        for name in ["sub", "name", "picture"] {
            if let Some(v) = claims.get(name) {
                out.insert(name.into(), v.clone());
            }
        }
        Ok(Value::Object(out))
    }
}

/// A refused authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Show an error page; never redirect.
    Page(NoRedirect),
    /// Send the browser to this error redirect.
    Redirect(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("{}", .0.description)]
    OAuth(OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// RFC 3986 unreserved characters (PKCE's alphabet).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn request_key(id: &TicketId) -> String {
    format!("oidc:req:{id}")
}

fn done_key(id: &TicketId) -> String {
    format!("oidc:done:{id}")
}

fn binding_key(ticket: &TicketId) -> String {
    format!("oidc:ticket:{ticket}")
}

/// Codes are stored under their digest: a dump of the store holds nothing
/// a token endpoint would accept.
fn code_key(code: &str) -> String {
    format!("oidc:code:{}", hex::encode(Sha256::digest(code.as_bytes())))
}

fn spent_key(code: &str) -> String {
    format!(
        "oidc:spent:{}",
        hex::encode(Sha256::digest(code.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_check_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
