//! The two WeChat flows in which WeChat sends a browser back with a `code`:
//! `wechat-oauth` (Official Account web authorization, inside WeChat's
//! in-app browser on the phone) and `wechat-web` (Open Platform website
//! application, WeChat's QR on the computer).
//!
//! Both exchange the code at `/sns/oauth2/access_token` exactly once: the
//! code's hash is claimed in the store before the exchange, so a replayed
//! callback (a reload, a double redirect, an attacker) finds it taken and
//! never scans or confirms a second time.

use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{WechatClient, WechatError};
use crate::config::OauthScope;
use crate::ticket::{Identity, Provider, Status, Ticket, TicketId, UserInfo, now_ms};
use crate::web::AppState;
use crate::web::pages::Message;

/// Where WeChat sends the phone back (`wechat-oauth`).
pub const OAUTH_CALLBACK: &str = "/wechat/oauth/callback";
/// Where WeChat sends the computer's browser back (`wechat-web`).
pub const WEB_CALLBACK: &str = "/wechat/web/callback";

pub fn scope_name(scope: OauthScope) -> &'static str {
    match scope {
        OauthScope::SnsapiUserinfo => "snsapi_userinfo",
        OauthScope::SnsapiBase => "snsapi_base",
    }
}

/// `…/connect/oauth2/authorize?…#wechat_redirect` for ticket `id`: what
/// `/m/{ticket}` redirects WeChat's in-app browser to.
pub fn authorize_url(app: &AppState, id: &TicketId) -> String {
    let s = &app.settings;
    connect_url(
        &app.wechat,
        "/connect/oauth2/authorize",
        s.wechat_app_id.as_deref().unwrap_or(""),
        &format!("{}{OAUTH_CALLBACK}", s.public_url()),
        scope_name(s.wechat_oauth_scope),
        id,
    )
}

/// `…/connect/qrconnect?…#wechat_redirect` for ticket `id`: WeChat's own QR
/// page for the website application (`wechat-web`).
pub fn qrconnect_url(app: &AppState, id: &TicketId) -> String {
    let s = &app.settings;
    connect_url(
        &app.wechat,
        "/connect/qrconnect",
        s.wechat_web_app_id.as_deref().unwrap_or(""),
        &format!("{}{WEB_CALLBACK}", s.public_url()),
        "snsapi_login",
        id,
    )
}

/// WeChat wants its parameters in this order and the `#wechat_redirect`
/// fragment present; `redirect_uri` is URL-encoded.
fn connect_url(
    client: &WechatClient,
    path: &str,
    appid: &str,
    redirect_uri: &str,
    scope: &str,
    state: &TicketId,
) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("appid", appid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("state", state.as_str())
        .finish();
    format!("{}?{query}#wechat_redirect", client.open_url(path))
}

/// `/sns/oauth2/access_token`'s answer. The access token stays in memory
/// only for the `userinfo` call; it is never stored, logged or printed.
#[derive(Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub openid: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub unionid: Option<String>,
    /// 1 for WeChat's "snapshot" virtual users, whose ids are not real.
    #[serde(default)]
    pub is_snapshotuser: Option<i64>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("access_token", &"…")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// Whether `sns/userinfo` may be asked with this token.
    pub fn allows_userinfo(&self) -> bool {
        self.scope
            .split(',')
            .any(|s| matches!(s.trim(), "snsapi_userinfo" | "snsapi_login"))
    }
}

/// `/sns/userinfo`'s answer (only what a login uses).
#[derive(Debug, Deserialize)]
pub struct Profile {
    pub openid: String,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub headimgurl: Option<String>,
    #[serde(default)]
    pub unionid: Option<String>,
}

/// Exchange a code for a user access token.
pub async fn exchange_code(
    client: &WechatClient,
    appid: &str,
    secret: &str,
    code: &str,
) -> Result<AccessToken, WechatError> {
    client
        .get_json(
            "/sns/oauth2/access_token",
            &[
                ("appid", appid),
                ("secret", secret),
                ("code", code),
                ("grant_type", "authorization_code"),
            ],
        )
        .await
}

/// The person's profile (needs `snsapi_userinfo` or `snsapi_login`).
pub async fn userinfo(client: &WechatClient, token: &AccessToken) -> Result<Profile, WechatError> {
    client
        .get_json(
            "/sns/userinfo",
            &[
                ("access_token", token.access_token.as_str()),
                ("openid", token.openid.as_str()),
                ("lang", "zh_CN"),
            ],
        )
        .await
}

/// The store key that marks `code` as exchanged (its hash: the store never
/// holds a usable code).
pub fn code_key(code: &str) -> String {
    format!(
        "wxcode:{}",
        hex::encode(&Sha256::digest(code.as_bytes())[..16])
    )
}

/// The query WeChat sends a browser back with.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

impl Callback {
    /// The ticket named by `state`, if it can be one.
    fn ticket_id(&self) -> Option<TicketId> {
        self.state.as_deref()?.parse().ok()
    }

    /// The code, when there is a plausible one (WeChat's are short).
    fn code(&self) -> Option<&str> {
        self.code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty() && c.len() <= 512)
    }
}

/// The store key naming the phone (its binding) that first opened `id`'s
/// page and went to WeChat.
fn opener_key(id: &TicketId) -> String {
    format!("wechat-oauth:opener:{id}")
}

/// Record `binding` as the phone that opened pending `ticket` on its way to
/// WeChat, unless another phone did first (the first one keeps it: a later
/// opener could be anyone who saw the QR). Only this phone's refusal denies.
pub async fn bind_opener(
    app: &AppState,
    ticket: &Ticket,
    binding: &str,
) -> Result<(), crate::error::Error> {
    let ttl =
        Duration::from_millis(ticket.expires_at.saturating_sub(now_ms())) + Duration::from_secs(60);
    app.engine
        .store
        .put_new(&opener_key(&ticket.id), binding, ttl)
        .await?;
    Ok(())
}

/// What the phone sees after a `wechat-oauth` callback.
#[derive(Debug)]
pub enum PhoneOutcome {
    /// The ticket is scanned by this phone: ask to confirm.
    Confirm(Ticket),
    /// A page for the ticket as it now is (done, denied, expired).
    Final(Option<Ticket>),
    /// A message: scan again, try again, taken…
    Message(Message),
}

/// `GET /wechat/oauth/callback` for the phone bound as `binding`.
pub async fn phone_callback(app: &AppState, query: &Callback, binding: &str) -> PhoneOutcome {
    let Some(id) = query.ticket_id() else {
        return PhoneOutcome::Message(Message::Expired);
    };
    let ticket = match app.engine.get(&id).await {
        Ok(Some(t)) if t.provider == Provider::WechatOauth => t,
        Ok(_) => return PhoneOutcome::Message(Message::Expired),
        Err(_) => return PhoneOutcome::Message(Message::Retry),
    };
    match ticket.status_at(now_ms()) {
        Status::Pending => {}
        // Back from WeChat again on the phone that scanned (a reload, the
        // back button): the confirm page again, nothing exchanged.
        Status::Scanned if ticket.scanned_by.as_deref() == Some(binding) => {
            return PhoneOutcome::Confirm(ticket);
        }
        Status::Scanned => return PhoneOutcome::Message(Message::Taken),
        _ => return PhoneOutcome::Final(Some(ticket)),
    }
    let Some(code) = query.code() else {
        // The person refused on WeChat's consent page. The request names
        // only the ticket, which anyone who sees the QR knows: it denies
        // only from the phone that opened the ticket before going to
        // WeChat; from anywhere else a page, and nothing changes.
        match app.engine.store.get_value(&opener_key(&id)).await {
            Ok(Some(opener)) if opener == binding => {}
            Ok(_) => return PhoneOutcome::Message(Message::Forbidden),
            Err(_) => return PhoneOutcome::Message(Message::Retry),
        }
        return match app.engine.deny(&id, None).await {
            Ok(t) => PhoneOutcome::Final(Some(t)),
            Err(_) => PhoneOutcome::Final(app.engine.get(&id).await.ok().flatten()),
        };
    };
    match claim_code(app, code).await {
        Ok(true) => {}
        Ok(false) => return PhoneOutcome::Message(Message::Rescan),
        Err(message) => return PhoneOutcome::Message(message),
    }
    let s = &app.settings;
    let (appid, secret) = credentials(&s.wechat_app_id, &s.wechat_app_secret);
    let wanted_profile = s.wechat_oauth_scope == OauthScope::SnsapiUserinfo;
    let (identity, user) = match sign_in(app, appid, secret, code, wanted_profile).await {
        Ok(found) => found,
        Err(message) => return PhoneOutcome::Message(message),
    };
    match app
        .engine
        .scan(&id, Some(binding.to_owned()), user, Some(identity))
        .await
    {
        Ok(t) => PhoneOutcome::Confirm(t),
        // Another phone, the browser's end or the clock got there first.
        Err(_) => match app.engine.get(&id).await {
            Ok(Some(t)) if t.status_at(now_ms()) == Status::Scanned => {
                PhoneOutcome::Message(Message::Taken)
            }
            Ok(t) => PhoneOutcome::Final(t),
            Err(_) => PhoneOutcome::Message(Message::Retry),
        },
    }
}

/// What the computer's browser gets after a `wechat-web` callback.
#[derive(Debug)]
pub enum WebOutcome {
    /// Back to the login page, which learns the result over its socket.
    BackToLogin,
    /// A message page: scan again, try again, expired.
    Message(Message),
}

/// `GET /wechat/web/callback`: the person approved on the phone, so a good
/// code confirms the ticket at once.
pub async fn web_callback(app: &AppState, query: &Callback) -> WebOutcome {
    let Some(id) = query.ticket_id() else {
        return WebOutcome::Message(Message::Expired);
    };
    let ticket = match app.engine.get(&id).await {
        Ok(Some(t)) if t.provider == Provider::WechatWeb => t,
        Ok(_) => return WebOutcome::Message(Message::Expired),
        Err(_) => return WebOutcome::Message(Message::Retry),
    };
    match ticket.status_at(now_ms()) {
        Status::Pending => {}
        // Finished already (a replay, a reload): the login page shows it.
        Status::Confirmed | Status::Denied => return WebOutcome::BackToLogin,
        _ => return WebOutcome::Message(Message::Expired),
    }
    let Some(code) = query.code() else {
        // Older WeChat sent the browser back without a code on refusal.
        let _ = app.engine.deny(&id, None).await;
        return WebOutcome::BackToLogin;
    };
    match claim_code(app, code).await {
        Ok(true) => {}
        Ok(false) => return WebOutcome::Message(Message::Rescan),
        Err(message) => return WebOutcome::Message(message),
    }
    let s = &app.settings;
    let (appid, secret) = credentials(&s.wechat_web_app_id, &s.wechat_web_app_secret);
    let (identity, user) = match sign_in(app, appid, secret, code, true).await {
        Ok(found) => found,
        Err(message) => return WebOutcome::Message(message),
    };
    match app.engine.confirm(&id, None, &identity, user, None).await {
        Ok(_) => WebOutcome::BackToLogin,
        Err(crate::error::Error::InvalidTransition(_)) => WebOutcome::BackToLogin,
        Err(_) => WebOutcome::Message(Message::Retry),
    }
}

fn credentials<'a>(appid: &'a Option<String>, secret: &'a Option<String>) -> (&'a str, &'a str) {
    (
        appid.as_deref().unwrap_or(""),
        secret.as_deref().unwrap_or(""),
    )
}

/// Claim `code` for one exchange. `Ok(false)`: it was claimed before.
async fn claim_code(app: &AppState, code: &str) -> Result<bool, Message> {
    app.engine
        .store
        .put_new(&code_key(code), "1", CODE_CLAIM_TTL)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot record a WeChat code as used");
            Message::Retry
        })
}

/// How long a code stays claimed: longer than WeChat keeps any code alive
/// (5 minutes for an Official Account, 10 for a website application).
const CODE_CLAIM_TTL: Duration = Duration::from_secs(15 * 60);

/// Exchange `code` and, when wanted and allowed, read the profile: the
/// identity and what the browser may show, or the page to show instead.
async fn sign_in(
    app: &AppState,
    appid: &str,
    secret: &str,
    code: &str,
    wanted_profile: bool,
) -> Result<(Identity, Option<UserInfo>), Message> {
    let token = exchange_code(&app.wechat, appid, secret, code)
        .await
        .map_err(|e| failure(&e, "code exchange"))?;
    if token.is_snapshotuser == Some(1) {
        // WeChat's "snapshot" page hands out virtual ids: no real person to
        // log in. They must open the page for real and scan again.
        tracing::info!("WeChat snapshot user refused");
        return Err(Message::Rescan);
    }
    let mut unionid = token.unionid.clone();
    let mut user = None;
    if wanted_profile && token.allows_userinfo() {
        let profile = userinfo(&app.wechat, &token)
            .await
            .map_err(|e| failure(&e, "userinfo"))?;
        if profile.openid != token.openid {
            tracing::warn!("WeChat userinfo answered for another openid");
            return Err(Message::Retry);
        }
        unionid = unionid.or(profile.unionid);
        user = super::user_info(profile.nickname.as_deref(), profile.headimgurl.as_deref());
    }
    let identity = super::identity(&app.settings, &token.openid, unionid.as_deref());
    Ok((identity, user))
}

/// The page a failed WeChat call leads to, logged once.
fn failure(e: &WechatError, during: &'static str) -> Message {
    e.log(during);
    metrics::counter!("qrlogin_wechat_failures_total", "during" => during, "kind" => e.kind())
        .increment(1);
    if e.is_bad_code() {
        Message::Rescan
    } else {
        Message::Retry
    }
}
