//! A fake WeChat for the tests: a real axum server on port 0 in the test
//! process that speaks WeChat's wire formats as they are observed, not as
//! one would like them: HTTP 200 for errors with `{"errcode","errmsg"}` whose
//! errmsg ends with a changing `rid`, JSON served as `text/plain`, and empty
//! bodies now and then.
//!
//! Faults are injected per path (`busy_once`, `empty_once`, `fail_once`,
//! `delay`) by a layer in front of every route, so each endpoint module only
//! implements the happy rules of its API; `hits(path)` counts the calls
//! that reached a path.
//!
//! Endpoint modules: `oauth` (web authorization, website QR, userinfo),
//! `mp` (app access tokens, parametric QR, Mini Program, event pushes).
//! Each module keeps its state in a field of [`State`] and its routes in a
//! `routes()` merged in [`FakeWechat::start`].
#![allow(dead_code)]

pub mod mp;
pub mod oauth;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The Official Account the service is configured with.
pub const OA_APP_ID: &str = "wx0a00000000000001";
pub const OA_SECRET: &str = "oa-secret-0123456789abcdef01234567";
/// The Open Platform website application.
pub const WEB_APP_ID: &str = "wx0b00000000000002";
pub const WEB_SECRET: &str = "web-secret-0123456789abcdef0123456";

/// What the fake does to the next calls of one path.
#[derive(Debug, Default, Clone)]
pub struct Fault {
    /// Answer `{"errcode":-1,"errmsg":"system error"}` this many times.
    pub busy: usize,
    /// Answer an empty 200 (`text/html; charset=gbk`) this many times.
    pub empty: usize,
    /// Answer these errcodes first, one per call.
    pub errcodes: VecDeque<i64>,
    /// Hold every answer this long.
    pub delay: Option<Duration>,
}

/// Everything the fake knows; one lock for all of it.
#[derive(Debug, Default)]
pub struct State {
    /// appid → secret of every application WeChat knows.
    pub apps: HashMap<String, String>,
    pub faults: HashMap<String, Fault>,
    /// Calls that reached each path (faulted ones included).
    pub hits: HashMap<String, usize>,
    pub oauth: oauth::OauthState,
    pub mp: mp::MpState,
}

pub type Shared = Arc<Mutex<State>>;

pub struct FakeWechat {
    /// `http://127.0.0.1:{port}`: both the API base and the open base.
    pub base: String,
    pub state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWechat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWechat {
    /// Start a fake knowing the Official Account and the website app.
    pub async fn start() -> FakeWechat {
        let mut state = State::default();
        state.apps.insert(OA_APP_ID.into(), OA_SECRET.into());
        state.apps.insert(WEB_APP_ID.into(), WEB_SECRET.into());
        let state: Shared = Arc::new(Mutex::new(state));
        let router = Router::new()
            .merge(oauth::routes())
            .merge(mp::routes())
            .layer(axum::middleware::from_fn_with_state(state.clone(), faults))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FakeWechat {
            base: format!("http://127.0.0.1:{port}"),
            state,
            task,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Point a service's settings at this fake, with its credentials.
    pub fn configure(&self, s: &mut qrlogin::config::Args) {
        s.wechat_api_base = self.base.clone();
        s.wechat_open_base = self.base.clone();
        s.wechat_app_id = Some(OA_APP_ID.into());
        s.wechat_app_secret = Some(OA_SECRET.into());
        s.wechat_web_app_id = Some(WEB_APP_ID.into());
        s.wechat_web_app_secret = Some(WEB_SECRET.into());
    }

    fn fault(&self, path: &str) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.faults.entry(path.to_owned()).or_default();
        state
    }

    /// The next call of `path` answers -1 (system busy).
    pub fn busy_once(&self, path: &str) {
        self.fault(path).faults.get_mut(path).unwrap().busy += 1;
    }

    /// The next call of `path` answers an empty body.
    pub fn empty_once(&self, path: &str) {
        self.fault(path).faults.get_mut(path).unwrap().empty += 1;
    }

    /// The next call of `path` answers `errcode`.
    pub fn fail_once(&self, path: &str, errcode: i64) {
        self.fault(path)
            .faults
            .get_mut(path)
            .unwrap()
            .errcodes
            .push_back(errcode);
    }

    /// Every call of `path` is held `delay` before it is answered.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.fault(path).faults.get_mut(path).unwrap().delay = Some(delay);
    }

    /// How many calls reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.lock().hits.get(path).copied().unwrap_or(0)
    }
}

/// The layer in front of every route: count, then apply the path's faults.
async fn faults(AxumState(state): AxumState<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let (delay, answer) = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        match s.faults.get_mut(&path) {
            None => (None, None),
            Some(f) => {
                let answer = if f.busy > 0 {
                    f.busy -= 1;
                    Some(errcode(-1, "system error"))
                } else if f.empty > 0 {
                    f.empty -= 1;
                    Some(empty_body())
                } else {
                    f.errcodes
                        .pop_front()
                        .map(|code| errcode(code, errmsg_of(code)))
                };
                (f.delay, answer)
            }
        }
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Some(answer) => answer,
        None => next.run(request).await,
    }
}

/// JSON served the way WeChat serves sns/*: HTTP 200, `text/plain`.
pub fn text_json(value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        value.to_string(),
    )
        .into_response()
}

/// A WeChat error: HTTP 200, `text/plain`, errmsg with a fresh `rid`.
pub fn errcode(code: i64, message: &str) -> Response {
    text_json(serde_json::json!({
        "errcode": code,
        "errmsg": format!("{message}, rid: {}", rid()),
    }))
}

/// The empty 200 WeChat has been seen to answer for bad credentials.
pub fn empty_body() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=gbk")],
        Body::empty(),
    )
        .into_response()
}

/// A request id like WeChat's: `668f2aa4-51c08c03-3d141241`.
pub fn rid() -> String {
    let r: [u32; 3] = rand::random();
    format!("{:08x}-{:08x}-{:08x}", r[0], r[1], r[2])
}

/// WeChat's errmsg for the codes the fake answers.
pub fn errmsg_of(code: i64) -> &'static str {
    match code {
        -1 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40013 => "invalid appid",
        40029 => "invalid code",
        40125 => "invalid appsecret",
        40163 => "code been used",
        41008 => "missing code",
        42001 => "access_token expired",
        42003 => "code expired",
        45011 => "api minute-quota reach limit mustslower retry next minute",
        48001 => "api unauthorized",
        _ => "error",
    }
}

/// A random string of `len` characters of WeChat's id alphabet.
pub fn random_id(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
