//! qrlogin as an OpenID Provider, driven from outside as a relying party
//! and its user's browser would: discovery, authorize (the QR page and the
//! two calls its script makes), token and userinfo, and every way a
//! relying party or an attacker can get them wrong.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use qrlogin::token::JwtAlg;
use qrlogin::token::SigningKey;
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::*;

pub const CLIENT_SECRET: &str = "wiki-secret-0123456789abcdef0123456789";
pub const WIKI_CB: &str = "https://wiki.example.com/redirect_uri";
pub const SPA_CB: &str = "http://127.0.0.1:9/callback";
const IPHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";

/// A folder with the clients file and the signing key, removed when dropped.
pub struct OidcFiles {
    dir: PathBuf,
    pub clients: PathBuf,
    pub key: PathBuf,
}

impl OidcFiles {
    pub fn new(alg: Algorithm, extra_clients: &[Value]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qrlogin-oidc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut clients = vec![
            json!({"client_id": "wiki", "client_secret": CLIENT_SECRET,
                   "redirect_uris": [WIKI_CB], "client_name": "Team wiki"}),
            json!({"client_id": "spa", "token_endpoint_auth_method": "none",
                   "redirect_uris": [SPA_CB]}),
        ];
        clients.extend(extra_clients.iter().cloned());
        let clients_path = dir.join("clients.json");
        std::fs::write(&clients_path, json!({ "clients": clients }).to_string()).unwrap();
        let pem = match alg {
            Algorithm::RS256 => include_str!("../../src/token/testdata/rsa_pkcs8.pem").to_owned(),
            other => SigningKey::generate(other)
                .unwrap()
                .to_pkcs8_pem()
                .unwrap()
                .to_string(),
        };
        let key = dir.join("key.pem");
        std::fs::write(&key, pem).unwrap();
        Self {
            dir,
            clients: clients_path,
            key,
        }
    }

    /// Point `s` at these files, signing with `alg`.
    pub fn apply(&self, s: &mut qrlogin::config::Args, alg: Algorithm) {
        s.jwt_alg = match alg {
            Algorithm::RS256 => JwtAlg::Rs256,
            Algorithm::EdDSA => JwtAlg::EdDsa,
            _ => JwtAlg::Es256,
        };
        s.jwt_key_file = Some(self.key.clone());
        s.oidc_clients_file = Some(self.clients.clone());
    }
}

impl Drop for OidcFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An app with the two clients, signing with ES256.
async fn provider_app(tweak: impl FnOnce(&mut qrlogin::config::Args)) -> (TestApp, OidcFiles) {
    let files = OidcFiles::new(Algorithm::ES256, &[]);
    let app = spawn_app_with(|s| {
        files.apply(s, Algorithm::ES256);
        tweak(s);
    })
    .await;
    (app, files)
}

/// A PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier: String = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize_url(app: &TestApp, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&app.url("/oauth2/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// The public client's usual request.
fn spa_request<'a>(challenge: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("response_type", "code"),
        ("client_id", "spa"),
        ("redirect_uri", SPA_CB),
        ("scope", "openid profile"),
        ("state", "st-1"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    p.extend_from_slice(extra);
    p
}

/// The authorization request's id from its login page.
pub fn request_of(html: &str) -> String {
    let start = html
        .find("data-oidc-request=\"")
        .expect("an OIDC login page")
        + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The login page of an authorization request: its id.
async fn open_login_page(app: &TestApp, params: &[(&str, &str)]) -> String {
    let r = app
        .client
        .get(authorize_url(app, params))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the login page");
    let html = r.text().await.unwrap();
    assert!(html.contains("/static/qrlogin.js"), "the QR login page");
    request_of(&html)
}

/// A ticket made for request `request`, as the page's script makes it.
async fn ticket_for(app: &TestApp, request: &str) -> Ticket {
    let r = app
        .client
        .post(app.url(&format!("/oauth2/authorize/{request}/tickets")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    Ticket {
        id: body["ticket"].as_str().unwrap().to_owned(),
        secret: body["secret"].as_str().unwrap().to_owned(),
        body,
    }
}

/// The dev phone scans and confirms as `name`.
async fn phone_confirms(app: &TestApp, t: &Ticket, name: &str) {
    let phone = phone(IPHONE_UA);
    let page = phone.open(t.link()).await;
    assert_eq!(phone.confirm_as(&page, name).await.status(), 200);
    assert_eq!(status_of(app, &t.id).await, "confirmed");
}

/// What the page's script asks once the ticket is final.
async fn complete(app: &TestApp, request: &str, ticket: &str, secret: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/oauth2/authorize/{request}/complete")))
        .bearer_auth(secret)
        .json(&json!({ "ticket": ticket }))
        .send()
        .await
        .unwrap()
}

/// The query of a redirect URL, as pairs.
pub fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Authorize, confirm on the phone as `name`, complete: the redirect URL.
async fn login_redirect(app: &TestApp, params: &[(&str, &str)], name: &str) -> String {
    let request = open_login_page(app, params).await;
    let t = ticket_for(app, &request).await;
    phone_confirms(app, &t, name).await;
    let r = complete(app, &request, &t.id, &t.secret).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["redirect_to"].as_str().unwrap().to_owned()
}

/// Authorize, confirm on the phone as `name`, complete: the code the
/// redirect carries.
async fn login_code(app: &TestApp, params: &[(&str, &str)], name: &str) -> String {
    query_of(&login_redirect(app, params, name).await)["code"].clone()
}

/// The SPA's authorization request without parameter `name`.
fn spa_request_without<'a>(challenge: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    spa_request(challenge, &[])
        .into_iter()
        .filter(|(k, _)| *k != name)
        .collect()
}

/// The SPA's authorization request with parameter `name` set to `value`.
fn spa_request_with<'a>(challenge: &'a str, name: &str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    spa_request(challenge, &[])
        .into_iter()
        .map(|(k, v)| if k == name { (k, value) } else { (k, v) })
        .collect()
}

/// A token request of the confidential client `wiki`, by Basic
/// authentication with `secret`.
async fn wiki_token_request(
    app: &TestApp,
    secret: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .post(app.url("/oauth2/token"))
        .basic_auth("wiki", Some(secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn token_request(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url("/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn spa_token(app: &TestApp, code: &str, verifier: &str) -> reqwest::Response {
    token_request(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", SPA_CB),
            ("client_id", "spa"),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// The claims of `token` if it verifies with a key of the app's JWKS for
/// `aud` and the app's issuer.
async fn verify_from_jwks(app: &TestApp, token: &str, aud: &str) -> Value {
    let discovery: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .client
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in JWKS");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("verifies from the JWKS")
        .claims
}

#[tokio::test]
async fn discovery_names_the_endpoints_under_the_issuer() {
    let (app, _files) = provider_app(|_| {}).await;
    let r = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    let issuer = d["issuer"].as_str().unwrap();
    assert_eq!(issuer, app.address);
    assert_eq!(
        d["authorization_endpoint"],
        format!("{issuer}/oauth2/authorize")
    );
    assert_eq!(d["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{issuer}/oauth2/userinfo"));
    assert_eq!(d["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(d["subject_types_supported"], json!(["public"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    // Off without clients: the paths are unknown.
    let plain = spawn_app().await;
    let r = plain
        .client
        .get(plain.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
}

#[tokio::test]
async fn a_public_client_logs_in_with_pkce_and_its_tokens_verify_from_the_jwks() {
    let (app, _files) = provider_app(|_| {}).await;
    let (verifier, challenge) = pkce();
    let to = login_redirect(&app, &spa_request(&challenge, &[]), "Ann").await;
    assert!(to.starts_with(SPA_CB), "{to}");
    let q = query_of(&to);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], app.address, "RFC 9207");
    let r = spa_token(&app, &q["code"], &verifier).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "openid profile");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let id = verify_from_jwks(&app, body["id_token"].as_str().unwrap(), "spa").await;
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id["idp"], "dev");
    assert_eq!(id["name"], "Ann");
    assert!(id["auth_time"].as_u64().is_some() && id["iat"].as_u64().is_some());
    let sub = id["sub"].as_str().unwrap();
    assert!(!sub.is_empty());
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(access).unwrap().typ.as_deref(),
        Some("at+jwt")
    );
    let info: Value = app
        .client
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info, json!({"sub": sub, "name": "Ann"}));
}

#[tokio::test]
async fn userinfo_takes_only_access_tokens() {
    let (app, _files) = provider_app(|_| {}).await;
    let (verifier, challenge) = pkce();
    let to = login_redirect(&app, &spa_request(&challenge, &[]), "Ann").await;
    let body: Value = spa_token(&app, &query_of(&to)["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    let id_token = body["id_token"].as_str().unwrap();
    // The service's own JWT for a login is not an access token either.
    let t = app.create_ticket().await;
    app.confirm(&t.id, "u1").await;
    let mut ws = app.ws(&t).await;
    let service_jwt = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [id_token, service_jwt.as_str(), "junk", ""] {
        let r = app
            .client
            .post(app.url("/oauth2/userinfo"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    let r = app
        .client
        .get(app.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_confidential_client_authenticates_by_basic_or_form_and_wrong_secrets_get_nothing() {
    let (app, _files) = provider_app(|_| {}).await;
    let wiki = [
        ("response_type", "code"),
        ("client_id", "wiki"),
        ("redirect_uri", WIKI_CB),
        ("scope", "openid"),
        ("state", "s"),
    ];
    // Basic with the wrong secret: 401 with a challenge, and the code
    // still works for the right secret (a failed authentication spends nothing).
    let code = login_code(&app, &wiki, "Bo").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WIKI_CB),
    ];
    let r = wiki_token_request(&app, "wrong-secret-wrong-secret-wrong-secret", &form).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    // As a public client (no secret at all): refused too.
    let mut as_public = form.to_vec();
    as_public.push(("client_id", "wiki"));
    let r = token_request(&app, &as_public).await;
    assert_eq!(r.status(), 401);
    let r = wiki_token_request(&app, CLIENT_SECRET, &form).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let id = verify_from_jwks(&app, body["id_token"].as_str().unwrap(), "wiki").await;
    assert!(id.get("nonce").is_none());
    assert!(id.get("name").is_none(), "no profile scope, no name");
    // client_secret_post.
    let code = login_code(&app, &wiki, "Bo").await;
    let r = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", WIKI_CB),
            ("client_id", "wiki"),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_code_works_once_for_its_client_redirect_uri_and_verifier() {
    let (app, _files) = provider_app(|_| {}).await;
    let (verifier, challenge) = pkce();
    let params = spa_request(&challenge, &[]);
    let invalid_grant = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 400);
        r.json::<Value>().await.unwrap()["error"].clone()
    };
    // Reused.
    let code = login_code(&app, &params, "Ann").await;
    assert_eq!(spa_token(&app, &code, &verifier).await.status(), 200);
    assert_eq!(
        invalid_grant(spa_token(&app, &code, &verifier).await).await,
        "invalid_grant"
    );
    // Wrong verifier: refused, and the code is spent.
    let code = login_code(&app, &params, "Ann").await;
    let (other, _) = pkce();
    assert_eq!(
        invalid_grant(spa_token(&app, &code, &other).await).await,
        "invalid_grant"
    );
    assert_eq!(
        invalid_grant(spa_token(&app, &code, &verifier).await).await,
        "invalid_grant"
    );
    // Wrong redirect_uri.
    let code = login_code(&app, &params, "Ann").await;
    let r = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("client_id", "spa"),
            ("code_verifier", verifier.as_str()),
        ],
    )
    .await;
    assert_eq!(invalid_grant(r).await, "invalid_grant");
    // Another client's code.
    let code = login_code(&app, &params, "Ann").await;
    let r = wiki_token_request(
        &app,
        CLIENT_SECRET,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", SPA_CB),
            ("code_verifier", verifier.as_str()),
        ],
    )
    .await;
    assert_eq!(invalid_grant(r).await, "invalid_grant");
    // No verifier.
    let code = login_code(&app, &params, "Ann").await;
    let r = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", SPA_CB),
            ("client_id", "spa"),
        ],
    )
    .await;
    assert_eq!(invalid_grant(r).await, "invalid_grant");
    // Made-up codes and grant types.
    assert_eq!(
        invalid_grant(spa_token(&app, "AAAAAAAAAAAAAAAAAAAAAAAA", &verifier).await).await,
        "invalid_grant"
    );
    let r = token_request(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", "x"),
        ],
    )
    .await;
    assert_eq!(invalid_grant(r).await, "unsupported_grant_type");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("qrlogin_oidc_token_requests_total{outcome=\"invalid_grant\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qrlogin_oidc_authorizations_total{client=\"spa\",outcome=\"completed\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let (app, _files) = provider_app(|s| s.oidc_code_ttl = 1).await;
    let (verifier, challenge) = pkce();
    let code = login_code(&app, &spa_request(&challenge, &[]), "Ann").await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = spa_token(&app, &code, &verifier).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn an_unknown_client_or_redirect_uri_gets_a_page_never_a_redirect() {
    let (app, _files) = provider_app(|_| {}).await;
    let (_, challenge) = pkce();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        spa_request_with(&challenge, "client_id", "nobody"),
        spa_request_with(&challenge, "redirect_uri", "https://evil.example/cb"),
        // A prefix match would let this through.
        spa_request_with(
            &challenge,
            "redirect_uri",
            "http://127.0.0.1:9/callback/../x",
        ),
        spa_request_without(&challenge, "redirect_uri"),
    ];
    for params in cases {
        let r = app
            .client
            .get(authorize_url(&app, &params))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{params:?}");
        assert!(r.headers().get("location").is_none());
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("qrlogin.js") && !html.contains("data-oidc-request"),
            "no QR"
        );
    }
}

#[tokio::test]
async fn bad_requests_redirect_with_rfc_6749_codes_state_and_iss() {
    let (app, _files) = provider_app(|_| {}).await;
    let (_, challenge) = pkce();
    let without = |name: &str| spa_request_without(&challenge, name);
    let with = |name: &str, value: &'static str| spa_request_with(&challenge, name, value);
    let mut repeated = spa_request(&challenge, &[]);
    repeated.push(("scope", "openid"));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (without("code_challenge"), "invalid_request"),
        (with("code_challenge_method", "plain"), "invalid_request"),
        (with("response_type", "token"), "unsupported_response_type"),
        (without("response_type"), "invalid_request"),
        (with("scope", "profile"), "invalid_scope"),
        (
            spa_request(&challenge, &[("prompt", "none")]),
            "login_required",
        ),
        (repeated, "invalid_request"),
    ];
    for (params, code) in cases {
        let r = app
            .client
            .get(authorize_url(&app, &params))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{params:?}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with(SPA_CB), "{to}");
        let q = query_of(to);
        assert_eq!(q["error"], code, "{params:?}");
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], app.address);
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn only_the_browser_holding_a_ticket_made_for_the_request_gets_the_code() {
    let (app, _files) = provider_app(|_| {}).await;
    let (_, challenge) = pkce();
    let params = spa_request(&challenge, &[]);
    let request = open_login_page(&app, &params).await;
    let t = ticket_for(&app, &request).await;
    // Before the phone answers: nothing.
    let r = complete(&app, &request, &t.id, &t.secret).await;
    assert_eq!(error_of(r).await, (409, "invalid_transition".into()));
    phone_confirms(&app, &t, "Ann").await;
    // Someone who saw the QR knows the ticket, not its secret.
    let r = complete(&app, &request, &t.id, "not-the-secret").await;
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app
        .client
        .post(app.url(&format!("/oauth2/authorize/{request}/complete")))
        .json(&json!({ "ticket": t.id }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 401);
    // A confirmed ticket of the plain API (or of another request), with
    // its own secret, does not finish this request.
    let plain = app.create_ticket().await;
    app.confirm(&plain.id, "mallory").await;
    let r = complete(&app, &request, &plain.id, &plain.secret).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    let other = open_login_page(&app, &params).await;
    let r = complete(&app, &other, &t.id, &t.secret).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    // The holder gets it, once.
    assert_eq!(
        complete(&app, &request, &t.id, &t.secret).await.status(),
        200
    );
    let r = complete(&app, &request, &t.id, &t.secret).await;
    assert_eq!(error_of(r).await, (409, "invalid_transition".into()));
    // Unknown requests make no tickets.
    let r = app
        .client
        .post(app.url("/oauth2/authorize/AAAAAAAAAAAAAAAAAAAAAAAA/tickets"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 400);
}

#[tokio::test]
async fn a_deny_on_the_phone_sends_access_denied() {
    let (app, _files) = provider_app(|_| {}).await;
    let (_, challenge) = pkce();
    let request = open_login_page(&app, &spa_request(&challenge, &[])).await;
    let t = ticket_for(&app, &request).await;
    let phone = phone(IPHONE_UA);
    let page = phone.open(t.link()).await;
    assert_eq!(phone.deny(&page).await.status(), 200);
    let r = complete(&app, &request, &t.id, &t.secret).await;
    assert_eq!(r.status(), 200);
    let to = r.json::<Value>().await.unwrap()["redirect_to"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = query_of(&to);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], app.address);
    assert!(!q.contains_key("code"));
    assert!(
        app.metrics()
            .await
            .contains("qrlogin_oidc_authorizations_total{client=\"spa\",outcome=\"denied\"}")
    );
}

#[tokio::test]
async fn an_expired_ticket_is_replaced_for_the_same_request() {
    let (app, _files) = provider_app(|s| s.ticket_ttl = 1).await;
    let (verifier, challenge) = pkce();
    let request = open_login_page(&app, &spa_request(&challenge, &[])).await;
    let first = ticket_for(&app, &request).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = complete(&app, &request, &first.id, &first.secret).await;
    assert!(
        r.status().is_client_error(),
        "an expired ticket finishes nothing"
    );
    let second = ticket_for(&app, &request).await;
    phone_confirms(&app, &second, "Ann").await;
    let r = complete(&app, &request, &second.id, &second.secret).await;
    let to = r.json::<Value>().await.unwrap()["redirect_to"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        spa_token(&app, &query_of(&to)["code"], &verifier)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_token_endpoint_limits_each_client() {
    // 6 a minute: a burst of one.
    let (app, _files) = provider_app(|s| s.oidc_token_rate = 6).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "AAAAAAAAAAAAAAAAAAAAAAAA"),
        ("redirect_uri", SPA_CB),
        ("client_id", "spa"),
        ("code_verifier", "x"),
    ];
    assert_eq!(token_request(&app, &form).await.status(), 400);
    let r = token_request(&app, &form).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Another client has its own quota.
    let r = wiki_token_request(&app, CLIENT_SECRET, &form[..3]).await;
    assert_eq!(r.status(), 400);
}

/// An outsider sending bad secrets for a client id spends their own
/// address's share only: the relying party's backend, calling from
/// another address, still redeems.
#[tokio::test]
async fn bad_token_requests_from_one_address_do_not_lock_the_client_out() {
    let (app, _files) = provider_app(|s| {
        s.oidc_token_rate = 6;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let from = |ip: &'static str| {
        app.client
            .post(app.url("/oauth2/token"))
            .header("x-forwarded-for", ip)
            .basic_auth("wiki", Some("not-the-secret-not-the-secret-xx"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", "x"),
            ])
    };
    assert_eq!(from("203.0.113.7").send().await.unwrap().status(), 401);
    assert_eq!(from("203.0.113.7").send().await.unwrap().status(), 429);
    assert_eq!(from("198.51.100.9").send().await.unwrap().status(), 401);
}

/// Each authorization stores its request: a loop of them from one address
/// meets the ticket-creation limit.
#[tokio::test]
async fn authorizations_are_limited_per_address() {
    let (app, _files) = provider_app(|s| s.rate_tickets = 6).await;
    let (_, challenge) = pkce();
    let url = authorize_url(&app, &spa_request(&challenge, &[]));
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn hs256_with_clients_refuses_to_start_naming_both_variables() {
    let files = OidcFiles::new(Algorithm::ES256, &[]);
    let mut s = test_settings();
    s.oidc_clients_file = Some(files.clients.clone());
    let Err(e) = qrlogin::Application::build(s).await else {
        panic!("started with HS256 and OIDC clients");
    };
    let text = e.to_string();
    assert!(
        text.contains("QRLOGIN_OIDC_CLIENTS_FILE") && text.contains("QRLOGIN_JWT_ALG"),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_clients_file_stops_the_start_naming_client_and_field() {
    let files = OidcFiles::new(
        Algorithm::ES256,
        &[json!({"client_id": "bad", "client_secret": "short", "redirect_uris": ["https://b/cb"]})],
    );
    let mut s = test_settings();
    files.apply(&mut s, Algorithm::ES256);
    let Err(e) = qrlogin::Application::build(s).await else {
        panic!("started with a bad clients file");
    };
    let text = e.to_string();
    assert!(
        text.contains("QRLOGIN_OIDC_CLIENTS_FILE")
            && text.contains(r#"client "bad": client_secret"#),
        "{text}"
    );
}

#[tokio::test]
async fn rs256_signs_id_tokens_too() {
    let files = OidcFiles::new(Algorithm::RS256, &[]);
    let app = spawn_app_with(|s| files.apply(s, Algorithm::RS256)).await;
    let (verifier, challenge) = pkce();
    let to = login_redirect(&app, &spa_request(&challenge, &[]), "Ann").await;
    let body: Value = spa_token(&app, &query_of(&to)["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    let id_token = body["id_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(id_token).unwrap().alg,
        Algorithm::RS256
    );
    verify_from_jwks(&app, id_token, "spa").await;
}

#[tokio::test]
async fn over_redis_one_instance_authorizes_and_another_redeems_once() {
    let Some(redis) = crate::redis_server::RedisServer::start("oidc over redis") else {
        return;
    };
    let files = OidcFiles::new(Algorithm::ES256, &[]);
    let prefix = format!("oidc{}", rand::random::<u32>());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (url, prefix) = (redis.url(), prefix.clone());
        apps.push(
            spawn_app_with(|s| {
                files.apply(s, Algorithm::ES256);
                s.redis_url = Some(url);
                s.redis_prefix = prefix;
                // One issuer for both, as behind one balancer.
                s.public_url = Some("http://login.test".into());
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let (verifier, challenge) = pkce();
    let request = open_login_page(a, &spa_request(&challenge, &[])).await;
    let t = ticket_for(a, &request).await;
    assert_eq!(a.confirm(&t.id, "u-redis").await.status(), 200);
    // The page's completion lands on the other instance.
    let r = complete(b, &request, &t.id, &t.secret).await;
    assert_eq!(r.status(), 200);
    let to = r.json::<Value>().await.unwrap()["redirect_to"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = query_of(&to)["code"].clone();
    assert_eq!(query_of(&to)["iss"], "http://login.test");
    let r = complete(a, &request, &t.id, &t.secret).await;
    assert_eq!(error_of(r).await.0, 409, "completed once across instances");
    let r = spa_token(b, &code, &verifier).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let info: Value = a
        .client
        .get(a.url("/oauth2/userinfo"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], "u-redis");
    // Spent on every instance.
    for app in [a, b] {
        let r = spa_token(app, &code, &verifier).await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    }
    // At rest the code is only a digest.
    let keys = redis.cli(&["--scan", "--pattern", &format!("{prefix}*")]);
    assert!(!keys.contains(&code), "{keys}");
}

/// `qrlogin check-config` with only `vars` set.
fn check_config(vars: &[(&str, &std::path::Path)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_qrlogin"));
    for (key, _) in std::env::vars() {
        if key.starts_with("QRLOGIN_") {
            command.env_remove(key);
        }
    }
    for (k, v) in vars {
        command.env(k, v);
    }
    let out = command.arg("check-config").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_config_shows_the_clients_with_secrets_redacted_and_names_bad_fields() {
    let files = OidcFiles::new(Algorithm::ES256, &[]);
    let es256 = std::path::Path::new("ES256");
    let (code, text) = check_config(&[
        ("QRLOGIN_JWT_ALG", es256),
        ("QRLOGIN_JWT_KEY_FILE", &files.key),
        ("QRLOGIN_OIDC_CLIENTS_FILE", &files.clients),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("oidc client \"wiki\" (Team wiki)"), "{text}");
    assert!(text.contains("client_secret=<redacted>"), "{text}");
    assert!(text.contains(WIKI_CB), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    // HS256 with clients; a client with a typo.
    let bad = OidcFiles::new(
        Algorithm::ES256,
        &[json!({"client_id": "typo", "redirect_uri": ["https://t/cb"]})],
    );
    let (code, text) = check_config(&[("QRLOGIN_OIDC_CLIENTS_FILE", &bad.clients)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("problem: QRLOGIN_OIDC_CLIENTS_FILE") && text.contains("QRLOGIN_JWT_ALG"),
        "{text}"
    );
    assert!(
        text.contains("client \"typo\": unknown field `redirect_uri`"),
        "{text}"
    );
}

#[tokio::test]
async fn provider_picks_an_enabled_provider_and_the_page_can_be_resumed() {
    use qrlogin::ticket::Provider;
    let (app, _files) = provider_app(|s| {
        s.providers = vec![Provider::Dev, Provider::WechatOauth];
        s.wechat_app_id = Some("wx-test".into());
        s.wechat_app_secret = Some("wx-test-secret".into());
    })
    .await;
    let (_, challenge) = pkce();
    let params = spa_request(&challenge, &[("provider", "wechat-oauth")]);
    let r = app
        .client
        .get(authorize_url(&app, &params))
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(html.contains("data-provider=\"wechat-oauth\""), "{html}");
    let request = request_of(&html);
    let r = app
        .client
        .post(app.url(&format!("/oauth2/authorize/{request}/tickets")))
        .json(&json!({"provider": "wechat-oauth"}))
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["provider"], "wechat-oauth");
    // A provider that is not enabled falls back to the default.
    let params = spa_request(&challenge, &[("provider", "wechat-mp")]);
    let html = app
        .client
        .get(authorize_url(&app, &params))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("data-provider=\"dev\""), "{html}");
    // The same request's page again, and an unknown one.
    let r = app
        .client
        .get(app.url(&format!("/oauth2/authorize/{request}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(request_of(&r.text().await.unwrap()), request);
    let r = app
        .client
        .get(app.url("/oauth2/authorize/AAAAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn an_oidc_login_logs_no_client_secret_code_or_token() {
    let (logs, _guard) = crate::logs::Captured::start();
    let (app, _files) = provider_app(|_| {}).await;
    let wiki = [
        ("response_type", "code"),
        ("client_id", "wiki"),
        ("redirect_uri", WIKI_CB),
        ("scope", "openid profile"),
        ("state", "s"),
    ];
    let request = open_login_page(&app, &wiki).await;
    let t = ticket_for(&app, &request).await;
    phone_confirms(&app, &t, "Ann").await;
    let to = complete(&app, &request, &t.id, &t.secret)
        .await
        .json::<Value>()
        .await
        .unwrap()["redirect_to"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = query_of(&to)["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WIKI_CB),
        ("client_id", "wiki"),
        ("client_secret", CLIENT_SECRET),
    ];
    let body: Value = token_request(&app, &form).await.json().await.unwrap();
    // A replay and a wrong secret are logged as events, without the values.
    token_request(&app, &form).await;
    let r = wiki_token_request(&app, "a-guess-a-guess-a-guess-a-guess-a-guess", &form[..3]).await;
    assert_eq!(r.status(), 401);
    let text = logs.text();
    assert!(text.contains("presented twice"), "the replay is logged");
    let sig = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    logs.assert_free_of(&[
        ("client secret", CLIENT_SECRET),
        ("guessed secret", "a-guess-a-guess"),
        ("code", &code),
        ("ticket secret", &t.secret),
        ("ID token", &sig(body["id_token"].as_str().unwrap())),
        ("access token", &sig(body["access_token"].as_str().unwrap())),
    ]);
}

#[tokio::test]
async fn the_issuer_must_be_the_public_url_and_no_client_may_be_the_service_audience() {
    let files = OidcFiles::new(
        Algorithm::ES256,
        &[
            json!({"client_id": "qrlogin", "token_endpoint_auth_method": "none",
                 "redirect_uris": ["https://x.example/cb"]}),
        ],
    );
    let mut s = test_settings();
    files.apply(&mut s, Algorithm::ES256);
    s.public_url = Some("https://login.example.com".into());
    s.jwt_issuer = Some("https://elsewhere.example.com".into());
    let Err(e) = qrlogin::Application::build(s).await else {
        panic!("started with a foreign issuer");
    };
    let text = e.to_string();
    assert!(
        text.contains(
            "QRLOGIN_JWT_ISSUER: https://elsewhere.example.com must equal QRLOGIN_PUBLIC_URL"
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"client "qrlogin": client_id equals QRLOGIN_JWT_AUDIENCE"#),
        "{text}"
    );
}

/// Access tokens are for the userinfo audience: the service's own tokens
/// may not have it, or an access token would pass as one.
#[tokio::test]
async fn the_service_audience_may_not_be_the_access_tokens() {
    let (_ok, files) = provider_app(|_| {}).await;
    let mut s = test_settings();
    files.apply(&mut s, Algorithm::ES256);
    s.public_url = Some("https://login.example.com".into());
    s.jwt_audience = "https://login.example.com/oauth2/userinfo".into();
    let Err(e) = qrlogin::Application::build(s).await else {
        panic!("started with the access tokens' audience");
    };
    assert!(e.to_string().contains("QRLOGIN_JWT_AUDIENCE"), "{e}");
}
