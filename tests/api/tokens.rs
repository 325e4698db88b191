//! Tokens as product backends receive them: issued through the real service
//! (ticket → WebSocket → trusted confirm), then verified by paths that share
//! nothing with the signer (the published JWKS fed to `jsonwebtoken`), by
//! introspection, by the JWKS verifier the example uses, and by the CLI.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use qrlogin::config::Args;
use qrlogin::token::JwtAlg;
use qrlogin::token::SigningKey;
use qrlogin_verify::{JwksSource, JwksVerifier};
use serde_json::{Value, json};

use crate::helpers::{API_KEY, JWT_SECRET, TestApp, next_frame, spawn_app_with};

pub const ISSUER: &str = "https://login.test";
pub const AUDIENCE: &str = "qrlogin";
/// Written by OpenSSL (`genpkey`, then `rsa -traditional`): generating RSA
/// keys in a debug build would slow every run.
const RSA_PKCS8: &str = include_str!("../../src/token/testdata/rsa_pkcs8.pem");
const RSA_PKCS1: &str = include_str!("../../src/token/testdata/rsa_pkcs1.pem");

/// A folder of key files, removed when dropped.
pub struct KeyDir(PathBuf);

impl KeyDir {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qrlogin-keys-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// A new key of `alg` (RS256: the OpenSSL fixture) as a PKCS#8 file.
    pub fn key(&self, name: &str, alg: Algorithm) -> PathBuf {
        let pem = match alg {
            Algorithm::RS256 => RSA_PKCS8.to_owned(),
            other => SigningKey::generate(other)
                .unwrap()
                .to_pkcs8_pem()
                .unwrap()
                .to_string(),
        };
        self.write(name, &pem)
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn jwt_alg(alg: Algorithm) -> JwtAlg {
    match alg {
        Algorithm::HS256 => JwtAlg::Hs256,
        Algorithm::RS256 => JwtAlg::Rs256,
        Algorithm::ES256 => JwtAlg::Es256,
        Algorithm::EdDSA => JwtAlg::EdDsa,
        other => panic!("{other:?}"),
    }
}

/// An app signing with `alg` and `key`, earlier keys `previous`.
async fn app_signing(alg: Algorithm, key: Option<&Path>, previous: &[&Path]) -> TestApp {
    let key = key.map(Path::to_path_buf);
    let previous: Vec<PathBuf> = previous.iter().map(|p| p.to_path_buf()).collect();
    spawn_app_with(move |s: &mut Args| {
        s.jwt_alg = jwt_alg(alg);
        s.jwt_key_file = key;
        s.jwt_previous_key_files = previous;
        s.jwt_issuer = Some(ISSUER.into());
    })
    .await
}

/// A token as the browser receives it: ticket, WebSocket, trusted confirm.
pub async fn login(app: &TestApp, sub: &str) -> String {
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(app.confirm(&t.id, sub).await.status(), 200);
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["status"], "confirmed");
    frame["token"].as_str().expect("a token").to_owned()
}

pub async fn jwks_of(app: &TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The independent path: the JWKS JSON → `DecodingKey::from_jwk`, the
/// algorithm taken from the JWK, every registered claim required.
fn verify_with_jwks(jwks: &Value, token: &str) -> Result<Value, String> {
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or("unknown kid")?;
    let alg = Algorithm::from_str(jwk["alg"].as_str().unwrap()).unwrap();
    let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["iss", "aud", "exp", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| e.to_string())?
        .claims;
    for claim in ["iat", "jti"] {
        if claims.get(claim).is_none() {
            return Err(format!("no {claim}"));
        }
    }
    Ok(claims)
}

async fn introspect(app: &TestApp, body: reqwest::Body, content_type: &str) -> Value {
    let r = app
        .client
        .post(app.url("/api/v1/tokens/introspect"))
        .bearer_auth(API_KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "introspection answers 200");
    r.json().await.unwrap()
}

async fn active(app: &TestApp, token: &str) -> bool {
    let answer = introspect(
        app,
        json!({ "token": token }).to_string().into(),
        "application/json",
    )
    .await;
    answer["active"].as_bool().unwrap()
}

fn fresh_verifier(app: &TestApp) -> JwksVerifier {
    JwksVerifier::new(
        JwksSource::Url(app.url("/.well-known/jwks.json")),
        ISSUER,
        AUDIENCE,
    )
}

pub fn claims_now(offset_exp: i64) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "jti": "j1",
            "iat": now, "exp": now + offset_exp, "idp": "app" })
}

/// Sign with `jsonwebtoken` and the key file: a second, independent signer.
pub fn sign_with_file(alg: Algorithm, pem: &str, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        other => panic!("{other:?}"),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Every asymmetric algorithm: the service's token verifies independently,
/// and each forgery is refused by introspection and by the JWKS verifier.
async fn check_algorithm(alg: Algorithm) {
    let dir = KeyDir::new();
    let key_file = dir.key("current.pem", alg);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    let app = app_signing(alg, Some(&key_file), &[]).await;

    let token = login(&app, "alice").await;
    let jwks = jwks_of(&app).await;
    let kid = kids(&jwks).remove(0);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, alg);
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(jwks["keys"][0].get(member).is_none(), "private {member}");
    }
    let claims = verify_with_jwks(&jwks, &token).expect("verifies from the JWKS alone");
    assert_eq!(claims["sub"], "alice");
    assert!(active(&app, &token).await);
    let verifier = fresh_verifier(&app);
    assert_eq!(verifier.verify(&token).await.unwrap()["sub"], "alice");

    // The independent signer with honest claims is accepted: what follows
    // is refused for what it changes, not for who signed it.
    let honest = sign_with_file(alg, &pem, &kid, &claims_now(600));
    assert!(active(&app, &honest).await, "{alg:?} honest control");

    let [h, _, s] = <[&str; 3]>::try_from(token.split('.').collect::<Vec<_>>()).unwrap();
    let mut evil_claims = claims.clone();
    evil_claims["sub"] = json!("mallory");
    let tampered = format!("{h}.{}.{s}", b64(&evil_claims));
    let expired = sign_with_file(alg, &pem, &kid, &claims_now(-300));
    let mut aud = claims_now(600);
    aud["aud"] = json!("another-app");
    let wrong_aud = sign_with_file(alg, &pem, &kid, &aud);
    let mut iss = claims_now(600);
    iss["iss"] = json!("https://evil.test");
    let wrong_iss = sign_with_file(alg, &pem, &kid, &iss);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&claims_now(600))
    );
    // The classic confusion: HMAC keyed with the published public key.
    let public = serde_json::to_vec(&jwks["keys"][0]).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs_public =
        jsonwebtoken::encode(&hs, &claims_now(600), &EncodingKey::from_secret(&public)).unwrap();
    let other = SigningKey::generate(Algorithm::ES256).unwrap();
    let other_pem = other.to_pkcs8_pem().unwrap();
    let unknown_kid = sign_with_file(Algorithm::ES256, &other_pem, other.kid(), &claims_now(600));
    let no_kid = {
        let mut header = Header::new(alg);
        header.kid = None;
        let t = sign_with_file(alg, &pem, &kid, &claims_now(600));
        let rest = t.split_once('.').unwrap().1;
        format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
        )
    };

    for (name, forged) in [
        ("tampered payload", &tampered),
        ("expired", &expired),
        ("wrong aud", &wrong_aud),
        ("wrong iss", &wrong_iss),
        ("alg none", &none),
        ("HS256 with the public key", &hs_public),
        ("unknown kid", &unknown_kid),
        ("no kid", &no_kid),
    ] {
        assert!(!active(&app, forged).await, "{alg:?} {name}: introspection");
        assert!(
            verifier.verify(forged).await.is_err(),
            "{alg:?} {name}: JWKS verifier"
        );
        assert!(
            verify_with_jwks(&jwks, forged).is_err(),
            "{alg:?} {name}: independent path"
        );
    }
}

#[tokio::test]
async fn es256_tokens_verify_from_the_jwks_and_forgeries_do_not() {
    check_algorithm(Algorithm::ES256).await;
}

#[tokio::test]
async fn eddsa_tokens_verify_from_the_jwks_and_forgeries_do_not() {
    check_algorithm(Algorithm::EdDSA).await;
}

#[tokio::test]
async fn rs256_tokens_verify_from_the_jwks_and_forgeries_do_not() {
    check_algorithm(Algorithm::RS256).await;
}

#[tokio::test]
async fn hs256_tokens_introspect_but_no_key_is_published() {
    let app = app_signing(Algorithm::HS256, None, &[]).await;
    let token = login(&app, "bob").await;
    assert!(active(&app, &token).await);
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a shared secret is never published");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    let key = DecodingKey::from_secret(JWT_SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "bob");
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims));
    assert!(!active(&app, &none).await);
}

#[tokio::test]
async fn a_pkcs1_rsa_key_file_signs_with_the_same_kid_as_its_pkcs8_form() {
    let dir = KeyDir::new();
    let pkcs1 = dir.write("pkcs1.pem", RSA_PKCS1);
    let pkcs8 = dir.write("pkcs8.pem", RSA_PKCS8);
    let a = app_signing(Algorithm::RS256, Some(&pkcs1), &[]).await;
    let b = app_signing(Algorithm::RS256, Some(&pkcs8), &[]).await;
    assert_eq!(kids(&jwks_of(&a).await), kids(&jwks_of(&b).await));
    let token = login(&a, "carol").await;
    assert!(active(&b, &token).await);
}

#[tokio::test]
async fn the_jwks_may_be_cached_for_a_while() {
    let dir = KeyDir::new();
    let key = dir.key("k.pem", Algorithm::EdDSA);
    let app = app_signing(Algorithm::EdDSA, Some(&key), &[]).await;
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.contains("max-age="), "{cache}");
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_until_the_old_key_is_removed() {
    let dir = KeyDir::new();
    let old_key = dir.key("old.pem", Algorithm::ES256);
    let new_key = dir.key("new.pem", Algorithm::ES256);

    // Before: the old key signs.
    let before = app_signing(Algorithm::ES256, Some(&old_key), &[]).await;
    let old_token = login(&before, "dave").await;
    let old_kid = kids(&jwks_of(&before).await).remove(0);
    let jwks_file = dir.write("jwks.json", &jwks_of(&before).await.to_string());
    before.stop.stop();

    // A backend caches the JWKS it saw before the rotation.
    let cached = JwksVerifier::new(JwksSource::File(jwks_file.clone()), ISSUER, AUDIENCE)
        .with_refresh(Duration::ZERO, Duration::from_secs(3600));
    cached.verify(&old_token).await.unwrap();
    cached.verify(&old_token).await.unwrap();
    assert_eq!(cached.fetches(), 1, "fetched once, then cached");

    // Rotated: the new key signs, the old one is a previous key.
    let during = app_signing(Algorithm::ES256, Some(&new_key), &[&old_key]).await;
    let jwks = jwks_of(&during).await;
    let new_token = login(&during, "dave").await;
    let new_kid = jsonwebtoken::decode_header(&new_token)
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid, "new tokens carry the new kid");
    assert_eq!(kids(&jwks), vec![new_kid.clone(), old_kid.clone()]);
    assert!(active(&during, &old_token).await, "signed before rotation");
    assert!(active(&during, &new_token).await);
    verify_with_jwks(&jwks, &old_token).unwrap();
    verify_with_jwks(&jwks, &new_token).unwrap();

    // The cached backend meets an unknown kid and refetches once.
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    assert_eq!(cached.verify(&new_token).await.unwrap()["sub"], "dave");
    assert_eq!(cached.fetches(), 2, "refetched on the unknown kid");
    cached.verify(&new_token).await.unwrap();
    cached.verify(&old_token).await.unwrap();
    assert_eq!(cached.fetches(), 2);

    // Over HTTP: one fetch serves both kids.
    let remote = fresh_verifier(&during);
    remote.verify(&old_token).await.unwrap();
    remote.verify(&new_token).await.unwrap();
    assert_eq!(remote.fetches(), 1);
    during.stop.stop();

    // The old key removed: its tokens stop verifying.
    let after = app_signing(Algorithm::ES256, Some(&new_key), &[]).await;
    assert_eq!(kids(&jwks_of(&after).await), vec![new_kid]);
    assert!(!active(&after, &old_token).await, "removed key");
    assert!(active(&after, &new_token).await);
    let verifier = fresh_verifier(&after);
    assert!(verifier.verify(&old_token).await.is_err());
    verifier.verify(&new_token).await.unwrap();
}

#[tokio::test]
async fn a_change_of_algorithm_is_a_rotation_too() {
    let dir = KeyDir::new();
    let rsa = dir.key("rsa.pem", Algorithm::RS256);
    let ed = dir.key("ed.pem", Algorithm::EdDSA);
    let before = app_signing(Algorithm::RS256, Some(&rsa), &[]).await;
    let rsa_token = login(&before, "erin").await;
    let after = app_signing(Algorithm::EdDSA, Some(&ed), &[&rsa]).await;
    let ed_token = login(&after, "erin").await;
    let verifier = fresh_verifier(&after);
    verifier.verify(&rsa_token).await.unwrap();
    verifier.verify(&ed_token).await.unwrap();
    // The RSA key verifies RS256 only: an EdDSA header under its kid is refused.
    let rsa_kid = jsonwebtoken::decode_header(&rsa_token)
        .unwrap()
        .kid
        .unwrap();
    let mut claims = verify_with_jwks(&jwks_of(&after).await, &ed_token).unwrap();
    claims["sub"] = json!("mallory");
    let ed_pem = std::fs::read_to_string(&ed).unwrap();
    let crossed = sign_with_file(Algorithm::EdDSA, &ed_pem, &rsa_kid, &claims);
    assert!(!active(&after, &crossed).await);
    assert!(verifier.verify(&crossed).await.is_err());
}

#[tokio::test]
async fn introspection_answers_inactive_to_any_garbage() {
    let app = app_signing(Algorithm::HS256, None, &[]).await;
    let junk: [(&str, &str); 8] = [
        ("", "application/json"),
        ("not json", "application/json"),
        ("{}", "application/json"),
        (r#"{"token": 5}"#, "application/json"),
        (r#"{"token": "a.b.c"}"#, "application/json"),
        (r#"{"token": "..."}"#, "application/json"),
        ("token=%FF%FE", "application/x-www-form-urlencoded"),
        ("\u{0}\u{1}", "application/octet-stream"),
    ];
    for (body, content_type) in junk {
        let answer = introspect(&app, body.to_owned().into(), content_type).await;
        assert_eq!(answer, json!({ "active": false }), "{body:?}");
    }
}

#[tokio::test]
async fn introspection_returns_the_claims_of_a_valid_token_as_json_or_form() {
    let app = app_signing(Algorithm::HS256, None, &[]).await;
    let token = login(&app, "frank").await;
    let answer = introspect(
        &app,
        json!({ "token": token }).to_string().into(),
        "application/json",
    )
    .await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["sub"], "frank");
    assert_eq!(answer["iss"], ISSUER);
    let form = introspect(
        &app,
        format!("token={token}&token_type_hint=access_token").into(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(form["active"], true);
}

#[tokio::test]
async fn introspection_requires_the_api_key() {
    let app = app_signing(Algorithm::HS256, None, &[]).await;
    let token = login(&app, "gina").await;
    let url = app.url("/api/v1/tokens/introspect");
    let body = json!({ "token": token });
    let anonymous = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(
        crate::helpers::error_of(anonymous).await,
        (401, "unauthorized".into())
    );
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("not-the-api-key-at-all")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::error_of(wrong).await,
        (401, "unauthorized".into())
    );
}

// ---- the CLI ----

fn qrlogin_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qrlogin"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

#[test]
fn keygen_prints_pkcs8_keys_the_service_reads() {
    for (flag, alg) in [("es256", Algorithm::ES256), ("eddsa", Algorithm::EdDSA)] {
        let out = qrlogin_cli(&["keygen", "--alg", flag]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = String::from_utf8(out.stdout).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        assert_eq!(SigningKey::from_pem(&pem).unwrap().algorithm(), alg);
    }
}

#[tokio::test]
async fn token_verify_prints_the_claims_or_why_not() {
    let dir = KeyDir::new();
    let key = dir.key("k.pem", Algorithm::ES256);
    let app = app_signing(Algorithm::ES256, Some(&key), &[]).await;
    let token = login(&app, "hana").await;
    let jwks_url = app.url("/.well-known/jwks.json");
    let jwks_file = dir.write("jwks.json", &jwks_of(&app).await.to_string());
    let key = key.to_str().unwrap().to_owned();
    let tampered = {
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        format!("{head}.{}.{sig}", b64(&claims_now(600)))
    };
    let runs = tokio::task::spawn_blocking(move || {
        let by_url = qrlogin_cli(&[
            "token", "verify", &token, "--jwks", &jwks_url, "--issuer", ISSUER,
        ]);
        let by_file = qrlogin_cli(&[
            "token",
            "verify",
            &token,
            "--jwks",
            jwks_file.to_str().unwrap(),
            "--issuer",
            ISSUER,
        ]);
        let by_config = qrlogin_cli(&[
            "--jwt-alg",
            "ES256",
            "--jwt-key-file",
            &key,
            "--jwt-issuer",
            ISSUER,
            "token",
            "verify",
            &token,
        ]);
        let refused = qrlogin_cli(&[
            "token", "verify", &tampered, "--jwks", &jwks_url, "--issuer", ISSUER,
        ]);
        let wrong_issuer = qrlogin_cli(&[
            "token",
            "verify",
            &token,
            "--jwks",
            &jwks_url,
            "--issuer",
            "https://other",
        ]);
        (by_url, by_file, by_config, refused, wrong_issuer)
    })
    .await
    .unwrap();
    let (by_url, by_file, by_config, refused, wrong_issuer) = runs;
    for (name, out) in [("url", by_url), ("file", by_file), ("config", by_config)] {
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(claims["sub"], "hana", "{name}");
    }
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("signature"), "{why}");
    assert!(!wrong_issuer.status.success());
    assert!(String::from_utf8_lossy(&wrong_issuer.stderr).contains("iss"));
}
