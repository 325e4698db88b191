//! The core contract: tickets, QR images, WebSocket, long-poll, trusted API,
//! dev phone pages, errors and limits.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

// ---------- tickets ----------

#[tokio::test]
async fn creating_a_ticket_answers_the_contract_fields() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let b = &t.body;
    assert_eq!(b["status"], "pending");
    assert_eq!(b["provider"], "dev");
    assert!(t.id.len() <= 32 && t.id.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert!(t.id.len() >= 22, "≥128 bits of base62");
    assert!(
        t.secret.len() >= 22
            && t.secret
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_eq!(b["qr_content"], format!("{}/m/{}", app.address, t.id));
    for (field, suffix) in [
        ("qr_png", "qr.png"),
        ("qr_svg", "qr.svg"),
        ("ws", "ws"),
        ("poll", "poll"),
    ] {
        assert_eq!(b[field], format!("/api/v1/tickets/{}/{suffix}", t.id));
    }
    assert_eq!(b["expires_in"], 120);
    assert!(
        time::OffsetDateTime::parse(
            b["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
}

#[tokio::test]
async fn an_empty_body_creates_a_ticket_too() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn a_disabled_or_unknown_provider_is_a_bad_request() {
    let app = spawn_app().await;
    for provider in ["wechat-mp", "nope", ""] {
        let r = app
            .client
            .post(app.url("/api/v1/tickets"))
            .json(&json!({ "provider": provider }))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (400, "bad_request".into()), "{provider}");
    }
}

#[tokio::test]
async fn malformed_ticket_requests_get_the_contract_error() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"[1,2]".to_vec()),
        ("application/json", b"{\"provider\": 5}".to_vec()),
        ("text/plain", b"\xff\xfe".to_vec()),
    ];
    for (ct, body) in cases {
        let r = app
            .client
            .post(app.url("/api/v1/tickets"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (400, "bad_request".into()));
    }
}

#[tokio::test]
async fn a_huge_body_is_payload_too_large() {
    let app = spawn_app().await;
    let body = format!("{{\"provider\":\"{}\"}}", "a".repeat(100 * 1024));
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (413, "payload_too_large".into()));
}

#[tokio::test]
async fn live_ticket_cap_answers_over_capacity() {
    let app = spawn_app_with(|s| s.max_live_tickets = 2).await;
    app.create_ticket().await;
    app.create_ticket().await;
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (503, "over_capacity".into()));
}

// ---------- QR images ----------

#[tokio::test]
async fn the_png_decodes_back_to_qr_content() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let r = app
        .client
        .get(app.url(t.body["qr_png"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let bytes = r.bytes().await.unwrap();
    let img = image::load_from_memory(&bytes).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    assert_eq!(
        grids[0].decode().unwrap().1,
        t.body["qr_content"].as_str().unwrap()
    );
}

#[tokio::test]
async fn the_svg_is_served_as_svg_and_size_is_bounded() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.svg?size=100000", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().contains("<svg"));
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png?size=100000", t.id)))
        .send()
        .await
        .unwrap();
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert!(img.width() <= 1100, "size clamped, got {}", img.width());
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png?size=abc", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn qr_of_an_unknown_ticket_is_404() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/tickets/AAAAAAAAAAAAAAAAAAAAAAAA/qr.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (404, "ticket_not_found".into()));
}

#[tokio::test]
async fn odd_ticket_ids_are_unknown_tickets_never_500() {
    let app = spawn_app().await;
    let long = "a".repeat(5000);
    for id in [
        "..%2F..%2Fetc",
        "%00",
        long.as_str(),
        "%F0%9F%98%80",
        "a%20b",
        "%2e%2e",
    ] {
        for (method, suffix) in [("GET", "/qr.png"), ("POST", "/poll"), ("GET", "")] {
            let url = app.url(&format!("/api/v1/tickets/{id}{suffix}"));
            let req = if method == "GET" {
                app.client.get(url)
            } else {
                app.client.post(url)
            };
            let r = req.bearer_auth(API_KEY).send().await.unwrap();
            assert!(
                r.status().is_client_error(),
                "{method} {id}{suffix} → {}",
                r.status()
            );
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].is_string());
        }
    }
}

// ---------- WebSocket ----------

#[tokio::test]
async fn the_first_frame_is_the_current_state() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["type"], "state");
    assert_eq!(frame["status"], "pending");
    assert_eq!(frame["expires_at"], t.body["expires_at"]);
}

#[tokio::test]
async fn the_server_selects_the_qrlogin_subprotocol() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let protocols = format!("qrlogin.v1, secret.{}", t.secret);
    let (_ws, response) = app.ws_handshake(&t.id, &protocols, None).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "qrlogin.v1");
}

#[tokio::test]
async fn wrong_or_missing_secret_is_refused_before_upgrade() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    for protocols in ["qrlogin.v1, secret.wrong", "qrlogin.v1", ""] {
        let err = app.ws_with(&t.id, protocols).await.expect_err("refused");
        assert_http_status(err, 401);
    }
}

#[tokio::test]
async fn unknown_ticket_socket_is_404() {
    let app = spawn_app().await;
    let err = app
        .ws_with("AAAAAAAAAAAAAAAAAAAAAAAA", "qrlogin.v1, secret.x")
        .await
        .expect_err("refused");
    assert_http_status(err, 404);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let protocols = format!("qrlogin.v1, secret.{}", t.secret);
    let err = app
        .ws_handshake(&t.id, &protocols, Some("https://evil.example"))
        .await
        .expect_err("refused");
    assert_http_status(err, 403);
}

fn assert_http_status(err: tokio_tungstenite::tungstenite::Error, status: u16) {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status().as_u16(), status),
        other => panic!("expected HTTP {status}, got {other:?}"),
    }
}

#[tokio::test]
async fn scanned_then_confirmed_are_pushed_and_the_socket_closes_with_1000() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let r = app
        .trusted(
            "scan",
            &t.id,
            json!({ "sub": "u1", "user": { "nickname": "Ann", "avatar": "https://a/x.png" } }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let scanned = next_frame(&mut ws).await;
    assert_eq!(scanned["status"], "scanned");
    assert_eq!(scanned["user"]["nickname"], "Ann");
    assert_eq!(app.confirm(&t.id, "u1").await.status(), 200);
    let confirmed = next_frame(&mut ws).await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["token_type"], "Bearer");
    assert_eq!(confirmed["expires_in"], 3600);
    assert!(confirmed["token"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn the_token_carries_the_contract_claims() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    app.trusted(
        "confirm",
        &t.id,
        json!({ "sub": "user-7", "claims": { "role": "admin", "sub": "evil", "iss": "evil" } }),
    )
    .await;
    let token = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["qrlogin"]);
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(
        claims["sub"], "user-7",
        "extra claims never override registered ones"
    );
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["idp"], "app");
    assert_eq!(claims["role"], "admin");
    for claim in ["iat", "exp", "jti", "aud"] {
        assert!(!claims[claim].is_null(), "{claim}");
    }
}

#[tokio::test]
async fn a_late_socket_gets_the_confirmed_token_until_the_ticket_ends() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    app.confirm(&t.id, "u1").await;
    for _ in 0..2 {
        let mut ws = app.ws(&t).await;
        let frame = next_frame(&mut ws).await;
        assert_eq!(frame["status"], "confirmed");
        assert!(frame["token"].is_string());
    }
}

#[tokio::test]
async fn denial_is_pushed() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    assert_eq!(app.trusted("deny", &t.id, json!({})).await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "denied");
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn expiry_is_pushed_and_the_ticket_is_gone() {
    let app = spawn_app_with(|s| s.ticket_ttl = 1).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(next_frame(&mut ws).await["status"], "expired");
    assert_eq!(close_code(&mut ws).await, Some(1000));
    let r = app.confirm(&t.id, "u1").await;
    assert_eq!(error_of(r).await, (404, "ticket_not_found".into()));
}

#[tokio::test]
async fn oversized_client_frames_close_the_socket() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    let _ = ws.send(Message::Text("x".repeat(64 * 1024).into())).await;
    let code = close_code(&mut ws).await;
    assert!(code.is_none() || code == Some(1009), "closed, got {code:?}");
}

#[tokio::test]
async fn sockets_per_ticket_are_capped() {
    let app = spawn_app_with(|s| s.max_sockets_per_ticket = 2).await;
    let t = app.create_ticket().await;
    let mut a = app.ws(&t).await;
    let mut b = app.ws(&t).await;
    next_frame(&mut a).await;
    next_frame(&mut b).await;
    let err = app
        .ws_with(&t.id, &format!("qrlogin.v1, secret.{}", t.secret))
        .await
        .expect_err("capped");
    assert_http_status(err, 429);
}

#[tokio::test]
async fn the_server_pings_idle_sockets() {
    let app = spawn_app_with(|s| s.ws_ping_interval = 1).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    let msg = tokio::time::timeout(
        Duration::from_secs(3),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .unwrap();
    assert!(matches!(msg, Some(Ok(Message::Ping(_)))), "{msg:?}");
}

#[tokio::test]
async fn stopping_the_service_closes_sockets_with_1012() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    app.stop.stop();
    assert_eq!(close_code(&mut ws).await, Some(1012));
    tokio::time::timeout(Duration::from_secs(5), app.task)
        .await
        .expect("server exits")
        .unwrap();
}

// ---------- exactly one winner ----------

#[tokio::test]
async fn racing_confirms_and_denies_have_exactly_one_winner() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let action = if i % 2 == 0 { "confirm" } else { "deny" };
        calls.push(app.trusted(action, &t.id, json!({ "sub": format!("u{i}") })));
    }
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    let conflicts = results.iter().filter(|r| r.status() == 409).count();
    assert_eq!((ok, conflicts), (1, 19));
}

#[tokio::test]
async fn confirming_a_denied_ticket_is_invalid_transition() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    app.trusted("deny", &t.id, json!({})).await;
    let r = app.confirm(&t.id, "u1").await;
    assert_eq!(error_of(r).await, (409, "invalid_transition".into()));
}

// ---------- long-poll ----------

pub(crate) async fn poll(app: &TestApp, t: &Ticket, body: Value, wait: u64) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/tickets/{}/poll?wait={wait}", t.id)))
        .bearer_auth(&t.secret)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn poll_answers_at_once_when_the_state_differs() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let r = poll(&app, &t, json!({}), 25).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert!(body.get("type").is_none());
}

#[tokio::test]
async fn poll_waits_for_the_change_then_answers_it() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let waiting = async {
        let r = poll(&app, &t, json!({ "status": "pending" }), 10).await;
        (r, Instant::now())
    };
    let confirm = async {
        polls_waiting(&app, 1).await;
        let sent = Instant::now();
        (app.confirm(&t.id, "u1").await, sent)
    };
    let ((r, answered), (confirmed, sent)) = tokio::join!(waiting, confirm);
    assert_eq!(confirmed.status(), 200);
    // Woken by the change, not answered at the end of its 10 s wait.
    let took = answered.duration_since(sent);
    assert!(
        took < Duration::from_secs(2),
        "answered {took:?} after the confirm"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "confirmed");
    assert!(body["token"].is_string());
}

#[tokio::test]
async fn poll_returns_the_current_state_after_the_wait() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let started = std::time::Instant::now();
    let body: Value = poll(&app, &t, json!({ "status": "pending" }), 1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "pending");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn poll_sees_expiry() {
    let app = spawn_app_with(|s| s.ticket_ttl = 1).await;
    let t = app.create_ticket().await;
    let body: Value = poll(&app, &t, json!({ "status": "pending" }), 10)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "expired");
}

#[tokio::test]
async fn poll_refuses_wrong_secrets_and_bad_bodies() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let url = app.url(&format!("/api/v1/tickets/{}/poll", t.id));
    let r = app
        .client
        .post(&url)
        .bearer_auth("wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app.client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&t.secret)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&t.secret)
        .json(&json!({ "status": "bogus" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = app
        .client
        .post(format!("{url}?wait=-1"))
        .bearer_auth(&t.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
}

// ---------- trusted API ----------

#[tokio::test]
async fn the_trusted_api_needs_the_key() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let url = app.url(&format!("/api/v1/tickets/{}/confirm", t.id));
    let r = app
        .client
        .post(&url)
        .json(&json!({ "sub": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app
        .client
        .post(&url)
        .bearer_auth("wrong-key")
        .json(&json!({ "sub": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
}

#[tokio::test]
async fn the_trusted_api_is_off_without_a_key() {
    let app = spawn_app_with(|s| s.api_key = None).await;
    let t = app.create_ticket().await;
    let r = app.confirm(&t.id, "x").await;
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
}

#[tokio::test]
async fn get_ticket_tells_the_status_never_the_token() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let confirm: Value = app.confirm(&t.id, "u1").await.json().await.unwrap();
    assert!(
        confirm.get("token").is_none(),
        "the confirmer never sees the token"
    );
    let r = app.trusted_get(&t.id).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "status": "confirmed" }));
}

#[tokio::test]
async fn trusted_bodies_are_validated() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    for body in [
        json!({}),
        json!({ "sub": "" }),
        json!({ "sub": 5 }),
        json!({ "sub": "x", "claims": [1] }),
        json!({ "sub": "x", "bogus": 1 }),
    ] {
        let r = app.trusted("confirm", &t.id, body.clone()).await;
        assert_eq!(error_of(r).await, (400, "bad_request".into()), "{body}");
    }
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/confirm", t.id)))
        .bearer_auth(API_KEY)
        .body("{\"sub\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (400, "bad_request".into()),
        "no content type"
    );
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}", t.id)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["status"],
        "pending",
        "bad input changed nothing"
    );
}

// ---------- dev phone pages ----------

#[tokio::test]
async fn the_dev_phone_page_names_the_computer_and_marks_scanned() {
    let app = spawn_app().await;
    let desktop_ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .header("user-agent", desktop_ua)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    let (id, secret) = (t["ticket"].as_str().unwrap(), t["secret"].as_str().unwrap());
    let ticket = Ticket {
        id: id.into(),
        secret: secret.into(),
        body: t.clone(),
    };
    let mut ws = app.ws(&ticket).await;
    next_frame(&mut ws).await;
    let page = phone(IPHONE_UA).open(ticket.link()).await;
    assert_eq!(page.status, 200);
    let cookie = page.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.html;
    assert!(html.contains("Chrome 120"), "browser named");
    assert!(html.contains("Windows"), "OS named");
    assert!(html.contains("127.0.0.1"), "IP named");
    assert!(html.contains("Development mode"), "dev banner");
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");
}

#[tokio::test]
async fn a_dev_login_from_the_phone_pushes_the_token() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    let phone = phone(IPHONE_UA);
    let page = phone.open(t.link()).await;
    next_frame(&mut ws).await;
    let r = phone.confirm_as(&page, "Ann").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Logged in"));
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["status"], "confirmed");
    assert_eq!(frame["user"]["nickname"], "Ann");
    let token = frame["token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["idp"], "dev");
}

#[tokio::test]
async fn deny_from_the_phone_is_pushed() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let phone = phone(IPHONE_UA);
    let page = phone.open(t.link()).await;
    let r = phone.deny(&page).await;
    assert!(r.text().await.unwrap().contains("cancelled"));
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "denied");
}

#[tokio::test]
async fn a_bare_post_confirms_nothing() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let phone = phone(IPHONE_UA);
    let page = phone.open(t.link()).await;
    let url = app.url(&format!("/m/{}/confirm", t.id));
    // No cookie (another client), with the right CSRF value.
    let r = app
        .client
        .post(&url)
        .form(&[("csrf", page.csrf().as_str()), ("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The phone's cookie, without or with a wrong CSRF value.
    let r = phone
        .post(&url)
        .form(&[("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = phone
        .post(&url)
        .form(&[("csrf", "0000"), ("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = phone.post(&url).body("garbage").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let mut ws = app.ws(&t).await;
    assert_eq!(
        next_frame(&mut ws).await["status"],
        "scanned",
        "still waiting"
    );
}

#[tokio::test]
async fn another_phone_cannot_take_over_a_scanned_ticket() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    assert_eq!(phone(IPHONE_UA).open(t.link()).await.status, 200);
    let second = phone(IPHONE_UA).open(t.link()).await;
    assert_eq!(second.status, 409);
    assert!(second.html.contains("another device"));
}

#[tokio::test]
async fn an_expired_or_unknown_ticket_shows_the_expired_page() {
    let app = spawn_app().await;
    for path in ["/m/AAAAAAAAAAAAAAAAAAAAAAAA", "/m/..%2F..", "/m/%00"] {
        let r = phone(IPHONE_UA).get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Refresh the code on your computer")
        );
    }
}

#[tokio::test]
async fn phone_pages_speak_chinese_when_asked() {
    let app = spawn_app().await;
    let r = phone(IPHONE_UA)
        .get(app.url("/m/AAAAAAAAAAAAAAAAAAAAAAAA"))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("二维码已过期"));
}

// ---------- pages, ops, errors ----------

#[tokio::test]
async fn the_login_page_loads_the_client() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("/static/qrlogin.js"));
    assert!(!html.contains("<script>"), "no inline script");
    let js = app
        .client
        .get(app.url("/static/qrlogin.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("QRLogin"));
}

#[tokio::test]
async fn templates_can_be_overridden_from_a_folder() {
    let dir = std::env::temp_dir().join(format!("qrlogin-tpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("login.html"),
        "<p>custom {{ t.login_heading }}</p>",
    )
    .unwrap();
    let app = spawn_app_with(|s| s.templates_dir = Some(dir.clone())).await;
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(html, "<p>custom Log in</p>");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    app.confirm(&t.id, "u").await;
    next_frame(&mut ws).await;
    let text = app.metrics().await;
    for name in [
        "qrlogin_tickets_created_total",
        "qrlogin_tickets_finished_total",
        "qrlogin_tickets_live",
        "qrlogin_sockets_open",
        "qrlogin_push_latency_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} in metrics");
    }
    assert!(text.contains("status=\"confirmed\""));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = app
        .client
        .delete(app.url("/api/v1/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 405);
}

#[tokio::test]
async fn invalid_settings_stop_the_start_naming_the_variable() {
    let mut settings = test_settings();
    settings.jwt_secret = Some("short".into());
    let err = qrlogin::Application::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("QRLOGIN_JWT_SECRET"), "{err}");
    let mut settings = test_settings();
    settings.env = qrlogin::config::Environment::Production;
    let err = qrlogin::Application::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("QRLOGIN_PROVIDERS"), "{err}");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 16);
}

/// The trace and CORS wrap the whole router, its 404 and 405 answers too:
/// a page on an allowed origin can read why its request failed, and the
/// log line has the same id as the answer.
#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_traced_and_cors_answered() {
    let app = spawn_app_with(|s| s.allowed_origins = vec!["https://shop.example".into()]).await;
    for (method, path, status) in [
        (reqwest::Method::GET, "/no/such/path", 404),
        (reqwest::Method::DELETE, "/api/v1/tickets", 405),
    ] {
        let r = app
            .client
            .request(method, app.url(path))
            .header("origin", "https://shop.example")
            .header("x-request-id", "req-7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["x-request-id"], "req-7", "{path}");
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://shop.example",
            "{path}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn cors_answers_only_allowed_origins() {
    let app = spawn_app_with(|s| s.allowed_origins = vec!["https://shop.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/tickets"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// A request without `Origin` whose answer no cache keeps (a backend's
/// POST) steps around CORS: no `Access-Control-*` and no `Vary` headers.
/// The same POST from a browser (an allowed page's, or one whose origin is
/// hidden: `Origin: null`), and any GET, still get CORS's answer, `Vary: origin` included, so caches keep them apart; so
/// does an OPTIONS, with or without `Origin`.
#[tokio::test]
async fn cors_headers_go_to_requests_a_browser_could_read() {
    let app = spawn_app_with(|s| s.allowed_origins = vec!["https://shop.example".into()]).await;
    let cors_headers = |r: &reqwest::Response| {
        let mut names: Vec<String> = r
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k.starts_with("access-control-") || k == "vary")
            .collect();
        names.sort();
        names
    };
    let t = app.create_ticket().await;
    let backend = app.confirm(&t.id, "u1").await;
    assert_eq!(backend.status(), 200);
    assert_eq!(cors_headers(&backend), Vec::<String>::new());

    // A ticket created from a browser page on `origin`.
    let create_from = |origin: &'static str| {
        app.client
            .post(app.url("/api/v1/tickets"))
            .header("origin", origin)
            .json(&serde_json::json!({}))
            .send()
    };
    let page = create_from("https://shop.example").await.unwrap();
    assert_eq!(page.status(), 201);
    assert_eq!(
        page.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(
        cors_headers(&page),
        [
            "access-control-allow-origin",
            "access-control-expose-headers",
            "vary"
        ]
    );
    // A page whose origin is hidden sends `Origin: null`: CORS still
    // answers it, and allows it nothing.
    let hidden = create_from("null").await.unwrap();
    assert_eq!(hidden.status(), 201);
    assert_eq!(
        cors_headers(&hidden),
        ["access-control-expose-headers", "vary"]
    );

    let get = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        cors_headers(&get),
        ["access-control-expose-headers", "vary"]
    );
    assert!(get.headers()["vary"].to_str().unwrap().contains("origin"));

    let options = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 200, "OPTIONS keeps CORS's answer");
    assert!(cors_headers(&options).contains(&"vary".to_owned()));
}

#[tokio::test]
async fn an_allowed_foreign_origin_may_open_sockets() {
    let app = spawn_app_with(|s| s.allowed_origins = vec!["https://shop.example".into()]).await;
    let t = app.create_ticket().await;
    let protocols = format!("qrlogin.v1, secret.{}", t.secret);
    let opened = app
        .ws_handshake(&t.id, &protocols, Some("https://shop.example"))
        .await;
    assert!(opened.is_ok());
}

// ---------- abuse limits ----------

#[tokio::test]
async fn ticket_creation_is_rate_limited_per_ip_with_retry_after() {
    let app = spawn_app_with(|s| s.rate_tickets = 6).await;
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the burst (a sixth of the quota) passes");
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(error_of(r).await, (429, "rate_limited".into()));
    assert!(app.metrics().await.contains("qrlogin_rate_limited_total"));
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let app = spawn_app_with(|s| {
        s.rate_tickets = 6;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let create = |ip: &'static str| {
        app.client
            .post(app.url("/api/v1/tickets"))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(create("198.51.100.1").await.unwrap().status(), 201);
    assert_eq!(create("198.51.100.1").await.unwrap().status(), 429);
    assert_eq!(
        create("198.51.100.2").await.unwrap().status(),
        201,
        "another client behind the proxy"
    );
}

#[tokio::test]
async fn polls_and_socket_connects_are_rate_limited() {
    let app = spawn_app_with(|s| (s.rate_polls, s.rate_sockets) = (6, 6)).await;
    let t = app.create_ticket().await;
    let poll = || {
        app.client
            .post(app.url(&format!("/api/v1/tickets/{}/poll?wait=0", t.id)))
            .bearer_auth(&t.secret)
            .send()
    };
    assert_eq!(poll().await.unwrap().status(), 200);
    assert_eq!(poll().await.unwrap().status(), 429);
    let _ws = app.ws(&t).await;
    let err = app
        .ws_with(&t.id, &format!("qrlogin.v1, secret.{}", t.secret))
        .await
        .expect_err("limited");
    assert_http_status(err, 429);
}

#[tokio::test]
async fn open_sockets_are_capped_in_total_and_per_ip() {
    let app = spawn_app_with(|s| s.max_sockets = 2).await;
    let (a, b, c) = (
        app.create_ticket().await,
        app.create_ticket().await,
        app.create_ticket().await,
    );
    let _wa = app.ws(&a).await;
    let mut wb = app.ws(&b).await;
    let err = app
        .ws_with(&c.id, &format!("qrlogin.v1, secret.{}", c.secret))
        .await
        .expect_err("capped");
    assert_http_status(err, 503);
    send_close(&mut wb).await;
    drop(wb);
    // The place comes back once the server sees the close.
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(ws) = app
            .ws_with(&c.id, &format!("qrlogin.v1, secret.{}", c.secret))
            .await
        {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "a closed socket gives its place back");

    let app = spawn_app_with(|s| s.max_sockets_per_ip = 1).await;
    let (a, b) = (app.create_ticket().await, app.create_ticket().await);
    let _wa = app.ws(&a).await;
    let err = app
        .ws_with(&b.id, &format!("qrlogin.v1, secret.{}", b.secret))
        .await
        .expect_err("capped");
    assert_http_status(err, 429);
}

#[tokio::test]
async fn waiting_long_polls_are_capped() {
    let app = spawn_app_with(|s| s.max_polls = 1).await;
    let (a, b) = (app.create_ticket().await, app.create_ticket().await);
    let waiting = poll(&app, &a, json!({ "status": "pending" }), 2);
    let refused = async {
        polls_waiting(&app, 1).await;
        poll(&app, &b, json!({ "status": "pending" }), 2).await
    };
    let (first, second) = tokio::join!(waiting, refused);
    assert_eq!(first.status(), 200);
    assert_eq!(error_of(second).await, (503, "over_capacity".into()));
}

/// Resolves once `n` long-polls wait in the instance (within 5 s).
pub(crate) async fn polls_waiting(app: &TestApp, n: usize) {
    for _ in 0..500 {
        if app.state.limits.waiting.in_use().1 == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} polls never waited");
}

/// A poll of `t` as from `client`, behind the trusted proxy 127.0.0.1.
async fn poll_from(app: &TestApp, t: &Ticket, client: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/tickets/{}/poll?wait=3", t.id)))
        .header("x-forwarded-for", client)
        .bearer_auth(&t.secret)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn waiting_polls_are_capped_per_ip_and_an_ipv6_client_is_its_64() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.max_polls_per_ip = 1;
    })
    .await;
    let (a, b) = (app.create_ticket().await, app.create_ticket().await);
    let pending = json!({ "status": "pending" });
    let waiting = poll_from(&app, &a, "2001:db8:0:7::1", pending.clone());
    let others = async {
        polls_waiting(&app, 1).await;
        // Another address of the same /64 is the same client.
        let same = poll_from(&app, &b, "2001:db8:0:7:ffff::2", pending.clone()).await;
        assert_eq!(error_of(same).await, (429, "rate_limited".into()));
        // Other clients are not held back (they answer at once: `{}`).
        for other in ["2001:db8:0:8::1", "198.51.100.1"] {
            assert_eq!(poll_from(&app, &b, other, json!({})).await.status(), 200);
        }
    };
    let (first, ()) = tokio::join!(waiting, others);
    assert_eq!(first.status(), 200);
}

#[tokio::test]
async fn polls_and_sockets_of_one_ticket_share_its_cap() {
    use futures_util::StreamExt;
    let app = spawn_app_with(|s| s.max_sockets_per_ticket = 2).await;
    let t = app.create_ticket().await;
    let mut polls: futures_util::stream::FuturesUnordered<_> = (0..12)
        .map(|_| poll(&app, &t, json!({ "status": "pending" }), 30))
        .collect();
    // Ten refusals come back at once; then a confirm ends the two waits
    // (were a third admitted, the tenth answer would be its 200, 30 s on).
    let mut statuses = Vec::new();
    while let Some(r) = polls.next().await {
        statuses.push(r.status().as_u16());
        if statuses.len() == 10 {
            app.confirm(&t.id, "u").await;
        }
    }
    assert_eq!(statuses[..10], [429; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [200; 2], "{statuses:?}");

    // A socket and a poll count together.
    let t = app.create_ticket().await;
    let mut a = app.ws(&t).await;
    let mut b = app.ws(&t).await;
    next_frame(&mut a).await;
    next_frame(&mut b).await;
    let r = poll(&app, &t, json!({}), 0).await;
    assert_eq!(error_of(r).await, (429, "rate_limited".into()));
}

#[tokio::test]
async fn concurrent_upgrades_never_open_more_sockets_than_the_ticket_cap() {
    let app = spawn_app_with(|s| s.max_sockets_per_ticket = 2).await;
    for trial in 0..30 {
        let t = app.create_ticket().await;
        let protocols = format!("qrlogin.v1, secret.{}", t.secret);
        let upgrades = (0..12).map(|_| app.ws_with(&t.id, &protocols));
        let sockets: Vec<_> = futures_util::future::join_all(upgrades)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(sockets.len(), 2, "trial {trial}: {} sockets", sockets.len());
    }
}

/// Send `head`, then a byte of body every 200 ms until the server answers;
/// what it answered and when, or nothing after 6 s.
async fn trickle_body(app: &TestApp, head: &str) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if answer.is_empty() => {
                let _ = tcp.write_all(b" ").await;
            }
            _ = tokio::time::sleep_until(started + Duration::from_secs(6)) => break,
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_trickling_its_body_is_cut_off_at_the_request_timeout() {
    let app = spawn_app_with(|s| s.request_timeout = 1).await;
    let t = app.create_ticket().await;
    let poll = format!(
        "POST /api/v1/tickets/{}/poll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        t.id, t.secret
    );
    let create = "POST /api/v1/tickets HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    for head in [poll.as_str(), create] {
        let (answer, took) = trickle_body(&app, head).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{head}: {answer:?}");
        assert!(answer.contains(r#""error":"unavailable""#), "{answer}");
        assert!(
            took < Duration::from_secs(3),
            "{head}: answered after {took:?}"
        );
    }
    assert!(app.metrics().await.contains("qrlogin_slow_bodies_total"));
}

#[tokio::test]
async fn the_live_ticket_cap_frees_itself_at_expiry_without_traffic() {
    let app = spawn_app_with(|s| (s.max_live_tickets, s.ticket_ttl) = (2, 1)).await;
    app.create_ticket().await;
    app.create_ticket().await;
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (503, "over_capacity".into()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "qrlogin_tickets_live 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("tickets_live"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| s.header_read_timeout = 1).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(3));
}
