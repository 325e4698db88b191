//! Server CPU that the OpenID provider adds to a login: the whole
//! authorize → ticket → confirm → complete → token round trip through the
//! HTTP router (no sockets, in-memory store, ES256), next to the plain
//! login it wraps (ticket → confirm). The difference is the provider's cost.
//!
//! `cargo bench --bench oidc`

// A benchmark that cannot set up must stop loudly, like a test.
#![allow(clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use qrlogin::config::Cli;
use qrlogin::token::JwtAlg;
use qrlogin::token::SigningKey;
use qrlogin::web::Stack;
use qrlogin::web::trace::Traced;
use serde_json::Value;
use sha2::Digest;
use tower::ServiceExt;

const API_KEY: &str = "bench-api-key-0123456789";
const CALLBACK: &str = "https://app.example.com/callback";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0";

fn settings(dir: &std::path::Path) -> qrlogin::config::Args {
    let mut s = Cli::try_parse_from(["qrlogin"])
        .map(|c| c.args)
        .expect("default settings");
    s.bind = "127.0.0.1:0".parse().expect("address");
    s.api_key = Some(API_KEY.into());
    s.ticket_ttl = 120;
    s.max_live_tickets = u64::MAX;
    s.rate_tickets = 0;
    s.oidc_token_rate = 1_000_000;
    let key = SigningKey::generate(jsonwebtoken::Algorithm::ES256)
        .expect("key")
        .to_pkcs8_pem()
        .expect("pem");
    std::fs::write(dir.join("key.pem"), key.as_bytes()).expect("key file");
    let clients = serde_json::json!({"clients": [
        {"client_id": "spa", "token_endpoint_auth_method": "none", "redirect_uris": [CALLBACK]}
    ]});
    std::fs::write(dir.join("clients.json"), clients.to_string()).expect("clients file");
    s.jwt_alg = JwtAlg::Es256;
    s.jwt_key_file = Some(dir.join("key.pem"));
    s.oidc_clients_file = Some(dir.join("clients.json"));
    s
}

async fn call(router: &Traced<impl Stack>, request: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("body");
    (status, body)
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON")
}

fn post_json(path: &str, body: &str, bearer: Option<&str>) -> Request<Body> {
    let mut r = Request::post(path)
        .header("content-type", "application/json")
        .header("user-agent", UA);
    if let Some(b) = bearer {
        r = r.header("authorization", format!("Bearer {b}"));
    }
    r.body(Body::from(body.to_owned())).expect("request")
}

/// A ticket (from `path`) confirmed by the trusted API: the login itself.
async fn login(router: &Traced<impl Stack>, path: &str) -> Value {
    let (status, body) = call(router, post_json(path, "{}", None)).await;
    assert_eq!(status, StatusCode::CREATED);
    let ticket = json(&body);
    let id = ticket["ticket"].as_str().expect("ticket");
    let (status, _) = call(
        router,
        post_json(
            &format!("/api/v1/tickets/{id}/confirm"),
            r#"{"sub":"user-42"}"#,
            Some(API_KEY),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    ticket
}

async fn oidc_round_trip(router: &Traced<impl Stack>) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", "spa"),
            ("redirect_uri", CALLBACK),
            ("scope", "openid profile"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let authorize = Request::get(format!("/oauth2/authorize?{query}"))
        .header("user-agent", UA)
        .body(Body::empty())
        .expect("request");
    let (status, page) = call(router, authorize).await;
    assert_eq!(status, StatusCode::OK);
    let page = std::str::from_utf8(&page).expect("html");
    let start = page.find("data-oidc-request=\"").expect("request id") + 19;
    let request = &page[start..start + 24];
    let ticket = login(router, &format!("/oauth2/authorize/{request}/tickets")).await;
    let (status, done) = call(
        router,
        post_json(
            &format!("/oauth2/authorize/{request}/complete"),
            &format!(
                r#"{{"ticket":"{}"}}"#,
                ticket["ticket"].as_str().expect("id")
            ),
            ticket["secret"].as_str(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let to = json(&done)["redirect_to"].as_str().expect("to").to_owned();
    let code = url::Url::parse(&to)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("client_id", "spa"),
            ("code_verifier", verifier),
        ])
        .finish();
    let token = Request::post("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("request");
    let (status, _) = call(router, token).await;
    assert_eq!(status, StatusCode::OK);
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("qrlogin-bench-oidc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let app = rt
        .block_on(qrlogin::Application::build(settings(&dir)))
        .expect("app");
    let router = qrlogin::web::router(app.state());
    c.bench_function("login_plain_http_es256", |b| {
        b.iter(|| rt.block_on(login(&router, "/api/v1/tickets")))
    });
    c.bench_function("login_oidc_round_trip_http_es256", |b| {
        b.iter(|| rt.block_on(oidc_round_trip(&router)))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
