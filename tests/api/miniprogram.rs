//! `miniprogram` end to end: the real service, the fake WeChat's
//! `jscode2session` and `getwxacodeunlimit`, the Mini Program's JSON calls,
//! and the browser's real WebSocket.

use serde_json::{Value, json};

use crate::fake_wechat::FakeWechat;
use crate::fake_wechat::mp::{JSCODE2SESSION, MINI_APP_ID, STABLE_TOKEN, WXACODE, wxacode_bytes};
use crate::fake_wechat::oauth::User;
use crate::helpers::*;

async fn spawn() -> (TestApp, FakeWechat) {
    spawn_with(|_| {}).await
}

/// [`spawn`] with `tweak`ed settings.
pub(crate) async fn spawn_with(
    tweak: impl FnOnce(&mut qrlogin::config::Args),
) -> (TestApp, FakeWechat) {
    let fake = FakeWechat::start().await;
    let app = spawn_app_with(|s| {
        fake.configure_mp(s);
        s.providers = vec![
            qrlogin::ticket::Provider::Miniprogram,
            qrlogin::ticket::Provider::Dev,
        ];
        tweak(s);
    })
    .await;
    (app, fake)
}

/// A Mini Program call: status and JSON body.
pub(crate) async fn call(app: &TestApp, ticket: &str, action: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/miniprogram/tickets/{ticket}/{action}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[tokio::test]
async fn the_mini_program_scans_and_confirms_and_the_browser_gets_the_token() {
    let (app, fake) = spawn().await;
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .header("user-agent", DESKTOP_UA)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let t = Ticket {
        id: body["ticket"].as_str().unwrap().to_owned(),
        secret: body["secret"].as_str().unwrap().to_owned(),
        body,
    };
    assert_eq!(t.body["provider"], "miniprogram");
    assert_eq!(
        t.body["qr_content"],
        format!("{}/m/{}", app.address, t.id),
        "the short URL a Mini Program opens"
    );
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");

    let user = User::default();
    let (status, scanned) = call(&app, &t.id, "scan", json!({"code": fake.wx_login(&user)})).await;
    assert_eq!(status, 200, "{scanned}");
    let scan_token = scanned["scan_token"].as_str().unwrap().to_owned();
    assert!(scan_token.len() >= 22);
    let requester = &scanned["requester"];
    assert_eq!(requester["ip"], "127.0.0.1");
    assert_eq!(requester["user_agent"], DESKTOP_UA);
    assert_eq!(requester["browser"], "Chrome 120");
    assert!(requester["os"].as_str().unwrap().starts_with("Windows"));
    assert!(requester["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(scanned.get("session_key").is_none());
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");

    let (status, done) = call(&app, &t.id, "confirm", json!({"scan_token": scan_token})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "confirmed");
    assert!(
        done.get("token").is_none(),
        "the token goes to the browser only"
    );
    let confirmed = next_frame(&mut ws).await;
    assert_eq!(confirmed["status"], "confirmed");
    let claims = claims_of(confirmed["token"].as_str().unwrap());
    assert_eq!(claims["idp"], "miniprogram");
    assert_eq!(claims["openid"], user.openid(MINI_APP_ID));
    assert_eq!(claims["unionid"], user.unionid().unwrap());
    assert_eq!(claims["sub"], user.unionid().unwrap());
    assert_eq!(fake.hits(JSCODE2SESSION), 1);
}

#[tokio::test]
async fn deny_with_the_scan_token_denies() {
    let (app, fake) = spawn().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let unbound = User {
        key: "carol".into(),
        bound: false,
        ..User::default()
    };
    let (_, scanned) = call(
        &app,
        &t.id,
        "scan",
        json!({"code": fake.wx_login(&unbound)}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");
    let (status, body) = call(
        &app,
        &t.id,
        "deny",
        json!({"scan_token": scanned["scan_token"]}),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("denied")));
    assert_eq!(next_frame(&mut ws).await["status"], "denied");
}

#[tokio::test]
async fn bad_or_used_codes_name_the_errcode_and_leave_the_ticket() {
    let (app, fake) = spawn().await;
    let t = app.create_ticket().await;
    let (status, body) = call(&app, &t.id, "scan", json!({"code": "never-issued"})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("40029") && message.contains("invalid"),
        "{message}"
    );
    assert_eq!(status_of(&app, &t.id).await, "pending");

    // A code spent on another ticket.
    let code = fake.wx_login(&User::default());
    let other = app.create_ticket().await;
    assert_eq!(
        call(&app, &other.id, "scan", json!({"code": code})).await.0,
        200
    );
    let (status, body) = call(&app, &t.id, "scan", json!({"code": code})).await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("40163") && message.contains("already used"),
        "{message}"
    );
    assert_eq!(status_of(&app, &t.id).await, "pending");

    for bad in [
        json!({}),
        json!({"code": ""}),
        json!({"code": 5}),
        json!({"code": "x", "more": 1}),
    ] {
        let (status, body) = call(&app, &t.id, "scan", bad.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    assert_eq!(status_of(&app, &t.id).await, "pending");
    assert_eq!(
        fake.hits(JSCODE2SESSION),
        3,
        "malformed bodies never reach WeChat"
    );
}

#[tokio::test]
async fn forged_or_foreign_scan_tokens_are_refused() {
    let (app, fake) = spawn().await;
    let t = app.create_ticket().await;
    let other = app.create_ticket().await;
    let (_, mine) = call(
        &app,
        &t.id,
        "scan",
        json!({"code": fake.wx_login(&User::default())}),
    )
    .await;
    let bob = User {
        key: "bob".into(),
        ..User::default()
    };
    let (_, theirs) = call(
        &app,
        &other.id,
        "scan",
        json!({"code": fake.wx_login(&bob)}),
    )
    .await;
    for action in ["confirm", "deny"] {
        for token in [
            json!("forged-token-forged-token-forged"),
            theirs["scan_token"].clone(),
        ] {
            let (status, body) = call(&app, &t.id, action, json!({"scan_token": token})).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("forbidden")),
                "{action} {token}"
            );
        }
        let (status, body) = call(&app, &t.id, action, json!({"scan_token": ""})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    assert_eq!(status_of(&app, &t.id).await, "scanned");
    // A pending ticket cannot be confirmed by a made-up token either.
    let fresh = app.create_ticket().await;
    let (status, _) = call(
        &app,
        &fresh.id,
        "confirm",
        json!({"scan_token": mine["scan_token"]}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(status_of(&app, &fresh.id).await, "pending");
    // Scanning twice is a conflict, the ticket keeps its first scanner.
    let (status, _) = call(&app, &t.id, "scan", json!({"code": fake.wx_login(&bob)})).await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &app,
        &t.id,
        "confirm",
        json!({"scan_token": mine["scan_token"]}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn other_providers_tickets_are_not_for_the_mini_program() {
    let (app, fake) = spawn().await;
    let dev = app.create_ticket_with(json!({"provider": "dev"})).await;
    let (status, _) = call(
        &app,
        &dev.id,
        "scan",
        json!({"code": fake.wx_login(&User::default())}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(status_of(&app, &dev.id).await, "pending");
    let (status, body) = call(&app, "NoSuchTicket", "scan", json!({"code": "x"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("ticket_not_found"))
    );
}

#[tokio::test]
async fn the_mini_program_code_is_wechats_image_passed_through() {
    let (app, fake) = spawn().await;
    let t = app.create_ticket().await;
    let url = app.url(&format!("/api/v1/tickets/{}/qr.png?kind=wxacode", t.id));
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(
        bytes.as_ref(),
        wxacode_bytes(&t.id, "pages/login/login").as_slice()
    );
    // Reloading the image does not ask WeChat again.
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(fake.hits(WXACODE), 1);
    assert_eq!(fake.hits(STABLE_TOKEN), 1, "the Mini Program's own token");
    // The ordinary QR is still there.
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
}

#[tokio::test]
async fn a_wechat_error_instead_of_an_image_is_an_upstream_error() {
    let (app, fake) = spawn().await;
    let t = app.create_ticket().await;
    fake.lock().mp.pages.clear();
    let url = app.url(&format!("/api/v1/tickets/{}/qr.png?kind=wxacode", t.id));
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(error_of(r).await, (502, "upstream_error".into()));
    // A stale token is refreshed once and the code comes.
    fake.lock().mp.pages.push("pages/login/login".into());
    fake.revoke_access_tokens();
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.hits(STABLE_TOKEN), 2);
    // Only Mini Program tickets, only as PNG.
    let dev = app.create_ticket_with(json!({"provider": "dev"})).await;
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png?kind=wxacode", dev.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.svg?kind=wxacode", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
}
