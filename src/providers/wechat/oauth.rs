//! The two WeChat flows in which WeChat sends a browser back with a `code`:
//! `wechat-oauth` (Official Account web authorization, inside WeChat's
//! in-app browser on the phone) and `wechat-web` (Open Platform website
//! application, WeChat's QR on the computer).
//!
//! Both exchange the code at `/sns/oauth2/access_token` exactly once: the
//! code's hash is claimed in the store before the exchange, so a replayed
//! callback (a reload, a double redirect, an attacker) finds it taken and
//! never scans or confirms a second time.
//!
//! `wechat-web` differs in who may act on the code. WeChat sends back
//! whichever browser showed its QR page, and that need not be the browser
//! that made the ticket (a forwarded link): so its callback changes
//! nothing, it only hands the code to the page holding the ticket's secret,
//! which redeems it (`redeem_web_code`). Its `state` is a random value
//! mapped to the ticket in the store, never the ticket id, and a code is
//! redeemed only together with the `state` it came back with.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{WechatClient, WechatError};
use crate::config::OauthScope;
use crate::engine::Error;
use crate::providers::Context;
use crate::providers::Notice;
use crate::ticket::{Identity, Provider, Status, Ticket, TicketId, UserInfo, now_ms};

/// Where WeChat sends the phone back (`wechat-oauth`).
pub const OAUTH_CALLBACK: &str = "/wechat/oauth/callback";
/// Where WeChat sends the computer's browser back (`wechat-web`).
pub const WEB_CALLBACK: &str = "/wechat/web/callback";
/// The end of `/api/v1/tickets/{ticket}/wechat-web`, where the page holding
/// the secret redeems the code the callback handed it.
pub const WEB_REDEEM_SUFFIX: &str = "/wechat-web";

pub fn scope_name(scope: OauthScope) -> &'static str {
    match scope {
        OauthScope::SnsapiUserinfo => "snsapi_userinfo",
        OauthScope::SnsapiBase => "snsapi_base",
    }
}

/// `…/connect/oauth2/authorize?…#wechat_redirect` for ticket `id`: what
/// `/m/{ticket}` redirects WeChat's in-app browser to.
pub fn authorize_url(app: &Context<'_>, id: &TicketId) -> Option<String> {
    let s = &app.settings;
    let oa = s.wechat.official.as_ref()?;
    Some(connect_url(
        app.wechat,
        "/connect/oauth2/authorize",
        &oa.app_id,
        &format!("{}{OAUTH_CALLBACK}", s.http.public_url()),
        scope_name(s.wechat.oauth_scope),
        id.as_str(),
    ))
}

/// `…/connect/qrconnect?…#wechat_redirect` with the ticket's opaque
/// `state` (see `new_web_state`): WeChat's own QR page for the website
/// application (`wechat-web`).
pub fn qrconnect_url(app: &Context<'_>, state: &str) -> Option<String> {
    let s = &app.settings;
    let web = s.wechat.web.as_ref()?;
    Some(connect_url(
        app.wechat,
        "/connect/qrconnect",
        &web.app_id,
        &format!("{}{WEB_CALLBACK}", s.http.public_url()),
        "snsapi_login",
        state,
    ))
}

/// A fresh `state` for a `wechat-web` ticket: 128 random bits as 32 hex
/// characters (WeChat allows `[A-Za-z0-9]`, at most 128), recorded in the
/// store as naming ticket `id` for the ticket's lifetime, so every
/// instance resolves it. Not the ticket id: the browser WeChat sends back
/// learns nothing it could act on from it.
pub async fn new_web_state(app: &Context<'_>, id: &TicketId) -> crate::engine::Result<String> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let state = hex::encode(bytes);
    let ttl = Duration::from_secs(app.engine.ttl_secs().saturating_add(60));
    app.engine
        .set_value(&web_state_key(&state), id.as_str(), ttl)
        .await?;
    Ok(state)
}

/// The store key naming the ticket of a `wechat-web` `state` (its hash, as
/// for codes: a store dump does not list live states).
fn web_state_key(state: &str) -> String {
    format!(
        "wxstate:{}",
        hex::encode(&Sha256::digest(state.as_bytes())[..16])
    )
}

/// A value that can be a `state` we made (checked before any store read).
fn plausible_state(state: &str) -> bool {
    (1..=128).contains(&state.len()) && state.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The ticket a `wechat-web` `state` names, if it is one we made and the
/// ticket lives.
async fn ticket_of_state(app: &Context<'_>, state: &str) -> Result<Option<Arc<Ticket>>, Error> {
    if !plausible_state(state) {
        return Ok(None);
    }
    let Some(id) = app.engine.value(&web_state_key(state)).await? else {
        return Ok(None);
    };
    let Ok(id) = id.parse::<TicketId>() else {
        return Ok(None);
    };
    app.engine.get(&id).await
}

/// WeChat wants its parameters in this order and the `#wechat_redirect`
/// fragment present; `redirect_uri` is URL-encoded.
fn connect_url(
    client: &WechatClient,
    path: &str,
    appid: &str,
    redirect_uri: &str,
    scope: &str,
    state: &str,
) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("appid", appid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("state", state)
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
    app: &Context<'_>,
    ticket: &Ticket,
    binding: &str,
) -> Result<(), crate::engine::Error> {
    let ttl =
        Duration::from_millis(ticket.expires_at.saturating_sub(now_ms())) + Duration::from_secs(60);
    app.engine
        .claim_once(&opener_key(&ticket.id), binding, ttl)
        .await?;
    Ok(())
}

/// What the phone sees after a `wechat-oauth` callback.
#[derive(Debug)]
pub enum PhoneOutcome {
    /// The ticket is scanned by this phone: ask to confirm.
    Confirm(Arc<Ticket>),
    /// A page for the ticket as it now is (done, denied, expired).
    Final(Option<Arc<Ticket>>),
    /// A message: scan again, try again, taken…
    Notice(Notice),
}

/// `GET /wechat/oauth/callback` for the phone bound as `binding`.
pub async fn phone_callback(app: &Context<'_>, query: &Callback, binding: &str) -> PhoneOutcome {
    let Some(id) = query.ticket_id() else {
        return PhoneOutcome::Notice(Notice::Expired);
    };
    let ticket = match app.engine.get(&id).await {
        Ok(Some(t)) if t.provider == Provider::WechatOauth => t,
        Ok(_) => return PhoneOutcome::Notice(Notice::Expired),
        Err(_) => return PhoneOutcome::Notice(Notice::Retry),
    };
    match ticket.status_at(now_ms()) {
        Status::Pending => {}
        // Back from WeChat again on the phone that scanned (a reload, the
        // back button): the confirm page again, nothing exchanged.
        Status::Scanned if ticket.scanned_by.as_deref() == Some(binding) => {
            return PhoneOutcome::Confirm(ticket);
        }
        Status::Scanned => return PhoneOutcome::Notice(Notice::Taken),
        _ => return PhoneOutcome::Final(Some(ticket)),
    }
    let Some(code) = query.code() else {
        // The person refused on WeChat's consent page. The request names
        // only the ticket, which anyone who sees the QR knows: it denies
        // only from the phone that opened the ticket before going to
        // WeChat; from anywhere else a page, and nothing changes.
        match app.engine.value(&opener_key(&id)).await {
            Ok(Some(opener)) if opener == binding => {}
            Ok(_) => return PhoneOutcome::Notice(Notice::Forbidden),
            Err(_) => return PhoneOutcome::Notice(Notice::Retry),
        }
        return match app.engine.deny(&id, None).await {
            Ok(t) => PhoneOutcome::Final(Some(t)),
            Err(_) => PhoneOutcome::Final(app.engine.get(&id).await.ok().flatten()),
        };
    };
    match claim_code(app, code).await {
        Ok(true) => {}
        Ok(false) => return PhoneOutcome::Notice(Notice::Rescan),
        Err(message) => return PhoneOutcome::Notice(message),
    }
    let s = &app.settings;
    let Some(oa) = &s.wechat.official else {
        return PhoneOutcome::Notice(Notice::Retry);
    };
    let (appid, secret) = (oa.app_id.as_str(), oa.secret.as_str());
    let wanted_profile = s.wechat.oauth_scope == OauthScope::SnsapiUserinfo;
    let (identity, user) = match sign_in(app, appid, secret, code, wanted_profile).await {
        Ok(found) => found,
        Err(message) => return PhoneOutcome::Notice(message),
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
                PhoneOutcome::Notice(Notice::Taken)
            }
            Ok(t) => PhoneOutcome::Final(t),
            Err(_) => PhoneOutcome::Notice(Notice::Retry),
        },
    }
}

/// What the browser WeChat sent back gets from a `wechat-web` callback.
#[derive(Debug)]
pub enum WebOutcome {
    /// The page whose script hands the callback's `code` (none: the
    /// person refused) and `state` to the login page holding the ticket's
    /// secret; nothing was changed.
    HandOff,
    /// A message page: expired or unknown, try again.
    Notice(Notice),
}

/// `GET /wechat/web/callback`: resolve `state` to a live pending ticket,
/// only to know the hand-off is worth showing. No exchange, no change, no
/// cookie: whoever arrives here may not be who made the ticket.
pub async fn web_callback(app: &Context<'_>, query: &Callback) -> WebOutcome {
    let Some(state) = query.state.as_deref().map(str::trim) else {
        return WebOutcome::Notice(Notice::Expired);
    };
    match ticket_of_state(app, state).await {
        Ok(Some(t))
            if t.provider == Provider::WechatWeb && t.status_at(now_ms()) == Status::Pending => {}
        Ok(_) => return WebOutcome::Notice(Notice::Expired),
        Err(_) => return WebOutcome::Notice(Notice::Retry),
    }
    WebOutcome::HandOff
}

/// `POST /api/v1/tickets/{ticket}/wechat-web`: the page holding the
/// ticket's secret redeems the code WeChat handed it, with the `state` it
/// came back with. Every check runs before the code is claimed, so a
/// refused call changes nothing; then the code is exchanged once and the
/// ticket confirmed for the person WeChat names.
pub async fn redeem_web_code(
    app: &Context<'_>,
    id: &TicketId,
    secret: Option<&str>,
    code: &str,
    state: &str,
) -> crate::engine::Result<Arc<Ticket>> {
    let secret = secret.ok_or(Error::Unauthorized(
        "missing Authorization: Bearer <secret>",
    ))?;
    let ticket = app.engine.require(id).await?;
    if !ticket.secret_hash.matches(secret) {
        return Err(Error::Unauthorized("wrong secret"));
    }
    if ticket.provider != Provider::WechatWeb {
        return Err(Error::Invalid(format!(
            "this ticket's provider is {}, not wechat-web",
            ticket.provider.as_str()
        )));
    }
    let status = ticket.status_at(now_ms());
    if status != Status::Pending {
        return Err(Error::WrongState(format!(
            "the ticket is {}, not pending",
            status.as_str()
        )));
    }
    // The code must have come back with this ticket's state: an attacker's
    // own code and state, fed to someone else's page, is refused here.
    let bound = match ticket_of_state(app, state).await? {
        Some(t) => bool::from(t.id.as_str().as_bytes().ct_eq(id.as_str().as_bytes())),
        None => false,
    };
    if !bound {
        return Err(Error::Forbidden(
            "this code came back from WeChat for another login",
        ));
    }
    let code = code.trim();
    if code.is_empty() || code.len() > 512 {
        return Err(Error::Invalid("code must be 1 to 512 characters".into()));
    }
    match claim_code(app, code).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Invalid(
                "this code was redeemed already; scan WeChat's code again".into(),
            ));
        }
        Err(_) => return Err(Error::Unavailable),
    }
    let s = &app.settings;
    let web = s.wechat.web.as_ref().ok_or(Error::NotFound)?;
    let (appid, secret) = (web.app_id.as_str(), web.secret.as_str());
    let (identity, user) = exchange(app, appid, secret, code, true)
        .await
        .map_err(SignInError::into_error)?;
    app.engine.confirm(id, None, &identity, user, None).await
}

/// Claim `code` for one exchange. `Ok(false)`: it was claimed before.
async fn claim_code(app: &Context<'_>, code: &str) -> Result<bool, Notice> {
    app.engine
        .claim_once(&code_key(code), "1", CODE_CLAIM_TTL)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot record a WeChat code as used");
            Notice::Retry
        })
}

/// How long a code stays claimed: longer than WeChat keeps any code alive
/// (5 minutes for an Official Account, 10 for a website application).
const CODE_CLAIM_TTL: Duration = Duration::from_secs(15 * 60);

/// Why a code did not sign anyone in.
enum SignInError {
    /// WeChat refused a call (logged and counted once, in `failed`).
    Wechat(WechatError),
    /// A "snapshot" virtual user: no real person to log in.
    Snapshot,
    /// WeChat's profile named another openid than its token.
    Mismatch,
}

impl SignInError {
    /// The phone or callback page to show instead.
    fn into_notice(self) -> Notice {
        match self {
            SignInError::Wechat(e) if e.is_bad_code() => Notice::Rescan,
            SignInError::Snapshot => Notice::Rescan,
            SignInError::Wechat(_) | SignInError::Mismatch => Notice::Retry,
        }
    }

    /// The contract's error for an API caller: a code WeChat refuses is the
    /// caller's (400, scan again), anything else WeChat's (502).
    fn into_error(self) -> Error {
        match self {
            SignInError::Wechat(e) if e.is_bad_code() => Error::Invalid(format!(
                "WeChat did not accept this code (errcode {}); scan WeChat's code again",
                e.errcode().unwrap_or_default()
            )),
            SignInError::Wechat(e) => Error::Upstream(e.to_string()),
            SignInError::Snapshot => Error::Invalid(
                "WeChat sent a preview user; open WeChat's page for real and scan again".into(),
            ),
            SignInError::Mismatch => Error::Upstream("WeChat's profile named another user".into()),
        }
    }
}

/// Exchange `code` and, when wanted and allowed, read the profile: the
/// identity and what the browser may show, or the page to show instead.
async fn sign_in(
    app: &Context<'_>,
    appid: &str,
    secret: &str,
    code: &str,
    wanted_profile: bool,
) -> Result<(Identity, Option<UserInfo>), Notice> {
    exchange(app, appid, secret, code, wanted_profile)
        .await
        .map_err(SignInError::into_notice)
}

/// `sign_in`'s work, with the cause of a failure.
async fn exchange(
    app: &Context<'_>,
    appid: &str,
    secret: &str,
    code: &str,
    wanted_profile: bool,
) -> Result<(Identity, Option<UserInfo>), SignInError> {
    let token = exchange_code(app.wechat, appid, secret, code)
        .await
        .map_err(|e| failed(e, "code exchange"))?;
    if token.is_snapshotuser == Some(1) {
        // WeChat's "snapshot" page hands out virtual ids: no real person to
        // log in. They must open the page for real and scan again.
        tracing::info!("WeChat snapshot user refused");
        return Err(SignInError::Snapshot);
    }
    let mut unionid = token.unionid.clone();
    let mut user = None;
    if wanted_profile && token.allows_userinfo() {
        let profile = userinfo(app.wechat, &token)
            .await
            .map_err(|e| failed(e, "userinfo"))?;
        if profile.openid != token.openid {
            tracing::warn!("WeChat userinfo answered for another openid");
            return Err(SignInError::Mismatch);
        }
        unionid = unionid.or(profile.unionid);
        user = super::user_info(profile.nickname.as_deref(), profile.headimgurl.as_deref());
    }
    let identity = super::identity(app.settings, &token.openid, unionid.as_deref());
    Ok((identity, user))
}

/// A failed WeChat call, logged and counted once.
fn failed(e: WechatError, during: &'static str) -> SignInError {
    e.log(during);
    metrics::counter!("qrlogin_wechat_failures_total", "during" => during, "kind" => e.kind())
        .increment(1);
    SignInError::Wechat(e)
}
