//! The login experience in a real browser: headless Chromium shows the login
//! page on a "desktop" and a second browser context plays the phone that
//! scans the code (read from a screenshot, as a camera would) and taps
//! Confirm or Cancel. Screenshots of the key states go to
//! `target/screenshots/{test}/`.
//!
//! Without Chromium each test prints a loud SKIPPED and returns, except under
//! `CI=true`, where a missing browser fails.

use serde_json::{Value, json};

use crate::browser_cdp::{Browser, Device, Page};
use crate::helpers::{API_KEY, TestApp, spawn_app, spawn_app_with};

const EN: &str = "en-US,en;q=0.9";
const ZH: &str = "zh-CN,zh;q=0.9";

const STATUS: &str = "document.querySelector('#qrlogin').dataset.status";
const QR_SRC: &str = "(document.querySelector('.qrlogin-qr') || {}).getAttribute?.('src')";

/// The desktop page showing a fresh code; returns what the code says.
async fn desktop_with_code(
    browser: &Browser,
    app: &TestApp,
    path: &str,
    lang: &str,
) -> (Page, String) {
    let desktop = browser.page("desktop", Device::Desktop, lang).await;
    desktop.goto(&app.url(path)).await;
    desktop
        .wait_for("a pending code", &format!("{STATUS} === 'pending'"))
        .await;
    let code = desktop.scan_qr(".qrlogin-qr").await;
    (desktop, code)
}

/// The status line the desktop shows once `status` is reached.
async fn wait_status(page: &Page, status: &str) -> String {
    page.wait_for(
        &format!("status {status}"),
        &format!("{STATUS} === '{status}'"),
    )
    .await;
    page.text(".qrlogin-status").await
}

/// The phone opens `code` and sees the confirm page.
async fn phone_opens(browser: &Browser, code: &str, lang: &str) -> Page {
    let phone = browser.page("phone", Device::Phone, lang).await;
    phone.goto(code).await;
    phone
        .wait_for(
            "the confirm page",
            "document.querySelector('form.confirm button')",
        )
        .await;
    phone
}

/// The token is one our service signed and still active.
async fn assert_active(app: &TestApp, token: &str) {
    let r = app
        .client
        .post(app.url("/api/v1/tokens/introspect"))
        .bearer_auth(API_KEY)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["active"], true,
        "introspection of the page's token: {body}"
    );
}

fn ticket_of(code: &str) -> &str {
    code.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn a_phone_confirms_and_the_desktop_is_logged_in() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("dev_login").await else {
        return;
    };
    let (desktop, code) = desktop_with_code(&browser, &app, "/", EN).await;
    assert!(
        code.starts_with(&app.url("/m/")),
        "the QR holds the phone URL: {code}"
    );
    assert_eq!(
        desktop.text(".qrlogin-status").await,
        "Scan the code with your phone"
    );
    let countdown = desktop.text(".qrlogin-remaining").await;
    assert!(
        countdown.starts_with("Expires in "),
        "a visible countdown: {countdown}"
    );
    desktop.screenshot("1-waiting").await;

    let phone = phone_opens(&browser, &code, EN).await;
    let asked = phone.text(".requester").await;
    assert!(
        asked.contains("Chrome"),
        "the phone names the browser: {asked}"
    );
    assert!(
        asked.contains("Linux"),
        "the phone names the system: {asked}"
    );
    assert!(
        asked.contains("127.0.0.1"),
        "the phone names the IP: {asked}"
    );
    assert!(asked.contains("UTC"), "the phone says when: {asked}");
    let scanned = wait_status(&desktop, "scanned").await;
    assert_eq!(scanned, "Scanned — confirm on your phone");
    desktop.screenshot("2-scanned").await;

    phone.tap("#name").await;
    phone.type_text("Ann").await;
    phone.screenshot("1-confirm").await;
    phone.tap("form.confirm button").await;
    phone
        .wait_for("the done page", "document.querySelector('.message.done')")
        .await;
    assert_eq!(phone.text("h1").await, "Logged in");
    phone.screenshot("2-done").await;

    assert_eq!(wait_status(&desktop, "confirmed").await, "Logged in");
    assert_eq!(desktop.text(".qrlogin-nickname").await, "Ann");
    let token = desktop.eval("window.qrloginToken").await;
    let token = token.as_str().expect("onToken gave the page a token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(
        desktop.text(".qrlogin-token").await.contains(token),
        "the token is shown"
    );
    assert_active(&app, token).await;
    desktop.screenshot("3-logged-in").await;
}

#[tokio::test]
async fn the_desktop_shows_who_scanned_with_avatar_and_name() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("scanned_user").await else {
        return;
    };
    let (desktop, code) = desktop_with_code(&browser, &app, "/", EN).await;
    let avatar = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8'%3E%3Crect width='8' height='8' fill='%23d97706'/%3E%3Ccircle cx='4' cy='3' r='2' fill='%23fff'/%3E%3C/svg%3E";
    let r = app
        .trusted(
            "scan",
            ticket_of(&code),
            json!({ "sub": "user-7", "user": { "nickname": "Li Lei", "avatar": avatar } }),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        wait_status(&desktop, "scanned").await,
        "Scanned — confirm on your phone"
    );
    assert_eq!(desktop.text(".qrlogin-nickname").await, "Li Lei");
    desktop
        .wait_for(
            "the avatar",
            "document.querySelector('img.qrlogin-avatar')?.naturalWidth > 0",
        )
        .await;
    desktop.screenshot("scanned-with-avatar").await;
}

#[tokio::test]
async fn cancelling_on_the_phone_offers_a_retry() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("deny").await else {
        return;
    };
    let (desktop, code) = desktop_with_code(&browser, &app, "/", EN).await;
    let phone = phone_opens(&browser, &code, EN).await;
    phone.tap("form.deny button").await;
    phone
        .wait_for(
            "the cancelled page",
            "document.querySelector('.message.denied')",
        )
        .await;
    assert_eq!(phone.text("h1").await, "Login cancelled");
    phone.screenshot("cancelled").await;

    assert_eq!(
        wait_status(&desktop, "denied").await,
        "Cancelled on the phone"
    );
    assert_eq!(desktop.text(".qrlogin-button").await, "Try again");
    desktop.screenshot("1-cancelled").await;
    desktop.click(".qrlogin-button").await;
    desktop
        .wait_for("a new code", &format!("{STATUS} === 'pending'"))
        .await;
    let again = desktop.scan_qr(".qrlogin-qr").await;
    assert_ne!(again, code, "Try again shows a new code");
    desktop.screenshot("2-new-code").await;
}

#[tokio::test]
async fn an_expired_code_is_replaced_once_then_waits_for_refresh() {
    let app = spawn_app_with(|s| s.ticket_ttl = 2).await;
    let Some(browser) = Browser::launch("expiry").await else {
        return;
    };
    let (desktop, first) = desktop_with_code(&browser, &app, "/", EN).await;
    let first_src = desktop.eval(QR_SRC).await;

    // The first expiry: a new code without asking.
    let second_src = desktop
        .wait_for(
            "an automatic new code",
            &format!("{STATUS} === 'pending' && {QR_SRC} !== {first_src} && {QR_SRC}"),
        )
        .await;
    assert!(
        desktop
            .eval("document.querySelector('.qrlogin-button').hidden")
            .await
            == true
    );
    let second = desktop.scan_qr(".qrlogin-qr").await;
    assert_ne!(second, first);
    desktop.screenshot("1-renewed").await;

    // The second expiry with nobody scanning: a Refresh button.
    assert_eq!(wait_status(&desktop, "expired").await, "The code expired");
    desktop
        .wait_for(
            "the Refresh button",
            "!document.querySelector('.qrlogin-button').hidden",
        )
        .await;
    assert_eq!(desktop.text(".qrlogin-button").await, "Refresh");
    assert_eq!(
        desktop.eval(QR_SRC).await,
        second_src,
        "no third code by itself"
    );
    desktop.screenshot("2-refresh").await;

    desktop.click(".qrlogin-button").await;
    desktop
        .wait_for(
            "a code after Refresh",
            &format!("{STATUS} === 'pending' && {QR_SRC} !== {second_src}"),
        )
        .await;
    desktop.screenshot("3-after-refresh").await;
}

/// A WebSocket that never connects, as behind a proxy that blocks them.
const BLOCK_WEBSOCKETS: &str = r#"
window.__wsAttempts = 0;
window.WebSocket = class BlockedWebSocket extends EventTarget {
  constructor(url) {
    super();
    window.__wsAttempts++;
    this.url = url; this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      const error = new Event('error');
      this.onerror && this.onerror(error); this.dispatchEvent(error);
      const close = new CloseEvent('close', { code: 1006 });
      this.onclose && this.onclose(close); this.dispatchEvent(close);
    }, 20);
  }
  send() {}
  close() {}
};
"#;

#[tokio::test]
async fn without_websockets_long_polling_completes_the_login() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("long_poll").await else {
        return;
    };
    let desktop = browser.page("desktop", Device::Desktop, EN).await;
    desktop.before_load(BLOCK_WEBSOCKETS).await;
    desktop.goto(&app.url("/")).await;
    desktop
        .wait_for("a pending code", &format!("{STATUS} === 'pending'"))
        .await;
    let code = desktop.scan_qr(".qrlogin-qr").await;
    desktop
        .wait_for("long-polling", "window.qrloginHandle.transport === 'poll'")
        .await;
    assert!(
        desktop.eval("window.__wsAttempts").await.as_u64().unwrap() >= 1,
        "the client tried a WebSocket first"
    );

    let phone = phone_opens(&browser, &code, EN).await;
    wait_status(&desktop, "scanned").await;
    phone.tap("form.confirm button").await;
    assert_eq!(wait_status(&desktop, "confirmed").await, "Logged in");
    let token = desktop.eval("window.qrloginToken").await;
    assert_active(&app, token.as_str().unwrap()).await;
    desktop.screenshot("logged-in-by-long-poll").await;
}

#[tokio::test]
async fn after_a_restart_the_page_gets_a_new_code_and_completes() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("restart").await else {
        return;
    };
    let (desktop, first) = desktop_with_code(&browser, &app, "/", EN).await;
    desktop
        .wait_for(
            "the WebSocket",
            "window.qrloginHandle.transport === 'websocket'",
        )
        .await;
    let first_src = desktop.eval(QR_SRC).await;

    // Restart: sockets close with 1012, and the in-memory store forgets
    // every ticket, so the page must notice its code is gone.
    let port = app.port;
    app.stop.stop();
    app.task.await.unwrap();
    let _restarted = spawn_app_with(|s| s.bind = ([127, 0, 0, 1], port).into()).await;

    desktop
        .wait_for(
            "a new code from the new instance",
            &format!(
                "{STATUS} === 'pending' && {QR_SRC} !== {first_src} && \
                 window.qrloginHandle.transport === 'websocket'"
            ),
        )
        .await;
    let second = desktop.scan_qr(".qrlogin-qr").await;
    assert_ne!(second, first);
    desktop.screenshot("1-new-code-after-restart").await;

    let phone = phone_opens(&browser, &second, EN).await;
    phone.tap("form.confirm button").await;
    assert_eq!(wait_status(&desktop, "confirmed").await, "Logged in");
    desktop.screenshot("2-logged-in").await;
}

#[tokio::test]
async fn pages_speak_chinese_when_the_browser_does() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("zh_cn").await else {
        return;
    };
    let (desktop, code) = desktop_with_code(&browser, &app, "/", ZH).await;
    assert_eq!(desktop.eval("document.documentElement.lang").await, "zh-CN");
    assert_eq!(desktop.text("h1").await, "登录");
    assert_eq!(
        desktop.text(".qrlogin-status").await,
        "请使用手机扫描二维码"
    );
    assert!(
        desktop
            .text(".qrlogin-remaining")
            .await
            .ends_with("秒后过期")
    );
    desktop.screenshot("1-waiting").await;

    let phone = phone_opens(&browser, &code, ZH).await;
    assert_eq!(phone.text("h1").await, "在电脑上登录？");
    assert_eq!(phone.text("form.confirm button").await, "确认登录");
    assert_eq!(phone.text("form.deny button").await, "取消");
    phone.screenshot("1-confirm").await;
    phone.tap("form.confirm button").await;
    assert_eq!(wait_status(&desktop, "confirmed").await, "已登录");
    desktop.screenshot("2-logged-in").await;

    // `?lang=` wins over Accept-Language.
    let english = browser.page("desktop-lang-en", Device::Desktop, ZH).await;
    english.goto(&app.url("/?lang=en")).await;
    english
        .wait_for("a pending code", &format!("{STATUS} === 'pending'"))
        .await;
    assert_eq!(english.text("h1").await, "Log in");
    assert_eq!(
        english.text(".qrlogin-status").await,
        "Scan the code with your phone"
    );
}

/// Counts the timers, sockets and requests a page has open.
const COUNT_RESOURCES: &str = r#"
(() => {
  const timers = new Set();
  const st = window.setTimeout, ct = window.clearTimeout, si = window.setInterval, ci = window.clearInterval;
  window.setTimeout = function (fn, ms, ...rest) {
    const id = st.call(window, function () { timers.delete(id); return typeof fn === 'function' ? fn.apply(this, arguments) : undefined; }, ms, ...rest);
    timers.add(id); return id;
  };
  window.clearTimeout = function (id) { timers.delete(id); return ct.call(window, id); };
  window.setInterval = function (...args) { const id = si.apply(window, args); timers.add(id); return id; };
  window.clearInterval = function (id) { timers.delete(id); return ci.call(window, id); };
  const sockets = [];
  const WS = window.WebSocket;
  window.WebSocket = function (...args) { const ws = new WS(...args); sockets.push(ws); return ws; };
  window.WebSocket.prototype = WS.prototype;
  let requests = 0;
  const f = window.fetch;
  window.fetch = function (...args) {
    requests++;
    return f.apply(window, args).finally(() => { requests--; });
  };
  window.__open = () => ({
    timers: timers.size,
    sockets: sockets.filter((s) => s.readyState < 2).length,
    requests,
  });
})();
"#;

async fn destroy_leaves_nothing(transport: &str) {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch(&format!("destroy_{transport}")).await else {
        return;
    };
    let desktop = browser.page("desktop", Device::Desktop, EN).await;
    desktop.before_load(COUNT_RESOURCES).await;
    desktop
        .goto(&app.url(&format!("/?transport={transport}")))
        .await;
    desktop
        .wait_for(
            "the page to wait for a scan",
            &format!("{STATUS} === 'pending' && window.qrloginHandle.transport === '{transport}'"),
        )
        .await;
    let open = desktop.eval("window.__open()").await;
    assert!(
        open["timers"].as_u64().unwrap() >= 1,
        "the countdown runs: {open}"
    );

    desktop.screenshot("1-waiting").await;
    desktop.eval("window.qrloginHandle.destroy()").await;
    desktop
        .wait_for(
            "nothing left open after destroy()",
            "(() => { const o = window.__open(); return o.timers === 0 && o.sockets === 0 && o.requests === 0; })()",
        )
        .await;
    assert_eq!(
        desktop
            .eval("document.querySelector('#qrlogin').children.length")
            .await,
        0
    );
    desktop.screenshot("2-destroyed").await;
}

#[tokio::test]
async fn destroy_closes_the_websocket_and_stops_every_timer() {
    destroy_leaves_nothing("websocket").await;
}

#[tokio::test]
async fn destroy_aborts_the_long_poll_and_stops_every_timer() {
    destroy_leaves_nothing("poll").await;
}

/// The service's answer to a new ticket, as `wechat-web` gives it: with
/// WeChat's `authorize_url` (the page reads only that field from it).
const ADD_AUTHORIZE_URL: &str = r#"
(() => {
  const f = window.fetch;
  window.fetch = async function (url, init) {
    const r = await f.apply(window, arguments);
    if (!String(url).endsWith('/api/v1/tickets')) return r;
    const tk = await r.json();
    tk.authorize_url = 'https://open.weixin.qq.com/connect/qrconnect?appid=wx0123456789abcdef' +
      '&redirect_uri=' + encodeURIComponent(location.origin + '/wechat/web/callback') +
      '&response_type=code&scope=snsapi_login&state=' + tk.ticket + '#wechat_redirect';
    return new Response(JSON.stringify(tk), { status: r.status, headers: r.headers });
  };
})();
"#;

#[tokio::test]
async fn wechat_web_embeds_wechats_own_qr_as_wx_login_does() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("wechat_web").await else {
        return;
    };
    let desktop = browser.page("desktop", Device::Desktop, EN).await;
    desktop.block_urls(&["*weixin.qq.com*"]).await;
    desktop.before_load(ADD_AUTHORIZE_URL).await;
    desktop.goto(&app.url("/")).await;
    let src = desktop
        .wait_for(
            "WeChat's QR frame",
            "document.querySelector('iframe.qrlogin-wechat')?.src",
        )
        .await;
    let src = url::Url::parse(src.as_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = src.query_pairs().into_owned().collect();
    assert_eq!(src.host_str(), Some("open.weixin.qq.com"));
    assert_eq!(src.path(), "/connect/qrconnect");
    assert_eq!(
        src.fragment(),
        None,
        "wxLogin.js builds no #wechat_redirect"
    );
    assert_eq!(q["login_type"], "jssdk");
    assert_eq!(
        q["self_redirect"], "true",
        "WeChat comes back inside its frame"
    );
    assert_eq!(q["stylelite"], "1");
    assert_eq!(q["lang"], "en");
    assert_eq!(q["scope"], "snsapi_login");
    assert_eq!(q["appid"], "wx0123456789abcdef");
    assert_eq!(q["redirect_uri"], app.url("/wechat/web/callback"));
    let sandbox = desktop
        .eval("document.querySelector('iframe.qrlogin-wechat').getAttribute('sandbox')")
        .await;
    assert_eq!(
        sandbox, "allow-scripts allow-same-origin",
        "the frame may not navigate the page"
    );
    assert_eq!(
        desktop
            .eval("document.querySelector('.qrlogin-qr').hidden")
            .await,
        true
    );
    assert!(
        !desktop.logs().contains("Content Security Policy"),
        "the page's CSP allows WeChat's frame: {}",
        desktop.logs()
    );

    // The login still arrives through the page's own socket.
    let ticket = q["state"].clone();
    wait_status(&desktop, "pending").await;
    assert_eq!(app.confirm(&ticket, "wechat-user").await.status(), 200);
    assert_eq!(wait_status(&desktop, "confirmed").await, "Logged in");
    desktop.screenshot("embedded").await;
}

/// The service with the fake WeChat as its only provider's WeChat.
async fn wechat_web_app() -> (TestApp, crate::fake_wechat::FakeWechat) {
    crate::wechat_oauth::spawn("wechat-web", |_| {}).await
}

/// The desktop at `path` completes a `wechat-web` login through the fake
/// WeChat (which plays the person approving at once) and the hand-off:
/// the page ends confirmed with an active token, no code left in its
/// address, no CSP complaint.
async fn wechat_web_login(test: &str, path: &str) {
    let (app, fake) = wechat_web_app().await;
    let Some(browser) = Browser::launch(test).await else {
        return;
    };
    let desktop = browser.page("desktop", Device::Desktop, EN).await;
    desktop.goto(&app.url(path)).await;
    assert_eq!(wait_status(&desktop, "confirmed").await, "Logged in");
    let nickname = crate::fake_wechat::oauth::User::default().nickname;
    assert_eq!(desktop.text(".qrlogin-nickname").await, nickname);
    let token = desktop.eval("window.qrloginToken").await;
    let token = token.as_str().expect("onToken gave the page a token");
    assert_active(&app, token).await;
    let address = desktop.eval("location.href").await;
    let address = address.as_str().unwrap();
    assert!(
        !address.contains("code"),
        "the code left the address: {address}"
    );
    assert_eq!(fake.hits("/sns/oauth2/access_token"), 1);
    assert!(
        !desktop.logs().contains("Content Security Policy"),
        "{}",
        desktop.logs()
    );
    desktop.screenshot("confirmed").await;
}

#[tokio::test]
async fn wechat_web_logs_in_through_the_frames_hand_off() {
    wechat_web_login("wechat_web_iframe", "/").await;
}

#[tokio::test]
async fn wechat_web_logs_in_when_wechat_takes_the_whole_page() {
    wechat_web_login("wechat_web_top", "/?wechat=top").await;
}

#[tokio::test]
async fn a_forwarded_wechat_page_tells_the_person_and_logs_nobody_in() {
    let (app, _fake) = wechat_web_app().await;
    let Some(browser) = Browser::launch("wechat_web_forwarded").await else {
        return;
    };
    // The attacker's ticket; its WeChat page forwarded to the victim.
    let attacker = app.create_ticket().await;
    let url = attacker.body["authorize_url"].as_str().unwrap();
    let victim = browser.page("victim", Device::Desktop, EN).await;
    victim.goto(url).await;
    victim
        .wait_for(
            "the elsewhere message",
            &format!("{STATUS} === 'elsewhere'"),
        )
        .await;
    assert_eq!(
        victim.text(".qrlogin-status").await,
        "This login was started on another device"
    );
    assert!(
        victim
            .text(".qrlogin-hint")
            .await
            .contains("Nothing was done")
    );
    let address = victim.eval("location.href").await;
    assert!(!address.as_str().unwrap().contains("code"), "{address}");
    victim.screenshot("elsewhere").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        crate::helpers::status_of(&app, &attacker.id).await,
        "pending",
        "nobody logged in"
    );
}

// --- the widget embedded in a product page on another origin -----------

/// The host page's script: mounts the widget from the service, whose
/// `onToken` answers a promise like a product's backend would: resolved, or
/// rejected with "the backend said no" (`data-mode="reject"`).
const HOST_JS: &str = r#"
(function () {
  var d = document.documentElement.dataset;
  window.qrloginHandle = QRLogin.mount(document.getElementById("qrlogin"), {
    baseUrl: d.svc,
    onToken: function (token) {
      window.qrloginToken = token;
      return new Promise(function (resolve, reject) {
        setTimeout(function () {
          if (d.mode === "reject") reject(new Error("the backend said no")); else resolve();
        }, 200);
      });
    }
  });
})();
"#;

/// The host CSP that README's embedding section documents, for a service
/// at `svc`: nothing else is allowed (not even styles).
fn host_csp(svc: &str) -> String {
    let ws = svc.replacen("http", "ws", 1);
    format!("default-src 'none'; script-src 'self' {svc}; connect-src {svc} {ws}; img-src {svc}")
}

/// A product page at `http://{host}:{port}` (another origin than the
/// service), with no stylesheet of its own and exactly `host_csp`: it
/// loads the pinned widget with its SRI hash, as the embed snippet does.
async fn host_page(app: &TestApp, port: u16, mode: &str) -> tokio::task::JoinHandle<()> {
    host_page_in(app, port, mode, "en", "utf-8").await
}

/// `host_page` in language `lang`, its HTML declared (header and `<meta>`)
/// in `charset`.
async fn host_page_in(
    app: &TestApp,
    port: u16,
    mode: &str,
    lang: &str,
    charset: &str,
) -> tokio::task::JoinHandle<()> {
    let info: Value = app
        .client
        .get(app.url("/static/qrlogin.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let html = format!(
        r#"<!doctype html><html lang="{lang}" data-svc="{svc}" data-mode="{mode}"><head><meta charset="{charset}"><title>Product</title></head>
<body><h1>Product</h1><p id="host">The product's own text.</p><div id="qrlogin"></div>
<script src="{svc}{url}" integrity="{integrity}" crossorigin="anonymous"></script>
<script src="/host.js"></script></body></html>"#,
        svc = app.address,
        url = info["url"].as_str().unwrap(),
        integrity = info["integrity"].as_str().unwrap(),
    );
    let csp = host_csp(&app.address);
    let content_type = format!("text/html; charset={charset}");
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move {
                (
                    [
                        ("content-security-policy", csp),
                        ("content-type", content_type),
                    ],
                    html,
                )
            }),
        )
        .route(
            "/host.js",
            axum::routing::get(|| async {
                ([("content-type", "application/javascript")], HOST_JS)
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The port of a product page to come and a service allowing it as
/// `http://127.0.0.1:{port}`: what every embed test starts from.
async fn product_and_service() -> (u16, TestApp) {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(move |s| s.allowed_origins = vec![origin]).await;
    (port, app)
}

/// The product page at `http://{host}:{port}/`, open on a desktop.
async fn open_product(browser: &Browser, host: &str, port: u16, lang: &str) -> Page {
    let page = browser.page("product", Device::Desktop, lang).await;
    page.goto(&format!("http://{host}:{port}/")).await;
    page
}

/// Scan the page's code and confirm it on the dev phone page.
async fn confirm_on_phone(page: &Page, app: &TestApp) {
    let code = page.scan_qr(".qrlogin-qr").await;
    let phone = crate::helpers::phone(crate::browser_cdp::IPHONE_UA);
    assert!(
        code.starts_with(&app.url("/m/")),
        "the service's link: {code}"
    );
    let confirm = phone.open(&code).await;
    let r = phone.confirm(&confirm).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_embedded_widget_styles_itself_under_a_strict_csp_and_leaves_the_page_alone() {
    let (port, app) = product_and_service().await;
    let _host = host_page(&app, port, "resolve").await;
    let Some(browser) = Browser::launch("embed-styles-csp").await else {
        return;
    };
    let page = open_product(&browser, "127.0.0.1", port, EN).await;
    page.wait_for("a pending code", &format!("{STATUS} === 'pending'"))
        .await;
    // Its own look with no stylesheet: the QR at its size, a styled status.
    let css =
        |sel: &str, prop: &str| format!("getComputedStyle(document.querySelector('{sel}')).{prop}");
    assert_eq!(page.eval(&css(".qrlogin-qr", "width")).await, "220px");
    assert_eq!(
        page.eval(&css(".qrlogin-status", "fontWeight")).await,
        "650"
    );
    // Nothing outside its element changed: the browser's defaults remain.
    assert_eq!(page.eval(&css("body", "margin")).await, "8px");
    assert_eq!(page.eval(&css("#host", "marginTop")).await, "16px");
    assert_eq!(page.eval(&css("h1", "fontWeight")).await, "700");
    assert_eq!(page.eval("document.styleSheets.length").await, 0);
    confirm_on_phone(&page, &app).await;
    assert_eq!(wait_status(&page, "confirmed").await, "Logged in");
    assert_eq!(page.eval(&css(".qrlogin-icon", "width")).await, "64px");
    // The token went to onToken, never onto the page.
    assert!(page.eval("window.qrloginToken").await.is_string());
    assert_eq!(
        page.eval("document.querySelector('.qrlogin-token').hidden")
            .await,
        true
    );
    let violations = page.logs();
    assert!(
        !violations.contains("Content Security Policy"),
        "the documented CSP is enough: {violations}"
    );
    page.screenshot("logged-in").await;
}

#[tokio::test]
async fn a_rejected_on_token_promise_shows_its_message_and_offers_a_new_code() {
    let (port, app) = product_and_service().await;
    let _host = host_page(&app, port, "reject").await;
    let Some(browser) = Browser::launch("embed-on-token-rejected").await else {
        return;
    };
    let page = open_product(&browser, "127.0.0.1", port, EN).await;
    page.wait_for("a pending code", &format!("{STATUS} === 'pending'"))
        .await;
    let first = page.eval(QR_SRC).await;
    confirm_on_phone(&page, &app).await;
    assert_eq!(
        wait_status(&page, "rejected").await,
        "The login was not accepted"
    );
    assert_eq!(page.text(".qrlogin-hint").await, "the backend said no");
    page.screenshot("rejected").await;
    page.click(".qrlogin-button").await;
    page.wait_for(
        "a new code",
        &format!("{STATUS} === 'pending' && {QR_SRC} !== {first}"),
    )
    .await;
}

#[tokio::test]
async fn a_page_on_an_origin_the_service_refuses_is_told_so() {
    // The classic mistake: 127.0.0.1 allowed, the page opened as localhost.
    let (port, app) = product_and_service().await;
    let _host = host_page(&app, port, "resolve").await;
    let Some(browser) = Browser::launch("embed-origin-refused").await else {
        return;
    };
    let page = open_product(&browser, "localhost", port, EN).await;
    assert_eq!(
        wait_status(&page, "origin").await,
        "This page's origin is not allowed by the login service"
    );
    assert_eq!(
        page.text(".qrlogin-hint").await,
        format!("Ask its operator to add http://localhost:{port} to QRLOGIN_ALLOWED_ORIGINS.")
    );
    page.screenshot("origin-refused").await;
}

#[tokio::test]
async fn the_pinned_widget_url_is_immutable_and_its_integrity_matches_its_bytes() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let app = spawn_app().await;
    let info: Value = app
        .client
        .get(app.url("/static/qrlogin.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = info["url"].as_str().unwrap();
    let digest = sha2::Sha256::digest(include_bytes!("../../static/qrlogin.js"));
    assert_eq!(
        url,
        format!(
            "/static/qrlogin.v{}-{}.js",
            env!("CARGO_PKG_VERSION"),
            digest[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    );
    let r = app.client.get(app.url(url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let bytes = r.bytes().await.unwrap();
    let sri = format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha384::digest(&bytes))
    );
    assert_eq!(info["integrity"], sri);
    let plain = app
        .client
        .get(app.url("/static/qrlogin.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.bytes().await.unwrap(), bytes, "one widget, two URLs");
}

/// `npm pack` of `packages/qrlogin-widget`, installed as a product would
/// (`npm install <tarball>`) in a temporary directory; answers the
/// installed ES module's text, or None (SKIPPED) without npm outside CI.
fn installed_package() -> Option<String> {
    let dir = std::env::temp_dir().join(format!("qrlogin-npm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("app")).unwrap();
    let pkg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packages/qrlogin-widget");
    let pack = std::process::Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(&dir)
        .current_dir(&pkg)
        .output();
    let Ok(pack) = pack else {
        assert!(std::env::var("CI").is_err(), "npm is needed under CI");
        eprintln!("SKIPPED: no npm");
        return None;
    };
    assert!(pack.status.success(), "npm pack: {pack:?}");
    let tarball = dir.join(String::from_utf8(pack.stdout).unwrap().trim());
    let install = std::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--offline",
            "--silent",
        ])
        .arg(&tarball)
        .current_dir(dir.join("app"))
        .status()
        .unwrap();
    assert!(install.success(), "npm install of the tarball");
    let installed = dir.join("app/node_modules/qrlogin-widget");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(installed.join("package.json")).unwrap())
            .unwrap();
    assert!(manifest.get("dependencies").is_none(), "no dependencies");
    assert!(
        installed.join("index.d.ts").exists(),
        "its TypeScript declarations"
    );
    let entry = manifest["exports"]["."]["import"].as_str().unwrap();
    let module = std::fs::read_to_string(installed.join(entry)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some(module)
}

#[tokio::test]
async fn the_widget_reads_right_on_a_page_in_another_encoding() {
    // A classic script is decoded in the page's encoding unless its response
    // names a charset: many Chinese sites are still GBK.
    let (port, app) = product_and_service().await;
    let _host = host_page_in(&app, port, "resolve", "zh-CN", "gbk").await;
    let Some(browser) = Browser::launch("embed-gbk-page").await else {
        return;
    };
    let page = open_product(&browser, "127.0.0.1", port, ZH).await;
    assert_eq!(page.eval("document.characterSet").await, "GBK");
    assert_eq!(wait_status(&page, "pending").await, "请使用手机扫描二维码");
    confirm_on_phone(&page, &app).await;
    assert_eq!(wait_status(&page, "confirmed").await, "已登录");
}

#[tokio::test]
async fn the_npm_package_installs_and_its_es_module_logs_in_on_a_product_page() {
    let Some(module) = installed_package() else {
        return;
    };
    // ASCII only, so it reads right whatever encoding the product serves it in.
    assert!(
        module.is_ascii(),
        "the package's module has non-ASCII bytes"
    );
    let (port, app) = product_and_service().await;
    let host_js = format!(
        r#"import {{ mount }} from "/qrlogin-widget.mjs";
window.hadGlobal = "QRLogin" in window;
window.qrloginHandle = mount(document.getElementById("qrlogin"), {{
  baseUrl: "{svc}",
  onToken: function (token) {{ window.qrloginToken = token; return Promise.resolve(); }}
}});"#,
        svc = app.address
    );
    let html = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Product</title></head>
<body><div id="qrlogin"></div><script type="module" src="/host.mjs"></script></body></html>"#;
    let csp = host_csp(&app.address);
    let js = |body: String| ([("content-type", "text/javascript")], body);
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move {
                (
                    [("content-security-policy", csp)],
                    axum::response::Html(html),
                )
            }),
        )
        .route(
            "/host.mjs",
            axum::routing::get(move || async move { js(host_js) }),
        )
        .route(
            "/qrlogin-widget.mjs",
            axum::routing::get(move || async move { js(module) }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let Some(browser) = Browser::launch("embed-npm-module").await else {
        return;
    };
    let page = open_product(&browser, "127.0.0.1", port, EN).await;
    page.wait_for("a pending code", &format!("{STATUS} === 'pending'"))
        .await;
    assert_eq!(
        page.eval("window.hadGlobal || 'QRLogin' in window").await,
        false,
        "no global"
    );
    confirm_on_phone(&page, &app).await;
    assert_eq!(wait_status(&page, "confirmed").await, "Logged in");
    let token = page.eval("window.qrloginToken").await;
    assert_active(&app, token.as_str().unwrap()).await;
}

#[tokio::test]
async fn in_dev_mode_the_login_page_shows_the_phone_link_as_text() {
    let app = spawn_app().await;
    let Some(browser) = Browser::launch("dev-phone-link").await else {
        return;
    };
    let (desktop, code) = desktop_with_code(&browser, &app, "/", EN).await;
    let link = desktop
        .wait_for(
            "the phone link",
            "document.querySelector('.qrlogin-link a')?.href",
        )
        .await;
    assert_eq!(link, code.as_str(), "the link is the code's own");
    assert_eq!(desktop.text(".qrlogin-link a").await, code);
    desktop.screenshot("pending-with-link").await;
}
