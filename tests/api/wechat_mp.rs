//! `wechat-mp` end to end: the real service, the fake WeChat making the
//! parametric QR and the app token, WeChat's pushes signed (and encrypted)
//! as WeChat does, a phone opening the one-time link, and the browser's
//! real WebSocket.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::fake_wechat::mp::{
    OA_ORIGINAL_ID, PUSH_TOKEN, Push, Pusher, QRCODE_CREATE, STABLE_TOKEN, field, scan_event,
    sha1_sorted, subscribe_event,
};
use crate::fake_wechat::oauth::User;
use crate::fake_wechat::{FakeWechat, OA_APP_ID};
use crate::helpers::*;

/// The service in safe mode (an EncodingAESKey set), as the fake WeChat's
/// account is.
async fn spawn() -> (TestApp, FakeWechat) {
    spawn_with(|_| {}).await
}

/// The service in plain mode (no EncodingAESKey): pushes signed, not
/// encrypted.
pub(crate) async fn spawn_plain() -> (TestApp, FakeWechat) {
    spawn_with(|s| s.wechat_encoding_aes_key = None).await
}

/// [`spawn`] with `tweak`ed settings.
pub(crate) async fn spawn_with(
    tweak: impl FnOnce(&mut qrlogin::config::Args),
) -> (TestApp, FakeWechat) {
    let fake = FakeWechat::start().await;
    let app = spawn_app_with(|s| {
        fake.configure_mp(s);
        s.providers = vec![
            qrlogin::ticket::Provider::WechatMp,
            qrlogin::ticket::Provider::Dev,
        ];
        tweak(s);
    })
    .await;
    (app, fake)
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn openid() -> String {
    User::default().openid(OA_APP_ID)
}

async fn send(app: &TestApp, push: &Push) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/wechat/events?{}", push.query)))
        .header("content-type", "text/xml")
        .body(push.body.clone())
        .send()
        .await
        .unwrap()
}

/// Send a push; its status and body.
pub(crate) async fn deliver(app: &TestApp, push: &Push) -> (u16, String) {
    let r = send(app, push).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The one-time link in a passive text reply, after checking the reply is
/// addressed to the person from our account.
pub(crate) fn link_in(reply: &str, openid: &str) -> String {
    assert_eq!(field(reply, "ToUserName").as_deref(), Some(openid));
    assert_eq!(
        field(reply, "FromUserName").as_deref(),
        Some(OA_ORIGINAL_ID)
    );
    assert_eq!(field(reply, "MsgType").as_deref(), Some("text"));
    let content = field(reply, "Content").expect("a Content");
    let at = content.find("http").expect("a link in the reply");
    content[at..].split_whitespace().next().unwrap().to_owned()
}

// ---------- the QR ----------

#[tokio::test]
async fn a_ticket_is_a_parametric_qr_whose_scene_is_the_ticket() {
    let (app, fake) = spawn().await;
    let t = app.create_ticket().await;
    assert_eq!(t.body["provider"], "wechat-mp");
    let qrs = fake.created_qrs();
    assert_eq!(qrs.len(), 1);
    assert_eq!(qrs[0].scene_str, t.id);
    assert_eq!(qrs[0].expire_seconds, 120, "the ticket's TTL");
    assert_eq!(t.body["qr_content"], qrs[0].url.as_str(), "WeChat's url");
    // Our PNG renders WeChat's url.
    let png = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png", t.id)))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let img = image::load_from_memory(&png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let (_, content) = prepared.detect_grids()[0].decode().unwrap();
    assert_eq!(content, qrs[0].url);
}

#[tokio::test]
async fn the_access_token_is_shared_and_refreshed_once_on_40001() {
    let (app, fake) = spawn().await;
    let create = || app.create_ticket_with(json!({"provider": "wechat-mp"}));
    let first = futures_util::future::join_all((0..8).map(|_| create())).await;
    assert_eq!(first.len(), 8);
    assert_eq!(fake.hits(STABLE_TOKEN), 1, "one token for eight tickets");
    assert_eq!(fake.hits(QRCODE_CREATE), 8);

    // Another system forced a refresh: our cached token is now stale.
    fake.revoke_access_tokens();
    let second = futures_util::future::join_all((0..4).map(|_| create())).await;
    assert_eq!(
        second.len(),
        4,
        "every creation succeeded after the refresh"
    );
    assert_eq!(fake.hits(STABLE_TOKEN), 2, "refreshed exactly once");
    assert_eq!(fake.hits(QRCODE_CREATE), 8 + 4 * 2, "each retried once");

    // And an expired token (42001) the same way.
    fake.expire_access_tokens();
    create().await;
    assert_eq!(fake.hits(STABLE_TOKEN), 3);
}

#[tokio::test]
async fn wechat_refusing_the_qr_is_an_upstream_error() {
    let (app, fake) = spawn().await;
    fake.fail_once(QRCODE_CREATE, 48001);
    let r = app.post_ticket(json!({})).await;
    assert_eq!(error_of(r).await, (502, "upstream_error".into()));
    fake.fail_once(STABLE_TOKEN, 40125);
    fake.revoke_access_tokens();
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (502, "upstream_error".into()));
}

// ---------- the server check ----------

#[tokio::test]
async fn the_server_check_echoes_only_for_a_valid_signature() {
    let (app, _fake) = spawn().await;
    let ts = now().to_string();
    let nonce = "1514711492";
    let check = |ts: &str, nonce: &str, echostr: &str| {
        let good = sha1_sorted(&[PUSH_TOKEN, ts, nonce]);
        format!("signature={good}&timestamp={ts}&nonce={nonce}&echostr={echostr}")
    };
    let get = |query: String| {
        let url = app.url(&format!("/wechat/events?{query}"));
        let client = app.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let first = check(&ts, nonce, "4375120948345356249");
    assert_eq!(
        get(first.clone()).await,
        (200, "4375120948345356249".into())
    );
    // WeChat's retry of the same check is answered the same.
    assert_eq!(get(first).await.0, 200);
    let bad = sha1_sorted(&["other-token", &ts, nonce]);
    for query in [
        format!("signature={bad}&timestamp={ts}&nonce={nonce}&echostr=1"),
        format!("timestamp={ts}&nonce={nonce}&echostr=1"),
        "".to_owned(),
    ] {
        assert_eq!(get(query.clone()).await.0, 401, "{query}");
    }
    // A stale check, or a captured one carrying another echostr, echoes nothing.
    let stale = (now() - 3600).to_string();
    assert_eq!(get(check(&stale, "9", "1")).await.0, 403);
    assert_eq!(get(check(&ts, nonce, "reflected")).await.0, 403);
}

/// A server check's query signs as a plain push's does: once used for the
/// check, it carries no push.
#[tokio::test]
async fn a_captured_server_check_cannot_carry_a_push() {
    let (app, _fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let openid = openid();
    let ts = now().to_string();
    let nonce = "271828";
    let signature = sha1_sorted(&[PUSH_TOKEN, &ts, nonce]);
    let r = app
        .client
        .get(app.url(&format!(
            "/wechat/events?signature={signature}&timestamp={ts}&nonce={nonce}&echostr=42"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let push = Pusher::default().plain_at(&scan_event(&openid, &t.id, now()), &openid, &ts, nonce);
    assert_eq!(deliver(&app, &push).await.0, 403);
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

// ---------- pushes ----------

#[tokio::test]
async fn a_scan_event_scans_and_the_one_time_link_confirms() {
    let (app, _fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");

    let pusher = Pusher::default();
    let openid = openid();
    let (status, reply) = deliver(
        &app,
        &pusher.plain(&scan_event(&openid, &t.id, now()), &openid),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let link = link_in(&reply, &openid);
    assert!(
        link.starts_with(&format!("{}/m/{}?k=", app.address, t.id)),
        "{link}"
    );
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");

    let phone = phone(WECHAT_UA);
    let page = phone.open(&link).await;
    assert_eq!(page.status, 200);
    assert!(
        page.html.contains("127.0.0.1"),
        "names the computer that asked"
    );
    let r = phone.confirm(&page).await;
    assert_eq!(r.status(), 200);
    let confirmed = next_frame(&mut ws).await;
    assert_eq!(confirmed["status"], "confirmed");
    let claims = claims_of(confirmed["token"].as_str().unwrap());
    assert_eq!(claims["idp"], "wechat");
    assert_eq!(claims["openid"], openid);
    assert_eq!(claims["sub"], openid);
}

#[tokio::test]
async fn a_scan_alone_never_logs_in() {
    let (app, _fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let openid = openid();
    let (status, _) = deliver(
        &app,
        &Pusher::default().plain(&scan_event(&openid, &t.id, now()), &openid),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &t.id).await, "scanned");
    // Without the link nobody can confirm: not a bare POST, not a phone
    // that did not open the link.
    let stranger = phone(WECHAT_UA);
    let r = stranger
        .get(app.url(&format!("/m/{}", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "taken");
    let r = stranger
        .post(app.url(&format!("/m/{}/confirm", t.id)))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status_of(&app, &t.id).await, "scanned");
}

#[tokio::test]
async fn a_subscribe_event_in_safe_mode_gets_an_encrypted_signed_reply() {
    let (app, _fake) = spawn().await;
    let t = app.create_ticket().await;
    let mut ws = app.ws(&t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let pusher = Pusher::default();
    let openid = openid();
    let (status, reply) = deliver(
        &app,
        &pusher.safe(&subscribe_event(&openid, &t.id, now()), &openid),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        field(&reply, "Content").is_none(),
        "nothing in clear: {reply}"
    );
    let inner = pusher.open_reply(&reply);
    let link = link_in(&inner, &openid);
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");

    // Deny from the link.
    let phone = phone(WECHAT_UA);
    let page = phone.open(&link).await;
    let r = phone.deny(&page).await;
    assert_eq!(r.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "denied");
}

#[tokio::test]
async fn safe_mode_envelopes_for_another_app_or_key_are_refused() {
    let (app, _fake) = spawn().await;
    let t = app.create_ticket().await;
    let openid = openid();
    let xml = scan_event(&openid, &t.id, now());
    let other_app = Pusher::new(
        PUSH_TOKEN,
        crate::fake_wechat::mp::AES_KEY,
        "wx0000000000000000",
    );
    assert_eq!(deliver(&app, &other_app.safe(&xml, &openid)).await.0, 400);
    let other_key = Pusher::new(
        PUSH_TOKEN,
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        OA_APP_ID,
    );
    assert_eq!(deliver(&app, &other_key.safe(&xml, &openid)).await.0, 400);
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn retries_are_deduplicated_and_get_the_same_reply() {
    let (app, _fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let openid = openid();
    let pusher = Pusher::default();
    let xml = scan_event(&openid, &t.id, now());
    // WeChat's three deliveries of one event, two of them at once.
    let push = pusher.plain(&xml, &openid);
    let (a, b) = tokio::join!(deliver(&app, &push), deliver(&app, &push));
    let c = deliver(&app, &pusher.plain(&xml, &openid)).await;
    assert_eq!(a.0, 200);
    assert_eq!(a, b);
    assert_eq!(a, c, "a retry with a fresh signature gets the same reply");
    assert!(a.1.contains("?k="), "{}", a.1);
    assert_eq!(status_of(&app, &t.id).await, "scanned");
    // In safe mode too: the very same envelope comes back.
    let (app, _fake) = spawn().await;
    let t2 = app.create_ticket().await;
    let xml = subscribe_event(&openid, &t2.id, now() + 1);
    let first = deliver(&app, &pusher.safe(&xml, &openid)).await;
    let again = deliver(&app, &pusher.safe(&xml, &openid)).await;
    assert_eq!(first, again);
    assert!(pusher.open_reply(&first.1).contains(&t2.id));
}

#[tokio::test]
async fn forged_pushes_are_refused_and_change_nothing() {
    let (app, _fake) = spawn().await;
    let (plain_app, _plain_fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let plain_t = plain_app.create_ticket().await;
    let openid = openid();
    let xml = scan_event(&openid, &t.id, now());
    let forger = Pusher::new("guessed-token", crate::fake_wechat::mp::AES_KEY, OA_APP_ID);
    let good = Pusher::default();
    // A good signature on a safe-mode query whose msg_signature is forged.
    let mut forged_msg = good.safe(&xml, &openid);
    let real = format!(
        "msg_signature={}",
        forged_msg.query.rsplit('=').next().unwrap()
    );
    forged_msg.query = forged_msg
        .query
        .replace(&real, &format!("msg_signature={}", "0".repeat(40)));
    let old = (now() - 3600).to_string();
    let plain_xml = scan_event(&openid, &plain_t.id, now());
    let mut no_signature = good.plain(&plain_xml, &openid);
    no_signature.query = no_signature
        .query
        .split('&')
        .filter(|kv| !kv.starts_with("signature="))
        .collect::<Vec<_>>()
        .join("&");
    let cases = [
        ("wrong token", &plain_app, forger.plain(&plain_xml, &openid)),
        ("wrong token, safe", &app, forger.safe(&xml, &openid)),
        ("no signature", &plain_app, no_signature),
        ("forged msg_signature", &app, forged_msg),
        (
            "an hour old",
            &plain_app,
            good.plain_at(&plain_xml, &openid, &old, "1"),
        ),
        (
            "an hour old, safe",
            &app,
            good.safe_at(&xml, &openid, &old, "1"),
        ),
    ];
    for (what, app, push) in cases {
        let r = send(app, &push).await;
        let status = r.status().as_u16();
        assert!(status == 401 || status == 403, "{what}: {status}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{what}: {body}");
    }
    assert_eq!(status_of(&app, &t.id).await, "pending");
    assert_eq!(status_of(&plain_app, &plain_t.id).await, "pending");
}

#[tokio::test]
async fn hostile_xml_is_refused_and_changes_nothing() {
    let (safe_app, _fake) = spawn().await;
    let (plain_app, _plain_fake) = spawn_plain().await;
    let t = safe_app.create_ticket().await;
    let openid = openid();
    let pusher = Pusher::default();
    let event = scan_event(&openid, &t.id, now());
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">]>{}",
        event.replace("<![CDATA[event]]>", "&lol2;")
    );
    let big = event.replace(
        "</xml>",
        &format!("<Padding>{}</Padding></xml>", "a".repeat(1024 * 1024)),
    );
    let deep = event.replace("</xml>", &"<a>".repeat(10_000));
    let deep_closed = event.replace(
        "</xml>",
        &format!("{}{}</xml>", "<a>".repeat(5_000), "</a>".repeat(5_000)),
    );
    let unclosed = event.replace("</Event>", "").replace("</xml>", "");
    let mismatched = event.replace("</Event>", "</EventKey>");
    for (what, body, expected) in [
        ("entity bomb", bomb, 400),
        ("1 MB", big, 413),
        ("10,000 deep", deep, 400),
        ("5,000 deep, closed", deep_closed, 400),
        ("unclosed", unclosed, 400),
        ("mismatched", mismatched, 400),
        ("not xml", "{\"ToUserName\":1}".to_owned(), 400),
    ] {
        for (app, push) in [
            (&plain_app, pusher.plain(&body, &openid)),
            (&safe_app, pusher.safe(&body, &openid)),
        ] {
            let r = send(app, &push).await;
            let status = r.status().as_u16();
            if push.query.contains("encrypt_type") {
                // Inside a well-formed envelope: refused once decrypted
                // (or, at 1 MB, by the size limit first).
                assert!(status == 400 || status == 413, "{what} (safe): {status}");
            } else {
                assert_eq!(status, expected, "{what}");
            }
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "{what}: {body}");
        }
    }
    assert_eq!(status_of(&safe_app, &t.id).await, "pending");
}

#[tokio::test]
async fn unknown_finished_and_other_pushes_get_success() {
    let (safe_app, _fake) = spawn().await;
    let (plain_app, _plain_fake) = spawn_plain().await;
    for (app, safe) in [(&plain_app, false), (&safe_app, true)] {
        unknown_finished_and_other_pushes_get_success_on(app, safe).await;
    }
}

async fn unknown_finished_and_other_pushes_get_success_on(app: &TestApp, safe: bool) {
    let openid = openid();
    let pusher = Pusher::default();
    let done = app.create_ticket().await;
    assert_eq!(app.confirm(&done.id, "someone").await.status(), 200);
    let dev = app.create_ticket_with(json!({"provider": "dev"})).await;
    let text = format!(
        "<xml><ToUserName><![CDATA[{OA_ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><MsgId>6054768590064713728</MsgId></xml>",
        now()
    );
    let unsubscribe = scan_event(&openid, "x", now()).replace("SCAN", "unsubscribe");
    let plain_follow = subscribe_event(&openid, "", now()).replace("qrscene_", "");
    for (what, xml) in [
        (
            "unknown ticket",
            scan_event(&openid, "Unknown0Ticket0Id", now()),
        ),
        (
            "not a ticket id",
            scan_event(&openid, "../etc/passwd", now() + 1),
        ),
        ("finished ticket", scan_event(&openid, &done.id, now() + 2)),
        (
            "another provider's ticket",
            scan_event(&openid, &dev.id, now() + 3),
        ),
        ("text message", text),
        ("unsubscribe", unsubscribe),
        ("plain follow", plain_follow),
    ] {
        let push = if safe {
            pusher.safe(&xml, &openid)
        } else {
            pusher.plain(&xml, &openid)
        };
        assert_eq!(
            deliver(app, &push).await,
            (200, "success".to_owned()),
            "{what}"
        );
    }
    assert_eq!(status_of(app, &dev.id).await, "pending");
}

#[tokio::test]
async fn a_used_link_from_another_phone_asks_to_scan_again() {
    let (app, _fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let openid = openid();
    let (_, reply) = deliver(
        &app,
        &Pusher::default().plain(&scan_event(&openid, &t.id, now()), &openid),
    )
    .await;
    let link = link_in(&reply, &openid);

    let first = phone(WECHAT_UA);
    let page = first.open(&link).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("qrl_phone=")
    );
    assert!(page.html.contains("name=\"csrf\""));

    // The link forwarded to someone else is spent.
    let second = phone(WECHAT_UA);
    let page2 = second.open(&link).await;
    assert_eq!(page2.status, 400);
    let page2 = page2.html;
    assert!(!page2.contains("name=\"csrf\""), "no confirm page: {page2}");
    // A made-up key too.
    let forged = format!(
        "{}/m/{}?k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        app.address, t.id
    );
    assert_eq!(second.get(&forged).send().await.unwrap().status(), 400);

    // The phone that opened it can come back.
    let page = first.open(&link).await;
    assert_eq!(page.status, 200);
    let r = first.confirm(&page).await;
    assert_eq!(r.status(), 200);
    assert_eq!(status_of(&app, &t.id).await, "confirmed");
    // After the end the link shows the outcome, not a confirm page.
    let r = first.get(&link).send().await.unwrap();
    assert!(!r.text().await.unwrap().contains("name=\"csrf\""));
}

#[tokio::test]
async fn a_second_scan_of_a_scanned_ticket_gets_success_and_keeps_the_first() {
    let (app, _fake) = spawn_plain().await;
    let t = app.create_ticket().await;
    let alice = openid();
    let bob = User {
        key: "bob".into(),
        ..User::default()
    }
    .openid(OA_APP_ID);
    let pusher = Pusher::default();
    let (_, first) = deliver(
        &app,
        &pusher.plain(&scan_event(&alice, &t.id, now()), &alice),
    )
    .await;
    assert!(first.contains("?k="));
    let (status, second) =
        deliver(&app, &pusher.plain(&scan_event(&bob, &t.id, now()), &bob)).await;
    assert_eq!((status, second.as_str()), (200, "success"));
    // Alice's link still works.
    let link = link_in(&first, &alice);
    assert_eq!(
        phone(WECHAT_UA).get(&link).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn over_redis_instances_share_one_token_and_one_reply_per_push() {
    let Some(redis) = crate::redis_server::RedisServer::start(
        "over_redis_instances_share_one_token_and_one_reply_per_push",
    ) else {
        return;
    };
    let fake = FakeWechat::start().await;
    let prefix = format!("mp{}", rand::random::<u32>());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (url, prefix) = (redis.url(), prefix.clone());
        apps.push(
            spawn_app_with(|s| {
                fake.configure_mp(s);
                s.wechat_encoding_aes_key = None;
                s.providers = vec![qrlogin::ticket::Provider::WechatMp];
                s.redis_url = Some(url);
                s.redis_prefix = prefix;
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let made = futures_util::future::join_all((0..6).map(|i| {
        if i % 2 == 0 {
            a.create_ticket()
        } else {
            b.create_ticket()
        }
    }))
    .await;
    assert_eq!(fake.hits(STABLE_TOKEN), 1, "one token for both instances");

    // Created on A, pushed to B, retried to A: one scan, one reply.
    let t = &made[0];
    let mut ws = a.ws(t).await;
    assert_eq!(next_frame(&mut ws).await["status"], "pending");
    let openid = openid();
    let pusher = Pusher::default();
    let xml = scan_event(&openid, &t.id, now());
    let first = deliver(b, &pusher.plain(&xml, &openid)).await;
    let retry = deliver(a, &pusher.plain(&xml, &openid)).await;
    assert_eq!(first.0, 200);
    assert_eq!(first, retry);
    assert_eq!(next_frame(&mut ws).await["status"], "scanned");

    // The link (B's address: B answered) confirms; A's socket hears it.
    let link = link_in(&first.1, &openid);
    assert!(link.starts_with(&b.address), "{link}");
    let phone = phone(WECHAT_UA);
    let r = phone.confirm(&phone.open(&link).await).await;
    assert_eq!(r.status(), 200);
    assert_eq!(next_frame(&mut ws).await["status"], "confirmed");
}

// ---------- safe mode and replayed signatures ----------

#[tokio::test]
async fn in_safe_mode_a_plain_push_is_refused_and_changes_nothing() {
    let (app, _fake) = spawn().await;
    let t = app.create_ticket().await;
    let openid = openid();
    let pusher = Pusher::default();
    let xml = scan_event(&openid, &t.id, now());
    // What a captured safe-mode query allows: the plain `signature` is
    // valid, the body is anyone's.
    let plain = pusher.plain(&xml, &openid);
    let mut raw = pusher.plain(&xml, &openid);
    raw.query.push_str("&encrypt_type=raw");
    let mut stripped = pusher.safe(&xml, &openid);
    stripped.query = stripped
        .query
        .split('&')
        .filter(|kv| !kv.starts_with("encrypt_type=") && !kv.starts_with("msg_signature="))
        .collect::<Vec<_>>()
        .join("&");
    stripped.body = xml.clone();
    for (what, push) in [
        ("plain", plain),
        ("encrypt_type=raw", raw),
        ("a safe query stripped", stripped),
    ] {
        let r = send(&app, &push).await;
        assert_eq!(r.status(), 403, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "forbidden", "{what}: {body}");
        assert!(!body.to_string().contains("?k="), "{what}: no link");
    }
    assert_eq!(status_of(&app, &t.id).await, "pending");
    // The encrypted push of the same event still scans.
    let (status, _) = deliver(&app, &pusher.safe(&xml, &openid)).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &t.id).await, "scanned");
}

#[tokio::test]
async fn a_replayed_timestamp_and_nonce_with_another_body_is_refused() {
    let (app, _fake) = spawn_plain().await;
    let (t1, t2) = (app.create_ticket().await, app.create_ticket().await);
    let openid = openid();
    let pusher = Pusher::default();
    let (ts, nonce) = (now().to_string(), rand::random::<u32>().to_string());
    let first = pusher.plain_at(&scan_event(&openid, &t1.id, now()), &openid, &ts, &nonce);
    let (status, reply) = deliver(&app, &first).await;
    assert_eq!(status, 200);
    assert!(reply.contains("?k="), "{reply}");
    // The same signed query, another body.
    let replay = pusher.plain_at(&scan_event(&openid, &t2.id, now()), &openid, &ts, &nonce);
    let r = send(&app, &replay).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden", "{body}");
    assert_eq!(status_of(&app, &t2.id).await, "pending");
    // The very same delivery again is WeChat retrying: the same reply.
    assert_eq!(deliver(&app, &first).await, (status, reply));
}

#[tokio::test]
async fn a_replayed_timestamp_and_nonce_is_refused_on_another_instance() {
    let Some(redis) = crate::redis_server::RedisServer::start(
        "a_replayed_timestamp_and_nonce_is_refused_on_another_instance",
    ) else {
        return;
    };
    let fake = FakeWechat::start().await;
    let prefix = format!("mp{}", rand::random::<u32>());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (url, prefix) = (redis.url(), prefix.clone());
        apps.push(
            spawn_app_with(|s| {
                fake.configure_mp(s);
                s.wechat_encoding_aes_key = None;
                s.providers = vec![qrlogin::ticket::Provider::WechatMp];
                s.redis_url = Some(url);
                s.redis_prefix = prefix;
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let (t1, t2) = (a.create_ticket().await, a.create_ticket().await);
    let openid = openid();
    let pusher = Pusher::default();
    let (ts, nonce) = (now().to_string(), rand::random::<u32>().to_string());
    let first = pusher.plain_at(&scan_event(&openid, &t1.id, now()), &openid, &ts, &nonce);
    assert_eq!(deliver(a, &first).await.0, 200);
    let replay = pusher.plain_at(&scan_event(&openid, &t2.id, now()), &openid, &ts, &nonce);
    assert_eq!(deliver(b, &replay).await.0, 403);
    assert_eq!(status_of(a, &t2.id).await, "pending");
    assert_eq!(status_of(b, &t1.id).await, "scanned");
}
