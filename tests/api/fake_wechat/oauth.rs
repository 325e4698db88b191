//! WeChat web authorization as the fake plays it:
//! - `GET /connect/oauth2/authorize` (inside WeChat's browser) and
//!   `GET /connect/qrconnect` (the website app's QR; the fake plays the
//!   person scanning and approving at once) answer 302 to the
//!   `redirect_uri` with `code` and `state`, or with `state` alone when the
//!   person refuses;
//! - `GET /sns/oauth2/access_token` exchanges a code: single use (40163 the
//!   second time), expiring (42003), unknown (40029), bound to its app;
//! - `GET /sns/userinfo` answers today's field set (sex 0, empty regions,
//!   `privilege: []`, `unionid` only when the app is bound to an Open
//!   Platform account).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{FakeWechat, Shared, errcode, errmsg_of, random_id, text_json};

/// A person with WeChat.
#[derive(Debug, Clone)]
pub struct User {
    /// Stable seed of the person's ids.
    pub key: String,
    pub nickname: String,
    pub headimgurl: String,
    /// Apps bound to an Open Platform account give a unionid.
    pub bound: bool,
    /// A "snapshot" virtual user (ids not real).
    pub snapshot: bool,
}

impl Default for User {
    fn default() -> Self {
        User {
            key: "alice".into(),
            nickname: "Alice 微信".into(),
            headimgurl: "https://thirdwx.qlogo.cn/mmopen/vi_32/alice/132".into(),
            bound: true,
            snapshot: false,
        }
    }
}

impl User {
    /// The person's openid for `appid` (28 chars, different per app).
    pub fn openid(&self, appid: &str) -> String {
        let h = hex::encode(Sha256::digest(format!("{appid}/{}", self.key)));
        format!("o{}", &h[..27])
    }

    /// The person's unionid (the same for every app), when bound.
    pub fn unionid(&self) -> Option<String> {
        self.bound.then(|| {
            let h = hex::encode(Sha256::digest(format!("union/{}", self.key)));
            format!("u{}", &h[..27])
        })
    }
}

#[derive(Debug)]
struct Code {
    appid: String,
    user: User,
    scope: String,
    issued: Instant,
    ttl: Duration,
    used: bool,
}

#[derive(Debug)]
struct Grant {
    appid: String,
    user: User,
    scope: String,
}

#[derive(Debug, Default)]
pub struct OauthState {
    /// Who is logged in to WeChat on the phone.
    pub user: User,
    /// The next authorization is refused by the person.
    pub refuse_next: bool,
    codes: HashMap<String, Code>,
    tokens: HashMap<String, Grant>,
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/connect/oauth2/authorize", get(authorize))
        .route("/connect/qrconnect", get(qrconnect))
        .route("/sns/oauth2/access_token", get(access_token))
        .route("/sns/userinfo", get(userinfo))
}

impl FakeWechat {
    /// The person whose phone scans from now on.
    pub fn set_user(&self, user: User) {
        self.lock().oauth.user = user;
    }

    /// The next authorization is refused.
    pub fn refuse_next(&self) {
        self.lock().oauth.refuse_next = true;
    }

    /// A code for `appid` and `scope`, as WeChat would put in a redirect.
    pub fn issue_code(&self, appid: &str, scope: &str) -> String {
        let mut s = self.lock();
        let user = s.oauth.user.clone();
        issue(&mut s.oauth, appid, user, scope)
    }

    /// Every user access token handed out so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().oauth.tokens.keys().cloned().collect()
    }

    /// Make `code` older than its lifetime.
    pub fn expire_code(&self, code: &str) {
        let mut s = self.lock();
        let c = s.oauth.codes.get_mut(code).expect("a code the fake issued");
        c.ttl = Duration::ZERO;
    }
}

fn issue(state: &mut OauthState, appid: &str, user: User, scope: &str) -> String {
    let code = random_id(32);
    // Official Account codes live 5 minutes, website-app codes 10.
    let ttl = if scope == "snsapi_login" { 600 } else { 300 };
    state.codes.insert(
        code.clone(),
        Code {
            appid: appid.to_owned(),
            user,
            scope: scope.to_owned(),
            issued: Instant::now(),
            ttl: Duration::from_secs(ttl),
            used: false,
        },
    );
    code
}

type Params = Query<HashMap<String, String>>;

/// WeChat shows its errors to the person on its own page (no redirect).
fn wechat_page_error(code: u32, what: &str) -> Response {
    (
        StatusCode::OK,
        Html(format!(
            "<!doctype html><title>微信</title><p class=\"err\">{code} {what}</p>"
        )),
    )
        .into_response()
}

fn redirect_back(redirect_uri: &str, code: Option<&str>, state: &str) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return wechat_page_error(10011, "redirect_uri 参数错误");
    };
    {
        let mut q = url.query_pairs_mut();
        if let Some(code) = code {
            q.append_pair("code", code);
        }
        q.append_pair("state", state);
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

/// Shared checks of both connect pages: (appid, redirect_uri, scope,
/// state), or WeChat's error page.
fn check_connect(
    s: &super::State,
    q: &HashMap<String, String>,
    scopes: &[&str],
) -> Result<(String, String, String, String), Box<Response>> {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let appid = get("appid");
    if appid.is_empty() {
        return Err(Box::new(wechat_page_error(10013, "appid 参数错误")));
    }
    if !s.apps.contains_key(appid) {
        return Err(Box::new(wechat_page_error(
            10016,
            "不支持微信开放平台的Appid",
        )));
    }
    if get("redirect_uri").is_empty() {
        return Err(Box::new(wechat_page_error(10011, "redirect_uri 参数错误")));
    }
    if get("response_type") != "code" {
        return Err(Box::new(wechat_page_error(10004, "response_type 参数错误")));
    }
    if !scopes.contains(&get("scope")) {
        return Err(Box::new(wechat_page_error(
            10005,
            "此公众号并没有这些scope的权限",
        )));
    }
    let state = get("state");
    if state.len() > 128 || !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Box::new(wechat_page_error(10012, "state 参数错误")));
    }
    Ok((
        appid.to_owned(),
        get("redirect_uri").to_owned(),
        get("scope").to_owned(),
        state.to_owned(),
    ))
}

/// Inside WeChat: the person approves (or refuses) and is sent back.
async fn authorize(State(state): State<Shared>, Query(q): Params) -> Response {
    let mut s = state.lock().unwrap();
    let (appid, redirect_uri, scope, st) =
        match check_connect(&s, &q, &["snsapi_base", "snsapi_userinfo"]) {
            Ok(ok) => ok,
            Err(page) => return *page,
        };
    // Only the consent page (snsapi_userinfo) can be refused.
    if s.oauth.refuse_next && scope == "snsapi_userinfo" {
        s.oauth.refuse_next = false;
        return redirect_back(&redirect_uri, None, &st);
    }
    let user = s.oauth.user.clone();
    let code = issue(&mut s.oauth, &appid, user, &scope);
    redirect_back(&redirect_uri, Some(&code), &st)
}

/// The website app's QR page. The fake plays the person scanning it with
/// the phone and approving at once: the browser is sent back with a code
/// (or with `state` alone when refused, as older WeChat did); embedded
/// with `self_redirect=false`, the top page is sent there instead.
async fn qrconnect(State(state): State<Shared>, Query(q): Params) -> Response {
    let mut s = state.lock().unwrap();
    let (appid, redirect_uri, scope, st) = match check_connect(&s, &q, &["snsapi_login"]) {
        Ok(ok) => ok,
        Err(page) => return *page,
    };
    if s.oauth.refuse_next {
        s.oauth.refuse_next = false;
        return redirect_back(&redirect_uri, None, &st);
    }
    let user = s.oauth.user.clone();
    let code = issue(&mut s.oauth, &appid, user, &scope);
    let back = redirect_back(&redirect_uri, Some(&code), &st);
    if q.get("self_redirect").map(String::as_str) == Some("false") {
        return top_redirect(back);
    }
    back
}

/// Embedded with wxLogin.js's `self_redirect: false`, WeChat's page sends
/// the whole page (not its frame) to the callback, by script.
fn top_redirect(back: Response) -> Response {
    let Some(to) = back
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return back;
    };
    let to = serde_json::to_string(to).unwrap();
    Html(format!(
        "<!doctype html><script>top.location.href = {to};</script>"
    ))
    .into_response()
}

async fn access_token(State(state): State<Shared>, Query(q): Params) -> Response {
    let mut s = state.lock().unwrap();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let (appid, secret, code) = (get("appid"), get("secret"), get("code"));
    match s.apps.get(appid) {
        None => return errcode(40013, errmsg_of(40013)),
        Some(known) if known != secret => return errcode(40125, errmsg_of(40125)),
        Some(_) => {}
    }
    if get("grant_type") != "authorization_code" {
        return errcode(40002, errmsg_of(40002));
    }
    if code.is_empty() {
        return errcode(41008, errmsg_of(41008));
    }
    let Some(c) = s.oauth.codes.get_mut(code) else {
        return errcode(40029, errmsg_of(40029));
    };
    if c.appid != appid {
        return errcode(40029, errmsg_of(40029));
    }
    if c.used {
        return errcode(40163, errmsg_of(40163));
    }
    if c.issued.elapsed() >= c.ttl {
        return errcode(42003, errmsg_of(42003));
    }
    c.used = true;
    let (user, scope, appid) = (c.user.clone(), c.scope.clone(), c.appid.clone());
    let token = random_id(88);
    let mut body = json!({
        "access_token": token,
        "expires_in": 7200,
        "refresh_token": random_id(88),
        "openid": user.openid(&appid),
        "scope": scope,
    });
    // unionid only with a scope that shows the profile.
    if scope != "snsapi_base" {
        if let Some(unionid) = user.unionid() {
            body["unionid"] = json!(unionid);
        }
    }
    if user.snapshot {
        body["is_snapshotuser"] = json!(1);
    }
    s.oauth.tokens.insert(token, Grant { appid, user, scope });
    text_json(body)
}

async fn userinfo(State(state): State<Shared>, Query(q): Params) -> Response {
    let s = state.lock().unwrap();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let Some(grant) = s.oauth.tokens.get(get("access_token")) else {
        return errcode(40001, errmsg_of(40001));
    };
    if grant.user.openid(&grant.appid) != get("openid") {
        return errcode(40003, errmsg_of(40003));
    }
    if grant.scope == "snsapi_base" {
        return errcode(48001, errmsg_of(48001));
    }
    let user = &grant.user;
    let mut body = json!({
        "openid": user.openid(&grant.appid),
        "nickname": user.nickname,
        "sex": 0,
        "language": "",
        "city": "",
        "province": "",
        "country": "",
        "headimgurl": user.headimgurl,
        "privilege": [],
    });
    if let Some(unionid) = user.unionid() {
        body["unionid"] = json!(unionid);
    }
    text_json(body)
}
