//! Secrets, tokens and codes never reach the logs: a full login at TRACE
//! level is captured and searched, for every provider (`wechat-oauth` and
//! `wechat-web` in their own suite, next to their helpers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::fake_wechat::OA_SECRET;
use crate::fake_wechat::mp::{
    AES_KEY, JSCODE2SESSION, MINI_APP_ID, MINI_SECRET, PUSH_TOKEN, Pusher, QRCODE_CREATE,
    scan_event, sha1_sorted, subscribe_event,
};
use crate::fake_wechat::oauth::User;
use crate::helpers::*;
use crate::miniprogram::call;
use crate::wechat_mp::{deliver, link_in, now};

/// Everything logged while the guard lives, on this (current-thread) runtime.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Capture on this thread. Two scoped subscribers are registered: with a
    /// single one, tracing lets other test threads (which have none) decide
    /// a callsite's interest alone and disable it for everyone, so a test
    /// could pass without capturing anything.
    pub fn start() -> (Self, [tracing::subscriber::DefaultGuard; 2]) {
        let idle = tracing::subscriber::set_default(tracing_subscriber::registry());
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (captured, [guard, idle])
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The text once every `expected` line is in it, or after 5 s: some are
    /// written by tasks that outlive the response (Redis reconnecting).
    pub async fn text_with(&self, expected: &[(&str, &str)]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.text();
            if expected.iter().all(|(_, line)| text.contains(line))
                || tokio::time::Instant::now() >= deadline
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fails naming each secret found.
    pub fn assert_free_of(&self, secrets: &[(&str, &str)]) {
        let text = self.text();
        for (what, secret) in secrets {
            assert!(!secret.is_empty());
            assert!(!text.contains(secret), "the {what} appears in the logs");
        }
    }
}

/// The value of the cookie a page sets.
fn cookie_set_by(page: &PhonePage) -> String {
    let header = page.headers["set-cookie"].to_str().unwrap();
    let pair = header.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

/// A JWT's signature: enough on its own to be worth hiding.
fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

/// The token, polled by the browser holding the secret of a confirmed ticket.
async fn poll_token(app: &TestApp, t: &Ticket) -> String {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/poll", t.id)))
        .bearer_auth(&t.secret)
        .json(&json!({ "status": "scanned" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "confirmed", "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// What creating a ticket answers when WeChat fails us.
async fn failed_creation(app: &TestApp) -> (u16, String) {
    error_of(app.post_ticket(json!({})).await).await
}

/// Fails unless every line the test needs to have been captured was.
fn assert_logged(text: &str, expected: &[(&str, &str)]) {
    for (what, line) in expected {
        assert!(text.contains(line), "{what} is logged ({line:?})");
    }
}

#[tokio::test]
async fn a_dev_login_logs_no_secret_token_or_cookie() {
    let (logs, _guard) = Captured::start();
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    let phone = phone(IPHONE_UA);
    let page = phone.open(t.link()).await;
    let cookie_value = cookie_set_by(&page);
    let csrf = page.csrf();
    assert_eq!(phone.confirm_as(&page, "Ann").await.status(), 200);
    next_frame(&mut ws).await;
    let token = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let poll = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/poll", t.id)))
        .bearer_auth(&t.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);

    let text = logs.text();
    assert!(
        text.contains(&t.id[..6]),
        "logs were captured and name the ticket shortly"
    );
    logs.assert_free_of(&[
        ("ticket id in full", &t.id),
        ("browser secret", &t.secret),
        ("token", &token),
        ("phone cookie", &cookie_value),
        ("CSRF token", &csrf),
        ("JWT signing key", JWT_SECRET),
    ]);
}

#[tokio::test]
async fn a_trusted_api_login_logs_no_key_or_token() {
    let (logs, _guard) = Captured::start();
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    app.trusted("scan", &t.id, json!({ "sub": "u1" })).await;
    app.confirm(&t.id, "u1").await;
    let mut ws = app.ws(&t).await;
    let token = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(logs.text().contains("confirmed"));
    logs.assert_free_of(&[
        ("API key", API_KEY),
        ("token", &token),
        ("browser secret", &t.secret),
        ("ticket id in full", &t.id),
    ]);
}

/// `wechat-mp`: the server check, a plain SCAN and a safe-mode subscribe
/// each followed through the one-time link, a stale access token, a refused
/// and a timed-out QR. The openid is personal data: no log names a person.
#[tokio::test]
async fn an_official_account_login_logs_no_key_link_token_or_openid() {
    let (logs, _guard) = Captured::start();
    let (app, fake) = crate::wechat_mp::spawn_with(|s| s.wechat_timeout_ms = 300).await;
    // Plain mode is another deployment: no EncodingAESKey.
    let (plain_app, plain_fake) = crate::wechat_mp::spawn_with(|s| {
        s.wechat_timeout_ms = 300;
        s.wechat_encoding_aes_key = None;
    })
    .await;
    let openid = crate::wechat_mp::openid();
    let pusher = Pusher::default();
    // WeChat checks the server URL.
    let (ts, nonce) = (now().to_string(), "1514711492");
    let signature = sha1_sorted(&[PUSH_TOKEN, &ts, nonce]);
    let r = app
        .client
        .get(app.url(&format!(
            "/wechat/events?signature={signature}&timestamp={ts}&nonce={nonce}&echostr=4375120948345356249"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Plain mode: a SCAN, the link opened, Confirm; the socket gets the token.
    let t = plain_app.create_ticket().await;
    let mut ws = plain_app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let scan = pusher.plain(&scan_event(&openid, &t.id, now()), &openid);
    let (status, reply) = deliver(&plain_app, &scan).await;
    assert_eq!(status, 200, "{reply}");
    let link = link_in(&reply, &openid);
    let phone1 = phone(WECHAT_UA);
    let page = phone1.open(&link).await;
    let cookie = cookie_set_by(&page);
    assert_eq!(phone1.confirm(&page).await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");
    let token = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Safe mode, after another system made the access token stale: a
    // subscribe, the link, Confirm; the browser polls. (First the safe
    // deployment's own access token, made stale next.)
    app.create_ticket().await;
    fake.revoke_access_tokens();
    let t2 = app.create_ticket().await;
    let subscribe = pusher.safe(&subscribe_event(&openid, &t2.id, now()), &openid);
    let (status, sealed) = deliver(&app, &subscribe).await;
    assert_eq!(status, 200, "{sealed}");
    let link2 = link_in(&pusher.open_reply(&sealed), &openid);
    let phone2 = phone(WECHAT_UA);
    let page2 = phone2.open(&link2).await;
    let cookie2 = cookie_set_by(&page2);
    assert_eq!(phone2.confirm(&page2).await.status(), 200);
    assert_eq!(status_of(&app, &t2.id).await, "confirmed");
    let token2 = poll_token(&app, &t2).await;

    // Failures: WeChat refuses a QR, then does not answer in time.
    fake.fail_once(QRCODE_CREATE, 48001);
    assert_eq!(failed_creation(&app).await, (502, "upstream_error".into()));
    fake.delay(QRCODE_CREATE, Duration::from_secs(1));
    assert_eq!(failed_creation(&app).await, (502, "upstream_error".into()));

    let text = logs.text();
    assert_logged(
        &text,
        &[
            ("the push", "/wechat/events"),
            ("the link's route", &format!("/m/{}…", &t.id[..6])),
            (
                "the confirmation",
                "status=\"confirmed\" provider=\"wechat-mp\"",
            ),
            ("the token refresh", "WeChat access token refreshed"),
            ("the stale token", "refreshing once errcode=40001"),
            ("the refused QR", "errcode=48001"),
            ("the timeout", "kind=\"timeout\""),
        ],
    );
    let key_of = |link: &str| link.split("?k=").nth(1).unwrap().to_owned();
    let (key, key2) = (key_of(&link), key_of(&link2));
    let (csrf, csrf2) = (page.csrf(), page2.csrf());
    let mut access_tokens = fake.app_tokens();
    access_tokens.extend(plain_fake.app_tokens());
    assert!(
        access_tokens.len() >= 2,
        "the stale token and the fresh one"
    );
    let mut secrets = vec![
        ("ticket id in full", t.id.as_str()),
        ("ticket id in full", &t2.id),
        ("browser secret", &t.secret),
        ("browser secret", &t2.secret),
        ("token", &token),
        ("token's signature", signature_of(&token)),
        ("token", &token2),
        ("token's signature", signature_of(&token2)),
        ("link key", &key),
        ("link key", &key2),
        ("phone cookie", &cookie),
        ("phone cookie", &cookie2),
        ("CSRF token", &csrf),
        ("CSRF token", &csrf2),
        ("openid", &openid),
        ("API key", API_KEY),
        ("JWT signing key", JWT_SECRET),
        ("Official Account secret", OA_SECRET),
        ("push Token", PUSH_TOKEN),
        ("EncodingAESKey", AES_KEY),
    ];
    secrets.extend(access_tokens.iter().map(|t| ("access token", t.as_str())));
    logs.assert_free_of(&secrets);
}

/// `miniprogram`: the Mini Program code (once with a stale access token),
/// a scan confirmed and a scan denied by their scan_tokens, a spent code and
/// a timed-out `jscode2session`, whose URL carries the code and the secret.
#[tokio::test]
async fn a_mini_program_login_logs_no_code_session_key_scan_token_or_openid() {
    let (logs, _guard) = Captured::start();
    let (app, fake) = crate::miniprogram::spawn_with(|s| s.wechat_timeout_ms = 300).await;
    let user = User::default();
    let wxacode = |id: &str| {
        app.client
            .get(app.url(&format!("/api/v1/tickets/{id}/qr.png?kind=wxacode")))
            .send()
    };
    // The browser shows the Mini Program code; the Mini Program scans and
    // confirms; the socket gets the token.
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(wxacode(&t.id).await.unwrap().status(), 200);
    let code = fake.wx_login(&user);
    let (status, scanned) = call(&app, &t.id, "scan", json!({ "code": code })).await;
    assert_eq!(status, 200, "{scanned}");
    let scan_token = scanned["scan_token"].as_str().unwrap().to_owned();
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");
    let (status, done) = call(&app, &t.id, "confirm", json!({ "scan_token": scan_token })).await;
    assert_eq!(status, 200, "{done}");
    let token = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another login, its code made with an access token another system
    // made stale, denied.
    fake.revoke_access_tokens();
    let t2 = app.create_ticket().await;
    assert_eq!(wxacode(&t2.id).await.unwrap().status(), 200);
    let code2 = fake.wx_login(&user);
    let (status, scanned) = call(&app, &t2.id, "scan", json!({ "code": code2 })).await;
    assert_eq!(status, 200, "{scanned}");
    let scan_token2 = scanned["scan_token"].as_str().unwrap().to_owned();
    let (status, _) = call(&app, &t2.id, "deny", json!({ "scan_token": scan_token2 })).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &t2.id).await, "denied");

    // Failures: a spent code, then WeChat not answering in time.
    let t3 = app.create_ticket().await;
    let (status, _) = call(&app, &t3.id, "scan", json!({ "code": code })).await;
    assert_eq!(status, 400);
    fake.delay(JSCODE2SESSION, Duration::from_secs(1));
    let code3 = fake.wx_login(&user);
    let (status, _) = call(&app, &t3.id, "scan", json!({ "code": code3 })).await;
    assert_eq!(status, 502);

    let text = logs.text();
    assert_logged(
        &text,
        &[
            (
                "the confirm route",
                &format!("/api/v1/miniprogram/tickets/{}…/confirm", &t.id[..6]),
            ),
            (
                "the confirmation",
                "status=\"confirmed\" provider=\"miniprogram\"",
            ),
            ("the denial", "status=\"denied\" provider=\"miniprogram\""),
            ("the token refresh", "WeChat access token refreshed"),
            ("the stale token", "refreshing once errcode=40001"),
            ("the spent code", "errcode=40163"),
            ("the timeout", "kind=\"timeout\""),
        ],
    );
    let session_keys = fake.session_keys();
    assert_eq!(session_keys.len(), 2, "one per exchanged code");
    let access_tokens = fake.app_tokens();
    assert!(
        access_tokens.len() >= 2,
        "the stale token and the fresh one"
    );
    let openid = user.openid(MINI_APP_ID);
    let unionid = user.unionid().unwrap();
    let mut secrets = vec![
        ("ticket id in full", t.id.as_str()),
        ("ticket id in full", &t2.id),
        ("browser secret", &t.secret),
        ("browser secret", &t2.secret),
        ("token", &token),
        ("token's signature", signature_of(&token)),
        ("wx.login code", &code),
        ("wx.login code", &code2),
        ("wx.login code", &code3),
        ("scan_token", &scan_token),
        ("scan_token", &scan_token2),
        ("openid", &openid),
        ("unionid", &unionid),
        ("API key", API_KEY),
        ("JWT signing key", JWT_SECRET),
        ("Mini Program secret", MINI_SECRET),
        ("Official Account secret", OA_SECRET),
    ];
    secrets.extend(session_keys.iter().map(|k| ("session_key", k.as_str())));
    secrets.extend(access_tokens.iter().map(|t| ("access token", t.as_str())));
    logs.assert_free_of(&secrets);
}

/// In production, `wechat-mp` without an EncodingAESKey (plain mode, whose
/// signature does not cover the body) is named at start; with one, not.
#[tokio::test]
async fn in_production_wechat_mp_in_plain_mode_warns_at_start() {
    let (logs, _guard) = Captured::start();
    let production = |s: &mut qrlogin::config::Args| {
        s.env = qrlogin::config::Environment::Production;
        s.public_url = Some("https://login.example.com".into());
        s.providers = vec![qrlogin::ticket::Provider::WechatMp];
    };
    let warning = "wechat-mp runs in plain mode";
    let (_safe, _fake) = crate::wechat_mp::spawn_with(production).await;
    assert!(!logs.text().contains(warning), "{}", logs.text());
    let (_plain, _plain_fake) = crate::wechat_mp::spawn_with(|s| {
        production(s);
        s.wechat_encoding_aes_key = None;
    })
    .await;
    assert!(logs.text().contains(warning), "{}", logs.text());
}

/// Redis passwords, in every URL form the service logs: a working login
/// over a password-protected Redis, a wrong password, and a Sentinel URL
/// whose sentinels do not answer. The URLs are logged with `***`.
#[tokio::test]
async fn redis_passwords_appear_in_no_log_line() {
    let Some(redis) = crate::redis_server::RedisServer::start_with(
        "redis_passwords_appear",
        &["--requirepass", "s3cretpw"],
    ) else {
        return;
    };
    let (logs, _guard) = Captured::start();
    let port = redis.port;
    let with = |url: String| {
        move |s: &mut qrlogin::config::Args| {
            s.redis_url = Some(url);
            s.redis_prefix = "logpw".into();
        }
    };
    let app = spawn_app_with(with(format!("redis://:s3cretpw@127.0.0.1:{port}"))).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(app.confirm(&t.id, "u1").await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
    let wrong = spawn_app_with(with(format!("redis://app:wr0ngpw@127.0.0.1:{port}"))).await;
    assert_eq!(failed_creation(&wrong).await.0, 503);
    let sentinel = spawn_app_with(with(
        "redis+sentinel://app:sentinelpw@127.0.0.1:1,127.0.0.1:2/mymaster".into(),
    ))
    .await;
    assert_eq!(failed_creation(&sentinel).await.0, 503);
    let (working, wrong) = (
        format!("redis://:***@127.0.0.1:{port}"),
        format!("redis://app:***@127.0.0.1:{port}"),
    );
    let expected = [
        ("the working URL", working.as_str()),
        ("the wrong one", wrong.as_str()),
        (
            "the sentinel URL",
            "redis+sentinel://app:***@127.0.0.1:1,127.0.0.1:2/mymaster",
        ),
    ];
    assert_logged(&logs.text_with(&expected).await, &expected);
    logs.assert_free_of(&[
        ("password", "s3cretpw"),
        ("wrong password", "wr0ngpw"),
        ("sentinel password", "sentinelpw"),
    ]);
}

/// A browser request refused for its Origin is logged at warn, naming the
/// origin, once however often it comes; allowed and same-origin requests
/// are not (the service's own pages send their Origin too).
#[tokio::test]
async fn a_refused_origin_is_logged_once_naming_it() {
    let (logs, _guard) = Captured::start();
    let allowed = "http://127.0.0.1:1";
    let app = spawn_app_with(|s| s.allowed_origins = vec![allowed.into()]).await;
    // Unique to this run: the limiter is per process.
    let refused = format!("http://localhost:{}", std::process::id());
    let line = "origin not in QRLOGIN_ALLOWED_ORIGINS";
    for origin in [allowed, app.address.as_str()] {
        let r = app
            .client
            .post(app.url("/api/v1/tickets"))
            .header("origin", origin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert!(!logs.text().contains(line), "{}", logs.text());
    for _ in 0..3 {
        let r = app
            .client
            .post(app.url("/api/v1/tickets"))
            .header("origin", &refused)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(line)).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains(&refused),
        "{}",
        lines[0]
    );
}
