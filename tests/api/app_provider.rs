//! The `app` provider: a product's own mobile app scans the code and its
//! backend drives the trusted API. The production setup without WeChat.

use serde_json::json;

use crate::helpers::*;

const CHROME_ON_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// A production app with only the `app` provider, as a product would run it.
async fn spawn_app_provider() -> TestApp {
    spawn_app_with(|s| {
        s.env = qrlogin::config::Environment::Production;
        s.public_url = Some("https://login.example.com".into());
        s.providers = vec![qrlogin::ticket::Provider::App];
        s.app_qr_url = Some("myapp://login?t={ticket}".into());
    })
    .await
}

async fn create_from_chrome(app: &TestApp) -> Ticket {
    let r = app
        .client
        .post(app.url("/api/v1/tickets"))
        .header("user-agent", CHROME_ON_WINDOWS)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    Ticket {
        id: body["ticket"].as_str().unwrap().to_owned(),
        secret: body["secret"].as_str().unwrap().to_owned(),
        body,
    }
}

#[tokio::test]
async fn app_tickets_carry_the_app_url_in_production() {
    let app = spawn_app_provider().await;
    let t = create_from_chrome(&app).await;
    assert_eq!(t.body["provider"], "app");
    assert_eq!(t.body["qr_content"], format!("myapp://login?t={}", t.id));
    let png = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    let image = image::load_from_memory(&png.bytes().await.unwrap())
        .unwrap()
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, format!("myapp://login?t={}", t.id));
}

#[tokio::test]
async fn the_apps_scan_names_the_computer_that_asked_and_its_confirm_reaches_the_browser() {
    let app = spawn_app_provider().await;
    let t = create_from_chrome(&app).await;
    let mut socket = app.ws(&t).await;
    assert_eq!(next_frame(&mut socket).await["status"], "pending");

    let r = app
        .trusted(
            "scan",
            &t.id,
            json!({"sub": "u-42", "user": {"nickname": "Ann"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let scanned: serde_json::Value = r.json().await.unwrap();
    assert_eq!(scanned["status"], "scanned");
    assert!(scanned.get("token").is_none(), "{scanned}");
    let requester = &scanned["requester"];
    assert_eq!(requester["device"], "Chrome on Windows 10", "{requester}");
    assert_eq!(requester["ip"], "127.0.0.1");
    assert_eq!(requester["user_agent"], CHROME_ON_WINDOWS);
    assert!(requester["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(next_frame(&mut socket).await["status"], "scanned");

    assert_eq!(app.confirm(&t.id, "u-42").await.status(), 200);
    let confirmed = next_frame(&mut socket).await;
    assert_eq!(confirmed["status"], "confirmed");
    let claims = claims_of(confirmed["token"].as_str().unwrap());
    assert_eq!(claims["idp"], "app");
    assert_eq!(claims["sub"], "u-42");
}

#[tokio::test]
async fn the_phone_page_of_an_app_ticket_confirms_nothing() {
    let app = spawn_app_provider().await;
    let t = create_from_chrome(&app).await;
    let phone = phone(IPHONE_UA);
    let page = phone.open(&app.url(&format!("/m/{}", t.id))).await;
    assert_eq!(page.status, 200);
    let html = page.html;
    assert!(!html.contains("name=\"csrf\""), "no confirm form: {html}");
    assert!(html.contains("Open this in the app"), "{html}");
    let r = phone
        .post(app.url(&format!("/m/{}/confirm", t.id)))
        .form(&[("csrf", "x"), ("name", "mallory")])
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

#[tokio::test]
async fn the_app_provider_needs_its_qr_url_and_the_api_key() {
    for (url, key, variable) in [
        (None, Some(API_KEY), "QRLOGIN_APP_QR_URL"),
        (
            Some("https://example.com/qr"),
            Some(API_KEY),
            "QRLOGIN_APP_QR_URL",
        ),
        (
            Some("https://example.com/qr/{ticket}"),
            None,
            "QRLOGIN_API_KEY",
        ),
    ] {
        let mut settings = test_settings();
        settings.providers = vec![qrlogin::ticket::Provider::App];
        settings.app_qr_url = url.map(str::to_owned);
        settings.api_key = key.map(str::to_owned);
        let err = qrlogin::Application::build(settings)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains(variable), "{url:?}: {err}");
    }
}
