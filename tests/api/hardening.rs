//! The edges an attacker pokes: malformed query strings and bodies answer
//! the contract's errors, Origins compare one way everywhere, per-IP limits
//! on the WeChat pushes, the Mini Program calls and QR renders, and the
//! metrics listener of its own.

use serde_json::json;

use crate::helpers::*;

/// Parameters given twice or unparsable are the contract's JSON 400 on the
/// API, never axum's text/plain.
#[tokio::test]
async fn bad_query_strings_answer_the_contracts_json() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    for path in [
        format!("/api/v1/tickets/{}/qr.png?size=abc", t.id),
        format!("/api/v1/tickets/{}/qr.png?size=256&size=512", t.id),
        format!("/api/v1/tickets/{}/qr.svg?size=1&size=2", t.id),
    ] {
        let r = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(error_of(r).await, (400, "bad_request".into()), "{path}");
    }
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/poll?wait=1&wait=2", t.id)))
        .bearer_auth(&t.secret)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    // One value is still fine.
    let r = app
        .client
        .get(app.url(&format!("/api/v1/tickets/{}/qr.png?size=300", t.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Pages answer a bad query with an HTML page, in the page language.
#[tokio::test]
async fn bad_page_query_strings_answer_an_html_page() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    for path in [
        "/?lang=en&lang=zh-CN".to_owned(),
        format!("/m/{}?k=a&k=b", t.id),
    ] {
        let r = app
            .client
            .get(app.url(&path))
            .header("accept-language", "zh-CN")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(r.headers().contains_key("content-security-policy"));
        let html = r.text().await.unwrap();
        assert!(html.contains("链接无效"), "{html}");
    }
    assert_eq!(status_of(&app, &t.id).await, "pending");
}

/// Bytes that are not UTF-8 inside fields the type keeps unexamined (the
/// `user` object's unknown keys) are refused like anywhere else.
#[tokio::test]
async fn non_utf8_bytes_in_a_trusted_body_are_refused() {
    let app = spawn_app().await;
    let t = app.create_ticket().await;
    let mut body = br#"{"sub":"u1","user":{"x":""#.to_vec();
    body.push(0xff);
    body.extend_from_slice(br#""}}"#);
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/confirm", t.id)))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    assert_eq!(status_of(&app, &t.id).await, "pending");
    // The Content-Type check still stands.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/confirm", t.id)))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(r#"{"sub":"u1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    // And `application/…+json` with parameters is JSON.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{}/confirm", t.id)))
        .bearer_auth(API_KEY)
        .header("content-type", "application/vnd.api+json; charset=utf-8")
        .body(r#"{"sub":"u1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// One spelling of an allowed origin, however written in the settings, is
/// let in by both the WebSocket check and CORS; another origin by neither.
#[tokio::test]
async fn origins_compare_normalised_for_sockets_and_cors() {
    let app =
        spawn_app_with(|s| s.allowed_origins = vec!["HTTPS://Other.Example.com:443/".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/tickets"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    for origin in ["https://other.example.com", "HTTPS://OTHER.example.com:443"] {
        let r = preflight(origin).await.unwrap();
        assert_eq!(
            r.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(origin),
            "CORS for {origin}"
        );
        let t = app.create_ticket().await;
        let protocols = format!("qrlogin.v1, secret.{}", t.secret);
        assert!(
            app.ws_handshake(&t.id, &protocols, Some(origin))
                .await
                .is_ok(),
            "socket for {origin}"
        );
    }
    for origin in [
        "https://other.example.com:8443",
        "http://other.example.com",
        "null",
    ] {
        let r = preflight(origin).await.unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let t = app.create_ticket().await;
        let protocols = format!("qrlogin.v1, secret.{}", t.secret);
        assert!(
            app.ws_handshake(&t.id, &protocols, Some(origin))
                .await
                .is_err(),
            "socket for {origin}"
        );
    }
}

#[tokio::test]
async fn garbage_origins_stop_the_start_naming_the_variable() {
    for origin in [
        "https://shop.example/path",
        "shop.example",
        "https://a@shop.example",
    ] {
        let mut settings = test_settings();
        settings.allowed_origins = vec![origin.into()];
        let err = qrlogin::Application::build(settings)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("QRLOGIN_ALLOWED_ORIGINS"), "{err}");
    }
}

/// A request from `ip` (the test's peer is a trusted proxy).
fn from(app: &TestApp, ip: &str, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let _ = app;
    request.header("x-forwarded-for", ip)
}

fn behind_proxy(s: &mut qrlogin::config::Args) {
    s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

/// 6 a minute is a burst of one: the second call from one IP is refused,
/// another IP is not.
#[tokio::test]
async fn event_pushes_and_mini_program_calls_are_limited_per_ip() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_events = 6;
        s.rate_miniprogram = 6;
    })
    .await;
    let t = app.create_ticket().await;
    let push = |ip: &'static str| {
        from(
            &app,
            ip,
            app.client
                .post(app.url("/wechat/events?signature=x&timestamp=1&nonce=2"))
                .body("<xml></xml>"),
        )
        .send()
    };
    let first = push("203.0.113.1").await.unwrap();
    assert_ne!(first.status(), 429);
    let r = push("203.0.113.1").await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_of(r).await, (429, "rate_limited".into()));
    assert_ne!(push("203.0.113.2").await.unwrap().status(), 429);

    let scan = |ip: &'static str| {
        from(
            &app,
            ip,
            app.client
                .post(app.url(&format!("/api/v1/miniprogram/tickets/{}/scan", t.id)))
                .json(&json!({ "code": "c" })),
        )
        .send()
    };
    assert_ne!(scan("203.0.113.1").await.unwrap().status(), 429);
    let r = scan("203.0.113.1").await.unwrap();
    assert_eq!(error_of(r).await, (429, "rate_limited".into()));
    assert_ne!(scan("203.0.113.2").await.unwrap().status(), 429);
}

/// Each `?size=` variant is a render and draws on the quota; the cached
/// image is free however often it is reloaded.
#[tokio::test]
async fn qr_renders_are_limited_per_ip_and_cached_images_are_free() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_renders = 6;
    })
    .await;
    let t = app.create_ticket().await;
    let image = |ip: &'static str, size: u32| {
        from(
            &app,
            ip,
            app.client
                .get(app.url(&format!("/api/v1/tickets/{}/qr.png?size={size}", t.id))),
        )
        .send()
    };
    assert_eq!(image("203.0.113.1", 200).await.unwrap().status(), 200);
    for _ in 0..5 {
        assert_eq!(
            image("203.0.113.1", 200).await.unwrap().status(),
            200,
            "cached"
        );
    }
    let r = image("203.0.113.1", 201).await.unwrap();
    assert_eq!(error_of(r).await, (429, "rate_limited".into()));
    assert_eq!(image("203.0.113.2", 202).await.unwrap().status(), 200);
    assert!(app.metrics().await.contains(r#"limit="renders""#));
}

/// With QRLOGIN_METRICS_BIND, `/metrics` moves to its own listener: the
/// public one answers 404 there, the private one serves nothing else.
#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let mut settings = test_settings();
    settings.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    let app = qrlogin::Application::build(settings).await.expect("builds");
    let (port, metrics_port) = (app.port(), app.metrics_port().expect("a metrics port"));
    let stop = app.stop_handle();
    let task = tokio::spawn(app.run(std::future::pending()));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("qrlogin_"));
    for path in ["/healthz", "/api/v1/tickets", "/"] {
        let r = client
            .get(format!("http://127.0.0.1:{metrics_port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    stop.stop();
    task.await.unwrap().unwrap();
}

/// The bound on operations in progress (`QRLOGIN_MAX_IN_PROGRESS`) counts
/// store work, not connections: clients that send a request head and then
/// trickle (here: withhold) its body hold no place, so however many of
/// them someone keeps open, other people's new tickets are still made.
#[tokio::test]
async fn clients_withholding_their_bodies_hold_no_place_in_the_bound_on_work() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|s| {
        s.max_in_progress = 8;
        s.rate_tickets = 0;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        tcp.write_all(
            b"POST /api/v1/tickets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..5 {
        app.create_ticket().await;
    }
    drop(held);
}
