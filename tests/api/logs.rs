//! Secrets, tokens and codes never reach the logs: a full login at TRACE
//! level is captured and searched.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::helpers::*;

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

    /// Fails naming each secret found.
    pub fn assert_free_of(&self, secrets: &[(&str, &str)]) {
        let text = self.text();
        for (what, secret) in secrets {
            assert!(!secret.is_empty());
            assert!(!text.contains(secret), "the {what} appears in the logs");
        }
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
    let page = phone
        .get(t.body["qr_content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie_value = cookie
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = csrf_of(&html);
    phone
        .post(app.url(&format!("/m/{}/confirm", t.id)))
        .form(&[("csrf", csrf.as_str()), ("name", "Ann")])
        .send()
        .await
        .unwrap();
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
