//! `spawn_app()` and the clients tests use: a browser (HTTP + WebSocket) and
//! a phone (HTTP with a cookie jar).
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use qrlogin::Application;
use qrlogin::app::StopHandle;
use qrlogin::config::Args;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

pub const API_KEY: &str = "test-api-key-0123456789";
/// The HS256 key every test app signs with.
pub const JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-0123";

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Settings every test starts from: the embedded defaults, port 0, a fixed
/// API key and JWT secret. The caller's `QRLOGIN_*` variables are not read:
/// a `QRLOGIN_REDIS_URL` in the shell would otherwise move the whole suite
/// onto that Redis, a `QRLOGIN_TICKET_TTL` change what every test measures.
/// Tests that want Redis start their own server and say so in `spawn_app_with`.
pub fn test_settings() -> Args {
    let mut s = Args::from_flags([]).expect("the defaults parse");
    s.bind = "127.0.0.1:0".parse().unwrap();
    s.api_key = Some(API_KEY.into());
    s.jwt_secret = Some(JWT_SECRET.into());
    // Tests make many requests from one address; the limits' own tests turn them on.
    (s.rate_tickets, s.rate_sockets, s.rate_polls) = (0, 0, 0);
    s.rate_wechat = 0;
    (s.rate_events, s.rate_miniprogram, s.rate_renders) = (0, 0, 0);
    s
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub stop: StopHandle,
    pub task: tokio::task::JoinHandle<()>,
    pub state: qrlogin::web::AppState,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start the real server on port 0 with `tweak`ed settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Args)) -> TestApp {
    let mut settings = test_settings();
    tweak(&mut settings);
    spawn_settings(settings).await
}

pub async fn spawn_settings(settings: Args) -> TestApp {
    let app = Application::build(settings).await.expect("app builds");
    let port = app.port();
    let stop = app.stop_handle();
    let state = app.state();
    let task = tokio::spawn(async move {
        app.run(std::future::pending()).await.expect("serve");
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        stop,
        task,
        state,
    }
}

/// A ticket as the browser received it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: String,
    pub secret: String,
    pub body: Value,
}

impl Ticket {
    /// What its QR holds: the link a phone opens.
    pub fn link(&self) -> &str {
        self.body["qr_content"].as_str().unwrap()
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn create_ticket(&self) -> Ticket {
        self.create_ticket_with(json!({})).await
    }

    /// `POST /api/v1/tickets` with `body`: the answer, whatever it is.
    pub async fn post_ticket(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/tickets"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The trusted `GET /api/v1/tickets/{id}`: the answer, whatever it is.
    pub async fn trusted_get(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/tickets/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_ticket_with(&self, body: Value) -> Ticket {
        let r = self.post_ticket(body).await;
        assert_eq!(r.status(), 201, "create ticket");
        let body: Value = r.json().await.unwrap();
        Ticket {
            id: body["ticket"].as_str().unwrap().to_owned(),
            secret: body["secret"].as_str().unwrap().to_owned(),
            body,
        }
    }

    /// A trusted-API call.
    pub async fn trusted(&self, action: &str, ticket: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/tickets/{ticket}/{action}")))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn confirm(&self, ticket: &str, sub: &str) -> reqwest::Response {
        self.trusted("confirm", ticket, json!({ "sub": sub })).await
    }

    /// Open the ticket's WebSocket offering `protocols`.
    pub async fn ws_with(
        &self,
        ticket: &str,
        protocols: &str,
    ) -> Result<Socket, tungstenite::Error> {
        self.ws_handshake(ticket, protocols, None)
            .await
            .map(|(s, _)| s)
    }

    /// Open the ticket's WebSocket offering `protocols`, as a page on
    /// `origin` when given; answers the socket and the handshake response.
    pub async fn ws_handshake(
        &self,
        ticket: &str,
        protocols: &str,
        origin: Option<&str>,
    ) -> Result<(Socket, tungstenite::handshake::client::Response), tungstenite::Error> {
        let url = format!("ws://127.0.0.1:{}/api/v1/tickets/{ticket}/ws", self.port);
        let mut request = url.into_client_request().unwrap();
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(protocols).unwrap(),
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        tokio_tungstenite::connect_async(request).await
    }

    /// Open the WebSocket as the browser that holds the secret.
    pub async fn ws(&self, t: &Ticket) -> Socket {
        self.ws_with(&t.id, &format!("qrlogin.v1, secret.{}", t.secret))
            .await
            .expect("ws connects")
    }

    /// The phone taps Confirm on the confirm `page` it was shown for
    /// `ticket`, sent to this instance (the page may come from another).
    pub async fn tap_confirm(
        &self,
        phone: &reqwest::Client,
        ticket: &str,
        page: &str,
    ) -> reqwest::Response {
        phone
            .post(self.url(&format!("/m/{ticket}/confirm")))
            .form(&[("csrf", csrf_of(page))])
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The next JSON text frame, within 5 s.
pub async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame ok");
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close frame's code, within 5 s (skipping pings).
pub async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("close within 5 s");
        match msg {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("expected close, got {other:?}"),
            None | Some(Err(_)) => return None,
        }
    }
}

pub async fn send_close(socket: &mut Socket) {
    let _ = socket.send(Message::Close(None)).await;
}

/// The status of an error response and its contract body.
pub async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("a JSON error body");
    assert!(
        body["message"].is_string(),
        "error body has a message: {body}"
    );
    (
        status,
        body["error"].as_str().expect("error code").to_owned(),
    )
}

/// A phone with a cookie jar and `user_agent`.
pub fn phone(user_agent: &str) -> Phone {
    Phone(phone_client(user_agent).cookie_store(true).build().unwrap())
}

/// What every phone's client is: `user_agent`, and redirects left to the
/// test to follow (or not).
pub fn phone_client(user_agent: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
}

/// A phone: an HTTP client (its cookie is who it is) that opens links and
/// taps the buttons of the page it was shown. It is a `reqwest::Client`
/// too, for the tests that take a step by hand.
#[derive(Clone)]
pub struct Phone(pub reqwest::Client);

impl std::ops::Deref for Phone {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.0
    }
}

/// A page a phone was shown.
pub struct PhonePage {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
    /// Where it was shown: its forms' actions are relative to it.
    pub url: reqwest::Url,
}

impl PhonePage {
    /// The CSRF token of the confirm page's forms.
    pub fn csrf(&self) -> String {
        csrf_of(&self.html)
    }

    /// The absolute URL the page's `class` form (`confirm`, `deny`) posts to.
    pub fn action(&self, class: &str) -> String {
        let tag = self
            .html
            .split("<form ")
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap()])
            .find(|tag| tag.contains(&format!("class=\"{class}\"")))
            .unwrap_or_else(|| panic!("a {class} form on the page: {}", self.html));
        let action = tag.split("action=\"").nth(1).expect("an action");
        let action = action[..action.find('"').unwrap()]
            .replace("&#x2f;", "/")
            .replace("&amp;", "&");
        self.url.join(&action).unwrap().to_string()
    }
}

impl Phone {
    /// Open `link` (a QR's content, a one-time link, a callback).
    pub async fn open(&self, link: &str) -> PhonePage {
        let r = self.get(link).send().await.unwrap();
        PhonePage {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            url: r.url().clone(),
            html: r.text().await.unwrap(),
        }
    }

    /// Post `form` to the action of `page`'s `class` form, as this phone.
    pub async fn submit(
        &self,
        page: &PhonePage,
        class: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post(page.action(class))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Tap Confirm on `page` (which may have been shown to another phone).
    pub async fn confirm(&self, page: &PhonePage) -> reqwest::Response {
        self.submit(page, "confirm", &[("csrf", page.csrf().as_str())])
            .await
    }

    /// Type `name` into the page's name field, then tap Confirm.
    pub async fn confirm_as(&self, page: &PhonePage, name: &str) -> reqwest::Response {
        let csrf = page.csrf();
        self.submit(page, "confirm", &[("csrf", csrf.as_str()), ("name", name)])
            .await
    }

    /// Tap Deny on `page`.
    pub async fn deny(&self, page: &PhonePage) -> reqwest::Response {
        self.submit(page, "deny", &[("csrf", page.csrf().as_str())])
            .await
    }
}

pub const IPHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// WeChat's in-app browser on an iPhone.
pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";

/// The value of `<input name="csrf" value="…">` in a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The claims of a token the test app signed (HS256, audience `qrlogin`).
pub fn claims_of(token: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["qrlogin"]);
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

/// A ticket's status through the trusted API.
pub async fn status_of(app: &TestApp, id: &str) -> String {
    let r = app.trusted_get(id).await;
    let body: Value = r.json().await.unwrap();
    body["status"].as_str().unwrap().to_owned()
}
