//! `wechat-oauth` end to end (and the helpers `wechat_web` shares): the
//! real service, a fake WeChat on its own port, a simulated phone (WeChat's
//! User-Agent, a cookie jar, redirects followed by hand) and the browser's
//! real WebSocket.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_wechat::oauth::User;
use crate::fake_wechat::{FakeWechat, OA_APP_ID, OA_SECRET, WEB_APP_ID, WEB_SECRET};
use crate::helpers::*;

pub const TOKEN_PATH: &str = "/sns/oauth2/access_token";
const USERINFO_PATH: &str = "/sns/userinfo";

pub async fn spawn(
    providers: &str,
    tweak: impl FnOnce(&mut qrlogin::config::Args),
) -> (TestApp, FakeWechat) {
    let fake = FakeWechat::start().await;
    let app = spawn_app_with(|s| {
        fake.configure(s);
        s.providers = providers.split(',').map(|p| p.parse().unwrap()).collect();
        tweak(s);
    })
    .await;
    (app, fake)
}

pub fn location(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 302, "a redirect");
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// What an HTTP client sends of a URL: everything but the fragment.
pub fn without_fragment(url: &str) -> &str {
    url.split('#').next().unwrap()
}

fn query_of(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn param(url: &str, name: &str) -> Option<String> {
    query_of(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The phone opens the ticket's QR inside WeChat: our 302 to WeChat's
/// authorization, WeChat's 302 back to us. Answers the callback's URL.
pub(crate) async fn authorize_in_wechat(phone: &reqwest::Client, t: &Ticket) -> String {
    let r = phone
        .get(t.body["qr_content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let authorize = location(&r);
    let r = phone
        .get(without_fragment(&authorize))
        .send()
        .await
        .unwrap();
    location(&r)
}

/// Open a callback URL; answers status and page.
pub async fn open(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// No page ever shows a secret or the code it was given.
pub fn assert_clean(page: &str, code: &str) {
    for secret in [OA_SECRET, WEB_SECRET, code] {
        assert!(!page.contains(secret), "a page leaked {secret:?}");
    }
    assert!(!page.contains("access_token"), "a page names a token");
}

#[tokio::test]
async fn inside_wechat_the_qr_redirects_to_wechat_authorization() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    assert_eq!(t.body["provider"], "wechat-oauth");
    assert!(t.body.get("authorize_url").is_none());
    let r = phone(WECHAT_UA)
        .get(t.body["qr_content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let url = location(&r);
    assert!(
        url.starts_with(&format!(
            "{}/connect/oauth2/authorize?appid={OA_APP_ID}&redirect_uri=",
            fake.base
        )),
        "{url}"
    );
    assert!(url.ends_with("#wechat_redirect"), "{url}");
    let encoded = format!(
        "redirect_uri={}",
        url::form_urlencoded::byte_serialize(
            format!("{}/wechat/oauth/callback", app.address).as_bytes()
        )
        .collect::<String>()
    );
    assert!(url.contains(&encoded), "redirect_uri is URL-encoded: {url}");
    let url = without_fragment(&url);
    assert_eq!(param(url, "response_type").as_deref(), Some("code"));
    assert_eq!(param(url, "scope").as_deref(), Some("snsapi_userinfo"));
    assert_eq!(param(url, "state").as_deref(), Some(t.id.as_str()));
}

#[tokio::test]
async fn outside_wechat_the_page_says_to_scan_with_wechat() {
    let (app, _fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    let r = phone(IPHONE_UA)
        .get(t.body["qr_content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Open this in WeChat"), "{page}");
    assert!(
        page.contains(&t.id) && page.contains("qr.svg"),
        "shows the QR again"
    );
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn a_wechat_login_scans_confirms_and_pushes_a_wechat_token() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    assert!(callback.starts_with(&format!("{}/wechat/oauth/callback?code=", app.address)));
    let page = phone.open(&callback).await;
    let html = &page.html;
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains("name=\"csrf\""), "the confirm page: {html}");
    assert!(html.contains("127.0.0.1"), "names the computer that asked");
    assert_clean(html, &param(&callback, "code").unwrap());

    let user = User::default();
    let scanned = next_frame(&mut ws).await;
    assert_eq!(scanned["status"], "scanned");
    assert_eq!(scanned["user"]["nickname"], user.nickname.as_str());
    assert_eq!(scanned["user"]["avatar"], user.headimgurl.as_str());

    let r = phone.confirm(&page).await;
    assert_eq!(r.status(), 200);
    let confirmed = next_frame(&mut ws).await;
    assert_eq!(confirmed["status"], "confirmed");
    let claims = claims_of(confirmed["token"].as_str().unwrap());
    assert_eq!(claims["idp"], "wechat");
    assert_eq!(claims["openid"], user.openid(OA_APP_ID));
    assert_eq!(claims["unionid"], user.unionid().unwrap());
    assert_eq!(claims["sub"], user.unionid().unwrap(), "sub is the unionid");
    assert_eq!(fake.hits(TOKEN_PATH), 1);
    assert_eq!(fake.hits(USERINFO_PATH), 1);
}

#[tokio::test]
async fn without_a_unionid_or_when_asked_sub_is_the_openid() {
    let (app, fake) = spawn("wechat-oauth", |s| {
        s.wechat_subject = qrlogin::config::WechatSubject::Openid;
    })
    .await;
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let page = phone.open(&callback).await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    assert_eq!(phone.confirm(&page).await.status(), 200);
    let claims = claims_of(next_frame(&mut ws).await["token"].as_str().unwrap());
    let user = User::default();
    assert_eq!(claims["sub"], user.openid(OA_APP_ID));
    assert_eq!(claims["unionid"], user.unionid().unwrap());

    // An app not bound to an Open Platform account: no unionid at all.
    let (app, fake2) = spawn("wechat-oauth", |_| {}).await;
    drop(fake);
    fake2.set_user(User {
        key: "bob".into(),
        bound: false,
        ..User::default()
    });
    let t = app.create_ticket().await;
    let phone = crate::helpers::phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let page = phone.open(&callback).await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    assert_eq!(phone.confirm(&page).await.status(), 200);
    let claims = claims_of(next_frame(&mut ws).await["token"].as_str().unwrap());
    assert_eq!(claims["sub"].as_str().unwrap().len(), 28);
    assert!(claims["sub"].as_str().unwrap().starts_with('o'));
    assert!(claims.get("unionid").is_none());
}

#[tokio::test]
async fn snsapi_base_logs_in_without_asking_the_profile() {
    let (app, fake) = spawn("wechat-oauth", |s| {
        s.wechat_oauth_scope = qrlogin::config::OauthScope::SnsapiBase;
    })
    .await;
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let page = phone.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert_eq!(fake.hits(USERINFO_PATH), 0);
    let mut ws = app.ws(&t).await;
    let scanned = next_frame(&mut ws).await;
    assert_eq!(scanned["status"], "scanned");
    assert!(scanned.get("user").is_none_or(Value::is_null));
    assert_eq!(phone.confirm(&page).await.status(), 200);
    let claims = claims_of(next_frame(&mut ws).await["token"].as_str().unwrap());
    assert_eq!(claims["sub"], User::default().openid(OA_APP_ID));
}

#[tokio::test]
async fn refusing_consent_denies_the_ticket() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    fake.refuse_next();
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    assert_eq!(param(&callback, "code"), None);
    let (status, page) = open(&phone, &callback).await;
    assert_eq!(status, 200);
    assert!(page.contains("cancelled"), "{page}");
    assert_eq!(next_frame(&mut ws).await["status"], "denied");
    assert_eq!(fake.hits(TOKEN_PATH), 0);
}

/// A callback carrying `code` for ticket `t`.
fn callback_url(app: &TestApp, code: &str, state: &str) -> String {
    format!(
        "{}/wechat/oauth/callback?code={code}&state={state}",
        app.address
    )
}

#[tokio::test]
async fn a_bad_used_or_expired_code_asks_to_scan_again_and_leaves_the_ticket() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);

    // Unknown to WeChat: 40029.
    let (status, page) = open(&phone, &callback_url(&app, "bogus-code-1", &t.id)).await;
    assert_eq!(status, 400);
    assert!(page.contains("scan again"), "{page}");
    assert_clean(&page, "bogus-code-1");

    // Already exchanged elsewhere: 40163.
    let used = fake.issue_code(OA_APP_ID, "snsapi_userinfo");
    let direct: Value = reqwest::get(format!(
        "{}{TOKEN_PATH}?appid={OA_APP_ID}&secret={OA_SECRET}&code={used}&grant_type=authorization_code",
        fake.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(direct["access_token"].is_string());
    let (status, page) = open(&phone, &callback_url(&app, &used, &t.id)).await;
    assert_eq!(status, 400);
    assert!(page.contains("scan again"), "{page}");

    // Expired: 42003.
    let old = fake.issue_code(OA_APP_ID, "snsapi_userinfo");
    fake.expire_code(&old);
    let (status, page) = open(&phone, &callback_url(&app, &old, &t.id)).await;
    assert_eq!(status, 400);
    assert!(page.contains("scan again"), "{page}");

    assert_eq!(fake.hits(TOKEN_PATH), 4, "each code went to WeChat once");
    assert_eq!(
        status_of(&app, &t.id).await,
        "pending",
        "the ticket is as it was"
    );

    // And a good scan still works afterwards.
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, _) = open(&phone, &callback).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &t.id).await, "scanned");

    // Operators see WeChat's calls by endpoint and errcode.
    let metrics = app.metrics().await;
    for errcode in ["40029", "40163", "42003", "0"] {
        let series = format!(
            "qrlogin_wechat_requests_total{{endpoint=\"{TOKEN_PATH}\",errcode=\"{errcode}\"}}"
        );
        assert!(metrics.contains(&series), "{series} in /metrics");
    }
}

#[tokio::test]
async fn busy_once_is_retried_and_succeeds() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    fake.busy_once(TOKEN_PATH);
    fake.busy_once(USERINFO_PATH);
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, page) = open(&phone, &callback).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(fake.hits(TOKEN_PATH), 2);
    assert_eq!(fake.hits(USERINFO_PATH), 2);
    assert_eq!(status_of(&app, &t.id).await, "scanned");
}

#[tokio::test]
async fn busy_twice_asks_to_try_again() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    fake.busy_once(TOKEN_PATH);
    fake.busy_once(TOKEN_PATH);
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, page) = open(&phone, &callback).await;
    assert_eq!(status, 502);
    assert!(page.contains("went wrong"), "{page}");
    assert_eq!(fake.hits(TOKEN_PATH), 2, "retried once, not more");
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn wechat_timing_out_asks_to_try_again_in_time() {
    let (app, fake) = spawn("wechat-oauth", |s| s.wechat_timeout_ms = 300).await;
    let t = app.create_ticket().await;
    fake.delay(TOKEN_PATH, Duration::from_secs(3));
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let started = Instant::now();
    let (status, page) = open(&phone, &callback).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up at the timeout"
    );
    assert_eq!(status, 502);
    assert!(page.contains("did not answer"), "{page}");
    assert_clean(&page, &param(&callback, "code").unwrap());
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn empty_bodies_and_other_errors_ask_to_try_again_never_500() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);

    fake.empty_once(TOKEN_PATH);
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, page) = open(&phone, &callback).await;
    assert_eq!(status, 502, "{page}");

    fake.fail_once(TOKEN_PATH, 45011);
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, _) = open(&phone, &callback).await;
    assert_eq!(status, 502);

    // The code went through but the profile failed.
    fake.fail_once(USERINFO_PATH, 40001);
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, page) = open(&phone, &callback).await;
    assert_eq!(status, 502);
    assert_clean(&page, &param(&callback, "code").unwrap());
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn wrong_state_exchanges_nothing() {
    let (app, fake) = spawn("wechat-oauth,dev", |_| {}).await;
    let phone = phone(WECHAT_UA);
    let code = fake.issue_code(OA_APP_ID, "snsapi_userinfo");
    for state in ["", "nosuchticket0000000000000", "bad%20state%21"] {
        let (status, page) = open(&phone, &callback_url(&app, &code, state)).await;
        assert_eq!(status, 404, "state {state:?}: {page}");
        assert!(page.contains("expired"), "{page}");
    }
    // A live ticket of another provider is not ours to scan.
    let dev = app.create_ticket_with(json!({ "provider": "dev" })).await;
    let (status, _) = open(&phone, &callback_url(&app, &code, &dev.id)).await;
    assert_eq!(status, 404);
    assert_eq!(status_of(&app, &dev.id).await, "pending");
    // No state and no code at all.
    let (status, _) = open(&phone, &format!("{}/wechat/oauth/callback", app.address)).await;
    assert_eq!(status, 404);
    assert_eq!(fake.hits(TOKEN_PATH), 0);
}

#[tokio::test]
async fn a_replayed_callback_never_scans_or_confirms_twice() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let page = phone.open(&callback).await;

    // Another phone replaying the URL (a leaked link) gets nothing.
    let thief = crate::helpers::phone(WECHAT_UA);
    let (status, page2) = open(&thief, &callback).await;
    assert_eq!(status, 409, "{page2}");
    let r = thief.confirm(&page).await;
    assert_eq!(r.status(), 403, "another phone's csrf is useless");

    // The same phone reloading sees its confirm page again, from the
    // callback or from the QR link; another phone's QR link is taken.
    let (status, again) = open(&phone, &callback).await;
    assert_eq!(status, 200);
    assert!(again.contains("name=\"csrf\""));
    let qr_link = t.body["qr_content"].as_str().unwrap();
    let (status, reopened) = open(&phone, qr_link).await;
    assert_eq!(status, 200);
    assert!(reopened.contains("name=\"csrf\""));
    assert_eq!(open(&thief, qr_link).await.0, 409);

    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    assert_eq!(phone.confirm(&page).await.status(), 200);
    let token = next_frame(&mut ws).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // After the login, replays only show that it is done.
    for client in [&phone, &thief] {
        let (status, done) = open(client, &callback).await;
        assert_eq!(status, 200);
        assert!(done.contains("Logged in"), "{done}");
    }
    let mut late = app.ws(&t).await;
    assert_eq!(
        next_frame(&mut late).await["token"],
        token.as_str(),
        "one token only"
    );
    assert_eq!(fake.hits(TOKEN_PATH), 1, "the code was exchanged once");
}

#[tokio::test]
async fn a_replayed_code_with_a_fresh_ticket_is_refused() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    let first = app.create_ticket().await;
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &first).await;
    open(&phone, &callback).await;
    let code = param(&callback, "code").unwrap();
    let second = app.create_ticket().await;
    let (status, page) = open(&phone, &callback_url(&app, &code, &second.id)).await;
    assert_eq!(status, 400, "{page}");
    assert_eq!(status_of(&app, &second.id).await, "pending");
    assert_eq!(fake.hits(TOKEN_PATH), 1);
}

#[tokio::test]
async fn a_snapshot_user_is_not_logged_in() {
    let (app, fake) = spawn("wechat-oauth", |_| {}).await;
    fake.set_user(User {
        snapshot: true,
        ..User::default()
    });
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let (status, _) = open(&phone, &callback).await;
    assert_eq!(status, 400);
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn several_providers_at_once() {
    let (app, _fake) = spawn("wechat-oauth,wechat-web", |_| {}).await;
    let default = app.create_ticket().await;
    assert_eq!(default.body["provider"], "wechat-oauth");
    assert!(default.body.get("authorize_url").is_none());
    let web = app
        .create_ticket_with(json!({ "provider": "wechat-web" }))
        .await;
    assert!(
        web.body["authorize_url"]
            .as_str()
            .unwrap()
            .contains("/connect/qrconnect?")
    );
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .json(&json!({ "provider": "dev" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".to_owned()));
    // A website ticket's state is not accepted by the phone callback.
    let phone = phone(WECHAT_UA);
    let (status, _) = open(&phone, &callback_url(&app, "x", &web.id)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn wechat_logins_log_no_code_secret_or_access_token() {
    let (logs, _guard) = crate::logs::Captured::start();
    let (app, fake) = spawn("wechat-oauth,wechat-web", |s| s.wechat_timeout_ms = 300).await;
    // A phone login, confirmed.
    let t = app.create_ticket().await;
    let phone = phone(WECHAT_UA);
    let callback = authorize_in_wechat(&phone, &t).await;
    let page = phone.open(&callback).await;
    assert_eq!(phone.confirm(&page).await.status(), 200);
    // A website login.
    let w = app
        .create_ticket_with(json!({ "provider": "wechat-web" }))
        .await;
    let web_callback = crate::wechat_web::web_login(&app.client, &w).await;
    let r = crate::wechat_web::redeem_from_callback(&app, &w, &web_callback).await;
    assert_eq!(r.status(), 200);
    // Failures: a timeout and an error, both logged.
    let t2 = app.create_ticket().await;
    fake.delay(USERINFO_PATH, Duration::from_secs(1));
    let slow = authorize_in_wechat(&phone, &t2).await;
    assert_eq!(open(&phone, &slow).await.0, 502);
    let t3 = app.create_ticket().await;
    fake.fail_once(TOKEN_PATH, 45011);
    let failed = authorize_in_wechat(&phone, &t3).await;
    assert_eq!(open(&phone, &failed).await.0, 502);

    let text = logs.text();
    assert!(text.contains("45011"), "the errcode is logged");
    assert!(text.contains("timeout"), "the timeout is logged");
    let codes: Vec<String> = [&callback, &web_callback, &slow, &failed]
        .iter()
        .map(|u| param(u, "code").unwrap())
        .collect();
    let tokens = fake.issued_tokens();
    assert!(tokens.len() >= 3);
    let mut secrets = vec![("OA secret", OA_SECRET), ("web secret", WEB_SECRET)];
    // Personal data, as in the other providers' log tests.
    let openids = [OA_APP_ID, WEB_APP_ID].map(|app| User::default().openid(app));
    secrets.extend(openids.iter().map(|o| ("openid", o.as_str())));
    secrets.extend(codes.iter().map(|c| ("code", c.as_str())));
    secrets.extend(tokens.iter().map(|t| ("access token", t.as_str())));
    logs.assert_free_of(&secrets);
}
