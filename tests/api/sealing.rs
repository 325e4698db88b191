//! Tokens only the waiting browser can open: a ticket created with `seal`
//! gets its token as a JWE sealed to the browser's key, and at no point does
//! the store hold a presentable JWT, sealed ticket or not.
//!
//! An independent JOSE library (Python's `jwcrypto`) opens the sealed token,
//! so it is real JWE. Without `python3` and `jwcrypto` that test prints a
//! loud SKIPPED, except under `CI=true`, where it fails.

use std::process::Command;

use qrlogin::store::conformance::find_jws;
use qrlogin::token::seal::{BrowserKey, Opener};
use serde_json::{Value, json};

use crate::core::{poll, polls_waiting};
use crate::helpers::*;
use crate::redis::{instance, instances};
use crate::redis_server::RedisServer;

/// A P-256 key pair, as a browser makes one (the test names it by a seed).
fn browser_key(seed: &str) -> (BrowserKey, Value) {
    let key = BrowserKey::from_seed(seed).unwrap();
    let public = key.public().unwrap().to_jwk();
    (key, public)
}

/// `sealed_token` of a confirmed view, opened with `key`: the JWT.
fn opened(view: &Value, key: &BrowserKey) -> String {
    assert_eq!(view["status"], "confirmed", "{view}");
    assert!(view.get("token").is_none(), "never a plain token: {view}");
    assert_eq!(view["token_type"], "Bearer");
    let jwe = view["sealed_token"].as_str().expect("a sealed_token");
    String::from_utf8(key.open(jwe).expect("opens with the browser's key")).unwrap()
}

/// A login of a sealed ticket made on `make` and confirmed on `confirm`,
/// the socket held on `watch`: every view carries only the JWE, which opens
/// with the browser's key to a token of ours, and with no other key.
async fn sealed_login(make: &TestApp, watch: &TestApp, confirm: &TestApp) {
    let (key, public) = browser_key("the browser's key");
    let t = make.create_ticket_with(json!({ "seal": public })).await;
    let mut ws = watch.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    assert_eq!(confirm.confirm(&t.id, "u1").await.status(), 200);
    let frame = next_frame(&mut ws).await;
    let jwt = opened(&frame, &key);
    assert_eq!(claims_of(&jwt)["sub"], "u1");
    assert_eq!(close_code(&mut ws).await, Some(1000));

    let (wrong, _) = browser_key("someone else's key");
    let jwe = frame["sealed_token"].as_str().unwrap();
    assert!(wrong.open(jwe).is_err(), "a wrong key opens nothing");
    let by_secret = Opener::from_secret(&t.secret).unwrap();
    assert!(by_secret.open(jwe).is_err(), "nor does the ticket's secret");

    // A reconnect and a poll get the same sealed token again.
    let mut again = watch.ws(&t).await;
    assert_eq!(opened(&next_frame(&mut again).await, &key), jwt);
    let polled: Value = poll(watch, &t, json!({}), 0).await.json().await.unwrap();
    assert_eq!(opened(&polled, &key), jwt);
}

#[tokio::test]
async fn a_sealed_login_over_memory_carries_only_a_jwe_the_browser_key_opens() {
    let app = spawn_app().await;
    sealed_login(&app, &app, &app).await;
}

#[tokio::test]
async fn a_sealed_login_over_redis_across_instances() {
    let Some(redis) = RedisServer::start("a_sealed_login_over_redis") else {
        return;
    };
    let apps = instances(&redis.url(), 3).await;
    sealed_login(&apps[0], &apps[1], &apps[2]).await;
}

#[tokio::test]
async fn a_sealed_long_poll_gets_the_jwe_when_the_phone_confirms() {
    let app = spawn_app().await;
    let (key, public) = browser_key("k");
    let t = app.create_ticket_with(json!({ "seal": public })).await;
    let waiting = poll(&app, &t, json!({ "status": "pending" }), 10);
    let confirming = async {
        polls_waiting(&app, 1).await;
        app.confirm(&t.id, "u2").await
    };
    let (answer, confirmed) = tokio::join!(waiting, confirming);
    assert_eq!(confirmed.status(), 200);
    let view: Value = answer.json().await.unwrap();
    assert_eq!(claims_of(&opened(&view, &key))["sub"], "u2");
}

#[tokio::test]
async fn a_seal_that_is_not_a_public_p256_key_is_refused() {
    let app = spawn_app().await;
    let (_, good) = browser_key("k");
    let with = |name: &str, v: Value| {
        let mut k = good.clone();
        k[name] = v;
        k
    };
    let y = good["y"].as_str().unwrap();
    // The same x with another y: a point off the curve.
    let off_curve = format!("{}{}", &y[..42], if y.ends_with('A') { "E" } else { "A" });
    let short = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let cases = [
        json!("not a key"),
        json!(42),
        json!({}),
        json!({ "kty": "RSA", "n": "sXch", "e": "AQAB" }),
        json!({ "kty": "OKP", "crv": "X25519", "x": good["x"] }),
        with("crv", "P-384".into()),
        with("kty", "oct".into()),
        with("x", short.into()),
        with("y", off_curve.into()),
        with("y", Value::Null),
        with("x", "***".into()),
        with("d", good["x"].clone()),
    ];
    for seal in cases {
        let r = app
            .client
            .post(app.url("/api/v1/tickets"))
            .json(&json!({ "seal": seal }))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (400, "bad_request".into()), "{seal}");
    }
    // WebCrypto's export carries `ext` and `key_ops`: still a good key.
    let mut webcrypto = good.clone();
    webcrypto["ext"] = true.into();
    webcrypto["key_ops"] = json!([]);
    let t = app.create_ticket_with(json!({ "seal": webcrypto })).await;
    assert_eq!(t.body["status"], "pending");
}

/// Everything a Redis dump would hold: each key with its value, whatever
/// its type (read value by value: an RDB file compresses long strings, so
/// grepping one could miss a token).
fn redis_dump(redis: &RedisServer) -> String {
    let mut dump = String::new();
    for key in redis.cli(&["--scan"]).lines() {
        let kind = redis.cli(&["TYPE", key]);
        let read: Vec<&str> = match kind.trim() {
            "string" => vec!["GET", key],
            "hash" => vec!["HGETALL", key],
            "zset" => vec!["ZRANGE", key, "0", "-1", "WITHSCORES"],
            "set" => vec!["SMEMBERS", key],
            "list" => vec!["LRANGE", key, "0", "-1"],
            "stream" => vec!["XRANGE", key, "-", "+"],
            other => panic!("{key}: an unexpected type {other}"),
        };
        dump.push_str(key);
        dump.push('\n');
        dump.push_str(&redis.cli(&read));
    }
    dump
}

#[tokio::test]
async fn a_redis_dump_while_confirmed_holds_no_jws_sealed_or_not() {
    let Some(redis) = RedisServer::start("a_redis_dump_while_confirmed") else {
        return;
    };
    let app = instance(&redis.url(), "dump").await;
    let (key, public) = browser_key("k");
    let sealed = app.create_ticket_with(json!({ "seal": public })).await;
    let plain = app.create_ticket().await;
    for t in [&sealed, &plain] {
        assert_eq!(app.confirm(&t.id, "u1").await.status(), 200);
    }
    // The tokens as the browsers get them, read before and after the dump.
    let plain_jwt = next_frame(&mut app.ws(&plain).await).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sealed_jwt = opened(&next_frame(&mut app.ws(&sealed).await).await, &key);
    let dump = redis_dump(&redis);
    for t in [&sealed, &plain] {
        assert!(dump.contains(&t.id), "the dump holds each ticket: {dump}");
    }
    assert_eq!(find_jws(&dump), None, "{dump}");
    for jwt in [&plain_jwt, &sealed_jwt] {
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!dump.contains(signature), "no token's signature at rest");
    }
    // Both tickets are still confirmed, and the plain one still hands its
    // browser the token after the dump.
    assert_eq!(status_of(&app, &plain.id).await, "confirmed");
    let again = next_frame(&mut app.ws(&plain).await).await;
    assert_eq!(again["token"].as_str(), Some(plain_jwt.as_str()));
}

/// `python3` with `jwcrypto`, or why not (loud; a failure under `CI=true`).
fn jwcrypto(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: python3 with jwcrypto missing and CI=true (pip install jwcrypto)");
        }
        eprintln!("SKIPPED: {test}: python3 with jwcrypto not found (pip install jwcrypto)");
    }
    ok
}

/// `jwcrypto` makes a key pair (`keygen` → the private JWK) or opens a
/// compact JWE with one (`open JWK JWE` → the plaintext).
const JWCRYPTO: &str = r#"
import sys
from jwcrypto import jwk, jwe
if sys.argv[1] == "keygen":
    print(jwk.JWK.generate(kty="EC", crv="P-256").export(private_key=True))
else:
    token = jwe.JWE()
    token.deserialize(sys.argv[3], key=jwk.JWK.from_json(sys.argv[2]))
    sys.stdout.write(token.payload.decode())
"#;

fn python(args: &[&str]) -> Result<String, String> {
    let out = Command::new("python3")
        .args(["-c", JWCRYPTO])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn jwcrypto_opens_the_sealed_token_with_the_browser_key_only() {
    if !jwcrypto("jwcrypto_opens_the_sealed_token") {
        return;
    }
    let private = python(&["keygen"]).unwrap();
    let other = python(&["keygen"]).unwrap();
    let mut public: Value = serde_json::from_str(&private).unwrap();
    public.as_object_mut().unwrap().remove("d");
    let app = spawn_app().await;
    let t = app.create_ticket_with(json!({ "seal": public })).await;
    let mut ws = app.ws(&t).await;
    next_frame(&mut ws).await;
    assert_eq!(app.confirm(&t.id, "u7").await.status(), 200);
    let frame = next_frame(&mut ws).await;
    let jwe = frame["sealed_token"].as_str().unwrap();
    let jwt = python(&["open", &private, jwe]).unwrap();
    assert_eq!(claims_of(&jwt)["sub"], "u7");
    let r = app
        .client
        .post(app.url("/api/v1/tokens/introspect"))
        .bearer_auth(API_KEY)
        .json(&json!({ "token": jwt }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    assert!(
        python(&["open", &other, jwe]).is_err(),
        "another key does not open it"
    );
}

/// Records, before the page's scripts run, the ticket request's body and
/// every WebSocket frame the page receives.
const RECORD: &str = r#"
window.__frames = [];
const realFetch = window.fetch;
window.fetch = function (url, init) {
  if (String(url).endsWith('/api/v1/tickets')) window.__ticketBody = init && init.body;
  return realFetch.apply(this, arguments);
};
const RealSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = new RealSocket(url, protocols);
  ws.addEventListener('message', (e) => window.__frames.push(JSON.parse(e.data)));
  return ws;
};
window.WebSocket.prototype = RealSocket.prototype;
"#;

/// The login page in Chromium (`setup` run before its scripts), confirmed
/// by a trusted backend: the token the page hands `onToken`, what it asked
/// for its ticket, and the frames it received.
async fn browser_login(test: &str, setup: &str) -> Option<(TestApp, String, Value, Vec<Value>)> {
    use crate::browser_cdp::{Browser, Device};
    let app = spawn_app().await;
    let browser = Browser::launch(test).await?;
    let desktop = browser.page("desktop", Device::Desktop, "en-US").await;
    desktop.before_load(RECORD).await;
    desktop.before_load(setup).await;
    desktop.goto(&app.url("/")).await;
    let pending = "document.querySelector('#qrlogin').dataset.status === 'pending'";
    desktop.wait_for("a pending code", pending).await;
    let code = desktop.scan_qr(".qrlogin-qr").await;
    let id = code.rsplit('/').next().unwrap();
    assert_eq!(app.confirm(id, "u9").await.status(), 200);
    let token = desktop
        .wait_for("the token", "window.qrloginToken")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        desktop.text(".qrlogin-token").await.contains(&token),
        "the page shows the token"
    );
    desktop.screenshot("logged-in").await;
    let asked = desktop.eval("window.__ticketBody").await;
    let asked: Value = serde_json::from_str(asked.as_str().unwrap()).unwrap();
    let frames = desktop.eval("window.__frames").await;
    Some((app, token, asked, frames.as_array().unwrap().clone()))
}

/// The page's token is a JWT of ours, still active.
async fn assert_active(app: &TestApp, token: &str) {
    assert_eq!(claims_of(token)["sub"], "u9");
    let r = app
        .client
        .post(app.url("/api/v1/tokens/introspect"))
        .bearer_auth(API_KEY)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
}

#[tokio::test]
async fn in_chromium_the_page_seals_by_default_and_opens_the_token() {
    let Some((app, token, asked, frames)) =
        browser_login("sealed_in_chromium", "/* nothing changed */").await
    else {
        return;
    };
    assert_eq!(asked["seal"]["kty"], "EC", "the page sent its key: {asked}");
    assert!(asked["seal"].get("d").is_none(), "only the public half");
    let confirmed = frames.iter().find(|f| f["status"] == "confirmed").unwrap();
    assert!(confirmed.get("token").is_none(), "{confirmed}");
    assert_eq!(
        confirmed["sealed_token"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        5,
        "a compact JWE on the wire"
    );
    assert_active(&app, &token).await;
}

#[tokio::test]
async fn in_chromium_without_webcrypto_the_plain_flow_still_logs_in() {
    let no_webcrypto =
        "Object.defineProperty(Crypto.prototype, 'subtle', { get: () => undefined });";
    let Some((app, token, asked, frames)) = browser_login("plain_in_chromium", no_webcrypto).await
    else {
        return;
    };
    assert!(asked.get("seal").is_none(), "no key to send: {asked}");
    let confirmed = frames.iter().find(|f| f["status"] == "confirmed").unwrap();
    assert_eq!(confirmed["token"].as_str(), Some(token.as_str()));
    assert_active(&app, &token).await;
}
