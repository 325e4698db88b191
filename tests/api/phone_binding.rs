//! Phone cookies and what they bind: a phone is known by a random cookie
//! the service sets itself; nothing taken from a URL becomes a cookie, and a
//! WeChat refusal denies only from the phone bound to the ticket.

use serde_json::json;

use crate::fake_wechat::FakeWechat;
use crate::fake_wechat::mp::{Pusher, scan_event};
use crate::helpers::*;
use crate::wechat_mp::{deliver, link_in, now, openid};
use crate::wechat_oauth::{authorize_in_wechat, location, open};

/// Every `Set-Cookie` of a response, whole.
fn cookies_set_by(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The value a `Set-Cookie` sets.
fn value_of(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

/// A client that presents `cookie` as its phone cookie, by hand (as an
/// attacker who knows a value would).
fn phone_with_cookie(cookie: &str) -> Phone {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", cookie.parse().unwrap());
    Phone(
        phone_client(WECHAT_UA)
            .default_headers(headers)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_one_time_link_never_becomes_the_phone_cookie_nor_gives_confirm_power() {
    let fake = FakeWechat::start().await;
    let app = spawn_app_with(|s| {
        fake.configure_mp(s);
        s.wechat_encoding_aes_key = None;
        s.providers = vec![
            qrlogin::ticket::Provider::WechatMp,
            qrlogin::ticket::Provider::WechatOauth,
        ];
    })
    .await;
    // The attacker scans their own `wechat-mp` ticket and holds its link.
    let t1 = app.create_ticket().await;
    let openid = openid();
    let (status, reply) = deliver(
        &app,
        &Pusher::default().plain(&scan_event(&openid, &t1.id, now()), &openid),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let link = link_in(&reply, &openid);
    let k = link.split("?k=").nth(1).unwrap().to_owned();

    // The victim opens it in WeChat: a confirm page, and a cookie that is
    // not the link's key.
    let victim = phone(WECHAT_UA);
    let r = victim.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set = cookies_set_by(r.headers());
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("qrl_phone="), "{set:?}");
    assert!(!set[0].contains(&k), "the link's key became the cookie");
    let cookie = value_of(&set[0]);
    assert!(cookie.len() >= 22, "a random value: {cookie}");

    // Presenting the key as a cookie confirms nothing on the link's ticket.
    let attacker = phone_with_cookie(&format!("qrl_phone={k}"));
    let r = attacker
        .get(app.url(&format!("/m/{}", t1.id)))
        .send()
        .await
        .unwrap();
    assert!(!r.text().await.unwrap().contains("name=\"csrf\""));

    // Later the victim's WeChat scans a `wechat-oauth` ticket.
    let t2 = app
        .create_ticket_with(json!({"provider": "wechat-oauth"}))
        .await;
    let callback = authorize_in_wechat(&victim, &t2).await;
    let page = victim.open(&callback).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("name=\"csrf\""));
    assert_eq!(status_of(&app, &t2.id).await, "scanned");

    // Holding `k` gets the attacker no confirm page and no confirm.
    let r = attacker
        .get(app.url(&format!("/m/{}", t2.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(!r.text().await.unwrap().contains("name=\"csrf\""));
    let r = attacker.confirm(&page).await;
    assert_eq!(r.status(), 403);
    assert_eq!(status_of(&app, &t2.id).await, "scanned");

    // The victim's own phone still confirms its ticket.
    assert_eq!(victim.confirm(&page).await.status(), 200);
    assert_eq!(status_of(&app, &t2.id).await, "confirmed");
}

#[tokio::test]
async fn over_https_the_phone_cookie_is_host_prefixed() {
    let app = spawn_app_with(|s| {
        s.public_url = Some("https://login.example.com".into());
    })
    .await;
    let t = app.create_ticket().await;
    let page = phone(WECHAT_UA)
        .open(&app.url(&format!("/m/{}", t.id)))
        .await;
    assert_eq!(page.status, 200);
    let set = cookies_set_by(&page.headers);
    assert_eq!(set.len(), 1, "{set:?}");
    let attrs: Vec<&str> = set[0].split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("__Host-qrl_phone="), "{set:?}");
    assert!(attrs.contains(&"Secure"), "{set:?}");
    assert!(attrs.contains(&"Path=/"), "{set:?}");
    assert!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{set:?}"
    );
    let value = value_of(&set[0]);

    // The same value under the unprefixed name (which a sibling host could
    // plant) is not this phone.
    let planted = phone_with_cookie(&format!("qrl_phone={value}"));
    assert_eq!(planted.confirm(&page).await.status(), 403);
    assert_eq!(status_of(&app, &t.id).await, "scanned");
    let real = phone_with_cookie(&format!("__Host-qrl_phone={value}"));
    assert_eq!(real.confirm(&page).await.status(), 200);
    assert_eq!(status_of(&app, &t.id).await, "confirmed");
}

async fn spawn_oauth() -> (TestApp, FakeWechat) {
    let fake = FakeWechat::start().await;
    let app = spawn_app_with(|s| {
        fake.configure(s);
        s.providers = vec![qrlogin::ticket::Provider::WechatOauth];
    })
    .await;
    (app, fake)
}

#[tokio::test]
async fn a_refusal_not_from_the_bound_phone_changes_nothing() {
    let (app, fake) = spawn_oauth().await;
    let t = app.create_ticket().await;
    let refusal = app.url(&format!("/wechat/oauth/callback?state={}", t.id));

    // A bare GET from anywhere: a page, nothing changes.
    let r = app.client.get(&refusal).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(status_of(&app, &t.id).await, "pending");
    // From a phone with a cookie that never opened the ticket.
    let stranger = phone(WECHAT_UA);
    assert_eq!(open(&stranger, &refusal).await.0, 403);
    assert_eq!(status_of(&app, &t.id).await, "pending");

    // The person's phone opens the QR (bound before going to WeChat); a
    // second phone opening it later is not bound, and its refusal does
    // nothing either.
    let owner = phone(WECHAT_UA);
    let r = owner
        .get(t.body["qr_content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    location(&r);
    let late = phone(WECHAT_UA);
    let r = late
        .get(t.body["qr_content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    location(&r);
    assert_eq!(open(&late, &refusal).await.0, 403);
    assert_eq!(status_of(&app, &t.id).await, "pending");

    // The bound phone refusing on WeChat's consent page denies.
    fake.refuse_next();
    let callback = authorize_in_wechat(&owner, &t).await;
    let (status, page) = open(&owner, &callback).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(status_of(&app, &t.id).await, "denied");
}
