//! The app-token side of WeChat as the fake plays it, and WeChat's event
//! push seen from WeChat's end:
//! - `POST /cgi-bin/stable_token`: app access tokens that expire; normal
//!   mode hands back the current token while it lives; a token revoked by
//!   [`FakeWechat::revoke_access_tokens`] (another system forced a refresh)
//!   answers 40001 wherever it is used, an expired one 42001;
//! - `POST /cgi-bin/qrcode/create`: temporary parametric codes, checking
//!   `action_name`, `scene_str` (1..64) and `expire_seconds` (≤ 30 days);
//! - `GET /sns/jscode2session`: single-use `wx.login` codes (40029 unknown
//!   or expired, 40163 used);
//! - `POST /wxa/getwxacodeunlimit`: image bytes for a good scene and page,
//!   JSON errors otherwise (40169 scene, 41030 page);
//! - [`Pusher`]: signs and (in safe mode) encrypts event pushes exactly as
//!   WeChat does, and opens our encrypted replies. It is written from
//!   WeChat's documentation with the cipher crates directly, not with the
//!   service's own crypto module, so the two check each other.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aes::Aes256;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::oauth::User;
use super::{FakeWechat, Shared, errcode, errmsg_of, random_id, text_json};

/// The Mini Program the service is configured with.
pub const MINI_APP_ID: &str = "wx0c00000000000003";
pub const MINI_SECRET: &str = "mini-secret-0123456789abcdef012345";
/// The Official Account's original id (`ToUserName` of its pushes).
pub const OA_ORIGINAL_ID: &str = "gh_0123456789ab";
/// The push signature token and safe-mode key configured on both sides.
pub const PUSH_TOKEN: &str = "qrlogin-push-token";
pub const AES_KEY: &str = "kWxPEKm4dP3qKq7nG8sH2r5tY9uV0wXzA1bC2dE3fG4";

pub const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
pub const QRCODE_CREATE: &str = "/cgi-bin/qrcode/create";
pub const JSCODE2SESSION: &str = "/sns/jscode2session";
pub const WXACODE: &str = "/wxa/getwxacodeunlimit";

#[derive(Debug)]
struct AppToken {
    appid: String,
    expires: Instant,
    revoked: bool,
}

#[derive(Debug)]
struct JsCode {
    user: User,
    issued: Instant,
    used: bool,
}

/// A parametric code the fake made.
#[derive(Debug, Clone)]
pub struct CreatedQr {
    pub scene_str: String,
    pub expire_seconds: u64,
    pub url: String,
}

#[derive(Debug)]
pub struct MpState {
    /// Lifetime of new app access tokens.
    pub token_ttl: Duration,
    tokens: HashMap<String, AppToken>,
    qrs: Vec<CreatedQr>,
    js_codes: HashMap<String, JsCode>,
    /// Every `session_key` handed out.
    session_keys: Vec<String>,
    /// Pages of the published Mini Program (others: 41030).
    pub pages: Vec<String>,
}

impl Default for MpState {
    fn default() -> Self {
        MpState {
            token_ttl: Duration::from_secs(7200),
            tokens: HashMap::new(),
            qrs: Vec::new(),
            js_codes: HashMap::new(),
            session_keys: Vec::new(),
            pages: vec!["pages/login/login".into()],
        }
    }
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(STABLE_TOKEN, post(stable_token))
        .route(QRCODE_CREATE, post(qrcode_create))
        .route(JSCODE2SESSION, get(jscode2session))
        .route(WXACODE, post(wxacode))
}

impl FakeWechat {
    /// Also configure the event push (token, safe-mode key) and the Mini
    /// Program.
    pub fn configure_mp(&self, s: &mut qrlogin::config::Args) {
        self.configure(s);
        s.wechat_token = Some(PUSH_TOKEN.into());
        s.wechat_encoding_aes_key = Some(AES_KEY.into());
        s.miniprogram_app_id = Some(MINI_APP_ID.into());
        s.miniprogram_app_secret = Some(MINI_SECRET.into());
        self.lock()
            .apps
            .insert(MINI_APP_ID.into(), MINI_SECRET.into());
    }

    /// Every live app token stops working (40001), as when another system
    /// forces a refresh; the next `stable_token` hands out a new one.
    pub fn revoke_access_tokens(&self) {
        for t in self.lock().mp.tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// Every app token handed out so far has expired (42001).
    pub fn expire_access_tokens(&self) {
        for t in self.lock().mp.tokens.values_mut() {
            t.expires = Instant::now();
        }
    }

    /// Every app access token handed out, live or not.
    pub fn app_tokens(&self) -> Vec<String> {
        self.lock().mp.tokens.keys().cloned().collect()
    }

    /// Every `session_key` `jscode2session` handed out.
    pub fn session_keys(&self) -> Vec<String> {
        self.lock().mp.session_keys.clone()
    }

    /// The parametric codes made so far.
    pub fn created_qrs(&self) -> Vec<CreatedQr> {
        self.lock().mp.qrs.clone()
    }

    /// What `wx.login` gives the Mini Program of `user`.
    pub fn wx_login(&self, user: &User) -> String {
        let code = random_id(32);
        self.lock().mp.js_codes.insert(
            code.clone(),
            JsCode {
                user: user.clone(),
                issued: Instant::now(),
                used: false,
            },
        );
        code
    }
}

type Params = Query<HashMap<String, String>>;

/// A JSON body, or WeChat's 47001.
fn json_body(body: &Bytes) -> Result<Value, i64> {
    serde_json::from_slice(body).map_err(|_| 47001)
}

/// WeChat's answer to an errcode.
fn refuse(code: i64) -> Response {
    let message = match code {
        41001 => "access_token missing",
        47001 => "data format error",
        other => errmsg_of(other),
    };
    errcode(code, message)
}

/// The app of a live token, or the errcode of a bad one.
fn check_token(s: &super::State, q: &HashMap<String, String>) -> Result<String, i64> {
    let Some(token) = q.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(41001);
    };
    match s.mp.tokens.get(token) {
        None => Err(40001),
        Some(t) if t.revoked => Err(40001),
        Some(t) if Instant::now() >= t.expires => Err(42001),
        Some(t) => Ok(t.appid.clone()),
    }
}

async fn stable_token(State(state): State<Shared>, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(code) => return refuse(code),
    };
    let get = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    if get("grant_type") != "client_credential" {
        return errcode(40002, "invalid grant_type");
    }
    let mut s = state.lock().unwrap();
    match s.apps.get(get("appid")) {
        None => return errcode(40013, "invalid appid"),
        Some(secret) if secret != get("secret") => return errcode(40125, "invalid appsecret"),
        Some(_) => {}
    }
    let appid = get("appid").to_owned();
    let force = body.get("force_refresh").and_then(Value::as_bool) == Some(true);
    let now = Instant::now();
    let current =
        s.mp.tokens
            .iter()
            .find(|(_, t)| t.appid == appid && !t.revoked && t.expires > now)
            .map(|(k, t)| (k.clone(), t.expires));
    let (token, expires) = match current {
        Some(found) if !force => found,
        _ => {
            let token = random_id(136);
            let expires = now + s.mp.token_ttl;
            s.mp.tokens.insert(
                token.clone(),
                AppToken {
                    appid,
                    expires,
                    revoked: false,
                },
            );
            (token, expires)
        }
    };
    text_json(json!({
        "access_token": token,
        "expires_in": expires.saturating_duration_since(now).as_secs(),
    }))
}

async fn qrcode_create(State(state): State<Shared>, Query(q): Params, body: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(code) = check_token(&s, &q) {
        return refuse(code);
    }
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(code) => return refuse(code),
    };
    if body["action_name"] != "QR_STR_SCENE" {
        return errcode(40052, "invalid action name");
    }
    let Some(scene_str) = body["action_info"]["scene"]["scene_str"].as_str() else {
        return errcode(40053, "invalid action info, please check document");
    };
    if scene_str.is_empty() || scene_str.chars().count() > 64 {
        return errcode(40053, "invalid action info, please check document");
    }
    let expire_seconds = match body.get("expire_seconds") {
        None => 60,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=2_592_000).contains(&n) => n,
            _ => return errcode(40053, "invalid action info, please check document"),
        },
    };
    let url = format!("http://weixin.qq.com/q/{}", random_id(22));
    s.mp.qrs.push(CreatedQr {
        scene_str: scene_str.to_owned(),
        expire_seconds,
        url: url.clone(),
    });
    text_json(json!({
        "ticket": format!("gQH47joAAAAAAAAAASxodHRw{}", random_id(40)),
        "expire_seconds": expire_seconds,
        "url": url,
    }))
}

async fn jscode2session(State(state): State<Shared>, Query(q): Params) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let mut s = state.lock().unwrap();
    if get("appid") != MINI_APP_ID {
        return errcode(40013, "invalid appid");
    }
    if s.apps.get(MINI_APP_ID).map(String::as_str) != Some(get("secret")) {
        return errcode(40125, "invalid appsecret");
    }
    if get("grant_type") != "authorization_code" {
        return errcode(40002, "invalid grant_type");
    }
    let Some(code) = s.mp.js_codes.get_mut(get("js_code")) else {
        return errcode(40029, "invalid code");
    };
    if code.used {
        return errcode(40163, "code been used");
    }
    if code.issued.elapsed() > Duration::from_secs(300) {
        return errcode(40029, "invalid code");
    }
    code.used = true;
    let session_key = STANDARD.encode(random_id(16));
    let mut answer = json!({
        "openid": code.user.openid(MINI_APP_ID),
        "session_key": session_key,
    });
    if let Some(unionid) = code.user.unionid() {
        answer["unionid"] = json!(unionid);
    }
    s.mp.session_keys.push(session_key);
    text_json(answer)
}

/// Scene characters WeChat allows in a Mini Program code.
fn scene_ok(scene: &str) -> bool {
    !scene.is_empty()
        && scene.len() <= 32
        && scene
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&'()*+,/:;=?@-._~".contains(&b))
}

async fn wxacode(State(state): State<Shared>, Query(q): Params, body: Bytes) -> Response {
    let s = state.lock().unwrap();
    match check_token(&s, &q) {
        Ok(appid) if appid == MINI_APP_ID => {}
        Ok(_) => {
            return errcode(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        Err(code) => return refuse(code),
    }
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(code) => return refuse(code),
    };
    let scene = body["scene"].as_str().unwrap_or("");
    if !scene_ok(scene) {
        return errcode(
            40169,
            "invalid length for scene, or the data is not json string",
        );
    }
    let page = body["page"].as_str().unwrap_or("");
    if !page.is_empty() && !s.mp.pages.iter().any(|p| p == page) {
        return errcode(41030, "invalid page");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "image/jpeg")],
        wxacode_bytes(scene, page),
    )
        .into_response()
}

/// The fake's "image": JPEG markers around the scene and page, so a test
/// can tell the bytes came through untouched.
pub fn wxacode_bytes(scene: &str, page: &str) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
    bytes.extend_from_slice(format!("wxacode scene={scene} page={page}").as_bytes());
    bytes.extend_from_slice(&[0xff, 0xd9]);
    bytes
}

// ---------- WeChat's side of the event push ----------

/// SHA-1 hex of the sorted parts, joined: WeChat's signature recipe.
pub fn sha1_sorted(parts: &[&str]) -> String {
    let mut parts = parts.to_vec();
    parts.sort();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// WeChat pushing to one server URL, as configured in its admin console.
pub struct Pusher {
    pub token: String,
    pub aes_key: [u8; 32],
    pub app_id: String,
}

impl Default for Pusher {
    fn default() -> Self {
        Pusher::new(PUSH_TOKEN, AES_KEY, super::OA_APP_ID)
    }
}

/// A push ready to send: the query string and the body.
pub struct Push {
    pub query: String,
    pub body: String,
    pub timestamp: String,
    pub nonce: String,
}

impl Pusher {
    pub fn new(token: &str, encoding_aes_key: &str, app_id: &str) -> Self {
        // EncodingAESKey + "=" is the base64 of the AES key.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let key = engine.decode(format!("{encoding_aes_key}=")).unwrap();
        Pusher {
            token: token.into(),
            aes_key: key.try_into().unwrap(),
            app_id: app_id.into(),
        }
    }

    fn stamp() -> (String, String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now.to_string(), rand::random::<u32>().to_string())
    }

    /// A plain-mode push of `xml`.
    pub fn plain(&self, xml: &str, openid: &str) -> Push {
        let (timestamp, nonce) = Self::stamp();
        self.plain_at(xml, openid, &timestamp, &nonce)
    }

    pub fn plain_at(&self, xml: &str, openid: &str, timestamp: &str, nonce: &str) -> Push {
        let signature = sha1_sorted(&[&self.token, timestamp, nonce]);
        Push {
            query: format!(
                "signature={signature}&timestamp={timestamp}&nonce={nonce}&openid={openid}"
            ),
            body: xml.to_owned(),
            timestamp: timestamp.into(),
            nonce: nonce.into(),
        }
    }

    /// A safe-mode push of `xml`: encrypted, signed twice.
    pub fn safe(&self, xml: &str, openid: &str) -> Push {
        let (timestamp, nonce) = Self::stamp();
        self.safe_at(xml, openid, &timestamp, &nonce)
    }

    /// A safe-mode push of `xml` under a given timestamp and nonce.
    pub fn safe_at(&self, xml: &str, openid: &str, timestamp: &str, nonce: &str) -> Push {
        let encrypt = self.encrypt(xml);
        let signature = sha1_sorted(&[&self.token, timestamp, nonce]);
        let msg_signature = sha1_sorted(&[&self.token, timestamp, nonce, &encrypt]);
        Push {
            query: format!(
                "signature={signature}&timestamp={timestamp}&nonce={nonce}&openid={openid}\
                 &encrypt_type=aes&msg_signature={msg_signature}"
            ),
            body: format!(
                "<xml><ToUserName><![CDATA[{OA_ORIGINAL_ID}]]></ToUserName>\
                 <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            ),
            timestamp: timestamp.into(),
            nonce: nonce.into(),
        }
    }

    /// random(16) ‖ len ‖ xml ‖ appid, PKCS#7 to 32, AES-256-CBC, base64.
    pub fn encrypt(&self, xml: &str) -> String {
        let mut plain: Vec<u8> = (0..16).map(|_| rand::random::<u8>()).collect();
        plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
        plain.extend_from_slice(xml.as_bytes());
        plain.extend_from_slice(self.app_id.as_bytes());
        let pad = 32 - plain.len() % 32;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let iv: [u8; 16] = self.aes_key[..16].try_into().unwrap();
        cbc::Encryptor::<Aes256>::new(&self.aes_key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .unwrap();
        STANDARD.encode(plain)
    }

    /// Our encrypted reply, checked as WeChat checks it: its MsgSignature
    /// over its TimeStamp, Nonce and Encrypt; then the XML inside.
    pub fn open_reply(&self, reply: &str) -> String {
        let encrypt = field(reply, "Encrypt").expect("an Encrypt field");
        let signature = field(reply, "MsgSignature").expect("a MsgSignature");
        let timestamp = field(reply, "TimeStamp").expect("a TimeStamp");
        let nonce = field(reply, "Nonce").expect("a Nonce");
        assert_eq!(
            signature,
            sha1_sorted(&[&self.token, &timestamp, &nonce, &encrypt]),
            "the reply's MsgSignature"
        );
        let mut raw = STANDARD.decode(&encrypt).unwrap();
        let iv: [u8; 16] = self.aes_key[..16].try_into().unwrap();
        let plain = cbc::Decryptor::<Aes256>::new(&self.aes_key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut raw)
            .unwrap();
        let pad = *plain.last().unwrap() as usize;
        assert!((1..=32).contains(&pad), "PKCS#7 to 32-byte blocks");
        let content = &plain[..plain.len() - pad];
        let len = u32::from_be_bytes(content[16..20].try_into().unwrap()) as usize;
        let xml = String::from_utf8(content[20..20 + len].to_vec()).unwrap();
        assert_eq!(&content[20 + len..], self.app_id.as_bytes(), "the appid");
        xml
    }
}

/// The text of `<name>` in a flat XML document (CDATA sections joined).
pub fn field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let raw = &xml[start..end];
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("<![CDATA[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 9..];
        let j = after.find("]]>")?;
        out.push_str(&after[..j]);
        rest = &after[j + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A `SCAN` event (already following) of `openid` for `scene`.
pub fn scan_event(openid: &str, scene: &str, create_time: u64) -> String {
    event_xml(openid, "SCAN", scene, create_time)
}

/// A `subscribe` event (following by scanning) of `openid` for `scene`.
pub fn subscribe_event(openid: &str, scene: &str, create_time: u64) -> String {
    event_xml(
        openid,
        "subscribe",
        &format!("qrscene_{scene}"),
        create_time,
    )
}

fn event_xml(openid: &str, event: &str, key: &str, create_time: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{OA_ORIGINAL_ID}]]></ToUserName>\
         <FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[{event}]]></Event><EventKey><![CDATA[{key}]]></EventKey>\
         <Ticket><![CDATA[gQH47joAAAAAAAAAASxodHRw{}]]></Ticket></xml>",
        random_id(20)
    )
}
