//! `wechat-web` end to end: WeChat's QR page (the fake plays the person
//! approving) sends a browser to our callback, which changes nothing and
//! only hands the code over; the page holding the ticket's secret redeems
//! it. Each attack is played from outside, holding only what the attacker
//! would hold.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_wechat::oauth::User;
use crate::fake_wechat::{FakeWechat, OA_APP_ID, WEB_APP_ID};
use crate::helpers::*;
use crate::wechat_oauth::{
    TOKEN_PATH, assert_clean, location, open, param, spawn, without_fragment,
};

/// The browser follows the ticket's `authorize_url` (WeChat's QR page; the
/// fake plays the person approving on the phone): the callback's URL.
pub async fn web_login(browser: &reqwest::Client, t: &Ticket) -> String {
    let url = t.body["authorize_url"].as_str().unwrap();
    let r = browser.get(without_fragment(url)).send().await.unwrap();
    location(&r)
}

/// `POST /api/v1/tickets/{ticket}/wechat-web` as the login page sends it.
pub async fn redeem(
    app: &TestApp,
    ticket: &str,
    secret: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{ticket}/wechat-web")))
        .json(&body);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    request.send().await.unwrap()
}

/// The page holding `t`'s secret redeems what `callback` carried.
pub async fn redeem_from_callback(app: &TestApp, t: &Ticket, callback: &str) -> reqwest::Response {
    let body = json!({
        "code": param(callback, "code").unwrap(),
        "state": param(callback, "state").unwrap(),
    });
    redeem(app, &t.id, Some(&t.secret), body).await
}

async fn web_app() -> (TestApp, FakeWechat) {
    spawn("wechat-web", |_| {}).await
}

/// The creator's long-poll, at once: its status and whether it holds a token.
async fn creator_sees(app: &TestApp, t: &Ticket) -> (String, bool) {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/poll?wait=0", t.id)))
        .bearer_auth(&t.secret)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    (
        body["status"].as_str().unwrap().to_owned(),
        body.get("token").is_some(),
    )
}

/// No frame reaches the socket for a while.
async fn assert_quiet(ws: &mut Socket) {
    use futures_util::StreamExt;
    let got = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(got.is_err(), "the socket got {got:?}");
}

#[tokio::test]
async fn state_in_the_authorize_url_is_opaque_not_the_ticket_id() {
    let (app, fake) = web_app().await;
    let t = app.create_ticket().await;
    let url = t.body["authorize_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "{}/connect/qrconnect?appid={WEB_APP_ID}&redirect_uri=",
            fake.base
        )),
        "{url}"
    );
    assert!(url.ends_with("#wechat_redirect"));
    let plain = without_fragment(url);
    assert_eq!(
        param(plain, "redirect_uri").unwrap(),
        format!("{}/wechat/web/callback", app.address)
    );
    assert_eq!(param(plain, "scope").as_deref(), Some("snsapi_login"));
    let state = param(plain, "state").unwrap();
    assert_ne!(state, t.id, "the state is not the ticket id");
    assert!(!state.contains(&t.id) && !t.id.contains(&state));
    assert!(state.len() >= 32 && state.bytes().all(|b| b.is_ascii_alphanumeric()));
    let other = app.create_ticket().await;
    assert_ne!(
        param(
            without_fragment(other.body["authorize_url"].as_str().unwrap()),
            "state"
        ),
        Some(state),
        "one state per ticket"
    );
    // The ticket id as a state is nothing the callback knows.
    let by_id = format!("{}/wechat/web/callback?code=x&state={}", app.address, t.id);
    let (status, _) = open(&app.client, &by_id).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_website_login_is_handed_to_the_page_with_the_secret_and_redeemed_once() {
    let (app, fake) = web_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let callback = web_login(&app.client, &t).await;
    assert!(callback.starts_with(&format!("{}/wechat/web/callback?code=", app.address)));

    // The callback is the hand-off page: no exchange, no change, no cookie.
    let r = app.client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let page = r.text().await.unwrap();
    assert!(page.contains("/static/wechat-handoff.js"), "{page}");
    assert_clean(&page, &param(&callback, "code").unwrap());
    assert_eq!(fake.hits(TOKEN_PATH), 0);
    assert_quiet(&mut ws).await;

    let r = redeem_from_callback(&app, &t, &callback).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "confirmed");
    assert!(body.get("token").is_none(), "the token goes to the socket");

    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["status"], "confirmed");
    assert_eq!(frame["user"]["nickname"], User::default().nickname.as_str());
    let claims = claims_of(frame["token"].as_str().unwrap());
    let user = User::default();
    assert_eq!(claims["idp"], "wechat");
    assert_eq!(
        claims["openid"],
        user.openid(WEB_APP_ID),
        "the website app's openid"
    );
    assert_eq!(claims["unionid"], user.unionid().unwrap());
    assert_eq!(
        claims["sub"],
        user.unionid().unwrap(),
        "same person, same sub as in the Official Account"
    );

    // A second redeem of the same code fails and changes nothing.
    let again = redeem_from_callback(&app, &t, &callback).await;
    assert_eq!(
        error_of(again).await,
        (409, "invalid_transition".to_owned())
    );
    let mut late = app.ws(&t).await;
    assert_eq!(next_frame(&mut late).await["token"], frame["token"]);
    assert_eq!(fake.hits(TOKEN_PATH), 1, "the code was exchanged once");
}

#[tokio::test]
async fn a_forwarded_wechat_page_logs_nobody_in() {
    let (app, fake) = web_app().await;
    // The attacker makes a ticket, keeps its secret and forwards the link.
    let attacker = app.create_ticket().await;
    let mut attackers_socket = app.ws(&attacker).await;
    next_frame(&mut attackers_socket).await;
    // The victim, in a fresh browser (no cookie, no secret), approves.
    fake.set_user(User {
        key: "victim".into(),
        nickname: "Victim".into(),
        ..User::default()
    });
    let victim = phone(IPHONE_UA);
    let callback = web_login(&victim, &attacker).await;
    let r = victim.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200, "the hand-off page");
    assert!(r.headers().get("set-cookie").is_none());
    // Nothing happened: the creator's poll and socket see a pending ticket.
    assert_eq!(
        creator_sees(&app, &attacker).await,
        ("pending".into(), false)
    );
    assert_quiet(&mut attackers_socket).await;
    assert_eq!(status_of(&app, &attacker.id).await, "pending");
    assert_eq!(fake.hits(TOKEN_PATH), 0, "the victim's code was not spent");
}

#[tokio::test]
async fn an_attackers_code_and_state_are_refused_for_another_ticket() {
    let (app, fake) = web_app().await;
    let victim = app.create_ticket().await;
    // The attacker approves their own ticket and keeps code and state.
    let attacker = app.create_ticket().await;
    let callback = web_login(&app.client, &attacker).await;
    // Fed to the victim's page, which redeems with its own secret.
    let r = redeem_from_callback(&app, &victim, &callback).await;
    assert_eq!(error_of(r).await, (403, "forbidden".to_owned()));
    assert_eq!(status_of(&app, &victim.id).await, "pending");
    assert_eq!(fake.hits(TOKEN_PATH), 0, "checked before the exchange");
    // Without a state nothing binds the code to the ticket either.
    let code = param(&callback, "code").unwrap();
    let r = redeem(
        &app,
        &victim.id,
        Some(&victim.secret),
        json!({ "code": code }),
    )
    .await;
    assert_eq!(error_of(r).await, (403, "forbidden".to_owned()));
    assert_eq!(status_of(&app, &victim.id).await, "pending");
    // The code is still good for the ticket it came back for.
    let r = redeem_from_callback(&app, &attacker, &callback).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_redeem_needs_the_tickets_secret_and_changes_nothing_without_it() {
    let (app, fake) = web_app().await;
    let t = app.create_ticket().await;
    let other = app.create_ticket().await;
    let callback = web_login(&app.client, &t).await;
    let body = json!({
        "code": param(&callback, "code").unwrap(),
        "state": param(&callback, "state").unwrap(),
    });
    for secret in [None, Some("wrong-secret"), Some(other.secret.as_str())] {
        let r = redeem(&app, &t.id, secret, body.clone()).await;
        assert_eq!(
            error_of(r).await,
            (401, "unauthorized".to_owned()),
            "{secret:?}"
        );
    }
    assert_eq!(status_of(&app, &t.id).await, "pending");
    assert_eq!(fake.hits(TOKEN_PATH), 0);
    let r = redeem(&app, "NoSuchTicket", Some(&t.secret), body.clone()).await;
    assert_eq!(error_of(r).await, (404, "ticket_not_found".to_owned()));
    let r = redeem(&app, &t.id, Some(&t.secret), json!({ "nope": 1 })).await;
    assert_eq!(error_of(r).await.0, 400);
    // Still redeemable by the page that holds the secret.
    let r = redeem(&app, &t.id, Some(&t.secret), body).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn codes_wechat_refuses_are_the_contracts_errors_and_leave_the_ticket() {
    let (app, fake) = web_app().await;
    let t = app.create_ticket().await;
    let state = param(
        without_fragment(t.body["authorize_url"].as_str().unwrap()),
        "state",
    )
    .unwrap();
    // Unknown to WeChat (40029).
    let r = redeem(
        &app,
        &t.id,
        Some(&t.secret),
        json!({ "code": "nope", "state": state }),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("40029"),
        "{body}"
    );
    // A code of the Official Account is not the website app's.
    let oa_code = fake.issue_code(OA_APP_ID, "snsapi_userinfo");
    let r = redeem(
        &app,
        &t.id,
        Some(&t.secret),
        json!({ "code": oa_code, "state": state }),
    )
    .await;
    assert_eq!(error_of(r).await, (400, "bad_request".to_owned()));
    assert_eq!(status_of(&app, &t.id).await, "pending");

    // WeChat busy: 502, the ticket pending; the code was claimed, so a
    // second try of it is refused without asking WeChat again.
    fake.busy_once(TOKEN_PATH);
    fake.busy_once(TOKEN_PATH);
    let callback = web_login(&app.client, &t).await;
    let r = redeem_from_callback(&app, &t, &callback).await;
    assert_eq!(error_of(r).await, (502, "upstream_error".to_owned()));
    assert_eq!(status_of(&app, &t.id).await, "pending");
    let hits = fake.hits(TOKEN_PATH);
    let r = redeem_from_callback(&app, &t, &callback).await;
    assert_eq!(error_of(r).await, (400, "bad_request".to_owned()));
    assert_eq!(fake.hits(TOKEN_PATH), hits);

    // A fresh code still logs in.
    let callback = web_login(&app.client, &t).await;
    assert_eq!(
        redeem_from_callback(&app, &t, &callback).await.status(),
        200
    );
}

#[tokio::test]
async fn a_refusal_callback_changes_nothing() {
    let (app, _fake) = web_app().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    _fake.refuse_next();
    let callback = web_login(&app.client, &t).await;
    assert!(param(&callback, "code").is_none(), "{callback}");
    // From anywhere, a bare GET of it denies nothing.
    for browser in [&app.client, &phone(IPHONE_UA)] {
        let (status, _) = open(browser, &callback).await;
        assert_eq!(status, 200, "the hand-off page");
    }
    assert_quiet(&mut ws).await;
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn callbacks_for_unknown_states_show_a_page_and_leak_nothing() {
    let (app, fake) = web_app().await;
    let t = app.create_ticket().await;
    let by_id = format!("?code=abc&state={}", t.id);
    for query in [
        "",
        "?code=abc",
        "?code=abc&state=",
        "?state=%00%ff",
        "?code=abc&state=unknown0state",
        &by_id,
    ] {
        let (status, page) = open(
            &app.client,
            &app.url(&format!("/wechat/web/callback{query}")),
        )
        .await;
        assert_eq!(status, 404, "{query}");
        assert_clean(&page, "abc");
        assert!(page.contains("<html"), "a page, not JSON: {page}");
    }
    assert_eq!(fake.hits(TOKEN_PATH), 0, "no callback asks WeChat anything");
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn the_hand_off_posts_only_to_allowed_origins_never_to_any() {
    let (app, _fake) = spawn("wechat-web", |s| {
        s.allowed_origins = vec!["*".into(), "https://shop.example/".into()];
    })
    .await;
    let t = app.create_ticket().await;
    let callback = web_login(&app.client, &t).await;
    let r = app.client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-frame-options").is_none(),
        "WeChat's frame may show it"
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    // As the browser reads the attribute (the template escapes `/`).
    let page = r.text().await.unwrap().replace("&#x2f;", "/");
    let expected = format!("{} https://shop.example", app.address);
    assert!(
        page.contains(&format!("data-origins=\"{expected}\"")),
        "the targets are the service and the listed origin: {page}"
    );
    assert!(
        csp.contains(&format!("frame-ancestors 'self' {expected};")),
        "{csp}"
    );
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'") && !csp.contains(" * "));
    // The script addresses each listed origin and skips "*".
    let script = app
        .client
        .get(app.url("/static/wechat-handoff.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.contains("postMessage(message, origin)"));
    assert!(!script.contains("postMessage(message, \"*\")"));
}

#[tokio::test]
async fn wechat_code_paths_are_rate_limited_per_ip() {
    let (app, _fake) = spawn("wechat-web,wechat-oauth", |s| s.rate_wechat = 6).await;
    let t = app
        .create_ticket_with(json!({ "provider": "wechat-web" }))
        .await;
    let body = json!({ "code": "c", "state": "s" });
    // A burst of one a minute: the first passes, then every path says 429.
    let r = redeem(&app, &t.id, Some(&t.secret), body.clone()).await;
    assert_ne!(r.status(), 429);
    let r = redeem(&app, &t.id, Some(&t.secret), body).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_of(r).await, (429, "rate_limited".to_owned()));
    for path in [
        "/wechat/web/callback?code=c&state=s",
        "/wechat/oauth/callback?code=c&state=s",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 429, "{path}");
        assert!(r.headers().contains_key("retry-after"));
        let page = r.text().await.unwrap();
        assert!(page.contains("<html"), "a page for a person: {page}");
    }
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn the_state_resolves_on_every_instance_over_redis() {
    let Some(redis) = crate::redis_server::RedisServer::start("wechat_web_state_over_redis") else {
        return;
    };
    let fake = FakeWechat::start().await;
    let prefix = format!("ww{}", rand::random::<u32>());
    let mut apps = Vec::new();
    for _ in 0..2 {
        apps.push(
            spawn_app_with(|s| {
                fake.configure(s);
                s.providers = vec!["wechat-web".parse().unwrap()];
                s.redis_url = Some(redis.url());
                s.redis_prefix = prefix.clone();
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let t = a.create_ticket().await;
    let mut ws = a.ws(&t).await;
    next_frame(&mut ws).await;
    // WeChat's redirect lands on the other instance, which knows the state.
    let callback = web_login(&a.client, &t)
        .await
        .replacen(&a.address, &b.address, 1);
    let (status, _) = open(&b.client, &callback).await;
    assert_eq!(status, 200, "the hand-off page");
    assert_eq!(status_of(a, &t.id).await, "pending");
    // Redeemed there too; the push reaches the socket on the first.
    assert_eq!(redeem_from_callback(b, &t, &callback).await.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
}
